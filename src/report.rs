//! What a timed-out wait, a snapshot or a shutdown says about pending work.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::panic::Location;
use std::time::Duration;

use crate::error::{TaskErrors, Thousands};
use crate::label::{fmt_task, GroupId, GroupLabel, Label, TaskId};

/// What kind of work is pending: a guard from [`add`](crate::WaitGroup::add),
/// a task from [`go`](crate::WaitGroup::go), a blocking task, or a tracked
/// future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskKind {
    /// A [`TaskGuard`](crate::TaskGuard): only its owner can complete it; a
    /// shutdown cannot abort it.
    Guard,
    /// A task spawned by `go()` (or on another runtime, or a `LocalSet`): a
    /// shutdown aborts it after the grace period.
    Task,
    /// A closure on the blocking pool
    /// ([`spawn_blocking`](crate::TaskBuilder::spawn_blocking)): it cannot be
    /// aborted once it runs, so a shutdown reports it as still running.
    Blocking,
    /// A future counted while it lives
    /// ([`track_future`](crate::TaskBuilder::track_future)): polled by its
    /// owner, not aborted by a shutdown.
    Tracked,
}

/// `guard`, `task`, `blocking task` or `tracked future`, as a
/// [dump](crate::dump) writes it.
///
/// ```
/// assert_eq!(taskgroup::TaskKind::Blocking.to_string(), "blocking task");
/// ```
impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::Guard => "guard",
            TaskKind::Task => "task",
            TaskKind::Blocking => "blocking task",
            TaskKind::Tracked => "tracked future",
        })
    }
}

/// One unfinished guard or task.
///
/// `Display` reads
/// `task "conn" #12 in group "server" (task, created at src/main.rs:40:12, pending for 3.2s)`.
#[derive(Clone)]
pub struct TaskInfo {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Label>,
    pub(crate) kind: TaskKind,
    pub(crate) queued: bool,
    pub(crate) site: &'static Location<'static>,
    pub(crate) age: Duration,
    pub(crate) group: GroupLabel,
}

impl TaskInfo {
    /// The id within its group.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The name it was given, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Label::as_str)
    }

    /// Guard, task, blocking task or tracked future.
    pub fn kind(&self) -> TaskKind {
        self.kind
    }

    /// Whether it is a task waiting for a slot under its group's
    /// [`limit`](crate::WaitGroupBuilder::limit), not yet running.
    pub fn is_queued(&self) -> bool {
        self.queued
    }

    /// Where it was created: the caller of `add`, `go` or their variants.
    pub fn site(&self) -> &'static Location<'static> {
        self.site
    }

    /// How long it had been pending when the report was made (on Tokio's
    /// clock, so paused time in tests applies).
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The group that holds it.
    pub fn group_id(&self) -> GroupId {
        self.group.id
    }

    /// That group's name, if it has one.
    pub fn group_name(&self) -> Option<&str> {
        self.group.name()
    }
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_task(f, self.name.as_ref(), self.id)?;
        let kind = match (self.kind, self.queued) {
            (TaskKind::Guard, _) => "guard",
            (TaskKind::Task, false) => "task",
            (TaskKind::Task, true) => "task, queued",
            (TaskKind::Blocking, _) => "blocking task, cannot be aborted",
            (TaskKind::Tracked, _) => "tracked future",
        };
        write!(
            f,
            " in {} ({kind}, created at {}, pending for {:.1?})",
            self.group, self.site, self.age
        )
    }
}

impl fmt::Debug for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskInfo")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("kind", &self.kind)
            .field("queued", &self.queued)
            .field("site", &format_args!("{}", self.site))
            .field("age", &self.age)
            .field("group", &self.group)
            .finish()
    }
}

/// The pending work of one group.
#[derive(Debug, Clone)]
pub struct GroupPending {
    pub(crate) group: GroupLabel,
    pub(crate) count: usize,
    pub(crate) tasks: Vec<TaskInfo>,
}

impl GroupPending {
    /// The group's id.
    pub fn group_id(&self) -> GroupId {
        self.group.id
    }

    /// The group's name, if it has one.
    pub fn group_name(&self) -> Option<&str> {
        self.group.name()
    }

    /// How many guards and tasks are pending in this group.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is pending in this group.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pending guards and tasks that were recorded, by id. Guards of a
    /// group built with [`record_guards(false)`](crate::WaitGroupBuilder::record_guards)
    /// are counted in [`len`](Self::len) but not listed here.
    pub fn tasks(&self) -> &[TaskInfo] {
        &self.tasks
    }

    /// Pending guards that were counted but not recorded.
    pub fn unrecorded(&self) -> usize {
        self.count.saturating_sub(self.tasks.len())
    }
}

/// Every unfinished guard and task of a group and its linked groups, taken at
/// one moment (group by group, so work that finishes while the report is made
/// may still be listed).
///
/// Groups with nothing pending are left out; the groups that remain come in
/// wait order (the group itself, then its linked groups depth-first in link
/// order, each once).
///
/// `Display` is one line: the count, then the first 100 recorded tasks and
/// counts of unrecorded guards, then `and N more` (`{:#}` lists them all);
/// [`tasks`](Self::tasks) and [`groups`](Self::groups) give every one.
///
/// With the `serde` feature it serializes as `{"pending": 3, "groups": [...]}`,
/// each group as
/// `{"group_id": 1, "group_name": "app", "pending": 3, "unrecorded": 1, "tasks": [...]}`
/// and each task as [`ShutdownReport`]'s docs show.
#[derive(Debug, Clone, Default)]
pub struct PendingReport {
    pub(crate) groups: Vec<GroupPending>,
}

impl PendingReport {
    /// Takes out the tasks `gone` says are not pending, and the groups left
    /// with nothing pending.
    pub(crate) fn forget(&mut self, gone: impl Fn(&TaskInfo) -> bool) {
        for group in &mut self.groups {
            let before = group.tasks.len();
            group.tasks.retain(|task| !gone(task));
            group.count -= before - group.tasks.len();
        }
        self.groups.retain(|group| group.count > 0);
    }

    /// How many guards and tasks are pending in all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The groups with pending work.
    pub fn groups(&self) -> &[GroupPending] {
        &self.groups
    }

    /// Every recorded pending guard and task, group by group.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskInfo> + '_ {
        self.groups.iter().flat_map(|g| g.tasks.iter())
    }
}

/// Tasks a report's text lists of each kind (aborted, pending, failed)
/// before it counts the rest in one line: a shutdown that aborts a million
/// connections prints a screenful, not a million lines. The alternate form
/// (`{:#}`) lists every one.
const LISTED: usize = 100;

/// Whether a report's text lists every task (`{:#}`), else at most
/// [`LISTED`] of each kind (and of failures).
pub(crate) fn list_limit(f: &fmt::Formatter<'_>) -> usize {
    if f.alternate() {
        usize::MAX
    } else {
        LISTED
    }
}

impl fmt::Display for PendingReport {
    /// `3 pending; task "a" #1 in group "app" (...); ...`: the count, then
    /// each recorded task and each group's count of unrecorded guards, up to
    /// 100 items, then `; and N more` for the pending work not listed. `{:#}`
    /// lists every item.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.len();
        write!(f, "{} pending", Thousands(total as u64))?;
        let mut room = list_limit(f);
        // Pending work listed so far: a task is one, an unrecorded note its count.
        let mut listed = 0;
        'groups: for group in &self.groups {
            for task in &group.tasks {
                if room == 0 {
                    break 'groups;
                }
                write!(f, "; {task}")?;
                room -= 1;
                listed += 1;
            }
            if group.unrecorded() > 0 {
                if room == 0 {
                    break;
                }
                write!(
                    f,
                    "; {} unrecorded guard(s) in {}",
                    group.unrecorded(),
                    group.group
                )?;
                room -= 1;
                listed += group.unrecorded();
            }
        }
        if listed < total {
            write!(f, "; and {} more", Thousands((total - listed) as u64))?;
        }
        Ok(())
    }
}

/// What [`shutdown`](crate::WaitGroup::shutdown) did.
///
/// Dropping a report unread hides the tasks that had to be aborted and the
/// work left behind, so it is `#[must_use]`: check it with
/// [`is_clean`](Self::is_clean), log it (`Display` lists aborted, pending
/// and failed tasks, one per line: the first 100 of each, then how many
/// more, so a shutdown of a million connections logs a screenful; `{:#}`
/// lists all of them), or turn it into a `Result` with
/// [`into_result`](Self::into_result) and return the error from `main`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let wg = WaitGroup::builder().name("app").build();
/// wg.task().name("worker").go(|ctx| async move { ctx.cancelled().await });
/// wg.shutdown(Duration::from_secs(5)).await.into_result()?; // clean: Ok(())
/// # Ok(())
/// # }
/// ```
///
/// # Serialization
///
/// With the `serde` feature a report serializes as below (JSON shown; its
/// shape is checked by `tests/serde.rs`). Durations are whole milliseconds
/// (`elapsed_ms`, `age_ms`: how long each task had been pending when the
/// report was made), sites are `"file:line:col"`, ids are numbers, names are
/// strings or `null`. `pending` is a [`PendingReport`]; each error's `kind`
/// is `"error"` (its `message` is the error's `Display`, `causes` those of
/// its `source()` chain, up to 32) or `"panic"` (the panic message, no
/// causes), `secondary` whether it came after its group was cancelled
/// ([`TaskError::is_secondary`](crate::TaskError::is_secondary)); `total`
/// counts the failures only counted too (`dropped`).
///
/// ```json
/// {
///   "clean": false,
///   "elapsed_ms": 2000,
///   "finished": 1,
///   "aborted": [
///     {"id": 2, "name": "stuck", "kind": "task", "queued": false,
///      "site": "src/main.rs:12:31", "age_ms": 2000, "group_id": 1, "group_name": "app"}
///   ],
///   "pending": {
///     "pending": 1,
///     "groups": [
///       {"group_id": 1, "group_name": "app", "pending": 1, "unrecorded": 0, "tasks": [
///         {"id": 3, "name": "lease", "kind": "guard", "queued": false,
///          "site": "src/main.rs:14:25", "age_ms": 2000, "group_id": 1, "group_name": "app"}
///       ]}
///     ]
///   },
///   "errors": {
///     "total": 1,
///     "dropped": 0,
///     "errors": [
///       {"id": 1, "name": "fetch", "group_id": 1, "group_name": "app",
///        "kind": "error", "message": "fetch failed", "causes": ["disk full"],
///        "secondary": false}
///     ]
///   }
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a shutdown report names the tasks that were aborted or left pending; check `is_clean()` or call `into_result()`"]
pub struct ShutdownReport {
    pub(crate) finished: usize,
    pub(crate) aborted: Vec<TaskInfo>,
    pub(crate) pending: PendingReport,
    pub(crate) errors: TaskErrors,
    pub(crate) elapsed: Duration,
}

impl ShutdownReport {
    /// Whether everything finished by itself within the grace period and no
    /// task ever failed.
    pub fn is_clean(&self) -> bool {
        self.aborted.is_empty() && self.pending.is_empty() && self.errors.is_empty()
    }

    /// Guards and tasks that ended during the shutdown other than by an
    /// abort listed in [`aborted`](Self::aborted), in all groups: those that
    /// completed by themselves (successfully or not; but those listed in
    /// `aborted`, see there), and tasks aborted by
    /// their own [`TaskHandle`](crate::TaskHandle), by a shutdown since
    /// dropped, or whose abort took effect only after the shutdown stopped
    /// waiting for it, and tasks dropped unfinished with their runtime (a
    /// runtime shut down or dropped while the group lived: their
    /// [`TaskHandle`](crate::TaskHandle)s say
    /// [`JoinError::is_aborted`](crate::JoinError::is_aborted), but no failure is
    /// recorded, so [`is_clean`](Self::is_clean) can hold). With
    /// `aborted` and [`pending`](Self::pending) it accounts for each guard
    /// and task pending when the shutdown started, once (a task whose
    /// `go()` was under way on another thread at that moment may be counted
    /// both here and in `aborted`), but the task that called the shutdown,
    /// if it is one of the tree's: it runs the call, and is left out (see
    /// [`WaitGroup::shutdown`](crate::WaitGroup::shutdown)). A task that another shutdown running at
    /// once aborted is listed in that one's report, and counted in neither's
    /// `finished`; one that finished by itself while two shutdowns of its
    /// group ran (`close()` called from two clones at once) is counted in
    /// both, so their reports are not to be added up.
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// Tasks still running at the deadline, which the shutdown aborted and
    /// whose abort took effect while it waited, by id within each group.
    /// A group's tasks and its scoped children's are all marked before any
    /// of them is aborted (in a forced stop, on a second signal, every
    /// group's); a task of a scoped child that ends by itself
    /// while those aborts are being made, from the first to the last (ended
    /// by another's abort, such as a part waiting on the task that started
    /// it), is listed here too: it was still running at the deadline. Its
    /// [`TaskHandle`](crate::TaskHandle) gives what it returned, and an
    /// error it returned is in [`errors`](Self::errors) too. One that ends
    /// by itself after the last of them is counted in
    /// [`finished`](Self::finished) (a task being polled when its own abort
    /// is made cannot be stopped mid-poll), as is a task of the group itself
    /// that ends by itself (it was finishing: a task the group's own tasks
    /// started is aborted before them).
    pub fn aborted(&self) -> &[TaskInfo] {
        &self.aborted
    }

    /// Work still pending when the shutdown returned: guards (which cannot be
    /// aborted) and tasks whose abort had not taken effect in time (for
    /// example, stuck in blocking code).
    pub fn pending(&self) -> &PendingReport {
        &self.pending
    }

    /// Every failure the groups recorded, as [`wait`](crate::WaitGroup::wait)
    /// would return them.
    pub fn errors(&self) -> &TaskErrors {
        &self.errors
    }

    /// How long the shutdown took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// `Ok(())` if the shutdown was [clean](Self::is_clean), else the report
    /// as a [`ShutdownError`], for `?`.
    ///
    /// Unclean means any of:
    /// * a task had to be **aborted** at the deadline;
    /// * work was **still pending** when the shutdown returned (a guard, a
    ///   blocking task, an abort that did not take effect);
    /// * a task **failed** (returned an error or panicked) at any time in the
    ///   groups' life, not only during the shutdown: the groups keep every
    ///   failure until [`take_errors`](crate::WaitGroup::take_errors), and a
    ///   failure nobody looked at is what this is for. Take the errors
    ///   first if they were already handled.
    ///
    /// # Errors
    ///
    /// [`ShutdownError`], carrying this report, when it is not clean. Its
    /// `Debug` prints the same readable lines as its `Display`, so
    /// `fn main() -> Result<(), Box<dyn Error>>` shows the report as is:
    ///
    /// ```text
    /// Error: shutdown took 5.0s: 0 finished, 0 failed, 1 aborted, 0 still pending
    ///   aborted: task "stuck" #1 in group "app" (task, created at src/main.rs:9:31, pending for 5.0s)
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let wg = WaitGroup::builder().name("app").build();
    /// wg.task().name("stuck").go(|_| std::future::pending::<()>());
    /// let err = wg.shutdown(Duration::from_secs(5)).await.into_result().unwrap_err();
    /// assert_eq!(err.report().aborted()[0].name(), Some("stuck"));
    /// assert_eq!(format!("{err:?}"), format!("{err}")); // what `main` prints
    /// # }
    /// ```
    pub fn into_result(self) -> Result<(), ShutdownError> {
        if self.is_clean() {
            Ok(())
        } else {
            Err(ShutdownError { report: self })
        }
    }
}

/// A shutdown that was not clean: tasks were aborted, work was left pending,
/// or tasks failed; from [`ShutdownReport::into_result`].
///
/// `Display` and `Debug` both print the report: a summary line, then one line
/// per aborted, pending and failed task (the first 100 of each, then how
/// many more; `{:#}` and `{:#?}` list all of them).
/// Debug is deliberately not a struct dump, because `Debug` is what a `main`
/// returning `Result` prints.
///
/// [`source`](StdError::source) follows [`TaskErrors`]'s: the one failure's
/// own cause when exactly one task failed, otherwise `None` (the lines
/// already name every failure).
#[derive(Clone)]
pub struct ShutdownError {
    report: ShutdownReport,
}

impl ShutdownError {
    /// The report.
    pub fn report(&self) -> &ShutdownReport {
        &self.report
    }

    /// The report, by value.
    pub fn into_report(self) -> ShutdownReport {
        self.report
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.report, f)
    }
}

impl fmt::Debug for ShutdownError {
    /// The same lines as `Display`, so that `main` returning this error (or a
    /// `Box<dyn Error>` made from it) prints the report readably.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.report, f)
    }
}

impl StdError for ShutdownError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.report.errors.source()
    }
}

/// Writes to a report's formatter with each line after the first indented
/// under the item it belongs to, so that a message of several lines (an
/// `assert_eq!` panic's, an error that lists) stays inside its item and no
/// line of it reads as an item of its own. A line break is `\n`, `\r\n` or a
/// lone `\r` (which a terminal would otherwise use to write the rest of the
/// message over the start of its item).
struct Item<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    /// The last chunk ended with `\r`, already written as a line break: a
    /// `\n` starting the next one belongs to it.
    after_cr: bool,
}

impl<'a, 'b> Item<'a, 'b> {
    fn new(f: &'a mut fmt::Formatter<'b>) -> Self {
        Item { f, after_cr: false }
    }
}

impl fmt::Write for Item<'_, '_> {
    fn write_str(&mut self, mut text: &str) -> fmt::Result {
        if std::mem::take(&mut self.after_cr) {
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        let mut rest = text;
        while let Some(at) = rest.find(['\n', '\r']) {
            self.f.write_str(&rest[..at])?;
            self.f.write_str("\n    ")?;
            let crlf = rest[at..].starts_with("\r\n");
            self.after_cr = rest[at..] == *"\r";
            rest = &rest[at + if crlf { 2 } else { 1 }..];
        }
        self.f.write_str(rest)
    }
}

impl fmt::Display for ShutdownReport {
    /// A summary line, then a line per aborted task, per pending task (and
    /// per group's count of unrecorded guards) and per failure the groups
    /// kept (up to 100 of each, then `and N more aborted` / `and N more
    /// pending` / `and N more failures`). `{:#}` lists every one. A failure
    /// whose message has several lines has them indented under its own, so
    /// each line of the list that is not indented further starts an item.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown took {:.1?}: {} finished, {} failed, {} aborted, {} still pending",
            self.elapsed,
            Thousands(self.finished as u64),
            Thousands(self.errors.total()),
            Thousands(self.aborted.len() as u64),
            Thousands(self.pending.len() as u64)
        )?;
        let limit = list_limit(f);
        for task in self.aborted.iter().take(limit) {
            write!(f, "\n  aborted: {task}")?;
        }
        if self.aborted.len() > limit {
            let more = Thousands((self.aborted.len() - limit) as u64);
            write!(f, "\n  and {more} more aborted")?;
        }
        // A line per pending task, and per group's count of unrecorded guards
        // (as `PendingReport` lists them); `and N more` counts pending work.
        let (mut lines, mut listed) = (0, 0);
        'groups: for group in &self.pending.groups {
            for task in &group.tasks {
                if lines == limit {
                    break 'groups;
                }
                write!(f, "\n  pending: {task}")?;
                (lines, listed) = (lines + 1, listed + 1);
            }
            if group.unrecorded() > 0 {
                if lines == limit {
                    break;
                }
                let n = group.unrecorded();
                let s = if n == 1 { "" } else { "s" };
                write!(f, "\n  pending: {n} unrecorded guard{s} in {}", group.group)?;
                (lines, listed) = (lines + 1, listed + n);
            }
        }
        let more = self.pending.len().saturating_sub(listed);
        if more > 0 {
            let more = Thousands(more as u64);
            write!(f, "\n  and {more} more pending")?;
        }
        for error in self.errors.iter().take(limit) {
            f.write_str("\n  failed: ")?;
            write!(Item::new(f), "{error}")?;
        }
        // Not listed: kept beyond the limit, or only counted.
        let more = self.errors.total() - self.errors.len().min(limit) as u64;
        if more > 0 {
            let s = if more == 1 { "" } else { "s" };
            let n = Thousands(more);
            if self.errors.first().is_none() {
                // None kept (`max_errors(0)`): not "more" than the none listed.
                write!(f, "\n  {n} failure{s} not kept (see `max_errors`)")?;
            } else {
                write!(f, "\n  and {n} more failure{s}")?;
            }
        }
        Ok(())
    }
}
