//! The future every `go()` task runs: it turns the task's result, or its
//! panic, into a recorded failure before the task's guard completes, and marks
//! the task as belonging to its group so a wait from inside it can be refused.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{BoxError, TaskError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, Label, TaskId};

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
    id: TaskId,
    name: Option<Label>,
    guard: TaskGuard,
    fut: Fut,
) -> impl Future<Output = ()> + Send + 'static
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    let span = crate::trace::task_span(&guard.inner.label, name.as_ref(), id);
    let task = TaskFuture {
        fut: Some(fut),
        guard: Some(guard),
        id,
        name,
    };
    crate::trace::instrument(CURRENT_GROUP.scope(group, task), span)
}

pin_project! {
    /// Owns a task's future (in place: a named future rather than an `async`
    /// block, which would hold the user's future twice) and its guard. The
    /// future is dropped inside `catch_unwind` both when it completes and when
    /// the task is aborted, so a panic in its `Drop` is recorded too.
    struct TaskFuture<Fut> {
        #[pin]
        fut: Option<Fut>,
        guard: Option<TaskGuard>,
        id: TaskId,
        name: Option<Label>,
    }

    impl<Fut> PinnedDrop for TaskFuture<Fut> {
        fn drop(this: Pin<&mut Self>) {
            // Still holding the guard: the task was aborted (or its runtime
            // shut down) before it finished. Not a failure in itself; a panic
            // while dropping the future is.
            let this = this.project();
            if this.guard.is_some() {
                finish(this.fut, this.guard, *this.id, this.name, None);
            }
        }
    }
}

impl<Fut, E> Future for TaskFuture<Fut>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let failure = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => None,
            Ok(Poll::Ready(Err(error))) => Some(Failure::Error(error.into())),
            Err(payload) => Some(Failure::Panic(payload)),
        };
        finish(this.fut, this.guard, *this.id, this.name, failure);
        Poll::Ready(())
    }
}

enum Failure {
    Error(BoxError),
    Panic(Box<dyn std::any::Any + Send>),
}

/// Drops the future, records the failure (and a panic from the drop), then
/// completes the guard: a waiter that sees the group idle sees every failure.
fn finish<Fut>(
    fut: Pin<&mut Option<Fut>>,
    guard: &mut Option<TaskGuard>,
    id: TaskId,
    name: &Option<Label>,
    failure: Option<Failure>,
) {
    let drop_panic = catch_unwind(AssertUnwindSafe(|| {
        let mut fut = fut;
        fut.set(None);
    }))
    .err();
    let Some(guard) = guard.take() else {
        return;
    };
    let inner = &guard.inner;
    let error = |failure| match failure {
        Failure::Error(error) => TaskError::failed(id, name.clone(), inner.label.clone(), error),
        Failure::Panic(payload) => {
            TaskError::panicked(id, name.clone(), inner.label.clone(), &*payload, false)
        }
    };
    if let Some(failure) = failure {
        inner.record_failure(error(failure));
    }
    if let Some(payload) = drop_panic {
        inner.record_failure(TaskError::panicked(
            id,
            name.clone(),
            inner.label.clone(),
            &*payload,
            true,
        ));
    }
    drop(guard);
}
