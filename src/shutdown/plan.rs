//! [`ShutdownPlan`] and [`Readiness`]; the module docs of `taskgroup::shutdown`
//! explain the phases and the budget.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// The group is closing and draining (then aborting what is left), its
    /// linked groups after it in order, under one deadline this far away.
    Draining {
        /// The grace period.
        grace: Duration,
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
    grace: Duration,
    pre_stop_delay: Duration,
    readiness: Option<Readiness>,
    on_phase: Option<PhaseHook>,
}

impl ShutdownPlan {
    /// A plan that drains for at most `grace`, with no pre-stop delay.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            pre_stop_delay: Duration::ZERO,
            readiness: None,
            on_phase: None,
        }
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
    pub fn on_phase(mut self, hook: impl Fn(&Phase<'_>) + Send + Sync + 'static) -> Self {
        self.on_phase = Some(Arc::new(hook));
        self
    }

    /// The longest the plan can take: pre-stop delay, grace, and the group's
    /// abort timeout (plus the time to cancel and abort), saturating at
    /// `Duration::MAX` (no limit).
    pub fn budget(&self, group: &WaitGroup) -> Duration {
        self.pre_stop_delay
            .saturating_add(self.grace)
            .saturating_add(group.node().config.abort_timeout)
    }

    fn phase(&self, phase: Phase<'_>) {
        if let Some(hook) = &self.on_phase {
            hook(&phase);
        }
    }

    /// Runs the phases on `group` (and, through it, its linked groups).
    /// Called from one of the group's own tasks, it spares the caller, as
    /// [`WaitGroup::shutdown`] does.
    ///
    /// # Cancel safety
    ///
    /// As [`WaitGroup::shutdown`]: dropping the future stops where it is.
    pub async fn run(&self, group: &WaitGroup) -> ShutdownReport {
        if let Some(readiness) = &self.readiness {
            readiness.set_not_ready();
        }
        self.phase(Phase::NotReady);
        if !self.pre_stop_delay.is_zero() {
            self.phase(Phase::PreStop {
                delay: self.pre_stop_delay,
            });
            tokio::time::sleep(self.pre_stop_delay).await;
        }
        self.phase(Phase::Draining { grace: self.grace });
        let report = group.shutdown(self.grace).await;
        self.phase(Phase::Done { report: &report });
        report
    }
}

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
