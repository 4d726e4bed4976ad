//! [`Sequence`]: services started in order, each once the previous is ready, and stopped in
//! reverse.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ConfigError, ServiceError};
use super::group::{
    check_duration, check_names, into_result, judge, judge_stopping, report_idle, Member, Prepared,
    DEFAULT_STOP_TIMEOUT,
};
use super::service::{Outcome, Ready, Service, Tasks, WhenReady};
use super::status::{Reporter, State, StatusHub};

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
///   [`service_with_timeouts`](SequenceBuilder::service_with_timeouts)). If a service fails, panics, exits early or times out while starting, or
///   an already started one fails meanwhile, the sequence stops what it started and reports
///   [`Starting`](ServiceError::Starting) (`"starting B: …"`);
/// - reports ready once every service is ready;
/// - **run**: until its context is cancelled or a service fails (same rules as a
///   [`Group`](super::Group));
/// - **stop**: cancels the services one at a time, last started first, each with its own
///   token, and waits for each under its own *stop timeout* before the next; one that does
///   not stop in time is aborted and reported as [`StopTimeout`](ServiceError::StopTimeout).
///
/// Services do not share the sequence's token: each gets an independent one, so cancelling
/// the sequence's context stops them in reverse order rather than all at once.
///
/// The result is `Ok(())` or [`ServiceError::Failures`] listing every failure. An empty
/// sequence reports ready and returns at once.
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
/// Dropping a running sequence's future aborts every service task.
pub struct Sequence {
    name: String,
    members: Vec<Member>,
    /// Per-service (start, stop) timeouts, parallel to `members`; `None`: the sequence's.
    overrides: Vec<(Option<Duration>, Option<Duration>)>,
    start_timeout: Duration,
    stop_timeout: Duration,
    status: Option<StatusHub>,
    /// How many times the sequence was started: the attempt number of its status events.
    runs: u32,
}

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sequence")
            .field("name", &self.name)
            .field("members", &self.members)
            .field("start_timeout", &self.start_timeout)
            .field("stop_timeout", &self.stop_timeout)
            .field("status", &self.status)
            .field("runs", &self.runs)
            .finish()
    }
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
                overrides: Vec::new(),
                start_timeout: DEFAULT_START_TIMEOUT,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                status: None,
                runs: 0,
            },
        }
    }

    /// The names of the services, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.service.name()).collect()
    }

    /// Runs the sequence until `ctx` is cancelled or a service fails, with a typed error.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Failures`]; a failed start is a
    /// [`Starting`](ServiceError::Starting) entry.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future aborts every service task.
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
        self.runs = self.runs.saturating_add(1);
        let reporter = Reporter::new(self.status.clone(), self.runs);
        let mut tokens = Vec::with_capacity(self.members.len());
        let members: Vec<Prepared> = self
            .members
            .iter_mut()
            .map(|m| {
                let token = CancellationToken::new();
                let (r, when_ready) = Ready::channel();
                let fut = m.service.run(token.clone(), r);
                tokens.push(token);
                Prepared {
                    name: m.service.name().to_owned(),
                    long_running: m.long_running,
                    fut: Some(fut),
                    when_ready: Some(when_ready),
                }
            })
            .collect();
        let timeouts = self
            .overrides
            .iter()
            .map(|(start, stop)| {
                (
                    start.unwrap_or(self.start_timeout),
                    stop.unwrap_or(self.stop_timeout),
                )
            })
            .collect();
        Box::pin(run_sequence(
            members, tokens, timeouts, ctx, ready, reporter,
        ))
    }
}

impl SequenceBuilder {
    /// Adds a long-running service: it must report ready to let the next one start, and
    /// returning `Ok(())` before being stopped is a failure.
    pub fn service(mut self, service: impl Service) -> Self {
        self.seq.members.push(Member {
            service: Box::new(service),
            long_running: true,
        });
        self.seq.overrides.push((None, None));
        self
    }

    /// Adds a long-running service with its own start and stop timeouts, which replace the
    /// sequence's for this service (a database may need a minute to start, a cache a second).
    pub fn service_with_timeouts(
        mut self,
        service: impl Service,
        start_timeout: Duration,
        stop_timeout: Duration,
    ) -> Self {
        self.seq.members.push(Member {
            service: Box::new(service),
            long_running: true,
        });
        self.seq
            .overrides
            .push((Some(start_timeout), Some(stop_timeout)));
        self
    }

    /// Adds a one-shot service (a schema migration): the next service starts once it reports
    /// ready or finishes with `Ok(())`.
    pub fn oneshot(mut self, service: impl Service) -> Self {
        self.seq.members.push(Member {
            service: Box::new(service),
            long_running: false,
        });
        self.seq.overrides.push((None, None));
        self
    }

    /// How long each service may take to report ready (unless set per service).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.seq.start_timeout = timeout;
        self
    }

    /// How long each service may take to stop once cancelled (unless set per service).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.seq.stop_timeout = timeout;
        self
    }

    /// Reports the services' transitions to `hub`, as [`GroupBuilder::status`] does.
    ///
    /// [`GroupBuilder::status`]: super::GroupBuilder::status
    pub fn status(mut self, hub: StatusHub) -> Self {
        self.seq.status = Some(hub);
        self
    }

    /// Checks the settings and builds the sequence.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateName`] if two services share a name,
    /// [`ConfigError::ZeroDuration`] if a timeout is zero.
    pub fn build(self) -> Result<Sequence, ConfigError> {
        check_names(&self.seq.name, &self.seq.members)?;
        check_duration("start timeout", self.seq.start_timeout)?;
        check_duration("stop timeout", self.seq.stop_timeout)?;
        for (start, stop) in &self.seq.overrides {
            if let Some(start) = start {
                check_duration("start timeout", *start)?;
            }
            if let Some(stop) = stop {
                check_duration("stop timeout", *stop)?;
            }
        }
        report_idle(self.seq.status.as_ref(), &self.seq.members);
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

async fn when_ready(w: &mut Option<WhenReady>) -> bool {
    match w {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

async fn run_sequence(
    mut members: Vec<Prepared>,
    tokens: Vec<CancellationToken>,
    timeouts: Vec<(Duration, Duration)>,
    ctx: CancellationToken,
    ready: Ready,
    reporter: Reporter,
) -> Result<(), ServiceError> {
    let n = members.len();
    let mut tasks = Tasks::new(n);
    let mut errors = Vec::new();
    let mut started = 0;

    // Start phase. `failed` is set by any failure, which ends the start.
    let mut failed = false;
    'start: for i in 0..n {
        if ctx.is_cancelled() {
            break;
        }
        if let Some(fut) = members[i].fut.take() {
            reporter.report(&members[i].name, State::Starting);
            tasks.spawn(i, fut);
        }
        started = i + 1;
        let mut when = members[i].when_ready.take();
        let start_timeout = timeouts[i].0;
        let deadline = Instant::now() + start_timeout;
        loop {
            tokio::select! {
                r = when_ready(&mut when) => {
                    when = None;
                    if r {
                        reporter.report(&members[i].name, State::Running);
                        break;
                    }
                    // Dropped without reporting ready: wait for its end or the timeout.
                }
                (j, outcome) = tasks.next() => {
                    let m = &members[j];
                    if j == i {
                        if matches!(outcome, Outcome::Done) && !m.long_running {
                            reporter.ended(&m.name, None);
                            break; // a one-shot finished: ready
                        }
                        let failure = judge(&m.name, m.long_running, outcome);
                        reporter.ended(&m.name, failure.as_ref());
                        if let Some(e) = failure {
                            errors.push(ServiceError::Starting {
                                name: m.name.clone(),
                                source: Box::new(e),
                            });
                            failed = true;
                            break 'start;
                        }
                    } else {
                        let failure = judge(&m.name, m.long_running, outcome);
                        reporter.ended(&m.name, failure.as_ref());
                        if let Some(e) = failure {
                            // An earlier service failed while this one was starting.
                            errors.push(e);
                            failed = true;
                            break 'start;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let name = members[i].name.clone();
                    errors.push(ServiceError::Starting {
                        name: name.clone(),
                        source: Box::new(ServiceError::StartTimeout { name, timeout: start_timeout }),
                    });
                    failed = true;
                    break 'start;
                }
                () = ctx.cancelled() => break 'start,
            }
        }
    }

    // Run phase.
    if !failed && !ctx.is_cancelled() {
        ready.ready();
        while tasks.running() > 0 {
            tokio::select! {
                (j, outcome) = tasks.next() => {
                    let m = &members[j];
                    let failure = judge(&m.name, m.long_running, outcome);
                    reporter.ended(&m.name, failure.as_ref());
                    if let Some(e) = failure {
                        errors.push(e);
                        break;
                    }
                }
                () = ctx.cancelled() => break,
            }
        }
    }

    // Stop phase: last started first, each under its own timeout.
    for i in (0..started).rev() {
        if !tasks.is_running(i) {
            continue;
        }
        tokens[i].cancel();
        let stop_timeout = timeouts[i].1;
        let deadline = Instant::now() + stop_timeout;
        while tasks.is_running(i) {
            tokio::select! {
                (j, outcome) = tasks.next() => {
                    let failure = judge_stopping(&members[j].name, outcome);
                    reporter.ended(&members[j].name, failure.as_ref());
                    if let Some(e) = failure {
                        errors.push(e);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    tasks.abort(i);
                    let e = ServiceError::StopTimeout {
                        name: members[i].name.clone(),
                        timeout: stop_timeout,
                    };
                    reporter.ended(&members[i].name, Some(&e));
                    errors.push(e);
                }
            }
        }
    }
    into_result(errors)
}
