//! [`TaskContext`]: what a task of a group is given when it starts.

use std::fmt;
use std::ops::Deref;

use tokio_util::sync::CancellationToken;

use crate::label::GroupId;
use crate::node::NodeRef;

/// What a task of a group receives when it starts: the group's cancellation
/// context, to stop when asked.
///
/// It dereferences to the group's [`CancellationToken`], so
/// `ctx.cancelled().await`, `ctx.is_cancelled()` and
/// `ctx.run_until_cancelled(fut).await` work as on the token; use
/// [`token`](Self::token) for an owned token to hand on (for example to a
/// library's graceful-shutdown hook). Cloning it is one atomic increment, and
/// handing it to a task costs no more: it does not clone the token.
///
/// # Examples
///
/// ```
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let wg = WaitGroup::new();
/// wg.go(|ctx| async move {
///     ctx.cancelled().await; // asked to stop: a shutdown, cancel(), ...
/// });
/// wg.cancel();
/// wg.wait().await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    node: NodeRef,
    /// The generation of the group's tokens the task started in (a
    /// `reopen()` of a cancelled group starts a new one).
    generation: u32,
}

impl TaskContext {
    pub(crate) fn new(node: NodeRef) -> Self {
        let generation = node.generation();
        TaskContext { node, generation }
    }

    /// The group's cancellation token, as this task received it.
    pub fn token(&self) -> &CancellationToken {
        self.node.own_at(self.generation)
    }

    /// The id of the task's group.
    pub fn group_id(&self) -> GroupId {
        self.node.id()
    }
}

impl Deref for TaskContext {
    type Target = CancellationToken;

    fn deref(&self) -> &CancellationToken {
        self.token()
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("group", &self.group_id())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
