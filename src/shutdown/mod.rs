//! Shutting down under an orchestrator: [`ShutdownPlan`] runs the phases
//! Kubernetes and systemd expect (stop being [ready](Readiness), a pre-stop
//! delay, then [`WaitGroup::shutdown`](crate::WaitGroup::shutdown)), and
//! reports each [`Phase`] as it begins.
//!
//! The drain itself (the order of the groups, the shared deadline, the forced
//! phase and its shares) is `WaitGroup::shutdown`'s; its docs give the
//! arithmetic of the budget, and [`plan`](ShutdownPlan) maps it to
//! `terminationGracePeriodSeconds` and `TimeoutStopSec=`.

mod plan;

pub use plan::{Phase, Readiness, ShutdownPlan};

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> tokio::time::Instant {
    saturating_add(tokio::time::Instant::now(), timeout)
}

/// `at + d`, or about thirty years from `at` if that overflows (Tokio's own
/// "far future"): `Duration::MAX` means no limit.
pub(crate) fn saturating_add(
    at: tokio::time::Instant,
    d: std::time::Duration,
) -> tokio::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(60 * 60 * 24 * 365 * 30);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}
