//! [`WaitGroup`]: guards, errgroup tasks, links, cancellation and waiting.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::error::{BoxError, Closed, LinkError, TaskError, TaskErrors, WaitError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, GroupLabel, Label, TaskId};
use crate::registry::{Entry, Registry, Slot};
use crate::report::{GroupPending, PendingReport, TaskInfo, TaskKind};
use crate::shared::{Counted, Shared, TaskRef};
use crate::state::State;
use crate::task;

/// Tracks pending work (guards and spawned tasks), collects its failures, and
/// waits for it, together with the groups linked below it.
///
/// A `WaitGroup` is a cheap handle: clones share one group. It is `Send`,
/// `Sync` and `'static`, so it can be stored in a server struct and moved into
/// tasks.
///
/// # Work
///
/// * [`add`](Self::add) returns a [`TaskGuard`]: the group is busy until the
///   guard is completed or dropped, which may happen in another method, task or
///   thread than the one that created it.
/// * [`go`](Self::go) spawns a task on the current Tokio runtime. The task gets
///   the group's cancellation [`context`](Self::context) and returns
///   `Result<(), E>`; its error, or its panic, is recorded with its identity
///   and returned by [`wait`](Self::wait). Nothing is lost.
///
/// # Waiting
///
/// [`wait`](Self::wait) resolves once the group's own work is done and then,
/// in link order, each [linked](Self::link) group's. A group with nothing
/// pending, including one that never had any work, is done: `wait` returns at
/// once (unlike `TaskTracker::wait`, it does not also require `close`). Work
/// added while a wait is in progress is waited for too: the wait returns only
/// once one pass over the whole tree finds nothing pending.
///
/// [`wait_timeout`](Self::wait_timeout) and
/// [`wait_deadline`](Self::wait_deadline) bound the wait; on timeout they return
/// a [`PendingReport`] naming every unfinished guard and task (id, name,
/// creation site, age, group). [`shutdown`](Self::shutdown) does the whole
/// drain: close, cancel, wait, abort, report.
///
/// # Cancellation
///
/// Each group has a context, a [`CancellationToken`] handed to its tasks. A
/// group made with [`child`](Self::child) inherits its parent's cancellation;
/// cancelling the child does not cancel the parent. [`cancel`](Self::cancel)
/// cancels the group and every group below it at once, while
/// [`shutdown`](Self::shutdown) cancels them one after another, parent first.
///
/// # Cost
///
/// By default every guard records its identity (id, name, creation site, start
/// time) so that reports can list it; that costs a short per-shard lock on
/// `add` and on `done`. [`Builder::record_guards(false)`] turns that off for
/// guards: `add` and `done` are then one atomic step each on the group's state
/// word, which also counts the references that keep the group alive (so a
/// guard touches no other counter), and reports give guards as counts. Tasks
/// from `go()` are always recorded.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let wg = WaitGroup::new();
/// for i in 0..3 {
///     wg.go_named(format!("worker-{i}"), move |_ctx| async move {
///         if i == 1 {
///             return Err(format!("worker {i} failed"));
///         }
///         Ok(())
///     });
/// }
/// let err = wg.wait_timeout(Duration::from_secs(5)).await.unwrap_err();
/// assert_eq!(err.errors().len(), 1);
/// assert_eq!(err.errors().first().unwrap().name(), Some("worker-1"));
/// # }
/// ```
///
/// [`Builder::record_guards(false)`]: Builder::record_guards
#[derive(Clone)]
pub struct WaitGroup {
    inner: Shared<Inner>,
}

/// The state word (which is also the group's reference count, see
/// `crate::shared`) and the id counter, on a cache line of their own so that
/// `add`/`done` do not share a line with the cold fields.
#[repr(align(128))]
struct Hot {
    state: State,
    /// The last id handed out; ids are unique within the group.
    last_id: AtomicU64,
}

/// The shared part of a group.
///
/// # Invariants
///
/// * The state word's task count equals the number of live [`TaskGuard`]s of
///   this group (a `go()` task holds one guard while it runs), and its handle
///   count the number of `Shared<Inner>` handles (every `WaitGroup`, including
///   the ones in other groups' `links`).
/// * A guard's registry entry, if it has one, exists exactly while the guard
///   is counted: it is inserted after the count is raised and removed before
///   the count is lowered, so an idle group has an empty registry.
/// * A task's failure is pushed to `errors` before its guard completes, so a
///   wait that sees the group idle sees every failure.
/// * `links` form a DAG: [`WaitGroup::link`] checks for cycles while holding
///   [`LINK_ORDER`], and `child()` only adds fresh groups.
///
/// # Lock order
///
/// [`LINK_ORDER`] before any group's `links`; at most one group's `links`,
/// `errors` or registry shard is locked at a time (lists are copied out before
/// walking them), and no lock is held across an `.await`.
pub(crate) struct Inner {
    hot: Hot,
    pub(crate) label: GroupLabel,
    record_guards: bool,
    cancel_on_error: bool,
    abort_timeout: Duration,
    /// Cancelled with the whole subtree: by `cancel()`, by the caller's token,
    /// by the parent's scope, or by the first failure with `cancel_on_error`.
    scope: CancellationToken,
    /// The context handed to this group's own tasks: a child of `scope`, also
    /// cancelled on its own when a shutdown reaches this group.
    own: CancellationToken,
    registry: Registry,
    /// Work added after `close()`; see `count_add`.
    late_adds: AtomicU64,
    errors: Mutex<Vec<Arc<TaskError>>>,
    cause: OnceLock<Arc<TaskError>>,
    links: Mutex<Vec<WaitGroup>>,
    /// `links` is not empty. Set (never cleared) under the `links` lock after
    /// a push, so a group without links is waited for and reported on without
    /// taking that lock; see [`Inner::links`].
    has_links: AtomicBool,
    /// `errors` is not empty. Set after the push in `record_failure`, so a wait
    /// on a group without failures takes no lock after waking; see
    /// [`Inner::own_errors`].
    has_errors: AtomicBool,
}

/// Serialises `link()` so that two concurrent links cannot form a cycle that
/// neither saw. Linking is rare; nothing on the add/done or wait path takes it.
static LINK_ORDER: Mutex<()> = parking_lot::const_mutex(());

/// Default length of a shutdown's forced phase, after the grace period.
const DEFAULT_ABORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Configures a [`WaitGroup`]; from [`WaitGroup::builder`].
///
/// ```
/// use taskgroup::WaitGroup;
/// use tokio_util::sync::CancellationToken;
///
/// let process = CancellationToken::new();
/// let wg = WaitGroup::builder()
///     .name("server")
///     .cancel_on_error(true)
///     .token(process.child_token())
///     .build();
/// process.cancel();
/// assert!(wg.is_cancelled());
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder {
    name: Option<Label>,
    record_guards: bool,
    cancel_on_error: bool,
    abort_timeout: Duration,
    token: Option<CancellationToken>,
}

impl Builder {
    /// Names the group; reports and errors show the name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// Whether guards record their identity (name, creation site, start time)
    /// for reports. Default `true`. With `false`, `add` and `done` do no more
    /// than one atomic step each on the group's state and reports count guards
    /// instead of listing them; [`add_named`](WaitGroup::add_named)'s name is
    /// then not kept. Tasks from `go()` are always recorded.
    pub fn record_guards(mut self, record: bool) -> Self {
        self.record_guards = record;
        self
    }

    /// Errgroup semantics: the first task failure (error or panic) cancels the
    /// group and every group below it, and becomes the
    /// [`cancel_cause`](WaitGroup::cancel_cause). Default `false`.
    pub fn cancel_on_error(mut self, cancel: bool) -> Self {
        self.cancel_on_error = cancel;
        self
    }

    /// The length of [`shutdown`](WaitGroup::shutdown)'s forced phase, after
    /// the grace period: groups reached only then may close by themselves in
    /// its first half, and the tasks aborted are waited for until its end.
    /// Default one second.
    pub fn abort_timeout(mut self, timeout: Duration) -> Self {
        self.abort_timeout = timeout;
        self
    }

    /// Cancels the group when `token` is cancelled (the group gets a child of
    /// `token`; cancelling the group does not cancel `token`).
    pub fn token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Creates the group.
    pub fn build(self) -> WaitGroup {
        let scope = match &self.token {
            Some(token) => token.child_token(),
            None => CancellationToken::new(),
        };
        self.build_in(scope)
    }

    fn build_in(self, scope: CancellationToken) -> WaitGroup {
        let own = scope.child_token();
        WaitGroup {
            inner: Shared::new(Inner {
                hot: Hot {
                    state: State::new(),
                    last_id: AtomicU64::new(0),
                },
                label: GroupLabel {
                    id: GroupId::next(),
                    name: self.name,
                },
                record_guards: self.record_guards,
                cancel_on_error: self.cancel_on_error,
                abort_timeout: self.abort_timeout,
                scope,
                own,
                registry: Registry::new(),
                late_adds: AtomicU64::new(0),
                errors: Mutex::new(Vec::new()),
                cause: OnceLock::new(),
                links: Mutex::new(Vec::new()),
                has_links: AtomicBool::new(false),
                has_errors: AtomicBool::new(false),
            }),
        }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            name: None,
            record_guards: true,
            cancel_on_error: false,
            abort_timeout: DEFAULT_ABORT_TIMEOUT,
            token: None,
        }
    }
}

impl Counted for Inner {
    #[inline]
    fn state(&self) -> &State {
        &self.hot.state
    }
}

impl Inner {
    /// Work added after `close()`: counted so that a shutdown can tell what
    /// finished during it. Off the hot path (only closed groups get here).
    #[cold]
    fn note_late_add(&self) {
        self.late_adds.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh id, unique within the group.
    pub(crate) fn next_id(&self) -> TaskId {
        TaskId(self.hot.last_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Creates the guard for a task already counted in the state word: lean
    /// guards need nothing more; the rest get an id and a registry entry.
    #[inline]
    fn register(
        &self,
        task: TaskRef<Inner>,
        name: Option<Label>,
        site: &'static Location<'static>,
        kind: TaskKind,
    ) -> TaskGuard {
        if kind == TaskKind::Guard && !self.record_guards {
            return TaskGuard::unrecorded(task);
        }
        self.register_recorded(task, name, site, kind).0
    }

    fn register_recorded(
        &self,
        task: TaskRef<Inner>,
        name: Option<Label>,
        site: &'static Location<'static>,
        kind: TaskKind,
    ) -> (TaskGuard, TaskId, Slot) {
        let id = self.next_id();
        let slot = self.registry.insert(Entry {
            id,
            name,
            kind,
            site,
            started: Instant::now(),
            join: None,
        });
        (TaskGuard::recorded(task, slot), id, slot)
    }

    /// The id of a recorded guard.
    pub(crate) fn recorded_id(&self, slot: Slot) -> TaskId {
        self.registry.id(slot)
    }

    /// The id and name of a `go()` task, from its guard's registry entry.
    pub(crate) fn task_identity(&self, guard: &TaskGuard) -> (TaskId, Option<Label>) {
        let slot = guard.slot().expect("a go() task's guard is recorded");
        self.registry.identity(slot)
    }

    /// Removes a completing guard's registry entry (its `Drop`, before its
    /// task unit is given up).
    pub(crate) fn remove_entry(&self, slot: Slot) {
        self.registry.remove(slot);
    }

    pub(crate) fn record_failure(&self, error: TaskError) {
        let error = Arc::new(error);
        self.errors.lock().push(Arc::clone(&error));
        self.has_errors.store(true, Ordering::Release);
        if self.cancel_on_error && self.cause.set(Arc::clone(&error)).is_ok() {
            self.cancel_tree();
            crate::trace::cancelled(&self.label, Some(&error));
        }
        // Last: logging formats the task's error, and a `Display` that panics
        // must not keep the failure from being kept or acted on.
        crate::trace::task_failed(&error);
    }

    fn cancel_tree(&self) {
        self.scope.cancel();
        for child in self.links() {
            child.inner.cancel_tree();
        }
    }

    /// A copy of the links; for a group without links, no lock and no copy.
    ///
    /// Skipping the lock when `has_links` reads `false` cannot hide a link a
    /// caller must see: a link added before the last `done` of the work a
    /// wait waits for happens-before that wait reads the count at zero, as
    /// for failures (see [`Inner::own_errors`]). A link racing with the call
    /// may be missed, as it would be if the lock were taken first.
    #[inline]
    fn links(&self) -> Vec<WaitGroup> {
        if !self.has_links.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.copy_links()
    }

    #[inline(never)]
    fn copy_links(&self) -> Vec<WaitGroup> {
        self.links.lock().clone()
    }

    /// A copy of this group's own failures; without failures, no lock.
    ///
    /// Why a wait cannot miss a failure by skipping the lock: `record_failure`
    /// pushes the error and sets `has_errors` before the failing task's guard
    /// completes (see the invariants). The guard's `done` lowers the count
    /// with `Release`, and a wait returns only after reading the count at zero
    /// with `Acquire`, from that decrement's release sequence. So the flag's
    /// store happens-before the waiter's load, and the load, which cannot read
    /// a value older than a store that happens-before it, reads `true`. A
    /// failure being recorded concurrently with a call that is not such a
    /// wait may be missed, as it would be if the lock were taken first.
    #[inline]
    fn own_errors(&self) -> Vec<Arc<TaskError>> {
        if !self.has_errors.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.copy_errors()
    }

    #[inline(never)]
    fn copy_errors(&self) -> Vec<Arc<TaskError>> {
        self.errors.lock().clone()
    }

    fn info(&self, entry: &Entry, now: Instant) -> TaskInfo {
        TaskInfo {
            id: entry.id,
            name: entry.name.clone(),
            kind: entry.kind,
            site: entry.site,
            age: now.saturating_duration_since(entry.started),
            group: self.label.clone(),
        }
    }
}

/// Where a runtime must be found; panics with a message naming the
/// requirement rather than Tokio's generic one.
#[track_caller]
fn runtime_handle(method: &str) -> tokio::runtime::Handle {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!(
            "WaitGroup::{method} must be called from within a Tokio runtime (for example inside \
             #[tokio::main], a task, or Runtime::enter), because it spawns the task on the current runtime"
        ),
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

impl WaitGroup {
    /// Creates an unnamed group with the default settings: guards record their
    /// identity, failures do not cancel the group.
    pub fn new() -> Self {
        Builder::default().build()
    }

    /// Starts configuring a group.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The group's process-unique id.
    pub fn id(&self) -> GroupId {
        self.inner.label.id
    }

    /// The group's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.inner.label.name()
    }

    // ----- guards -----------------------------------------------------------

    /// Registers one unit of pending work and returns its guard.
    ///
    /// The group is busy until the guard is completed ([`TaskGuard::done`]) or
    /// dropped. The caller's location is recorded as the guard's creation site.
    ///
    /// On a [closed](Self::close) group `add` still registers the work (so
    /// nothing that is started escapes a wait); use [`try_add`](Self::try_add)
    /// where closing must refuse new work, as in an accept loop.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let wg = WaitGroup::new();
    /// let guard = wg.add();
    /// assert_eq!(wg.len(), 1);
    /// std::thread::spawn(move || guard.done()).join().unwrap();
    /// assert!(wg.is_empty());
    /// ```
    #[track_caller]
    #[inline]
    pub fn add(&self) -> TaskGuard {
        let task = self.add_task();
        self.inner
            .register(task, None, Location::caller(), TaskKind::Guard)
    }

    /// Like [`add`](Self::add), naming the work for reports.
    #[track_caller]
    pub fn add_named(&self, name: impl Into<Cow<'static, str>>) -> TaskGuard {
        let task = self.add_task();
        let name = self.inner.record_guards.then(|| name.into().into());
        self.inner
            .register(task, name, Location::caller(), TaskKind::Guard)
    }

    /// Like [`add`](Self::add), but refuses once the group is closed.
    ///
    /// # Errors
    ///
    /// [`Closed`] if [`close`](Self::close) was called. The check and the
    /// registration are one atomic step, so no work is registered after a
    /// `close` that happened before it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let wg = WaitGroup::new();
    /// let _conn = wg.try_add().unwrap();
    /// wg.close();
    /// assert!(wg.try_add().is_err());
    /// ```
    #[track_caller]
    #[inline]
    pub fn try_add(&self) -> Result<TaskGuard, Closed> {
        self.try_add_inner(None, Location::caller())
    }

    /// Like [`try_add`](Self::try_add), naming the work for reports.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed.
    #[track_caller]
    pub fn try_add_named(&self, name: impl Into<Cow<'static, str>>) -> Result<TaskGuard, Closed> {
        let name = self.inner.record_guards.then(|| name.into().into());
        self.try_add_inner(name, Location::caller())
    }

    #[inline]
    fn try_add_inner(
        &self,
        name: Option<Label>,
        site: &'static Location<'static>,
    ) -> Result<TaskGuard, Closed> {
        let task = self.try_add_task()?;
        Ok(self.inner.register(task, name, site, TaskKind::Guard))
    }

    /// Counts one task, whether or not the group is closed.
    #[inline]
    fn add_task(&self) -> TaskRef<Inner> {
        let (task, was_closed) = self.inner.add_task();
        if was_closed {
            self.inner.note_late_add();
        }
        task
    }

    /// Counts one task unless the group is closed.
    #[inline]
    fn try_add_task(&self) -> Result<TaskRef<Inner>, Closed> {
        self.inner.try_add_task().map_err(|_| self.closed())
    }

    fn closed(&self) -> Closed {
        Closed { group: self.id() }
    }

    // ----- tasks ------------------------------------------------------------

    /// Spawns a task on the current Tokio runtime.
    ///
    /// `f` receives the group's [`context`](Self::context) and returns the
    /// task's future, which resolves to `Result<(), E>`. An error, or a panic,
    /// is recorded with the task's id and returned by [`wait`](Self::wait);
    /// a panic never unwinds into the waiter. The task counts as pending until
    /// it finishes. Returns the task's id.
    ///
    /// On a closed group `go` still spawns and tracks the task (see
    /// [`add`](Self::add)); [`try_go`](Self::try_go) refuses instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// wg.go(|ctx| async move {
    ///     ctx.cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// wg.cancel();
    /// wg.wait().await.unwrap();
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime. The panic message says so.
    #[track_caller]
    pub fn go<F, Fut, E>(&self, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handle = runtime_handle("go");
        let task = self.add_task();
        self.spawn(&handle, task, None, Location::caller(), f)
    }

    /// Like [`go`](Self::go), naming the task for reports and errors.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    #[track_caller]
    pub fn go_named<F, Fut, E>(&self, name: impl Into<Cow<'static, str>>, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handle = runtime_handle("go_named");
        let task = self.add_task();
        self.spawn(
            &handle,
            task,
            Some(name.into().into()),
            Location::caller(),
            f,
        )
    }

    /// Like [`go`](Self::go), but refuses once the group is closed (`f` is then
    /// not called).
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    #[track_caller]
    pub fn try_go<F, Fut, E>(&self, f: F) -> Result<TaskId, Closed>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handle = runtime_handle("try_go");
        let task = self.try_add_task()?;
        Ok(self.spawn(&handle, task, None, Location::caller(), f))
    }

    /// Like [`try_go`](Self::try_go), naming the task.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    #[track_caller]
    pub fn try_go_named<F, Fut, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Result<TaskId, Closed>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handle = runtime_handle("try_go_named");
        let task = self.try_add_task()?;
        Ok(self.spawn(
            &handle,
            task,
            Some(name.into().into()),
            Location::caller(),
            f,
        ))
    }

    /// Spawns a task already counted in the state word.
    fn spawn<F, Fut, E>(
        &self,
        handle: &tokio::runtime::Handle,
        task: TaskRef<Inner>,
        name: Option<Label>,
        site: &'static Location<'static>,
        f: F,
    ) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (guard, id, slot) =
            self.inner
                .register_recorded(task, name.clone(), site, TaskKind::Task);
        // If `f` panics, the guard is dropped and the count restored.
        let fut = f(self.inner.own.clone());
        let join = handle.spawn(task::run(id, name.as_ref(), guard, fut));
        self.inner.registry.set_join(slot, id, join);
        id
    }

    // ----- links ------------------------------------------------------------

    /// Makes this group's waits and shutdowns cover `child`: they finish this
    /// group's own work first, then each linked group's, in link order.
    /// `child`'s failures are reported by this group's waits, tagged with
    /// `child`'s group. [`cancel`](Self::cancel) reaches `child` too.
    ///
    /// A group may be linked under several parents. Unlike [`child`](Self::child),
    /// `link` does not make `child`'s context a child of this group's: a
    /// caller's token that cancels this group reaches a linked group only
    /// through [`cancel`](Self::cancel), a failure with `cancel_on_error`, or a
    /// shutdown.
    ///
    /// # Errors
    ///
    /// [`LinkError`] if `child` is this group, if `child` already waits for
    /// this group (a cycle), or if it is already linked here.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::{LinkError, WaitGroup};
    /// let server = WaitGroup::builder().name("server").build();
    /// let db = WaitGroup::builder().name("db").build();
    /// server.link(&db).unwrap();
    /// assert!(matches!(db.link(&server), Err(LinkError::Cycle { .. })));
    /// ```
    pub fn link(&self, child: &WaitGroup) -> Result<(), LinkError> {
        if Shared::ptr_eq(&self.inner, &child.inner) {
            return Err(LinkError::SelfLink { group: self.id() });
        }
        let _order = LINK_ORDER.lock();
        if child.reaches(self.id()) {
            return Err(LinkError::Cycle {
                parent: self.id(),
                child: child.id(),
            });
        }
        let mut links = self.inner.links.lock();
        if links.iter().any(|l| Shared::ptr_eq(&l.inner, &child.inner)) {
            return Err(LinkError::AlreadyLinked {
                parent: self.id(),
                child: child.id(),
            });
        }
        links.push(child.clone());
        self.inner.has_links.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates a group linked below this one whose context is a child of this
    /// group's (Go's `errgroup` `Sub()`): cancelling this group cancels it,
    /// cancelling it does not cancel this group. It inherits `record_guards`,
    /// `cancel_on_error` and `abort_timeout`.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let parent = WaitGroup::new();
    /// let child = parent.child();
    /// child.cancel();
    /// assert!(!parent.is_cancelled());
    /// parent.cancel();
    /// assert!(child.is_cancelled());
    /// ```
    pub fn child(&self) -> WaitGroup {
        self.make_child(None)
    }

    /// Like [`child`](Self::child), with a name.
    pub fn child_named(&self, name: impl Into<Cow<'static, str>>) -> WaitGroup {
        self.make_child(Some(name.into().into()))
    }

    fn make_child(&self, name: Option<Label>) -> WaitGroup {
        let child = Builder {
            name,
            record_guards: self.inner.record_guards,
            cancel_on_error: self.inner.cancel_on_error,
            abort_timeout: self.inner.abort_timeout,
            token: None,
        }
        .build_in(self.inner.scope.child_token());
        // A fresh group cannot close a cycle, so LINK_ORDER is not needed.
        let mut links = self.inner.links.lock();
        links.push(child.clone());
        self.inner.has_links.store(true, Ordering::Release);
        drop(links);
        child
    }

    /// The groups linked below this one, in link order.
    pub fn linked(&self) -> Vec<WaitGroup> {
        self.inner.links()
    }

    /// Whether `target` is this group or (transitively) linked below it.
    fn reaches(&self, target: GroupId) -> bool {
        self.id() == target || self.inner.links().iter().any(|l| l.reaches(target))
    }

    // ----- cancellation -----------------------------------------------------

    /// Cancels the group and every group below it at once: their contexts are
    /// cancelled, so their tasks are asked to stop. Nothing is aborted; use
    /// [`shutdown`](Self::shutdown) for a bounded, ordered stop.
    pub fn cancel(&self) {
        crate::trace::cancelled(&self.inner.label, None);
        self.inner.cancel_tree();
    }

    /// Whether the group's context is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.own.is_cancelled()
    }

    /// Resolves when the group's context is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.own.cancelled()
    }

    /// The group's context: the token its tasks receive. Cancelling it cancels
    /// this group's own tasks and the groups made with [`child`](Self::child).
    pub fn context(&self) -> CancellationToken {
        self.inner.own.clone()
    }

    /// The failure that cancelled the group, with
    /// [`cancel_on_error`](Builder::cancel_on_error): the first one recorded.
    /// `None` if no failure cancelled it.
    pub fn cancel_cause(&self) -> Option<&TaskError> {
        self.inner.cause.get().map(|e| &**e)
    }

    // ----- closing and introspection ----------------------------------------

    /// Closes the group to new work: from now on [`try_add`](Self::try_add)
    /// and [`try_go`](Self::try_go) return [`Closed`]. Pending work is not
    /// affected, and plain `add`/`go` still register work. Closing is
    /// permanent. Linked groups are not closed (a shutdown closes each in
    /// turn).
    pub fn close(&self) {
        if self.inner.state().close() {
            crate::trace::closed(&self.inner.label);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.state().is_closed()
    }

    /// How many guards and tasks of this group (not of linked groups) are
    /// pending. One atomic load.
    pub fn len(&self) -> usize {
        self.inner.state().len() as usize
    }

    /// Whether nothing of this group's own is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pending guard and task of this group and its linked groups, as a
    /// timed-out wait would report them. Locks each registry shard briefly in
    /// turn and never blocks `add`/`done` for longer than one copy; cheap
    /// enough for a health endpoint.
    pub fn pending(&self) -> PendingReport {
        let now = Instant::now();
        let mut report = PendingReport::default();
        self.collect_pending(now, &mut HashSet::new(), &mut report.groups);
        report
    }

    fn collect_pending(
        &self,
        now: Instant,
        seen: &mut HashSet<GroupId>,
        out: &mut Vec<GroupPending>,
    ) {
        if !seen.insert(self.id()) {
            return;
        }
        let mut tasks = Vec::new();
        self.inner
            .registry
            .for_each(|entry| tasks.push(self.inner.info(entry, now)));
        tasks.sort_unstable_by_key(|t| t.id);
        let count = self.len().max(tasks.len());
        if count > 0 {
            out.push(GroupPending {
                group: self.inner.label.clone(),
                count,
                tasks,
            });
        }
        for child in self.inner.links() {
            child.collect_pending(now, seen, out);
        }
    }

    /// Every failure recorded so far by this group and its linked groups: this
    /// group's in completion order, then each linked group's in link order.
    #[inline]
    pub fn errors(&self) -> TaskErrors {
        if !self.inner.has_links.load(Ordering::Acquire) {
            return TaskErrors::new(self.inner.own_errors());
        }
        self.tree_errors()
    }

    #[inline(never)]
    fn tree_errors(&self) -> TaskErrors {
        let mut errors = Vec::new();
        self.collect_errors(&mut HashSet::new(), &mut errors);
        TaskErrors::new(errors)
    }

    fn collect_errors(&self, seen: &mut HashSet<GroupId>, out: &mut Vec<Arc<TaskError>>) {
        if !seen.insert(self.id()) {
            return;
        }
        if self.inner.has_errors.load(Ordering::Acquire) {
            out.extend(self.inner.errors.lock().iter().cloned());
        }
        for child in self.inner.links() {
            child.collect_errors(seen, out);
        }
    }

    // ----- waiting ----------------------------------------------------------

    /// Waits until this group's own work is done, then each linked group's in
    /// link order, and returns every failure.
    ///
    /// A group with nothing pending returns at once. Waiting again returns the
    /// same result (plus any failure recorded since).
    ///
    /// # Errors
    ///
    /// * [`WaitError::Failed`] listing every failure, if any task failed or
    ///   panicked.
    /// * [`WaitError::WaitFromOwnTask`] if called from a `go()` task of this
    ///   group or of a group below it, which the wait would wait for forever.
    ///   (Code that merely holds a [`TaskGuard`] cannot be recognised: waiting
    ///   while holding a guard of the same group never returns.)
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing behind.
    pub async fn wait(&self) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        self.wait_tree().await;
        self.result()
    }

    /// Like [`wait`](Self::wait), bounded by `timeout`.
    ///
    /// A zero timeout checks without waiting: `Ok` if everything is already
    /// done, otherwise a timeout with the report.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), and [`WaitError::TimedOut`] with a
    /// [`PendingReport`] of everything unfinished and the failures so far.
    /// Nothing keeps running after a timed-out wait, and the timeout is not
    /// recorded as any task's failure.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.wait_deadline(deadline_after(timeout)).await
    }

    /// Like [`wait_timeout`](Self::wait_timeout), until a point in time (on
    /// Tokio's clock). A deadline in the past checks without waiting.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_deadline(&self, deadline: Instant) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        match tokio::time::timeout_at(deadline, self.wait_tree()).await {
            Ok(()) => self.result(),
            Err(_) if self.tree_is_idle() => self.result(),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Blocks the thread until the group and its linked groups are done, like
    /// [`wait`](Self::wait). Works outside any runtime (in a `Drop` impl, a
    /// synchronous close path, a plain thread).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Blocking
    ///
    /// Blocks the calling thread; inside a runtime, call it from
    /// `spawn_blocking` or `block_in_place`, not from a task.
    ///
    /// # Examples
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let wg = WaitGroup::new();
    /// let guard = wg.add();
    /// std::thread::spawn(move || guard.done());
    /// wg.wait_blocking().unwrap();
    /// ```
    pub fn wait_blocking(&self) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        self.wait_tree_blocking(None);
        self.result()
    }

    /// Like [`wait_blocking`](Self::wait_blocking), bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Blocking
    ///
    /// Blocks the calling thread for at most about `timeout`.
    pub fn wait_blocking_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        let deadline = std::time::Instant::now().checked_add(timeout);
        if deadline.is_none() {
            self.wait_tree_blocking(None);
            return self.result();
        }
        if self.wait_tree_blocking(deadline) || self.tree_is_idle() {
            self.result()
        } else {
            Err(self.timed_out())
        }
    }

    pub(crate) fn check_not_own_task(&self) -> Result<(), WaitError> {
        match task::current_group() {
            Some(group) if self.reaches(group) => Err(WaitError::WaitFromOwnTask { group }),
            _ => Ok(()),
        }
    }

    fn result(&self) -> Result<(), WaitError> {
        let errors = self.errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(WaitError::Failed { errors })
        }
    }

    fn timed_out(&self) -> WaitError {
        let pending = self.pending();
        crate::trace::wait_timed_out(&self.inner.label, &pending);
        WaitError::TimedOut {
            pending,
            errors: self.errors(),
        }
    }

    fn tree_is_idle(&self) -> bool {
        self.is_empty() && self.inner.links().iter().all(|l| l.tree_is_idle())
    }

    /// Own work first, then each linked group in order; repeated until one
    /// pass finds the whole tree idle, so work added meanwhile is covered.
    /// Without links this is one wait on the state word: no allocation.
    async fn wait_tree(&self) {
        loop {
            self.inner.state().wait_idle().await;
            let links = self.inner.links();
            if links.is_empty() {
                return;
            }
            for child in links {
                child.wait_tree_boxed().await;
            }
            if self.tree_is_idle() {
                return;
            }
        }
    }

    /// `wait_tree` for a linked group: recursion needs a box.
    fn wait_tree_boxed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wait_tree())
    }

    /// The blocking twin of `wait_tree`; `false` if the deadline passed.
    fn wait_tree_blocking(&self, deadline: Option<std::time::Instant>) -> bool {
        loop {
            if !self.inner.state().wait_idle_blocking(deadline) {
                return false;
            }
            for child in self.inner.links() {
                if !child.wait_tree_blocking(deadline) {
                    return false;
                }
            }
            if self.tree_is_idle() {
                return true;
            }
        }
    }

    // ----- shutdown (see shutdown.rs) ----------------------------------------

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn label(&self) -> &GroupLabel {
        &self.inner.label
    }
}

impl Inner {
    pub(crate) fn abort_timeout(&self) -> Duration {
        self.abort_timeout
    }

    pub(crate) fn cancel_own(&self) {
        self.own.cancel();
    }

    /// Closes the group; returns how much was pending at that moment and how
    /// much work had been added after `close()` before it.
    pub(crate) fn close_for_shutdown(&self) -> (usize, u64) {
        let late_adds = self.late_adds.load(Ordering::Relaxed);
        let pending = self.state().close_and_len() as usize;
        (pending, late_adds)
    }

    pub(crate) fn late_adds(&self) -> u64 {
        self.late_adds.load(Ordering::Relaxed)
    }

    pub(crate) async fn wait_idle(&self) {
        self.state().wait_idle().await;
    }

    /// Aborts every running `go()` task of this group. Returns what it
    /// aborted, and the handles that resolve once each abort took effect.
    pub(crate) fn abort_tasks(
        &self,
        now: Instant,
    ) -> (Vec<TaskInfo>, Vec<tokio::task::JoinHandle<()>>) {
        let mut aborted = Vec::new();
        let mut joins = Vec::new();
        self.registry.for_each(|entry| {
            if let Some(join) = entry.join.take() {
                join.abort();
                joins.push(join);
                aborted.push(self.info(entry, now));
            }
        });
        aborted.sort_unstable_by_key(|t| t.id);
        (aborted, joins)
    }
}

impl Default for WaitGroup {
    fn default() -> Self {
        Self::new()
    }
}

// A panic cannot leave a group in a broken state: no lock is held across user
// code, the critical sections do not panic, and task panics are caught before
// they reach the group. So a `WaitGroup` (and a guard) may cross
// `catch_unwind`, which `parking_lot`'s locks would otherwise forbid.
impl std::panic::UnwindSafe for WaitGroup {}
impl std::panic::RefUnwindSafe for WaitGroup {}
impl std::panic::UnwindSafe for TaskGuard {}
impl std::panic::RefUnwindSafe for TaskGuard {}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroup")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .field("cancelled", &self.is_cancelled())
            .field("links", &self.inner.links.lock().len())
            .finish()
    }
}
