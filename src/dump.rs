//! The live task tree: every group below a [`WaitGroup`], with its state, its
//! counts and its pending work, on demand ([`WaitGroup::dump`]) or on a
//! signal ([`on_signal`], SIGUSR1 on Unix).
//!
//! A [`TaskTree`] is a snapshot, like Java's thread dumps of the structured
//! task tree or Python's `asyncio pstree`: the group the dump was asked of,
//! then the groups linked below it, depth-first in link order, each with its
//! guards and tasks (id, name, kind, state, creation site, age). Its
//! `Display` is an indented text tree; with the `serde` feature it also
//! serializes as versioned JSON ([`JSON_VERSION`]).
//!
//! # Text
//!
//! ```text
//! task tree: 3 groups, 4 pending
//! group "app" #1 (open): 2 pending
//!   task "listener" #1: running, age 3.0s, created at src/main.rs:20:10
//!   guard "config" #2: running, age 3.0s, created at src/main.rs:21:22
//!   group "http" #2 (closed): 2 pending
//!     task "conn 10.0.0.7:5100" #1: running, age 2.0s, created at src/http.rs:40:14
//!     task "conn 10.0.0.9:6200" #2: queued, age 1.0s, created at src/http.rs:40:14
//!     group "db" #3 (cancelled): 0 pending
//! ```
//!
//! One line per group (`name #id (state): n pending`, indented by its depth;
//! beyond 32 levels the indentation stops growing and the line starts with
//! `[depth n]`)
//! and one per recorded guard or task below it, by id. Guards of a
//! [`record_guards(false)`](crate::WaitGroupBuilder::record_guards) group are
//! counted on one line (`n unrecorded guards`). Groups are not always a tree:
//! one group may be linked below two. It is listed once, under the first
//! parent the walk reaches, and the other parent says so
//! (`group "db" #3: also linked here, listed under group "http" #2`).
//!
//! # JSON (feature `serde`)
//!
//! A flat list of groups in the text's order, each naming its `parent` (the
//! group it is listed under, `null` for the root), its `depth` and every
//! group linked below it (`links`, in link order); so the whole shape is
//! known from `"version"`, and a consumer rebuilds the tree without
//! recursion. Ages are whole milliseconds, sites `"file:line:col"`, states
//! lowercase; a later version may add states and fields, never change these.
//!
//! ```json
//! {
//!   "version": 1,
//!   "pending": 2,
//!   "groups": [
//!     {"id": 1, "name": "app", "parent": null, "depth": 0, "state": "open",
//!      "pending": 1, "unrecorded": 0, "links": [2],
//!      "tasks": [
//!        {"id": 1, "name": "listener", "kind": "task", "state": "running",
//!         "site": "src/main.rs:20:10", "age_ms": 3000}
//!      ]},
//!     {"id": 2, "name": "http", "parent": 1, "depth": 1, "state": "closed",
//!      "pending": 1, "unrecorded": 0, "links": [],
//!      "tasks": [
//!        {"id": 1, "name": "conn 10.0.0.7:5100", "kind": "task", "state": "queued",
//!         "site": "src/http.rs:40:14", "age_ms": 2000}
//!      ]}
//!   ]
//! }
//! ```
//!
//! # Cost
//!
//! A dump walks the groups once (iteratively: no recursion, whatever the
//! depth), takes each group's links lock briefly and each registry shard in
//! turn, and costs time in proportion to the groups and the pending work, as
//! [`WaitGroup::pending`] does. Each group is a consistent snapshot of itself,
//! not of the whole tree: work that ends while the dump is taken may still be
//! listed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::label::{GroupId, Label, TaskId};
use crate::node::NodeRef;
use crate::report::{TaskInfo, TaskKind};
use crate::shared::Counted;
use crate::WaitGroup;

/// The version of the dump's JSON form (its `"version"` field).
pub const JSON_VERSION: u32 = 1;

impl WaitGroup {
    /// The live tree of this group and the groups linked below it, with
    /// their state, counts and pending work; see [`dump`](crate::dump) for
    /// the text and JSON forms.
    ///
    /// (Defined in `src/dump.rs`, with the tree's types.)
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::dump::{GroupState, TaskState};
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let app = WaitGroup::builder().name("app").build();
    /// let http = app.task().name("http").child();
    /// let conn = http.task().name("conn 1").add();
    /// http.close();
    ///
    /// let tree = app.dump();
    /// assert_eq!(tree.len(), 1);
    /// let [root, child] = tree.groups() else { panic!("{tree}") };
    /// assert_eq!((root.name(), root.depth(), root.state()), (Some("app"), 0, GroupState::Open));
    /// assert_eq!((child.parent(), child.state()), (Some(app.id()), GroupState::Closed));
    /// assert_eq!(child.tasks()[0].state(), TaskState::Running);
    /// println!("{tree}");
    /// # drop(conn);
    /// # }
    /// ```
    pub fn dump(&self) -> TaskTree {
        snapshot(self.node())
    }
}

/// Takes the tree below `root`: the walk of [`crate::node::visit`] (each group
/// once, root first, depth-first in link order, an explicit stack), keeping
/// for each group the parent it was reached from and its depth.
fn snapshot(root: &NodeRef) -> TaskTree {
    let now = Instant::now();
    let mut groups = Vec::new();
    let mut seen: HashSet<GroupId> = HashSet::new();
    let mut stack: Vec<(NodeRef, Option<GroupId>, usize)> = vec![(root.clone(), None, 0)];
    while let Some((node, parent, depth)) = stack.pop() {
        if !seen.insert(node.id()) {
            continue;
        }
        let links = node.links();
        // Draining, not yet cancelled (the group's state says cancelled).
        let draining = node.is_draining() && !node.is_cancelled();
        let shielded = node.shielded(now);
        // In chunks, as `pending()`: a dump of a live server must not stall
        // its add/done.
        let mut infos = Vec::new();
        node.registry
            .map_chunked(|entry| entry.info(&node.label, now), &mut infos);
        let mut tasks: Vec<TaskEntry> = infos
            .into_iter()
            .map(|info| {
                let in_shield = shielded.contains_key(&info.id);
                TaskEntry {
                    state: TaskState::of(&info, draining, in_shield),
                    info,
                }
            })
            .collect();
        crate::registry::sort_by_id(&mut tasks, |t| t.info.id);
        let state = if node.is_cancelled() {
            GroupState::Cancelled
        } else if draining {
            GroupState::Draining
        } else if node.state().is_closed() {
            GroupState::Closed
        } else {
            GroupState::Open
        };
        groups.push(GroupEntry {
            id: node.id(),
            name: node.label.name.clone(),
            parent,
            depth,
            state,
            pending: tasks.len() + node.unrecorded(),
            links: links.iter().map(|l| l.id()).collect(),
            tasks,
        });
        // Pushed in reverse, so the first link is visited next.
        let below = depth.saturating_add(1);
        stack.extend(
            links
                .into_iter()
                .rev()
                .map(|link| (link, Some(node.id()), below)),
        );
    }
    TaskTree { groups }
}

/// A snapshot of the live task tree; from [`WaitGroup::dump`].
///
/// `Display` writes the text tree, `Serialize` (feature `serde`) the
/// versioned JSON; both are described in the [module docs](crate::dump).
#[derive(Debug, Clone)]
pub struct TaskTree {
    /// In walk order: each group after the one it is listed under.
    groups: Vec<GroupEntry>,
}

impl TaskTree {
    /// Every group, the root first, then depth-first in link order; each
    /// group once.
    pub fn groups(&self) -> &[GroupEntry] {
        &self.groups
    }

    /// The group with this id, if it is in the tree.
    pub fn group(&self, id: GroupId) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// How many guards and tasks are pending in all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.pending).sum()
    }

    /// Whether nothing is pending in any group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every recorded pending guard and task, group by group.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskEntry> + '_ {
        self.groups.iter().flat_map(|g| g.tasks.iter())
    }
}

/// One group of a [`TaskTree`].
#[derive(Debug, Clone)]
pub struct GroupEntry {
    id: GroupId,
    name: Option<Label>,
    parent: Option<GroupId>,
    depth: usize,
    state: GroupState,
    pending: usize,
    links: Vec<GroupId>,
    tasks: Vec<TaskEntry>,
}

impl GroupEntry {
    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// The group's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Label::as_str)
    }

    /// The group it is listed under: the first of its parents the walk
    /// reached. `None` for the root of the dump.
    pub fn parent(&self) -> Option<GroupId> {
        self.parent
    }

    /// How far below the root it is listed: 0 for the root.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Open, closed, draining or cancelled.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// How many guards and tasks of this group (not of the groups below it)
    /// are pending.
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Whether nothing of this group's own is pending.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Pending guards that were counted but not recorded (see
    /// [`record_guards`](crate::WaitGroupBuilder::record_guards)).
    pub fn unrecorded(&self) -> usize {
        self.pending.saturating_sub(self.tasks.len())
    }

    /// Every group linked below this one, in link order, whether it is
    /// listed under this one or under another parent.
    pub fn links(&self) -> &[GroupId] {
        &self.links
    }

    /// The recorded pending guards and tasks, by id.
    pub fn tasks(&self) -> &[TaskEntry] {
        &self.tasks
    }
}

/// A group's state in a [`TaskTree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupState {
    /// Open to new work, not cancelled.
    Open,
    /// [Closed](crate::WaitGroup::close) to new work, not cancelled.
    Closed,
    /// Asked to drain (a shutdown's drain phase, or
    /// [`drain`](crate::WaitGroup::drain)), not cancelled yet.
    Draining,
    /// Its context is cancelled (by [`cancel`](crate::WaitGroup::cancel), a
    /// failure under `cancel_on_error`, its caller's token or a shutdown),
    /// whether or not it is also closed.
    Cancelled,
}

impl GroupState {
    /// The lowercase name, as the text and the JSON write it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Open => "open",
            GroupState::Closed => "closed",
            GroupState::Draining => "draining",
            GroupState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a pending guard or task is doing, in a [`TaskTree`].
///
/// More states may come, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// A task running (or ready to be polled), a guard held, a tracked
    /// future alive.
    Running,
    /// A task waiting for a slot under its group's
    /// [`limit`](crate::WaitGroupBuilder::limit), not started yet.
    Queued,
    /// A closure on the blocking pool: a shutdown cannot abort it.
    Blocking,
    /// Running in a group asked to drain and not cancelled yet (and not in
    /// a shielded section).
    Draining,
    /// Running a [shielded](crate::TaskContext::shielded) section within its
    /// budget.
    Shielded,
}

impl TaskState {
    fn of(info: &TaskInfo, draining: bool, shielded: bool) -> Self {
        if info.queued {
            TaskState::Queued
        } else if info.kind == TaskKind::Blocking {
            TaskState::Blocking
        } else if shielded {
            TaskState::Shielded
        } else if draining {
            TaskState::Draining
        } else {
            TaskState::Running
        }
    }

    /// The lowercase name, as the text and the JSON write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Queued => "queued",
            TaskState::Blocking => "blocking",
            TaskState::Draining => "draining",
            TaskState::Shielded => "shielded",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pending guard or task of a [`TaskTree`].
#[derive(Debug, Clone)]
pub struct TaskEntry {
    info: TaskInfo,
    state: TaskState,
}

impl TaskEntry {
    /// The id within its group.
    pub fn id(&self) -> TaskId {
        self.info.id
    }

    /// Its name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.info.name()
    }

    /// Guard, task, blocking task or tracked future.
    pub fn kind(&self) -> TaskKind {
        self.info.kind
    }

    /// What it is doing.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// Where it was created.
    pub fn site(&self) -> &'static Location<'static> {
        self.info.site
    }

    /// How long it had been pending when the dump was taken (Tokio's clock).
    pub fn age(&self) -> Duration {
        self.info.age
    }

    /// The same work as a report lists it (with its group).
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }
}

/// `group "app" #1`, or `group #1`.
fn fmt_group(f: &mut fmt::Formatter<'_>, name: Option<&str>, id: GroupId) -> fmt::Result {
    match name {
        Some(name) => write!(f, "group {name:?} {id}"),
        None => write!(f, "group {id}"),
    }
}

/// Indentation stops growing here, so a pathologically deep chain prints in
/// space proportional to its size, not to its depth squared.
const MAX_INDENT: usize = 32;

/// Two spaces a level; below [`MAX_INDENT`] levels, the depth as a number.
fn indent(f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
    for _ in 0..depth.min(MAX_INDENT) {
        f.write_str("  ")?;
    }
    if depth > MAX_INDENT {
        write!(f, "[depth {depth}] ")?;
    }
    Ok(())
}

impl fmt::Display for TaskTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.groups.len();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "task tree: {n} group{s}, {} pending", self.len())?;
        let listed: HashMap<GroupId, &GroupEntry> = self.groups.iter().map(|g| (g.id, g)).collect();
        for group in &self.groups {
            f.write_str("\n")?;
            indent(f, group.depth)?;
            fmt_group(f, group.name(), group.id)?;
            write!(f, " ({}): {} pending", group.state, group.pending)?;
            let inner = group.depth.saturating_add(1);
            for task in &group.tasks {
                f.write_str("\n")?;
                indent(f, inner)?;
                write!(f, "{}", task.info.kind)?;
                if let Some(name) = task.name() {
                    write!(f, " {name:?}")?;
                }
                write!(
                    f,
                    " {}: {}, age {:.1?}, created at {}",
                    task.info.id, task.state, task.info.age, task.info.site
                )?;
            }
            if group.unrecorded() > 0 {
                let n = group.unrecorded();
                let s = if n == 1 { "" } else { "s" };
                f.write_str("\n")?;
                indent(f, inner)?;
                write!(f, "{n} unrecorded guard{s}")?;
            }
            for link in &group.links {
                let Some(child) = listed.get(link) else {
                    continue;
                };
                if child.parent == Some(group.id) {
                    continue;
                }
                f.write_str("\n")?;
                indent(f, inner)?;
                fmt_group(f, child.name(), child.id)?;
                f.write_str(": also linked here, listed under ")?;
                match child.parent.and_then(|p| listed.get(&p)) {
                    Some(parent) => fmt_group(f, parent.name(), parent.id)?,
                    None => f.write_str("another group")?,
                }
            }
        }
        Ok(())
    }
}

// ----- on a signal -------------------------------------------------------------

/// Where [`on_signal`] writes each dump: a writer you pick, standard error,
/// or (feature `tracing`) a `tracing` event.
pub struct Sink {
    kind: SinkKind,
}

// Read only by `on_signal`, which needs Unix signals.
#[cfg_attr(any(not(unix), loom), allow(dead_code))]
enum SinkKind {
    /// Shared with the blocking-pool closure that writes each dump.
    Writer(Arc<parking_lot::Mutex<Box<dyn Write + Send>>>),
    #[cfg(feature = "tracing")]
    Tracing,
}

impl Sink {
    /// Writes each dump's text, followed by a newline, to `writer`, and
    /// flushes it. The write runs on Tokio's blocking pool, so a slow writer
    /// (a file, a pipe) never stalls the runtime. A failed write is
    /// ignored: there is nowhere better to report it.
    pub fn writer(writer: impl Write + Send + 'static) -> Self {
        Sink {
            kind: SinkKind::Writer(Arc::new(parking_lot::Mutex::new(Box::new(writer)))),
        }
    }

    /// Writes each dump to standard error.
    pub fn stderr() -> Self {
        Sink::writer(std::io::stderr())
    }

    /// Emits each dump as one `tracing` event at info level, target
    /// `taskgroup::dump`, with `groups` and `pending` counts as fields and
    /// the text tree as its message.
    #[cfg(feature = "tracing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing() -> Self {
        Sink {
            kind: SinkKind::Tracing,
        }
    }

    /// Sends one dump where it goes.
    #[cfg_attr(any(not(unix), loom), allow(dead_code))]
    async fn emit(&self, tree: TaskTree) {
        match &self.kind {
            SinkKind::Writer(writer) => {
                let writer = Arc::clone(writer);
                let text = tree.to_string();
                let write = tokio::task::spawn_blocking(move || {
                    let mut writer = writer.lock();
                    let _ = writeln!(writer, "{text}").and_then(|()| writer.flush());
                });
                // A panicking writer only loses this dump.
                let _ = write.await;
            }
            #[cfg(feature = "tracing")]
            SinkKind::Tracing => {
                tracing::info!(
                    target: "taskgroup::dump",
                    groups = tree.groups().len(),
                    pending = tree.len(),
                    "{tree}"
                );
            }
        }
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SinkKind::Writer(_) => f.write_str("Sink::Writer(..)"),
            #[cfg(feature = "tracing")]
            SinkKind::Tracing => f.write_str("Sink::Tracing"),
        }
    }
}

/// Dumps `wg`'s tree to `sink` each time the process receives SIGUSR1
/// (`kill -USR1 <pid>`), until the returned [`SignalDump`] is dropped.
/// Signals that arrive before the dumping task runs again (while it writes
/// a dump, or while the runtime is busy) make one dump: Tokio's signal
/// stream merges them, and a dump taken then would show the same tree.
///
/// The dumps are written by a task spawned with `tokio::spawn`, in no group:
/// a task of `wg` would keep it from ever being idle (its `wait` and
/// `shutdown` would wait for the dumper), and the dump is most wanted while
/// a shutdown drains, when the group no longer takes work. The task holds a
/// handle to `wg` until it ends. Dropping the [`SignalDump`] (or calling
/// [`stop`](SignalDump::stop)) ends it; SIGUSR1 then stays handled by Tokio
/// and is ignored, instead of terminating the process as it would by
/// default (Tokio never restores a signal's default action).
///
/// Only on Unix. Elsewhere, call [`WaitGroup::dump`] from a trigger of your
/// own (an admin endpoint, a key press).
///
/// # Examples
///
/// ```no_run
/// use taskgroup::dump::{self, Sink};
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let wg = WaitGroup::builder().name("app").build();
/// let _dump = dump::on_signal(&wg, Sink::stderr())?; // kill -USR1 <pid>
/// // ... serve ...
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// If the signal handler cannot be registered (see
/// `tokio::signal::unix::signal`).
///
/// # Panics
///
/// If called outside a Tokio runtime with IO and signals enabled.
#[cfg(all(unix, not(loom)))]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub fn on_signal(wg: &WaitGroup, sink: Sink) -> std::io::Result<SignalDump> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = signal(SignalKind::user_defined1())?;
    let wg = wg.clone();
    let task = tokio::spawn(async move {
        while signals.recv().await.is_some() {
            sink.emit(wg.dump()).await;
        }
    });
    Ok(SignalDump { task })
}

/// Dumps on SIGUSR1 while it lives; from [`on_signal`].
///
/// Not `Clone`: it owns the dumping task, which ends when this is dropped.
#[cfg(all(unix, not(loom)))]
#[cfg_attr(docsrs, doc(cfg(unix)))]
#[derive(Debug)]
#[must_use = "the dumps stop when this is dropped"]
pub struct SignalDump {
    task: tokio::task::JoinHandle<()>,
}

#[cfg(all(unix, not(loom)))]
impl SignalDump {
    /// Stops dumping (as dropping it does).
    pub fn stop(self) {}
}

#[cfg(all(unix, not(loom)))]
impl Drop for SignalDump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(feature = "serde")]
mod ser {
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{GroupEntry, GroupState, TaskEntry, TaskState, TaskTree, JSON_VERSION};
    use crate::serde_impl::{millis, Site};

    impl Serialize for TaskTree {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("TaskTree", 3)?;
            st.serialize_field("version", &JSON_VERSION)?;
            st.serialize_field("pending", &self.len())?;
            st.serialize_field("groups", &self.groups)?;
            st.end()
        }
    }

    impl Serialize for GroupEntry {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("GroupEntry", 9)?;
            st.serialize_field("id", &self.id)?;
            st.serialize_field("name", &self.name())?;
            st.serialize_field("parent", &self.parent)?;
            st.serialize_field("depth", &self.depth)?;
            st.serialize_field("state", &self.state)?;
            st.serialize_field("pending", &self.pending)?;
            st.serialize_field("unrecorded", &self.unrecorded())?;
            st.serialize_field("links", &self.links)?;
            st.serialize_field("tasks", &self.tasks)?;
            st.end()
        }
    }

    impl Serialize for TaskEntry {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("TaskEntry", 6)?;
            st.serialize_field("id", &self.info.id)?;
            st.serialize_field("name", &self.info.name())?;
            st.serialize_field("kind", &self.info.kind)?;
            st.serialize_field("state", &self.state)?;
            st.serialize_field("site", &Site(self.info.site))?;
            st.serialize_field("age_ms", &millis(self.info.age))?;
            st.end()
        }
    }

    impl Serialize for GroupState {
        /// `"open"`, `"closed"`, `"draining"` or `"cancelled"`.
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.as_str())
        }
    }

    impl Serialize for TaskState {
        /// `"running"`, `"queued"`, `"blocking"`, `"draining"` or `"shielded"`.
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.as_str())
        }
    }
}
