//! [`TasksService`]: a [`WaitGroup`] and its `go()` tasks as a member of a group or sequence.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::BoxError;
use super::runner::{deadline_after, DeadlineCell, Place, DEFAULT_STOP_TIMEOUT};
use super::service::{Ready, Service};
use crate::drain::Progress;
use crate::{CancelReason, ShutdownReport, WaitGroup};

/// A [`WaitGroup`] with its `go()` tasks as a [`Service`]: a member of a
/// [`ServiceGroup`](super::ServiceGroup) or [`Sequence`](super::Sequence) whose stop is the group's
/// [`shutdown`](WaitGroup::shutdown), and whose stop result is the [`ShutdownReport`].
///
/// A run reports ready at once and lasts until its context is cancelled, or the wait group
/// is (by [`cancel_on_error`](crate::WaitGroupBuilder::cancel_on_error), say); then it shuts the wait
/// group down with a grace period of `grace`, never past the stop deadline of the container
/// around it, also one that comes earlier while it shuts down (a container further around
/// stopping sooner, or the container's stop coming after the wait group was cancelled by
/// itself): at that deadline the tasks still running are aborted (a shielded section too, as
/// at a container's own deadline) and listed in the report, whose
/// [`elapsed`](ShutdownReport::elapsed) is the time the stop had. Inside a container the wait
/// group is linked below the member while it runs, so the container's stop reports name its
/// pending tasks too, should the `TasksService` not return its report in time.
///
/// The result is `Ok(())` if the shutdown was clean (nothing aborted, pending or failed),
/// else an [`UncleanShutdown`] error carrying the report.
///
/// It is one run of its wait group: the shutdown closes and cancels the group, and a run
/// after it (a restart, under a [`Restarter`](super::Restarter) or a
/// [`Supervisor`](super::Supervisor)) finds it so, ends at once, and reports its failures
/// again. Restart the tasks by making a fresh wait group in a service of your own
/// ([`service_fn`](super::service_fn)), not by restarting a `TasksService`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::service::{ServiceGroup, TasksService};
/// use taskgroup::WaitGroup;
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let workers = WaitGroup::builder().name("workers").build();
/// workers.task().name("stubborn").go(|_ctx| async {
///     std::future::pending::<()>().await;
///     Ok::<_, std::io::Error>(())
/// });
/// let mut app = ServiceGroup::builder("app")
///     .service(TasksService::new("workers", workers).grace(Duration::from_secs(1)))
///     .build()
///     .unwrap();
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// let err = app.serve(ctx).await.unwrap_err();
/// let unclean = err.failures()[0].source_as::<taskgroup::service::UncleanShutdown>().unwrap();
/// assert_eq!(unclean.report().aborted()[0].name(), Some("stubborn"));
/// # }
/// ```
#[derive(Debug)]
pub struct TasksService {
    name: String,
    wg: WaitGroup,
    grace: Duration,
}

impl TasksService {
    /// Makes `wg` a service named `name`, with a 10 second grace period.
    pub fn new(name: impl Into<String>, wg: WaitGroup) -> Self {
        TasksService {
            name: name.into(),
            wg,
            grace: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// The grace period of the shutdown. `Duration::MAX` means no limit (a container
    /// around it still bounds it by its deadline).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

impl Service for TasksService {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let wg = self.wg.clone();
        let grace = self.grace;
        let (place, hosting) = Place::hosting(&self.name);
        // Below the member's group while it runs, so the container's reports cover it. A
        // link the core refuses (a cycle) only loses that.
        let linked = place.scope_group().is_some_and(|g| g.link(&wg).is_ok());
        Box::pin(hosting.over(async move {
            ready.ready();
            tokio::select! {
                () = ctx.cancelled() => {}
                () = wg.cancelled() => {}
            }
            let report = shutdown_within(&wg, grace, place.parent_deadline.as_ref()).await;
            if linked {
                if let Some(g) = place.scope_group() {
                    g.unlink(&wg);
                }
            }
            if report.is_clean() {
                Ok(())
            } else {
                Err(Box::new(UncleanShutdown { report }) as BoxError)
            }
        }))
    }
}

/// How long a shutdown cut short by a deadline is given to end once the forced stop beside
/// it ended ([`shutdown_within`]): its turns end as soon as the aborts have landed, a few
/// polls, and it must return well within the 100 ms past its deadline that a container gives
/// a `TasksService` to return its report before it gives up on it and names its tasks itself.
/// (A `ShutdownPlan` gives its graceful stop 100 ms for the same, with no one waiting.)
const SETTLE: Duration = Duration::from_millis(20);

/// `wg`'s shutdown with `grace`, never past the stop deadline in `deadline` (the member's,
/// which the container around lowers as it, or one further around, stops).
///
/// The grace is bounded by that deadline at the start. The deadline may come earlier while
/// the shutdown runs: a container further around stops sooner than the one whose stop began
/// it, or the container's stop comes after the wait group was cancelled on its own. The
/// core's shutdown cannot be shortened, so at such a deadline a forced stop runs beside it
/// and the two reports are merged, as a `ShutdownPlan` does on a second signal: every task
/// still running is aborted then (a shielded section too, as the container's own abort at
/// its deadline does) and listed once, and the report's time is the time the stop had.
/// (Before, the shutdown ran on with its first grace; the container gave up on it after its
/// report window and named the tasks with its own stop timeout, not the time their stop
/// had, and on two workers a container further around sometimes named them a second time.)
/// A deadline at or after the end of the grace changes nothing: the shutdown ends by itself.
async fn shutdown_within(
    wg: &WaitGroup,
    grace: Duration,
    deadline: Option<&DeadlineCell>,
) -> ShutdownReport {
    let Some(cell) = deadline else {
        return wg.shutdown(grace).await;
    };
    let mut grace = grace;
    // When the grace ends: a deadline that comes earlier than this cuts the shutdown short.
    let mut end = deadline_after(grace);
    if let Some(at) = cell.get().filter(|&at| at < end) {
        grace = at.saturating_duration_since(Instant::now());
        end = at;
    }
    let progress = Progress::default();
    let shutdown = wg.shutdown_because(grace.into(), CancelReason::Shutdown, Some(&progress));
    tokio::pin!(shutdown);
    // The deadline the shutdown is cut short at, once one came before `end`.
    let mut cut: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            report = &mut shutdown => return report,
            () = cell.earlier_than(Some(cut.unwrap_or(end))) => cut = cell.get(),
            () = tokio::time::sleep_until(cut.unwrap_or(end)), if cut.is_some() => break,
        }
    }
    // As `ShutdownPlan::run_on_signal` does on a second signal: the shutdown goes on beside
    // the forced stop and is given `SETTLE` to end once it ended; the reports are merged.
    crate::drain::force_over(
        wg,
        CancelReason::Shutdown,
        &progress,
        shutdown.as_mut(),
        SETTLE,
    )
    .await
}

/// The stop result of a [`TasksService`] whose shutdown was not clean: tasks were aborted,
/// are still pending, or failed. Carries the core's report.
///
/// `Display` is one line of counts (it goes into a container's error, a line per member);
/// the failures are its [`source`](std::error::Error::source) (the report's
/// [`TaskErrors`](crate::TaskErrors), naming each failed task, then the cause of a single
/// failure), so that `anyhow`'s `{:#}` or a chain walk from this error shows them; `Debug`
/// adds the report's lines (the aborted and pending tasks by name, the failures), and a
/// container's [`ServiceError`](super::ServiceError) writes it in its own `Debug`, and its
/// `source()` continues with the failures when this member's is the container's only one (a
/// list of several has no source). From a container's error, reach it with
/// [`source_as::<UncleanShutdown>()`](super::ServiceError::source_as) on the member's
/// failure (or on the container's error, if it is the only one).
pub struct UncleanShutdown {
    report: ShutdownReport,
}

impl UncleanShutdown {
    /// The shutdown's report: what finished, was aborted, is pending, failed.
    pub fn report(&self) -> &ShutdownReport {
        &self.report
    }

    /// The shutdown's report, by value.
    pub fn into_report(self) -> ShutdownReport {
        self.report
    }
}

/// The text counts what the report holds and names the first few tasks of
/// each kind (`unclean shutdown: 1 aborted ("stuck"), 0 pending, 1 failed
/// ("flusher")`): the failures' texts follow in the source, and a message
/// that said only the counts made a reader downcast to learn which tasks.
impl fmt::Display for UncleanShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.report;
        write!(f, "unclean shutdown: {} aborted", report.aborted().len())?;
        named(f, report.aborted().iter().map(|t| (t.name(), t.id())))?;
        write!(f, ", {} pending", report.pending().len())?;
        named(f, report.pending().tasks().map(|t| (t.name(), t.id())))?;
        write!(f, ", {} failed", report.errors().total())?;
        named(f, report.errors().iter().map(|e| (e.name(), e.id())))
    }
}

/// Writes ` ("a", #2, "c", ...)`: the names (or ids) of the first tasks.
fn named<'a>(
    f: &mut fmt::Formatter<'_>,
    tasks: impl Iterator<Item = (Option<&'a str>, crate::TaskId)>,
) -> fmt::Result {
    const SHOWN: usize = 3;
    let mut shown = 0;
    for (name, id) in tasks {
        f.write_str(if shown == 0 { " (" } else { ", " })?;
        if shown == SHOWN {
            f.write_str("...")?;
            break;
        }
        match name {
            Some(name) => write!(f, "{name:?}")?,
            None => write!(f, "{id}")?,
        }
        shown += 1;
    }
    if shown > 0 {
        f.write_str(")")?;
    }
    Ok(())
}

impl fmt::Debug for UncleanShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}\n{}", self.report)
    }
}

impl std::error::Error for UncleanShutdown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let errors = self.report.errors();
        (!errors.is_empty()).then_some(errors as _)
    }
}

#[cfg(test)]
mod tests {
    use super::UncleanShutdown;
    use crate::WaitGroup;
    use std::time::Duration;

    /// The text counts every failure, also those the group did not keep (`max_errors`): it
    /// said "0 failed" for a group keeping none.
    #[tokio::test]
    async fn an_unclean_shutdown_counts_every_failure() {
        let group = WaitGroup::builder().max_errors(0).build();
        for _ in 0..2 {
            group.go(|_| async { Err::<(), _>("boom") });
        }
        let report = group.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.errors().total(), 2);
        assert_eq!(
            UncleanShutdown { report }.to_string(),
            "unclean shutdown: 0 aborted, 0 pending, 2 failed"
        );
        // Named, up to three of a kind, ids for the unnamed.
        let group = WaitGroup::new();
        for name in ["a", "b", "c", "d"] {
            group
                .task()
                .name(name)
                .go(|_| async { Err::<(), _>("boom") });
        }
        group.go(|_| std::future::pending::<()>());
        tokio::task::yield_now().await;
        let report = group.shutdown(Duration::ZERO).await;
        assert_eq!(
            UncleanShutdown { report }.to_string(),
            "unclean shutdown: 1 aborted (#5), 0 pending, 4 failed (\"a\", \"b\", \"c\", ...)"
        );
    }

    /// The failures are the source, named; `Debug` names the aborted tasks too. Both said
    /// only the counts.
    #[tokio::test]
    async fn an_unclean_shutdown_names_its_tasks_and_failures() {
        use std::error::Error as _;
        let group = WaitGroup::builder().name("workers").build();
        group
            .task()
            .name("flusher")
            .go(|_| async { Err::<(), _>("disk full") });
        group
            .task()
            .name("stuck")
            .go(|_| std::future::pending::<()>());
        tokio::task::yield_now().await;
        let err = UncleanShutdown {
            report: group.shutdown(Duration::ZERO).await,
        };
        assert_eq!(
            err.to_string(),
            "unclean shutdown: 1 aborted (\"stuck\"), 0 pending, 1 failed (\"flusher\")"
        );
        let source = err.source().expect("the failures").to_string();
        assert!(source.contains("\"flusher\""), "{source}");
        assert!(source.contains("disk full"), "{source}");
        let debug = format!("{err:?}");
        assert!(debug.starts_with("unclean shutdown: 1 aborted"), "{debug}");
        assert!(debug.contains("aborted: task \"stuck\""), "{debug}");
        assert!(debug.contains("disk full"), "{debug}");
        assert_eq!(err.into_report().aborted().len(), 1);
    }
}
