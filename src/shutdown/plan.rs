//! [`ShutdownPlan`] and [`Readiness`]; the module docs of `taskgroup::shutdown`
//! explain the phases and the budget.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::signals::Signals;
use super::{Grace, Signal};
use crate::reason::CancelReason;
use crate::report::ShutdownReport;
use crate::wait_group::WaitGroup;

/// Whether a server should receive traffic: what its readiness probe reports.
///
/// Starts not ready; the server calls [`set_ready`](Self::set_ready) once it
/// listens, and a [`ShutdownPlan`] calls [`set_not_ready`](Self::set_not_ready)
/// as its first phase. Cheap to clone (clones share the flag) and to read
/// from a health endpoint: one atomic load.
///
/// ```
/// use taskgroup::shutdown::Readiness;
///
/// let ready = Readiness::new();
/// assert!(!ready.is_ready());
/// ready.set_ready();
/// let probe = ready.clone();
/// assert_eq!(if probe.is_ready() { 200 } else { 503 }, 200);
/// ```
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
}

impl Readiness {
    /// A flag that is not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the server ready to receive traffic.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the server as no longer ready: probes fail from now on.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the server is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// A step of a [`ShutdownPlan`], passed to its
/// [`on_phase`](ShutdownPlan::on_phase) callback as it begins.
#[derive(Debug)]
#[non_exhaustive]
pub enum Phase<'a> {
    /// Readiness was set to not ready: probes fail from now on.
    NotReady,
    /// Waiting this long before closing, so that load balancers notice.
    PreStop {
        /// The delay.
        delay: Duration,
    },
    /// The group is closing and draining (then cancelling and aborting what
    /// is left), its linked groups after it in order, under one deadline
    /// this far away.
    Draining {
        /// The whole grace period: the drain phase and the cancel phase.
        grace: Duration,
        /// The drain phase, at its start (zero: drained and cancelled at
        /// once).
        drain: Duration,
    },
    /// A second signal arrived during the drain: everything left is being
    /// aborted now (see [`ShutdownPlan::run_on_signal`]).
    Forced {
        /// The signal that forced it.
        signal: Signal,
    },
    /// Done; what happened.
    Done {
        /// The shutdown's report.
        report: &'a ShutdownReport,
    },
}

type PhaseHook = Arc<dyn Fn(&Phase<'_>) + Send + Sync>;

/// The phases of an orchestrated shutdown: stop being ready, wait a pre-stop
/// delay, then [`WaitGroup::shutdown`] with a grace period. Every duration
/// may be `Duration::MAX`, meaning no limit; see the [module docs](crate::shutdown) for
/// how the budget is shared.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::shutdown::{Phase, Readiness, ShutdownPlan};
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let server = WaitGroup::builder().name("server").build();
/// let ready = Readiness::new();
/// ready.set_ready();
///
/// let plan = ShutdownPlan::new(Duration::from_secs(20))
///     .pre_stop_delay(Duration::from_secs(5))
///     .readiness(ready.clone())
///     .on_phase(|phase| match phase {
///         Phase::Done { report } => println!("{report}"),
///         phase => println!("shutdown: {phase:?}"),
///     });
/// let report = plan.run(&server).await;
/// assert!(!ready.is_ready());
/// assert!(report.is_clean());
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a ShutdownPlan does nothing until run() is called"]
pub struct ShutdownPlan {
    grace: Grace,
    pre_stop_delay: Duration,
    readiness: Option<Readiness>,
    on_phase: Option<PhaseHook>,
    #[cfg(all(unix, feature = "systemd"))]
    systemd: Option<crate::systemd::Notifier>,
}

impl ShutdownPlan {
    /// A plan that drains for at most `grace` (a `Duration`, or a
    /// [`Grace`] with a drain phase), with no pre-stop delay.
    pub fn new(grace: impl Into<Grace>) -> Self {
        let grace = grace.into();
        Self {
            grace,
            pre_stop_delay: Duration::ZERO,
            readiness: None,
            on_phase: None,
            #[cfg(all(unix, feature = "systemd"))]
            systemd: None,
        }
    }

    /// Tells systemd about the plan: `STOPPING=1` as readiness fails, a
    /// `STATUS=` line as each phase begins, and, during the drain, more time
    /// (`EXTEND_TIMEOUT_USEC=`) each second the number of pending guards and
    /// tasks fell (see [`extend_while_draining`](crate::systemd::extend_while_draining)).
    /// Feature `systemd`, Unix only.
    #[cfg(all(unix, feature = "systemd"))]
    #[cfg_attr(docsrs, doc(cfg(all(unix, feature = "systemd"))))]
    pub fn systemd(mut self, notifier: crate::systemd::Notifier) -> Self {
        self.systemd = Some(notifier);
        self
    }

    /// Keep serving this long after readiness fails and before closing, so
    /// that load balancers stop sending traffic first. Default zero.
    pub fn pre_stop_delay(mut self, delay: Duration) -> Self {
        self.pre_stop_delay = delay;
        self
    }

    /// The readiness flag to clear as the first phase.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Called as each [`Phase`] begins, for logging or notifications.
    ///
    /// # Panics
    ///
    /// The hook is called on the stop's own task: a panic in it unwinds out
    /// of [`run`](Self::run) or [`run_on_signal`](Self::run_on_signal) and
    /// stops the plan where it is (a panic as [`Phase::Draining`] begins
    /// leaves the group not yet shut down). Keep it to logging.
    pub fn on_phase(mut self, hook: impl Fn(&Phase<'_>) + Send + Sync + 'static) -> Self {
        self.on_phase = Some(Arc::new(hook));
        self
    }

    /// The longest the plan can take: pre-stop delay, grace, and the group's
    /// abort timeout (plus the time to cancel and abort), saturating at
    /// `Duration::MAX` (no limit).
    pub fn budget(&self, group: &WaitGroup) -> Duration {
        self.pre_stop_delay
            .saturating_add(self.grace.total())
            .saturating_add(group.node().config.abort_timeout)
    }

    fn phase(&self, phase: Phase<'_>) {
        #[cfg(all(unix, feature = "systemd"))]
        if let Some(notifier) = &self.systemd {
            // Failing sends are not fatal: the stop goes on regardless.
            let _ = notifier.notify(&match &phase {
                Phase::NotReady => "STOPPING=1\nSTATUS=stopping: not ready".to_owned(),
                // `Duration::MAX` is no limit: not 18446744073709551615.999999999s.
                Phase::PreStop { delay } if super::is_unlimited(*delay) => {
                    "STATUS=stopping: pre-stop delay without a time limit".to_owned()
                }
                Phase::PreStop { delay } => format!("STATUS=stopping: pre-stop delay {delay:?}"),
                Phase::Draining { grace, .. } if super::is_unlimited(*grace) => {
                    "STATUS=stopping: draining without a time limit".to_owned()
                }
                Phase::Draining { grace, .. } => {
                    format!("STATUS=stopping: draining for up to {grace:?}")
                }
                Phase::Forced { signal } => format!("STATUS=stopping: forced by {signal}"),
                Phase::Done { report } => format!(
                    "STATUS=stopped: {} finished, {} aborted, {} still pending",
                    report.finished(),
                    report.aborted().len(),
                    report.pending().len()
                ),
            });
        }
        if let Some(hook) = &self.on_phase {
            hook(&phase);
        }
    }

    /// Runs the phases on `group` (and, through it, its linked groups).
    /// Called from one of the group's own tasks, it spares the caller, as
    /// [`WaitGroup::shutdown`] does.
    ///
    /// # Panics
    ///
    /// As [`WaitGroup::shutdown`]: without Tokio's time driver.
    ///
    /// # Cancel safety
    ///
    /// As [`WaitGroup::shutdown`]: dropping the future stops where it is.
    pub async fn run(&self, group: &WaitGroup) -> ShutdownReport {
        self.run_because(group, CancelReason::Shutdown).await
    }

    /// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere), or for `group` to be
    /// cancelled as a whole (a task's failure under
    /// [`cancel_on_error`](crate::WaitGroupBuilder::cancel_on_error), a
    /// [`cancel`](WaitGroup::cancel) from an admin endpoint, the group's
    /// [deadline](crate::WaitGroupBuilder::deadline) or the caller's
    /// [token](crate::WaitGroupBuilder::token): the program asking itself to
    /// stop), then runs the plan on `group`. Not a task's `ctx.cancel()`,
    /// which cancels its sibling tasks only, nor a
    /// [`shutdown`](WaitGroup::shutdown) of the group called elsewhere (its
    /// caller has its stop; an endpoint that should stop the program calls
    /// `cancel()`). A `cancel()` meant to restart the group's work
    /// ([`reopen`](WaitGroup::reopen)) therefore stops the program while
    /// this waits. A stop its cancel began still waits the plan's pre-stop
    /// delay, and takes the first signal that comes during it as the first:
    /// the stop goes on gracefully. A second signal during the plan forces:
    /// everything left in the tree is cancelled and aborted at once, a task in a
    /// [shielded](crate::TaskContext::shielded) section too (waiting for the
    /// aborts at most the group's abort timeout), and the report of the whole stop
    /// comes back in [`SignalError::Forced`]: what finished since the
    /// graceful stop began (after the pre-stop delay), what it aborted
    /// before the second signal and the forced stop after it, and what is
    /// left. The graceful stop is given 100 ms after the forced one ends
    /// (within the abort timeout) to end and make its report; if it has
    /// not (it waits for a guard, which no abort ends, or for an abort that
    /// did not take effect), it is given up on, and what it did so far is
    /// reported all the same (a task whose abort it was still waiting for
    /// is listed as aborted if that abort took effect by then). If the
    /// second signal came before it began (during the pre-stop delay), the
    /// report is the forced stop's alone. Tasks read the signal in their
    /// [`cancel_reason`](crate::TaskContext::cancel_reason). The handlers are
    /// installed when the future is first polled, and shared with
    /// [`SignalService`](crate::service::SignalService)'s counting: two
    /// signals are two once each was delivered (two presses of Ctrl-C, a
    /// supervisor's signals seconds apart). The system merges a second
    /// signal of the same kind sent while the first is still pending, as two
    /// `kill -INT` a few microseconds apart often are: that stop is a
    /// graceful one.
    ///
    /// A program exits with [`SignalError::exit_code`] after a forced stop
    /// (130 after a second SIGINT, 143 after a second SIGTERM, as shells
    /// report a process killed by that signal), or returns the error from
    /// `main` (exit code 1).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use taskgroup::shutdown::{Grace, ShutdownPlan, SignalError};
    /// use taskgroup::WaitGroup;
    ///
    /// #[tokio::main]
    /// async fn main() {
    ///     let server = WaitGroup::builder().name("server").build();
    ///     // ... start the work ...
    ///     let plan = ShutdownPlan::new(Grace::drain(Duration::from_secs(20)).then_cancel(Duration::from_secs(5)));
    ///     match plan.run_on_signal(&server).await {
    ///         Ok(report) => println!("{report}"),
    ///         Err(err) => {
    ///             eprintln!("{err}");
    ///             std::process::exit(err.exit_code());
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SignalError::Listen`] if the handlers cannot be installed (before
    /// anything is stopped); [`SignalError::Forced`] on a second signal.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with I/O and time enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the stop begins stops listening; after
    /// it, as [`run`](Self::run). So racing it against the group's
    /// cancellation is not needed, and loses the force: the race's other
    /// branch, winning at the first signal's cancel, would drop the plan.
    /// Either way, a later SIGINT or SIGTERM is
    /// then ignored, not fatal, for the rest of the process (see
    /// [`SignalService`](crate::service::SignalService)'s handlers): a
    /// program that goes on to stop by other means exits by itself.
    pub async fn run_on_signal(&self, group: &WaitGroup) -> Result<ShutdownReport, SignalError> {
        let mut signals = Signals::new().map_err(SignalError::Listen)?;
        // The group's scope, not its context: a task's `ctx.cancel()`
        // cancels its siblings, not the program.
        let cancelled = group.node().scope_token();
        let reason = tokio::select! {
            // A signal first if both are there: the stop then says which.
            biased;
            got = signals.recv() => {
                got.map_err(SignalError::Listen)?;
                let first = signals.received()[0];
                crate::trace::signal(first, 1);
                CancelReason::Signal(first)
            }
            // Cancelled by the program itself (a failure under
            // `cancel_on_error`, a `cancel()`, the group's deadline or the
            // caller's token): the stop it asks for. Its reason stays the
            // group's; the linked groups read `Shutdown`.
            () = cancelled.cancelled() => CancelReason::Shutdown,
        };
        // Not ready at once, also when a second signal came with the first and the stop is
        // forced before the graceful one is polled (it then skipped readiness and
        // `STOPPING=1`).
        self.stop_being_ready();
        // Set once the graceful stop began (after the pre-stop delay): from then on it is
        // part of what a forced stop reports.
        let began = AtomicBool::new(false);
        // What the graceful stop did, should a forced stop give up on it.
        let progress = crate::drain::Progress::default();
        let by_signal = matches!(reason, CancelReason::Signal(_));
        let plan = self.graceful(group, reason, &began, Some(&progress));
        tokio::pin!(plan);
        let mut listening = true;
        // Two signals may already have arrived by the first wake-up. A stop
        // the group's cancel began counts its first signal as the first: it
        // does not force.
        while signals.received().len() < 2 {
            tokio::select! {
                report = &mut plan => {
                    self.phase(Phase::Done { report: &report });
                    return Ok(report);
                }
                more = signals.recv(), if listening => {
                    // The handler's socket failed: no second signal can
                    // be seen; finish gracefully.
                    listening = more.is_ok();
                    if listening && !by_signal {
                        if let [first] = signals.received() {
                            crate::trace::signal(*first, 1);
                        }
                    }
                }
            }
        }
        let signal = signals.received()[1];
        crate::trace::signal(signal, 2);
        self.phase(Phase::Forced { signal });
        let report = if began.load(Ordering::Relaxed) {
            // The graceful stop goes on beside the forced one, and the reports are merged
            // (see `force_over`).
            crate::drain::force_over(
                group,
                CancelReason::Forced(signal),
                &progress,
                plan.as_mut(),
                GRACEFUL_SETTLE,
            )
            .await
        } else {
            crate::drain::force(group, CancelReason::Forced(signal)).await
        };
        self.phase(Phase::Done { report: &report });
        Err(SignalError::Forced {
            signals: signals.received().to_vec(),
            report: Box::new(report),
        })
    }

    async fn run_because(&self, group: &WaitGroup, reason: CancelReason) -> ShutdownReport {
        self.stop_being_ready();
        let report = self
            .graceful(group, reason, &AtomicBool::new(false), None)
            .await;
        self.phase(Phase::Done { report: &report });
        report
    }

    /// The first phase: readiness fails, systemd is told `STOPPING=1`.
    fn stop_being_ready(&self) {
        if let Some(readiness) = &self.readiness {
            readiness.set_not_ready();
        }
        self.phase(Phase::NotReady);
    }

    /// The phases after [`stop_being_ready`](Self::stop_being_ready), but the last
    /// ([`Phase::Done`]): the pre-stop delay, then the graceful stop, setting `began` as it
    /// begins and writing what it does to `progress`, if given.
    async fn graceful(
        &self,
        group: &WaitGroup,
        reason: CancelReason,
        began: &AtomicBool,
        progress: Option<&crate::drain::Progress>,
    ) -> ShutdownReport {
        if !self.pre_stop_delay.is_zero() {
            self.phase(Phase::PreStop {
                delay: self.pre_stop_delay,
            });
            tokio::time::sleep(self.pre_stop_delay).await;
        }
        self.phase(Phase::Draining {
            grace: self.grace.total(),
            drain: self.grace.drain_phase(),
        });
        began.store(true, Ordering::Relaxed);
        let shutdown = group.shutdown_because(self.grace, reason, progress);
        #[cfg(all(unix, feature = "systemd"))]
        if let Some(notifier) = &self.systemd {
            return crate::systemd::extend_while_draining(
                notifier,
                group,
                Duration::from_secs(1),
                shutdown,
            )
            .await;
        }
        shutdown.await
    }
}

/// How long a graceful stop is given to end after the forced stop beside it
/// ended (see [`ShutdownPlan::run_on_signal`]): once everything is aborted,
/// its turns end at once and its report takes a few milliseconds.
const GRACEFUL_SETTLE: Duration = Duration::from_millis(100);

impl fmt::Debug for ShutdownPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownPlan")
            .field("grace", &self.grace)
            .field("pre_stop_delay", &self.pre_stop_delay)
            .field("readiness", &self.readiness)
            .field("on_phase", &self.on_phase.is_some())
            .finish()
    }
}

/// Why [`ShutdownPlan::run_on_signal`] did not end with a graceful report.
///
/// `Debug` writes the same text as `Display` (with the report's lines), so
/// that a `main` returning this error prints it readably; the source of
/// [`Forced`](Self::Forced) is that of its report's errors, as for
/// [`ShutdownError`](crate::ShutdownError), and that of
/// [`Listen`](Self::Listen) the I/O error's own source (its text already
/// says the I/O error).
#[non_exhaustive]
pub enum SignalError {
    /// The signal handlers could not be installed; nothing was stopped.
    Listen(std::io::Error),
    /// A second signal arrived during the plan: everything left was aborted.
    Forced {
        /// Every signal received, in order (the second forced: it is the
        /// one the text, [`exit_code`](SignalError::exit_code), the phase and
        /// the tasks' reason name, also when more came with it). Two
        /// different signals that arrive within one wake-up of the runtime
        /// may be listed in either order, whichever was sent first.
        signals: Vec<Signal>,
        /// The whole stop's report: what finished since the graceful stop
        /// began, what it and then the forced stop aborted, and what was
        /// left pending (the forced stop's alone if the second signal came
        /// during the pre-stop delay: see [`ShutdownPlan::run_on_signal`]).
        report: Box<ShutdownReport>,
    },
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::Listen(err) => write!(f, "could not listen for shutdown signals: {err}"),
            SignalError::Forced { signals, report } => {
                f.write_str("shutdown forced by a second signal (")?;
                if let Some(signal) = forcing(signals) {
                    write!(f, "{signal}")?;
                }
                write!(f, "); {report}")
            }
        }
    }
}

impl fmt::Debug for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for SignalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // `Display` wrote the error: what it did not write, as for the others.
            SignalError::Listen(err) => err.source(),
            SignalError::Forced { report, .. } => report.errors.source(),
        }
    }
}

/// The signal that forced a stop: the second received, as the plan's
/// [`Phase::Forced`] and the tasks' [`CancelReason::Forced`] name it. Not the
/// last: more may have come in the same wake-up (SIGTERM, then SIGINT and
/// SIGTERM together, is `[SIGTERM, SIGINT, SIGTERM]`, forced by SIGINT). With
/// fewer than two (an error made by hand), the last one.
fn forcing(signals: &[Signal]) -> Option<Signal> {
    signals.get(1).or(signals.last()).copied()
}

impl SignalError {
    /// The exit code for a process that stops on this error: after a forced
    /// stop, 128 plus the forcing signal's number (130 for SIGINT, 143 for
    /// SIGTERM), as shells report a process killed by it; otherwise 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            SignalError::Forced { signals, .. } => match forcing(signals) {
                Some(Signal::Interrupt) => 130,
                Some(Signal::Terminate) => 143,
                None => 1,
            },
            SignalError::Listen(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::SignalError;
    use crate::shutdown::Signal;
    use crate::WaitGroup;

    #[derive(Debug, thiserror::Error)]
    #[error("flush failed")]
    struct FlushFailed(#[source] std::io::Error);

    /// A `main` returning the error prints its `Debug`: the report's lines,
    /// not a dump of its fields; and the failure is its source, as for
    /// `ShutdownError`.
    #[tokio::test]
    async fn a_forced_stop_prints_its_report_and_has_its_failure_as_source() {
        let wg = WaitGroup::builder().name("server").build();
        wg.task()
            .name("flusher")
            .go(|_ctx| async { Err::<(), _>(FlushFailed(std::io::Error::other("disk full"))) });
        wg.task()
            .name("stuck")
            .go(|_ctx| std::future::pending::<()>());
        tokio::task::yield_now().await;
        let report = wg.shutdown(Duration::ZERO).await;
        let err = SignalError::Forced {
            signals: vec![Signal::Terminate, Signal::Interrupt],
            report: Box::new(report),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("shutdown forced by a second signal (SIGINT); "),
            "{text}"
        );
        assert!(text.contains("task \"stuck\""), "{text}");
        assert_eq!(format!("{err:?}"), text);
        let source = err.source().expect("the failure's cause");
        assert_eq!(source.to_string(), "disk full");
        let listen = SignalError::Listen(std::io::Error::other("no signalfd"));
        assert_eq!(
            format!("{listen:?}"),
            "could not listen for shutdown signals: no signalfd"
        );
        // Its text says the error; a source would say it again.
        assert!(listen.source().is_none());
    }

    /// SIGTERM, then SIGINT and SIGTERM in one wake-up: the plan is forced by
    /// the second signal (`Phase::Forced`, the tasks' reason), SIGINT; the
    /// error's text and exit code named the last, SIGTERM (`probe-ctx sig3
    /// -INT -TERM`).
    #[tokio::test]
    async fn the_error_names_the_forcing_signal_not_the_last() {
        let wg = WaitGroup::new();
        let report = wg.shutdown(Duration::ZERO).await;
        let err = SignalError::Forced {
            signals: vec![Signal::Terminate, Signal::Interrupt, Signal::Terminate],
            report: Box::new(report),
        };
        assert_eq!(err.exit_code(), 130);
        let text = err.to_string();
        assert!(
            text.starts_with("shutdown forced by a second signal (SIGINT); "),
            "{text}"
        );
    }
}
