//! The future every `go()` task runs: it turns the task's result, or its
//! panic, into a recorded failure before the task's guard completes, and marks
//! the thread as running a task of its group so a wait from inside it can be
//! refused.
//!
//! It holds only the user's future and the task's guard: the task's id and
//! name are in its registry entry, which lives as long as the guard and is
//! read back on the (cold) failure path. Small, so that the task's cell in
//! Tokio stays in the size class of a raw `tokio::spawn` of the same future.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{BoxError, TaskError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, Label, TaskId};
use crate::node::Node;
use crate::registry::Slot;

/// The `go()` task this thread is polling (or dropping): its group, and its
/// registry slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) group: GroupId,
    pub(crate) slot: Slot,
}

thread_local! {
    /// The `go()` task this thread is polling (or dropping), if any. Set for
    /// the duration of one poll; a plain thread-local rather than a
    /// `task_local!` scope, which would wrap every task's future in a bigger
    /// one.
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// The `go()` task currently being polled, if any.
pub(crate) fn current() -> Option<Current> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// The group of the `go()` task currently being polled, if any.
pub(crate) fn current_group() -> Option<GroupId> {
    current().map(|c| c.group)
}

/// Marks the thread as running a task of a group until dropped, then restores
/// what was there (a task polled inside another task's poll, by a nested
/// runtime, restores the outer one). Restores when unwinding, too.
struct Enter {
    prev: Option<Current>,
}

impl Enter {
    fn new(guard: &TaskGuard) -> Self {
        let task = Current {
            group: guard.group_id(),
            slot: guard.slot().expect("a go() task's guard is recorded"),
        };
        let prev = CURRENT
            .try_with(|current| current.replace(Some(task)))
            .ok()
            .flatten();
        Enter { prev }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|current| current.set(self.prev));
    }
}

/// The future `go()` spawns.
pub(crate) fn run<Fut, E>(
    id: TaskId,
    name: Option<&Label>,
    guard: TaskGuard,
    fut: Fut,
) -> impl Future<Output = ()> + Send + 'static
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    let span = crate::trace::task_span(&guard.inner.label, name, id);
    let task = TaskFuture {
        fut: Some(fut),
        guard: Some(guard),
    };
    crate::trace::instrument(task, span)
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
    }

    impl<Fut> PinnedDrop for TaskFuture<Fut> {
        fn drop(this: Pin<&mut Self>) {
            // Still holding the guard: the task was aborted (or its runtime
            // shut down) before it finished. Not a failure in itself; a panic
            // while dropping the future is.
            let this = this.project();
            if let Some(guard) = this.guard.as_ref() {
                // Counted before the guard completes (see `Node::counters`).
                guard.inner.note_aborted();
                let _enter = Enter::new(guard);
                finish(this.fut, this.guard, None);
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
        // The future and the guard are taken together, by `finish`.
        let (Some(fut), Some(guard)) = (this.fut.as_mut().as_pin_mut(), this.guard.as_ref()) else {
            return Poll::Ready(());
        };
        let _enter = Enter::new(guard);
        let failure = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => None,
            Ok(Poll::Ready(Err(error))) => Some(Failure::Error(error.into())),
            Err(payload) => Some(Failure::Panic(payload)),
        };
        finish(this.fut, this.guard, failure);
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
    if failure.is_some() || drop_panic.is_some() {
        record(&guard, failure, drop_panic);
    }
    drop(guard);
}

/// The failure path: the task's id and name are read back from its entry,
/// which exists while its guard does.
#[cold]
fn record(
    guard: &TaskGuard,
    failure: Option<Failure>,
    drop_panic: Option<Box<dyn std::any::Any + Send>>,
) {
    let node = guard.inner.handle();
    let slot = guard.slot().expect("a go() task's guard is recorded");
    let (id, name) = node.identity(slot);
    let group = || node.label.clone();
    match failure {
        Some(Failure::Error(error)) => {
            Node::record_failure(&node, TaskError::failed(id, name.clone(), group(), error));
        }
        Some(Failure::Panic(payload)) => {
            let error = TaskError::panicked(id, name.clone(), group(), &*payload, false);
            drop_payload(payload);
            Node::record_failure(&node, error);
        }
        None => {}
    }
    if let Some(payload) = drop_panic {
        let error = TaskError::panicked(id, name, group(), &*payload, true);
        drop_payload(payload);
        Node::record_failure(&node, error);
    }
}

/// Drops a panic payload, whose own `Drop` may panic: that panic is caught
/// and its payload dropped in turn, up to a few times; a payload still
/// panicking then is leaked rather than dropped. Either way the failure is
/// still recorded.
fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..3 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}
