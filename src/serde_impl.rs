//! `Serialize` for the reports, errors and ids (feature `serde`).
//!
//! The shapes are documented on the types ([`ShutdownReport`],
//! [`PendingReport`], [`WaitError`], [`CancelReason`],
//! [`StatusEvent`](crate::service::StatusEvent), the dump's
//! [`TaskTree`](crate::dump::TaskTree)) and checked against those docs by
//! `tests/serde.rs`. The rules:
//!
//! * durations are whole milliseconds, in fields named for it (`age_ms`,
//!   `elapsed_ms`, `delay_ms`), saturating at `u64::MAX`;
//! * creation sites are strings, `"file:line:col"`;
//! * instants are never written raw (they mean nothing outside the process):
//!   an age, taken when the report was made, stands for them;
//! * ids are numbers; names are strings or `null`; enums are lowercase
//!   strings (`"task"`, `"panic"`, `"running"`, `"sigterm"`); an enum whose
//!   variants carry data is an object whose `kind` names the variant, beside
//!   the variant's fields.
//!
//! The impls are written by hand rather than derived, so the field names and
//! units are spelled out here and the private representation can change.

use std::panic::Location;
use std::time::Duration;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::error::{TaskError, TaskErrors, WaitError};
use crate::label::{GroupId, TaskId};
use crate::reason::CancelReason;
use crate::report::{GroupPending, PendingReport, ShutdownReport, TaskInfo, TaskKind};
use crate::shutdown::Signal;

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A creation site as `"file:line:col"`.
pub(crate) struct Site(pub(crate) &'static Location<'static>);

impl Serialize for Site {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

impl Serialize for TaskId {
    /// A number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Serialize for GroupId {
    /// A number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl TaskKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskKind::Guard => "guard",
            TaskKind::Task => "task",
            TaskKind::Blocking => "blocking",
            TaskKind::Tracked => "tracked",
        }
    }
}

impl Serialize for TaskKind {
    /// `"guard"`, `"task"`, `"blocking"` or `"tracked"`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for TaskInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskInfo", 8)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", &self.name())?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("queued", &self.queued)?;
        st.serialize_field("site", &Site(self.site))?;
        st.serialize_field("age_ms", &millis(self.age))?;
        st.serialize_field("group_id", &self.group.id)?;
        st.serialize_field("group_name", &self.group.name())?;
        st.end()
    }
}

impl Serialize for GroupPending {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("GroupPending", 5)?;
        st.serialize_field("group_id", &self.group.id)?;
        st.serialize_field("group_name", &self.group.name())?;
        st.serialize_field("pending", &self.count)?;
        st.serialize_field("unrecorded", &self.unrecorded())?;
        st.serialize_field("tasks", &self.tasks)?;
        st.end()
    }
}

impl Serialize for PendingReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("PendingReport", 2)?;
        st.serialize_field("pending", &self.len())?;
        st.serialize_field("groups", &self.groups)?;
        st.end()
    }
}

/// A task's error message. A `Display` that panics must not take the
/// serializer (a health endpoint, say) down with it.
fn message(error: &TaskError) -> String {
    if error.is_panic() {
        let message = error.panic_message();
        return message.unwrap_or(crate::error::NOT_A_STRING).to_owned();
    }
    let Some(inner) = error.error() else {
        return String::new();
    };
    crate::error::Unpanicking(&inner).text()
}

/// The most causes of a failure serialized: a `source()` chain is the
/// error's own, and need not end.
const MAX_CAUSES: usize = 32;

/// A failure's causes, from its error's `source()` on, each as `message`
/// writes it: user code's `Display` and `source()` that panic do not take
/// the serializer down (a `source()` that panics ends the list there).
struct Causes<'a>(&'a TaskError);

impl Serialize for Causes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let first = self.0.error().and_then(|error| source_of(error));
        let chain = std::iter::successors(first, |cause| source_of(*cause)).take(MAX_CAUSES);
        s.collect_seq(chain.map(|cause| crate::error::Unpanicking(&cause).text()))
    }
}

/// `error.source()`, or `None` if it panics (its panic's payload dropped as
/// a task's is, see [`crate::task::drop_payload`]).
fn source_of<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| error.source())).unwrap_or_else(
        |payload| {
            crate::task::drop_payload(payload);
            None
        },
    )
}

impl Serialize for TaskError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskError", 8)?;
        st.serialize_field("id", &self.id())?;
        st.serialize_field("name", &self.name())?;
        st.serialize_field("group_id", &self.group_id())?;
        st.serialize_field("group_name", &self.group_name())?;
        st.serialize_field("kind", if self.is_panic() { "panic" } else { "error" })?;
        st.serialize_field("message", &message(self))?;
        st.serialize_field("causes", &Causes(self))?;
        st.serialize_field("secondary", &self.is_secondary())?;
        st.end()
    }
}

/// The kept failures of a [`TaskErrors`], as a sequence.
struct Kept<'a>(&'a TaskErrors);

impl Serialize for Kept<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl Serialize for TaskErrors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskErrors", 3)?;
        st.serialize_field("total", &self.total())?;
        st.serialize_field("dropped", &self.dropped())?;
        st.serialize_field("errors", &Kept(self))?;
        st.end()
    }
}

impl Serialize for ShutdownReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ShutdownReport", 6)?;
        st.serialize_field("clean", &self.is_clean())?;
        st.serialize_field("elapsed_ms", &millis(self.elapsed))?;
        st.serialize_field("finished", &self.finished)?;
        st.serialize_field("aborted", &self.aborted)?;
        st.serialize_field("pending", &self.pending)?;
        st.serialize_field("errors", &self.errors)?;
        st.end()
    }
}

impl Serialize for WaitError {
    /// `{"kind": "failed", "errors": ...}`, `{"kind": "timed_out", "pending":
    /// ..., "errors": ...}` or `{"kind": "wait_from_own_task", "group_id": 3}`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WaitError::Failed { errors } => {
                let mut st = s.serialize_struct("WaitError", 2)?;
                st.serialize_field("kind", "failed")?;
                st.serialize_field("errors", errors)?;
                st.end()
            }
            WaitError::TimedOut { pending, errors } => {
                let mut st = s.serialize_struct("WaitError", 3)?;
                st.serialize_field("kind", "timed_out")?;
                st.serialize_field("pending", pending)?;
                st.serialize_field("errors", errors)?;
                st.end()
            }
            WaitError::WaitFromOwnTask { group } => {
                let mut st = s.serialize_struct("WaitError", 2)?;
                st.serialize_field("kind", "wait_from_own_task")?;
                st.serialize_field("group_id", group)?;
                st.end()
            }
        }
    }
}

impl Signal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Signal::Interrupt => "sigint",
            Signal::Terminate => "sigterm",
        }
    }
}

impl Serialize for Signal {
    /// `"sigint"` or `"sigterm"`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for CancelReason {
    /// `{"kind": ...}`, with the variant's details: see [`CancelReason`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, len) = match self {
            CancelReason::Requested(_) => ("requested", 2),
            CancelReason::Failure(_) => ("failure", 2),
            CancelReason::Token => ("token", 1),
            CancelReason::Shutdown => ("shutdown", 1),
            CancelReason::Signal(_) => ("signal", 2),
            CancelReason::Forced(_) => ("forced", 2),
            CancelReason::Deadline => ("deadline", 1),
        };
        let mut st = s.serialize_struct("CancelReason", len)?;
        st.serialize_field("kind", kind)?;
        match self {
            CancelReason::Requested(message) => st.serialize_field("message", message)?,
            CancelReason::Failure(error) => st.serialize_field("error", &**error)?,
            CancelReason::Signal(signal) | CancelReason::Forced(signal) => {
                st.serialize_field("signal", signal)?;
            }
            CancelReason::Token | CancelReason::Shutdown | CancelReason::Deadline => {}
        }
        st.end()
    }
}
