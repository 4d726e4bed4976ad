//! The orchestration behind [`WaitGroup::shutdown`](crate::WaitGroup::shutdown):
//! the order of the groups, the shared deadline, the forced phase and its
//! shares, and the report. The steps on one group are the node's; the
//! arithmetic of the budget is documented on `shutdown`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::{timeout_at, Instant};

use crate::label::GroupId;
use crate::node::{self, Counters, NodeRef};
use crate::report::{PendingReport, ShutdownReport, TaskInfo};
use crate::shared::Counted as _;

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    saturating_add(Instant::now(), timeout)
}

/// `at + d`, or about thirty years from `at` if that overflows (Tokio's own
/// "far future"): `Duration::MAX` means no limit.
pub(crate) fn saturating_add(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// One shutdown's clock: fixed at the call, before anything is cancelled.
struct Budget {
    /// The end of the graceful phase: `grace` after the call.
    deadline: Instant,
    /// The end of the forced phase: the deadline plus the abort timeout.
    end: Instant,
}

impl Budget {
    /// The share of what remains of the forced phase for one group, with
    /// `groups_left` groups (this one included) still to be given theirs.
    fn share(&self, now: Instant, groups_left: usize) -> Duration {
        let left = self.end.saturating_duration_since(now.max(self.deadline));
        left / groups_left.max(1) as u32
    }
}

/// Runs a shutdown of `root` and the groups below it.
pub(crate) async fn run(root: &NodeRef, grace: Duration) -> ShutdownReport {
    let started = Instant::now();
    let deadline = deadline_after(grace);
    let budget = Budget {
        deadline,
        end: saturating_add(deadline, root.config.abort_timeout),
    };
    // Every group's counters as the shutdown starts, so that work finishing
    // in a group not reached yet is counted too.
    let mut order = node::walk(root);
    let mut start: HashMap<GroupId, Counters> =
        order.iter().map(|n| (n.id(), n.counters())).collect();
    let mut visited: Vec<NodeRef> = Vec::with_capacity(order.len());
    let mut seen: HashSet<GroupId> = HashSet::with_capacity(order.len());
    let mut aborted: Vec<TaskInfo> = Vec::new();

    // Groups linked during the shutdown are taken in a further pass.
    while !order.is_empty() {
        let total = order.len();
        for (i, group) in order.iter().enumerate() {
            let is_root = visited.is_empty();
            stop_group(group, is_root, total - i, &budget, &mut aborted).await;
            seen.insert(group.id());
            visited.push(group.clone());
        }
        order = node::walk(root);
        order.retain(|n| !seen.contains(&n.id()));
        for n in &order {
            start.insert(n.id(), Counters::default());
        }
    }

    let finished = visited
        .iter()
        .map(|n| start[&n.id()].finished_until(&n.counters()))
        .sum();
    let report = ShutdownReport {
        finished,
        aborted,
        pending: PendingReport {
            groups: node::pending(root),
        },
        errors: node::errors(root),
        elapsed: started.elapsed(),
    };
    crate::trace::shutdown_done(&root.label, &report);
    report
}

/// One group's turn: close, cancel its own context, let it stop by itself
/// until its stop time, then abort its tasks and wait for the aborts until
/// its abort time (see the budget on `WaitGroup::shutdown`).
async fn stop_group(
    group: &NodeRef,
    is_root: bool,
    groups_left: usize,
    budget: &Budget,
    aborted: &mut Vec<TaskInfo>,
) {
    group.close();
    crate::trace::closed(&group.label);
    group.cancel_own();
    let reached = Instant::now();
    let late = !is_root && reached >= budget.deadline;
    let (stop_by, late_share) = if late {
        let share = budget.share(reached, groups_left);
        (saturating_add(reached, share / 4 * 3), Some(share))
    } else {
        (budget.deadline, None)
    };
    if timeout_at(stop_by, group.state().wait_idle()).await.is_ok() {
        return;
    }
    let now = Instant::now();
    let abort_by = match late_share {
        Some(share) => saturating_add(reached, share),
        None => saturating_add(now, budget.share(now, groups_left)),
    };
    let mut stopping: FuturesUnordered<_> = group
        .abort_tasks()
        .into_iter()
        .map(|(info, join)| async move { (info, join.await) })
        .collect();
    // Wait for the aborted tasks only: a guard cannot be aborted, so waiting
    // for the whole group here would only wait out the share.
    let mut stopped = Vec::new();
    let _ = timeout_at(abort_by, async {
        while let Some((info, result)) = stopping.next().await {
            // `Ok`: the task finished by itself before the abort took
            // effect, and is counted as finished.
            if matches!(&result, Err(e) if e.is_cancelled()) {
                crate::trace::aborted(&info);
                stopped.push(info);
            }
        }
    })
    .await;
    // What did not stop in time stays pending, and is reported so.
    stopped.sort_unstable_by_key(|t| t.id);
    aborted.extend(stopped);
}
