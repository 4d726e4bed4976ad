//! The runner shared by [`ServiceGroup`](super::ServiceGroup), [`Sequence`](super::Sequence) and
//! [`Restarter`](super::Restarter): each member run is a `go()` task of the core, in a child
//! [`WaitGroup`] of its own.
//!
//! # Design
//!
//! A container owns one [`WaitGroup`] (named by its path, `"top/nested"`), and each member
//! run gets a *child group* of it (`task().name(..).child()`), holding exactly one named `go` task named
//! for the member. A child group per member, rather than one group per container, because:
//! - a [`Sequence`](super::Sequence) cancels and stops its members one at a time, in
//!   reverse: each member needs its own token, which a child group gives;
//! - the end of one member is `child.wait()`, and its panic is the child's record: the core
//!   does the bookkeeping, the runner only reads it;
//! - a container nested in a member creates its own group as a child of that member's group
//!   (found through a task-local [`Scope`]), so the outermost container's group is the root
//!   of one tree: its `pending()` and `shutdown()` see every leaf at any depth, with its
//!   path (group name `/` task name), creation time and age.
//!
//! Panics: `Service::run` (the factory) is called *inside* the spawned task, and a panic in
//! it is resumed there, so the core records it like a panic of the future; panics of the
//! future, of its `Drop` and of a payload's `Drop` are caught by the core. The task's
//! future ([`MemberRun`]) catches a panic of the factory or the future on its way out to
//! keep its message for the member's end ([`Exit`]), and resumes it.
//!
//! Errors: the member task hands the service's error to the runner by value and returns
//! `Ok` to the core, so `ServiceError::Failed::source` is the service's own `BoxError`
//! (which callers `downcast`). The core's [`TaskError`](crate::TaskError) only lends its
//! error (`&dyn Error`): holding it shared would take that `downcast` by value away from
//! every caller. Panics carry no value worth keeping: their message is enough.
//!
//! Stop: a stopping container sets the deadline of each member it stops (derived from the one
//! around it: never later; none when neither has a time limit) in that member's [`Scope`]
//! before it cancels it, so containers nested in the member derive theirs from it. Each
//! member has a cell of its own: a sequence stops its members one after another, and one
//! member's deadline is not a deadline of a container around another (which may be stopping
//! on its own meanwhile). The deadline of
//! the container around is passed down to every member's cell, stopped yet or not, and wakes
//! a nested container already stopping under a later deadline of its own. At
//! the deadline the container first takes the core's report of everything still pending
//! below the members it stops, names every hung *leaf* (a task with no pending task below
//! it) with its path, creation site and age, and only then aborts (`shutdown` with no
//! grace). A nested container that reaches the same deadline first reports its leaves
//! itself; either way each hung leaf is named once. What a container collects (its members'
//! failures, the leaves it named) is kept where the container around finds it ([`Hosted`]),
//! so a nested container aborted before it returns loses none of it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::LocalKey;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, Cancelled, ConfigError, ServiceError};
use super::exit::{Exit, DROPPED, PANICKED, RETURNED};
use super::service::{Ready, Service, WhenReady};
use super::status::{HubRun, Owner, Reporter, RunId, ServiceState, StatusHub};
use crate::node::{drop_in_loop, DropInLoop, DropQueue};
use crate::pruned::Pruned;
use crate::shutdown::is_unlimited;
use crate::{GroupId, TaskId, TaskInfo, WaitGroup};

/// The stop timeout of a group or sequence unless set otherwise.
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a container waits, at its deadline, for the containers nested in its members
/// to report (they reach the same deadline at the latest, and abort at once).
const REPORT_WINDOW: Duration = Duration::from_millis(100);

/// How long a container waits for those reports in all: a window is followed by another
/// while member runs keep ending in the tree (the reports are coming up a deep nesting),
/// up to this.
const REPORT_LIMIT: Duration = Duration::from_secs(1);

/// `now + d`, saturating: `Duration::MAX` means no limit and never panics.
pub(crate) use crate::shutdown::deadline_after;

tokio::task_local! {
    /// The scope of the member run being polled (or built), for containers nested in it.
    static SCOPE: Scope;
}

/// What a member run passes down to the containers nested in it.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// The member's group: nested containers make theirs as children of it.
    group: WaitGroup,
    /// The member's path (`"top/nested"`).
    path: Arc<str>,
    /// The path of the container the member is in (`"top"`).
    container: Arc<str>,
    /// The member's name in that container (`"nested"`).
    name: Arc<str>,
    /// The tree's status hub and the member's name relative to it.
    hub: Option<(StatusHub, String)>,
    /// The member's stop deadline, once the container around it stops it, or earlier the
    /// deadline of a container further around, once that one stops: never another member's.
    deadline: DeadlineCell,
    /// Set by a member that reports its own status (a restarter), so that the container
    /// around it does not report it a second time.
    self_reports: Arc<AtomicBool>,
    /// How a restarter in the member reports the end of its current attempt, for the
    /// container around to report it in its stead when it aborts the member at its deadline.
    end_report: EndReport,
    /// The containers built in the member's run, or in an attempt of a restarter run there
    /// (its attempts share this): see [`Hosted`].
    hosted: Arc<Hosted>,
    /// What the whole tree shares: sites for stop reports, and its count of ended runs.
    tree: Tree,
    /// The nearest container run around the member that reports to a hub under a path
    /// prefix, held while the member's task future lives (see [`HubRun`]).
    hub_run: Option<Arc<HubRun>>,
}

/// The stop deadline of one member run, shared with what is nested in it. Empty until a stop
/// with a time limit reaches the member (its container's, or one further around): a stop
/// without one sets none, so a deadline here always bounds something.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeadlineCell(Arc<DeadlineState>);

#[derive(Debug, Default)]
struct DeadlineState {
    at: Mutex<Option<Instant>>,
    /// Notified each time `at` comes earlier, for a nested container already stopping
    /// under a later deadline of its own.
    lowered: Notify,
}

impl DeadlineCell {
    pub(crate) fn get(&self) -> Option<Instant> {
        *self.0.at.lock()
    }

    /// Lowers the deadline to `at` (sets it, if none yet): a member's deadline only comes
    /// earlier, whether from its own stop or from a container around that stops.
    fn lower(&self, at: Instant) {
        let mut deadline = self.0.at.lock();
        if deadline.map_or(true, |d| at < d) {
            *deadline = Some(at);
            drop(deadline);
            self.0.lowered.notify_waiters();
        }
    }

    /// Resolves once the deadline is earlier than `than` (at once if it already is): any
    /// deadline, if `than` is `None` (no time limit).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub(crate) async fn earlier_than(&self, than: Option<Instant>) {
        loop {
            let lowered = self.0.lowered.notified();
            let mut lowered = std::pin::pin!(lowered);
            // Registered before the look, so a lowering after it is not missed.
            lowered.as_mut().enable();
            if self
                .get()
                .is_some_and(|at| than.map_or(true, |than| at < than))
            {
                return;
            }
            lowered.await;
        }
    }
}

/// What one member run hosts: the containers built in it (or in the attempts of a restarter
/// run there), each with what it has collected so far, for the container around the member
/// to read if it aborts the member at its deadline.
///
/// A container keeps its failures here as they come ([`Errors`]), not only in the value it
/// returns, so an abort loses none of them: neither those of a nested container stopping on
/// its own (say a member of it failed) when the container around reaches an earlier
/// deadline, nor the report of one whose return did not come within the
/// [`REPORT_WINDOW`]. The container around walks these, down through the members' runs of
/// each container, to any depth, with a stack.
///
/// Lock order: a [`Hosted`]'s list, then a [`Collected`]'s state; neither is held across
/// an `.await` or user code.
#[derive(Debug, Default)]
pub(crate) struct Hosted {
    /// How many container runs (or `TasksService` runs, which report on their return) in
    /// the run are under way, each counted by its [`Hosting`] from the call that made it to
    /// its return or drop. A restarter alone reports nothing to wait for, and counts none.
    live: AtomicUsize,
    /// Set when one of those runs returned a failure, which the member may be carrying up
    /// to its own return. Not cleared: whether the member let it go is not known.
    carrying: AtomicBool,
    /// The containers built in the run that are running, and some that ended: ended ones
    /// are dropped in batches as others are added (see [`Pruned`]).
    containers: Mutex<Pruned<Arc<Collected>>>,
    /// The container the member run is in, and the member's name: where the failures of a
    /// container built in the run go if the abort of a container around drops it
    /// ([`Run::send_up`]). Weak: that container holds this through its members. `None` for
    /// a run in no container (a restarter at a root).
    owner: Option<(Weak<Collected>, String)>,
}

impl Hosted {
    /// What member `name`'s run hosts, in the container whose failures `owner` collects.
    fn owned_by(owner: &Arc<Collected>, name: &str) -> Self {
        Hosted {
            owner: Some((Arc::downgrade(owner), name.to_owned())),
            ..Hosted::default()
        }
    }

    /// Whether the container around, at its deadline, waits for the member's report before
    /// aborting it ([`Run::let_nested_report`]): a container runs in the member run (its
    /// deadline is the one around at the latest, so it reports and returns then), or one
    /// returned a failure. A member whose containers all ended otherwise is aborted at once.
    fn may_report(&self) -> bool {
        // Acquire in `hosts_a_run`, paired with the release in `Hosting`'s drop: a run that
        // returned a failure and is no longer counted has set `carrying` before.
        self.hosts_a_run() || self.carrying.load(Ordering::Relaxed)
    }

    /// Whether a container or `TasksService` run is under way in the member run.
    fn hosts_a_run(&self) -> bool {
        self.live.load(Ordering::Acquire) > 0
    }

    fn add(&self, container: Arc<Collected>) {
        self.containers
            .lock()
            .push(container, |c| !c.state.lock().ended);
    }

    /// The containers running now in this run and, below them, in the runs of their
    /// members, to any depth: an explicit stack, not recursion (users build the nesting).
    fn running_below(self: &Arc<Self>) -> Vec<Arc<Collected>> {
        let mut found = Vec::new();
        let mut stack = vec![self.clone()];
        while let Some(hosted) = stack.pop() {
            let running: Vec<Arc<Collected>> = hosted
                .containers
                .lock()
                .iter()
                .filter(|c| !c.state.lock().ended)
                .cloned()
                .collect();
            for container in running {
                let members = container.state.lock();
                stack.extend(members.members.iter().flatten().map(|m| m.hosted.clone()));
                drop(members);
                found.push(container);
            }
        }
        found
    }
}

/// One container run's failures so far, and what its members' runs host: see [`Hosted`].
#[derive(Debug)]
pub(crate) struct Collected {
    /// The group of the task the container runs in (its member's run, or a restarter's
    /// attempt), if inside a container: while the container runs, that task is not a hung
    /// leaf, whatever is pending below it.
    host: Option<GroupId>,
    /// The container's path, its members' names by slot, and where it reports them: for a
    /// container around that aborts it before it reported them ([`report_below`]).
    path: Arc<str>,
    names: Vec<String>,
    reporter: Reporter,
    state: Mutex<CollectedState>,
}

impl Drop for Collected {
    /// Lets go of the collected failures this one sends on to ([`CollectedState::forward`])
    /// in a loop: those marks chain the levels of a nesting thousands deep, each to one
    /// around it, and the drop glue would follow a chain whose last holds are these by
    /// recursion, as deep as the nesting.
    fn drop(&mut self) {
        let mut next = self.state.get_mut().forward.take();
        while let Some((up, _)) = next {
            next = Arc::into_inner(up).and_then(|mut up| up.state.get_mut().forward.take());
        }
    }
}

/// Reports a member run's end to the hubs once: by its container, or by a container around
/// that aborts that one first ([`report_below`]), whichever comes first. Not for a run that
/// reports its own end (a restarter: its [`EndReport`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct EndOnce {
    self_reports: Arc<AtomicBool>,
    /// Whether the end was reported; locked around the `Starting` report too, so that
    /// neither comes after the other's check.
    claimed: Arc<Mutex<bool>>,
}

impl EndOnce {
    fn self_reports(&self) -> bool {
        self.self_reports.load(Ordering::Relaxed)
    }

    /// Reports the end of member `name` with `reporter`, unless the run reports its own or
    /// its end was reported already.
    fn report(&self, reporter: &Reporter, name: &str, failure: Option<&ServiceError>) {
        let mut claimed = self.claimed.lock();
        if !self.self_reports() && !*claimed {
            *claimed = true;
            reporter.ended(name, failure);
        }
    }

    /// Runs `end` (a report of the run's end made elsewhere: a restarter's of its attempt)
    /// unless the end was reported already, and claims it.
    pub(crate) fn claim(&self, end: impl FnOnce()) {
        let mut claimed = self.claimed.lock();
        if !*claimed {
            *claimed = true;
            end();
        }
    }

    /// Runs `starting` (the `Starting` report) unless the end was reported already: a run
    /// whose container's future was dropped before the run's task first ran (its members
    /// then reported `Stopped` by that `Drop`) stayed `Starting`.
    fn unless_ended(&self, starting: impl FnOnce()) {
        let claimed = self.claimed.lock();
        if !*claimed {
            starting();
        }
    }
}

#[derive(Debug)]
struct CollectedState {
    errors: Vec<ServiceError>,
    /// Each member's current run, by slot (`None` once its end was taken).
    members: Vec<Option<Spawned>>,
    /// The container's run ended: it returned, or its future was dropped.
    ended: bool,
    /// The hung leaves this container named itself (its own stop timeouts in `errors`) that
    /// a container around took: a container between the two, taking after, then knows them
    /// named and does not name them again from its pending report (where the aborted leaf
    /// is still listed while its abort lands).
    taken: Vec<Arc<str>>,
    /// The paths of the members this run's deadline abort is aborting, until their aborts
    /// land. A container around that reads the pending report meanwhile leaves what is
    /// below them alone: this run named its hung leaves before its abort, and the rest is
    /// going (a chain's levels dropped one by one as the abort lands, the lowest still
    /// pending would look like a hung leaf).
    aborting: Vec<Arc<str>>,
    /// Where failures that reach this container's collected ones go once a container around
    /// took those for the last time: that container's collected failures, attributed to its
    /// member `name` ([`deliver`]). Set by that last take ([`take_collected`]), or, if none
    /// came first, by the abort of a container around dropping this run: then the container
    /// around it ([`Run`]'s `Drop`).
    forward: Option<(Arc<Collected>, String)>,
}

/// A container run's failures, kept in its [`Collected`], where the container around finds
/// them if it aborts this one before it returns.
#[derive(Debug)]
pub(crate) struct Errors(Arc<Collected>);

impl Errors {
    /// Keeps `error` with the run's failures; sent on to the container around's if that one
    /// took them for the last time ([`deliver`]): then this run is being dropped, and what it
    /// would have returned goes where its return would have.
    pub(crate) fn push(&self, error: ServiceError) {
        deliver(&self.0, vec![error]);
    }

    /// [`push`](Self::push) for each of `errors`.
    fn extend(&self, errors: impl IntoIterator<Item = ServiceError>) {
        deliver(&self.0, errors.into_iter().collect());
    }

    fn take(&self) -> Vec<ServiceError> {
        std::mem::take(&mut self.0.state.lock().errors)
    }

    /// Drops the hung leaves this container named itself (its own stop timeouts, not
    /// those nested in a member's failure) whose path `forget` picks.
    fn forget_leaves(&self, forget: impl Fn(&str) -> bool) {
        self.0
            .state
            .lock()
            .errors
            .retain(|e| !matches!(e, ServiceError::StopTimeout { name, .. } if forget(name)));
    }

    fn set_member(&self, i: usize, run: Option<Spawned>) {
        self.0.state.lock().members[i] = run;
    }

    /// The deadline's aborts landed, or their wait was dropped: see
    /// [`CollectedState::aborting`].
    fn stop_aborting(&self) {
        self.0.state.lock().aborting.clear();
    }
}

impl Drop for Errors {
    /// Marks the run ended, and lets go of what its members' runs host: so an ended chain of
    /// nested containers is never dropped link by link from its top (a recursion as deep as
    /// the nesting).
    fn drop(&mut self) {
        let members = {
            let mut state = self.0.state.lock();
            state.ended = true;
            std::mem::take(&mut state.members)
        };
        drop(members);
    }
}

/// How the restarters in a member run report the ends of their current attempts: a cell per
/// restarter, set by it for each attempt. Two restarters can run side by side in one member,
/// and a restarter in another's attempt adds its cell here too (a restarter hands its
/// member's reports on to its attempts' runs). An end is reported by whoever takes it: the
/// restarter when its attempt ends, or the container around when it aborts the member at its
/// deadline, with the hung leaf at or below the attempt (the restarter's own report, if it
/// came at all, would say `Stopped`: an aborted attempt ends as if it returned `Ok`).
///
/// Lock order: the list, then a cell; a restarter takes only its own cell.
pub(crate) type EndReport = Arc<EndReports>;

/// See [`EndReport`].
#[derive(Debug, Default)]
pub(crate) struct EndReports {
    cells: Mutex<Pruned<Arc<EndCell>>>,
}

/// One restarter's current attempt end, if not taken yet.
pub(crate) type EndCell = Mutex<Option<AttemptEnd>>;

impl EndReports {
    /// A cell for one more restarter in the member run. Cells no restarter holds any more are
    /// dropped in batches ([`Pruned`]): the list is bounded by the member run's peak of
    /// restarters, and dropped with the run.
    pub(crate) fn cell(&self) -> Arc<EndCell> {
        let cell = Arc::<EndCell>::default();
        self.cells
            .lock()
            .push(cell.clone(), |cell| Arc::strong_count(cell) > 1);
        cell
    }

    /// Takes every restarter's current attempt end, one per hub entry: restarters nested
    /// under one name (a restarter of a restarter) report to the same entries, and are
    /// reported once, as the first (outermost) of them. Linear in the cells (one hashed key
    /// per end, not a comparison with every end kept).
    pub(crate) fn take_all(&self) -> Vec<AttemptEnd> {
        let cells = self.cells.lock();
        let mut entries = HashSet::new();
        cells
            .iter()
            .filter_map(|cell| cell.lock().take())
            .filter(|end| entries.insert(end.reporter.entries(&end.name)))
            .collect()
    }
}

/// What an [`EndCell`] holds: the reporter and name the attempt's end is reported with, and
/// the attempt's path.
#[derive(Debug, Clone)]
pub(crate) struct AttemptEnd {
    pub(crate) reporter: Reporter,
    pub(crate) name: String,
    pub(crate) path: Arc<str>,
    /// The attempt's run: its end is reported once, and never before its `Starting`.
    pub(crate) end: EndOnce,
}

impl AttemptEnd {
    /// Reports the attempt's end, `leaf` the hung leaf that failed it (none: stopped).
    pub(crate) fn report(&self, leaf: Option<&ServiceError>) {
        self.end.claim(|| self.reporter.ended(&self.name, leaf));
    }
}

/// What every container and member run in the tree of one root container shares.
#[derive(Debug, Default)]
pub(crate) struct TreeShared {
    /// The user's creation site (where the member was added) of each member run under way,
    /// by the container's path, then the member's name: a member's task is named for the
    /// member in a group named for the container, so a report's task finds its site by its
    /// group's name and its own, not by the two joined (which a root container's name
    /// holding a `/` could make ambiguous: members' names hold none, [`check_name`]).
    ///
    /// Each entry is held by the task futures of the runs under way there ([`SiteHold`]),
    /// and leaves with the last of them: the map holds what is live, not every member that
    /// ever ran in the tree (a member serving a fresh container per job, each with a member
    /// of its own name, would add one a job for as long as the root runs). A task a stop
    /// report names is pending, so its future, and the site, are still there.
    sites: Mutex<SitesByContainer>,
    /// The number of the next hold on a site ([`SiteHold::run`]).
    holds: AtomicU64,
    /// How many member runs have ended anywhere in the tree: while it grows, the reports of
    /// nested containers are still coming up, and a container waiting for them at its
    /// deadline waits on ([`Run::let_nested_report`]).
    ended: AtomicU64,
    /// Dropped with the tree, once the root's run and every member run's task future in it
    /// are gone: what the root container's next run waits for ([`LastRun`]).
    gone: Mutex<Option<oneshot::Sender<()>>>,
}

/// The [`TreeShared`] of a tree.
pub(crate) type Tree = Arc<TreeShared>;

/// The sites of [`TreeShared`]: container path, then member name.
type SitesByContainer = HashMap<String, HashMap<String, HeldSites>>;

/// The sites held for one member name at one container path, each with how many runs under
/// way hold it: a restarter's attempts and the member run they are in, or two containers
/// built in one member run (they share its path), each with a member of that name. Never
/// empty while in the map. The last one added is the one named (a report cannot tell such
/// runs apart); distinct sites are places in the user's code, so the list stays short.
#[derive(Debug, Default)]
struct HeldSites {
    sites: Vec<(&'static Location<'static>, usize)>,
    /// The token of each run holding a site, by the run's [`SiteHold::run`]: the member
    /// runs under way here (a map: a member run that builds thousands of containers side by
    /// side, each with a member of this name, lets go of them in any order).
    runs: HashMap<u64, CancellationToken>,
}

impl HeldSites {
    /// The site a report names.
    fn named(&self) -> Option<&'static Location<'static>> {
        self.sites.last().map(|&(site, _)| site)
    }

    /// Whether a run under way here was asked to stop (its token cancelled). A hung leaf
    /// whose stop was never asked (a [`Sequence`](super::Sequence)'s service whose turn had
    /// not come, or a group's member whose group had not begun its stop, when a container
    /// around aborted them) had no time to stop: its report says so ([`hung_leaves`]).
    fn stop_asked(&self) -> bool {
        self.runs.values().any(CancellationToken::is_cancelled)
    }

    fn hold(&mut self, site: &'static Location<'static>, run: u64, token: CancellationToken) {
        self.runs.insert(run, token);
        match self.sites.iter().position(|&(s, _)| s == site) {
            Some(i) => {
                let (_, holders) = self.sites.remove(i);
                self.sites.push((site, holders + 1));
            }
            None => self.sites.push((site, 1)),
        }
    }

    /// Lets go of run `run`'s hold on `site`; whether any site is still held.
    fn release(&mut self, site: &'static Location<'static>, run: u64) -> bool {
        self.runs.remove(&run);
        if let Some(i) = self.sites.iter().position(|&(s, _)| s == site) {
            self.sites[i].1 -= 1;
            if self.sites[i].1 == 0 {
                self.sites.remove(i);
            }
        }
        !self.sites.is_empty()
    }
}

impl TreeShared {
    /// Resolves once the tree is gone (see [`gone`](Self::gone)).
    fn when_gone(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.gone.lock() = Some(tx);
        rx
    }

    /// Records `site` as where member `name` of the container at `path` was added, and
    /// `token` as the run's, for as long as the hold returned is kept (by the member run's
    /// task future).
    fn hold_site(
        self: &Arc<Self>,
        path: &Arc<str>,
        name: &Arc<str>,
        site: &'static Location<'static>,
        token: CancellationToken,
    ) -> SiteHold {
        let run = self.holds.fetch_add(1, Ordering::Relaxed);
        let mut sites = self.sites.lock();
        let members = match sites.get_mut(&**path) {
            Some(members) => members,
            None => sites.entry(path.to_string()).or_default(),
        };
        match members.get_mut(&**name) {
            Some(held) => held.hold(site, run, token),
            None => members
                .entry(name.to_string())
                .or_default()
                .hold(site, run, token),
        }
        SiteHold {
            tree: self.clone(),
            path: path.clone(),
            name: name.clone(),
            site,
            run,
        }
    }

    /// Where member `name` of the container at `path` was added, if a run of it is under
    /// way.
    fn site(&self, path: &str, name: &str) -> Option<&'static Location<'static>> {
        self.sites.lock().get(path)?.get(name)?.named()
    }
}

/// A member run's hold on its site in [`TreeShared::sites`], kept by its task's future: the
/// site leaves the map with the last run holding it.
#[derive(Debug)]
struct SiteHold {
    tree: Tree,
    path: Arc<str>,
    name: Arc<str>,
    site: &'static Location<'static>,
    /// This hold's number in the tree, unique.
    run: u64,
}

impl Drop for SiteHold {
    fn drop(&mut self) {
        let mut sites = self.tree.sites.lock();
        let Some(members) = sites.get_mut(&*self.path) else {
            return;
        };
        let held = members
            .get_mut(&*self.name)
            .is_some_and(|held| held.release(self.site, self.run));
        if !held {
            members.remove(&*self.name);
            if members.is_empty() {
                sites.remove(&*self.path);
            }
        }
    }
}

/// Where a container (or restarter) runs: its group, path, inherited hub and deadline.
#[derive(Debug)]
pub(crate) struct Place {
    /// The container's own group (for a leaf service: a child of the member's group).
    pub(crate) wg: WaitGroup,
    /// The member group this place was made in, if inside a container.
    scope_group: Option<WaitGroup>,
    pub(crate) path: Arc<str>,
    pub(crate) hub: Option<(StatusHub, String)>,
    pub(crate) parent_deadline: Option<DeadlineCell>,
    pub(crate) tree: Tree,
    /// For a place that reports its own status, inside a container: see [`EndReport`].
    pub(crate) end_report: Option<EndReport>,
    /// Whether the place is the member run it is in (a restarter added as the member: it
    /// has the member's name), or a root: it then reports as that member, and its runs
    /// take the member's path, in [`container`](Self::container). Otherwise (run inside a
    /// member of another name, which the container around reports) its runs are below the
    /// member, as a nested container's members are.
    pub(crate) is_member: bool,
    /// The path of the container around the member run the place is in (`""` at a root).
    pub(crate) container: Arc<str>,
    /// Where the member run the place is in was added, if inside a container.
    pub(crate) member_site: Option<&'static Location<'static>>,
    /// What the member run the place is in hosts, for a container built here to add itself
    /// to, and for a restarter to hand to its attempts: the member hosts what an attempt
    /// does (see [`Hosted`]).
    pub(crate) hosted: Option<Arc<Hosted>>,
    /// The nearest container run around that reports to a hub under a path prefix: the
    /// runs made here end for the hub before it, and a restarter's attempts hold it.
    pub(crate) hub_run: Option<Arc<HubRun>>,
}

/// One container run (or `TasksService` run) counted as under way in the member run it is
/// in ([`Hosted::live`]), from the call that made its future until that future returns or
/// is dropped; a failure it returns is marked as carried ([`Hosted::carrying`]). Empty for
/// a run at a root.
#[derive(Debug)]
pub(crate) struct Hosting(Option<Arc<Hosted>>);

impl Hosting {
    /// Runs `run`, the hosted run's future, counted until it returns or is dropped.
    pub(crate) async fn over<T, E>(self, run: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let result = run.await;
        if let (Err(_), Some(hosted)) = (&result, &self.0) {
            hosted.carrying.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Drop for Hosting {
    fn drop(&mut self) {
        if let Some(hosted) = &self.0 {
            hosted.live.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Place {
    /// The place of a container (or `TasksService`) named `name` whose run is being made
    /// now, and that run's count in the member run it is in: a container reports its hung
    /// leaves before its deadline's abort, so the container around waits for it
    /// ([`Hosted`]). Run the future under [`Hosting::over`].
    pub(crate) fn hosting(name: &str) -> (Place, Hosting) {
        let place = Place::here(name, false);
        let hosted = place.hosted.clone();
        if let Some(hosted) = &hosted {
            hosted.live.fetch_add(1, Ordering::Relaxed);
        }
        (place, Hosting(hosted))
    }

    /// The place of a restarter named `name` being made now; it hosts nothing by itself (its
    /// attempts' runs may host a container, which counts itself).
    pub(crate) fn restarter(name: &str) -> Place {
        Place::here(name, true)
    }

    /// The place of a container named `name` being built now: inside the member run whose
    /// scope is current, or a root of its own.
    fn here(name: &str, self_reports: bool) -> Place {
        match SCOPE.try_with(Clone::clone) {
            Ok(scope) => {
                // Only a place that is the member (the same name) takes over its reports: one
                // run inside a member of another name (`api` running a restarter of `worker`)
                // leaves `api` to the container around, and reports below it.
                let is_member = self_reports && *scope.name == *name;
                if is_member {
                    scope.self_reports.store(true, Ordering::Relaxed);
                }
                let member_site = scope.tree.site(&scope.container, &scope.name);
                Place {
                    wg: scope.group.task().name(scope.path.to_string()).child(),
                    scope_group: Some(scope.group),
                    path: scope.path,
                    hub: scope.hub,
                    parent_deadline: Some(scope.deadline),
                    tree: scope.tree,
                    end_report: self_reports.then_some(scope.end_report),
                    is_member,
                    container: scope.container,
                    member_site,
                    hosted: Some(scope.hosted),
                    hub_run: scope.hub_run,
                }
            }
            Err(_) => Place {
                wg: WaitGroup::builder().name(name.to_owned()).build(),
                scope_group: None,
                path: name.into(),
                hub: None,
                parent_deadline: None,
                tree: Tree::default(),
                end_report: None,
                is_member: true,
                container: "".into(),
                member_site: None,
                hosted: None,
                hub_run: None,
            },
        }
    }
}

impl Place {
    /// The member group this place was made in, if inside a container.
    pub(crate) fn scope_group(&self) -> Option<&WaitGroup> {
        self.scope_group.as_ref()
    }
}

/// How a member's return is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Returning `Ok` before being stopped is a failure (`ExitedEarly`).
    LongRunning,
    /// Returning `Ok` is fine and counts as ready.
    OneShot,
    /// Returning at all ends the container, with this member's result.
    Ending,
}

/// A service held by a group or sequence.
pub(crate) struct Member {
    pub(crate) service: Arc<Mutex<Box<dyn Service>>>,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) site: &'static Location<'static>,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) stop_timeout: Option<Duration>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        drop_service_later(&mut self.service);
    }
}

/// A service held by a container or a restarter, dropped by [`drop_service_later`].
pub(crate) type SharedService = Arc<Mutex<Box<dyn Service>>>;

impl DropInLoop for SharedService {
    fn queue() -> &'static LocalKey<DropQueue<Self>> {
        thread_local! {
            static QUEUE: DropQueue<SharedService> = const { RefCell::new(None) };
        }
        &QUEUE
    }
}

/// Called by the `Drop` of what holds a service (a container's member, a restarter), so
/// that containers nested in containers to any depth (a structure users build) drop on a
/// bounded stack, not by the drop glue's recursion through each level: takes the holder's
/// reference (leaving it a shared placeholder that owns nothing) and drops it by the core's
/// [`drop_in_loop`], as a group's links are.
pub(crate) fn drop_service_later(holder: &mut SharedService) {
    drop_in_loop([std::mem::replace(holder, placeholder())]);
}

/// What a dropped holder keeps instead of its service: one shared, empty service, so that
/// taking the real one out needs neither an allocation nor an `Option` in every holder.
fn placeholder() -> SharedService {
    struct Nothing;
    impl Service for Nothing {
        fn name(&self) -> &str {
            ""
        }
        fn run(
            &mut self,
            _ctx: CancellationToken,
            _ready: Ready,
        ) -> BoxFuture<'static, Result<(), BoxError>> {
            Box::pin(async { Ok(()) })
        }
    }
    static EMPTY: std::sync::OnceLock<SharedService> = std::sync::OnceLock::new();
    EMPTY
        .get_or_init(|| Arc::new(Mutex::new(Box::new(Nothing))))
        .clone()
}

impl Member {
    pub(crate) fn new(service: impl Service, kind: Kind, site: &'static Location<'static>) -> Self {
        Member {
            name: service.name().to_owned(),
            service: Arc::new(Mutex::new(Box::new(service))),
            kind,
            site,
            start_timeout: None,
            stop_timeout: None,
        }
    }
}

/// Checks that no two members share a name.
pub(crate) fn check_names(group: &str, members: &[Member]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for m in members {
        check_name(group, &m.name)?;
        if !seen.insert(m.name.as_str()) {
            return Err(ConfigError::DuplicateName {
                group: group.to_owned(),
                name: m.name.clone(),
            });
        }
    }
    Ok(())
}

/// Rejects a member's name that is empty or holds a `/`, the separator of paths (see
/// [`ConfigError::InvalidName`]). A root container's own name is not a member's: it may hold
/// one, as it only prefixes the paths below it.
pub(crate) fn check_name(group: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains('/') {
        return Err(ConfigError::InvalidName {
            group: group.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Rejects a zero duration (`Duration::MAX` is fine: no limit).
pub(crate) fn check_duration(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::ZeroDuration { setting })
    } else {
        Ok(())
    }
}

/// Reports every member `Idle` at build, as built by `owner`; a member that already
/// reported itself so (a restarter given the same hub) is not reported twice.
pub(crate) fn report_idle(hub: Option<&StatusHub>, members: &[Member], owner: Owner) {
    if let Some(hub) = hub {
        for m in members {
            hub.report_built(&m.name, owner);
        }
    }
}

/// How one member run ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Returned `Ok(())` or [`Cancelled`].
    Done,
    /// Returned an error.
    Error(BoxError),
    /// Panicked (in `run`, the future, its `Drop` or a payload's `Drop`).
    Panic(String),
}

impl End {
    /// The failure of member `name` that ended so, if it is one whatever the member's kind
    /// (a return with `Ok` is judged by the kind, and by whether it was stopped).
    pub(crate) fn failure(self, name: &str) -> Option<ServiceError> {
        match self {
            End::Done => None,
            End::Error(e) => Some(ServiceError::attribute(name, e)),
            End::Panic(message) => Some(ServiceError::Panicked {
                name: name.to_owned(),
                message,
            }),
        }
    }
}

/// One spawned member run: its group, its task, and the slot its error is handed in.
#[derive(Debug, Clone)]
pub(crate) struct Spawned {
    pub(crate) group: WaitGroup,
    task: TaskId,
    error: Arc<Mutex<Option<BoxError>>>,
    /// See [`EndReport`].
    end_report: EndReport,
    hosted: Arc<Hosted>,
    /// How the service's future ended, if on its own.
    exit: Arc<Exit>,
    /// Whether the run reports its own end (a restarter), and whether its end was reported.
    pub(crate) end: EndOnce,
}

/// A member run's task future: the member's own ([`member_task`]), and how it ended, set in
/// its [`Exit`] as it returns, panics or is dropped. If its container left the report to it
/// by then, it reports the end itself; if before its first poll, the service is not started.
struct MemberRun<F> {
    /// The member's own future, until it is dropped ahead of the report of its end.
    run: Option<Pin<Box<F>>>,
    exit: Arc<Exit>,
    /// Where the future's error is handed over.
    error: Arc<Mutex<Option<BoxError>>>,
    /// The run as the hubs know it, held until the end is reported (the member's own future
    /// lets go of it as it returns).
    _hub_run: Option<Arc<HubRun>>,
    /// Polled once: the service was started (or not, its container gone).
    polled: bool,
    ended: bool,
}

impl<F> MemberRun<F> {
    /// Marks how the run ended, and reports it if its container is gone.
    fn end(&mut self, how: u8, panic: Option<String>) {
        self.ended = true;
        if let Some(message) = panic {
            *self.exit.panic.lock() = Some(message);
        }
        let Some(heir) = self.exit.ended(how) else {
            return;
        };
        let end = match how {
            RETURNED => match self.error.lock().take() {
                Some(e) => End::Error(e),
                None => End::Done,
            },
            PANICKED => End::Panic(self.exit.panic.lock().take().unwrap_or_default()),
            _ => End::Done,
        };
        heir(end);
    }
}

impl<F: Future<Output = Result<(), BoxError>>> Future for MemberRun<F> {
    type Output = Result<(), BoxError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        if !this.polled {
            this.polled = true;
            // Its container was dropped before this task first ran: the service is not
            // started (nothing would stop it but the abort on its way), and says `Stopped`.
            if this.exit.left() {
                this.end(DROPPED, None);
                return std::task::Poll::Ready(Ok(()));
            }
        }
        let Some(run) = this.run.as_mut() else {
            panic!("a member's task polled after it ended");
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| run.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(ready) => {
                this.end(RETURNED, None);
                ready
            }
            Err(payload) => {
                this.end(PANICKED, Some(panic_text(&*payload)));
                // The core records it as the task's panic.
                std::panic::resume_unwind(payload)
            }
        }
    }
}

impl<F> Drop for MemberRun<F> {
    /// Dropped before it ended (aborted, or its runtime shut down): the member's future is
    /// dropped first, so that its end is reported once its `Drop` has run, and a panic there
    /// is that end (`Panicked`, resumed for the core to record, as a panic of the future's
    /// `Drop` always was).
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let run = self.run.take();
        match std::panic::catch_unwind(AssertUnwindSafe(|| drop(run))) {
            Ok(()) => self.end(DROPPED, None),
            Err(payload) => {
                self.end(PANICKED, Some(panic_text(&*payload)));
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// A panic's message as the core records it (a payload that is no string says so).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    crate::error::panic_message(payload).unwrap_or_else(|| crate::error::NOT_A_STRING.to_owned())
}

/// Reports the end of a member whose container's future was dropped before it took that
/// end: to the container's hubs, and to what the container collected (for a container
/// around that is aborting it). See [`Spawned::leave`].
struct Orphan {
    reporter: Reporter,
    name: String,
    end: EndOnce,
    collected: Arc<Collected>,
}

impl Orphan {
    fn report(self, end: End) {
        let failure = end.failure(&self.name);
        self.end
            .report(&self.reporter, &self.name, failure.as_ref());
        if let Some(failure) = failure {
            deliver(&self.collected, vec![failure]);
        }
    }
}

impl Spawned {
    /// Spawns one run of `service` as the task `name` of a new child group of `parent`,
    /// named `container` (the container's path), under `scope`'s settings. `site`: where the
    /// member was added, which the tree holds for stop reports while the task's future is
    /// there. `hosted`: what the run hosts is added to, and `end_report`: where restarters in
    /// it report their attempts' ends, if not fresh ones (a restarter's attempts use their
    /// member's). `hub_run`: held by the task's future (in its scope), so that the run it
    /// belongs to ends for the hubs after the run's last report ([`HubRun`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        parent: &WaitGroup,
        container: &Arc<str>,
        name: &str,
        site: Option<&'static Location<'static>>,
        service: Arc<Mutex<Box<dyn Service>>>,
        ready: Ready,
        token: CancellationToken,
        hub: Option<(StatusHub, String)>,
        deadline: DeadlineCell,
        tree: Tree,
        hosted: Option<Arc<Hosted>>,
        end_report: Option<EndReport>,
        hub_run: Option<Arc<HubRun>>,
        on_start: impl FnOnce() + Send + 'static,
    ) -> Spawned {
        let group = parent.task().name(container.to_string()).child();
        let error: Arc<Mutex<Option<BoxError>>> = Arc::default();
        let self_reports = Arc::new(AtomicBool::new(false));
        let end_report = end_report.unwrap_or_default();
        let hosted = hosted.unwrap_or_default();
        let exit = Arc::new(Exit::new());
        let path = member_path(container, name);
        let name: Arc<str> = name.into();
        let hold = site.map(|site| tree.hold_site(container, &name, site, token.clone()));
        let scope = Scope {
            group: group.clone(),
            path,
            container: container.clone(),
            name: name.clone(),
            hub,
            deadline,
            self_reports: self_reports.clone(),
            end_report: end_report.clone(),
            hosted: hosted.clone(),
            tree,
            hub_run,
        };
        let end = EndOnce {
            self_reports: self_reports.clone(),
            claimed: Arc::default(),
        };
        let on_start = {
            let end = end.clone();
            move || end.unless_ended(on_start)
        };
        let slot = error.clone();
        let run_exit = exit.clone();
        let run_error = error.clone();
        let run_hub = scope.hub_run.clone();
        // The member's context is the container's token, not the group's: cancelling a
        // core group cancels every group below it at once, which would stop a nested
        // sequence all at once instead of in reverse. The core's cancellation is used only
        // by the abort (`shutdown`), where stopping everything at once is the point.
        // Created where the member was added, as the core's reports and
        // events name it (not this line).
        let task = group
            .task()
            .name(name.to_string())
            .go_at(site.unwrap_or_else(Location::caller), move |_group_ctx| {
                MemberRun {
                    run: Some(Box::pin(member_task(
                        scope, service, token, ready, slot, on_start, hold,
                    ))),
                    exit: run_exit,
                    error: run_error,
                    _hub_run: run_hub,
                    polled: false,
                    ended: false,
                }
            })
            .id();
        Spawned {
            group,
            task,
            error,
            end_report,
            hosted,
            exit,
            end,
        }
    }

    /// Resolves when the run (and everything below it) is done.
    pub(crate) fn done(&self) -> impl Future<Output = ()> + Send + 'static {
        let group = self.group.clone();
        async move {
            let _ = group.wait().await;
        }
    }

    /// Whether the run's future returned or panicked, rather than being aborted or dropped
    /// by something else than its container (its runtime shutting down, a shutdown of a
    /// group around): only then is [`end`](Self::end) its own end.
    pub(crate) fn ended_on_its_own(&self) -> bool {
        self.exit.on_its_own()
    }

    /// Leaves the report of the run's end to the run, through `heir`, if it has not ended
    /// yet: for a container, restarter or abort whose future is dropped, and that will not
    /// take the end itself. Returns the end if the run had ended already (the caller
    /// reports it: `End::Done` if it was aborted); `None` if the run will report it when it
    /// returns, panics or is dropped (aborted), or if it was left already.
    pub(crate) fn leave(&self, heir: impl FnOnce(End) + Send + 'static) -> Option<End> {
        let how = self.exit.leave(Box::new(heir))?;
        Some(if how & DROPPED != 0 {
            End::Done
        } else {
            self.end()
        })
    }

    /// How the run ended; call once [`done`](Self::done) resolved, or once it ended on its
    /// own ([`ended_on_its_own`](Self::ended_on_its_own)).
    pub(crate) fn end(&self) -> End {
        let id = self.group.id();
        // Taken, not read: the record is the runner's to judge once, and a restarter's
        // container group (which keeps a leaving child's failures) stays small.
        let errors = self.group.take_errors();
        // Set as the panic unwound, before the core records it.
        if let Some(message) = self.exit.panic.lock().take() {
            return End::Panic(message);
        }
        if let Some(e) = errors
            .iter()
            .find(|e| e.group_id() == id && e.id() == self.task && e.is_panic())
        {
            return End::Panic(
                e.panic_message()
                    .unwrap_or(crate::error::NOT_A_STRING)
                    .to_owned(),
            );
        }
        match self.error.lock().take() {
            Some(e) => End::Error(e),
            None => End::Done,
        }
    }
}

/// The future of a member task: builds the run inside the task (so a panicking factory is
/// the task's panic) and hands its error over by value. It keeps the member's site in the
/// tree (`_site`) until it returns or is dropped (aborted).
#[allow(clippy::too_many_arguments)]
async fn member_task(
    scope: Scope,
    service: Arc<Mutex<Box<dyn Service>>>,
    ctx: CancellationToken,
    ready: Ready,
    slot: Arc<Mutex<Option<BoxError>>>,
    on_start: impl FnOnce(),
    _site: Option<SiteHold>,
) -> Result<(), BoxError> {
    // The factory gets a readiness handle of its own, passed on once `Starting` is
    // reported: a factory may report ready before it returns its future, and the container
    // (on another worker) then reported `Running` before `Starting`, which stayed last.
    let (inner, mut when_ready) = Ready::channel();
    let built = SCOPE.sync_scope(scope.clone(), || {
        std::panic::catch_unwind(AssertUnwindSafe(|| service.lock().run(ctx, inner)))
    });
    // Reported once the factory ran, so that a restarter built in it (which reports its
    // own member) was able to say so; before the future is polled, so before `Running`.
    if !scope.self_reports.load(Ordering::Relaxed) {
        on_start();
    }
    // The lock was released by the unwinding, if any; the core records the panic.
    let fut = built.unwrap_or_else(|payload| std::panic::resume_unwind(payload));
    let run = SCOPE.scope(scope, fut);
    tokio::pin!(run);
    let mut outer = Some(ready);
    // Ready passes on `true`; a handle dropped unused, `false` (the outer one dropped).
    let pass_on = |was_ready: bool, outer: &mut Option<Ready>| {
        if let Some(ready) = outer.take().filter(|_| was_ready) {
            ready.ready();
        }
    };
    let result = loop {
        tokio::select! {
            biased;
            was_ready = &mut when_ready, if outer.is_some() => pass_on(was_ready, &mut outer),
            result = &mut run => break result,
        }
    };
    // Ready and returned in the same poll: ready first, as the service said it.
    if outer.is_some() {
        if let Some(was_ready) = (&mut when_ready).now_or_never() {
            pass_on(was_ready, &mut outer);
        }
    }
    drop(outer);
    if let Err(e) = result {
        if !e.is::<Cancelled>() {
            *slot.lock() = Some(e);
        }
    }
    Ok(())
}

/// Aborts everything below a group when dropped before [`disarm`](Self::disarm), so that
/// dropping a container's (or restarter's) future never leaves its members behind.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(Option<WaitGroup>);

impl AbortOnDrop {
    pub(crate) fn new(wg: WaitGroup) -> Self {
        AbortOnDrop(Some(wg))
    }

    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }

    /// Not disarmed: dropping it aborts.
    pub(crate) fn is_armed(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // A closed group was reached by the abort of a container around this one (nothing
        // else closes it: its handle is the service layer's), which closed, cancelled and
        // aborted its whole tree in one pass before any of its futures was dropped, and the
        // groups linked meanwhile (a member started as the pass went by) after. Nested
        // containers and restarters dropped in that abort's wake skip the walks that would
        // repeat it, each over the groups below it: quadratic in the depth.
        if let Some(wg) = self.0.take().filter(|wg| !wg.is_closed()) {
            wg.cancel();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { abort_tree(&wg).await });
            }
        }
    }
}

/// Aborts every task below `root` at once, and waits for the aborts (at most `root`'s abort
/// timeout, all together): one forced stop of the tree, as a second signal makes
/// ([`drain::force`](crate::drain::force)), which walks it once. A shielded section is
/// aborted too: the container's deadline has passed.
///
/// Not a `shutdown(ZERO)` of `root`: that gives each group below, reached after the (zero)
/// deadline, three quarters of its share of the forced phase to stop by itself first, so
/// hung leaves would outlive the container's deadline by up to 750 ms. Nor one per group,
/// deepest first (as before): each walks the groups below it again, quadratic in the
/// depth, and nested containers each abort what is below them (a chain of 2,000 nested
/// groups with a hung leaf took 56 s to stop, against its 1 s stop timeout).
pub(crate) async fn abort_tree(root: &WaitGroup) {
    root.cancel();
    let _ = crate::drain::force(root, crate::CancelReason::Shutdown).await;
}

/// The path of member `name` of the container at `container` (`""` at a root): the path of
/// its run's task in reports.
pub(crate) fn member_path(container: &str, name: &str) -> Arc<str> {
    if container.is_empty() {
        name.into()
    } else {
        format!("{container}/{name}").into()
    }
}

/// Takes what the containers `below` collected so far, with the failures their members
/// returned that they have not taken yet (each reported to its hubs), and the names of the
/// hung leaves they named themselves that a container around took from them before
/// ([`CollectedState::taken`]).
///
/// `last`: the take is the last one of the container taking (its abort's aborts landed, or
/// its future is being dropped as they land), for its member named so. What reaches these
/// containers' collected failures after it then goes to the taker's ([`deliver`]), set in
/// the same lock hold as the take, so that none falls between the two. Without it, a
/// failure that a container's `Drop` (its own abort landing) kept for the container around
/// just after that one took for the last time was lost: in a chain thousands deep on two
/// workers, the hung leaf and the failures below the lowest aborting level, a stop that
/// returned `Ok(())` (`probe-reg2 deepfail 2000 mt`).
fn take_collected(
    below: &[Arc<Collected>],
    last: Option<(&Arc<Collected>, &str)>,
) -> (Vec<ServiceError>, Vec<Arc<str>>) {
    let mut errors = Vec::new();
    let mut taken_before = Vec::new();
    for container in below {
        let mut state = container.state.lock();
        taken_before.extend(state.taken.iter().cloned());
        let took = std::mem::take(&mut state.errors);
        if let Some((taker, name)) = last {
            // The nearest taker keeps it: a container between the two, which took first,
            // sends on what reaches it to the one around it in turn.
            if state.forward.is_none() {
                state.forward = Some((taker.clone(), name.to_owned()));
            }
        }
        state.taken.extend(took.iter().filter_map(|e| match e {
            ServiceError::StopTimeout { name, .. } => Some(Arc::from(name.as_str())),
            _ => None,
        }));
        // A member that returned or panicked, whose end its container has not taken yet: a
        // failure on its way up, which the abort would lose (a deep nesting whose reports
        // take longer than the report window to come up).
        let ended: Vec<(usize, Spawned)> = state
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.as_ref().filter(|m| m.ended_on_its_own())?.clone())))
            .collect();
        drop(state);
        errors.extend(took);
        for (i, run) in ended {
            let name = &container.names[i];
            // Taken, so that the container's loop, should it run again, does not take it too.
            if let Some(failure) = run.end().failure(name) {
                run.end.report(&container.reporter, name, Some(&failure));
                errors.push(failure);
            }
        }
    }
    (errors, taken_before)
}

/// Adds `errors` to what `collected` collected, or, once a container around took that for
/// the last time ([`take_collected`]), to what that container collected, as a failure of its
/// member that hosted this one ([`failed_below`]), and so on up: an explicit loop, not
/// recursion (users build the nesting). Every failure a container keeps goes through it
/// ([`Errors::push`], [`Orphan`]); only those that come once the container around is done
/// taking are sent on: its members' late ends, and what its own `Drop` (its abort landing)
/// keeps for the container around ([`AbortedMembers`], `Run`'s `Drop`), and, once the
/// abort of a container around drops the run, all of it ([`Run::send_up`]). One lock held
/// at a time.
fn deliver(collected: &Arc<Collected>, mut errors: Vec<ServiceError>) {
    if errors.is_empty() {
        return;
    }
    // Borrowed until a mark sends the failures on (most pushes: none).
    let mut taker: Option<Arc<Collected>> = None;
    loop {
        let at = taker.as_ref().unwrap_or(collected);
        let (up, name) = {
            let mut state = at.state.lock();
            let Some(forward) = state.forward.clone() else {
                state.errors.extend(errors);
                return;
            };
            forward
        };
        errors = failed_below(&name, errors).into_iter().collect();
        taker = Some(up);
    }
}

/// Paths, for telling in O(log n) whether a path is one of them or below one.
struct Paths(Vec<Arc<str>>);

/// Whether `path` is `at` or below it (`a/b` covers `a/b` and `a/b/c`, not `a/bc`).
fn covers(at: &str, path: &str) -> bool {
    path == at || is_below(at, path)
}

/// Whether `path` is below `at`: starts with it and a `/` (`a/b/c` is below `a/b`; `a/b`
/// and `a/bc` are not).
fn is_below(at: &str, path: &str) -> bool {
    path.strip_prefix(at)
        .is_some_and(|rest| rest.starts_with('/'))
}

impl Paths {
    /// Sorted by their `/`-separated segments (the paths below a path then come right after
    /// it), each below another dropped: the greatest one not after a path is the only one
    /// that can cover it.
    fn new(mut paths: Vec<Arc<str>>) -> Self {
        paths.sort_unstable_by(|a, b| a.split('/').cmp(b.split('/')));
        let mut kept: Vec<Arc<str>> = Vec::with_capacity(paths.len());
        for path in paths {
            if !kept.last().is_some_and(|last| covers(last, &path)) {
                kept.push(path);
            }
        }
        Paths(kept)
    }

    /// Whether there are none (a caller then need not make the paths it would ask about).
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `path` is one of them or below one.
    fn covers(&self, path: &str) -> bool {
        let i = self.0.partition_point(|p| p.split('/').le(path.split('/')));
        i.checked_sub(1).is_some_and(|j| covers(&self.0[j], path))
    }
}

/// The hung leaves a container's abort named or took, sorted by path, for finding one at or
/// below a member's or an attempt's path in O(log n).
struct Leaves<'a>(Vec<(&'a str, &'a ServiceError)>);

impl<'a> Leaves<'a> {
    fn new(named: impl Iterator<Item = &'a ServiceError>) -> Self {
        let mut leaves: Vec<(&str, &ServiceError)> =
            named.filter_map(|e| Some((e.name()?, e))).collect();
        leaves.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Leaves(leaves)
    }

    /// A hung leaf at `path` or below it.
    fn at_or_below(&self, path: &str) -> Option<&'a ServiceError> {
        let leaves = &self.0;
        let i = leaves.partition_point(|(n, _)| *n < path);
        if leaves.get(i).is_some_and(|(n, _)| *n == path) {
            return leaves.get(i).map(|(_, e)| *e);
        }
        // Paths below `path` sort together, from `path/` on.
        let prefix = format!("{path}/");
        let j = leaves.partition_point(|(n, _)| *n < prefix.as_str());
        leaves
            .get(j)
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(_, e)| *e)
    }
}

/// Reports the members still running of the containers `below` (which the caller is
/// aborting, having taken what they collected) to their hubs: each `Failed` with one of
/// `leaves` at or below it, as its container would have at its own deadline. Without this,
/// a container aborted before it reported (its task starved, or blocked by code beside it)
/// left them `running`. A member with no such leaf is left as it is.
fn report_below(below: &[Arc<Collected>], leaves: &Leaves<'_>) {
    if leaves.0.is_empty() {
        return;
    }
    for container in below {
        let running: Vec<(usize, Spawned)> = {
            let state = container.state.lock();
            let members = state.members.iter().enumerate();
            members.filter_map(|(i, m)| Some((i, m.clone()?))).collect()
        };
        for (i, member) in running {
            let name = &container.names[i];
            let Some(leaf) = leaves.at_or_below(&member_path(&container.path, name)) else {
                continue;
            };
            if member.end.self_reports() {
                // Restarters: their attempts' ends, as the container around reports its own.
                for end in member.end_report.take_all() {
                    end.report(leaves.at_or_below(&end.path));
                }
            } else {
                member.end.report(&container.reporter, name, Some(leaf));
            }
        }
    }
}

/// What containers below member `name` collected, as one failure of the member (as the
/// nested container's return would have been), if anything.
fn failed_below(name: &str, errors: Vec<ServiceError>) -> Option<ServiceError> {
    (!errors.is_empty())
        .then(|| ServiceError::attribute(name, Box::new(ServiceError::Failures { errors })))
}

/// A member a container's abort took out of its slot ([`Run::abort`]), until its end is
/// reported once the aborts have landed.
struct Aborted {
    name: String,
    run: Spawned,
    /// The containers running below it when it was taken, for what they collect meanwhile.
    below: Vec<Arc<Collected>>,
    /// The hung leaves named below it.
    leaves: HashSet<String>,
    /// Its end was reported when it was taken (something below it was named).
    reported: bool,
}

/// The members a container's abort took out of their slots, while their aborts land.
/// Dropped with members left in it (the container's future dropped meanwhile: its task
/// aborted by a container around that gave up waiting for it, or its runtime dropped), it
/// reports their ends, as the abort would have once the aborts landed: `Stopped`, unless
/// the member returned or panicked on its own, or a container below it collected a
/// failure; a member whose abort has not landed yet reports its own end as it comes
/// ([`Spawned::leave`]). No one else would: the run's `Drop` finds their slots empty, and a container
/// around no longer finds them in the run's [`Collected`], so a hub kept them `Running` for
/// good (`probe-reg` `deepfail 4000 mt`). The abort takes the members out once the aborts
/// landed, and reports them itself; an [`EndOnce`] reports an end once in any case.
struct AbortedMembers<'a> {
    reporter: &'a Reporter,
    errors: &'a Errors,
    members: Vec<Aborted>,
}

impl Drop for AbortedMembers<'_> {
    fn drop(&mut self) {
        self.errors.stop_aborting();
        for Aborted {
            name,
            run,
            below,
            reported,
            ..
        } in self.members.drain(..)
        {
            let (since, _) = take_collected(&below, Some((&self.errors.0, &name)));
            // One still being aborted reports its own end as it comes ([`Spawned::leave`]),
            // unless something below it failed already, reported now.
            let orphan = Orphan {
                reporter: self.reporter.clone(),
                name: name.clone(),
                end: run.end.clone(),
                collected: self.errors.0.clone(),
            };
            let ended = run.leave(move |end| orphan.report(end));
            let ended_already = ended.is_some();
            let own = ended.and_then(|end| end.failure(&name));
            if !reported && (ended_already || !since.is_empty()) {
                run.end
                    .report(self.reporter, &name, own.as_ref().or(since.first()));
            }
            // Kept in the run's `Collected` for a container around that is aborting it (or
            // sent on, if that one took for the last time already).
            let since = failed_below(&name, since);
            self.errors.extend(own.into_iter().chain(since));
        }
    }
}

/// The names of the hung leaves `errors` name, at any depth.
fn stop_timeout_names<'a>(errors: impl IntoIterator<Item = &'a ServiceError>) -> HashSet<&'a str> {
    errors
        .into_iter()
        .flat_map(ServiceError::stop_timeouts)
        .filter_map(ServiceError::name)
        .collect()
}

/// The path of a task in a report: its group's name (the container's path), `/`, its name.
fn task_path(info: &TaskInfo) -> String {
    match (info.group_name(), info.name()) {
        (Some(g), Some(n)) if !g.is_empty() => format!("{g}/{n}"),
        (_, Some(n)) => n.to_owned(),
        (Some(g), None) => format!("{g}/#{}", info.id()),
        (None, None) => format!("#{}", info.id()),
    }
}

/// Names every hung leaf among `tasks` (a task with no other listed task below its path), in
/// their order, each path once: with `timeout`, or with a zero one (it had no time to stop)
/// if it is a member run whose container had not asked it to stop yet.
///
/// In O(n log n) path comparisons ([`has_paths_below`]), not a comparison of every pair.
pub(crate) fn hung_leaves<'a>(
    tasks: impl IntoIterator<Item = &'a TaskInfo>,
    timeout: Duration,
    tree: &Tree,
) -> Vec<ServiceError> {
    let mut seen = HashSet::new();
    let listed: Vec<(String, &TaskInfo)> = tasks
        .into_iter()
        .map(|t| (task_path(t), t))
        .filter(|(p, _)| seen.insert(p.clone()))
        .collect();
    let inner = has_paths_below(listed.iter().map(|(path, _)| path.as_str()));
    let sites = tree.sites.lock();
    listed
        .iter()
        .zip(inner)
        .filter(|(_, inner)| !inner)
        .map(|((path, info), _)| {
            let held = held_sites(&sites, info);
            ServiceError::StopTimeout {
                name: path.clone(),
                timeout: match held {
                    Some(held) if !held.stop_asked() => Duration::ZERO,
                    _ => timeout,
                },
                site: held.and_then(HeldSites::named).unwrap_or(info.site()),
                age: info.age(),
            }
        })
        .collect()
}

/// The groups of the member runs, in the containers `below`, that host a `TasksService`
/// run still under way with tasks of the user's group among `pending`: those runs are
/// hosts, not hung leaves, as a member of the aborting container's own is when something
/// below it is named ([`Run::abort`]). The tasks are named (or left to an abort between),
/// and the run's own task awaits only their shutdown. Members hosting a container (in
/// `hosts` already) are passed over.
///
/// A `TasksService`'s tasks are named apart (`jobs/flush`), so the run's own path
/// (`top/inner/tasks`) is no prefix of theirs and [`hung_leaves`] takes that task for a
/// leaf. Only the runs of a container that is still running are looked at; each one's
/// pending report is read outside the container's lock, at a deadline only.
fn tasks_hosts(
    below: &[Arc<Collected>],
    hosts: &HashSet<GroupId>,
    pending: &[TaskInfo],
) -> Vec<GroupId> {
    let candidates: Vec<(WaitGroup, TaskId)> = below
        .iter()
        .flat_map(|c| {
            let state = c.state.lock();
            state
                .members
                .iter()
                .flatten()
                .filter(|m| m.hosted.hosts_a_run() && !hosts.contains(&m.group.id()))
                .map(|m| (m.group.clone(), m.task))
                .collect::<Vec<_>>()
        })
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    // A task id is its group's: a task is known by both.
    let listed: HashSet<(GroupId, TaskId)> =
        pending.iter().map(|t| (t.group_id(), t.id())).collect();
    candidates
        .into_iter()
        .filter(|(group, own)| {
            let own = (group.id(), *own);
            group.pending().tasks().any(|t| {
                let task = (t.group_id(), t.id());
                task != own && listed.contains(&task)
            })
        })
        .map(|(group, _)| group.id())
        .collect()
}

/// The sites held for the member whose run is `info`, if it is a member's run.
fn held_sites<'a>(sites: &'a SitesByContainer, info: &TaskInfo) -> Option<&'a HeldSites> {
    sites.get(info.group_name()?)?.get(info.name()?)
}

/// For each of `paths` (distinct), whether another of them is below it (starts with it and a
/// `/`): sorted by their `/`-separated segments, the paths below a path come right after it,
/// so only each path's successor in that order is compared.
fn has_paths_below<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_unstable_by(|&a, &b| paths[a].split('/').cmp(paths[b].split('/')));
    let mut below = vec![false; paths.len()];
    for pair in order.windows(2) {
        below[pair[0]] = is_below(paths[pair[0]], paths[pair[1]]);
    }
    below
}

/// A member slot during one run of a container.
#[derive(Debug)]
struct Slot {
    name: String,
    kind: Kind,
    /// Where the member was added, held for stop reports while it runs.
    site: &'static Location<'static>,
    run: Option<Spawned>,
    /// Reported ready (or, one-shot, finished).
    ready: bool,
    /// Its own stop was asked for (cancelled by the container).
    stopping: bool,
}

/// What happened next in a running container.
#[derive(Debug)]
pub(crate) enum Event {
    /// Member `i` ended; the failure, if its end is one.
    Ended(usize, Option<ServiceError>),
    /// Member `i` reported ready (`true`) or dropped its handle unused (`false`).
    Ready(usize, bool),
    /// The deadline passed.
    Timeout,
    /// The container's context was cancelled.
    Cancelled,
}

/// One run of a container: its members' slots, their ends and readiness, its errors.
pub(crate) struct Run {
    pub(crate) place: Place,
    reporter: Reporter,
    slots: Vec<Slot>,
    /// Slots with a run (`run.is_some()`), kept so that a container's loop, which asks after
    /// every event, costs O(1) per event and not O(members).
    running: usize,
    /// Slots marked ready (`ready`), likewise.
    ready: usize,
    services: Vec<Arc<Mutex<Box<dyn Service>>>>,
    ends: FuturesUnordered<BoxFuture<'static, usize>>,
    readies: FuturesUnordered<BoxFuture<'static, (usize, bool)>>,
    /// Each member's stop deadline, by slot: one cell per member, not one for the run, so
    /// that the deadline of a member a sequence stops never reaches a member stopping on
    /// its own meanwhile.
    deadlines: Vec<DeadlineCell>,
    /// The last deadline of the container around passed down to every member's cell, so
    /// that it is passed down once each time it comes earlier, not at every event.
    passed_down: Option<Instant>,
    pub(crate) errors: Errors,
    ctx: CancellationToken,
    /// [`next`](Self::next) returned [`Event::Cancelled`]: it watches the context until
    /// then, and no longer after.
    told_cancelled: bool,
    /// A member's run was aborted by something else than this container while the container
    /// was not stopping it (see [`ended`](Self::ended)): until cancelled,
    /// [`next`](Self::next) only waits for that.
    aborted_outside: bool,
    /// The members' tokens; in a group, children of `shared`.
    tokens: Vec<CancellationToken>,
    /// A group's token (cancelled to stop every member at once), or `None` for a sequence,
    /// whose members have independent tokens.
    shared: Option<CancellationToken>,
    guard: AbortOnDrop,
    _running: RunningGuard,
    /// The run as the hubs it reports to under a path prefix know it (or, without such a
    /// hub here, the nearest run around that has one): its members' task futures hold it
    /// too, so it ends there once the run's own `Drop` is over and the futures it aborted
    /// are gone: a member still running when the run was dropped reports its own end as its
    /// future ends, later ([`Spawned::leave`]), and a restarter among them as it is
    /// dropped. `None` without such a hub.
    hub_run: Option<Arc<HubRun>>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("path", &self.place.path)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// The end of a root container's last run, kept by the container between runs: a run whose
/// future was dropped has members still ending after the drop (as their aborts land, on
/// other workers; as they return, when no runtime could abort them), and the next run
/// waits for them, up to its stop timeout, before it starts its own. Else they ran side by
/// side with the new ones (a listener's port still bound), a nested container among them
/// still running refused the new run (`backend: already running`), and their late ends
/// reached the status hub after the new run's starts.
///
/// The end is the run's [`TreeShared`] going, which the member runs' task futures hold,
/// not its group's wait: that waits for linked groups too, such as a
/// [`TasksService`](super::TasksService)'s, which the aborted run left linked, and which
/// its user may have reopened with tasks of the next run.
#[derive(Debug, Default)]
pub(crate) struct LastRun(Option<oneshot::Receiver<()>>);

impl LastRun {
    /// Keeps the end of `place`'s run as the last run's, and returns the wait for the run
    /// before, `timeout` at most. Only a root's: a nested container runs again only once
    /// the member run it was in ended, or in a new one after a root's wait.
    pub(crate) fn replace(
        &mut self,
        place: &Place,
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let before = match place.scope_group() {
            None => self.0.replace(place.tree.when_gone()),
            Some(_) => None,
        };
        async move {
            if let Some(gone) = before {
                let _ = tokio::time::timeout_at(deadline_after(timeout), gone).await;
            }
        }
    }
}

/// Clears a container's "running" flag when its run ends or is dropped.
#[derive(Debug)]
pub(crate) struct RunningGuard(Arc<AtomicBool>);

impl RunningGuard {
    /// Marks `flag` running, or returns `None` if it already was.
    pub(crate) fn enter(flag: &Arc<AtomicBool>) -> Option<Self> {
        (!flag.swap(true, Ordering::AcqRel)).then(|| RunningGuard(flag.clone()))
    }
}

impl Drop for Run {
    /// A run dropped before it finished: its container's future was dropped (by user code,
    /// say a `select!` branch that won, or by its runtime shutting down), and `guard` aborts
    /// its members. First its token is cancelled, so that a container or restarter in it
    /// stops as asked while the aborts land, instead of reporting its own members' aborts
    /// as failures (`exited early`) or restarting them.
    ///
    /// No one else will take the members' ends. One that returned an error or panicked
    /// already, whose end the run had not taken yet, is reported `Failed` or `Panicked` here
    /// (the failure is kept in the run's [`Collected`] too, for a container around that is
    /// aborting this one); one aborted already, `Stopped`. The others report their own end as
    /// they return (an error they return before the abort lands, `Failed`) or are dropped by
    /// the abort (`Stopped`): a member's end is never reported before it ended, nor lost to a
    /// failure returned on another worker as this runs ([`Spawned::leave`]). A restarter
    /// reports itself, as it is dropped.
    ///
    /// Not a member whose end a container around, aborting the run this one is in, reported
    /// first, with the hung leaf it named ([`report_below`]).
    fn drop(&mut self) {
        if !self.guard.is_armed() {
            return;
        }
        self.send_up();
        for token in &self.tokens {
            token.cancel();
        }
        for slot in &self.slots {
            if let Some(run) = &slot.run {
                let orphan = Orphan {
                    reporter: self.reporter.clone(),
                    name: slot.name.clone(),
                    end: run.end.clone(),
                    collected: self.errors.0.clone(),
                };
                if let Some(end) = run.leave(move |end| orphan.report(end)) {
                    let failure = end.failure(&slot.name);
                    run.end.report(&self.reporter, &slot.name, failure.as_ref());
                    // Kept where a container around that is aborting this one takes what it
                    // collected once the aborts have landed: the failure was on its way up.
                    if let Some(failure) = failure {
                        self.errors.push(failure);
                    }
                }
            }
        }
    }
}

impl Run {
    /// Dropped by the abort of a container around (its group closed, which only that does:
    /// [`AbortOnDrop`]), the run sends what it collected, and what reaches it from now on
    /// (its members' late ends), to the container around it, as a failure of the member it
    /// runs in ([`deliver`]), unless a container around took it for the last time already
    /// (and marked where it goes).
    ///
    /// Before, it kept them for a container around to take: one aborting, whose walk down
    /// its members found this run while it ran. A walk skips an ended run, and on two
    /// workers a level of a deep chain in its own abort was dropped by the abort of a
    /// container further around (keeping what its own abort took from below as it landed)
    /// before the container between, aborting too, walked down to it: no walk found it,
    /// and the hung leaf and the failures below were lost (`probe-reg2 deepfail 2000 mt`).
    /// The container around is alive now (its run, or its own `Drop`'s heir waiting for
    /// this member's end, holds it), running or dropped by the same abort, and then sends
    /// on in turn: so the failures go up the levels the abort is dropping to one it does
    /// not, which returns them or is taken by a walk. Not a run dropped otherwise (by user
    /// code, or its runtime going): no container around waits for its failures.
    fn send_up(&self) {
        if !self.place.wg.is_closed() {
            return;
        }
        let Some((parent, name)) = self.place.hosted.as_ref().and_then(|h| h.owner.as_ref()) else {
            return;
        };
        let left = {
            let mut state = self.errors.0.state.lock();
            if state.forward.is_some() {
                return;
            }
            let Some(parent) = parent.upgrade() else {
                return;
            };
            state.forward = Some((parent, name.clone()));
            std::mem::take(&mut state.errors)
        };
        deliver(&self.errors.0, left);
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `deadline` (none: no time limit) bounded by `parent`, the deadline of the container
/// around.
fn bounded_by(deadline: Option<Instant>, parent: Instant) -> Instant {
    deadline.map_or(parent, |at| at.min(parent))
}

/// The stop timeout a hung leaf is reported with: `timeout`, or, when the container around
/// was stopping and its deadline came before this stop's own (`own`; `None`: it had no time
/// limit), the time this stop had, from `started` to `deadline`, to the millisecond: "the
/// tightest of the containers around it", as [`ServiceError::StopTimeout`] says.
fn given(timeout: Duration, own: Option<Instant>, deadline: Instant, started: Instant) -> Duration {
    if own.is_some_and(|own| deadline >= own) {
        return timeout;
    }
    let had = deadline.saturating_duration_since(started);
    let millis = (had.as_nanos() + 500_000) / 1_000_000;
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)).min(timeout)
}

impl Run {
    /// Prepares `run` of `members` (nothing is started yet): its run number is its members'
    /// attempt. `own_hub`: the container's hub, where the run's owner reported its members
    /// `Idle` at build.
    pub(crate) fn new(
        place: Place,
        own_hub: Option<&StatusHub>,
        run: RunId,
        members: &[Member],
        ctx: CancellationToken,
        shared: bool,
        running: RunningGuard,
    ) -> Run {
        // Not a child of `ctx`: the runner cancels it in `stop`, after setting the deadline
        // that nested containers derive theirs from (a child token would reach them first).
        let shared = shared.then(CancellationToken::new);
        let tokens = members
            .iter()
            .map(|_| match &shared {
                Some(t) => t.child_token(),
                None => CancellationToken::new(),
            })
            .collect();
        let reporter = Reporter::new(own_hub, place.hub.as_ref(), &place.path, run.run(), run);
        let names = members.iter().map(|m| m.name.as_str());
        reporter.withdraw_built(own_hub, run.owner(), names);
        let hub_run = reporter
            .begin_run(
                members.iter().map(|m| m.name.as_str()),
                place.hub_run.as_ref(),
            )
            .or_else(|| place.hub_run.clone());
        let collected = Arc::new(Collected {
            host: place.scope_group().map(WaitGroup::id),
            path: place.path.clone(),
            names: members.iter().map(|m| m.name.clone()).collect(),
            reporter: reporter.clone(),
            state: Mutex::new(CollectedState {
                errors: Vec::new(),
                members: vec![None; members.len()],
                ended: false,
                taken: Vec::new(),
                aborting: Vec::new(),
                forward: None,
            }),
        });
        if let Some(hosted) = &place.hosted {
            hosted.add(collected.clone());
        }
        Run {
            guard: AbortOnDrop::new(place.wg.clone()),
            place,
            reporter,
            slots: members
                .iter()
                .map(|m| Slot {
                    name: m.name.clone(),
                    kind: m.kind,
                    site: m.site,
                    run: None,
                    ready: false,
                    stopping: false,
                })
                .collect(),
            running: 0,
            ready: 0,
            services: members.iter().map(|m| m.service.clone()).collect(),
            ends: FuturesUnordered::new(),
            readies: FuturesUnordered::new(),
            deadlines: members.iter().map(|_| DeadlineCell::default()).collect(),
            passed_down: None,
            errors: Errors(collected),
            ctx,
            told_cancelled: false,
            aborted_outside: false,
            tokens,
            shared,
            _running: running,
            hub_run,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.slots[i].name
    }

    pub(crate) fn kind(&self, i: usize) -> Kind {
        self.slots[i].kind
    }

    pub(crate) fn is_running(&self, i: usize) -> bool {
        self.slots[i].run.is_some()
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn all_ready(&self) -> bool {
        self.ready == self.slots.len()
    }

    /// Marks member `i` ready, once.
    fn mark_ready(&mut self, i: usize) -> bool {
        let first = !std::mem::replace(&mut self.slots[i].ready, true);
        self.ready += usize::from(first);
        first
    }

    /// Takes member `i`'s run, if it has one.
    fn take_run(&mut self, i: usize) -> Option<Spawned> {
        let run = self.slots[i].run.take();
        if run.is_some() {
            self.running -= 1;
            self.errors.set_member(i, None);
        }
        run
    }

    /// [`take_run`](Self::take_run) for the deadline's abort: the member leaves its slot and
    /// is listed as being aborted in one hold of the lock, so a container around never finds
    /// it in neither ([`CollectedState::aborting`]).
    fn take_run_to_abort(&mut self, i: usize) -> Option<Spawned> {
        let run = self.slots[i].run.take()?;
        self.running -= 1;
        let path = member_path(&self.place.path, &self.slots[i].name);
        let mut state = self.errors.0.state.lock();
        state.members[i] = None;
        state.aborting.push(path);
        Some(run)
    }

    fn self_reports(&self, i: usize) -> bool {
        self.slots[i]
            .run
            .as_ref()
            .is_some_and(|r| r.end.self_reports())
    }

    fn report(&self, i: usize, state: ServiceState) {
        if !self.self_reports(i) {
            self.reporter.report(&self.slots[i].name, state);
        }
    }

    /// Starts member `i`.
    pub(crate) fn start(&mut self, i: usize) {
        let (ready, when_ready) = Ready::channel();
        let spawned = Spawned::spawn(
            &self.place.wg,
            &self.place.path,
            &self.slots[i].name,
            Some(self.slots[i].site),
            self.services[i].clone(),
            ready,
            self.tokens[i].clone(),
            self.reporter.inherit(&self.slots[i].name),
            self.deadlines[i].clone(),
            self.place.tree.clone(),
            Some(Arc::new(Hosted::owned_by(
                &self.errors.0,
                &self.slots[i].name,
            ))),
            None,
            self.hub_run.clone(),
            {
                let reporter = self.reporter.clone();
                let name = self.slots[i].name.clone();
                move || reporter.report(&name, ServiceState::Starting)
            },
        );
        self.ends.push(spawned.done().map(move |()| i).boxed());
        self.readies.push(
            async move {
                let w: WhenReady = when_ready;
                (i, w.await)
            }
            .boxed(),
        );
        self.errors.set_member(i, Some(spawned.clone()));
        if self.slots[i].run.replace(spawned).is_none() {
            self.running += 1;
        }
    }

    /// Whether the container is stopping as a whole (its context or group cancelled).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.ctx.is_cancelled() || self.shared.as_ref().is_some_and(|t| t.is_cancelled())
    }

    /// The next event, waiting at most until `deadline`. [`Event::Cancelled`] comes once,
    /// at once if the container is already stopping as a whole: a caller that checked
    /// [`is_cancelled`](Self::is_cancelled) just before the cancel landed still hears of
    /// it. (Watching the context only while it was not cancelled lost that cancel: members
    /// that were all running and ready then ran for ever, and `serve` never returned.)
    pub(crate) async fn next(&mut self, deadline: Option<Instant>) -> Event {
        if !self.told_cancelled && self.is_cancelled() {
            self.told_cancelled = true;
            return Event::Cancelled;
        }
        loop {
            if self.aborted_outside && !self.told_cancelled {
                // Until what aborted a member reaches this container too, it only waits for
                // its cancel: it neither reports the abort as a failure nor returns (its
                // members gone), which the container around would read as an early exit.
                self.ctx.cancelled().await;
                self.told_cancelled = true;
                return Event::Cancelled;
            }
            let watch_ctx = !self.told_cancelled;
            let ev = tokio::select! {
                Some(i) = self.ends.next(), if !self.ends.is_empty() => self.ended(i),
                Some((i, ok)) = self.readies.next(), if !self.readies.is_empty() => {
                    if ok && self.is_running(i) {
                        if self.mark_ready(i) {
                            self.report(i, ServiceState::Running);
                        }
                        Some(Event::Ready(i, true))
                    } else if ok {
                        None
                    } else {
                        Some(Event::Ready(i, false))
                    }
                }
                () = self.ctx.cancelled(), if watch_ctx => {
                    self.told_cancelled = true;
                    Some(Event::Cancelled)
                }
                () = sleep_until_opt(deadline) => Some(Event::Timeout),
            };
            if let Some(ev) = ev {
                return ev;
            }
        }
    }

    fn ended(&mut self, i: usize) -> Option<Event> {
        self.place.tree.ended.fetch_add(1, Ordering::Relaxed);
        let run = self.take_run(i)?;
        let end = run.end();
        let name = self.slots[i].name.clone();
        let stopping = self.slots[i].stopping || self.is_cancelled();
        if !run.ended_on_its_own() && !stopping {
            // Aborted by something else than this container (its runtime shutting down, on
            // another worker; a shutdown of a group around): it stopped, and did not exit
            // early. What aborted it reaches this container too, which waits for that
            // rather than react (an early exit's failure, the next member of a sequence):
            // see `next`. A container stopping this member anyway (it may be stopping on
            // its own, with no cancel to come) takes the end as a stop, below.
            run.end.report(&self.reporter, &name, None);
            self.aborted_outside = true;
            return None;
        }
        let failure = match end {
            End::Done if stopping => None,
            End::Done => match self.slots[i].kind {
                Kind::LongRunning => Some(ServiceError::ExitedEarly { name: name.clone() }),
                Kind::OneShot | Kind::Ending => {
                    self.mark_ready(i);
                    None
                }
            },
            end => end.failure(&name),
        };
        // The run is gone from the slot: judge self-reporting on the spawned value.
        run.end.report(&self.reporter, &name, failure.as_ref());
        Some(Event::Ended(i, failure))
    }

    /// Stops the running members among `which` (all when `None`): cancels them, waits for
    /// them under `timeout` (never past the deadline of the container around), and at the
    /// deadline names every hung leaf below them and aborts them. Failures go to `errors`.
    ///
    /// A `timeout` without a time limit ([`is_unlimited`]) sets no deadline of its own: with
    /// none around either, the members' cells stay empty, and what is nested in them keeps
    /// its own limit, or none (a `TasksService`'s tasks read no deadline, as under a
    /// `shutdown(Duration::MAX)`, not the time left to one thirty years away).
    pub(crate) async fn stop(&mut self, which: Option<usize>, timeout: Duration) {
        let started = Instant::now();
        let own = (!is_unlimited(timeout)).then(|| deadline_after(timeout));
        let mut deadline = own;
        if let Some(parent) = self.pass_down_parent_deadline() {
            deadline = Some(bounded_by(deadline, parent));
        }
        let targets: Vec<usize> = match which {
            Some(i) => vec![i],
            None => (0..self.slots.len()).collect(),
        };
        // Only the members stopped now: another (in a sequence, one stopping on its own
        // meanwhile) keeps its own deadline, bounded only by the containers around it.
        for &i in &targets {
            self.slots[i].stopping = true;
            if let Some(at) = deadline {
                self.deadlines[i].lower(at);
            }
        }
        match (which, &self.shared) {
            (None, Some(shared)) => shared.cancel(),
            _ => {
                for &i in &targets {
                    self.tokens[i].cancel();
                }
            }
        }
        let parent = self.place.parent_deadline.clone();
        while match which {
            Some(i) => self.is_running(i),
            None => self.running > 0,
        } {
            // The container around may start its own stop (with an earlier deadline) while
            // this one is stopping: never outlive it (the members' cells are lowered too).
            // Woken when it does, not only at the next event: this one may be waiting under
            // a later deadline of its own (stopping on its own, say, a member having failed).
            if let Some(parent) = self.pass_down_parent_deadline() {
                deadline = Some(bounded_by(deadline, parent));
            }
            let event = match &parent {
                Some(cell) => tokio::select! {
                    event = self.next(deadline) => event,
                    () = cell.earlier_than(deadline) => continue,
                },
                None => self.next(deadline).await,
            };
            match (event, deadline) {
                (Event::Ended(_, Some(e)), _) => self.errors.push(e),
                // Only a deadline times out.
                (Event::Timeout, Some(at)) => {
                    self.let_nested_report(&targets).await;
                    self.abort(&targets, given(timeout, own, at, started)).await;
                    break;
                }
                _ => {}
            }
        }
    }

    /// The deadline of the container around, if it is stopping; when it came earlier since
    /// last asked, it is first passed down to every member's cell (it bounds every member,
    /// stopped yet or not). O(1) unless it came earlier, which it does a few times a stop.
    fn pass_down_parent_deadline(&mut self) -> Option<Instant> {
        let parent = self
            .place
            .parent_deadline
            .as_ref()
            .and_then(DeadlineCell::get)?;
        if self.passed_down.map_or(true, |d| parent < d) {
            self.passed_down = Some(parent);
            for cell in &self.deadlines {
                cell.lower(parent);
            }
        }
        Some(parent)
    }

    /// At the deadline, before aborting: members that host a container (whose deadline is
    /// this one at the latest) are given up to [`REPORT_WINDOW`] to report their hung leaves
    /// and return, so that their report is not lost with their abort; so are members one of
    /// whose containers returned a failure ([`Hosted::may_report`]). A member whose
    /// containers all ended otherwise (returned `Ok`, or dropped) is aborted at once.
    ///
    /// A window is followed by another as long as member runs ended somewhere in the tree
    /// during it ([`TreeShared::ended`]), up to [`REPORT_LIMIT`] in all: in a deep nesting
    /// each level reports once the one inside it has, and the reports of thousands of levels
    /// take longer than one window to come up. Given up on earlier, the member would be
    /// aborted with its report on the way: a failure a member returned to a container not
    /// polled since is taken with what the containers collected ([`take_collected`]), but a
    /// container still returning (its member's task not done yet) is named as a hung leaf
    /// instead of the leaf that hung.
    ///
    /// The members waited for are those that may report now, at the deadline: one that
    /// starts hosting later (its container already past its deadline) is aborted with the
    /// rest, and its hung leaves are named by [`abort`](Self::abort)'s walk. A member that
    /// returns is dropped from the end of that list, so each event costs O(1) amortised, not
    /// a scan of every member (quadratic when thousands of nested containers return in turn).
    async fn let_nested_report(&mut self, targets: &[usize]) {
        let mut hosting: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&i| {
                self.slots[i]
                    .run
                    .as_ref()
                    .is_some_and(|r| r.hosted.may_report())
            })
            .collect();
        let waited = Instant::now();
        let mut until = deadline_after(REPORT_WINDOW);
        let mut ended = self.place.tree.ended.load(Ordering::Relaxed);
        loop {
            while hosting.last().is_some_and(|&i| !self.is_running(i)) {
                hosting.pop();
            }
            if hosting.is_empty() {
                return;
            }
            match self.next(Some(until)).await {
                Event::Ended(_, Some(e)) => self.errors.push(e),
                Event::Timeout => {
                    // Runs ended in the tree since the window began: the reports are still
                    // coming up (a deep nesting, each level a little slow to return). One
                    // more window, within the limit.
                    let now = self.place.tree.ended.load(Ordering::Relaxed);
                    if now == ended || waited.elapsed() >= REPORT_LIMIT {
                        return;
                    }
                    ended = now;
                    until = deadline_after(REPORT_WINDOW).min(waited + REPORT_LIMIT);
                }
                _ => {}
            }
        }
    }

    /// Aborts the members `targets` still running, and reports what each leaves behind: the
    /// failures collected by the containers running below it (to any depth, [`Hosted`]),
    /// every hung leaf below it, and its own end if it returned meanwhile.
    ///
    /// For every member, before any is aborted: what is pending below it, which containers
    /// run below it and what they collected so far. These are recorded, and its status and a
    /// restarter's attempt in it reported, before the aborts: an abort may take a while (a
    /// `Drop` that blocks), and the container around may abort this one meanwhile. After the
    /// aborts, what those containers collected since, and the member's own end, are added. A
    /// task hosting a container still running is not a hung leaf, even with nothing pending
    /// below it: its container reports for it. So a hung leaf a nested container named
    /// itself (gone from the pending report, or not yet, or named during the abort) is named
    /// once. The members are aborted together, and their aborts awaited together. Dropped
    /// while the aborts land, it reports the ends still to report ([`AbortedMembers`]).
    async fn abort(&mut self, targets: &[usize], timeout: Duration) {
        let mut aborted = Vec::new();
        for &i in targets {
            let Some(run) = self.take_run_to_abort(i) else {
                continue;
            };
            let pending: Vec<TaskInfo> = run.group.pending().tasks().cloned().collect();
            let below = run.hosted.running_below();
            let mut hosts: HashSet<GroupId> = below.iter().filter_map(|c| c.host).collect();
            // Below a member that a container between is aborting: not this abort's to name.
            let being_aborted = Paths::new(
                below
                    .iter()
                    .flat_map(|c| c.state.lock().aborting.clone())
                    .collect(),
            );
            let under_abort =
                |t: &TaskInfo| !being_aborted.is_empty() && being_aborted.covers(&task_path(t));
            let returned = run.exit.returned();
            if returned {
                hosts.insert(run.group.id());
            }
            hosts.extend(tasks_hosts(&below, &hosts, &pending));
            let (collected, taken_before) = take_collected(&below, None);
            // Named already: by the containers below, in what this one took now, or in what
            // a container around took from them before (its report has them).
            let mut named = stop_timeout_names(&collected);
            named.extend(taken_before.iter().map(|n| &**n));
            let mut hung = hung_leaves(
                pending
                    .iter()
                    .filter(|t| !hosts.contains(&t.group_id()) && !under_abort(t)),
                timeout,
                &self.place.tree,
            );
            hung.retain(|e| e.name().map_or(true, |n| !named.contains(n)));
            drop(named);
            let name = self.slots[i].name.clone();
            // A member whose run is inside a container or `TasksService` run still under way
            // is a host, not a leaf, when something below it is named. A `TasksService`'s
            // tasks are in the user's group, linked below the member's but named apart
            // (`jobs/flush`), so its own task's path is no prefix of theirs.
            if run.hosted.hosts_a_run() {
                let own = member_path(&self.place.path, &name);
                let is_own = |e: &ServiceError| e.name() == Some(&*own);
                if !collected.is_empty() || hung.iter().any(|e| !is_own(e)) {
                    hung.retain(|e| !is_own(e));
                }
            }
            // Reported now if something is hung below or was collected; else after the
            // abort, with the member's own end if it returned meanwhile.
            let report_now = !collected.is_empty() || !hung.is_empty();
            if report_now {
                let leaf = collected.first().or(hung.first());
                run.end.report(&self.reporter, &name, leaf);
            }
            // A restarter's attempt in the member cannot report its end once aborted (it
            // would say `Stopped`): reported here with the restarter's reporter (its hubs,
            // its attempt), failed with the first hung leaf at or below the attempt, if any.
            let leaves = Leaves::new(
                collected
                    .iter()
                    .flat_map(ServiceError::stop_timeouts)
                    .chain(&hung),
            );
            for end in run.end_report.take_all() {
                end.report(leaves.at_or_below(&end.path));
            }
            report_below(&below, &leaves);
            let leaves: HashSet<String> = hung
                .iter()
                .filter_map(|e| e.name().map(str::to_owned))
                .collect();
            let collected = failed_below(&name, collected);
            self.errors.extend(collected.into_iter().chain(hung));
            aborted.push(Aborted {
                name,
                run,
                below,
                leaves,
                reported: report_now,
            });
        }
        // Reports the members' ends if this future is dropped while their aborts land.
        let mut landing = AbortedMembers {
            reporter: &self.reporter,
            errors: &self.errors,
            members: aborted,
        };
        // All at once: a member whose abort takes a while (a `Drop` that blocks, a task
        // stuck in blocking code until the abort timeout) does not hold back the others',
        // which land side by side, as many at once as the runtime has workers free (a
        // `Drop` that blocks holds its worker). Awaited together: one abort timeout in all.
        futures::future::join_all(
            landing
                .members
                .iter()
                .map(|member| abort_tree(&member.run.group)),
        )
        .await;
        // The aborts landed: each member's end is reported here, with what it named.
        let aborted = std::mem::take(&mut landing.members);
        self.errors.stop_aborting();
        // Leaves named above that a member's own end, or a container below it, named
        // meanwhile: theirs is kept. And the member's own task, named above because what it
        // ran had ended and it had not returned yet, if it then returned on its own (it was
        // not hung) and what it ran names a hung leaf below it. Dropped in one pass at the
        // end, not one per member.
        let mut forget: HashSet<String> = HashSet::new();
        for Aborted {
            name,
            run,
            below,
            mut leaves,
            reported,
        } in aborted
        {
            let own = run.end().failure(&name);
            let (since, _) = take_collected(&below, Some((&self.errors.0, &name)));
            if !leaves.is_empty() {
                let named = stop_timeout_names(own.iter().chain(&since));
                let path = member_path(&self.place.path, &name);
                if run.exit.returned()
                    && leaves.contains(&*path)
                    && named.iter().any(|n| is_below(&path, n))
                {
                    leaves.remove(&*path);
                    forget.insert(path.to_string());
                }
                forget.extend(leaves.into_iter().filter(|n| named.contains(n.as_str())));
            }
            if !reported {
                run.end
                    .report(&self.reporter, &name, own.as_ref().or(since.first()));
            }
            let since = failed_below(&name, since);
            self.errors.extend(own.into_iter().chain(since));
        }
        if !forget.is_empty() {
            self.errors.forget_leaves(|n| forget.contains(n));
        }
    }

    /// Ends the run: everything below has stopped, nothing to abort on drop.
    pub(crate) fn finish(mut self) -> Vec<ServiceError> {
        self.guard.disarm();
        self.errors.take()
    }
}

/// Resolves with the readiness once, then never again (for a `select!` loop).
pub(crate) async fn when_ready(w: &mut Option<WhenReady>) -> bool {
    match w {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn into_result(errors: Vec<ServiceError>) -> Result<(), ServiceError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Failures { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        abort_tree, deliver, given, has_paths_below, take_collected, AttemptEnd, Collected,
        CollectedState, EndReports, Hosted, Paths, SCOPE,
    };
    use crate::service::status::{Owner, Reporter, RunId};
    use crate::service::{
        service_fn, Ready, RestartPolicy, Restarter, Service, ServiceError, ServiceGroup, StatusHub,
    };
    use crate::WaitGroup;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    /// A member run that starts many containers side by side (`join_all` of 50,000 groups)
    /// registers them in linear time, and, once they have ended, keeps a handful. Dropping
    /// the ended ones on every add, as before, looked at every live one each time: 8,000
    /// containers took 288 ms to start against 40 ms now (scratch `manyhosted`, release),
    /// and this test took 38 s (debug build) with a pruning on every add.
    #[test]
    #[cfg_attr(miri, ignore = "100,000 containers: too slow under Miri")]
    fn containers_side_by_side_in_one_run_are_registered_in_linear_time() {
        let started = std::time::Instant::now();
        let hosted = Hosted::default();
        let container = || collected("top/m/c");
        let running: Vec<Arc<Collected>> = (0..50_000).map(|_| container()).collect();
        for c in &running {
            hosted.add(c.clone());
        }
        assert_eq!(hosted.containers.lock().len(), 50_000);
        for c in &running {
            c.state.lock().ended = true;
        }
        for _ in 0..50_000 {
            let c = container();
            hosted.add(c.clone());
            c.state.lock().ended = true;
        }
        let left = hosted.containers.lock().len();
        assert!(left <= 8, "{left} containers kept");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    /// The end reports of many restarters in one member run are linear: 100,000 restarters
    /// holding cells; their ends taken once per hub entry (nested under one name: the
    /// outermost's; side by side under their own names: each); then 200,000 more cells made
    /// and let go one at a time, after which the list holds a handful. Pruning the list on
    /// every cell, as before, took 37 s here (debug build); comparing every end with every
    /// end kept, as before, ran past 100 s.
    #[test]
    #[cfg_attr(miri, ignore = "300,000 cells: too slow under Miri")]
    fn end_reports_are_linear_in_the_restarters() {
        let started = std::time::Instant::now();
        let reports = EndReports::default();
        let hub = StatusHub::new(8);
        let reporter = Reporter::new(Some(&hub), None, "", 1, RunId::new(Owner::new(), 1));
        let cells: Vec<_> = (0..100_000).map(|_| reports.cell()).collect();
        for (i, cell) in cells.iter().enumerate() {
            *cell.lock() = Some(AttemptEnd {
                reporter: reporter.clone(),
                name: "worker".into(),
                path: i.to_string().into(),
                end: Default::default(),
            });
        }
        let ends = reports.take_all();
        assert_eq!(ends.len(), 1);
        assert_eq!(&*ends[0].path, "0");
        assert!(reports.take_all().is_empty());
        // Side by side, each of its own name: each reported.
        for (i, cell) in cells.iter().enumerate() {
            *cell.lock() = Some(AttemptEnd {
                reporter: reporter.clone(),
                name: format!("worker{i}"),
                path: i.to_string().into(),
                end: Default::default(),
            });
        }
        assert_eq!(reports.take_all().len(), 100_000);
        drop(cells);
        for _ in 0..200_000 {
            drop(reports.cell());
        }
        let left = reports.cells.lock().len();
        assert!(left <= 8, "{left} cells kept");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    /// Aborting a tree is linear in its groups: a chain of 10,000 groups, each with a task
    /// that ignores cancellation, is stopped at once, every task aborted, well within 20 s
    /// in a debug build (0.17 s here). One `shutdown(ZERO)` per group, deepest first, as
    /// before, walked the groups below each again: 136 s for this chain.
    #[tokio::test]
    #[cfg_attr(miri, ignore = "10,000 groups: too slow under Miri")]
    async fn aborting_a_deep_chain_is_linear() {
        let root = WaitGroup::new();
        let mut groups = vec![root.clone()];
        for _ in 0..10_000 {
            let group = groups.last().unwrap().child();
            group.go(|_| std::future::pending::<()>());
            groups.push(group);
        }
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        abort_tree(&root).await;
        let took = started.elapsed();
        assert!(groups.iter().all(WaitGroup::is_empty));
        assert!(groups.iter().all(WaitGroup::is_closed));
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    /// Sites held, as (container path, member name).
    type Sites = Vec<(String, String)>;

    /// The sites the tree of the member run being polled holds, sorted.
    fn held_sites() -> Sites {
        SCOPE.with(|scope| {
            let sites = scope.tree.sites.lock();
            let mut held: Vec<(String, String)> = sites
                .iter()
                .flat_map(|(path, members)| members.keys().map(|name| (path.clone(), name.clone())))
                .collect();
            held.sort();
            held
        })
    }

    fn pair(path: &str, name: &str) -> (String, String) {
        (path.to_owned(), name.to_owned())
    }

    /// A tree holds the sites of the member runs under way, not of every member that ran in
    /// it: a member serving a fresh container per job, each with a member of its own name
    /// (every other one a restarter, whose attempts hold the same site), and then a
    /// restarter of its own (its attempts below it, at its path) leaves none behind. Each
    /// job's site stayed for as long as the root ran (about 58 bytes a job: 1.25 MB after
    /// 20,000 jobs in `probe-mem`'s `nested distinct`), and so did the restarter's.
    #[tokio::test(start_paused = true)]
    async fn a_tree_holds_the_sites_of_the_runs_under_way_only() {
        const JOBS: usize = 50;
        let jobs = service_fn("jobs", |ctx: CancellationToken, ready: Ready| async move {
            ready.ready();
            let outer = vec![pair("top", "jobs")];
            for i in 0..JOBS {
                let name = format!("w{i}");
                let seen: Arc<Mutex<Vec<Sites>>> = Arc::default();
                let record = seen.clone();
                // Fails once, then returns: a restarter runs it twice.
                let mut failed = false;
                let job = service_fn(name.clone(), move |_ctx, ready: Ready| {
                    record.lock().push(held_sites());
                    let fail = !std::mem::replace(&mut failed, true);
                    async move {
                        ready.ready();
                        if fail && i % 2 == 1 {
                            return Err("once".into());
                        }
                        Ok(())
                    }
                });
                let builder = ServiceGroup::builder("job");
                let builder = if i % 2 == 0 {
                    builder.ending(job)
                } else {
                    builder.ending(Restarter::new(job).policy(RestartPolicy::Transient))
                };
                builder
                    .build()
                    .unwrap()
                    .serve(ctx.child_token())
                    .await
                    .unwrap();
                let during = vec![pair("top", "jobs"), pair("top/jobs", &name)];
                let seen = seen.lock();
                assert_eq!(seen.len(), 1 + i % 2);
                assert!(seen.iter().all(|held| *held == during), "job {i}: {seen:?}");
                assert_eq!(held_sites(), outer, "after job {i}");
            }
            let seen: Arc<Mutex<Vec<Sites>>> = Arc::default();
            let record = seen.clone();
            let worker = service_fn("worker", move |_ctx, ready: Ready| {
                let mut seen = record.lock();
                seen.push(held_sites());
                let fail = seen.len() < 3;
                async move {
                    ready.ready();
                    if fail {
                        return Err("again".into());
                    }
                    Ok(())
                }
            });
            let (inner, _) = Ready::channel();
            Restarter::new(worker)
                .policy(RestartPolicy::Transient)
                .run(ctx.child_token(), inner)
                .await
                .unwrap();
            let during = vec![pair("top", "jobs"), pair("top/jobs", "worker")];
            assert_eq!(*seen.lock(), vec![during; 3]);
            assert_eq!(held_sites(), outer);
            Ok(())
        });
        ServiceGroup::builder("top")
            .ending(jobs)
            .build()
            .unwrap()
            .serve(CancellationToken::new())
            .await
            .unwrap();
    }

    /// A stop reports its own timeout unless the container around cut it short; then the
    /// time it had, to the nearest millisecond, never more than its own.
    #[test]
    fn a_stop_cut_short_reports_the_time_it_had() {
        let t = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(given(s(60), Some(t + s(60)), t + s(60), t), s(60));
        assert_eq!(given(s(60), Some(t + s(60)), t + s(61), t), s(60));
        let cut = t + s(5) - Duration::from_micros(3);
        assert_eq!(given(s(60), Some(t + s(60)), cut, t), s(5));
        let cut = t + Duration::from_micros(1_499);
        assert_eq!(
            given(s(60), Some(t + s(60)), cut, t),
            Duration::from_millis(1)
        );
        // A deadline before the stop began (the container around was late): zero.
        assert_eq!(given(s(60), Some(t + s(61)), t, t + s(1)), Duration::ZERO);
        // A stop without a time limit has only the deadline around.
        assert_eq!(given(Duration::MAX, None, t + s(7), t), s(7));
    }

    /// The sorted successor check agrees with comparing every pair, on paths built to trip a
    /// plain string sort (`'-'` and `'.'` sort before `'/'`, so `a-b` falls between `a` and
    /// `a/x`) and with empty segments (`a//x`, a trailing `/`).
    #[test]
    fn paths_below_match_the_pairwise_definition() {
        let segments = ["a", "a-b", "a.b", "", "b"];
        let mut paths = Vec::new();
        for x in segments {
            paths.push(x.to_owned());
            for y in segments {
                paths.push(format!("{x}/{y}"));
                for z in ["a", ""] {
                    paths.push(format!("{x}/{y}/{z}"));
                }
            }
        }
        paths.sort();
        paths.dedup();
        // Every order of the input gives the same answer: a few rotations and the reverse
        // (one order under Miri, where the pairwise check's formatting is slow).
        let turns = if cfg!(miri) {
            &[1][..]
        } else {
            &[0, 1, paths.len() / 2, paths.len() - 1][..]
        };
        for &turn in turns {
            for reversed in [false, true] {
                let mut input = paths.clone();
                input.rotate_left(turn);
                if reversed {
                    input.reverse();
                }
                let fast = has_paths_below(input.iter().map(String::as_str));
                let pairwise: Vec<bool> = input
                    .iter()
                    .map(|p| {
                        let below = format!("{p}/");
                        input.iter().any(|q| q.starts_with(&below))
                    })
                    .collect();
                assert_eq!(fast, pairwise, "input {input:?}");
            }
        }
        assert_eq!(paths.len(), 5 + 5 * 5 + 5 * 5 * 2);
    }

    /// A container's collected failures, with no members, at `path`.
    fn collected(path: &str) -> Arc<Collected> {
        Arc::new(Collected {
            host: None,
            path: path.into(),
            names: Vec::new(),
            reporter: Reporter::default(),
            state: Mutex::new(CollectedState {
                errors: Vec::new(),
                members: Vec::new(),
                ended: false,
                taken: Vec::new(),
                aborting: Vec::new(),
                forward: None,
            }),
        })
    }

    /// What reaches a container's collected failures after the container around took them
    /// for the last time goes to that container's, as a failure of its member, and on up
    /// through every level that took for the last time; a take that is not the last sends
    /// nothing on. Before, it stayed where no one would take it again: a chain thousands deep
    /// stopping on two workers lost its hung leaf and returned `Ok(())`.
    #[test]
    fn failures_after_the_last_take_go_to_the_container_around() {
        let failure = |text: &str| ServiceError::attribute("x", text.into());
        let texts = |c: &Arc<Collected>| -> Vec<String> {
            let state = c.state.lock();
            state.errors.iter().map(|e| format!("{e:#}")).collect()
        };
        let (top, mid, low) = (collected("t"), collected("t/m"), collected("t/m/c/l"));
        // A take that is not the last (a deadline's, before its aborts) sends nothing on.
        deliver(&low, vec![failure("first")]);
        let (took, _) = take_collected(std::slice::from_ref(&low), None);
        assert_eq!(took.len(), 1);
        deliver(&low, vec![failure("second")]);
        assert_eq!(texts(&low).len(), 1);
        assert!(texts(&mid).is_empty());
        // The last take by `mid`, for its member `c`: later failures go to it.
        let (took, _) = take_collected(std::slice::from_ref(&low), Some((&mid, "c")));
        assert_eq!(took.len(), 1);
        deliver(&low, vec![failure("third")]);
        assert!(texts(&low).is_empty());
        assert_eq!(texts(&mid).len(), 1);
        assert!(texts(&mid)[0].contains("third"), "{:?}", texts(&mid));
        assert_eq!(mid.state.lock().errors[0].name(), Some("c"));
        // `top` takes `mid` for the last time, for its member `m`: from `low`, two hops.
        let (took, _) = take_collected(std::slice::from_ref(&mid), Some((&top, "m")));
        assert_eq!(took.len(), 1);
        // A later last take of `low` (by `top`, whose walk found it too) keeps the nearest.
        let _ = take_collected(std::slice::from_ref(&low), Some((&top, "m")));
        deliver(&low, vec![failure("fourth")]);
        assert!(texts(&low).is_empty() && texts(&mid).is_empty());
        let at_top = top.state.lock().errors.pop().expect("sent on to the top");
        assert_eq!(at_top.name(), Some("m"));
        assert_eq!(format!("{at_top:#}"), "m: c: x: fourth");
    }

    /// A container dropped by the abort of a container around (which closed its group) sends
    /// what it collected on to the container around it, where a container further around,
    /// walking down its members, finds it: a walk skips an ended container. Here `x` fails a
    /// member as it stops (kept in its collected failures: another member hangs), and is
    /// dropped by an abort from around before `p`'s walk down. Before, the failure stayed in
    /// `x`'s, found by no walk: on two workers, a level of a chain thousands deep dropped so
    /// ahead of the walk of the container between lost the hung leaf and every failure below
    /// it (`probe-reg2 deepfail 2000 mt`, about 1 run in 36).
    #[tokio::test]
    async fn a_container_dropped_by_an_abort_from_around_sends_its_failures_up() {
        use super::{Kind, Member, Place, Run, RunningGuard};
        let fails = service_fn("fails", |ctx: CancellationToken, ready: Ready| async move {
            ready.ready();
            ctx.cancelled().await;
            Err::<(), crate::service::BoxError>("gave up".into())
        });
        let hangs = service_fn(
            "hangs",
            |_ctx: CancellationToken, ready: Ready| async move {
                ready.ready();
                std::future::pending::<()>().await;
                Ok(())
            },
        );
        let x = ServiceGroup::builder("x")
            .service(fails)
            .service(hangs)
            .stop_timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        let members = [Member::new(
            x,
            Kind::LongRunning,
            std::panic::Location::caller(),
        )];
        let flag = Arc::default();
        let running = RunningGuard::enter(&flag).expect("not running yet");
        let (place, _hosting) = Place::hosting("p");
        let ctx = CancellationToken::new();
        let mut p = Run::new(
            place,
            None,
            RunId::new(Owner::new(), 1),
            &members,
            ctx,
            true,
            running,
        );
        p.start(0);
        let member = p.slots[0].run.clone().expect("started");
        // `x` stops; its failed member is kept in its collected failures.
        p.tokens[0].cancel();
        let waited = std::time::Instant::now();
        while !member
            .hosted
            .running_below()
            .iter()
            .any(|c| !c.state.lock().errors.is_empty())
        {
            assert!(waited.elapsed() < Duration::from_secs(10), "x never failed");
            tokio::task::yield_now().await;
        }
        // The abort of a container around lands on `x`; then `p`'s walk, which skips it.
        abort_tree(&member.group).await;
        let (taken, _) = take_collected(&member.hosted.running_below(), None);
        let kept = p.finish();
        let text: Vec<String> = taken
            .iter()
            .chain(&kept)
            .map(|e| format!("{e:#}"))
            .collect();
        assert_eq!(text, ["x: fails: gave up"]);
    }

    /// A path is covered by one of the paths or one above it, not by a sibling whose name
    /// starts the same (`a/b-c` sorts between `a/b` and `a/b/c` as text).
    #[test]
    fn paths_cover_themselves_and_what_is_below() {
        let paths = Paths::new(
            ["a/b-c", "a/b", "a/b/x", "z", "a/bc/d"]
                .into_iter()
                .map(Into::into)
                .collect(),
        );
        for covered in [
            "a/b", "a/b/c/d", "a/b/x", "a/b-c", "a/b-c/e", "z/1", "a/bc/d/e",
        ] {
            assert!(paths.covers(covered), "{covered}");
        }
        for not in ["a", "a/bc", "a/bd", "b", "y/z", "a/b-", "zz"] {
            assert!(!paths.covers(not), "{not}");
        }
        assert!(!Paths::new(Vec::new()).covers("a"));
    }
}
