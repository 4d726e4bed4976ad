//! [`WaitGroup`], the public handle to a group, and its [`WaitGroupBuilder`]. Each
//! method is a few lines over the group's node (`crate::node`); reading this
//! file top to bottom is the API.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::TaskContext;
use crate::error::{Closed, LinkError, TaskErrors, TryGoError, WaitError};
use crate::guard::TaskGuard;
use crate::label::{GroupId, Label, TaskId, TaskName};
use crate::node::Permit;
use crate::node::{self, Config, Node, NodeConfig, NodeRef, LINK_ORDER};
use crate::reason::CancelReason;
use crate::registry::{Entry, Slot};
use crate::report::{PendingReport, ShutdownReport, TaskKind};
use crate::shared::{Counted, Shared, TaskRef};
use crate::shutdown::{deadline_after, Grace};
use crate::task::{self, TaskHandle, TaskOutput, Tracked};

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
///   a [`TaskContext`] (the group's cancellation [`context`](Self::context))
///   and returns `()` or `Result<T, E>`; its error, or its panic, is recorded
///   with its identity and returned by [`wait`](Self::wait). Nothing is lost.
///   The [`TaskHandle`] it returns gives the task's value, or aborts it.
///   A task dropped unfinished with its runtime (shut down or dropped while
///   the group lives) ends there and counts as done: the group outlives the
///   runtime, records no failure for it, and waits for its other work as
///   before (see [`ShutdownReport::finished`](crate::ShutdownReport::finished)).
/// * [`task`](Self::task) describes one unit of work before starting it: a
///   name, whether its failure cancels the group, and where it runs (a
///   blocking closure, a `!Send` future, another runtime, a future you poll).
///   See [`TaskBuilder`].
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
/// # Lifetime
///
/// A group lives while a handle or a pending task refers to it. A group made
/// with [`child`](Self::child) *leaves* its parent (and is freed) once every
/// handle to it is dropped, its work is done and its own children have left:
/// a server can make a child group per request or per batch for weeks
/// without its memory or its waits growing. Its failures stay reported by
/// the parent. A group attached with [`link`](Self::link) stays linked until
/// [`unlink`](Self::unlink)ed, and keeps the group it is linked below: a child
/// that linked another stays until it unlinks it (see [`child`](Self::child)). Dropping the last handle to a group does not
/// stop its running tasks: they run to completion, are waited for by any
/// parent's wait, and their failures are kept.
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
/// `add` and on `done`. [`WaitGroupBuilder::record_guards(false)`] turns that off for
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
///     wg.task().name(format!("worker-{i}")).go(move |_ctx| async move {
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
/// [`WaitGroupBuilder::record_guards(false)`]: WaitGroupBuilder::record_guards
pub struct WaitGroup {
    node: NodeRef,
}

/// Default length of a shutdown's forced phase, after the grace period.
pub(crate) const DEFAULT_ABORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Default number of failures a group keeps; see [`WaitGroupBuilder::max_errors`].
pub const DEFAULT_MAX_ERRORS: usize = 1000;

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
#[must_use = "a WaitGroupBuilder does nothing until build() is called"]
pub struct WaitGroupBuilder {
    config: Config,
    /// Not in `config`: the node keeps it apart from its settings.
    record_guards: bool,
    token: Option<CancellationToken>,
}

impl WaitGroupBuilder {
    /// Names the group; reports and errors show the name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into());
        self
    }

    /// Whether guards record their identity (name, creation site, start time)
    /// for reports. Default `true`. With `false`, `add` and `done` do no more
    /// than one atomic step each on the group's state and reports count guards
    /// instead of listing them, except guards given a name
    /// ([`TaskBuilder::name`]). Spawned tasks are always recorded.
    pub fn record_guards(mut self, record: bool) -> Self {
        self.record_guards = record;
        self
    }

    /// Errgroup semantics: the first task failure (error or panic) cancels the
    /// group and every group below it, and becomes the
    /// [`cancel_cause`](WaitGroup::cancel_cause); once the group is
    /// [reopened](WaitGroup::reopen), the first failure after that cancels it
    /// again. Default `false`.
    pub fn cancel_on_error(mut self, cancel: bool) -> Self {
        self.config.cancel_on_error = cancel;
        self
    }

    /// The length of [`shutdown`](WaitGroup::shutdown)'s forced phase, after
    /// the grace period, shared by the groups that need it (see `shutdown`).
    /// Default one second. `Duration::MAX` means no limit: aborted tasks are
    /// waited for until they stop (and the groups a shutdown reaches after
    /// its deadline share one more grace period to stop by themselves, not
    /// an endless phase).
    ///
    /// A zero abort timeout (or one shorter than the time an abort takes to
    /// land) does not wait for the aborts: on a multi-thread runtime, a task
    /// whose abort is still landing on another worker when the report is
    /// made is reported as pending (often, for a stuck task on two workers),
    /// on a current-thread runtime as aborted. Give it a few milliseconds to
    /// have every abort listed.
    pub fn abort_timeout(mut self, timeout: Duration) -> Self {
        self.config.abort_timeout = timeout;
        self
    }

    /// How many failures the group keeps, the first `max` recorded. Later
    /// ones are counted but not kept: every [`TaskErrors`] says how many
    /// ([`TaskErrors::dropped`]) and its `Display` ends with "and N more
    /// failures". Default [`DEFAULT_MAX_ERRORS`] (1,000), so that a group kept
    /// for a server's whole life holds bounded memory; use
    /// [`WaitGroup::take_errors`] to drain the record periodically (for a
    /// logger), or `usize::MAX` to keep everything.
    ///
    /// The first ones are kept rather than the last because the first
    /// failure is usually the cause of the rest: it is the one
    /// [`cancel_on_error`](Self::cancel_on_error) acts on and Go's `errgroup`
    /// returns, and the failures that follow a cancellation are often its
    /// consequences. Taking in the failures of [children](WaitGroup::child)
    /// that left beyond `max`, the group drops the latest
    /// [secondary](crate::TaskError::is_secondary) ones first, so that each
    /// child's cause is kept over another child's consequences.
    pub fn max_errors(mut self, max: usize) -> Self {
        self.config.max_errors = max;
        self
    }

    /// At most `limit` of the group's spawned tasks run at once (Go's
    /// `errgroup.SetLimit`). [`go`](WaitGroup::go) never blocks: a task beyond
    /// the limit is spawned, counted as pending and reported as *queued*
    /// until a slot frees; [`try_go`](WaitGroup::try_go) refuses with
    /// [`TryGoError::Full`] instead; [`TaskBuilder::go_when_free`] waits for
    /// a slot first, which gives a producer backpressure. Guards, blocking
    /// tasks and tracked futures do not count against the limit, unless a
    /// guard asks to ([`TaskBuilder::try_add_in_limit`],
    /// [`TaskBuilder::add_when_free`]). Default: no limit.
    ///
    /// Queued tasks start in no particular order, not that of their `go()`
    /// calls: a queued task waits for its slot from its first poll, which
    /// the runtime schedules as it does any new task, and a slot that frees
    /// before then may go to a later `try_go` or `go_when_free`.
    ///
    /// A task still queued when its group is cancelled starts when its slot
    /// comes, with its context cancelled, so that it can end cleanly (give
    /// back a message it holds, say); one still queued when a
    /// [`shutdown`](WaitGroup::shutdown) aborts the group's stragglers does
    /// not start, even if a slot comes before its abort lands, and is
    /// listed as aborted while queued. The limit counts every spawned task
    /// of the group: a loop that feeds it, spawned in the same group, takes
    /// a slot (spawn the work in a [`child`](WaitGroup::child), which has a
    /// limit of its own).
    ///
    /// A limit of [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS)
    /// (2^61 - 1 on 64-bit targets) or more, `usize::MAX` among them, is no
    /// limit, as no group holds that many tasks.
    ///
    /// # Panics
    ///
    /// `build()` panics if `limit` is zero.
    pub fn limit(mut self, limit: usize) -> Self {
        self.config.limit = (limit < tokio::sync::Semaphore::MAX_PERMITS).then_some(limit);
        self
    }

    /// Whether dropping the group's last handle aborts its running `go()`
    /// tasks and those of the groups made below it
    /// ([`child`](WaitGroup::child), [`scoped_child`](WaitGroup::scoped_child)),
    /// as dropping a tokio `JoinSet` does. Default `false`: the tasks run to
    /// completion (and a parent's waits still cover them). Guards are not
    /// affected, and neither are groups [linked](WaitGroup::link) below.
    ///
    /// A setting of the group built with it (with [`build`](Self::build), or
    /// below another with [`build_child`](Self::build_child) or
    /// [`build_scoped_child`](Self::build_scoped_child)): the groups
    /// [`child`](WaitGroup::child) and [`scoped_child`](WaitGroup::scoped_child)
    /// make below it inherit it but do not abort their tasks when their own
    /// last handle goes, so a child made per request and dropped while its
    /// work runs lets that work run (until this group's last handle goes).
    /// The drop aborts what runs at that moment: work given afterwards to a
    /// group below, through a handle to it still held, is not aborted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use taskgroup::WaitGroup;
    ///
    /// let server = WaitGroup::builder().abort_on_drop(true).build();
    /// let request = server.child();
    /// let part = request.go(|ctx| async move { ctx.cancelled().await });
    /// drop(request); // the request's work runs on
    /// tokio::task::yield_now().await;
    /// assert!(!part.is_finished());
    /// drop(server); // takes the whole tree's tasks with it
    /// assert!(part.await.unwrap_err().is_aborted());
    /// # }
    /// ```
    pub fn abort_on_drop(mut self, abort: bool) -> Self {
        self.config.abort_on_drop = abort;
        self
    }

    /// Whether a [`shutdown`](WaitGroup::shutdown) stops the groups below
    /// this one together with it, rather than each at its own turn. Default
    /// `false`. For a group whose children are one per connection or
    /// request, which need not wait for each other.
    ///
    /// A shutdown stops groups one at a time, in walk order: a group is
    /// cancelled once the ones before it have stopped, so that a database
    /// pool linked after a server keeps serving while the server's
    /// connections drain. With a thousand connection groups that each take
    /// 5 ms to close once cancelled, that is 5 s, one after the other. With
    /// this set, at this group's turn every group the shutdown's walk
    /// reaches through it (its children, theirs, and groups
    /// [linked](WaitGroup::link) below them, but not those reached earlier
    /// through another group) is closed and drained at once, given the drain
    /// phase of the [`Grace`] to stop by itself, and cancelled at once; their
    /// turns follow in walk order as before, and overlap: the thousand take
    /// about 5 ms. Groups after them in the walk still wait for all of them
    /// to stop. Each counts as reached at this group's turn: one still
    /// running at the deadline has its tasks aborted then (not given a share
    /// of the forced phase to stop by itself, as a group first reached
    /// after the deadline is), and the budget is the same.
    ///
    /// A [`child()`](WaitGroup::child) inherits the setting: the groups it
    /// covers are started by the topmost group that has it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let server = WaitGroup::builder().name("server").build();
    /// let connections = WaitGroup::builder()
    ///     .name("connections")
    ///     .stop_children_together(true)
    ///     .build_child(&server);
    /// for _ in 0..1000 {
    ///     // A group per connection, for the tasks of its requests.
    ///     let connection = connections.child();
    ///     connection.go(|ctx| async move {
    ///         ctx.cancelled().await;
    ///         // Finish the response in flight and close: 5 ms.
    ///         tokio::time::sleep(Duration::from_millis(5)).await;
    ///     });
    /// }
    /// let report = server.shutdown(Duration::from_secs(30)).await;
    /// assert_eq!(report.finished(), 1000);
    /// // Closed together, not in 5 s one after the other.
    /// assert!(report.elapsed() < Duration::from_millis(100));
    /// # }
    /// ```
    pub fn stop_children_together(mut self, together: bool) -> Self {
        self.config.stop_children_together = together;
        self
    }

    /// Cancels the group when `token` is cancelled (the group gets a child of
    /// `token`; cancelling the group does not cancel `token`).
    pub fn token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Creates the group.
    ///
    /// # Panics
    ///
    /// With a [`limit`](Self::limit) of zero (no task could ever run).
    ///
    /// With a [`deadline`](Self::deadline) (or a [`timeout`](Self::timeout)
    /// shorter than thirty years), outside a Tokio runtime (its timer is a
    /// task).
    pub fn build(self) -> WaitGroup {
        self.check();
        let runtime = self
            .config
            .deadline
            .map(|_| runtime_handle("builder().deadline(..).build"));
        let node = Node::new(
            NodeConfig::new(self.config, self.record_guards, None),
            self.token,
            None,
        );
        if let Some(runtime) = runtime {
            node::start_deadline_timer(&node, &runtime);
        }
        WaitGroup { node }
    }

    /// Builds a group linked below `parent` as [`WaitGroup::child`] makes one
    /// (its context a child of `parent`'s, leaving `parent` once released and
    /// idle), but with this builder's settings instead of `parent`'s; the
    /// way to give a child group a [`deadline`](Self::deadline) of its own.
    /// A [`token`](Self::token) set here is ignored: the child's context
    /// derives from `parent`'s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{CancelReason, WaitGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let server = WaitGroup::builder().name("server").build();
    /// let request = WaitGroup::builder()
    ///     .name("request")
    ///     .timeout(Duration::from_secs(5))
    ///     .build_child(&server);
    /// request.go(|ctx| async move { ctx.cancelled().await });
    /// request.wait().await.unwrap(); // cancelled by its deadline after 5 s
    /// assert!(matches!(request.cancel_reason(), Some(CancelReason::Deadline)));
    /// assert!(!server.is_cancelled()); // the parent is untouched
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`build`](Self::build).
    #[track_caller]
    pub fn build_child(self, parent: &WaitGroup) -> WaitGroup {
        self.build_below(parent, false, "builder().deadline(..).build_child")
    }

    /// Builds a [scoped child](WaitGroup::scoped_child) of `parent` with
    /// these settings, as [`build_child`](Self::build_child) builds a child
    /// (a [`token`](Self::token) set here is ignored as there): its context
    /// is a child of `parent`'s own tasks' context, so that whatever cancels
    /// them (a shutdown reaching `parent`) cancels it too.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = WaitGroup::new();
    /// let request = WaitGroup::builder()
    ///     .name("GET /report")
    ///     .timeout(Duration::from_secs(5))
    ///     .build_scoped_child(&server);
    /// server.cancel();
    /// assert!(request.is_cancelled());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`build`](Self::build).
    #[track_caller]
    pub fn build_scoped_child(self, parent: &WaitGroup) -> WaitGroup {
        self.build_below(parent, true, "builder().deadline(..).build_scoped_child")
    }

    #[track_caller]
    fn build_below(self, parent: &WaitGroup, scoped: bool, method: &str) -> WaitGroup {
        self.check();
        let runtime = self.config.deadline.map(|_| runtime_handle(method));
        let config = NodeConfig::new(self.config, self.record_guards, Some(&parent.node.config));
        let node = if scoped {
            Node::make_scoped_child(&parent.node, config, &parent.node.generation())
        } else {
            Node::make_child(&parent.node, config)
        };
        if let Some(runtime) = runtime {
            node::start_deadline_timer(&node, &runtime);
        }
        WaitGroup { node }
    }

    /// Sets a deadline: at `deadline` the group and the groups below it are
    /// cancelled ([`CancelReason::Deadline`]);
    /// nothing is aborted (a shutdown does that). Its tasks read it, or an
    /// earlier deadline of a group above, or a running shutdown's, with
    /// [`TaskContext::deadline`](crate::TaskContext::deadline). A child's
    /// deadline never cancels its parent. Starting the timer needs a Tokio
    /// runtime at `build`.
    ///
    /// The deadline is set once: [`reopen`](WaitGroup::reopen) does not
    /// restart it (a group cancelled or shut down and reopened before its
    /// deadline is cancelled at it), and once no handle is left and the group is idle its
    /// timer stops (a handle recovered later by
    /// [`linked`](WaitGroup::linked) no longer has it enforced). A group
    /// reopened after its deadline passed is not cancelled again, but
    /// [`TaskContext::deadline`](crate::TaskContext::deadline) still reports
    /// that deadline, passed, to its tasks: build a new group (or a
    /// [`child`](WaitGroup::child) with a timeout) for work with a new one.
    pub fn deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// Sets a deadline `timeout` from now (see [`deadline`](Self::deadline));
    /// `Duration::MAX`, or any time limit of thirty years or more, means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.deadline = (!crate::shutdown::is_unlimited(timeout))
            .then(|| crate::shutdown::deadline_after(timeout));
        self
    }

    fn check(&self) {
        assert!(
            self.config.limit != Some(0),
            "WaitGroupBuilder::limit(0): a group whose tasks can never run"
        );
    }
}

impl Default for WaitGroupBuilder {
    fn default() -> Self {
        Self {
            config: Config::DEFAULT,
            record_guards: true,
            token: None,
        }
    }
}

/// Where a task is spawned: on the current runtime (`tokio::spawn`, which
/// clones no runtime handle), on a given one, or on the current one through
/// the handle that checking for it cloned. [`Runtime::current`] checks that
/// there is a runtime, so that the panic names the method rather than
/// Tokio's generic message.
#[derive(Debug)]
enum Runtime<'r> {
    Current,
    On(&'r tokio::runtime::Handle),
    /// The current runtime's handle, which looking for one cloned.
    Found(tokio::runtime::Handle),
}

impl Runtime<'_> {
    /// The current runtime, after checking that there is one (so that the
    /// panic names the method): from inside a task that is known without a
    /// runtime handle, elsewhere (a `block_on`'s own future, a plain thread)
    /// by looking for one.
    #[inline]
    #[track_caller]
    fn current(method: &str) -> Self {
        if tokio::task::try_id().is_none() {
            // Spawned on through the handle found, rather than dropped and
            // looked up again by `tokio::spawn`.
            return Runtime::Found(runtime_handle(method));
        }
        Runtime::Current
    }

    /// Spawns `fut`; with the `tokio-console` feature under
    /// `--cfg tokio_unstable`, named `name` for tokio-console.
    #[track_caller]
    fn spawn<F>(self, fut: F, name: Option<&str>) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        #[cfg(all(tokio_unstable, feature = "tokio-console"))]
        if let Some(name) = name {
            let builder = tokio::task::Builder::new().name(name);
            let spawned = match self {
                Runtime::Current => builder.spawn(fut),
                Runtime::On(handle) => builder.spawn_on(fut, handle),
                Runtime::Found(handle) => builder.spawn_on(fut, &handle),
            };
            // Spawning only fails when the runtime is shutting down, where
            // `tokio::spawn` would return a handle that says so.
            return spawned.expect("tokio's task builder failed to spawn");
        }
        #[cfg(not(all(tokio_unstable, feature = "tokio-console")))]
        let _ = name;
        match self {
            Runtime::Current => tokio::spawn(fut),
            Runtime::On(handle) => handle.spawn(fut),
            Runtime::Found(handle) => handle.spawn(fut),
        }
    }
}

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

impl WaitGroup {
    /// Creates an unnamed group with the default settings: guards record their
    /// identity, failures do not cancel the group.
    pub fn new() -> Self {
        WaitGroupBuilder::default().build()
    }

    /// Starts configuring a group.
    pub fn builder() -> WaitGroupBuilder {
        WaitGroupBuilder::default()
    }

    /// The group's process-unique id.
    pub fn id(&self) -> GroupId {
        self.node.id()
    }

    /// The group's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.node.label.name()
    }

    // ----- work --------------------------------------------------------------

    /// Starts describing one unit of work for this group: a name, whether
    /// its failure cancels the group, and where it runs. See [`TaskBuilder`].
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let listener = wg.task().name("listener").add();
    /// wg.task().name("conn 10.0.0.7:4711").go(|ctx| async move {
    ///     ctx.cancelled().await;
    /// });
    /// # drop(listener);
    /// # wg.cancel();
    /// # wg.wait().await.unwrap();
    /// # }
    /// ```
    pub fn task(&self) -> TaskBuilder<'_> {
        TaskBuilder {
            group: self,
            name: None,
            critical: None,
        }
    }

    /// Registers one unit of pending work and returns its guard; the same as
    /// `self.task().add()` (see [`TaskBuilder::add`]).
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
    ///
    /// # Panics
    ///
    /// With 2^31 units of work (guards and tasks) pending in the group.
    #[track_caller]
    #[inline]
    pub fn add(&self) -> TaskGuard {
        TaskGuard::new(self.add_task(), None, Location::caller(), TaskKind::Guard)
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
        let task = self.try_add_task()?;
        Ok(TaskGuard::new(
            task,
            None,
            Location::caller(),
            TaskKind::Guard,
        ))
    }

    /// Spawns a task on the current Tokio runtime; the same as
    /// `self.task().go(f)` (see [`TaskBuilder::go`]).
    ///
    /// `f` receives the task's [`TaskContext`] (which dereferences to the
    /// group's cancellation token) and returns the task's future, which
    /// resolves to `()` or to `Result<T, E>`. An error, or a panic, is
    /// recorded with the task's id and returned by [`wait`](Self::wait); a
    /// panic never unwinds into the waiter. The task counts as pending until
    /// it finishes. The returned [`TaskHandle`] gives the task's value, or
    /// aborts it; dropping it leaves the task running.
    ///
    /// On a closed group `go` still spawns and tracks the task (see
    /// [`add`](Self::add)); [`try_go`](Self::try_go) refuses instead. With a
    /// [`limit`](WaitGroupBuilder::limit), a task beyond it waits for a slot.
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
    /// });
    /// let answer = wg.go(|_| async { Ok::<_, std::io::Error>(42) });
    /// assert_eq!(answer.await.unwrap(), 42);
    /// wg.cancel();
    /// wg.wait().await.unwrap();
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime. The panic message says so. If `f`
    /// panics: it is called at once, on the caller's thread, to make the
    /// task's future, so its panic unwinds into the caller and no task is
    /// registered (the future's own panics are the task's, caught). With
    /// 2^31 units of work pending in the group.
    #[track_caller]
    pub fn go<F, Fut>(&self, f: F) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        self.task().go(f)
    }

    /// Like [`go`](Self::go), but refuses once the group is closed, or when
    /// the group's [`limit`](WaitGroupBuilder::limit) has no free slot (Go's
    /// `errgroup.TryGo`); `f` is then not called. The same as
    /// `self.task().try_go(f)`.
    ///
    /// # Errors
    ///
    /// [`TryGoError::Closed`] if the group is closed (also when no slot is
    /// free: a caller retries on `Full`, not on `Closed`), else
    /// [`TryGoError::Full`] if no slot is free; both are checked before
    /// looking for a runtime.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime on an open group with a free slot;
    /// if `f` panics, or with 2^31 units of work pending, as [`go`](Self::go).
    #[track_caller]
    pub fn try_go<F, Fut>(
        &self,
        f: F,
    ) -> Result<TaskHandle<<Fut::Output as TaskOutput>::Value>, TryGoError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        self.task().try_go(f)
    }

    /// Counts one task, whether or not the group is closed.
    #[inline]
    fn add_task(&self) -> TaskRef<Node> {
        self.node.add_task().0
    }

    /// Counts one task to spawn, whether or not the group is closed; and
    /// whether it was open (see `Node::late_abort`).
    #[inline]
    fn add_spawned(&self) -> (TaskRef<Node>, bool) {
        let (task, was_closed) = self.node.add_task();
        (task, !was_closed)
    }

    /// Counts one task unless the group is closed.
    #[inline]
    fn try_add_task(&self) -> Result<TaskRef<Node>, Closed> {
        self.node
            .try_add_task()
            .map_err(|_| Closed { group: self.id() })
    }

    // ----- links ------------------------------------------------------------

    /// Makes this group's waits and shutdowns cover `child`: they finish this
    /// group's own work first, then each linked group's, in link order.
    /// `child`'s failures are reported by this group's waits, tagged with
    /// `child`'s group. [`cancel`](Self::cancel) reaches `child` too. The link
    /// stays until [`unlink`](Self::unlink), even when every handle to `child`
    /// is dropped.
    ///
    /// A group may be linked under several parents; every walk over the links
    /// (waits, cancel, reports, shutdown) still visits it once. Unlike
    /// [`child`](Self::child), `link` does not make `child`'s context a child
    /// of this group's: a caller's token that cancels this group reaches a
    /// linked group only through [`cancel`](Self::cancel), a failure with
    /// `cancel_on_error`, or a shutdown.
    ///
    /// Links are made one at a time, process-wide. The check for a cycle
    /// walks the groups below `child`, but only when this group may itself be
    /// below another (it is a [`child`](Self::child), or was ever linked
    /// below a group): a group that nothing holds, such as a fresh request's
    /// group linking a shared one, links in constant time however much is
    /// below `child`. If this group has a [deadline](WaitGroupBuilder::deadline),
    /// the groups below `child` are walked to take it on.
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
        if Shared::ptr_eq(&self.node, &child.node) {
            return Err(LinkError::SelfLink { group: self.id() });
        }
        let _order = LINK_ORDER.lock();
        // A cycle needs a path from `child` to this group, so a group no
        // other holds (a fresh request's, the top of a chain built bottom up)
        // is not looked for in `child`'s subtree, which may be large.
        if self.node.may_be_below_another() && node::reaches(&child.node, self.id()) {
            return Err(LinkError::Cycle {
                parent: self.id(),
                child: child.id(),
            });
        }
        if !self.node.push_link(&child.node) {
            return Err(LinkError::AlreadyLinked {
                parent: self.id(),
                child: child.id(),
            });
        }
        node::inherit_deadline(&self.node, &child.node);
        Ok(())
    }

    /// Removes `child` from this group's links (made by [`link`](Self::link)
    /// or [`child`](Self::child)). Returns whether it was linked here.
    ///
    /// Failures `child` recorded are no longer reported by this group (they
    /// stay in `child`). Work in `child` keeps running.
    ///
    /// A [deadline](WaitGroupBuilder::deadline) `child` took on from this
    /// group when linked (see [`link`](Self::link)) no longer cancels it, but
    /// stays what [`TaskContext::deadline`](crate::TaskContext::deadline)
    /// reports to the tasks of `child` and of the groups below it: a group
    /// does not know every group it is below, so it cannot tell whether
    /// another still bounds it by that deadline.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let server = WaitGroup::new();
    /// let db = WaitGroup::new();
    /// server.link(&db).unwrap();
    /// assert!(server.unlink(&db));
    /// assert!(!server.unlink(&db));
    /// assert!(server.linked().is_empty());
    /// ```
    pub fn unlink(&self, child: &WaitGroup) -> bool {
        self.node.remove_link(&child.node)
    }

    /// Creates a group linked below this one whose context is a child of this
    /// group's (Go's `errgroup` `Sub()`): cancelling this group cancels it,
    /// cancelling it does not cancel this group. A shutdown stops it after
    /// this group's own work: for a group that work waits for (a request's
    /// fan-out), make a [`scoped_child`](Self::scoped_child). It inherits this group's
    /// settings (`record_guards`, `cancel_on_error`, `abort_timeout`,
    /// `max_errors`, `limit` as a limit of its own,
    /// `stop_children_together`; not `abort_on_drop`, which aborts the
    /// child's tasks with this group's, not when the child's own handles
    /// go); name it
    /// with `self.task().name("db").child()`.
    ///
    /// The child leaves this group's links, and is freed, once every handle
    /// to it is dropped, its work is done and its own children have left;
    /// its failures are then kept by this group (subject to this group's
    /// `max_errors`). Until then this group's waits and shutdowns cover it,
    /// even with no handle left. A failure the child's own
    /// [`wait`](Self::wait) or [`shutdown`](Self::shutdown) returned is
    /// still kept (and reported again by this group's): take it with the
    /// child's [`take_errors`](Self::take_errors) once handled (what
    /// tokio-graceful-shutdown calls a local shutdown that catches the
    /// error).
    ///
    /// A group the child [`link`](Self::link)ed keeps it too, until
    /// [`unlink`](Self::unlink)ed: this group's waits and shutdowns cover the
    /// linked group through the child, so the child stays for it. A child per
    /// request that links a shared group (a pool, say) must unlink it when
    /// the request ends, or every request's child stays, and with it the
    /// memory and the length of this group's walks; a request that only
    /// needs its own waits to cover the shared group can use a fresh group
    /// ([`WaitGroup::new`]), which nothing holds.
    ///
    /// A child made after a [`shutdown`](Self::shutdown) reached this group
    /// (and before a [`reopen`](Self::reopen)) starts as that shutdown left
    /// this group: closed, cancelled with the same reason, and its tasks'
    /// deadline the shutdown's abort time.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let parent = WaitGroup::new();
    /// let child = parent.child();
    /// child.cancel();
    /// assert!(!parent.is_cancelled());
    /// parent.cancel();
    /// assert!(child.is_cancelled());
    /// drop(child); // idle and unreferenced: it leaves
    /// assert!(parent.linked().is_empty());
    /// ```
    pub fn child(&self) -> WaitGroup {
        self.make_child(None, false)
    }

    /// Creates a child group (as [`child`](Self::child) does) for work that
    /// this group's own tasks wait on: its context is a child of theirs, so
    /// whatever cancels them cancels it at the same moment, a
    /// [`shutdown`](Self::shutdown) included. A plain child is cancelled only
    /// at its turn, once this group's own work has stopped: the order that
    /// tears a server down before its database pool, but that holds a task
    /// waiting on its own child until the deadline (the task waits for the
    /// child, the child's turn waits for the task).
    ///
    /// Make one per request or per job, from the task (or HTTP handler) that
    /// fans out into it and waits for it: a shutdown cancels the fan-out with
    /// the handler, the handler's wait ends as its subtasks stop, and the
    /// request is answered within the grace instead of aborted at the
    /// deadline. (A task of the group has [`TaskContext::scoped_child`](crate::TaskContext::scoped_child)
    /// too.) Keep plain [`child`](Self::child)ren for parts that must
    /// outlive this group's work (a pool the handlers use), and
    /// [`stop_children_together`](WaitGroupBuilder::stop_children_together)
    /// for a group whose children are all such fan-outs.
    ///
    /// Everything else is as for [`child`](Self::child): this group's waits,
    /// reports and aborts cover it, it inherits the settings, and it leaves
    /// once released and idle. Cancelling it does not cancel this group;
    /// `cancel()` on this group reaches it. What it cancels with this
    /// group's work is what its own cancel reaches: the groups made below it
    /// (`child()`, `scoped_child()`), not a group [`link`](Self::link)ed
    /// there, which a shutdown reaches in its turn.
    ///
    /// In a shutdown it goes with this group's own work all the way: drained
    /// with it in a [drain phase](crate::shutdown::Grace::drain) (the scoped
    /// children it has then), cancelled with it, and, at the deadline,
    /// stopped (its stragglers aborted) before any other group below this
    /// one has its turn, whatever the order they were made in. Its turn
    /// counts from this group's: a straggler is aborted when this group's
    /// are (at the deadline, or at this group's own stop time if it was
    /// reached late; at once with no grace), right after them, not given the
    /// time of a group reached late (see [`shutdown`](Self::shutdown)) to
    /// stop by itself; so are the groups made below it. (One made by the
    /// `Drop` of a task the shutdown aborts is a group reached then.) A task
    /// that sees its parts stop for the cancel finds its own context
    /// cancelled.
    ///
    /// Its context hangs off this group's context as it is when the child
    /// is made: once a shutdown cancelled that, a scoped child made then
    /// starts cancelled, and one [reopened](Self::reopen) stays cancelled,
    /// with the same reason, even after this group is reopened; make a new
    /// one from the reopened group's work.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = WaitGroup::new();
    /// let s = server.clone();
    /// // A request: its handler fans out and waits for its parts.
    /// server.go(move |_| async move {
    ///     let parts = s.scoped_child();
    ///     for _ in 0..3 {
    ///         parts.go(|ctx| async move { ctx.cancelled().await });
    ///     }
    ///     parts.wait().await
    /// });
    /// tokio::task::yield_now().await; // the handler starts
    /// let report = server.shutdown(Duration::from_secs(10)).await;
    /// // Cancelled with the handler, not aborted at the deadline.
    /// assert!(report.is_clean());
    /// assert!(report.elapsed() < Duration::from_secs(10));
    /// # }
    /// ```
    pub fn scoped_child(&self) -> WaitGroup {
        self.make_child(None, true)
    }

    /// A user handle to a group made for it (its one handle).
    pub(crate) fn from_new(node: NodeRef) -> WaitGroup {
        WaitGroup { node }
    }

    fn make_child(&self, name: Option<Label>, scoped: bool) -> WaitGroup {
        let config = NodeConfig::inherit(&self.node, name);
        WaitGroup {
            node: if scoped {
                Node::make_scoped_child(&self.node, config, &self.node.generation())
            } else {
                Node::make_child(&self.node, config)
            },
        }
    }

    /// The groups linked below this one now, in link order: those linked
    /// with [`link`](Self::link) and not unlinked, and the children that have
    /// not left (a child whose handles were all dropped is listed until its
    /// work is done; the handle returned then keeps it, until dropped).
    pub fn linked(&self) -> Vec<WaitGroup> {
        // Each counted as a user handle already.
        self.node
            .links_for_users()
            .into_iter()
            .map(|node| WaitGroup { node })
            .collect()
    }

    // ----- cancellation -----------------------------------------------------

    /// Cancels the group and every group below it at once: their contexts are
    /// cancelled, so their tasks are asked to stop. Nothing is aborted; use
    /// [`shutdown`](Self::shutdown) for a bounded, ordered stop.
    pub fn cancel(&self) {
        node::cancel_tree(&self.node, CancelReason::Requested(None));
    }

    /// Whether the group's context is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }

    /// Resolves when the group's context, as it is when this is called, is
    /// cancelled (after a [`reopen`](Self::reopen), a new call waits on the
    /// new context).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        // Held by the future: a later generation lives as long as what
        // reads it (see `node::Later`).
        let generation = self.node.generation();
        async move { self.node.own_in(&generation).cancelled().await }
    }

    /// Like [`cancelled`](Self::cancelled), but owns a clone of the group's
    /// context, so the future is `'static`: for APIs that keep it, such as
    /// axum's `with_graceful_shutdown` or hyper-util's `GracefulShutdown`.
    /// It resolves when the context it was made from is cancelled (after a
    /// [`reopen`](Self::reopen), make a new one).
    ///
    /// `axum::serve` spawns each connection with `tokio::spawn`, outside the
    /// group: the group's waits and shutdowns neither wait for nor abort
    /// them, and a report does not name them. For connections that are the
    /// group's tasks, serve with `taskgroup::http::serve_router` (feature
    /// `axum`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// // A server that takes a `'static` shutdown future, as
    /// // `axum::serve(listener, app).with_graceful_shutdown(fut)` does.
    /// async fn serve(shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    ///     shutdown.await;
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let shutdown = wg.cancelled_owned();
    /// wg.task().name("http").go(|_ctx| serve(shutdown));
    /// let report = wg.shutdown(Duration::from_secs(5)).await;
    /// assert!(report.is_clean(), "{report}");
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn cancelled_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.node.own_token().cancelled_owned()
    }

    /// Like [`cancelled_owned`](Self::cancelled_owned), but resolves as soon
    /// as the group's tasks are asked to drain: at the drain signal of a
    /// shutdown with a drain phase ([`Grace::drain`](crate::shutdown::Grace::drain),
    /// a [`ShutdownPlan`](crate::shutdown::ShutdownPlan)'s), or
    /// [`drain`](Self::drain), or when the context is cancelled, whichever
    /// comes first ([`TaskContext::draining`](crate::TaskContext::draining),
    /// owned). For a server that stops taking work at the drain signal:
    /// `axum::serve(..).with_graceful_shutdown(wg.draining_owned())` closes
    /// its listener and tells its connections to close (`connection: close`,
    /// HTTP/2 `GOAWAY`) when the drain begins, where with `cancelled_owned`
    /// it would keep them open until the group is cancelled, after the drain
    /// phase. Without a drain phase the two resolve together. (Connections
    /// `axum::serve` spawns are not the group's tasks: see
    /// [`cancelled_owned`](Self::cancelled_owned).)
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::{shutdown::Grace, WaitGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let stop_taking_work = wg.draining_owned();
    /// wg.task().name("http").go(|_ctx| stop_taking_work);
    /// // The server's task stops at the drain signal, well before the cancel.
    /// let grace = Grace::drain(Duration::from_secs(60)).then_cancel(Duration::from_secs(60));
    /// let report = wg.shutdown(grace).await;
    /// assert!(report.is_clean() && report.elapsed() < Duration::from_secs(60));
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn draining_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let generation = self.node.generation();
        let own = self.node.own_in(&generation).clone();
        let drain = self.node.drain_in(&generation).clone();
        async move { crate::context::draining(&own, &drain).await }
    }

    /// The group's context: the token its tasks receive. Cancelling it cancels
    /// this group's own tasks and its [scoped children](Self::scoped_child)
    /// (whose contexts hang off it), not its plain [children](Self::child)
    /// or linked groups (their contexts derive from the group's scope, which
    /// [`cancel`](Self::cancel) cancels). A task's
    /// [`TaskContext`] dereferences to this token, so a
    /// task that calls `ctx.cancel()` cancels its sibling tasks too.
    pub fn context(&self) -> CancellationToken {
        self.node.own_token()
    }

    /// The failure that cancelled the group, with
    /// [`cancel_on_error`](WaitGroupBuilder::cancel_on_error) (or a
    /// [`critical`](TaskBuilder::critical) task): the first one recorded since
    /// the group was made or [reopened](Self::reopen) after a cancel. `None`
    /// if no failure cancelled it: a group reopened has none until its next
    /// critical failure, which cancels it again, and a failure after the
    /// group was cancelled otherwise is [secondary](crate::TaskError::is_secondary),
    /// not its cause. The same failure as the context's
    /// [`CancelReason::Failure`], unless another cancel landed between the
    /// failure and its cancel.
    pub fn cancel_cause(&self) -> Option<std::sync::Arc<crate::TaskError>> {
        self.node.cause()
    }

    /// Cancels as [`cancel`](Self::cancel) does, with a reason the tasks can
    /// read ([`TaskContext::cancel_reason`](crate::TaskContext::cancel_reason)).
    /// A group already cancelled keeps its first reason.
    pub fn cancel_with(&self, reason: impl Into<Cow<'static, str>>) {
        node::cancel_tree(&self.node, CancelReason::Requested(Some(reason.into())));
    }

    /// Why the group's context was cancelled; `None` while it is not.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.node.reason_in(&self.node.generation())
    }

    /// Tells the group's tasks, and those of every group below it, to drain:
    /// finish what they are doing and take no more (see
    /// [`TaskContext::draining`](crate::TaskContext::draining)). Nothing is
    /// closed or cancelled; [`shutdown`](Self::shutdown) with a
    /// [drain phase](crate::shutdown::Grace) drains each group in its turn.
    pub fn drain(&self) {
        node::drain_tree(&self.node);
    }

    /// Whether the group's tasks are asked to drain (or cancelled).
    pub fn is_draining(&self) -> bool {
        self.node.is_draining()
    }

    // ----- closing and introspection ----------------------------------------

    /// Closes the group to new work: from now on [`try_add`](Self::try_add)
    /// and [`try_go`](Self::try_go) return [`Closed`]. Pending work is not
    /// affected, and plain `add`/`go` still register work. The group stays
    /// closed until [`reopen`](Self::reopen). Linked groups are not closed (a
    /// shutdown closes each in turn).
    pub fn close(&self) {
        if self.node.close() {
            crate::trace::closed(&self.node.label);
        }
    }

    /// Opens a [closed](Self::close) group to new work again (a server that
    /// stops and starts again, TaskTracker's `reopen`). If the group's context
    /// was cancelled (by [`cancel`](Self::cancel), a failure with
    /// `cancel_on_error`, or a [`shutdown`](Self::shutdown)) or drained
    /// ([`drain`](Self::drain)), work started from now on gets a fresh one;
    /// tasks started before keep theirs, and a later cancel or shutdown
    /// reaches them too (a drained task is cancelled with the new ones). A
    /// group cancelled through the caller's [`token`](WaitGroupBuilder::token)
    /// (or its parent's context) stays cancelled: the fresh context is a
    /// child of that token again. Linked groups are not reopened.
    ///
    /// A [`child`](Self::child) whose parent was cancelled (by
    /// [`cancel`](Self::cancel), a failure with `cancel_on_error`, a
    /// deadline) is that way too: reopened while its parent is still
    /// cancelled, it stays cancelled, and its tasks read
    /// [`CancelReason::Token`]. Reopen the parent first, then the child: the
    /// child's fresh context then derives from the parent's fresh one, so a
    /// later cancel of the parent reaches it, as it reaches a child made
    /// after the parent's reopen. (A [`shutdown`](Self::shutdown) cancels
    /// each group's own context, not what its children derive from: after
    /// one, a child reopened is fresh in either order.)
    ///
    /// The failures recorded before stay in [`errors`](Self::errors) (and a
    /// [`wait`](Self::wait) returns them) until
    /// [`take_errors`](Self::take_errors); the
    /// [`cancel_cause`](Self::cancel_cause) is the current context's, `None`
    /// once a cancelled group is reopened, and the next failure with
    /// `cancel_on_error` cancels the group again.
    ///
    /// A context lives as long as what holds it: the tasks started with it,
    /// and [`cancelled`](Self::cancelled) futures made while it was the
    /// group's. The group keeps only the current one, and those a drain
    /// ended while a task still holds them (for a cancel to reach), so a
    /// group cancelled and reopened for a process's whole life keeps what is
    /// live, not a context per reopen (`tests/soak.rs`). The price, once a
    /// group was reopened after a cancel or drain: each task started, and each
    /// [`cancelled`](Self::cancelled) or [`is_cancelled`](Self::is_cancelled),
    /// takes a lock and an atomic increment more, to share the context.
    ///
    /// Reopen a group once its [`shutdown`](Self::shutdown) returned, not
    /// while one runs: that shutdown does not cancel the work started after
    /// the reopen (its cancel of the group came before), so such work that
    /// it waits for runs until the deadline and is aborted then, and the
    /// group is left open.
    ///
    /// Returns whether the group was closed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let report = wg.shutdown(Duration::from_secs(1)).await;
    /// assert!(wg.is_closed() && wg.is_cancelled());
    /// assert!(wg.reopen());
    /// assert!(!wg.is_closed() && !wg.is_cancelled());
    /// assert!(wg.try_add().is_ok());
    /// # let _ = report;
    /// # }
    /// ```
    pub fn reopen(&self) -> bool {
        self.node.reopen()
    }

    /// The time by which the group's tasks must have finished, if anything
    /// bounds them: the earliest of its [deadline](WaitGroupBuilder::deadline),
    /// the deadlines of the groups above it, and, once a shutdown runs, when
    /// that shutdown aborts this group's tasks. What its tasks read with
    /// [`TaskContext::deadline`](crate::TaskContext::deadline), for code
    /// outside them: a `close()` that sizes its last flush, a health check
    /// that says how long a stop has left.
    ///
    /// A shutdown's abort time stays on the groups it reached until they are
    /// [reopened](Self::reopen), also after the shutdown ended or its future
    /// was dropped (nothing aborts at it then; see
    /// [`shutdown`](Self::shutdown)'s `# Cancel safety`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let at = Instant::now() + Duration::from_secs(30);
    /// let server = WaitGroup::builder().deadline(at).build();
    /// let conns = server.child();
    /// assert_eq!(conns.deadline(), Some(at)); // bounded by the group above
    /// assert_eq!(WaitGroup::new().deadline(), None);
    /// # }
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.node.state().is_closed()
    }

    /// How many guards and tasks of this group (not of linked groups) are
    /// pending. One atomic load.
    pub fn len(&self) -> usize {
        self.node.len()
    }

    /// Whether nothing of this group's own is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pending guard and task of this group and its linked groups, as a
    /// timed-out wait would report them. Costs time in proportion to what is
    /// pending (not to what ever was), locking each registry shard briefly in
    /// turn; cheap enough for a health endpoint.
    pub fn pending(&self) -> PendingReport {
        PendingReport {
            groups: node::pending(&self.node),
        }
    }

    /// Every failure recorded by this group and its linked groups and still
    /// kept: this group's in completion order (with those of children that
    /// left it, at most `max_errors` of both), then each linked group's in
    /// link order. Shares the lists rather than copying them (but for a
    /// group with failures of its own and of departed children, merged).
    pub fn errors(&self) -> TaskErrors {
        node::errors(&self.node)
    }

    /// Like [`errors`](Self::errors), and removes what it returns from the
    /// groups' records (the counts of dropped failures too), so that a
    /// periodic logger sees each failure once and a long-lived group's record
    /// stays small. The [`cancel_cause`](Self::cancel_cause) is kept.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// wg.go(|_| async { Err::<(), _>("disk full") });
    /// assert!(wg.wait().await.is_err());
    /// assert_eq!(wg.take_errors().len(), 1);
    /// assert!(wg.errors().is_empty());
    /// assert!(wg.wait().await.is_ok());
    /// # }
    /// ```
    pub fn take_errors(&self) -> TaskErrors {
        node::take_errors(&self.node)
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
        // The common case, a group without links or failures, ends here: the
        // walk below (nested futures, an empty failure list made and read)
        // cost a third more than a oneshot's wake-up (workload 5b). It is
        // boxed: inline, its state made this future larger and the wake-up
        // about 5 ns slower, even when the walk is not taken.
        self.node.state().wait_idle().await;
        if self.node.idle_and_clean() {
            return Ok(());
        }
        Self::result_of(Box::pin(self.wait_tree()).await)
    }

    /// Like [`wait`](Self::wait), bounded by `timeout`.
    ///
    /// A zero timeout checks without waiting: `Ok` if everything is already
    /// done, otherwise a timeout with the report. `Duration::MAX` waits
    /// without limit.
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
            Ok(errors) => Self::result_of(errors),
            Err(_) if node::tree_is_idle(&self.node) => self.result(),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Blocks the thread until the group and its linked groups are done, like
    /// [`wait`](Self::wait). Works outside any runtime (in a `Drop` impl, a
    /// synchronous close path, a plain thread), from `spawn_blocking`, and
    /// from a worker of a multi-thread runtime (through
    /// [`block_in_place`](tokio::task::block_in_place), so the runtime keeps
    /// running other tasks meanwhile).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// Where it could never return, at once rather than hanging, as Tokio's
    /// `block_on` does: called, while work is pending, from the thread that
    /// drives a current-thread runtime (inside
    /// `#[tokio::main(flavor = "current_thread")]`, `#[tokio::test]`, or one
    /// of that runtime's tasks), whose work could then never run. On a
    /// multi-thread runtime, from a task of a
    /// [`LocalSet`](tokio::task::LocalSet) (`spawn_local`): `block_in_place`
    /// panics there, with Tokio's message.
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
    #[track_caller]
    pub fn wait_blocking(&self) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        if !node::tree_is_idle(&self.node) {
            blocking("wait_blocking", || self.wait_tree_blocking(None));
        }
        self.result()
    }

    /// Like [`wait_blocking`](Self::wait_blocking), bounded by `timeout`
    /// (`Duration::MAX`: no limit).
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Panics
    ///
    /// As [`wait_blocking`](Self::wait_blocking).
    #[track_caller]
    pub fn wait_blocking_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.check_not_own_task()?;
        let deadline = std::time::Instant::now().checked_add(timeout);
        let done = node::tree_is_idle(&self.node)
            || blocking("wait_blocking_timeout", || {
                self.wait_tree_blocking(deadline)
            });
        if done || node::tree_is_idle(&self.node) {
            self.result()
        } else {
            Err(self.timed_out())
        }
    }

    pub(crate) fn check_not_own_task(&self) -> Result<(), WaitError> {
        match task::current_group() {
            Some(group) if node::reaches(&self.node, group) => {
                Err(WaitError::WaitFromOwnTask { group })
            }
            _ => Ok(()),
        }
    }

    fn result(&self) -> Result<(), WaitError> {
        Self::result_of(self.errors())
    }

    /// What a wait returns once the tree is idle with these failures.
    fn result_of(errors: TaskErrors) -> Result<(), WaitError> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(WaitError::Failed { errors })
        }
    }

    fn timed_out(&self) -> WaitError {
        let pending = self.pending();
        crate::trace::wait_timed_out(&self.node.label, &pending);
        WaitError::TimedOut {
            pending,
            errors: self.errors(),
        }
    }

    /// Waits for each group of the tree in walk order, and again until one
    /// pass finds every group idle without waiting, so work added meanwhile
    /// (in any group, or in groups linked meanwhile) is covered. Without
    /// links this is one wait on the state word: no allocation.
    ///
    /// Returns the tree's failures. If the first visit finds the tree idle,
    /// that visit reads them too, so a wait on an idle tree walks it once.
    async fn wait_tree(&self) -> TaskErrors {
        self.node.state().wait_idle().await;
        // An idle tree is confirmed by one visit that copies nothing.
        if let Some(errors) = node::errors_if_idle(&self.node) {
            return errors;
        }
        loop {
            let nodes = node::walk(&self.node);
            let mut waited = false;
            for n in &nodes {
                if n.len() != 0 {
                    waited = true;
                    n.state().wait_idle().await;
                }
            }
            if !waited {
                return self.errors();
            }
        }
    }

    /// The blocking twin of `wait_tree`; `false` if the deadline passed.
    fn wait_tree_blocking(&self, deadline: Option<std::time::Instant>) -> bool {
        if node::tree_is_idle(&self.node) {
            return true;
        }
        loop {
            let nodes = node::walk(&self.node);
            let mut waited = false;
            for n in &nodes {
                if n.len() != 0 {
                    waited = true;
                    if !n.state().wait_idle_blocking(deadline) {
                        return false;
                    }
                }
            }
            if !waited {
                return true;
            }
        }
    }

    // ----- shutdown ---------------------------------------------------------

    /// Stops the group and every group linked below it, in order, within one
    /// deadline, and reports what happened.
    ///
    /// For this group, then for each linked group in walk order (depth-first
    /// in link order, a group's [scoped children](Self::scoped_child) before
    /// its other links, each group once):
    ///
    /// 1. [close](Self::close) it, so `try_add`/`try_go` refuse new work;
    /// 2. cancel its own context (not yet its children's: a database pool
    ///    linked below a server keeps serving while the server's connections
    ///    drain), and with it its [scoped children](Self::scoped_child), the
    ///    groups its own tasks fan out into and wait for (drained with it
    ///    too, and first in the walk among the groups below it);
    /// 3. wait for its own work until it is done or its stop time comes (when
    ///    the wait ends, the shutdown yields once and looks again: a task that
    ///    returns on the very tick of Tokio's timer that ended it counts as
    ///    finished, always on a current-thread runtime, and on a multi-thread
    ///    one if its worker ran it by then);
    /// 4. then abort its `go()` tasks still running and wait for the aborts to
    ///    take effect, until its abort time.
    ///
    /// A group built with
    /// [`stop_children_together`](WaitGroupBuilder::stop_children_together)
    /// takes the first two steps (and a drain phase) for every group the
    /// walk reaches through it at once, at its turn, so that a group per
    /// connection or request does not wait for the ones before it to stop;
    /// each then has its turn as above, as a group reached at that moment.
    /// So does a [scoped child](Self::scoped_child), reached with its
    /// parent's work at its parent's turn, and stopped by its parent's stop
    /// time.
    ///
    /// # Budget
    ///
    /// The *deadline* is `grace` after the call, fixed before anything is
    /// cancelled; the *forced phase* runs from the deadline for the
    /// [`abort_timeout`](WaitGroupBuilder::abort_timeout) of the group `shutdown` is
    /// called on (for the whole tree). The whole call takes at most
    /// `grace + abort_timeout`, plus the time to cancel and abort, and the
    /// processor time of the groups' turns, which no deadline stops (in the
    /// run in docs/PERFORMANCE.md, 55 ns an idle group and about 1.5 µs a
    /// group with a task to stop (building the tree included), so a tree of
    /// a million groups can take a second or more past that bound). The
    /// bound is kept by Tokio's timer, which needs a thread to run it: on a
    /// runtime whose every worker is blocked (a task in
    /// `std::thread::sleep`, a `Drop` that blocks), no deadline fires until
    /// one is free (both workers of a two-worker runtime blocked for 3 s: a
    /// 500 ms shutdown returned after 3.0 s; with one blocked, at 501 ms).
    ///
    /// * A group reached before the deadline may stop by itself until the
    ///   deadline (this group is always reached at once, so it gets the whole
    ///   grace period; `shutdown(Duration::ZERO)` cancels and aborts its
    ///   tasks at once: a task that returns as soon as it is cancelled may
    ///   finish first, which it does on a current-thread runtime, where the
    ///   shutdown yields to the tasks it woke before it aborts (in
    ///   `block_on`, as `#[tokio::main]` runs it, while the work left keeps
    ///   falling, within three quarters of the group's share of the abort
    ///   timeout: Tokio runs them in batches there; a task that awaits
    ///   anything more after the cancel is aborted, and so may be one still
    ///   to run when a task keeps starting work that the yields then run),
    ///   but may not on a
    ///   multi-thread one: see [`Grace::drain`](crate::shutdown::Grace::drain)).
    /// * What is left of the forced phase when a group needs it is shared
    ///   equally by that group and every group not yet reached that has
    ///   work or could still get some (a handle to it is alive: a pool the
    ///   server's aborted tasks may use), but the scoped children whose
    ///   stragglers the group aborts with its own (unless they hold a
    ///   [shielded](crate::TaskContext::shielded) section, which they wait
    ///   for in their own turn): with `r` such groups left and `f` of the
    ///   forced phase remaining, the group gets `f / r`. A group idle at
    ///   its turn ends it at once, so groups whose work has ended and that
    ///   no one holds (a group per connection, its connection gone) take no
    ///   share. Which groups count is looked at again as the turns go on,
    ///   once they have passed half of the groups (idle ones included) the
    ///   last look covered: one whose work ended since may still count until
    ///   then. Groups linked since the call (a group per request, made
    ///   through the grace) count among them from the first turn that
    ///   starts after the deadline, when the tree is looked at again.
    ///   * A group that overran the deadline is aborted at the deadline and
    ///     its aborts are waited for during its share.
    ///   * A group first reached after the deadline (because one before it
    ///     used the time) is still closed and cancelled first and may stop by
    ///     itself during the first three quarters of its share; then its
    ///     tasks are aborted and waited for until the end of its share.
    ///
    ///   * A share shorter than a millisecond (thousands of groups reached
    ///     late, such as a group per connection) is waited out by yielding to
    ///     the runtime, not on Tokio's timer, which would round each up to a
    ///     millisecond and overrun the budget. An abort that lands after its
    ///     group's share is still listed as aborted if it lands before the
    ///     report (as work in flight, below).
    ///
    ///   So a database pool or log flusher linked after a server whose
    ///   connections overran still gets a bounded moment to close cleanly, in
    ///   order. With the default one-second abort timeout and one such group,
    ///   the overrunning group's aborts may take up to 500 ms (they usually
    ///   take effect at once), and the pool then gets three quarters of what
    ///   is left, up to 750 ms, to close before it is aborted.
    /// * A task spawned into a group while its tasks are being aborted (by
    ///   `go()` on another thread, or from the `Drop` of an aborted task) is
    ///   past the deadline too: it is aborted as it is spawned, and waited
    ///   for with the rest. A `go()` that counted its task before the group
    ///   closed, but whose thread lost its core until after the shutdown
    ///   stopped waiting, has its task reported as pending, and aborted as
    ///   it is spawned.
    /// * A task started into a group after its turn ended (by a task of a
    ///   later group, or from the `Drop` of one aborted) is aborted once every group had its turn, if the
    ///   deadline has passed, and waited for with the work in flight (below).
    ///   Before the deadline, or started after that, it is reported as pending.
    /// * A group made or linked from the `Drop` of an aborted task (a child
    ///   of its group, say) is stopped in a further pass, as a group reached
    ///   then. The aborts of each pass are waited for (as work in flight,
    ///   below) before the shutdown looks for such groups; one made by an
    ///   abort that lands later, on another worker, has no turn, but its work
    ///   is in the report: still pending.
    ///
    /// With `Duration::MAX` as grace or abort timeout, that phase has no
    /// limit. With no limit on the abort timeout, the groups first reached
    /// after the deadline share one more grace period instead to stop by
    /// themselves (each three quarters of its share of what is left of it),
    /// and their tasks are then aborted and waited for until they stop.
    ///
    /// # Report
    ///
    /// Each guard or task is counted once: [`finished`](ShutdownReport::finished)
    /// counts what completed by itself during the call in any group of the
    /// tree (also in groups not yet reached); [`aborted`](ShutdownReport::aborted)
    /// lists the tasks this shutdown aborted whose abort took effect, and
    /// those of a group's scoped children that ended by themselves while it
    /// made the aborts of the group and its scoped children (ended by
    /// another's abort: a part waiting on the task that started it) (a task
    /// aborted by a concurrent shutdown is in that one's report, whose abort
    /// this one waits for as for its own, and in neither's `finished`); what
    /// is still running at the end (guards, which
    /// cannot be aborted, and tasks stuck in blocking code) is
    /// [`pending`](ShutdownReport::pending). Before the report is made, a
    /// task or guard caught between two steps on another thread (its entry
    /// removed and its count not yet given up, or the reverse as it starts)
    /// is waited for, 250 ms at most and within the budget, so that it is
    /// counted in one part only; so is an abort still landing. Work that
    /// ends on another thread while the report is made is counted once too,
    /// in a group that records its guards (the default); in a lean group
    /// ([`record_guards(false)`](WaitGroupBuilder::record_guards)), whose
    /// guards are counted but not listed, a task ending at that moment may
    /// be counted in two parts or none.
    ///
    /// [`cancel`](Self::cancel) is the unordered emergency path.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// wg.task().name("polite").go(|ctx| async move {
    ///     ctx.cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// wg.task().name("stubborn").go(|_ctx| async move {
    ///     std::future::pending::<()>().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let report = wg.shutdown(Duration::from_secs(10)).await;
    /// assert_eq!(report.finished(), 1);
    /// assert_eq!(report.aborted()[0].name(), Some("stubborn"));
    /// assert!(report.pending().is_empty());
    /// # }
    /// ```
    ///
    /// # From one of the group's own tasks
    ///
    /// Called from a `go()` task of this group or of a group below it (an
    /// admin endpoint, a task that watches for a fatal condition), it shuts
    /// down everything else: the calling task is neither waited for nor
    /// aborted (its context is cancelled with the rest of its group), and the
    /// report leaves it out: it runs the call, it is not left behind by it,
    /// so an admin endpoint's `shutdown(..).await.into_result()?` succeeds
    /// when everything else stopped cleanly. Its group's turn ends once nothing
    /// but the caller is pending, checked at short intervals. Every shutdown
    /// leaves such a caller alike while its call runs: two calls at once from
    /// two of the tree's tasks (an admin endpoint called twice) each return
    /// their report, neither caller aborted by the other's shutdown.
    ///
    /// Task failures are in [`ShutdownReport::errors`]; the call itself does
    /// not fail.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the shutdown where it is: groups already
    /// closed and cancelled stay so (with its abort time as their
    /// [`deadline`](Self::deadline), which nothing enforces, until reopened),
    /// later groups are untouched (their tasks
    /// no longer read its deadline; nor do those of a shutdown still running
    /// whose deadline is the very same instant, begun in the same tick of a
    /// paused clock, say, until its turn gives it again). Its report is
    /// never made: a task it aborted whose abort lands after the drop counts
    /// as finished in a later shutdown's report, as a task aborted by its
    /// handle does.
    pub async fn shutdown(&self, grace: impl Into<Grace>) -> ShutdownReport {
        self.shutdown_because(grace.into(), CancelReason::Shutdown, None)
            .await
    }

    /// [`shutdown`](Self::shutdown), cancelling with `reason`, and writing
    /// what it does to `progress` as it goes, if given.
    pub(crate) async fn shutdown_because(
        &self,
        grace: Grace,
        reason: CancelReason,
        progress: Option<&crate::drain::Progress>,
    ) -> ShutdownReport {
        let caller = task::current().filter(|c| node::reaches(&self.node, c.group));
        crate::drain::run(&self.node, grace, caller, reason, progress).await
    }

    pub(crate) fn node(&self) -> &NodeRef {
        &self.node
    }
}

/// Runs a blocking wait where it can make progress, and panics at once where
/// it cannot (see [`WaitGroup::wait_blocking`]).
#[track_caller]
fn blocking<R>(method: &str, wait: impl FnOnce() -> R) -> R {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return wait(); // a plain thread
    };
    match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            // The thread that drives a current-thread runtime runs a task
            // (or its `block_on`) here; a `spawn_blocking` thread of it runs
            // neither.
            // (`block_on`'s own future is not a task.)
            if tokio::task::try_id().is_none() || task::current_group().is_some() {
                current_thread_panic(method);
            }
            // Another task on the runtime's thread, or a `spawn_blocking`
            // thread: `block_in_place` tells them apart (it panics in the
            // first case with Tokio's own message, and runs `wait` in the
            // second).
            tokio::task::block_in_place(wait)
        }
        _ => tokio::task::block_in_place(wait),
    }
}

#[cold]
#[track_caller]
fn current_thread_panic(method: &str) -> ! {
    panic!(
        "WaitGroup::{method} called on the thread that drives a current-thread Tokio runtime: \
         the work it waits for could never run, so it would block forever. Use `.wait().await` \
         in async code, or call it from `spawn_blocking` or a plain thread"
    )
}

impl Clone for WaitGroup {
    fn clone(&self) -> Self {
        self.node.add_user();
        WaitGroup {
            node: self.node.clone(),
        }
    }
}

impl Drop for WaitGroup {
    fn drop(&mut self) {
        Node::release_user(&self.node);
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
            .field("links", &self.node.links().len())
            .finish()
    }
}

/// Describes one unit of work of a group before starting it: its name,
/// whether its failure cancels the group, and where it runs. From
/// [`WaitGroup::task`]; the short forms [`WaitGroup::add`], [`try_add`],
/// [`go`] and [`try_go`] are this builder with nothing set.
///
/// | terminal | starts | cost of the work to the group |
/// |---|---|---|
/// | [`add`](Self::add) / [`try_add`](Self::try_add) | a [`TaskGuard`] | pending until completed |
/// | [`go`](Self::go) / [`try_go`](Self::try_go) / [`go_when_free`](Self::go_when_free) | a task on the current runtime | pending until it ends; aborted by a shutdown |
/// | [`spawn_on`](Self::spawn_on) | a task on another runtime | the same |
/// | [`spawn_local`](Self::spawn_local) | a `!Send` task on the current `LocalSet` | the same |
/// | [`spawn_blocking`](Self::spawn_blocking) | a closure on the blocking pool | pending until it returns; cannot be aborted, so a shutdown reports it as still running |
/// | [`track_future`](Self::track_future) | nothing: the future is yours to poll | pending while the future lives |
/// | [`child`](Self::child) | a child group | its work, until it leaves |
///
/// Every terminal records the caller's location as the work's creation site
/// (`#[track_caller]`), and every spawned task is tracked, named, recorded
/// and reported like any `go()` task: its failure or panic is kept, and a
/// [`TaskHandle`] gives its value.
///
/// ```
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = WaitGroup::builder().name("server").build();
/// // The listener's failure stops the server; a connection's does not.
/// server.task().name("listener").critical(true).go(|ctx| async move {
///     ctx.cancelled().await;
/// });
/// server.task().name("conn 10.0.0.7:4711").critical(false).go(|_ctx| async {
///     Err::<(), _>("connection reset")
/// });
/// # tokio::task::yield_now().await;
/// # server.cancel();
/// # assert_eq!(server.wait().await.unwrap_err().errors().len(), 1);
/// # }
/// ```
///
/// [`try_add`]: WaitGroup::try_add
/// [`go`]: WaitGroup::go
/// [`try_go`]: WaitGroup::try_go
#[must_use = "a TaskBuilder does nothing until a terminal method (add, go, ...) is called"]
pub struct TaskBuilder<'a> {
    group: &'a WaitGroup,
    name: Option<Label>,
    critical: Option<bool>,
}

impl<'a> TaskBuilder<'a> {
    /// Names the work for reports, errors and tracing. Kept even in a group
    /// built with [`record_guards(false)`](WaitGroupBuilder::record_guards):
    /// a named guard is recorded.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// Whether the task's failure (error or panic) cancels its group and
    /// everything below it: `true` whatever the group's
    /// [`cancel_on_error`](WaitGroupBuilder::cancel_on_error) says (a listener
    /// whose failure must stop the server), `false` even when it is on (a
    /// connection whose failure must not). Default: the group's setting.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = Some(critical);
        self
    }

    /// A guard: see [`WaitGroup::add`].
    #[track_caller]
    pub fn add(self) -> TaskGuard {
        let task = self.group.add_task();
        TaskGuard::new(task, self.name, Location::caller(), TaskKind::Guard)
    }

    /// A guard, unless the group is closed: see [`WaitGroup::try_add`].
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed.
    #[track_caller]
    pub fn try_add(self) -> Result<TaskGuard, Closed> {
        self.try_add_at(Location::caller())
    }

    /// [`try_add`](Self::try_add), created at `site` (a layer's guards: where
    /// the user made the layer).
    pub(crate) fn try_add_at(self, site: &'static Location<'static>) -> Result<TaskGuard, Closed> {
        let task = self.group.try_add_task()?;
        Ok(TaskGuard::new(task, self.name, site, TaskKind::Guard))
    }

    /// A guard that takes one of the slots of the group's
    /// [`limit`](WaitGroupBuilder::limit) (guards do not count against it
    /// otherwise), for work the group does not spawn but that must count, a
    /// connection served elsewhere say. The slot is freed when the guard
    /// completes. Without a limit, the same as [`try_add`](Self::try_add).
    /// The guard is recorded even in a `record_guards(false)` group.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// let wg = WaitGroup::builder().limit(1).build();
    /// let held = wg.task().try_add_in_limit().unwrap();
    /// assert!(wg.task().try_add_in_limit().unwrap_err().is_full());
    /// drop(held);
    /// assert!(wg.task().try_add_in_limit().is_ok());
    /// ```
    ///
    /// # Errors
    ///
    /// [`TryGoError::Closed`] if the group is closed (also when no slot is
    /// free), else [`TryGoError::Full`] if no slot is free.
    #[track_caller]
    pub fn try_add_in_limit(self) -> Result<TaskGuard, TryGoError> {
        let site = Location::caller();
        let permit = self.try_slot()?;
        let task = self.group.try_add_task()?;
        Ok(self.guard_in_limit(task, permit, site))
    }

    /// Like [`try_add_in_limit`](Self::try_add_in_limit), waiting for a free
    /// slot instead of refusing.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed once a slot is free.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it resolves takes nothing.
    #[track_caller]
    pub fn add_when_free(self) -> impl Future<Output = Result<TaskGuard, Closed>> + 'a {
        let site = Location::caller();
        async move {
            let permit = self.group.node.acquire_permit().await;
            let task = self.group.try_add_task()?;
            Ok(self.guard_in_limit(task, permit, site))
        }
    }

    /// A free slot under the group's limit (or none needed), for the `try_`
    /// forms: [`TryGoError::Full`] without one, unless the group is closed,
    /// which is said first, since a caller retries on `Full` but not on
    /// `Closed`.
    fn try_slot(&self) -> Result<Permit, TryGoError> {
        let node = &self.group.node;
        match node.try_permit() {
            Permit::Queue if self.group.is_closed() => Err(Closed { group: node.id() }.into()),
            Permit::Queue => Err(TryGoError::Full {
                group: node.id(),
                limit: node.config.limit.unwrap_or_default(),
            }),
            permit => Ok(permit),
        }
    }

    fn guard_in_limit(
        self,
        task: TaskRef<Node>,
        permit: Permit,
        site: &'static Location<'static>,
    ) -> TaskGuard {
        let mut entry = Entry::new(self.group.node.next_id(), self.name, TaskKind::Guard, site);
        if let Permit::Held(permit) = permit {
            entry.slot = Some(permit);
        }
        TaskGuard::new_with(task, entry).0
    }

    /// A task on the current Tokio runtime: see [`WaitGroup::go`].
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime; if `f` panics (it is called on the
    /// caller's thread), or with 2^31 units of work pending, as
    /// [`WaitGroup::go`].
    #[track_caller]
    pub fn go<F, Fut>(self, f: F) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        self.go_at(Location::caller(), f)
    }

    /// [`go`](Self::go), created at `site`: a layer's task, where the user
    /// made what it runs (a service's member run: where the member was added).
    #[inline(always)]
    pub(crate) fn go_at<F, Fut>(
        self,
        site: &'static Location<'static>,
        f: F,
    ) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        let runtime = Runtime::current("go");
        let counted = self.group.add_spawned();
        let permit = self.group.node.try_permit();
        self.spawn_on_runtime(site, counted, permit, f, runtime)
    }

    /// Like [`go_at`](Self::go_at), outside the group's limit: for a task
    /// that runs in a slot another task of the group holds (an HTTP/2 request
    /// in its connection's, as an HTTP/1 request runs in its connection's
    /// task).
    #[cfg(feature = "hyper")]
    pub(crate) fn go_in_held_slot<F, Fut>(
        self,
        site: &'static Location<'static>,
        f: F,
    ) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        let runtime = Runtime::current("go");
        let counted = self.group.add_spawned();
        self.spawn_on_runtime(site, counted, Permit::Unlimited, f, runtime)
    }

    /// A task, unless the group is closed or at its limit: see
    /// [`WaitGroup::try_go`].
    ///
    /// # Errors
    ///
    /// [`TryGoError`], checked before looking for a runtime.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime (on an open group with a free slot).
    #[track_caller]
    pub fn try_go<F, Fut>(
        self,
        f: F,
    ) -> Result<TaskHandle<<Fut::Output as TaskOutput>::Value>, TryGoError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        let site = Location::caller();
        let permit = self.try_slot()?;
        let task = self.group.try_add_task()?;
        let runtime = Runtime::current("try_go");
        Ok(self.spawn_on_runtime(site, (task, true), permit, f, runtime))
    }

    /// Waits for a free slot under the group's [`limit`](WaitGroupBuilder::limit)
    /// (at once without one), then spawns the task in it, unless the group
    /// is closed by then: backpressure for a producer that must not queue
    /// more work than the group runs.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let workers = WaitGroup::builder().limit(4).build();
    /// for job in 0..100 {
    ///     // At most 4 jobs run, and at most 4 exist: this loop waits.
    ///     workers.task().go_when_free(move |_| async move { let _ = job; }).await.unwrap();
    /// }
    /// workers.wait().await.unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Closed`] if the group is closed once a slot is free; `f` is then not
    /// called.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it resolves spawns nothing.
    #[track_caller]
    pub fn go_when_free<F, Fut>(
        self,
        f: F,
    ) -> impl Future<Output = Result<TaskHandle<<Fut::Output as TaskOutput>::Value>, Closed>> + 'a
    where
        F: FnOnce(TaskContext) -> Fut + 'a,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        self.go_when_free_at(Location::caller(), f)
    }

    /// [`go_when_free`](Self::go_when_free), created at `site` (see
    /// [`go_at`](Self::go_at)).
    pub(crate) fn go_when_free_at<F, Fut>(
        self,
        site: &'static Location<'static>,
        f: F,
    ) -> impl Future<Output = Result<TaskHandle<<Fut::Output as TaskOutput>::Value>, Closed>> + 'a
    where
        F: FnOnce(TaskContext) -> Fut + 'a,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        let runtime = runtime_handle("go_when_free");
        async move {
            let permit = self.group.node.acquire_permit().await;
            let task = self.group.try_add_task()?;
            Ok(self.spawn_on_runtime(site, (task, true), permit, f, Runtime::On(&runtime)))
        }
    }

    /// A task on another runtime, given by its handle (tokio-util's
    /// `TaskTracker::spawn_on`); otherwise as [`go`](Self::go).
    #[track_caller]
    pub fn spawn_on<F, Fut>(
        self,
        runtime: &tokio::runtime::Handle,
        f: F,
    ) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        let counted = self.group.add_spawned();
        let permit = self.group.node.try_permit();
        self.spawn_on_runtime(Location::caller(), counted, permit, f, Runtime::On(runtime))
    }

    /// A `!Send` task on the current [`LocalSet`](tokio::task::LocalSet) (or
    /// local runtime), through `tokio::task::spawn_local`; otherwise as
    /// [`go`](Self::go).
    ///
    /// ```
    /// # use std::rc::Rc;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let local = tokio::task::LocalSet::new();
    /// local.run_until(async {
    ///     let not_send = Rc::new(5);
    ///     let task = wg.task().spawn_local(move |_| async move { Ok::<_, std::io::Error>(*not_send) });
    ///     assert_eq!(task.await.unwrap(), 5);
    /// }).await;
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a `LocalSet` or local runtime, as `spawn_local` does.
    #[track_caller]
    pub fn spawn_local<F, Fut>(self, f: F) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: TaskOutput,
    {
        let (task, open) = self.group.add_spawned();
        let permit = self.group.node.try_permit();
        // Borrowed, not cloned: a clone and its drop are two read-modify-writes
        // of the state word per task (see `spawn_on_runtime`).
        let group: &WaitGroup = self.group;
        let node = &group.node;
        let (guard, task, slot, fut, span) = self.prepare(Location::caller(), task, &permit, f);
        let join = match permit {
            Permit::Unlimited => tokio::task::spawn_local(task::task_future(guard, fut, span)),
            permit => {
                let gated = gated(fut, permit, node.clone(), slot);
                tokio::task::spawn_local(task::task_future(guard, gated, span))
            }
        };
        spawned(node, slot, task, join, open)
    }

    /// A closure on the runtime's blocking pool (`spawn_blocking`), for
    /// blocking work that would otherwise be invisible to the group (a stuck
    /// DNS lookup, a synchronous file write): pending until it returns, its
    /// error or panic recorded, its value in the handle. It cannot be aborted
    /// once it runs: a shutdown reports it as still running (pending, kind
    /// [`TaskKind::Blocking`]) rather than as aborted. It does not count
    /// against the group's limit.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let hash = wg.task().name("hash").spawn_blocking(|_ctx| Ok::<_, std::io::Error>(42));
    /// assert_eq!(hash.await.unwrap(), 42);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    #[track_caller]
    pub fn spawn_blocking<F, R>(self, f: F) -> TaskHandle<R::Value>
    where
        F: FnOnce(TaskContext) -> R + Send + 'static,
        R: TaskOutput,
        R::Value: Send,
    {
        let runtime = runtime_handle("spawn_blocking");
        let task = self.group.add_task();
        let node = &self.group.node;
        let id = node.next_id();
        let name = task_name(node, id, self.name.clone());
        let mut entry = Entry::new(id, self.name, TaskKind::Blocking, Location::caller());
        entry.critical = self.critical;
        let (guard, _slot) = TaskGuard::new_with(task, entry);
        let ctx = TaskContext::new(node.clone());
        let join = runtime.spawn_blocking(move || task::run_blocking(guard, move || f(ctx)));
        // No abort handle: a blocking task cannot be aborted once it runs.
        TaskHandle::new(join, name)
    }

    /// Counts `fut` as pending work of the group while it lives, without
    /// spawning it (tokio-util's `TaskTracker::track_future`): poll it
    /// yourself, or hand it to any executor. It resolves to `fut`'s output.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let tracked = wg.task().name("flush").track_future(async { 7 });
    /// assert_eq!(wg.len(), 1);
    /// assert_eq!(tracked.await, 7);
    /// assert!(wg.is_empty());
    /// # }
    /// ```
    #[track_caller]
    pub fn track_future<F: Future>(self, fut: F) -> Tracked<F> {
        let task = self.group.add_task();
        let guard =
            TaskGuard::new_recorded(task, self.name, Location::caller(), TaskKind::Tracked).0;
        Tracked::new(fut, guard)
    }

    /// A child group (see [`WaitGroup::child`]), with the name given.
    pub fn child(self) -> WaitGroup {
        self.group.make_child(self.name, false)
    }

    /// A scoped child group (see [`WaitGroup::scoped_child`]), with the name
    /// given.
    pub fn scoped_child(self) -> WaitGroup {
        self.group.make_child(self.name, true)
    }

    /// Records a task already counted in the state word, and makes its
    /// context, future and span.
    #[allow(clippy::type_complexity)]
    fn prepare<F, Fut>(
        self,
        site: &'static Location<'static>,
        task: TaskRef<Node>,
        permit: &Permit,
        f: F,
    ) -> (TaskGuard, TaskName, Slot, Fut, crate::trace::TaskSpan)
    where
        F: FnOnce(TaskContext) -> Fut,
    {
        let node = &self.group.node;
        let id = node.next_id();
        let span = crate::trace::task_span(&node.label, self.name.as_ref(), id);
        let name = task_name(node, id, self.name.clone());
        let mut entry = Entry::new(id, self.name, TaskKind::Task, site);
        entry.critical = self.critical;
        entry.queued = matches!(permit, Permit::Queue);
        // Before the entry: if `f` panics, `task` is dropped and the count
        // restored, with no entry a shutdown could have marked meanwhile (a
        // marked task's guard ends through `TaskGuard::end`, which this
        // unwind would not take).
        let fut = f(TaskContext::new(node.clone()));
        let (guard, slot) = TaskGuard::new_with(task, entry);
        (guard, name, slot, fut, span)
    }

    /// Spawns a task already counted in the state word on `runtime`, with
    /// whether the group was open when it was counted.
    fn spawn_on_runtime<F, Fut>(
        self,
        site: &'static Location<'static>,
        (task, open): (TaskRef<Node>, bool),
        permit: Permit,
        f: F,
        runtime: Runtime<'_>,
    ) -> TaskHandle<<Fut::Output as TaskOutput>::Value>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
        <Fut::Output as TaskOutput>::Value: Send,
    {
        // Borrowed from the group (which outlives `self`), not cloned: a
        // handle's clone and drop are two read-modify-writes of the group's
        // state word, the line every `go()` and every completion also
        // writes.
        let group: &WaitGroup = self.group;
        let node = &group.node;
        #[cfg(all(tokio_unstable, feature = "tokio-console"))]
        let name = self.name.clone();
        #[cfg(not(all(tokio_unstable, feature = "tokio-console")))]
        let name: Option<Label> = None;
        let (guard, task, slot, fut, span) = self.prepare(site, task, &permit, f);
        let name = name.as_ref().map(Label::as_str);
        let join = match permit {
            Permit::Unlimited => runtime.spawn(task::task_future(guard, fut, span), name),
            permit => {
                let gated = gated(fut, permit, node.clone(), slot);
                runtime.spawn(task::task_future(guard, gated, span), name)
            }
        };
        spawned(node, slot, task, join, open)
    }
}

/// The handle of a task just spawned; its abort handle goes to the registry
/// (for shutdowns), unless it already finished, or a shutdown's abort came
/// while it was being spawned (then it is aborted now: see
/// `Registry::set_abort`). `open`: the group was open when it was counted.
fn spawned<T>(
    node: &NodeRef,
    slot: Slot,
    task: TaskName,
    join: tokio::task::JoinHandle<task::Outcome<T>>,
    open: bool,
) -> TaskHandle<T> {
    node.registry
        .set_abort(slot, task.id, join.abort_handle(), || node.late_abort(open));
    TaskHandle::new(join, task)
}

/// What a task's handle keeps to name it: its id and name, and its group's.
fn task_name(node: &Node, id: TaskId, name: Option<Label>) -> TaskName {
    TaskName {
        id,
        name,
        group: node.label.clone(),
    }
}

/// A task's future behind its group's limit: it runs once it holds a slot
/// (waiting for one if it was queued), and frees the slot when it ends.
///
/// A queued task that a shutdown marked for abort before it got its slot
/// does not start: it waits, holding the slot, for the abort made with the
/// marking, and is reported as aborted while queued. The aborts of the
/// group's running tasks free their slots as they land, each handed to a
/// queued task; one whose own abort had not landed yet started then, past
/// the deadline, and a scoped child it made was not one the group's turn
/// aborted with its own: reached late, it was given three quarters of the
/// abort timeout to stop by itself (a user probe: 2,000 tasks under a limit
/// of 1,000, each awaiting stubborn parts, stopped in 1.06 s instead of
/// 0.31 s in 11 of 40 runs, in 0.31 s in 30 of 30 with this).
async fn gated<Fut: Future>(fut: Fut, permit: Permit, node: NodeRef, slot: Slot) -> Fut::Output {
    let _slot = match permit {
        Permit::Held(permit) => Some(permit),
        Permit::Queue => {
            let permit = node.acquire_permit().await;
            if !node.registry.start_queued(slot) {
                drop(node);
                let _slot = permit;
                return std::future::pending().await;
            }
            match permit {
                Permit::Held(permit) => Some(permit),
                _ => None,
            }
        }
        Permit::Unlimited => None,
    };
    drop(node);
    fut.await
}

impl fmt::Debug for TaskBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("group", &self.group.id())
            .field("name", &self.name)
            .field("critical", &self.critical)
            .finish()
    }
}
