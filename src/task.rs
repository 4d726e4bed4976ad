//! What runs a task of a group, and what the caller gets back.
//!
//! * [`TaskFuture`] (private) is the future every spawned task runs: it turns
//!   the task's result, or its panic, into a recorded failure before the
//!   task's guard completes, and marks the thread as running a task of its
//!   group so a wait from inside it can be refused. It holds only the user's
//!   future and the task's guard: the task's id, name and options are in its
//!   registry entry, which lives as long as the guard and is read back on the
//!   (cold) failure path, so the task stays in the size class of a raw
//!   `tokio::spawn` of the same future.
//! * [`TaskHandle`] is what spawning returns: await it for the task's value,
//!   abort that one task, ask whether it finished.
//! * [`TaskOutput`] says what a task's future may resolve to: `()` (a task
//!   that cannot fail) or `Result<T, E>`.
//! * [`Tracked`] is a future counted as pending work while it lives
//!   ([`TaskBuilder::track_future`](crate::TaskBuilder::track_future)).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::task::{AbortHandle, JoinHandle};

use crate::error::{BoxError, TaskError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, TaskId, TaskName};
use crate::node::Node;
use crate::registry::Slot;

/// What a task's future may resolve to: `()` for a task that cannot fail, or
/// `Result<T, E>` for one that can, where `E` converts into [`BoxError`]
/// (any `std::error::Error + Send + Sync`, a `String`, a `&str`). `T` is the
/// value an awaited [`TaskHandle`] gives back.
///
/// A task that never returns (an accept loop, a ticker, a body that ends in
/// `panic!`) resolves to the never type `!`, which is implemented too: such
/// a task is written as it would be for `tokio::spawn`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let wg = taskgroup::WaitGroup::new();
/// wg.go(|_ctx| async move {
///     let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
///     loop {
///         tick.tick().await;
///     }
/// });
/// assert!(wg.shutdown(std::time::Duration::ZERO).await.aborted().len() == 1);
/// # }
/// ```
///
/// Sealed: implemented for exactly these three shapes.
pub trait TaskOutput: sealed::Sealed + 'static {
    /// The task's value on success.
    type Value: 'static;

    #[doc(hidden)]
    fn into_result(self) -> Result<Self::Value, BoxError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<T, E> Sealed for Result<T, E> {}
    impl Sealed for super::Never {}
}

/// The never type `!`, which stable Rust does not let one write but as a
/// function's return type: named here through `fn() -> !`'s output. A task
/// whose body diverges (`loop {}` without a `break`, `panic!`) has this
/// output, and without an implementation for it would not compile: the
/// output of a block that never returns falls back to `!` (since edition
/// 2024; edition 2021 denies a fallback to `()` that a bound depends on).
pub(crate) type Never = <fn() -> ! as Returns>::Output;

/// The output of a function pointer type: what names [`Never`]. Public, as
/// an implementation of the public [`TaskOutput`] names it (not reachable
/// from outside, which older compilers' `unreachable_pub` does not see).
#[allow(unreachable_pub)]
pub trait Returns {
    /// What the function returns.
    type Output;
}

impl<T> Returns for fn() -> T {
    type Output = T;
}

impl TaskOutput for () {
    type Value = ();

    #[inline]
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl TaskOutput for Never {
    type Value = Never;

    #[inline]
    fn into_result(self) -> Result<Never, BoxError> {
        match self {}
    }
}

impl<T: 'static, E: Into<BoxError> + 'static> TaskOutput for Result<T, E> {
    type Value = T;

    #[inline]
    fn into_result(self) -> Result<T, BoxError> {
        self.map_err(Into::into)
    }
}

/// The `go()` task this thread is polling (or dropping): its group, and its
/// registry slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) group: GroupId,
    pub(crate) slot: Slot,
}

thread_local! {
    /// The task this thread is polling (or dropping, or running on a blocking
    /// thread), if any. Set for the duration of one poll; a plain
    /// thread-local rather than a `task_local!` scope, which would wrap every
    /// task's future in a bigger one.
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// The task currently being polled, if any.
pub(crate) fn current() -> Option<Current> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// The group of the task currently being polled, if any.
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
            slot: guard.slot().expect("a task's guard is recorded"),
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

/// What a spawned task's future resolves to inside Tokio: the value, or the
/// failure the group recorded (shared with the group's record).
pub(crate) type Outcome<T> = Result<T, Arc<TaskError>>;

/// The future a spawned task runs, inside its span.
pub(crate) fn task_future<Fut>(
    guard: TaskGuard,
    fut: Fut,
    span: crate::trace::TaskSpan,
) -> impl Future<Output = Outcome<<Fut::Output as TaskOutput>::Value>>
where
    Fut: Future,
    Fut::Output: TaskOutput,
{
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
                let _enter = Enter::new(guard);
                let _ = finish(this.fut, this.guard, None, true);
            }
        }
    }
}

impl<Fut> Future for TaskFuture<Fut>
where
    Fut: Future,
    Fut::Output: TaskOutput,
{
    type Output = Outcome<<Fut::Output as TaskOutput>::Value>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The future and the guard are taken together, by `finish`.
        let (Some(fut), Some(guard)) = (this.fut.as_mut().as_pin_mut(), this.guard.as_ref()) else {
            panic!("a task's future polled after it completed");
        };
        let _enter = Enter::new(guard);
        let (value, failure) = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => match output.into_result() {
                Ok(value) => (Some(value), None),
                Err(error) => (None, Some(Failure::Error(error))),
            },
            Err(payload) => (None, Some(Failure::Panic(payload))),
        };
        let ended = finish(this.fut, this.guard, failure, false);
        Poll::Ready(match (ended, value) {
            (None, Some(value)) => Ok(value),
            (Some(failure), _) => Err(failure),
            (None, None) => unreachable!("a task with neither a value nor a failure"),
        })
    }
}

/// Runs a blocking task's closure on the blocking thread, as the task future
/// runs a future: the result or panic recorded, then the guard completed.
pub(crate) fn run_blocking<R: TaskOutput>(
    guard: TaskGuard,
    f: impl FnOnce() -> R,
) -> Outcome<R::Value> {
    let mut guard = Some(guard);
    let _enter = Enter::new(guard.as_ref().expect("just set"));
    let (value, failure) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(output) => match output.into_result() {
            Ok(value) => (Some(value), None),
            Err(error) => (None, Some(Failure::Error(error))),
        },
        Err(payload) => (None, Some(Failure::Panic(payload))),
    };
    let nothing: Pin<&mut Option<()>> = std::pin::pin!(None);
    match (finish(nothing, &mut guard, failure, false), value) {
        (None, Some(value)) => Ok(value),
        (Some(failure), _) => Err(failure),
        (None, None) => unreachable!("a task with neither a value nor a failure"),
    }
}

enum Failure {
    Error(BoxError),
    Panic(Box<dyn std::any::Any + Send>),
}

/// Drops the future, records the failure (and a panic from the drop), then
/// completes the guard: a waiter that sees the group idle sees every failure.
/// Returns the failure that ended the task, if any. `aborted`: the task's
/// future is dropped unfinished (see [`drop_aborted`]).
fn finish<Fut>(
    fut: Pin<&mut Option<Fut>>,
    guard: &mut Option<TaskGuard>,
    failure: Option<Failure>,
    aborted: bool,
) -> Option<Arc<TaskError>> {
    let drop_panic = catch_unwind(AssertUnwindSafe(|| {
        let mut fut = fut;
        fut.set(None);
    }))
    .err();
    let guard = guard.take()?;
    let recorded = if failure.is_some() || drop_panic.is_some() {
        record(&guard, failure, drop_panic)
    } else {
        None
    };
    if aborted {
        drop_aborted(guard);
    } else {
        guard.end();
    }
    recorded
}

/// Completes the guard of an aborted task: its entry is removed first (and
/// listed by the shutdown that aborted it, if that one still lists; see
/// [`Registry::remove_aborted`]), but the shutdown hears of it (its watch is
/// settled) only once the task's count is given up too, so that the
/// shutdown, woken on another thread, finds the group without it rather than
/// with a pending unit and no entry.
///
/// [`Registry::remove_aborted`]: crate::registry::Registry::remove_aborted
#[cold]
#[inline(never)]
fn drop_aborted(mut guard: TaskGuard) {
    let _settle = crate::registry::SettleOnDrop(guard.remove_aborted().flatten());
    drop(guard);
}

/// The failure path: the task's id, name and options are read back from its
/// entry, which exists while its guard does. Returns the failure that ended
/// the task (the panic while dropping it, if it otherwise succeeded).
#[cold]
fn record(
    guard: &TaskGuard,
    failure: Option<Failure>,
    drop_panic: Option<Box<dyn std::any::Any + Send>>,
) -> Option<Arc<TaskError>> {
    let node = guard.inner.handle();
    let slot = guard.slot().expect("a task's guard is recorded");
    let (id, name, critical) = node.identity(slot);
    let group = || node.label.clone();
    let mut ended = None;
    match failure {
        Some(Failure::Error(error)) => {
            let error = TaskError::failed(id, name.clone(), group(), error);
            ended = Some(Node::record_failure(&node, error, critical));
        }
        Some(Failure::Panic(payload)) => {
            let error = TaskError::panicked(id, name.clone(), group(), &*payload, false);
            drop_payload(payload);
            ended = Some(Node::record_failure(&node, error, critical));
        }
        None => {}
    }
    if let Some(payload) = drop_panic {
        let error = TaskError::panicked(id, name, group(), &*payload, true);
        drop_payload(payload);
        let recorded = Node::record_failure(&node, error, critical);
        ended.get_or_insert(recorded);
    }
    ended
}

/// Drops a panic payload, whose own `Drop` may panic: that panic is caught
/// and its payload dropped in turn, up to a few times; a payload still
/// panicking then is leaked rather than dropped. Either way the failure is
/// still recorded.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..3 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

// ----- the handle -----------------------------------------------------------

/// A spawned task of a group: await it for the task's value, or abort it.
///
/// Returned by [`WaitGroup::go`](crate::WaitGroup::go) and the
/// [`TaskBuilder`](crate::TaskBuilder)'s placements. Dropping it detaches the
/// task, which keeps running and stays tracked by its group, so ignoring the
/// handle is the common case (`wg.go(...);`).
///
/// # The value and the group's record
///
/// Awaiting the handle gives `Ok(value)` if the task succeeded. If it
/// returned an error or panicked, the failure is recorded in the group as
/// always (the group's [`wait`](crate::WaitGroup::wait) and
/// [`errors`](crate::WaitGroup::errors) report it, and it counts for
/// `cancel_on_error`), *and* the handle gives [`JoinError`] with the same
/// failure: joining a failure does not remove it from the group's record
/// ([`take_errors`](crate::WaitGroup::take_errors) does). A task aborted
/// (through this handle, a shutdown, or its runtime shutting down) gives
/// [`JoinError::is_aborted`]; an abort is not a failure of the group.
///
/// # Panics
///
/// Awaiting resumes a panic only if the crate's own handling of the task's
/// end panicked, which happens when the `tracing` feature logs a failure
/// whose error's `Display` panics (the failure is recorded first). The
/// task's own panics never reach the awaiter: they are failures.
///
/// # Cancel safety
///
/// Awaiting is cancel safe: dropping the future leaves the task running.
///
/// # Examples
///
/// ```
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let wg = WaitGroup::new();
/// let sum = wg.go(|_ctx| async { Ok::<_, std::io::Error>(1 + 2) });
/// assert_eq!(sum.await.unwrap(), 3);
///
/// let slow = wg.go(|ctx| async move { ctx.cancelled().await });
/// slow.abort();
/// assert!(slow.await.unwrap_err().is_aborted());
/// wg.wait().await.unwrap(); // an abort is not a failure
/// # }
/// ```
pub struct TaskHandle<T> {
    join: JoinHandle<Outcome<T>>,
    task: TaskName,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(join: JoinHandle<Outcome<T>>, task: TaskName) -> Self {
        TaskHandle { join, task }
    }

    /// The task's id within its group.
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    /// The task's name, if it was given one
    /// ([`TaskBuilder::name`](crate::TaskBuilder::name)).
    pub fn name(&self) -> Option<&str> {
        self.task.name()
    }

    /// The id of the task's group.
    pub fn group_id(&self) -> GroupId {
        self.task.group.id
    }

    /// Aborts the task: its future is dropped at its next `.await` point (a
    /// blocking task that already runs cannot be aborted). Does nothing if it
    /// already finished.
    pub fn abort(&self) {
        self.join.abort();
    }

    /// A handle that can abort the task without awaiting it.
    pub fn abort_handle(&self) -> AbortHandle {
        self.join.abort_handle()
    }

    /// Whether the task has finished (successfully, with a failure, or
    /// aborted).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|joined| match joined {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(failure)) => Err(JoinError {
                    task: self.task.clone(),
                    failure: Some(failure),
                }),
                Err(error) if error.is_cancelled() => Err(JoinError {
                    task: self.task.clone(),
                    failure: None,
                }),
                // The task future catches every panic of the task; this is a
                // panic of the crate itself, which should reach the caller.
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            })
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.task.id)
            .field("name", &self.task.name())
            .field("group", &self.task.group)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why an awaited [`TaskHandle`] gives no value: the task failed (the same
/// failure is in the group's record), or it was aborted (a panic in its
/// future's `Drop` as the abort dropped it is in the group's record only,
/// "panicked while being dropped"). Either way it names the task and its
/// group, as a [`TaskError`] does:
///
/// ```
/// # use taskgroup::WaitGroup;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let conns = WaitGroup::builder().name("conns").build();
/// let conn = conns.task().name("conn 10.0.0.7").go(|ctx| async move { ctx.cancelled().await });
/// conn.abort();
/// let err = conn.await.unwrap_err();
/// assert!(err.is_aborted());
/// assert_eq!(err.name(), Some("conn 10.0.0.7"));
/// assert_eq!(err.to_string(), r#"task "conn 10.0.0.7" #1 in group "conns" was aborted"#);
/// # }
/// ```
#[derive(Clone)]
pub struct JoinError {
    task: TaskName,
    failure: Option<Arc<TaskError>>,
}

impl JoinError {
    /// The task's id within its group.
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.task.name()
    }

    /// The id of the task's group.
    pub fn group_id(&self) -> GroupId {
        self.task.group.id
    }

    /// Whether the task was aborted before it finished.
    pub fn is_aborted(&self) -> bool {
        self.failure.is_none()
    }

    /// The task's failure (an error it returned, or its panic), as the
    /// group recorded it; `None` if it was aborted.
    pub fn failure(&self) -> Option<&TaskError> {
        self.failure.as_deref()
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Some(failure) => fmt::Display::fmt(failure, f),
            None => write!(f, "{} was aborted", self.task),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Some(failure) => f.debug_tuple("JoinError::Failed").field(failure).finish(),
            None => f
                .debug_struct("JoinError::Aborted")
                .field("id", &self.task.id)
                .field("name", &self.task.name())
                .field("group", &self.task.group)
                .finish(),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failure.as_deref().and_then(std::error::Error::source)
    }
}

// ----- tracked futures ------------------------------------------------------

pin_project! {
    /// A future counted as pending work of a group while it lives, from
    /// [`TaskBuilder::track_future`](crate::TaskBuilder::track_future)
    /// (tokio-util's `TaskTracker::track_future`). It resolves to what the
    /// inner future resolves to; dropping it, or its completion, completes
    /// the work. It is not spawned and cannot be aborted by a shutdown, which
    /// reports it as pending instead.
    #[must_use = "a tracked future does nothing unless polled; dropping it completes the work"]
    pub struct Tracked<F> {
        #[pin]
        fut: F,
        guard: Option<TaskGuard>,
    }
}

impl<F> Tracked<F> {
    pub(crate) fn new(fut: F, guard: TaskGuard) -> Self {
        Tracked {
            fut,
            guard: Some(guard),
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.fut.poll(cx));
        drop(this.guard.take());
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}
