//! Names of tasks and groups, and the ids that identify them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A task or group name: borrowed for `&'static str`, shared otherwise, so
/// copying it into a report never allocates.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Label {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Label {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }
}

impl From<Cow<'static, str>> for Label {
    fn from(name: Cow<'static, str>) -> Self {
        match name {
            Cow::Borrowed(s) => Label::Static(s),
            Cow::Owned(s) => Label::Shared(s.into()),
        }
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A spawned task's identity, as its handle and [`JoinError`](crate::JoinError)
/// keep it once the task's record is gone: `task "fetch" #3 in group "db"`.
/// Cloned from what the task was spawned with (a copy, or one reference
/// count for a name given as a `String`), so a handle names its task without
/// reaching back into the group.
#[derive(Clone)]
pub(crate) struct TaskName {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Label>,
    pub(crate) group: GroupLabel,
}

impl TaskName {
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Label::as_str)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_task(f, self.name.as_ref(), self.id)?;
        write!(f, " in {}", self.group)
    }
}

/// Identifies a task guard or a spawned task within its group.
///
/// Ids start at 1 and increase with every [`add`](crate::WaitGroup::add) or
/// [`go`](crate::WaitGroup::go) on the group, so they are unique within a group
/// and say in which order work was registered. (In a group built with
/// [`record_guards(false)`](crate::WaitGroupBuilder::record_guards), a guard takes its
/// id when first asked for: still unique, but in that order instead.) They
/// print as `#7`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Identifies a [`WaitGroup`](crate::WaitGroup), unique within the process.
/// Prints as `#3`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub(crate) u64);

impl GroupId {
    pub(crate) fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        GroupId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A group's identity as reports show it: `group "db"`, or `group #3` when
/// it has no name.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct GroupLabel {
    pub(crate) id: GroupId,
    pub(crate) name: Option<Label>,
}

impl GroupLabel {
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Label::as_str)
    }
}

impl fmt::Display for GroupLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "group {:?}", name.as_str()),
            None => write!(f, "group {}", self.id),
        }
    }
}

impl fmt::Debug for GroupLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes a task's identity: `task "fetch" #3` or `task #3`.
pub(crate) fn fmt_task(
    f: &mut fmt::Formatter<'_>,
    name: Option<&Label>,
    id: TaskId,
) -> fmt::Result {
    match name {
        Some(name) => write!(f, "task {:?} {}", name.as_str(), id),
        None => write!(f, "task {id}"),
    }
}
