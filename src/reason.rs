//! [`CancelReason`]: why a group's context was cancelled.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::error::TaskError;
use crate::shutdown::Signal;

/// Why a group's context was cancelled: read by a task with
/// [`TaskContext::cancel_reason`](crate::TaskContext::cancel_reason), by
/// anyone with [`WaitGroup::cancel_reason`](crate::WaitGroup::cancel_reason).
///
/// Every cancellation the crate makes carries one. A group cancelled because
/// a group above it was cancelled carries that group's reason. The first
/// reason sticks: a group cancelled by its first failure and then shut down
/// still says [`Failure`](Self::Failure). A cancel of the token itself, which
/// the crate does not see (`ctx.cancel()` in a task), reads as
/// [`Token`](Self::Token) only until a cancel the crate makes gives its
/// reason: `context().cancel()` then `cancel()` says
/// [`Requested`](Self::Requested).
///
/// ```
/// use taskgroup::{CancelReason, WaitGroup};
///
/// let wg = WaitGroup::new();
/// let child = wg.child();
/// wg.cancel_with("config reloaded");
/// match child.cancel_reason() {
///     Some(CancelReason::Requested(Some(why))) => assert_eq!(why, "config reloaded"),
///     other => panic!("{other:?}"),
/// }
/// ```
///
/// # Serialization
///
/// With the `serde` feature a reason serializes as an object whose `kind` names the
/// variant, with its details: `message` (a string or `null`) for `requested`, the
/// [`TaskError`] as a report writes it for `failure`, the
/// [`Signal`] for `signal` and `forced` (checked by `tests/serde.rs`):
///
/// ```json
/// [
///   {"kind": "requested", "message": "config reloaded"},
///   {"kind": "requested", "message": null},
///   {"kind": "failure", "error": {"id": 1, "name": "db", "group_id": 1, "group_name": "app",
///                                 "kind": "error", "message": "connection refused",
///                                 "causes": [], "secondary": false}},
///   {"kind": "token"},
///   {"kind": "shutdown"},
///   {"kind": "signal", "signal": "sigterm"},
///   {"kind": "forced", "signal": "sigint"},
///   {"kind": "deadline"}
/// ]
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CancelReason {
    /// [`cancel`](crate::WaitGroup::cancel) (no message) or
    /// [`cancel_with`](crate::WaitGroup::cancel_with) on this group or one
    /// above it.
    Requested(Option<Cow<'static, str>>),
    /// The first failure of a critical task (see
    /// [`cancel_on_error`](crate::WaitGroupBuilder::cancel_on_error)); the
    /// same failure as [`WaitGroup::cancel_cause`](crate::WaitGroup::cancel_cause).
    Failure(Arc<TaskError>),
    /// The caller's token given to
    /// [`WaitGroupBuilder::token`](crate::WaitGroupBuilder::token) (or a
    /// token it derives from) was cancelled; or the context token itself was
    /// cancelled directly (`ctx.cancel()` in a task, or
    /// [`context()`](crate::WaitGroup::context)`.cancel()`), which the crate
    /// does not see: use [`cancel_with`](crate::WaitGroup::cancel_with) to
    /// give a reason.
    Token,
    /// A [`shutdown`](crate::WaitGroup::shutdown) reached the group.
    Shutdown,
    /// A shutdown started by this signal reached the group (see
    /// [`ShutdownPlan::run_on_signal`](crate::shutdown::ShutdownPlan::run_on_signal)).
    Signal(Signal),
    /// A second signal forced the shutdown: everything was aborted at once.
    Forced(Signal),
    /// The group's deadline, or that of a group above it, passed (see
    /// [`WaitGroupBuilder::deadline`](crate::WaitGroupBuilder::deadline)).
    Deadline,
}

/// Equal reasons are of the same kind with equal details; two failures are
/// equal if they are the same failure (one recorded failure, shared), not two
/// failures with equal text. So that a test can write
/// `assert_eq!(ctx.cancel_reason(), Some(CancelReason::Shutdown))`.
impl PartialEq for CancelReason {
    fn eq(&self, other: &Self) -> bool {
        type R = CancelReason;
        match (self, other) {
            (R::Requested(a), R::Requested(b)) => a == b,
            (R::Failure(a), R::Failure(b)) => Arc::ptr_eq(a, b),
            (R::Token, R::Token) | (R::Shutdown, R::Shutdown) | (R::Deadline, R::Deadline) => true,
            (R::Signal(a), R::Signal(b)) | (R::Forced(a), R::Forced(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for CancelReason {}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Requested(None) => f.write_str("cancelled"),
            CancelReason::Requested(Some(why)) => write!(f, "cancelled: {why}"),
            CancelReason::Failure(error) => write!(f, "cancelled by a failure: {error}"),
            CancelReason::Token => f.write_str("cancelled by the caller's token"),
            CancelReason::Shutdown => f.write_str("shutting down"),
            CancelReason::Signal(signal) => write!(f, "shutting down on {signal}"),
            CancelReason::Forced(signal) => {
                write!(f, "forced to stop by a second signal ({signal})")
            }
            CancelReason::Deadline => f.write_str("deadline exceeded"),
        }
    }
}
