//! Errors: a task's failure, the list of them a wait returns, and misuse.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::label::{fmt_task, GroupId, GroupLabel, Label, TaskId};
use crate::report::PendingReport;

/// The error type tasks may return: anything that converts into this, which
/// includes every `std::error::Error + Send + Sync + 'static`, `String` and
/// `&str`.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A panic payload's message: the `&str` or `String` that `panic!` carries;
/// `None` for any other payload (`std::panic::panic_any(42)`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Some((*s).to_owned())
    } else {
        payload.downcast_ref::<String>().cloned()
    }
}

/// What a panic whose payload is not a string says in place of a message, as
/// the standard library prints it.
pub(crate) const NOT_A_STRING: &str = "Box<dyn Any>";

/// What the crate writes for a user's value whose `Display` panicked.
pub(crate) const DISPLAY_PANICKED: &str = "<the error's Display panicked>";

/// A user's value (an error) shown through its `Display`, or as
/// `<the error's Display panicked>` if that panics: for the text the crate
/// writes of users' errors without being asked to (log events, serde,
/// service status), so that a `Display` that panics takes down neither the
/// writer nor the shutdown or wait that writes it. The text is made in a
/// `String` first, so nothing half-written reaches the formatter.
pub(crate) struct Unpanicking<'a>(pub(crate) &'a dyn fmt::Display);

impl Unpanicking<'_> {
    /// The text, as `to_string()` would make it (see [`unpanicking`]).
    pub(crate) fn text(&self) -> String {
        unpanicking(|| self.0.to_string())
    }
}

/// What `format` makes, or [`DISPLAY_PANICKED`] if it panics (user code's
/// `Display` inside), its panic's payload dropped as a task's is
/// ([`drop_payload`](crate::task::drop_payload)): the payload's own `Drop`
/// may panic too.
pub(crate) fn unpanicking(format: impl FnOnce() -> String) -> String {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(format)).unwrap_or_else(|payload| {
        crate::task::drop_payload(payload);
        DISPLAY_PANICKED.to_owned()
    })
}

impl fmt::Display for Unpanicking<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Writes a message without the line breaks it ends with (`panic!("boom\n")`, an
/// error whose `Display` ends a line), so that what follows it (a `(after the group was
/// cancelled)`, the next item of a list) stays on its line. Line breaks inside it are
/// written when the text after them comes: nothing is copied.
pub(crate) struct TrimmedEnd<T>(pub(crate) T);

impl<T: fmt::Display> fmt::Display for TrimmedEnd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Holds back a chunk's trailing line breaks until more text comes.
        struct Writer<'a, 'b> {
            f: &'a mut fmt::Formatter<'b>,
            held: String,
        }
        impl fmt::Write for Writer<'_, '_> {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                let body = text.trim_end_matches(['\n', '\r']);
                if body.is_empty() {
                    self.held.push_str(text);
                    return Ok(());
                }
                self.f.write_str(&self.held)?;
                self.held.clear();
                self.f.write_str(body)?;
                self.held.push_str(&text[body.len()..]);
                Ok(())
            }
        }
        let mut writer = Writer {
            f,
            held: String::new(),
        };
        fmt::Write::write_fmt(&mut writer, format_args!("{}", self.0))
    }
}

/// How a task failed.
#[derive(Debug)]
enum Failure {
    Error(BoxError),
    Panic {
        /// `None` if the payload was not a string.
        message: Option<String>,
        while_dropped: bool,
    },
}

/// One task's failure: the error it returned, or its panic, with the task's
/// identity.
///
/// `Display` reads `task "fetch" #3 in group "crawler" failed: <error>` (or
/// `panicked: <message>`). Because the message already includes the task's own
/// error, [`source`](StdError::source) skips it and returns *that* error's
/// source, so an error chain never prints the same text twice; use
/// [`error`](TaskError::error) to reach the task's own error value.
#[derive(Debug)]
pub struct TaskError {
    id: TaskId,
    name: Option<Label>,
    group: GroupLabel,
    failure: Failure,
    /// Recorded after the group's context was cancelled.
    secondary: bool,
    /// The order in which failures were recorded, process-wide (see
    /// [`TaskError::set_recorded`]); 0 until recorded.
    recorded: u64,
}

impl TaskError {
    pub(crate) fn failed(
        id: TaskId,
        name: Option<Label>,
        group: GroupLabel,
        error: BoxError,
    ) -> Self {
        Self {
            id,
            name,
            group,
            failure: Failure::Error(error),
            secondary: false,
            recorded: 0,
        }
    }

    pub(crate) fn panicked(
        id: TaskId,
        name: Option<Label>,
        group: GroupLabel,
        payload: &(dyn std::any::Any + Send),
        while_dropped: bool,
    ) -> Self {
        let message = panic_message(payload);
        Self {
            id,
            name,
            group,
            failure: Failure::Panic {
                message,
                while_dropped,
            },
            secondary: false,
            recorded: 0,
        }
    }

    /// Marks the failure as recorded after its group was cancelled.
    pub(crate) fn set_secondary(&mut self) {
        self.secondary = true;
    }

    /// Numbers the failure as recorded now, after every failure recorded
    /// before it in any group: called under the group's failures lock, so a
    /// group's list is in this order too.
    pub(crate) fn set_recorded(&mut self) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.recorded = NEXT.fetch_add(1, Ordering::Relaxed);
    }

    /// See [`set_recorded`](Self::set_recorded).
    pub(crate) fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Whether the task failed after its group's context was cancelled: a
    /// failure the cancellation most likely caused (a connection reset by
    /// the shutdown, a query cut short by the first failure), reported
    /// apart from the primary failures as Kotlin reports suppressed
    /// exceptions. The failure that cancelled the group is primary.
    ///
    /// ```
    /// use taskgroup::WaitGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::builder().cancel_on_error(true).build();
    /// wg.task().name("db").go(|_| async { Err::<(), _>("connection refused") });
    /// wg.task().name("api").go(|ctx| async move {
    ///     ctx.cancelled().await;
    ///     Err::<(), _>("request aborted") // because of the cancellation
    /// });
    /// let errors = wg.wait().await.unwrap_err().errors().clone();
    /// let primary: Vec<_> = errors.primary().map(|e| e.name()).collect();
    /// let secondary: Vec<_> = errors.secondary().map(|e| e.name()).collect();
    /// assert_eq!((primary, secondary), (vec![Some("db")], vec![Some("api")]));
    /// # }
    /// ```
    pub fn is_secondary(&self) -> bool {
        self.secondary
    }

    /// The failed task's id within its group.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The failed task's name, if it was given one
    /// ([`TaskBuilder::name`](crate::TaskBuilder::name)).
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Label::as_str)
    }

    /// The id of the group the task belonged to.
    pub fn group_id(&self) -> GroupId {
        self.group.id
    }

    /// The name of the group the task belonged to, if it has one.
    pub fn group_name(&self) -> Option<&str> {
        self.group.name()
    }

    /// Whether the task panicked (rather than returning an error).
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panic { .. })
    }

    /// The panic message, if the task panicked and the payload was a string
    /// (`None` for a payload of another type, which `Display` shows as
    /// `Box<dyn Any>`, as the standard library does).
    pub fn panic_message(&self) -> Option<&str> {
        match &self.failure {
            Failure::Panic { message, .. } => message.as_deref(),
            Failure::Error(_) => None,
        }
    }

    /// The error the task returned, if it returned one.
    pub fn error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match &self.failure {
            Failure::Error(error) => Some(&**error),
            Failure::Panic { .. } => None,
        }
    }
}

impl TaskError {
    /// The `Display` text with the task's error [`Unpanicking`]: for the
    /// crate's own log lines.
    #[cfg(feature = "tracing")]
    pub(crate) fn guarded(&self) -> impl fmt::Display + '_ {
        struct Guarded<'a>(&'a TaskError);
        impl fmt::Display for Guarded<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, true)
            }
        }
        Guarded(self)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, guarded: bool) -> fmt::Result {
        fmt_task(f, self.name.as_ref(), self.id)?;
        write!(f, " in {} ", self.group)?;
        match &self.failure {
            Failure::Error(error) if guarded => {
                write!(f, "failed: {}", TrimmedEnd(Unpanicking(&error)))
            }
            Failure::Error(error) => write!(f, "failed: {}", TrimmedEnd(error)),
            Failure::Panic {
                message,
                while_dropped,
            } => {
                let message = message
                    .as_deref()
                    .unwrap_or(NOT_A_STRING)
                    .trim_end_matches(['\n', '\r']);
                if *while_dropped {
                    write!(f, "panicked while being dropped: {message}")
                } else {
                    write!(f, "panicked: {message}")
                }
            }
        }?;
        if self.secondary {
            f.write_str(" (after the group was cancelled)")?;
        }
        Ok(())
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl StdError for TaskError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.failure {
            Failure::Error(error) => error.source(),
            Failure::Panic { .. } => None,
        }
    }
}

/// Every task failure a group and its linked groups recorded, in completion
/// order within each group (the group's own first, with those of its children
/// that left it, then each linked group's in link order), and how many more
/// were counted but not kept (see
/// [`Builder::max_errors`](crate::WaitGroupBuilder::max_errors), which bounds
/// each group's, its departed children's included).
/// [`first`](Self::first) is the first recorded in any group.
///
/// Cheap to clone, and cheap to make: the lists are shared with the groups
/// that recorded them, which is how waiting twice returns the same errors
/// without copying them.
#[derive(Debug, Clone, Default)]
pub struct TaskErrors {
    parts: Vec<FailureList>,
    len: usize,
    dropped: u64,
}

/// The failures one group keeps, shared between the group and the
/// [`TaskErrors`] snapshots taken of them (copied on write).
pub(crate) type FailureList = Arc<Vec<Arc<TaskError>>>;

impl TaskErrors {
    /// Adds one group's kept failures and its count of dropped ones.
    pub(crate) fn push_part(&mut self, kept: Option<FailureList>, dropped: u64) {
        self.dropped += dropped;
        if let Some(kept) = kept.filter(|kept| !kept.is_empty()) {
            self.len += kept.len();
            self.parts.push(kept);
        }
    }

    /// How many failures are kept here (see [`dropped`](Self::dropped) for
    /// the ones only counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task failed: nothing kept and nothing dropped.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.dropped == 0
    }

    /// Failures recorded beyond a group's
    /// [`max_errors`](crate::WaitGroupBuilder::max_errors): counted exactly, not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every failure recorded: kept plus dropped.
    pub fn total(&self) -> u64 {
        self.len as u64 + self.dropped
    }

    /// The failure recorded first, of those kept, in whichever group (not
    /// the first [in order](Self::iter), which lists group by group).
    pub fn first(&self) -> Option<&TaskError> {
        self.iter().min_by_key(|e| e.recorded)
    }

    /// The error value returned by the first task that failed with one (Go's
    /// `errgroup.Wait` result in one call), in whichever group; panics are
    /// skipped, see [`first`](Self::first) for the first failure of any kind.
    ///
    /// ```
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// wg.go(|_| async { Err::<(), _>("disk full") });
    /// let err = wg.wait().await.unwrap_err();
    /// assert_eq!(err.errors().first_error().unwrap().to_string(), "disk full");
    /// # }
    /// ```
    pub fn first_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.iter()
            .filter(|e| e.error().is_some())
            .min_by_key(|e| e.recorded)
            .and_then(TaskError::error)
    }

    /// The kept failures that are not [secondary](TaskError::is_secondary):
    /// the causes, in order.
    pub fn primary(&self) -> impl Iterator<Item = &TaskError> + '_ {
        self.iter().filter(|e| !e.is_secondary())
    }

    /// The kept failures recorded after their group was cancelled (see
    /// [`TaskError::is_secondary`]), in order.
    pub fn secondary(&self) -> impl Iterator<Item = &TaskError> + '_ {
        self.iter().filter(|e| e.is_secondary())
    }

    /// The kept failures, in order.
    pub fn iter(&self) -> ErrorsIter<'_> {
        ErrorsIter {
            parts: self.parts.iter(),
            current: [].iter(),
            left: self.len,
        }
    }
}

/// The failures of a [`TaskErrors`], in order; from [`TaskErrors::iter`].
#[derive(Debug, Clone)]
pub struct ErrorsIter<'a> {
    parts: std::slice::Iter<'a, FailureList>,
    current: std::slice::Iter<'a, Arc<TaskError>>,
    left: usize,
}

impl<'a> Iterator for ErrorsIter<'a> {
    type Item = &'a TaskError;

    fn next(&mut self) -> Option<&'a TaskError> {
        loop {
            if let Some(error) = self.current.next() {
                self.left -= 1;
                return Some(error);
            }
            self.current = self.parts.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ErrorsIter<'_> {}

impl<'a> IntoIterator for &'a TaskErrors {
    type Item = &'a TaskError;
    type IntoIter = ErrorsIter<'a>;

    fn into_iter(self) -> ErrorsIter<'a> {
        self.iter()
    }
}

/// `n` with thousands separators: `9,990`.
pub(crate) struct Thousands(pub(crate) u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TaskErrors {
    /// `3 tasks failed; 1) ...; 2) ...; 3) ...` (one failure: its own
    /// message), listing the first 100 failures kept, then `; and N more
    /// failures` for the rest, kept or only counted: a tree of many groups,
    /// each keeping up to its `max_errors`, prints a screenful. `{:#}` lists
    /// every failure kept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut errors = self.iter();
        let limit = crate::report::list_limit(f);
        match (self.len, errors.next()) {
            (_, None) if self.dropped == 0 => return f.write_str("no task failed"),
            // None kept (a group built with `max_errors(0)`): counted only.
            (_, None) => {
                let s = if self.dropped == 1 { "" } else { "s" };
                return write!(
                    f,
                    "{} task{s} failed (none kept: see `max_errors`)",
                    Thousands(self.dropped)
                );
            }
            (1, Some(one)) if self.dropped == 0 => return fmt::Display::fmt(one, f),
            (_, Some(first)) => {
                write!(f, "{} tasks failed; 1) {first}", Thousands(self.total()))?;
                for (i, error) in errors.take(limit.saturating_sub(1)).enumerate() {
                    write!(f, "; {}) {error}", i + 2)?;
                }
            }
        }
        let more = self.total() - self.len.min(limit) as u64;
        if more > 0 {
            let s = if more == 1 { "" } else { "s" };
            write!(f, "; and {} more failure{s}", Thousands(more))?;
        }
        Ok(())
    }
}

impl StdError for TaskErrors {
    /// With exactly one failure, that failure's own cause (the list's
    /// `Display` is then the failure's message, so the chain continues below
    /// it, as [`TaskError`]'s does). With more than one (kept or only
    /// counted), `None`: the `Display` already names every failure, and
    /// error reporters such as anyhow and eyre print the source chain under
    /// the *whole* message, so the first task's cause would read as the cause
    /// of the list, or of its last item. Walk [`iter`](Self::iter) for each
    /// failure's own chain.
    ///
    /// ```
    /// # use std::error::Error;
    /// # use taskgroup::WaitGroup;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wg = WaitGroup::new();
    /// for _ in 0..2 {
    ///     wg.go(|_| async { Err::<(), _>(std::io::Error::other("disk full")) });
    /// }
    /// let errors = wg.wait().await.unwrap_err().errors().clone();
    /// assert_eq!(errors.len(), 2);
    /// assert!(errors.source().is_none());
    /// # }
    /// ```
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        if self.total() == 1 {
            self.first().and_then(|e| e.source())
        } else {
            None
        }
    }
}

/// Why [`wait`](crate::WaitGroup::wait) and its variants did not return `Ok`.
///
/// # Serialization
///
/// With the `serde` feature it serializes as an object whose `kind` names the variant,
/// beside its fields: [`TaskErrors`] and [`PendingReport`] as a
/// [`ShutdownReport`](crate::ShutdownReport) writes them, the group as `group_id` (checked
/// by `tests/serde.rs`):
///
/// ```json
/// [
///   {"kind": "failed",
///    "errors": {"total": 1, "dropped": 0, "errors": [
///      {"id": 1, "name": "fetch", "group_id": 1, "group_name": "app", "kind": "error",
///       "message": "disk full", "causes": [], "secondary": false}]}},
///   {"kind": "timed_out",
///    "pending": {"pending": 1, "groups": [
///      {"group_id": 1, "group_name": "app", "pending": 1, "unrecorded": 0, "tasks": [
///        {"id": 2, "name": "lease", "kind": "guard", "queued": false,
///         "site": "src/main.rs:14:25", "age_ms": 2000, "group_id": 1, "group_name": "app"}]}]},
///    "errors": {"total": 0, "dropped": 0, "errors": []}},
///   {"kind": "wait_from_own_task", "group_id": 1}
/// ]
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// Everything finished, and at least one task failed or panicked.
    Failed {
        /// Every failure, in order.
        errors: TaskErrors,
    },
    /// The deadline passed before everything finished. Only the `_timeout`
    /// and `_deadline` variants of wait return this.
    TimedOut {
        /// Every guard and task still pending at the deadline, in this group
        /// and its linked groups.
        pending: PendingReport,
        /// The failures recorded before the deadline.
        errors: TaskErrors,
    },
    /// Wait was called from inside a `go()` task that the wait would have to
    /// wait for, which could never finish.
    WaitFromOwnTask {
        /// The group whose task called wait.
        group: GroupId,
    },
}

impl WaitError {
    /// The failures recorded (empty for [`WaitFromOwnTask`](Self::WaitFromOwnTask)).
    pub fn errors(&self) -> &TaskErrors {
        static NONE: TaskErrors = TaskErrors {
            parts: Vec::new(),
            len: 0,
            dropped: 0,
        };
        match self {
            WaitError::Failed { errors } | WaitError::TimedOut { errors, .. } => errors,
            WaitError::WaitFromOwnTask { .. } => &NONE,
        }
    }

    /// The pending report, if the wait timed out.
    pub fn pending(&self) -> Option<&PendingReport> {
        match self {
            WaitError::TimedOut { pending, .. } => Some(pending),
            _ => None,
        }
    }

    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WaitError::TimedOut { .. })
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Failed { errors } => fmt::Display::fmt(errors, f),
            WaitError::TimedOut { pending, errors } => {
                // `{:#}` reaches the report: every pending task listed.
                f.write_str("timed out: ")?;
                fmt::Display::fmt(pending, f)?;
                if !errors.is_empty() {
                    f.write_str("; and ")?;
                    fmt::Display::fmt(errors, f)?;
                }
                Ok(())
            }
            WaitError::WaitFromOwnTask { group } => write!(
                f,
                "wait called from inside a task of group {group}, which that wait covers: it would wait for itself forever"
            ),
        }
    }
}

impl StdError for WaitError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.errors().source()
    }
}

/// [`try_add`](crate::WaitGroup::try_add) (or another refusing start) on a
/// group that was [closed](crate::WaitGroup::close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group {group} is closed to new work")]
pub struct Closed {
    pub(crate) group: GroupId,
}

impl Closed {
    /// The closed group.
    pub fn group_id(&self) -> GroupId {
        self.group
    }
}

/// Why [`try_go`](crate::WaitGroup::try_go) refused to spawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryGoError {
    /// The group is [closed](crate::WaitGroup::close).
    #[error("group {group} is closed to new work")]
    Closed {
        /// The closed group.
        group: GroupId,
    },
    /// The group runs as many tasks as its
    /// [`limit`](crate::WaitGroupBuilder::limit) allows (Go's `TryGo`
    /// returning `false`).
    #[error("group {group} already runs its limit of {limit} tasks")]
    Full {
        /// The group.
        group: GroupId,
        /// Its limit.
        limit: usize,
    },
}

impl TryGoError {
    /// The group that refused.
    pub fn group_id(&self) -> GroupId {
        match self {
            TryGoError::Closed { group } | TryGoError::Full { group, .. } => *group,
        }
    }

    /// Whether the group was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryGoError::Closed { .. })
    }

    /// Whether the group was at its limit.
    pub fn is_full(&self) -> bool {
        matches!(self, TryGoError::Full { .. })
    }
}

impl From<Closed> for TryGoError {
    fn from(closed: Closed) -> Self {
        TryGoError::Closed {
            group: closed.group,
        }
    }
}

/// Why [`link`](crate::WaitGroup::link) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A group cannot wait for itself.
    #[error("cannot link group {group} to itself")]
    SelfLink {
        /// The group.
        group: GroupId,
    },
    /// The link would close a cycle: `child` already (transitively) waits for
    /// `parent`, so each would wait for the other forever.
    #[error("linking group {child} under group {parent} would create a cycle: {child} already waits for {parent}")]
    Cycle {
        /// The would-be parent.
        parent: GroupId,
        /// The would-be child.
        child: GroupId,
    },
    /// The child is already linked under this parent.
    #[error("group {child} is already linked under group {parent}")]
    AlreadyLinked {
        /// The parent.
        parent: GroupId,
        /// The child.
        child: GroupId,
    },
}
