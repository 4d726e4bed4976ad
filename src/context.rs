//! [`TaskContext`]: what a task of a group is given when it starts.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::label::GroupId;
use crate::node::{Generation, Node, NodeConfig, NodeRef};
use crate::reason::CancelReason;
use crate::shutdown::saturating_add;
use crate::WaitGroup;

/// What a task of a group receives when it starts: the signals to stop by
/// (drain, then cancel), the time it has left, and a way to shield a short
/// cleanup from the final abort.
///
/// # Drain, cancel, abort
///
/// A [`shutdown`](crate::WaitGroup::shutdown) reaches a group in three steps,
/// and a task can follow each:
///
/// 1. **Drain** ([`draining`](Self::draining)): finish what you are doing and
///    take no more (answer the in-flight request with `Connection: close`,
///    send HTTP/2 GOAWAY, stop reading the queue: an accept loop waits in
///    [`run_until_draining`](Self::run_until_draining)). Only with a drain
///    phase ([`Grace::drain`](crate::shutdown::Grace::drain)); without one
///    the group is drained and cancelled at once.
/// 2. **Cancel** (`ctx.cancelled()`, from the token it dereferences to): stop
///    now. A cancelled context is always draining too, so a task that only
///    looks at the drain signal also stops on cancel.
/// 3. **Abort**: what still runs at the deadline ([`deadline`](Self::deadline))
///    is aborted, except a [shielded](Self::shielded) section within its
///    budget.
///
/// [`cancel_reason`](Self::cancel_reason) says why it was cancelled.
///
/// It dereferences to the group's [`CancellationToken`], so
/// `ctx.cancelled().await`, `ctx.is_cancelled()` and
/// `ctx.run_until_cancelled(fut).await` work as on the token; use
/// [`token`](Self::token) for an owned token to hand on (for example to a
/// library's graceful-shutdown hook). Cloning it is one atomic increment (two
/// in a group reopened after a cancel or drain, whose context the clone
/// shares), and handing it to a task costs no more: it does not clone the
/// token.
///
/// # Examples
///
/// ```
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let wg = WaitGroup::new();
/// wg.go(|ctx| async move {
///     ctx.cancelled().await; // asked to stop: a shutdown, cancel(), ...
/// });
/// wg.cancel();
/// wg.wait().await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    node: NodeRef,
    /// The generation of the group's tokens the task started in (a
    /// `reopen()` of a cancelled group starts a new one), held while the
    /// context lives.
    generation: Generation,
}

// As for `WaitGroup` (see there): no lock is held across user code and the
// critical sections do not panic, so a panic cannot leave the group a context
// refers to in a broken state; a task may hand its context to `catch_unwind`.
impl std::panic::UnwindSafe for TaskContext {}
impl std::panic::RefUnwindSafe for TaskContext {}

impl TaskContext {
    #[inline]
    pub(crate) fn new(node: NodeRef) -> Self {
        let generation = node.generation();
        TaskContext { node, generation }
    }

    /// The generation of the group's tokens this context holds.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The group's cancellation token, as this task received it.
    pub fn token(&self) -> &CancellationToken {
        self.node.own_in(&self.generation)
    }

    /// The id of the task's group.
    pub fn group_id(&self) -> GroupId {
        self.node.id()
    }

    /// Resolves when the task should drain: finish what it is doing and take
    /// no new work. A shutdown's drain phase, [`WaitGroup::drain`](crate::WaitGroup::drain),
    /// or a cancellation (cancelled implies draining).
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::shutdown::Grace;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
    /// wg.task().name("consumer").go(|ctx| async move {
    ///     loop {
    ///         tokio::select! {
    ///             _ = ctx.draining() => return, // stop taking more
    ///             job = rx.recv() => match job {
    ///                 Some(_job) => {}            // finish the one taken
    ///                 None => return,
    ///             },
    ///         }
    ///     }
    /// });
    /// tx.send(1).await.unwrap();
    /// let grace = Grace::drain(Duration::from_secs(5)).then_cancel(Duration::from_secs(1));
    /// let report = wg.shutdown(grace).await;
    /// assert!(report.is_clean());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn draining(&self) {
        draining(self.token(), self.node.drain_in(&self.generation)).await;
    }

    /// Runs `fut` until the task should drain (or is cancelled): its output,
    /// or `None` if the drain signal came first, in which case `fut` is
    /// dropped. What an accept loop or a queue's receive waits in, so that
    /// it takes no more work from the drain signal on: a loop in
    /// `run_until_cancelled` keeps taking work through the whole drain phase
    /// of a [`Grace::drain`](crate::shutdown::Grace::drain), and holds its
    /// group's turn until it ends, so the groups after it (a child group
    /// of the connections it made) are drained only when the cancel comes.
    /// The drain signal wins a tie: nothing more is taken once it has come
    /// (unlike the token's `run_until_cancelled`, which lets a future that
    /// is ready win over the cancel).
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::shutdown::Grace;
    /// use taskgroup::{BoxError, WaitGroup};
    /// use tokio::net::TcpListener;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = WaitGroup::builder().name("server").build();
    /// let conns = server.child();
    /// let listener = TcpListener::bind("127.0.0.1:0").await?;
    /// server.task().name("accept").go(move |ctx| async move {
    ///     while let Some(accepted) = ctx.run_until_draining(listener.accept()).await {
    ///         let (sock, _peer) = accepted?;
    ///         conns.go(|ctx| async move {
    ///             // your protocol: finish the request in hand on drain
    ///             let _ = (ctx, sock);
    ///         });
    ///     }
    ///     Ok::<_, BoxError>(()) // draining: the listener is dropped
    /// });
    /// let grace = Grace::drain(Duration::from_secs(20)).then_cancel(Duration::from_secs(5));
    /// let report = server.shutdown(grace).await;
    /// assert!(report.is_clean(), "{report}");
    /// assert!(report.elapsed() < Duration::from_secs(1)); // not the drain phase
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe if `fut` is: dropping the returned future drops `fut`.
    pub async fn run_until_draining<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.draining() => None,
            output = fut => Some(output),
        }
    }

    /// Whether the task should drain (see [`draining`](Self::draining)).
    pub fn is_draining(&self) -> bool {
        self.node.is_draining_in(&self.generation)
    }

    /// The time by which the task must have finished, if anything bounds it:
    /// the earliest of its group's [deadline](crate::WaitGroupBuilder::deadline),
    /// the deadlines of the groups above it, and, once a shutdown runs, when
    /// that shutdown aborts this group's tasks. Use it to size a last batch
    /// or a flush.
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    /// Why the context was cancelled, once it is; `None` before.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.node.reason_in(&self.generation)
    }

    /// A [scoped child](crate::WaitGroup::scoped_child) of the task's group
    /// whose context is a child of this one: cancelled when this task is
    /// (by a shutdown reaching the group, `cancel()`, ...), with the same
    /// reason. For work this task fans out into and waits for; the group's
    /// waits, reports and aborts cover it, as any child's. To name it, make
    /// it from the group, `group.task().name("parts").scoped_child()` (which
    /// hangs it off the group's current context: this task's, unless the
    /// group was [reopened](crate::WaitGroup::reopen) since the task started),
    /// or from here with [`named_scoped_child`](Self::named_scoped_child).
    ///
    /// A part's failure is kept by the group (through `parts`, its child), so
    /// a task that returns the error of `parts.wait()` has it reported twice:
    /// as the part's, and inside the task's own. To have it reported once, as
    /// the task's, move it out: `parts.wait().await.map_err(|_|
    /// parts.take_errors())`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let jobs = WaitGroup::new();
    /// jobs.go(|ctx| async move {
    ///     let parts = ctx.scoped_child();
    ///     for _ in 0..4 {
    ///         parts.go(|ctx| async move { ctx.cancelled().await });
    ///     }
    ///     parts.wait().await // ends once the shutdown cancels the parts
    /// });
    /// tokio::task::yield_now().await;
    /// assert!(jobs.shutdown(Duration::from_secs(10)).await.is_clean());
    /// # }
    /// ```
    pub fn scoped_child(&self) -> WaitGroup {
        self.make_scoped_child(None)
    }

    /// [`scoped_child`](Self::scoped_child), named `name`: reports and errors
    /// name the group (`in group "Subsys2"`), where an unnamed one reads as
    /// its id (`in group #2`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let jobs = WaitGroup::new();
    /// jobs.go(|ctx| async move {
    ///     let parts = ctx.named_scoped_child("parts");
    ///     parts.task().name("stuck").go(|_| std::future::pending::<()>());
    ///     parts.wait().await
    /// });
    /// tokio::task::yield_now().await;
    /// let report = jobs.shutdown(Duration::from_millis(10)).await;
    /// assert!(report.to_string().contains(r#"task "stuck" #1 in group "parts""#), "{report}");
    /// # }
    /// ```
    pub fn named_scoped_child(&self, name: impl Into<std::borrow::Cow<'static, str>>) -> WaitGroup {
        self.make_scoped_child(Some(name.into().into()))
    }

    fn make_scoped_child(&self, name: Option<crate::label::Label>) -> WaitGroup {
        let config = NodeConfig::inherit(&self.node, name);
        WaitGroup::from_new(Node::make_scoped_child(
            &self.node,
            config,
            &self.generation,
        ))
    }

    /// Runs `fut` shielded from a shutdown's abort for at most `budget` from
    /// now: a log flush, an fsync, a last commit. Its value is returned as
    /// is; the section is not cancelled (it does not look at the context).
    ///
    /// When a shutdown's forced phase reaches this task inside the section,
    /// its abort waits until the section ends or `budget` runs out, then the
    /// task is aborted (and named in the report) as any other. The wait is
    /// bounded by the shutdown: at most three quarters of what is left of the
    /// group's share of the forced phase (the
    /// [`abort_timeout`](crate::WaitGroupBuilder::abort_timeout) shared by the
    /// groups that need it), so a shutdown still ends within `grace +
    /// abort_timeout`. Size the abort timeout for the sections you shield.
    ///
    /// A section must have started when the forced phase reaches the group:
    /// one entered after that (say, on the cancellation that the same
    /// instant delivered) is aborted with the rest. Shield the cleanup from
    /// the drain or cancel signal, not from the last moment.
    ///
    /// A stop forced by a second signal
    /// ([`ShutdownPlan::run_on_signal`](crate::shutdown::ShutdownPlan::run_on_signal))
    /// does not wait: it aborts a task inside a section at once, as the
    /// operator asked.
    ///
    /// Only a `go()` task of this context's group is shielded; called from
    /// elsewhere, `fut` simply runs. `Duration::MAX` means no budget of its
    /// own (the shutdown's bound still holds).
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::builder().abort_timeout(Duration::from_secs(4)).build();
    /// wg.task().name("writer").go(|_ctx| async move {
    ///     std::future::pending::<()>().await // ignores cancellation
    /// });
    /// wg.task().name("flusher").go(|ctx| async move {
    ///     ctx.cancelled().await;
    ///     ctx.shielded(Duration::from_secs(2), async {
    ///         tokio::time::sleep(Duration::from_secs(1)).await; // the flush
    ///     })
    ///     .await;
    /// });
    /// let report = wg.shutdown(Duration::from_millis(100)).await;
    /// let aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    /// assert_eq!(aborted, [Some("writer")]); // the flush completed
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the section.
    pub async fn shielded<F: Future>(&self, budget: Duration, fut: F) -> F::Output {
        let _section = Section::enter(&self.node, budget);
        fut.await
    }
}

/// A shielded section of a `go()` task, registered with its group while it
/// lives.
struct Section<'a> {
    node: &'a NodeRef,
    entry: Option<(crate::label::TaskId, Instant)>,
}

impl<'a> Section<'a> {
    fn enter(node: &'a NodeRef, budget: Duration) -> Self {
        // Called from the task's poll: the task being polled is the caller.
        let entry = crate::task::current()
            .filter(|c| c.group == node.id())
            .map(|c| {
                let entry = (
                    node.registry.id(c.slot),
                    saturating_add(Instant::now(), budget),
                );
                node.enter_shield(entry.0, c.slot, entry.1);
                entry
            });
        Section { node, entry }
    }
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        if let Some((task, until)) = self.entry {
            self.node.leave_shield(task, until);
        }
    }
}

impl Deref for TaskContext {
    type Target = CancellationToken;

    fn deref(&self) -> &CancellationToken {
        self.token()
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("group", &self.group_id())
            .field("draining", &self.is_draining())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Resolves once `own` (a context) or `drain` (its drain signal) is
/// cancelled: what draining is ([`TaskContext::draining`],
/// [`WaitGroup::draining_owned`](crate::WaitGroup::draining_owned)).
pub(crate) async fn draining(own: &CancellationToken, drain: &CancellationToken) {
    tokio::select! {
        biased;
        () = own.cancelled() => {}
        () = drain.cancelled() => {}
    }
}
