//! [`ServiceGroup`]: services that start together and stop together.

use std::panic::Location;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ConfigError, ServiceError};
use super::runner::{
    check_duration, check_names, into_result, report_idle, Event, Kind, LastRun, Member, Place,
    Run, RunningGuard, DEFAULT_STOP_TIMEOUT,
};
use super::service::{Ready, Service};
use super::status::{Owner, RunId, StatusHub};

/// Services that start together and stop together: an "errgroup" of services.
///
/// Running a group ([`serve`](ServiceGroup::serve), or [`Service::run`] as a member of another group
/// or sequence):
/// - starts every service at once, each as a `go()` task of the core in a child
///   [`WaitGroup`](crate::WaitGroup) of the group's (see the module docs of the runner for
///   why a group per member), with that group's token as its context; `Service::run` itself
///   is called inside the task, so a panic there is a member panic like any other;
/// - reports ready once every member has reported ready (a one-shot member that finishes
///   with `Ok` counts as ready);
/// - on the **first failure** (an error, a caught panic, or a long-running member returning
///   `Ok(())` before it was stopped) cancels every member; cancelling the group's context
///   does the same without a failure;
/// - then waits for every member to stop, under one deadline (the *stop timeout*, counted from
///   the cancellation, and never later than the deadline of a container around this one);
///   at the deadline every hung *leaf* below the members still running, at any depth, is
///   reported as a [`StopTimeout`](ServiceError::StopTimeout) named by its path
///   (`"app/backend/db"`), with where it was added and its age, and only then aborted. A
///   member running a nested container (or a [`TasksService`](super::TasksService)) is
///   given up to 100 ms past the deadline for that container's report to come up, and more,
///   up to 1 s in all, while reports keep coming up a deep nesting; one whose containers
///   have all returned `Ok` is aborted at the deadline;
/// - a member added with [`ServiceGroupBuilder::ending`] ends the group when it returns, `Ok` or
///   not (oklog/run's actors): the others are stopped cleanly and the result is that
///   member's failure, followed by those of the others while stopping, if any (as
///   [`ServiceError::Failures`] when there are others; if it returned `Ok`, the failures of
///   the others);
/// - returns `Ok(())`, or [`ServiceError::Failures`] listing every failure as `name: error`,
///   the first one first.
///
/// **Which errors are reported.** A member that returns `Ok(())` or [`Cancelled`] after the
/// group was cancelled has stopped normally. Any *other* error is reported, even when it came
/// after the cancellation (a failed teardown is a real failure); a member that wants to say
/// "I only failed because I was cancelled" returns [`Cancelled`].
///
/// **Empty group.** A group without services is valid: it reports ready and returns `Ok(())`
/// at once (like an errgroup with nothing spawned), so a generated list of services that
/// turns out empty never hangs. The same rule holds for every container:
/// [`Sequence`](super::Sequence) and [`Supervisor`](super::Supervisor) too.
///
/// **Running twice.** [`serve`](ServiceGroup::serve) on a group that is already running returns
/// [`ServiceError::AlreadyRunning`] and starts nothing. A run started after the last one's
/// future was dropped first waits for the members that run left still ending (their aborts
/// not landed yet, on other workers), up to the stop timeout: a member does not run beside
/// itself (a port still bound), and a nested container is not found still running.
///
/// **Errors.** A member's own error is kept by value in
/// [`ServiceError::Failed`]`::source` (so it can be downcast), not as the core's shared
/// [`TaskError`](crate::TaskError), which lends its error only by reference; panics are the
/// core's records.
///
/// A group is itself a [`Service`]: it nests in groups and sequences. With
/// [`ServiceGroupBuilder::status`] it reports every member's transitions to a
/// [`StatusHub`].
///
/// [`Cancelled`]: super::Cancelled
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, ServiceGroup};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = ServiceGroup::builder("app")
///     .service(service_fn("api", |ctx: CancellationToken, _ready| async move {
///         ctx.cancelled().await;
///         Ok(())
///     }))
///     .service(service_fn("worker", |_ctx, _ready| async { Err("queue gone".into()) }))
///     .build()
///     .unwrap();
/// let err = group.serve(CancellationToken::new()).await.unwrap_err();
/// assert_eq!(err.to_string(), "worker: queue gone");
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping a running group's future aborts every member task (at any depth). Its members
/// still running are cancelled first (so that nested containers and restarters stop rather
/// than restart or report the aborts as failures), and each is reported to the status hub
/// as it ends: `Stopped` as its abort lands (once its future is dropped: a panic in its
/// `Drop` says `Panicked`), or `Failed` or `Panicked`, with its error, if it returned one or
/// panicked first (also just as the future was dropped, on another worker). A member that
/// ended before the drop, unseen by the group, is reported at once; one whose task had not
/// run yet is not started.
/// Without a runtime to run the aborts on (the future dropped outside one), the members are
/// only cancelled, and reported as they return.
///
/// A member whose task is aborted by something else than its container (its runtime
/// shutting down, a shutdown of a group around) is reported `Stopped`, not as an early
/// exit, and the container waits to be cancelled or dropped in turn (one already stopping
/// its members finishes its stop).
#[derive(Debug)]
pub struct ServiceGroup {
    name: String,
    members: Vec<Member>,
    stop_timeout: Duration,
    status: Option<StatusHub>,
    /// Who reported the members `Idle` to `status` at build.
    owner: Owner,
    /// How many times the group was started: the attempt number of its status events.
    runs: u32,
    /// Set while a run is going, so that a second `serve` starts nothing.
    running: Arc<AtomicBool>,
    /// What the last run left, for the next to wait for.
    last_run: LastRun,
}

/// Builds a [`ServiceGroup`]; see [`ServiceGroup::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServiceGroupBuilder {
    group: ServiceGroup,
}

impl ServiceGroup {
    /// Starts building a group named `name`. The stop timeout is 10 seconds unless set.
    ///
    /// # Examples
    ///
    /// See [`ServiceGroup`].
    pub fn builder(name: impl Into<String>) -> ServiceGroupBuilder {
        ServiceGroupBuilder {
            group: ServiceGroup {
                name: name.into(),
                members: Vec::new(),
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                status: None,
                owner: Owner::new(),
                runs: 0,
                running: Arc::default(),
                last_run: LastRun::default(),
            },
        }
    }

    /// The names of the members, in the order they were added.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// Runs the group until `ctx` is cancelled or a member fails, with a typed error.
    ///
    /// This is [`Service::run`] without a readiness handle and without boxing the error.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Failures`], one entry per failed member (per hung leaf for stop
    /// timeouts); [`ServiceError::AlreadyRunning`] if the group is running already.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future aborts every member task; the status hub says each member still
    /// running is `Stopped` as its abort lands (see the type's docs).
    pub fn serve(
        &mut self,
        ctx: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ServiceError>> {
        self.start(ctx, Ready::noop())
    }

    fn start(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), ServiceError>> {
        let Some(running) = RunningGuard::enter(&self.running) else {
            let name = self.name.clone();
            return Box::pin(async move { Err(ServiceError::AlreadyRunning { name }) });
        };
        self.runs = self.runs.saturating_add(1);
        let (place, hosting) = Place::hosting(&self.name);
        let before = self.last_run.replace(&place, self.stop_timeout);
        let run = Run::new(
            place,
            self.status.as_ref(),
            RunId::new(self.owner, self.runs),
            &self.members,
            ctx,
            true,
            running,
        );
        let stop_timeout = self.stop_timeout;
        Box::pin(hosting.over(async move {
            before.await;
            run_group(run, ready, stop_timeout).await
        }))
    }
}

impl ServiceGroupBuilder {
    /// Adds a long-running service: returning `Ok(())` before being stopped is a failure.
    #[track_caller]
    pub fn service(self, service: impl Service) -> Self {
        self.member_at(service, Kind::LongRunning, Location::caller())
    }

    /// Adds a member of `kind` added at `site` (a [`Supervisor`](super::Supervisor)'s
    /// services: the user's line, not the supervisor's).
    pub(crate) fn member_at(
        mut self,
        service: impl Service,
        kind: Kind,
        site: &'static Location<'static>,
    ) -> Self {
        self.group.members.push(Member::new(service, kind, site));
        self
    }

    /// Adds a one-shot service (a migration, a warm-up): returning `Ok(())` at any time is
    /// fine and counts as ready; an error or panic still stops the group.
    #[track_caller]
    pub fn oneshot(self, service: impl Service) -> Self {
        self.member_at(service, Kind::OneShot, Location::caller())
    }

    /// Adds a service whose return, `Ok` or not, ends the group (oklog/run's "the first
    /// actor to return interrupts the others"): the others are stopped cleanly, and the
    /// group's result is this member's failure, or, if others failed while stopping (one
    /// that hung and was aborted, a failed teardown), [`ServiceError::Failures`] with this
    /// member's first; if it returned `Ok`, the failures of the others, if any. A signal
    /// watcher or a "run until this job is done" member.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::{service_fn, ServiceGroup};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = ServiceGroup::builder("app")
    ///     .service(service_fn("api", |ctx: CancellationToken, _ready| async move {
    ///         ctx.cancelled().await;
    ///         Ok(())
    ///     }))
    ///     .ending(service_fn("job", |_ctx, _ready| async { Ok(()) }))
    ///     .build()
    ///     .unwrap();
    /// group.serve(CancellationToken::new()).await.unwrap();
    /// # }
    /// ```
    #[track_caller]
    pub fn ending(self, service: impl Service) -> Self {
        self.member_at(service, Kind::Ending, Location::caller())
    }

    /// How long the members may take to stop, counted from the cancellation, before the ones
    /// still running are aborted. `Duration::MAX` means no limit (a container around this
    /// one still bounds it by its own deadline). Zero is refused by [`build`](Self::build)
    /// ([`ConfigError::ZeroDuration`]): members would be aborted before they could see the
    /// cancellation; a millisecond aborts at once what does not return on it.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.group.stop_timeout = timeout;
        self
    }

    /// Reports the members' transitions to `hub`: [`ServiceState::Idle`](super::ServiceState::Idle) when
    /// built, then `Starting`, `Running` (reported ready), and `Stopped`, `Failed` or
    /// `Panicked`, with the group's run count as the attempt number. Members of nested
    /// containers report to it too, by their path below this group. If this group runs
    /// below a container that reports to the same hub, its members report by their path
    /// there, and their `Idle` entries from the build leave the snapshot (see
    /// [`StatusHub`]).
    pub fn status(mut self, hub: StatusHub) -> Self {
        self.group.status = Some(hub);
        self
    }

    /// Checks the settings and builds the group.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateName`] if two members share a name,
    /// [`ConfigError::InvalidName`] if a name is empty or holds a `/`,
    /// [`ConfigError::ZeroDuration`] if the stop timeout is zero.
    pub fn build(self) -> Result<ServiceGroup, ConfigError> {
        check_names(&self.group.name, &self.group.members)?;
        check_duration("stop timeout", self.group.stop_timeout)?;
        report_idle(
            self.group.status.as_ref(),
            &self.group.members,
            self.group.owner,
        );
        Ok(self.group)
    }
}

impl Service for ServiceGroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let fut = self.start(ctx, ready);
        Box::pin(async move { fut.await.map_err(BoxError::from) })
    }
}

async fn run_group(mut run: Run, ready: Ready, stop_timeout: Duration) -> Result<(), ServiceError> {
    let mut ready = Some(ready);
    let mut mark_ready = |run: &Run| {
        if run.all_ready() {
            if let Some(r) = ready.take() {
                r.ready();
            }
        }
    };
    mark_ready(&run);
    for i in 0..run.len() {
        run.start(i);
    }
    // Whether the member whose return ends the group did so with a failure.
    let mut ending_failed = false;
    while run.running() > 0 && !run.is_cancelled() {
        match run.next(None).await {
            Event::Ended(i, failure) => {
                if run.kind(i) == Kind::Ending {
                    // In the run's errors at once (the first there: a failure ends this
                    // loop), not held in this future while the others stop: a container
                    // around that aborts this one meanwhile takes it from there.
                    if let Some(e) = failure {
                        run.errors.push(e);
                        ending_failed = true;
                    }
                    break;
                }
                mark_ready(&run);
                if let Some(e) = failure {
                    run.errors.push(e);
                    break;
                }
            }
            Event::Ready(_, true) => mark_ready(&run),
            Event::Ready(_, false) | Event::Timeout => {}
            Event::Cancelled => break,
        }
    }
    if run.running() > 0 {
        run.stop(None, stop_timeout).await;
    }
    // The ending member's failure first, and every other (one that hung is named by its
    // stop timeout, a failed teardown is a failure) after it; alone, it is the group's.
    let mut errors = run.finish();
    if ending_failed && errors.len() == 1 {
        return Err(errors.swap_remove(0));
    }
    into_result(errors)
}
