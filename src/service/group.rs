//! [`Group`]: services that start together and stop together.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ConfigError, ServiceError};
use super::service::{Outcome, Ready, Service, Tasks, WhenReady};
use super::status::{Reporter, State, StatusHub};

/// The stop timeout of a group or sequence unless set otherwise.
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A service held by a group or sequence, with whether it is long-running.
pub(crate) struct Member {
    pub(crate) service: Box<dyn Service>,
    pub(crate) long_running: bool,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.service.name())
            .field("long_running", &self.long_running)
            .finish()
    }
}

/// Checks that no two members share a name.
pub(crate) fn check_names(group: &str, members: &[Member]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for m in members {
        if !seen.insert(m.service.name()) {
            return Err(ConfigError::DuplicateName {
                group: group.to_owned(),
                name: m.service.name().to_owned(),
            });
        }
    }
    Ok(())
}

pub(crate) fn report_idle(hub: Option<&StatusHub>, members: &[Member]) {
    if let Some(hub) = hub {
        for m in members {
            hub.report(m.service.name(), State::Idle, 0, None, None);
        }
    }
}

pub(crate) fn check_duration(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::ZeroDuration { setting })
    } else {
        Ok(())
    }
}

/// One prepared run of a member: its future is created, not started.
pub(crate) struct Prepared {
    pub(crate) name: String,
    pub(crate) long_running: bool,
    pub(crate) fut: Option<BoxFuture<'static, Result<(), BoxError>>>,
    pub(crate) when_ready: Option<WhenReady>,
}

/// What a member's end means, while the group or sequence is not stopping.
///
/// Returns the failure to report, if the end is one.
pub(crate) fn judge(name: &str, long_running: bool, outcome: Outcome) -> Option<ServiceError> {
    match outcome {
        Outcome::Done if long_running => Some(ServiceError::ExitedEarly {
            name: name.to_owned(),
        }),
        Outcome::Done => None,
        Outcome::Error(e) => Some(ServiceError::attribute(name, e)),
        Outcome::Panic(message) => Some(ServiceError::Panicked {
            name: name.to_owned(),
            message,
        }),
    }
}

/// What a member's end means once it was asked to stop: `Ok` is the normal stop, errors and
/// panics are still reported.
pub(crate) fn judge_stopping(name: &str, outcome: Outcome) -> Option<ServiceError> {
    judge(name, false, outcome)
}

pub(crate) fn into_result(errors: Vec<ServiceError>) -> Result<(), ServiceError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Failures { errors })
    }
}

/// Services that start together and stop together: an "errgroup" of services.
///
/// Running a group ([`serve`](Group::serve), or [`Service::run`] as a member of another group
/// or sequence):
/// - starts every service at once, each on its own tokio task, with a child token of the
///   group's context;
/// - reports ready once every member has reported ready (a one-shot member that finishes
///   with `Ok` counts as ready);
/// - on the **first failure** (an error, a caught panic, or a long-running member returning
///   `Ok(())` before it was stopped) cancels every member; cancelling the group's context
///   does the same without a failure;
/// - then waits for every member to stop, under one deadline (the *stop timeout*, counted from
///   the cancellation); members still running at the deadline are aborted and reported as
///   [`StopTimeout`](ServiceError::StopTimeout);
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
/// turns out empty never hangs. [`Supervisor`](super::Supervisor) rejects an empty list.
///
/// A group is itself a [`Service`]: it nests in groups and sequences. With
/// [`GroupBuilder::status`] it reports every member's transitions to a
/// [`StatusHub`].
///
/// [`Cancelled`]: super::Cancelled
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, Group};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = Group::builder("app")
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
/// Dropping a running group's future aborts every member task.
#[derive(Debug)]
pub struct Group {
    name: String,
    members: Vec<Member>,
    stop_timeout: Duration,
    status: Option<StatusHub>,
    /// How many times the group was started: the attempt number of its status events.
    runs: u32,
}

/// Builds a [`Group`]; see [`Group::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct GroupBuilder {
    group: Group,
}

impl Group {
    /// Starts building a group named `name`. The stop timeout is 10 seconds unless set.
    ///
    /// # Examples
    ///
    /// See [`Group`].
    pub fn builder(name: impl Into<String>) -> GroupBuilder {
        GroupBuilder {
            group: Group {
                name: name.into(),
                members: Vec::new(),
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                status: None,
                runs: 0,
            },
        }
    }

    /// The names of the members, in the order they were added.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.service.name()).collect()
    }

    /// Runs the group until `ctx` is cancelled or a member fails, with a typed error.
    ///
    /// This is [`Service::run`] without a readiness handle and without boxing the error.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Failures`], one entry per failed member.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future aborts every member task.
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
        let token = ctx.child_token();
        self.runs = self.runs.saturating_add(1);
        let reporter = Reporter::new(self.status.clone(), self.runs);
        let members: Vec<Prepared> = self
            .members
            .iter_mut()
            .map(|m| {
                let (r, when_ready) = Ready::channel();
                Prepared {
                    name: m.service.name().to_owned(),
                    long_running: m.long_running,
                    fut: Some(m.service.run(token.clone(), r)),
                    when_ready: Some(when_ready),
                }
            })
            .collect();
        Box::pin(run_group(
            members,
            token,
            ready,
            self.stop_timeout,
            reporter,
        ))
    }
}

impl GroupBuilder {
    /// Adds a long-running service: returning `Ok(())` before being stopped is a failure.
    pub fn service(mut self, service: impl Service) -> Self {
        self.group.members.push(Member {
            service: Box::new(service),
            long_running: true,
        });
        self
    }

    /// Adds a one-shot service (a migration, a warm-up): returning `Ok(())` at any time is
    /// fine and counts as ready; an error or panic still stops the group.
    pub fn oneshot(mut self, service: impl Service) -> Self {
        self.group.members.push(Member {
            service: Box::new(service),
            long_running: false,
        });
        self
    }

    /// How long the members may take to stop, counted from the cancellation, before the ones
    /// still running are aborted.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.group.stop_timeout = timeout;
        self
    }

    /// Reports the members' transitions to `hub`: [`State::Idle`] when built, then
    /// `Starting`, `Running` (reported ready), and `Stopped`, `Failed` or `Panicked`, with
    /// the group's run count as the attempt number.
    ///
    /// Give a hub to a group *or* to [`Restarter`](super::Restarter)s inside it, not both,
    /// or a restarted member's events are reported twice.
    pub fn status(mut self, hub: StatusHub) -> Self {
        self.group.status = Some(hub);
        self
    }

    /// Checks the settings and builds the group.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateName`] if two members share a name,
    /// [`ConfigError::ZeroDuration`] if the stop timeout is zero.
    pub fn build(self) -> Result<Group, ConfigError> {
        check_names(&self.group.name, &self.group.members)?;
        check_duration("stop timeout", self.group.stop_timeout)?;
        report_idle(self.group.status.as_ref(), &self.group.members);
        Ok(self.group)
    }
}

impl Service for Group {
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

async fn run_group(
    mut members: Vec<Prepared>,
    token: CancellationToken,
    ready: Ready,
    stop_timeout: Duration,
    reporter: Reporter,
) -> Result<(), ServiceError> {
    let n = members.len();
    let mut ready = Some(ready);
    let mut ready_count = 0;
    let mut is_ready = vec![false; n];
    let mut mark_ready = |i: usize, ready: &mut Option<Ready>| {
        if !is_ready[i] {
            is_ready[i] = true;
            ready_count += 1;
            if ready_count == n {
                if let Some(r) = ready.take() {
                    r.ready();
                }
            }
        }
    };
    if n == 0 {
        if let Some(r) = ready.take() {
            r.ready();
        }
        return Ok(());
    }

    let mut tasks = Tasks::new(n);
    let mut readiness = FuturesUnordered::new();
    for (i, m) in members.iter_mut().enumerate() {
        if let Some(fut) = m.fut.take() {
            reporter.report(&m.name, State::Starting);
            tasks.spawn(i, fut);
        }
        if let Some(w) = m.when_ready.take() {
            readiness.push(async move { (i, w.await) });
        }
    }

    let mut errors = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        if tasks.running() == 0 {
            break;
        }
        if deadline.is_none() && token.is_cancelled() {
            deadline = Some(Instant::now() + stop_timeout);
        }
        let stop_at = deadline.unwrap_or_else(Instant::now);
        tokio::select! {
            (i, outcome) = tasks.next() => {
                let m = &members[i];
                let failure = if token.is_cancelled() {
                    judge_stopping(&m.name, outcome)
                } else {
                    match outcome {
                        Outcome::Done if !m.long_running => {
                            mark_ready(i, &mut ready);
                            None
                        }
                        outcome => judge(&m.name, m.long_running, outcome),
                    }
                };
                reporter.ended(&m.name, failure.as_ref());
                if let Some(e) = failure {
                    errors.push(e);
                    token.cancel();
                }
            }
            Some((i, was_ready)) = readiness.next(), if !readiness.is_empty() => {
                if was_ready {
                    if tasks.is_running(i) {
                        reporter.report(&members[i].name, State::Running);
                    }
                    mark_ready(i, &mut ready);
                }
            }
            () = token.cancelled(), if deadline.is_none() => {}
            () = tokio::time::sleep_until(stop_at), if deadline.is_some() => {
                for i in tasks.running_indices() {
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
