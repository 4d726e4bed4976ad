//! The orchestration behind [`WaitGroup::shutdown`](crate::WaitGroup::shutdown):
//! the order of the groups, the shared deadline, the forced phase and its
//! shares, and the report. The steps on one group are the node's; the
//! arithmetic of the budget is documented on `shutdown`. (The public
//! `taskgroup::shutdown` module, above this one, holds the plan and signals.)

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use crate::label::GroupId;
use crate::node::{self, Counters, NodeRef};
use crate::report::{PendingReport, ShutdownReport, TaskInfo};
use crate::shared::Counted as _;
use crate::shutdown::{deadline_after, saturating_add};
use crate::task::Current;

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

/// Runs a shutdown of `root` and the groups below it. `caller` is the
/// `go()` task calling it, if it is one of the tree's: it is neither waited
/// for nor aborted, and is reported as still running.
pub(crate) async fn run(
    root: &NodeRef,
    grace: Duration,
    caller: Option<Current>,
) -> ShutdownReport {
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
            let caller = caller.filter(|c| c.group == group.id());
            stop_group(group, is_root, total - i, &budget, caller, &mut aborted).await;
            seen.insert(group.id());
            visited.push(group.clone());
        }
        order = node::walk(root);
        order.retain(|n| !seen.contains(&n.id()));
        // Linked during the shutdown: counted from when it is first seen.
        for n in &order {
            start.insert(n.id(), n.counters());
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

/// Waits until the group has nothing pending but the caller (if it is in
/// this group), or until `stop_by`. Returns whether it got there.
async fn stopped_by_itself(group: &NodeRef, spare_caller: bool, stop_by: Instant) -> bool {
    if !spare_caller {
        return timeout_at(stop_by, group.state().wait_idle()).await.is_ok();
    }
    // The caller's own task stays pending while it waits here, and the state
    // word wakes waiters only when nothing is pending: so look at intervals
    // (1 ms, doubling up to 50 ms). Only a shutdown called from one of the
    // group's own tasks comes here.
    let mut interval = Duration::from_millis(1);
    loop {
        if group.len() <= 1 {
            return true;
        }
        let now = Instant::now();
        if now >= stop_by {
            return false;
        }
        tokio::time::sleep_until(saturating_add(now, interval).min(stop_by)).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// One group's turn: close, cancel its own context, let it stop by itself
/// until its stop time, then abort its tasks and wait for the aborts until
/// its abort time (see the budget on `WaitGroup::shutdown`).
async fn stop_group(
    group: &NodeRef,
    is_root: bool,
    groups_left: usize,
    budget: &Budget,
    caller: Option<Current>,
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
    if stopped_by_itself(group, caller.is_some(), stop_by).await {
        return;
    }
    let now = Instant::now();
    let abort_by = match late_share {
        Some(share) => saturating_add(reached, share),
        None => saturating_add(now, budget.share(now, groups_left)),
    };
    let spare = caller.map(|c| group.registry.id(c.slot));
    let watch = group.abort_tasks(spare);
    // Wait for the aborted tasks only: a guard cannot be aborted, so waiting
    // for the whole group here would only wait out the share.
    let _ = timeout_at(abort_by, watch.all_settled()).await;
    // A task whose abort did not take effect in time stays pending, and is
    // reported so; one that finished by itself first is counted as finished.
    let stopped = watch.take_aborted();
    stopped.iter().for_each(crate::trace::aborted);
    aborted.extend(stopped);
}
