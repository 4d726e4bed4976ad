//! `tracing` integration, behind the `tracing` cargo feature.
//!
//! Every function here is empty without the feature, so call sites cost
//! nothing then. With it, each `go()` task runs in a `task` span carrying its
//! group, name and id, and the lifecycle emits events: a group closed or
//! cancelled (debug, with the reason; by `cancel()`, a failure, a deadline,
//! or a shutdown reaching it; warn, with the failure as `cause`, when a
//! failure cancels it; a caller's token cancels without one, as the
//! crate does not watch it), a task failed (warn), a wait timed
//! out (warn, with the pending report), a shutdown signal (info), a shutdown
//! done (info: one event with its counts; the tasks aborted, still pending
//! and failed follow at debug, one event each), a service restart scheduled
//! (info) or given up (error).
//!
//! Fields, the same on every span and event: `group` (the group's name, or
//! its id when it has none), `group.id`, `task.name`, `task.id`. A task's
//! span is a root span (`parent: None`) that *follows from* the span of the
//! code that spawned it, so a connection's lines are not nested under the
//! accept loop's span for the connection's whole life.

#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::future::Future;
use std::time::Duration;

use crate::error::TaskError;
use crate::label::{GroupLabel, Label, TaskId};
use crate::reason::CancelReason;
use crate::report::{PendingReport, ShutdownReport, TaskInfo};
use crate::shutdown::Signal;

/// The `group` field: the bare name, or `#id` without one.
#[cfg(feature = "tracing")]
fn group_field(group: &GroupLabel) -> String {
    named(group.name(), group.id)
}

/// The `group` field from a name and an id.
#[cfg(feature = "tracing")]
fn named(name: Option<&str>, id: crate::label::GroupId) -> String {
    name.map_or_else(|| id.to_string(), str::to_owned)
}

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
    {
        let span = tracing::info_span!(
            parent: None,
            "task",
            group = group_field(group),
            group.id = group.id.as_u64(),
            task.name = name.map(Label::as_str),
            task.id = id.as_u64(),
        );
        span.follows_from(tracing::Span::current());
        span
    }
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
    tracing::debug!(
        group = group_field(group),
        group.id = group.id.as_u64(),
        "group closed"
    );
}

#[inline]
pub(crate) fn cancelled(group: &GroupLabel, reason: &CancelReason) {
    #[cfg(feature = "tracing")]
    match reason {
        CancelReason::Failure(cause) => tracing::warn!(
            group = group_field(group),
            group.id = group.id.as_u64(),
            cause = %cause.guarded(),
            "group cancelled by a task failure"
        ),
        reason => tracing::debug!(
            group = group_field(group),
            group.id = group.id.as_u64(),
            reason = %reason,
            "group cancelled"
        ),
    }
}

#[inline]
pub(crate) fn signal(signal: Signal, nth: usize) {
    #[cfg(feature = "tracing")]
    if nth == 1 {
        tracing::info!(signal = %signal, "shutdown signal: shutting down");
    } else {
        tracing::warn!(signal = %signal, nth, "another shutdown signal: forcing the shutdown");
    }
}

#[inline]
pub(crate) fn task_failed(error: &TaskError) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group = named(error.group_name(), error.group_id()),
        group.id = error.group_id().as_u64(),
        task.name = error.name(),
        task.id = error.id().as_u64(),
        "{}",
        error.guarded()
    );
}

#[inline]
pub(crate) fn wait_timed_out(group: &GroupLabel, pending: &PendingReport) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group = group_field(group),
        group.id = group.id.as_u64(),
        pending = pending.len(),
        "wait timed out: {pending}"
    );
}

#[inline]
pub(crate) fn aborted(task: &TaskInfo) {
    #[cfg(feature = "tracing")]
    item("aborted", task);
}

/// One item of a report, at debug level.
#[cfg(feature = "tracing")]
fn item(what: &str, task: &TaskInfo) {
    tracing::debug!(
        group = named(task.group_name(), task.group_id()),
        group.id = task.group_id().as_u64(),
        task.name = task.name(),
        task.id = task.id().as_u64(),
        age_ms = task.age().as_millis() as u64,
        "{what}: {task}"
    );
}

#[inline]
pub(crate) fn shutdown_done(group: &GroupLabel, report: &ShutdownReport) {
    #[cfg(feature = "tracing")]
    {
        let elapsed_ms = report.elapsed().as_millis() as u64;
        let (finished, failed) = (report.finished(), report.errors().total());
        let (aborted, pending) = (report.aborted().len(), report.pending().len());
        let (group, group_id) = (group_field(group), group.id.as_u64());
        // `event!` takes its level as a constant (it is in the callsite's
        // static metadata): one invocation per level, one field list.
        macro_rules! done {
            ($level:expr, $message:literal) => {
                tracing::event!(
                    $level,
                    group,
                    group.id = group_id,
                    finished,
                    failed,
                    aborted,
                    pending,
                    elapsed_ms,
                    $message
                )
            };
        }
        if report.is_clean() {
            done!(tracing::Level::INFO, "shutdown done");
        } else {
            done!(tracing::Level::WARN, "shutdown done, not clean");
        }
        for task in report.pending().tasks() {
            item("still pending", task);
        }
        for error in report.errors().iter() {
            tracing::debug!(
                group = named(error.group_name(), error.group_id()),
                group.id = error.group_id().as_u64(),
                task.name = error.name(),
                task.id = error.id().as_u64(),
                "failed: {}",
                error.guarded()
            );
        }
    }
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
