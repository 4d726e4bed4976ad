//! Restarting services: the restart policy, exponential backoff with jitter, the intensity
//! limit, the [`Restarter`] wrapper and the [`Supervisor`] over many services.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ConfigError, ServiceError};
use super::group::ServiceGroup;
use super::runner::{
    check_duration, check_name, deadline_after, drop_service_later, member_path, when_ready,
    AbortOnDrop, AttemptEnd, End, EndCell, Kind, LastRun, Place, Spawned, DEFAULT_STOP_TIMEOUT,
};
use super::service::{Ready, Service};
use super::status::{Owner, Reporter, RunId, ServiceState, StatusHub};
use crate::shutdown::is_unlimited;

/// When a [`Restarter`] runs its service again (the names are Erlang/OTP's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Always: after an error, a panic, and after returning `Ok(())` (a permanent service is
    /// not supposed to end). The default.
    #[default]
    Permanent,
    /// On failure only: after an error or a panic. Returning `Ok(())` ends the restarter
    /// with `Ok(())`.
    Transient,
    /// Never: the first end of the service is the end of the restarter.
    Temporary,
}

/// Exponential backoff with jitter: the delay before the n-th restart in the intensity window
/// (counting from 0) is `min * factor^n`, capped at `max`, then reduced by a random fraction
/// of at most `jitter` (so a delay never exceeds `max`, and `jitter = 0.0` gives exact
/// delays).
///
/// The random numbers come from a small xorshift generator, seeded from
/// [`RandomState`] unless [`with_seed`](Backoff::with_seed) fixes the seed.
///
/// The delay is slept on Tokio's timer, which fires on whole milliseconds:
/// a delay below 1 ms lasts about 1 ms (a restart loop with `min` of 1 ns
/// restarts about a thousand times a second, not without pause).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::service::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1), 2.0, 0.0)?;
/// assert_eq!(backoff.base_delay(0), Duration::from_millis(100));
/// assert_eq!(backoff.base_delay(3), Duration::from_millis(800));
/// assert_eq!(backoff.base_delay(4), Duration::from_secs(1));
/// # Ok::<(), taskgroup::service::ConfigError>(())
/// ```
///
/// # Errors
///
/// [`exponential`](Backoff::exponential) rejects a zero `min` or `max`, `min > max`, a
/// factor below 1 or not finite, and a jitter outside `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, with a jitter of 0.1.
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.1,
            seed: None,
        }
    }
}

impl Backoff {
    /// A validated exponential backoff.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`], [`ConfigError::BackoffMinAboveMax`],
    /// [`ConfigError::InvalidFactor`] or [`ConfigError::InvalidJitter`].
    pub fn exponential(
        min: Duration,
        max: Duration,
        factor: f64,
        jitter: f64,
    ) -> Result<Self, ConfigError> {
        check_duration("backoff min", min)?;
        check_duration("backoff max", max)?;
        if min > max {
            return Err(ConfigError::BackoffMinAboveMax { min, max });
        }
        if !factor.is_finite() || factor < 1.0 {
            return Err(ConfigError::InvalidFactor { factor });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(ConfigError::InvalidJitter { jitter });
        }
        Ok(Backoff {
            min,
            max,
            factor,
            jitter,
            seed: None,
        })
    }

    /// Fixes the jitter's random seed, for reproducible delays.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The delay before the `n`-th restart (from 0) before jitter: `min * factor^n`, at most
    /// `max`.
    pub fn base_delay(&self, n: u32) -> Duration {
        let exp = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = self.min.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.clamp(self.min, self.max))
        }
    }

    fn delay(&self, n: u32, rng: &mut XorShift) -> Duration {
        let base = self.base_delay(n);
        if self.jitter == 0.0 {
            return base;
        }
        // `mul_f64` panics past `Duration::MAX` (which `Duration::MAX * 1.0` reaches through
        // rounding): the checked conversion saturates at `base` instead.
        let secs = base.as_secs_f64() * (1.0 - self.jitter * rng.next_f64());
        Duration::try_from_secs_f64(secs).map_or(base, |d| d.min(base))
    }

    fn rng(&self) -> XorShift {
        let seed = self
            .seed
            .unwrap_or_else(|| RandomState::new().build_hasher().finish());
        XorShift::new(seed)
    }
}

/// xorshift64*: small, fast and good enough to spread restart delays.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // The state must never be zero.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A number in `0.0..1.0`.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The restart intensity limit: at most `max_restarts` restarts within any `window`. One
/// failure more, and the restarter gives up and escalates the failure to its parent as
/// [`ServiceError::GaveUp`] (as an OTP supervisor does).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::service::Intensity;
///
/// let limit = Intensity::new(3, Duration::from_secs(10))?;
/// assert_eq!(limit.max_restarts(), 3);
/// # Ok::<(), taskgroup::service::ConfigError>(())
/// ```
///
/// # Errors
///
/// [`new`](Intensity::new) rejects a zero window. `Duration::MAX` is a window without end
/// (at most `max_restarts` restarts ever), as is any window of thirty years or more (the
/// crate's "no limit" for every duration); a restarter keeps at most `max_restarts`
/// restart times whatever the window, and for a window without end only a count, so its
/// memory is bounded, `Intensity::new(usize::MAX, Duration::MAX)` (restart forever)
/// included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    max_restarts: usize,
    window: Duration,
}

impl Default for Intensity {
    /// 5 restarts within 60 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl Intensity {
    /// At most `max_restarts` restarts within `window` (0 restarts: give up at the first
    /// failure).
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] if `window` is zero.
    pub fn new(max_restarts: usize, window: Duration) -> Result<Self, ConfigError> {
        check_duration("intensity window", window)?;
        Ok(Intensity {
            max_restarts,
            window,
        })
    }

    /// The number of restarts allowed within the window.
    pub fn max_restarts(&self) -> usize {
        self.max_restarts
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[derive(Debug, Clone)]
struct Settings {
    name: String,
    policy: RestartPolicy,
    backoff: Backoff,
    intensity: Intensity,
    status: Option<StatusHub>,
    /// Who reported the service `Idle` to `status` at build.
    owner: Owner,
}

/// Runs a service again when it ends, as its [`RestartPolicy`] says, after an exponential
/// [`Backoff`] delay, within an [`Intensity`] limit.
///
/// Semantics of a run of the restarter:
/// - each attempt calls the service's [`run`](Service::run) again, on the same value, with
///   the restarter's context; a panic is caught and treated as a failure (reported as a
///   panic);
/// - the restarter reports ready when an attempt first reports ready;
/// - a failure (or, for [`Permanent`](RestartPolicy::Permanent), any end) schedules a
///   restart after `backoff` for the number of restarts already inside the intensity window
///   (so the delay grows while failures are frequent and falls back as they age out of the
///   window); if the window already holds `max_restarts` restarts, the restarter gives up and
///   returns [`ServiceError::GaveUp`] naming the service and the count;
/// - when the context is cancelled the restarter stops: during the backoff sleep at once
///   (a restart never delays a stop), during a run once the run returns; no restart follows
///   a cancellation. An error returned after the cancellation (other than
///   [`Cancelled`](super::Cancelled)) is still returned.
/// - with a [`StatusHub`], every transition is reported (see [`ServiceState`]).
///
/// The service sits behind a mutex that is locked only to call `run` (a synchronous call that
/// returns the future), never across an `.await`.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use taskgroup::service::{service_fn, Backoff, Intensity, Ready, Restarter, Service, ServiceError};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), taskgroup::service::BoxError> {
/// let runs = Arc::new(AtomicU32::new(0));
/// let runs2 = runs.clone();
/// let flaky = service_fn("flaky", move |_ctx, _ready| {
///     runs2.fetch_add(1, Ordering::SeqCst);
///     async { Err("boom".into()) }
/// });
/// let mut restarter = Restarter::new(flaky)
///     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1), 2.0, 0.0)?)
///     .intensity(Intensity::new(2, Duration::from_secs(60))?);
/// let err = restarter.run(CancellationToken::new(), Ready::noop()).await.unwrap_err();
/// let err = err.downcast::<ServiceError>()?;
/// assert!(matches!(*err, ServiceError::GaveUp { restarts: 2, .. }));
/// assert_eq!(runs.load(Ordering::SeqCst), 3);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`ServiceError::GaveUp`] at the intensity limit; the service's own error (as
/// [`ServiceError::Failed`]) or panic ([`ServiceError::Panicked`]) when no restart follows.
///
/// # Cancel safety
///
/// Dropping the run future aborts the current attempt, cancelled first (so that a container
/// in it stops rather than report its members' aborts as failures). The status hub says the
/// restarter is `Stopped`: at once if it was waiting to restart, as the abort lands if an
/// attempt was running. An attempt that returned an error or panicked before the abort
/// landed (also one that did just as the future was dropped, on another worker) is
/// reported `Failed` or `Panicked`, with it. A restarter on its own (not a container's
/// member) run again waits for the attempt its dropped run left still ending, up to 10
/// seconds, before its first attempt: a container in that attempt is not found still
/// running.
///
/// An attempt aborted by something else than the restarter (its runtime shutting down, a
/// shutdown of a group around) is reported `Stopped`; the restarter does not restart it
/// and waits to be cancelled or dropped in turn.
pub struct Restarter<S> {
    inner: Arc<Mutex<Box<dyn Service>>>,
    settings: Settings,
    /// How many times the restarter was run: tells its runs apart in the status hub.
    runs: u32,
    /// What the last run left, for the next to wait for (a restarter on its own, as a
    /// root container's next run does; up to the default stop timeout).
    last_run: LastRun,
    _service: PhantomData<fn() -> S>,
}

impl<S> Drop for Restarter<S> {
    /// Restarters around restarters, or around containers, to any depth: dropped by a loop
    /// (`drop_service_later` in the runner), not by recursion.
    fn drop(&mut self) {
        drop_service_later(&mut self.inner);
    }
}

impl<S> fmt::Debug for Restarter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restarter")
            .field("name", &self.settings.name)
            .field("policy", &self.settings.policy)
            .field("backoff", &self.settings.backoff)
            .field("intensity", &self.settings.intensity)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Restarter<S> {
    /// Wraps `service` with the default policy ([`Permanent`](RestartPolicy::Permanent)),
    /// backoff and intensity, and no status reporting.
    pub fn new(service: S) -> Self {
        Restarter {
            settings: Settings {
                name: service.name().to_owned(),
                policy: RestartPolicy::default(),
                backoff: Backoff::default(),
                intensity: Intensity::default(),
                status: None,
                owner: Owner::new(),
            },
            inner: Arc::new(Mutex::new(Box::new(service))),
            runs: 0,
            last_run: LastRun::default(),
            _service: PhantomData,
        }
    }

    /// Sets the restart policy.
    #[must_use]
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Sets the backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Sets the intensity limit.
    #[must_use]
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.settings.intensity = intensity;
        self
    }

    /// Reports every status transition to `hub`, starting with [`ServiceState::Idle`] now
    /// (unless the service's entry already is `Idle`). A restarter that runs below a
    /// container reporting to the same hub reports by its path there (`api/worker`), and
    /// its `Idle` entry under its own name leaves the snapshot then (see [`StatusHub`]).
    #[must_use]
    pub fn status(mut self, hub: StatusHub) -> Self {
        hub.report_built(&self.settings.name, self.settings.owner);
        self.settings.status = Some(hub);
        self
    }
}

impl<S: Service> Service for Restarter<S> {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let inner = self.inner.clone();
        let settings = self.settings.clone();
        self.runs = self.runs.saturating_add(1);
        let run = RunId::new(settings.owner, self.runs);
        // Where the restarter runs: inside a container's member run (whose report of this
        // member it takes over), or on its own.
        let place = Place::restarter(&settings.name);
        let before = self.last_run.replace(&place, DEFAULT_STOP_TIMEOUT);
        Box::pin(async move {
            before.await;
            supervise(inner, settings, run, place, ctx, ready)
                .await
                .map_err(BoxError::from)
        })
    }
}

/// The restart times inside the intensity window, at most `max_restarts` of them: memory
/// bounded by the restart count whatever the window. A window without end (`Duration::MAX`,
/// or thirty years or more) keeps a count instead, as no restart ever leaves it: with `max_restarts` at `usize::MAX`
/// too (restart forever), times would pile up, one per restart.
#[derive(Debug)]
struct Window {
    times: VecDeque<Instant>,
    /// The restarts so far, for a window without end (`times` stays empty).
    ever: usize,
    intensity: Intensity,
}

impl Window {
    fn new(intensity: Intensity) -> Self {
        Window {
            times: VecDeque::new(),
            ever: 0,
            intensity,
        }
    }

    /// Forgets the restarts that left the window as of `now`; how many remain.
    fn count(&mut self, now: Instant) -> usize {
        let window = self.intensity.window;
        if is_unlimited(window) {
            return self.ever;
        }
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.times.pop_front();
        }
        self.times.len()
    }

    fn push(&mut self, now: Instant) {
        if is_unlimited(self.intensity.window) {
            self.ever = self.ever.saturating_add(1);
            return;
        }
        self.times.push_back(now);
        while self.times.len() > self.intensity.max_restarts {
            self.times.pop_front();
        }
    }
}

async fn supervise(
    inner: Arc<Mutex<Box<dyn Service>>>,
    s: Settings,
    run: RunId,
    place: Place,
    ctx: CancellationToken,
    ready: Ready,
) -> Result<(), ServiceError> {
    // Attempts are tasks named for the service in a child group named for a container: the
    // one around the member when the restarter is that member, so that their paths are the
    // member's own; else the member's path, so that they are below it (`top/api/worker`).
    let (container, reporter) = if place.is_member {
        let reporter = Reporter::for_member(
            s.status.as_ref(),
            place.hub.as_ref(),
            &place.path,
            &s.name,
            run,
        );
        (place.container.clone(), reporter)
    } else {
        let reporter = Reporter::new(s.status.as_ref(), place.hub.as_ref(), &place.path, 0, run);
        (place.path.clone(), reporter)
    };
    reporter.withdraw_built(s.status.as_ref(), s.owner, [s.name.as_str()]);
    let path = member_path(&container, &s.name);
    let deadline = place.parent_deadline.clone().unwrap_or_default();
    // This restarter's cell among its member's end reports (a fresh one outside a container).
    let end_report = place.end_report.clone().unwrap_or_default().cell();
    let mut guard = AbortOnDrop::new(place.wg.clone());
    let mut stop_on_drop = StopOnDrop {
        attempt: None,
        attempt_run: None,
        end_report: end_report.clone(),
        between: None,
    };
    let mut rng = s.backoff.rng();
    let mut outer_ready = Some(ready);
    let mut window = Window::new(s.intensity);
    let mut attempt: u32 = 1;
    let result = loop {
        let rep = reporter.with_attempt(attempt);
        let (r, w) = Ready::channel();
        let token = ctx.child_token();
        stop_on_drop.attempt = Some(token.clone());
        let spawned = Spawned::spawn(
            &place.wg,
            &container,
            &s.name,
            // Stop reports name the user's site of a hung attempt: the member's (the
            // restarter is that member, or was added to no container itself), held by the
            // attempt while it runs.
            place.member_site,
            inner.clone(),
            r,
            token,
            rep.inherit(&s.name),
            deadline.clone(),
            place.tree.clone(),
            place.hosted.clone(),
            place.end_report.clone(),
            place.hub_run.clone(),
            {
                let rep = rep.clone();
                let name = s.name.clone();
                move || rep.report(&name, ServiceState::Starting)
            },
        );
        stop_on_drop.attempt_run = Some(spawned.clone());
        *end_report.lock() = Some(AttemptEnd {
            reporter: rep.clone(),
            name: s.name.clone(),
            path: path.clone(),
            end: spawned.end.clone(),
        });
        let mut when = Some(w);
        let mut on_ready = |was_ready: bool| {
            if was_ready {
                rep.report(&s.name, ServiceState::Running);
                if let Some(r) = outer_ready.take() {
                    r.ready();
                }
            }
        };
        {
            let mut done = std::pin::pin!(spawned.done());
            loop {
                tokio::select! {
                    () = &mut done => break,
                    was_ready = when_ready(&mut when) => {
                        when = None;
                        on_ready(was_ready);
                    }
                }
            }
        }
        // A run that reported ready and ended in the same poll: report the readiness first,
        // so the events keep their order.
        if let Some(was_ready) = when.take().and_then(FutureExt::now_or_never) {
            on_ready(was_ready);
        }

        let stopping = ctx.is_cancelled();
        stop_on_drop.attempt_run = None;
        // Not ours to report when the container around aborted the attempt at its deadline:
        // it reported the attempt failed, with the hung leaf (and will abort this task too).
        let ours = end_report.lock().take().is_some();
        let last = match spawned.end() {
            End::Done if !stopping && !spawned.ended_on_its_own() => {
                // Aborted by something else than this restarter (its runtime shutting down,
                // on another worker; a shutdown of a group around): it stopped, and did not
                // exit early. What aborted it reaches this restarter too, which waits for
                // that rather than restart it, or return, which its container would read as
                // an early exit.
                if ours {
                    rep.report(&s.name, ServiceState::Stopped);
                }
                ctx.cancelled().await;
                break Ok(());
            }
            End::Done if stopping || s.policy != RestartPolicy::Permanent => {
                if ours {
                    rep.report(&s.name, ServiceState::Stopped);
                }
                break Ok(());
            }
            End::Done => {
                // A permanent service's early return is a failure to restart, reported as a
                // container reports it, not `Stopped` ("will not be restarted").
                let err = ServiceError::ExitedEarly {
                    name: s.name.clone(),
                };
                if ours {
                    rep.report_failure(&s.name, ServiceState::Failed, || err.reason());
                }
                err
            }
            End::Error(e) => {
                // Formatted only for a hub, inside `catch_unwind`: a `Display` may panic.
                if ours {
                    rep.report_failure(&s.name, ServiceState::Failed, || e.to_string());
                }
                let err = ServiceError::attribute(&s.name, e);
                if stopping || s.policy == RestartPolicy::Temporary {
                    break Err(err);
                }
                err
            }
            End::Panic(message) => {
                if ours {
                    rep.report_failure(&s.name, ServiceState::Panicked, || message.clone());
                }
                let err = ServiceError::Panicked {
                    name: s.name.clone(),
                    message,
                };
                if stopping || s.policy == RestartPolicy::Temporary {
                    break Err(err);
                }
                err
            }
        };

        let now = Instant::now();
        let restarts = window.count(now);
        if restarts >= s.intensity.max_restarts {
            let err = ServiceError::GaveUp {
                name: s.name.clone(),
                restarts,
                window: s.intensity.window,
                last: Box::new(last),
            };
            rep.report_failure(&s.name, ServiceState::Failed, || err.reason());
            crate::trace::gave_up(&s.name, restarts, s.intensity.window);
            break Err(err);
        }
        let n = u32::try_from(restarts).unwrap_or(u32::MAX);
        let delay = s.backoff.delay(n, &mut rng);
        window.push(now);
        attempt = attempt.saturating_add(1);
        reporter
            .with_attempt(attempt)
            .report_delay(&s.name, ServiceState::Restarting, delay);
        crate::trace::restart_scheduled(&s.name, attempt, delay);
        stop_on_drop.between = Some((reporter.with_attempt(attempt - 1), s.name.clone()));
        tokio::select! {
            () = tokio::time::sleep_until(deadline_after(delay)) => {}
            () = ctx.cancelled() => {
                reporter.with_attempt(attempt - 1).report(&s.name, ServiceState::Stopped);
                break Ok(());
            }
        }
        stop_on_drop.between = None;
    };
    stop_on_drop.disarm();
    guard.disarm();
    result
}

/// What `supervise` reports when its future is dropped before it returned (by user code, say
/// a `select!` branch that won, or with the container around it), as `guard` aborts the
/// current attempt: the attempt's token is cancelled first, so that a container in it
/// stops as asked while the aborts land instead of reporting its members' aborts as
/// failures. The restarter is reported `Stopped` at once if it was waiting to restart; a
/// running attempt reports its own end as its abort lands, or as it returns first
/// ([`Spawned::leave`]). Not an attempt whose end report a container around took (it
/// aborted the attempt at its deadline, and reports it).
struct StopOnDrop {
    /// The current attempt's token.
    attempt: Option<CancellationToken>,
    /// The current attempt's run, until its end is taken: if it returned an error or
    /// panicked just before the drop, it is reported so, not `Stopped`.
    attempt_run: Option<Spawned>,
    end_report: Arc<EndCell>,
    /// Waiting to restart: the reporter and name of the attempt that ended.
    between: Option<(Reporter, String)>,
}

impl StopOnDrop {
    fn disarm(&mut self) {
        self.attempt = None;
        self.attempt_run = None;
        self.between = None;
        self.end_report = Arc::default();
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.attempt.take() {
            token.cancel();
        }
        let end = self.end_report.lock().take();
        if let Some(end) = end {
            // An attempt that ended already (it may have returned an error or panicked
            // before the restarter's future was polled again) is reported here; one still
            // running reports its own end as it returns or its abort lands, so that an error
            // it returns on another worker meanwhile is not lost to a `Stopped`.
            let now = match self.attempt_run.take() {
                Some(run) => {
                    let heir = end.clone();
                    run.leave(move |ended| heir.report(ended.failure(&heir.name).as_ref()))
                }
                None => Some(End::Done),
            };
            // Through the attempt's claim: its task, if it has not run yet, then does not
            // report `Starting` after this.
            if let Some(ended) = now {
                end.report(ended.failure(&end.name).as_ref());
            }
        } else if let Some((reporter, name)) = self.between.take() {
            reporter.report(&name, ServiceState::Stopped);
        }
    }
}

/// Builds a supervisor: a [`ServiceGroup`] whose services are each wrapped in a [`Restarter`] with
/// the same policy, backoff, intensity and status hub.
///
/// When one service gives up (its intensity limit is reached), the failure escalates: the
/// group cancels the others and returns [`ServiceError::GaveUp`] for it.
///
/// Services restarted with [`Transient`](RestartPolicy::Transient) or
/// [`Temporary`](RestartPolicy::Temporary) may end with `Ok(())` without stopping the others
/// (they are added as one-shot members); [`Permanent`](RestartPolicy::Permanent) ones are
/// long-running.
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, ServiceState, StatusHub, Supervisor};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = StatusHub::default();
/// let mut group = Supervisor::builder("workers")
///     .status(hub.clone())
///     .service(service_fn("a", |ctx: CancellationToken, ready| async move {
///         ready.ready();
///         ctx.cancelled().await;
///         Ok(())
///     }))
///     .build()
///     .unwrap();
/// assert_eq!(hub.snapshot()["a"].state, ServiceState::Idle);
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// group.serve(ctx).await.unwrap();
/// # }
/// ```
///
/// # Errors
///
/// [`build`](SupervisorBuilder::build) returns the errors of
/// [`ServiceGroupBuilder::build`](super::ServiceGroupBuilder::build). A supervisor without services is
/// valid, like an empty group: it reports ready and returns at once.
#[derive(Debug)]
pub enum Supervisor {}

impl Supervisor {
    /// Starts building a supervisor named `name` (the [`ServiceGroup`] it
    /// builds is named so).
    pub fn builder(name: impl Into<String>) -> SupervisorBuilder {
        SupervisorBuilder::new(name)
    }
}

/// Configures a [`Supervisor`]; from [`Supervisor::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct SupervisorBuilder {
    name: String,
    policy: RestartPolicy,
    backoff: Backoff,
    intensity: Intensity,
    status: Option<StatusHub>,
    stop_timeout: Duration,
    /// Each service, and where it was added (its stop reports name that line).
    services: Vec<(Box<dyn Service>, &'static Location<'static>)>,
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("backoff", &self.backoff)
            .field("intensity", &self.intensity)
            .field("stop_timeout", &self.stop_timeout)
            .field(
                "services",
                &self
                    .services
                    .iter()
                    .map(|(s, _)| s.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SupervisorBuilder {
    /// A supervisor named `name`, with the default restart settings and a 10 second stop
    /// timeout.
    fn new(name: impl Into<String>) -> Self {
        SupervisorBuilder {
            name: name.into(),
            policy: RestartPolicy::default(),
            backoff: Backoff::default(),
            intensity: Intensity::default(),
            status: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            services: Vec::new(),
        }
    }

    /// Adds a service. Its stop reports name this call's line as where it was added, as a
    /// [`ServiceGroupBuilder::service`](super::ServiceGroupBuilder::service)'s do.
    #[track_caller]
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push((Box::new(service), Location::caller()));
        self
    }

    /// Sets the restart policy of every service.
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the backoff of every service.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the intensity limit of every service (each has its own count).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Reports every service's transitions to `hub`.
    pub fn status(mut self, hub: StatusHub) -> Self {
        self.status = Some(hub);
        self
    }

    /// Sets the group's stop timeout.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Checks the settings and builds the supervising group.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateName`], [`ConfigError::InvalidName`] (a service's name empty or holding a `/`),
    /// [`ConfigError::ZeroDuration`].
    pub fn build(self) -> Result<ServiceGroup, ConfigError> {
        // Check names before reporting anything to the hub.
        let mut seen = std::collections::HashSet::new();
        for (s, _) in &self.services {
            check_name(&self.name, s.name())?;
            if !seen.insert(s.name()) {
                return Err(ConfigError::DuplicateName {
                    group: self.name.clone(),
                    name: s.name().to_owned(),
                });
            }
        }
        let mut builder = ServiceGroup::builder(self.name).stop_timeout(self.stop_timeout);
        // The group holds the hub too, so that containers nested in the services report to
        // it; the restarters report their own members and the group does not repeat them.
        if let Some(hub) = &self.status {
            builder = builder.status(hub.clone());
        }
        for (service, site) in self.services {
            let mut r = Restarter::new(service)
                .policy(self.policy)
                .backoff(self.backoff)
                .intensity(self.intensity);
            if let Some(hub) = &self.status {
                r = r.status(hub.clone());
            }
            let kind = if self.policy == RestartPolicy::Permanent {
                Kind::LongRunning
            } else {
                Kind::OneShot
            };
            builder = builder.member_at(r, kind, site);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Restarts recorded by the window tests (fewer under Miri, where each is slow).
    const RESTARTS: u64 = if cfg!(miri) { 200 } else { 10_000 };

    /// A window keeps at most `max_restarts` restart times, however many restarts happen
    /// (before issue 13 one of `Duration::MAX` kept one per restart, forever), and counts
    /// the restarts inside it.
    #[test]
    fn window_memory_is_bounded_by_the_restart_count() {
        let mut window = Window::new(Intensity::new(3, Duration::from_secs(100_000)).unwrap());
        let t0 = Instant::now();
        for i in 0..RESTARTS {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(window.count(now), (i as usize).min(3));
            window.push(now);
            assert!(window.times.len() <= 3);
        }
    }

    /// A window without end keeps no times at all, only a count: restarting forever
    /// (`usize::MAX` restarts) no longer keeps a time per restart. The count still drives the
    /// decision to give up and the backoff. A window of thirty years or more is one without
    /// end, as every other time limit of the crate is: `u64::MAX` seconds, or a century, kept
    /// a time per restart (16 bytes each) while only `Duration::MAX` itself was recognised.
    #[test]
    fn a_window_without_end_keeps_a_count_not_times() {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let windows = [Duration::MAX, Duration::from_secs(u64::MAX), CENTURY];
        for (max, window) in [3, usize::MAX]
            .into_iter()
            .flat_map(|m| windows.map(|w| (m, w)))
        {
            let mut window = Window::new(Intensity::new(max, window).unwrap());
            let t0 = Instant::now();
            for i in 0..RESTARTS {
                let now = t0 + Duration::from_secs(i);
                assert_eq!(window.count(now), i as usize);
                window.push(now);
                assert!(window.times.is_empty());
            }
        }
    }
}
