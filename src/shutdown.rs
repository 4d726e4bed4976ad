//! [`WaitGroup::shutdown`]: the two-phase, ordered drain.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::{timeout_at, Instant};

use crate::error::WaitError;
use crate::label::GroupId;
use crate::report::{ShutdownReport, TaskInfo};
use crate::wait_group::{deadline_after, WaitGroup};

/// What one shutdown has done so far, across the groups it visited.
struct Progress {
    /// The end of the graceful phase: `grace` from the start.
    deadline: Instant,
    /// Until when a group first reached after `deadline` may stop by itself:
    /// the middle of the forced phase.
    late_deadline: Instant,
    /// The end of the forced phase: the deadline plus the abort timeout.
    abort_deadline: Instant,
    seen: HashSet<GroupId>,
    finished: usize,
    aborted: Vec<TaskInfo>,
}

impl WaitGroup {
    /// Stops the group and every group linked below it, in order, within one
    /// deadline, and reports what happened.
    ///
    /// For this group, then for each linked group in link order
    /// (depth-first, each group once):
    ///
    /// 1. [close](Self::close) it, so `try_add`/`try_go` refuse new work;
    /// 2. cancel its own context (not yet its children's: a database pool
    ///    linked below a server keeps serving while the server's connections
    ///    drain);
    /// 3. wait for its own work until the shared deadline, `grace` from now;
    /// 4. if the deadline passed, abort its `go()` tasks still running and wait
    ///    for them to stop, at most the
    ///    [`abort_timeout`](crate::Builder::abort_timeout) past the deadline
    ///    (that of the group `shutdown` was called on, for the whole tree).
    ///
    /// The abort timeout after the deadline is the *forced phase*. A group the
    /// shutdown first reaches during it (because a group before it used up
    /// the grace period) is still cancelled first and may stop by itself until
    /// the middle of the forced phase; then its stragglers are aborted. So a
    /// database pool or log flusher linked below a server whose connections
    /// overran still gets a moment to close cleanly, in order. The whole call
    /// takes at most about `grace` plus the abort timeout.
    ///
    /// Guards cannot be aborted: if one is still alive, the report lists it as
    /// pending, with its creation site. [`cancel`](Self::cancel) is the
    /// unordered emergency path.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// wg.go_named("polite", |ctx| async move {
    ///     ctx.cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// wg.go_named("stubborn", |_ctx| async move {
    ///     std::future::pending::<()>().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let report = wg.shutdown(Duration::from_secs(10)).await.unwrap();
    /// assert_eq!(report.finished(), 1);
    /// assert_eq!(report.aborted()[0].name(), Some("stubborn"));
    /// assert!(report.pending().is_empty());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WaitError::WaitFromOwnTask`] if called from a task of this group or
    /// of a group below it (that task would wait for itself and then abort
    /// itself). Task failures are not an error of the call; they are in
    /// [`ShutdownReport::errors`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the shutdown where it is: groups already
    /// closed and cancelled stay so, later groups are untouched.
    pub async fn shutdown(&self, grace: Duration) -> Result<ShutdownReport, WaitError> {
        self.check_not_own_task()?;
        let started = Instant::now();
        let deadline = deadline_after(grace);
        let mut progress = Progress {
            deadline,
            late_deadline: deadline + self.inner().abort_timeout() / 2,
            abort_deadline: deadline + self.inner().abort_timeout(),
            seen: HashSet::new(),
            finished: 0,
            aborted: Vec::new(),
        };
        self.shutdown_group(&mut progress).await;
        let report = ShutdownReport {
            finished: progress.finished,
            aborted: progress.aborted,
            pending: self.pending(),
            errors: self.errors(),
            elapsed: started.elapsed(),
        };
        crate::trace::shutdown_done(self.label(), &report);
        Ok(report)
    }

    fn shutdown_group<'a>(&'a self, progress: &'a mut Progress) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !progress.seen.insert(self.id()) {
                return;
            }
            let inner = self.inner();
            let (pending_at_close, late_adds_before) = inner.close_for_shutdown();
            crate::trace::closed(self.label());
            inner.cancel_own();
            let mut aborted_done = 0;
            let stop_by = if Instant::now() < progress.deadline {
                progress.deadline
            } else {
                progress.late_deadline
            };
            if timeout_at(stop_by, inner.wait_idle()).await.is_err() {
                let (aborted, joins) = inner.abort_tasks(Instant::now());
                aborted.iter().for_each(crate::trace::aborted);
                // Wait for the aborted tasks only: a guard cannot be aborted,
                // so waiting for the whole group here would only wait out the
                // abort timeout.
                let mut stopping: FuturesUnordered<_> = joins.into_iter().collect();
                let _ = timeout_at(progress.abort_deadline, async {
                    while stopping.next().await.is_some() {
                        aborted_done += 1;
                    }
                })
                .await;
                progress.aborted.extend(aborted);
            }
            // Everything that completed during this group's turn, minus what
            // completed because it was aborted.
            let added = (inner.late_adds() - late_adds_before) as usize;
            let completed = (pending_at_close + added).saturating_sub(self.len());
            progress.finished += completed.saturating_sub(aborted_done);

            for child in self.linked() {
                child.shutdown_group(progress).await;
            }
        })
    }
}
