//! Shutting down under an orchestrator: [`ShutdownPlan`] runs the phases
//! Kubernetes and systemd expect (stop being [ready](Readiness), a pre-stop
//! delay, then [`WaitGroup::shutdown`](crate::WaitGroup::shutdown)), and
//! reports each [`Phase`] as it begins; [`shutdown_signal`] waits for the
//! SIGINT or SIGTERM that starts it.
//!
//! The drain itself (the order of the groups, the shared deadline, the forced
//! phase and its shares) is `WaitGroup::shutdown`'s; its docs give the
//! arithmetic of the budget, and the budget below maps it to
//! `terminationGracePeriodSeconds` and `TimeoutStopSec=`.
//!
//! # Kubernetes and systemd
//!
//! When Kubernetes deletes a pod, it removes the pod from the Service's
//! endpoints and sends SIGTERM at about the same time; load balancers may keep
//! sending new requests for a few seconds. The pod then has
//! `terminationGracePeriodSeconds` (30 s by default) before SIGKILL. A server
//! should therefore:
//!
//! | phase | [`ShutdownPlan`] | Kubernetes | systemd |
//! |---|---|---|---|
//! | 1. stop being ready | [`Readiness::set_not_ready`]: the readiness probe answers 503 | readinessProbe fails | `STOPPING=1` |
//! | 2. keep serving briefly | [`pre_stop_delay`](ShutdownPlan::pre_stop_delay) | endpoints propagate | — |
//! | 3. stop accepting, finish in-flight work (`Connection: close`, GOAWAY) | the drain phase of the [`Grace`] | within the grace period | `TimeoutStopSec=`, extended while the drain makes progress |
//! | 4. stop now (tasks' contexts cancelled) | the cancel phase of the [`Grace`] | within the grace period | `TimeoutStopSec=` |
//! | 5. abort stragglers (a [shielded](crate::TaskContext::shielded) flush within its budget) | the abort timeout | before SIGKILL | before SIGKILL |
//! | 6. close resources in order | linked groups, in link order, each with a share of the forced phase if earlier ones overran | | |
//!
//! # Budget
//!
//! [`ShutdownPlan::budget`] is `pre_stop_delay + grace + abort_timeout`
//! (the grace being the drain phase plus the cancel phase)
//! (saturating: `Duration::MAX` anywhere means no limit), where the abort
//! timeout is that of the group the plan runs on. Within it:
//!
//! * the pre-stop delay runs first, with everything still serving;
//! * the grace period is shared in order: the first group may use all of it,
//!   and each linked group gets what the ones before it left;
//! * the forced phase (the abort timeout) is shared equally by the groups
//!   that need it, at the moment each needs it: a group that overran the
//!   deadline gets `remaining / groups_left` for its aborts to take effect,
//!   and a group reached after the deadline gets the same share, three
//!   quarters of it to close by itself and the rest for its aborts (see
//!   [`WaitGroup::shutdown`](crate::WaitGroup::shutdown)).
//!
//! For Kubernetes, choose the budget below `terminationGracePeriodSeconds`
//! with a margin for process exit: with the default 30 s, for example
//! `pre_stop_delay(5 s)`, `grace` 20 s and `abort_timeout(3 s)` (a 28 s
//! budget). A database pool linked after a server whose connections overran
//! then still gets at least `3 s / 2` to close cleanly before it is aborted
//! (the server's aborts usually take effect at once, and leave it more). For
//! systemd, the same against `TimeoutStopSec=`. Report `READY=1` once
//! the server is listening and [`Readiness::set_ready`] is called, and
//! `STOPPING=1` from [`Phase::NotReady`]; with the `systemd` feature,
//! `ShutdownPlan::systemd` does this and extends `TimeoutStopSec=` while the
//! drain makes progress (`examples/sd_notify.rs`).
//!
//! A second SIGINT or SIGTERM during the plan should stop the process now:
//! [`ShutdownPlan::run_on_signal`] waits for the first (or for the group's
//! cancel: a failure under `cancel_on_error`, the program's own
//! `cancel()`), runs the plan, and on the second signal aborts everything
//! left and returns [`SignalError::Forced`] (exit with its
//! [`exit_code`](SignalError::exit_code): 130 or 143).

mod grace;
mod plan;
mod signal;
pub(crate) mod signals;

pub use grace::Grace;
pub use plan::{Phase, Readiness, ShutdownPlan, SignalError};
pub use signal::{shutdown_signal, Signal};

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> tokio::time::Instant {
    saturating_add(tokio::time::Instant::now(), timeout)
}

/// About thirty years (Tokio's own "far future"): a time limit this long or
/// longer is no limit.
pub(crate) const FAR: std::time::Duration = std::time::Duration::from_secs(60 * 60 * 24 * 365 * 30);

/// `at + d`, with `d` capped at about thirty years (Tokio's own "far
/// future"), so that `Duration::MAX` means no limit. (Thirty years after an
/// `Instant` of a running process does not overflow on the platforms Tokio
/// supports; were it to, this would return `at`.)
pub(crate) fn saturating_add(
    at: tokio::time::Instant,
    d: std::time::Duration,
) -> tokio::time::Instant {
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// Whether `d`, as a time limit, is none (`Duration::MAX`, or anything as far
/// as [`saturating_add`] goes).
pub(crate) fn is_unlimited(d: std::time::Duration) -> bool {
    d >= FAR
}
