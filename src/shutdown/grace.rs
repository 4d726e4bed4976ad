//! [`Grace`]: how long a shutdown lets work finish, in two phases.

use std::time::Duration;

/// How long a [`shutdown`](crate::WaitGroup::shutdown) lets work finish
/// before aborting it: a drain phase, then a cancel phase.
///
/// * **Drain**: each group, in its turn, is closed and its tasks'
///   [`draining`](crate::TaskContext::draining) signal fires: finish what you
///   are doing and take no more. A group that becomes idle ends its turn early.
///   A task that waits only for `ctx.cancelled()`, as a pool's or a
///   flusher's linked after the server may, keeps its group busy until the
///   drain phase ends, even once the work before it is done: one that should
///   stop as soon as its turn comes selects on `draining` too (under
///   `Grace::drain(Duration::MAX)` it is otherwise never cancelled).
/// * **Cancel**: the group's context is cancelled: stop now.
/// * Then what still runs is aborted (within the group's
///   [`abort_timeout`](crate::WaitGroupBuilder::abort_timeout)).
///
/// Both phases are shared in link order under one deadline: a group
/// reached after the drain phase ended is drained and cancelled at once. A
/// plain `Duration` is a grace with no drain phase (drained and cancelled
/// together), so `wg.shutdown(Duration::from_secs(10))` cancels at once and
/// waits up to ten seconds. Durations saturate:
/// `Duration::MAX` means no limit.
///
/// | | Kubernetes | systemd |
/// |---|---|---|
/// | drain | after the pre-stop delay, within `terminationGracePeriodSeconds` | after `STOPPING=1`, within `TimeoutStopSec=` |
/// | cancel | the same period's last part | the same |
/// | abort | before SIGKILL | before SIGKILL (`FinalKillSignal=`) |
///
/// ```
/// use std::time::Duration;
/// use taskgroup::shutdown::Grace;
///
/// let grace = Grace::drain(Duration::from_secs(20)).then_cancel(Duration::from_secs(5));
/// assert_eq!(grace.total(), Duration::from_secs(25));
/// let plain: Grace = Duration::from_secs(10).into();
/// assert_eq!(plain.drain_phase(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grace {
    drain: Duration,
    cancel: Duration,
}

impl Grace {
    /// A drain phase of `drain`, with no cancel phase yet (add one with
    /// [`then_cancel`](Self::then_cancel)): a task still running when the
    /// drain phase ends is cancelled and aborted right after. The shutdown
    /// yields between the two (while the work left keeps falling, within
    /// three quarters of the group's share of the abort timeout), so on a
    /// current-thread runtime a task that returns as soon as it is
    /// cancelled, awaiting nothing more, finishes first (unless a task keeps
    /// starting work, which those yields run too); on a
    /// multi-thread runtime it may well be aborted first (and reported
    /// aborted), as it runs on another worker. To let tasks stop on the
    /// cancel, give the cancel phase some time (even a few milliseconds).
    #[must_use]
    pub fn drain(drain: Duration) -> Self {
        Grace {
            drain,
            cancel: Duration::ZERO,
        }
    }

    /// After the drain phase, a cancel phase of `cancel`.
    #[must_use = "`Grace` is `Copy`: this returns a new grace, the one it is called on is unchanged"]
    pub fn then_cancel(mut self, cancel: Duration) -> Self {
        self.cancel = cancel;
        self
    }

    /// The drain phase.
    pub fn drain_phase(&self) -> Duration {
        self.drain
    }

    /// The cancel phase.
    pub fn cancel_phase(&self) -> Duration {
        self.cancel
    }

    /// Both phases (saturating: `Duration::MAX` if either is).
    pub fn total(&self) -> Duration {
        self.drain.saturating_add(self.cancel)
    }
}

impl From<Duration> for Grace {
    /// A grace with no drain phase: drained and cancelled at once.
    fn from(cancel: Duration) -> Self {
        Grace {
            drain: Duration::ZERO,
            cancel,
        }
    }
}
