//! The wrapper every `go()` task runs in: it turns the task's result, or its
//! panic, into a recorded failure before the task's guard completes, and marks
//! the task as belonging to its group so a wait from inside it can be refused.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use crate::error::{BoxError, TaskError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, Label};

tokio::task_local! {
    /// The group whose `go()` spawned the task being polled.
    static CURRENT_GROUP: GroupId;
}

/// The group of the `go()` task currently being polled, if any.
pub(crate) fn current_group() -> Option<GroupId> {
    CURRENT_GROUP.try_with(|group| *group).ok()
}

/// The future `go()` spawns.
pub(crate) fn run<Fut, E>(
    group: GroupId,
    name: Option<Label>,
    guard: TaskGuard,
    fut: Fut,
) -> impl Future<Output = ()> + Send + 'static
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    let span = crate::trace::task_span(&guard.inner.label, name.as_ref(), guard.id);
    let fut = CURRENT_GROUP.scope(group, async move {
        let fut = pin!(Some(fut));
        let mut cell = TaskCell {
            fut,
            guard: Some(guard),
            name,
        };
        poll_fn(|cx| cell.poll(cx)).await;
    });
    crate::trace::instrument(fut, span)
}

/// Owns a task's future (pinned in place, so no extra allocation) and its
/// guard. The future is dropped inside `catch_unwind` both when it completes
/// and when the task is aborted, so a panic in its `Drop` is recorded too.
struct TaskCell<'a, Fut> {
    fut: Pin<&'a mut Option<Fut>>,
    guard: Option<TaskGuard>,
    name: Option<Label>,
}

impl<Fut, E> TaskCell<'_, Fut>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let failure = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => None,
            Ok(Poll::Ready(Err(error))) => Some(Err(error.into())),
            Err(payload) => Some(Ok(payload)),
        };
        self.finish(failure);
        Poll::Ready(())
    }
}

impl<Fut> TaskCell<'_, Fut> {
    /// Drops the future, records the failure (the returned error, or the
    /// panic payload), then completes the guard: a waiter that sees the group
    /// idle always sees the failure.
    fn finish(&mut self, failure: Option<Result<Box<dyn std::any::Any + Send>, BoxError>>) {
        let drop_panic = catch_unwind(AssertUnwindSafe(|| self.fut.set(None))).err();
        let Some(guard) = self.guard.take() else {
            return;
        };
        let inner = &guard.inner;
        let name = self.name.clone();
        match failure {
            Some(Err(error)) => inner.record_failure(TaskError::failed(
                guard.id,
                name.clone(),
                inner.label.clone(),
                error,
            )),
            Some(Ok(payload)) => inner.record_failure(TaskError::panicked(
                guard.id,
                name.clone(),
                inner.label.clone(),
                &*payload,
                false,
            )),
            None => {}
        }
        if let Some(payload) = drop_panic {
            inner.record_failure(TaskError::panicked(
                guard.id,
                name,
                inner.label.clone(),
                &*payload,
                true,
            ));
        }
        drop(guard);
    }
}

impl<Fut> Drop for TaskCell<'_, Fut> {
    fn drop(&mut self) {
        // Still holding the future: the task was aborted (or its runtime shut
        // down) before it finished. Not a failure in itself; a panic while
        // dropping the future is.
        if self.guard.is_some() {
            self.finish(None);
        }
    }
}
