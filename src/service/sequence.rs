//! [`Sequence`]: services started in order, each once the previous is ready, and stopped in
//! reverse.

use std::panic::Location;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ConfigError, ServiceError};
use super::runner::{
    check_duration, check_names, deadline_after, into_result, report_idle, Event, Kind, LastRun,
    Member, Place, Run, RunningGuard, DEFAULT_STOP_TIMEOUT,
};
use super::service::{Ready, Service};
use super::status::{Owner, RunId, StatusHub};

/// The start timeout of a sequence unless set otherwise.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Services started in order, each only once the previous one is ready, and stopped in
/// reverse order: a database, then a cache that needs it, then an HTTP server that needs both.
///
/// Running a sequence ([`serve`](Sequence::serve), or [`Service::run`] inside a group or
/// sequence):
/// - **start**: spawns the first service and waits until it reports ready (or, for a one-shot
///   service, finishes with `Ok`), then the second, and so on. Each service has its own
///   *start timeout* (the sequence's, or its own from
///   [`service_with_timeouts`](SequenceBuilder::service_with_timeouts)). If a service fails, panics, exits early or times out while starting, the
///   sequence stops what it started and reports [`Starting`](ServiceError::Starting)
///   (`"starting B: …"`); if an already started one fails meanwhile, it stops the same way
///   and reports that one's failure as it is (`"A: …"`);
/// - reports ready once every service is ready;
/// - **run**: until its context is cancelled or a service fails (same rules as a
///   [`ServiceGroup`](super::ServiceGroup));
/// - **stop**: cancels the services one at a time, last started first, each with its own
///   token, and waits for each under its own *stop timeout* before the next; one that does
///   not stop in time (or by the deadline of a container around the sequence, whichever
///   comes first) has every hung leaf below it reported as a
///   [`StopTimeout`](ServiceError::StopTimeout) with its path, then is aborted. Once the
///   deadline around has passed, the services still to stop are cancelled and aborted at
///   once, each reported with a zero timeout ("had no time to stop").
///
/// Each member run is a `go()` task of the core, as in a [`ServiceGroup`](super::ServiceGroup), sharing the
/// same runner: the same judging of ends, readiness and stop reports.
///
/// Services do not share the sequence's token: each gets an independent one, so cancelling
/// the sequence's context stops them in reverse order rather than all at once.
///
/// The result is `Ok(())` or [`ServiceError::Failures`] listing every failure. An empty
/// sequence reports ready and returns at once. `serve` while running returns
/// [`ServiceError::AlreadyRunning`]; a run started after the last one's future was dropped
/// waits for the services it left still ending first, as a
/// [`ServiceGroup`](super::ServiceGroup)'s does. `Duration::MAX` as a timeout means no limit.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use taskgroup::service::{service_fn, Ready, Sequence};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let svc = |name: &'static str| {
///     let log = log.clone();
///     service_fn(name, move |ctx: CancellationToken, ready: Ready| {
///         let log = log.clone();
///         async move {
///             log.lock().unwrap().push(format!("start {name}"));
///             ready.ready();
///             ctx.cancelled().await;
///             log.lock().unwrap().push(format!("stop {name}"));
///             Ok(())
///         }
///     })
/// };
/// let mut seq = Sequence::builder("app").service(svc("db")).service(svc("http")).build().unwrap();
/// let ctx = CancellationToken::new();
/// let run = tokio::spawn(seq.serve(ctx.clone()));
/// tokio::task::yield_now().await;
/// ctx.cancel();
/// run.await.unwrap().unwrap();
/// assert_eq!(*log.lock().unwrap(), ["start db", "start http", "stop http", "stop db"]);
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping a running sequence's future aborts every service task. Its members still
/// running are cancelled first and reported to the status hub as they end (`Stopped` as
/// their aborts land), as a [`ServiceGroup`](super::ServiceGroup)'s are.
#[derive(Debug)]
pub struct Sequence {
    name: String,
    members: Vec<Member>,
    start_timeout: Duration,
    stop_timeout: Duration,
    status: Option<StatusHub>,
    /// Who reported the members `Idle` to `status` at build.
    owner: Owner,
    /// How many times the sequence was started: the attempt number of its status events.
    runs: u32,
    /// Set while a run is going, so that a second `serve` starts nothing.
    running: Arc<AtomicBool>,
    /// What the last run left, for the next to wait for.
    last_run: LastRun,
}

/// Builds a [`Sequence`]; see [`Sequence::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SequenceBuilder {
    seq: Sequence,
}

impl Sequence {
    /// Starts building a sequence named `name`. Unless set, each service may take 30 seconds
    /// to start and 10 seconds to stop.
    ///
    /// # Examples
    ///
    /// See [`Sequence`].
    pub fn builder(name: impl Into<String>) -> SequenceBuilder {
        SequenceBuilder {
            seq: Sequence {
                name: name.into(),
                members: Vec::new(),
                start_timeout: DEFAULT_START_TIMEOUT,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                status: None,
                owner: Owner::new(),
                runs: 0,
                running: Arc::default(),
                last_run: LastRun::default(),
            },
        }
    }

    /// The names of the services, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// Runs the sequence until `ctx` is cancelled or a service fails, with a typed error.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Failures`]; a failed start is a
    /// [`Starting`](ServiceError::Starting) entry. [`ServiceError::AlreadyRunning`] if the
    /// sequence is running already.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future aborts every service task; the status hub says each member still
    /// running is `Stopped` as its abort lands.
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
        let timeouts = self
            .members
            .iter()
            .map(|m| {
                (
                    m.start_timeout.unwrap_or(self.start_timeout),
                    m.stop_timeout.unwrap_or(self.stop_timeout),
                )
            })
            .collect();
        let run = Run::new(
            place,
            self.status.as_ref(),
            RunId::new(self.owner, self.runs),
            &self.members,
            ctx,
            false,
            running,
        );
        Box::pin(hosting.over(async move {
            before.await;
            run_sequence(run, timeouts, ready).await
        }))
    }
}

impl SequenceBuilder {
    /// Adds a long-running service: it must report ready to let the next one start, and
    /// returning `Ok(())` before being stopped is a failure.
    #[track_caller]
    pub fn service(mut self, service: impl Service) -> Self {
        let site = Location::caller();
        self.seq
            .members
            .push(Member::new(service, Kind::LongRunning, site));
        self
    }

    /// Adds a long-running service with its own start and stop timeouts, which replace the
    /// sequence's for this service (a database may need a minute to start, a cache a second).
    #[track_caller]
    pub fn service_with_timeouts(
        mut self,
        service: impl Service,
        start_timeout: Duration,
        stop_timeout: Duration,
    ) -> Self {
        let site = Location::caller();
        let mut m = Member::new(service, Kind::LongRunning, site);
        m.start_timeout = Some(start_timeout);
        m.stop_timeout = Some(stop_timeout);
        self.seq.members.push(m);
        self
    }

    /// Adds a one-shot service (a schema migration): the next service starts once it reports
    /// ready or finishes with `Ok(())`.
    #[track_caller]
    pub fn oneshot(mut self, service: impl Service) -> Self {
        let site = Location::caller();
        self.seq
            .members
            .push(Member::new(service, Kind::OneShot, site));
        self
    }

    /// How long each service may take to report ready (unless set per service).
    /// `Duration::MAX` means no limit.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.seq.start_timeout = timeout;
        self
    }

    /// How long each service may take to stop once cancelled (unless set per service).
    /// `Duration::MAX` means no limit.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.seq.stop_timeout = timeout;
        self
    }

    /// Reports the services' transitions to `hub`, as [`ServiceGroupBuilder::status`] does.
    ///
    /// [`ServiceGroupBuilder::status`]: super::ServiceGroupBuilder::status
    pub fn status(mut self, hub: StatusHub) -> Self {
        self.seq.status = Some(hub);
        self
    }

    /// Checks the settings and builds the sequence.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateName`] if two services share a name,
    /// [`ConfigError::InvalidName`] if a name is empty or holds a `/`,
    /// [`ConfigError::ZeroDuration`] if a timeout is zero.
    pub fn build(self) -> Result<Sequence, ConfigError> {
        check_names(&self.seq.name, &self.seq.members)?;
        check_duration("start timeout", self.seq.start_timeout)?;
        check_duration("stop timeout", self.seq.stop_timeout)?;
        for m in &self.seq.members {
            if let Some(start) = m.start_timeout {
                check_duration("start timeout", start)?;
            }
            if let Some(stop) = m.stop_timeout {
                check_duration("stop timeout", stop)?;
            }
        }
        report_idle(self.seq.status.as_ref(), &self.seq.members, self.seq.owner);
        Ok(self.seq)
    }
}

impl Service for Sequence {
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

async fn run_sequence(
    mut run: Run,
    timeouts: Vec<(Duration, Duration)>,
    ready: Ready,
) -> Result<(), ServiceError> {
    let mut started = 0;
    // Start phase: any failure ends it.
    let mut failed = false;
    'start: for (i, &(start_timeout, _)) in timeouts.iter().enumerate() {
        if run.is_cancelled() {
            break;
        }
        run.start(i);
        started = i + 1;
        let deadline = deadline_after(start_timeout);
        loop {
            match run.next(Some(deadline)).await {
                Event::Ready(j, true) if j == i => break,
                Event::Ready(..) => {}
                Event::Ended(j, failure) => match failure {
                    // A one-shot finished: ready.
                    None if j == i => break,
                    None => {}
                    Some(e) => {
                        run.errors.push(if j == i {
                            ServiceError::Starting {
                                name: run.name(i).to_owned(),
                                source: Box::new(e),
                            }
                        } else {
                            // An earlier service failed while this one was starting.
                            e
                        });
                        failed = true;
                        break 'start;
                    }
                },
                Event::Timeout => {
                    let name = run.name(i).to_owned();
                    run.errors.push(ServiceError::Starting {
                        name: name.clone(),
                        source: Box::new(ServiceError::StartTimeout {
                            name,
                            timeout: start_timeout,
                        }),
                    });
                    failed = true;
                    break 'start;
                }
                Event::Cancelled => break 'start,
            }
        }
    }

    // Run phase.
    if !failed && !run.is_cancelled() {
        ready.ready();
        while run.running() > 0 {
            match run.next(None).await {
                Event::Ended(_, Some(e)) => {
                    run.errors.push(e);
                    break;
                }
                Event::Cancelled => break,
                _ => {}
            }
        }
    }

    // Stop phase: last started first, each under its own timeout.
    for i in (0..started).rev() {
        if run.is_running(i) {
            run.stop(Some(i), timeouts[i].1).await;
        }
    }
    into_result(run.finish())
}
