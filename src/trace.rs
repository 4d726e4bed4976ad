//! `tracing` integration, behind the `tracing` cargo feature.
//!
//! Every function here is empty without the feature, so call sites cost
//! nothing then. With it, each `go()` task runs in a `task` span carrying its
//! group, name and id, and the lifecycle emits events: a group closed or
//! cancelled (debug), a task failed (warn), a wait timed out (warn, with the
//! pending report), a task aborted (warn), a shutdown done (info), a service
//! restart scheduled (info) or given up (error).

#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::future::Future;
use std::time::Duration;

use crate::error::TaskError;
use crate::label::{GroupLabel, Label, TaskId};
use crate::report::{PendingReport, ShutdownReport, TaskInfo};

/// A `go()` task's span; nothing without the feature.
#[cfg(feature = "tracing")]
pub(crate) type TaskSpan = tracing::Span;
/// Without the feature: nothing.
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskSpan;

#[inline]
pub(crate) fn task_span(group: &GroupLabel, name: Option<&Label>, id: TaskId) -> TaskSpan {
    #[cfg(feature = "tracing")]
    return tracing::info_span!(
        "task",
        group = %group,
        task.name = name.map(Label::as_str),
        task.id = id.as_u64(),
    );
    #[cfg(not(feature = "tracing"))]
    TaskSpan
}

/// Runs a `go()` task's future inside its span.
#[inline]
pub(crate) fn instrument<F: Future>(fut: F, span: TaskSpan) -> impl Future<Output = F::Output> {
    #[cfg(feature = "tracing")]
    return tracing::Instrument::instrument(fut, span);
    #[cfg(not(feature = "tracing"))]
    fut
}

#[inline]
pub(crate) fn closed(group: &GroupLabel) {
    #[cfg(feature = "tracing")]
    tracing::debug!(group = %group, "group closed");
}

#[inline]
pub(crate) fn cancelled(group: &GroupLabel, cause: Option<&TaskError>) {
    #[cfg(feature = "tracing")]
    match cause {
        None => tracing::debug!(group = %group, "group cancelled"),
        Some(cause) => {
            tracing::warn!(group = %group, cause = %cause, "group cancelled by a task failure")
        }
    }
}

#[inline]
pub(crate) fn task_failed(error: &TaskError) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        task.id = error.id().as_u64(),
        task.name = error.name(),
        "{error}"
    );
}

#[inline]
pub(crate) fn wait_timed_out(group: &GroupLabel, pending: &PendingReport) {
    #[cfg(feature = "tracing")]
    tracing::warn!(group = %group, pending = pending.len(), "wait timed out: {pending}");
}

#[inline]
pub(crate) fn aborted(task: &TaskInfo) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        task.id = task.id().as_u64(),
        task.name = task.name(),
        "aborted {task}"
    );
}

#[inline]
pub(crate) fn shutdown_done(group: &GroupLabel, report: &ShutdownReport) {
    #[cfg(feature = "tracing")]
    tracing::info!(group = %group, clean = report.is_clean(), "{report}");
}

#[inline]
pub(crate) fn restart_scheduled(service: &str, attempt: u32, delay: Duration) {
    #[cfg(feature = "tracing")]
    tracing::info!(service, attempt, delay = ?delay, "restarting service");
}

#[inline]
pub(crate) fn gave_up(service: &str, restarts: usize, window: Duration) {
    #[cfg(feature = "tracing")]
    tracing::error!(service, restarts, window = ?window, "service restarted too often; giving up");
}
