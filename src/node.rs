//! The group node: what a [`WaitGroup`](crate::WaitGroup) handle points to.
//!
//! A node holds a group's shared state: the state word (which is also its
//! reference count, see [`crate::shared`]), the registry of pending work, the
//! failures recorded, the cancellation tokens, and the links to the groups
//! below it. Everything that walks links goes through one traversal,
//! [`visit`]: iterative (an explicit stack, so depth is limited by memory,
//! not by the thread's stack), visiting each reachable group exactly once,
//! root first and then depth-first in link order (a group's scoped children
//! before its other links). Waits, cancel, pending,
//! errors, the shutdown order and the cycle check all use it.
//!
//! # Handles and internal references
//!
//! A node is kept alive by [`NodeRef`]s (a unit in its state word each) and by
//! its pending tasks. Of the `NodeRef`s, those held by user-facing
//! `WaitGroup` handles are also counted in [`Hot::users`]; the others are
//! internal: a parent's link, a walk's copy, a task's context. A child
//! reaches its parent only
//! through a `Weak` reference to the parent's [`Table`] of links, so nothing
//! below a group keeps it alive (a strong reference up would make a cycle
//! that is never freed). A group made with `child()` *leaves* its parent
//! once it is
//! **detached** (no user handle left), **idle** (no pending work) and
//! **bare** (no links of its own left):
//!
//! * nobody can add work or links to a detached group, so idle and bare stay
//!   so, unless a handle is made again: only `WaitGroup::linked` makes one
//!   from nothing, and it counts it under the links lock of the parent it
//!   lists the child from;
//! * whichever event completes the three runs [`leave`]: the last handle's
//!   drop (if the group is idle and bare then), the last task's `done` (the
//!   dropping handle sets the state word's WAITING bit, so that `done` takes
//!   the notify path and calls [`Counted::on_idle`]), or the group's last
//!   link leaving it (the cascade in [`leave`]);
//! * [`leave`] re-checks the three under the parent's links lock (where a
//!   handle would be made again), and takes the child's failures there, so
//!   concurrent triggers remove the link once and no failure is missed. A
//!   child that a user got a handle to again leaves when that handle goes,
//!   by the same rules.
//!
//! A leaving group's failures are copied into its parent's table under the
//! parent's links lock, and readers take them under the same lock
//! ([`errors`]): a failure is seen either in the child (still linked in the
//! reader's snapshot) or in the parent's table, exactly once.
//!
//! # Invariants
//!
//! * The state word's task count equals the number of live guards of this
//!   group (a `go()` task holds one guard while it runs); its handle count the
//!   number of `NodeRef`s.
//! * A guard's registry entry, if it has one, exists exactly while the guard
//!   is counted: inserted after the count is raised, removed before it is
//!   lowered. An idle group has an empty registry.
//! * A task's failure is recorded before its guard completes, so a wait that
//!   sees the group idle sees every failure.
//! * Links form a DAG: `link` checks for cycles under [`LINK_ORDER`];
//!   `child()` only adds fresh groups.
//! * A generation's context and drain tokens are made when first asked for,
//!   under the generation's lock ([`Tokens::lock`]), and a cancel or drain
//!   that finds its token not made sets a bit of [`Tokens::early`] under it
//!   instead: a token made after its bit is made cancelled, one made before
//!   is cancelled by whoever would have set the bit. Readers of "cancelled"
//!   and "draining" look at the bit while the token is not made.
//! * A group's scope token is a child of its parent's scope (a `child()`),
//!   of its parent's context (a `scoped_child()`), of the caller's token, or
//!   of none. A cancel sets the reason of every group it reaches before it
//!   cancels any token: [`cancel_tree`] for a whole tree, and a cancel of a
//!   group's own context for its scoped children ([`Node::cancel_scoped`])
//!   first.
//!
//! # Lock order
//!
//! [`LINK_ORDER`], then links locks from ancestor to descendant (only
//! [`leave`] holds two: a parent's, then the leaving child's), then a
//! `failures` lock (under which [`Node::record_failure`] takes the cause's,
//! [`Extra::cause`], and under both reads whether the group is cancelled:
//! [`Later`]'s lock, for a reopened group), then a
//! registry shard, then the group's `aborting` lock
//! (a task recording its abort handle, [`Node::late_abort`]), then an abort
//! watch's. A generation's [`Tokens::lock`]
//! is taken alone (but by a scoped child's `reopen()`, which sets the reason
//! of the generation it makes, not yet shared, under the current one's), and
//! held only to fill a token cell (making a token takes
//! tokio-util's lock of its parent token), set an early bit or the cancel
//! reason, or add the next generation (taking [`Later`]'s lock of the later
//! generations, by itself the last lock taken: it is held only to read or
//! replace the current generation and the list of drained ones), never while
//! a token is cancelled. A
//! group's shields lock ([`Shields`]) is also taken alone: a forced phase
//! reads it, then aborts by the registry. No lock is held across an
//! `.await` or while user code runs.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{ControlFlow, Range};
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::thread::LocalKey;
use std::time::Duration;

use parking_lot::Mutex as PlainMutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{FailureList, TaskError, TaskErrors};
use crate::label::{GroupId, GroupLabel, Label, TaskId};
use crate::pruned::Pruned;
use crate::reason::CancelReason;
use crate::registry::{AbortWatch, Late, Registry, Slot};
use crate::report::{GroupPending, TaskInfo};
use crate::shared::{Counted, Shared};
use crate::state::State;
// Loom's under `--cfg loom`: what a child leaving its parent races on.
use crate::sync::{fence, AtomicBool, AtomicU8, AtomicUsize, Mutex, Ordering};

/// The groups "freed" in a loom model (loom keeps the memory; see
/// `crate::shared`), for the models of a child leaving its parent.
#[cfg(loom)]
pub(crate) static FREED: std::sync::Mutex<Vec<GroupId>> = std::sync::Mutex::new(Vec::new());

/// An internal reference to a node: counted in its state word, not in
/// [`Hot::users`].
pub(crate) type NodeRef = Shared<Node>;

/// Serialises `link()` so that two concurrent links cannot form a cycle that
/// neither saw. Linking is rare; nothing on the add/done or wait path takes it.
pub(crate) static LINK_ORDER: PlainMutex<()> = parking_lot::const_mutex(());

/// A group's settings, as its builder makes them. When the group is made,
/// `name` and `deadline` move out (to its label and its [`Extra`]) and the
/// rest is kept as [`Settings`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) name: Option<Label>,
    pub(crate) cancel_on_error: bool,
    pub(crate) abort_timeout: Duration,
    pub(crate) max_errors: usize,
    pub(crate) abort_on_drop: bool,
    pub(crate) limit: Option<usize>,
    /// Whether a shutdown starts stopping the groups below this one at its
    /// turn; see `WaitGroupBuilder::stop_children_together`.
    pub(crate) stop_children_together: bool,
    /// The group's own deadline, if any.
    pub(crate) deadline: Option<Instant>,
}

impl Config {
    /// The defaults, those of `WaitGroup::new()`.
    pub(crate) const DEFAULT: Config = Config {
        name: None,
        cancel_on_error: false,
        abort_timeout: crate::wait_group::DEFAULT_ABORT_TIMEOUT,
        max_errors: crate::wait_group::DEFAULT_MAX_ERRORS,
        abort_on_drop: false,
        limit: None,
        stop_children_together: false,
        deadline: None,
    };
}

/// How many times [`Node::settled_counts`] reads a group's count and entries
/// for a moment with no end under way.
const SETTLE_LOOKS: usize = 64;

/// The defaults, shared by every group built with them.
static DEFAULT_SETTINGS: Config = Config::DEFAULT;

/// A group's settings as it keeps them (a [`Config`] whose `name` and
/// `deadline` are unset): not a copy per group, since groups are often made
/// by the thousand with the same settings. The defaults are one static; other
/// settings are shared by a group and the children that inherit them.
#[derive(Debug, Clone)]
pub(crate) enum Settings {
    Default,
    Shared(Arc<Config>),
}

impl Settings {
    /// Keeps `config` (its `name` and `deadline` already moved out), shared
    /// with the defaults or with `like` if equal to them.
    fn new(config: Config, like: Option<&Settings>) -> Settings {
        debug_assert!(config.name.is_none() && config.deadline.is_none());
        if config == Config::DEFAULT {
            return Settings::Default;
        }
        match like {
            Some(like) if **like == config => like.clone(),
            _ => Settings::Shared(Arc::new(config)),
        }
    }
}

/// What a new node is made from: its [`Settings`], the parts of its
/// [`Config`] the node keeps elsewhere (the name in its label, its own
/// deadline in its [`Extra`]), and `record_guards`, kept in [`Hot`]: not a
/// setting, so that a lean group with the other settings at their defaults
/// shares the static defaults.
pub(crate) struct NodeConfig {
    settings: Settings,
    name: Option<Label>,
    deadline: Option<Instant>,
    record_guards: bool,
    /// Built with `abort_on_drop(true)`: acted on by this group (see
    /// [`ABORT_ON_DROP`]), not by the `child()` groups that inherit it.
    abort_on_drop: bool,
}

impl NodeConfig {
    /// A builder's `config` and `record_guards`, its settings shared with
    /// `like` if equal.
    pub(crate) fn new(mut config: Config, record_guards: bool, like: Option<&Settings>) -> Self {
        let name = config.name.take();
        let deadline = config.deadline.take();
        NodeConfig {
            abort_on_drop: config.abort_on_drop,
            settings: Settings::new(config, like),
            name,
            deadline,
            record_guards,
        }
    }

    /// A [`child()`](crate::WaitGroup::child) of `parent`, named `name`:
    /// `parent`'s settings, shared without comparing them, and no deadline
    /// of its own (`parent`'s bounds it as an inherited one).
    pub(crate) fn inherit(parent: &Node, name: Option<Label>) -> Self {
        NodeConfig {
            settings: parent.config.clone(),
            name,
            deadline: None,
            record_guards: parent.record_guards(),
            abort_on_drop: false,
        }
    }
}

impl std::ops::Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        match self {
            Settings::Default => &DEFAULT_SETTINGS,
            Settings::Shared(config) => config,
        }
    }
}

/// A task's slot under its group's limit.
#[derive(Debug)]
pub(crate) enum Permit {
    /// The group has no limit.
    Unlimited,
    /// A slot, held until the task ends.
    Held(tokio::sync::OwnedSemaphorePermit),
    /// No slot was free: the task waits for one.
    Queue,
}

/// The state word and the id counter, on lines of their own so that
/// `add`/`done` do not share a line with the cold fields (see [`Node`] for
/// how, without aligning the allocation). The small counters and flags that
/// follow it are each written rarely (a handle cloned or dropped, a failure,
/// a link, a reopen) and read where the state word is read too.
struct Hot {
    state: State,
    /// The last id handed out; ids are unique within the group.
    last_id: StdAtomicU64,
    /// User handles (`WaitGroup`s). Rises from zero only in
    /// [`Node::links_for_users`], under a parent's links lock.
    users: AtomicUsize,
    /// The number of the current generation of tokens: 0 for `tokens`, else
    /// `later`'s current one. Set under the lock of the generation before it.
    generation: std::sync::atomic::AtomicU32,
    /// `failures` may not be empty. Set after the push in `record_failure`,
    /// so a wait on a group without failures takes no lock after waking; see
    /// [`Node::own_errors`].
    has_errors: AtomicBool,
    /// The links were not empty at some point. Set (never cleared) under the
    /// links lock after a push, so a group that never had links is walked
    /// without taking that lock.
    has_links: AtomicBool,
    /// [`LINKED_BELOW`], [`HAS_SCOPED`], [`SCOPED`] and [`MADE_IN_A_SCOPE`]:
    /// one byte for the four, so that [`Hot`] keeps its size.
    flags: AtomicU8,
    /// The group's `record_guards`: here, in what would be padding, rather
    /// than in its [`Settings`], so that a lean group with the other
    /// settings at their defaults shares the static defaults instead of
    /// allocating its own, and so that `add()` reads it on the line it has
    /// just written. Never changes.
    record_guards: bool,
}

/// [`Hot::flags`]: [`link`](crate::WaitGroup::link) put this group below
/// another at some point. Set (never cleared) by [`Node::push_link`], and
/// read by [`Node::may_be_below_another`], both under [`LINK_ORDER`].
const LINKED_BELOW: u8 = 1;
/// [`Hot::flags`]: a [`scoped_child`](crate::WaitGroup::scoped_child) is
/// linked below this group, or was. Set (never cleared) under the links lock
/// after its push, so that cancelling this group's own context looks for
/// scoped children ([`Node::cancel_scoped`]) only in a group that made one:
/// one load for every other.
const HAS_SCOPED: u8 = 2;
/// [`Hot::flags`]: this group is a
/// [`scoped_child`](crate::WaitGroup::scoped_child): its scope is a child of
/// its parent's context, not of its parent's scope. Set when it is made,
/// before it is linked.
const SCOPED: u8 = 4;
/// [`Hot::flags`]: this group is a scoped child, or was made (`child()`,
/// `scoped_child()`) by one or by a group made so: it belongs with the work
/// of the group whose scoped child began the line (see
/// [`Node::scoped_subtree_but`], which lists such groups from that group, as
/// long as each is still linked where it was made). Set when it is made,
/// before it is linked; for a forced stop, which gives such groups' aborts
/// a window without walking a subtree (`drain::force_round`).
const MADE_IN_A_SCOPE: u8 = 8;
/// [`Hot::flags`]: this group was built with
/// [`abort_on_drop(true)`](crate::WaitGroupBuilder::abort_on_drop) (as a root
/// or with `build_child`), not given it by a parent through `child()`: its
/// last handle aborts its tasks and those below it ([`abort_made_below`]).
/// Set when it is made.
const ABORT_ON_DROP: u8 = 16;

/// The links below a group, in link order (keys increase with each link),
/// and the failures of the children that left.
#[derive(Default)]
pub(crate) struct Links {
    map: LinkMap,
    next_key: u64,
    departed: Failures,
    /// The key of each group linked here by [`push_link`](Node::push_link)
    /// (`link()`), so that linking and unlinking find a link without a scan
    /// of them all. A `child()` is not here: it knows its own key (its
    /// `owner`), and is found by that.
    linked: IdMap<u64>,
    /// The owning group's scope of its latest generation and that
    /// generation's number, once a `reopen()` started one: what a `child()`
    /// made before derives its next generation from ([`Node::reopen`]), so
    /// that a child reopened after its parent was cancelled and reopened is
    /// open again, as a child made then would be. `None`: the group never
    /// started a generation after its first, whose scope every child has
    /// (its `origin`).
    scope: Option<(u32, CancellationToken)>,
}

/// A group's links, in an allocation of their own that its `child()` groups
/// refer to weakly (to leave it) without keeping the group alive. Made when
/// the group first gets a link or a child, so a group without links does not
/// allocate it.
pub(crate) struct Table {
    links: Mutex<Links>,
    /// A copy of the owning group's `owner`, so that [`leave`] can climb from
    /// a parent's table to the grandparent's without the parent's node.
    owner: Option<(Weak<Table>, u64)>,
    /// The owning group's `max_errors`, for the failures of departed children.
    max_errors: usize,
}

impl Drop for Table {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links.lock().map);
        drop_in_loop(links.into_values());
    }
}

/// A group's links by key, in key order. Keys only grow, so a link is
/// appended; a removed link leaves a hole, and the holes are dropped once
/// they outnumber the links (and room beyond twice what is left is given
/// back). So appending is O(1), finding or removing a key O(log n)
/// (amortized), walking the links a scan of at most twice as many slots,
/// and the memory kept at most about four times what the live links need.
/// (A `BTreeMap` cost a walk a pointer chase per link, and a link an
/// insertion of about 100 instructions.)
#[derive(Default)]
struct LinkMap {
    slots: Slots,
    live: usize,
}

/// A key and its link; `None` once removed (a hole).
type LinkSlot = (u64, Option<NodeRef>);

/// The slots of a [`LinkMap`]: the first in place, so that a group with
/// one link or child (each group of a chain) allocates nothing for it; a
/// vector from the second on.
enum Slots {
    One(Option<LinkSlot>),
    Many(Vec<LinkSlot>),
}

impl Default for Slots {
    fn default() -> Self {
        Slots::One(None)
    }
}

impl Slots {
    fn as_slice(&self) -> &[LinkSlot] {
        match self {
            Slots::One(slot) => slot.as_slice(),
            Slots::Many(slots) => slots,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [LinkSlot] {
        match self {
            Slots::One(slot) => slot.as_mut_slice(),
            Slots::Many(slots) => slots,
        }
    }

    #[inline]
    fn push(&mut self, slot: LinkSlot) {
        match self {
            Slots::Many(slots) => slots.push(slot),
            Slots::One(first) => {
                let first = first.take();
                self.push_to_one(first, slot);
            }
        }
    }

    /// The first or second slot.
    #[cold]
    fn push_to_one(&mut self, first: Option<LinkSlot>, slot: LinkSlot) {
        *self = match first {
            None => Slots::One(Some(slot)),
            Some(first) => {
                let mut slots = Vec::with_capacity(4);
                slots.push(first);
                slots.push(slot);
                Slots::Many(slots)
            }
        };
    }

    /// Drops the holes, and room beyond twice what is left.
    fn compact(&mut self) {
        match self {
            Slots::One(slot) => {
                if slot.as_ref().is_some_and(|(_, node)| node.is_none()) {
                    *slot = None;
                }
            }
            Slots::Many(slots) => {
                slots.retain(|(_, node)| node.is_some());
                if slots.capacity() > 2 * slots.len().max(4) {
                    slots.shrink_to(2 * slots.len().max(4));
                }
            }
        }
    }

    /// The room kept, in slots.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        match self {
            Slots::One(_) => 1,
            Slots::Many(slots) => slots.capacity(),
        }
    }

    fn into_vec(self) -> Vec<LinkSlot> {
        match self {
            Slots::One(slot) => slot.into_iter().collect(),
            Slots::Many(slots) => slots,
        }
    }
}

impl LinkMap {
    /// Appends `node` under `key`, greater than every key before it.
    fn insert(&mut self, key: u64, node: NodeRef) {
        debug_assert!(self
            .slots
            .as_slice()
            .last()
            .map_or(true, |(last, _)| *last < key));
        self.slots.push((key, Some(node)));
        self.live += 1;
    }

    fn position(&self, key: u64) -> Option<usize> {
        self.slots
            .as_slice()
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
    }

    fn get(&self, key: &u64) -> Option<&NodeRef> {
        self.slots.as_slice()[self.position(*key)?].1.as_ref()
    }

    /// Removes the link under `key`; the caller drops it (outside the lock).
    fn remove(&mut self, key: &u64) -> Option<NodeRef> {
        let i = self.position(*key)?;
        let node = self.slots.as_mut_slice()[i].1.take()?;
        self.live -= 1;
        if self.slots.as_slice().len() > 2 * self.live {
            self.slots.compact();
        }
        Some(node)
    }

    #[cfg(test)]
    fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &NodeRef)> {
        self.slots
            .as_slice()
            .iter()
            .filter_map(|(key, node)| Some((*key, node.as_ref()?)))
    }

    fn values(&self) -> impl DoubleEndedIterator<Item = &NodeRef> {
        self.slots
            .as_slice()
            .iter()
            .filter_map(|(_, node)| node.as_ref())
    }

    fn into_values(self) -> impl Iterator<Item = NodeRef> {
        self.slots
            .into_vec()
            .into_iter()
            .filter_map(|(_, node)| node)
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

impl Links {
    fn version(&self) -> LinksVersion {
        LinksVersion {
            made: self.next_key,
            live: self.map.live,
        }
    }

    #[inline]
    fn push(&mut self, node: NodeRef) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.map.insert(key, node);
        key
    }
}

/// The failures a group keeps, shared with the [`TaskErrors`] made from them
/// (copied only when a failure is recorded while a snapshot is alive, and
/// then at most `max_errors` of them).
#[derive(Default)]
struct Failures {
    /// `None` until a failure is kept, so a group without failures does not
    /// allocate for them.
    kept: Option<FailureList>,
    /// Failures recorded beyond `max_errors`: counted, not kept.
    dropped: u64,
}

/// One generation of a group's cancellation tokens: the first is the node's
/// own, a later one is shared with what reads it (see [`Later`]).
struct Tokens {
    /// Cancelled with the whole subtree: by `cancel()`, by the caller's token,
    /// by the parent's scope, or by the first failure with `cancel_on_error`.
    scope: CancellationToken,
    /// The context handed to this group's own tasks: a child of `scope`, also
    /// cancelled on its own when a shutdown reaches this group. Made when
    /// first used ([`Tokens::own`]), so a group without tasks does not pay
    /// for it; a cancel that comes first sets [`OWN_CANCELLED`] instead.
    own: OnceLock<CancellationToken>,
    /// The drain signal of this group's own tasks: cancelled by a shutdown's
    /// drain phase or `drain()`. A task reads "draining" as this *or* `own`
    /// cancelled, so a cancelled context is always a draining one. Made when
    /// a task first asks for it ([`Tokens::drain`]), so a group that is
    /// never drained does not pay for it; a drain that comes first sets
    /// [`DRAINED`] instead.
    drain: OnceLock<CancellationToken>,
    /// [`OWN_CANCELLED`] and [`DRAINED`]: what happened to `own` and `drain`
    /// before they were made. Set, and the two cells filled, only under
    /// `lock`, so a token made after its bit is set is made cancelled, and
    /// one made before is cancelled by whoever sets the bit
    /// ([`Tokens::cancel_or_mark`]). Read without the lock.
    early: AtomicU8,
    /// Taken to fill `own` or `drain`, set a bit of `early` or the reason,
    /// read the reason, and by `reopen()` to add the next generation. Only
    /// on those slow paths, and each holds it once: a shutdown that cancels a group with
    /// no token made sets the reason and the bit in one hold.
    ///
    /// It holds why `own` was cancelled. Set before the token it explains
    /// is cancelled (see [`cancel_tree`]), first setter wins; unset while
    /// `own` is cancelled means the caller's token (the only cancellation
    /// that reaches a group without passing through this crate). (In a
    /// `OnceLock` of its own, it cost a shutdown 16 instructions more per
    /// idle group: `benches/profile.rs shutdown flat` under callgrind.)
    lock: Mutex<Option<CancelReason>>,
}

impl Tokens {
    fn new(origin: Option<&CancellationToken>) -> Self {
        let scope = origin.map_or_else(CancellationToken::new, CancellationToken::child_token);
        Tokens {
            own: OnceLock::new(),
            scope,
            drain: OnceLock::new(),
            early: AtomicU8::new(0),
            lock: Mutex::new(None),
        }
    }

    /// The context token, made when first asked for: a child of `scope`,
    /// or a cancelled token if the context was cancelled first.
    fn own(&self) -> &CancellationToken {
        // Under loom every ask takes the lock, so that the model sees the
        // race (see `tests::loom_drain`).
        #[cfg(not(loom))]
        if let Some(own) = self.own.get() {
            return own;
        }
        self.make(&self.own, OWN_CANCELLED, || self.scope.child_token())
    }

    /// The drain signal, made when first asked for: cancelled if the drain
    /// came first.
    fn drain(&self) -> &CancellationToken {
        #[cfg(not(loom))]
        if let Some(drain) = self.drain.get() {
            return drain;
        }
        self.make(&self.drain, DRAINED, CancellationToken::new)
    }

    /// Fills `cell` (`own` or `drain`) under `lock`, with a cancelled token
    /// if `bit` of `early` is set, else with `make()`.
    #[cold]
    fn make<'t>(
        &self,
        cell: &'t OnceLock<CancellationToken>,
        bit: u8,
        make: impl FnOnce() -> CancellationToken,
    ) -> &'t CancellationToken {
        let _lock = self.lock.lock();
        cell.get_or_init(|| {
            // Written under this lock only.
            if self.early.load(Ordering::Relaxed) & bit != 0 {
                cancelled_token()
            } else {
                make()
            }
        })
    }

    /// Cancels the tokens `bits` names ([`DRAINED`]: `drain`,
    /// [`OWN_CANCELLED`]: `own`), marking one not made yet in `early` so that
    /// it is made cancelled; sets `reason` first, unless there is one. Takes
    /// the lock once however many it names, and gives the drain signal
    /// before cancelling the context, so a task never sees the context
    /// cancelled but not drained. Inlined into each caller, whose constant
    /// `bits` fold the checks away.
    #[inline(always)]
    fn cancel_or_mark(&self, bits: u8, reason: Option<CancelReason>) {
        self.cancel_or_mark_then(bits, reason, |_| false);
    }

    /// [`cancel_or_mark`](Self::cancel_or_mark), calling `between` once the
    /// reason is set and before any token is cancelled: where a cancel of a
    /// group's own context gives its scoped children the reason
    /// ([`Node::cancel_scoped`]). `between` returns whether it cancelled the
    /// tokens made itself ([`cancel_made`](Self::cancel_made) with `bits`).
    #[inline(always)]
    fn cancel_or_mark_then(
        &self,
        bits: u8,
        reason: Option<CancelReason>,
        between: impl FnOnce(&Tokens) -> bool,
    ) {
        // The bits of the tokens named and not made yet.
        let unmade = || {
            let bit_if = |bit: u8, cell: &OnceLock<CancellationToken>| {
                if bits & bit != 0 && cell.get().is_none() {
                    bit
                } else {
                    0
                }
            };
            bit_if(DRAINED, &self.drain) | bit_if(OWN_CANCELLED, &self.own)
        };
        #[cfg(not(loom))]
        if reason.is_none() && unmade() == 0 {
            if !between(self) {
                self.cancel_made(bits);
            }
            return;
        }
        let mut reason = reason;
        {
            let mut first = self.lock.lock();
            if first.is_none() && reason.is_some() {
                *first = reason.take();
                self.early.fetch_or(REASONED, Ordering::Release);
            }
            // Filled under this lock only: made before this (cancelled
            // below), or made after it with the bit seen (and made
            // cancelled, so cancelling it below as well changes nothing).
            let early = unmade();
            if early != 0 {
                self.early.fetch_or(early, Ordering::Release);
            }
        }
        // Outside the lock: a reason not kept may hold the last reference
        // to a task's error, and cancelling runs the waiters' wakers.
        drop(reason);
        if !between(self) {
            self.cancel_made(bits);
        }
    }

    /// The reason set, whether or not `own` is cancelled yet: set means it
    /// is, or is about to be (a reason is set only just before the token it
    /// explains is cancelled). Read under the lock, not after a look at
    /// [`REASONED`]: [`Node::make_scoped_child`] and [`Node::cancel_scoped`] each
    /// write, then read what the other writes, and the lock orders them.
    fn reason_set(&self) -> Option<CancelReason> {
        self.lock.lock().clone()
    }

    /// Cancels those of the tokens `bits` names that are made, the drain
    /// signal first.
    #[inline(always)]
    fn cancel_made(&self, bits: u8) {
        for (bit, cell) in [(DRAINED, &self.drain), (OWN_CANCELLED, &self.own)] {
            if bits & bit != 0 {
                if let Some(token) = cell.get() {
                    token.cancel();
                }
            }
        }
    }

    /// Why `own` was cancelled, if it was.
    fn reason(&self) -> Option<CancelReason> {
        if !self.is_own_cancelled() {
            return None;
        }
        let reason = self.lock.lock().clone();
        Some(reason.unwrap_or(CancelReason::Token))
    }

    /// Sets why `own` is cancelled, unless a reason is set already.
    fn set_reason(&self, reason: &CancelReason) {
        let mut first = self.lock.lock();
        if first.is_none() {
            *first = Some(reason.clone());
            self.early.fetch_or(REASONED, Ordering::Release);
        }
    }

    /// [`set_reason`](Self::set_reason), by a cancel of the scope (the whole
    /// subtree's, which reaches the groups made below), marked so
    /// ([`SCOPE_GOING`]) under the same lock, before the cancel reads this
    /// group's links: a plain child pushed after that read was not found by
    /// the cancel, and reads the mark (see [`Node::make_child`]). Apart from
    /// the reason: a reason alone does not say the scope goes (a shutdown's
    /// turn cancels the group's own context only).
    fn set_scope_reason(&self, reason: &CancelReason) {
        let mut first = self.lock.lock();
        let mut bits = SCOPE_GOING;
        if first.is_none() {
            *first = Some(reason.clone());
            bits |= REASONED;
        }
        self.early.fetch_or(bits, Ordering::Release);
    }

    /// The bits of [`early`](Self::early) that say a reason was ever set
    /// ([`REASONED`]) and that the scope is being cancelled
    /// ([`SCOPE_GOING`]), for [`Node::make_child`] to look no further in a
    /// group never cancelled. Read under the lock, as
    /// [`reason_set`](Self::reason_set) is: a cancel's walk sets them under
    /// it, then looks whether the group has links without a lock, so only
    /// this lock orders the walk's look after a child's push or this read
    /// after the walk's mark (`loom_drain::a_plain_child_made_during_a_cancel_of_the_tree_has_its_reason`
    /// fails with a plain load here).
    fn reasons(&self) -> u8 {
        let _lock = self.lock.lock();
        self.early.load(Ordering::Relaxed) & (REASONED | SCOPE_GOING)
    }

    /// Whether the context token is cancelled, without making it: until it
    /// is made, when it was cancelled on its own ([`OWN_CANCELLED`]) or
    /// through `scope`.
    fn is_own_cancelled(&self) -> bool {
        match self.own.get() {
            Some(own) => own.is_cancelled(),
            None => {
                self.early.load(Ordering::Acquire) & OWN_CANCELLED != 0 || self.scope.is_cancelled()
            }
        }
    }

    /// Whether the drain signal was given, without making its token.
    fn is_drained(&self) -> bool {
        match self.drain.get() {
            Some(drain) => drain.is_cancelled(),
            None => self.early.load(Ordering::Acquire) & DRAINED != 0,
        }
    }
}

/// [`Tokens::early`]: the context was cancelled on its own before its token
/// was made.
const OWN_CANCELLED: u8 = 1;
/// [`Tokens::early`]: the drain signal was given before its token was made.
const DRAINED: u8 = 2;
/// [`Tokens::early`]: a reason is set (see [`Tokens::reasons`]).
const REASONED: u8 = 4;
/// [`Tokens::early`]: the scope is being cancelled by this crate, whose
/// reason is set ([`Tokens::set_scope_reason`]).
const SCOPE_GOING: u8 = 8;

/// The generations of a group's tokens after the first, each made by a
/// `reopen()` that found the one before cancelled or drained.
///
/// Each is shared with what reads it: the contexts of the tasks started in it
/// ([`Generation`]) and the `cancelled()` futures made while it was current.
/// The group holds the current one, and a weak reference to each older one
/// that a drain, not a cancel, ended (its tasks may still run, and a cancel
/// must reach them). So an older generation that nothing holds any more is
/// freed: a group cancelled and reopened for a server's whole life keeps what
/// is live, not a generation per reopen (it kept every one before: 220 B a
/// `cancel()` and `reopen()`, 476 B with a task, `benches/profile.rs reopen`).
struct Later {
    gens: Mutex<Gens>,
}

struct Gens {
    /// The current generation: the group's `generation` number, at least 1.
    current: Arc<Tokens>,
    /// The generations before `current` that a drain ended and no cancel has
    /// reached since; those no longer held are dropped in batches
    /// ([`Pruned`]), so the list follows what is held.
    drained: Pruned<Weak<Tokens>>,
    /// The first generation (the node's own `tokens`) is among those.
    first_drained: bool,
}

/// The generation of a group's tokens that a task started in, or that a
/// `cancelled()` future waits on: the first (`None`), which is the node's own
/// and lives as long as it, or a later one, held here.
#[derive(Clone, Default)]
pub(crate) struct Generation(Option<Arc<Tokens>>);

/// The generations of a group a cancel must reach, held until it has (see
/// [`Node::uncancelled`]): the first (the node's own) if a drain, not a
/// cancel, ended it, then the later ones, the current one last.
struct Uncancelled {
    first: bool,
    held: Vec<Arc<Tokens>>,
}

/// A token made cancelled, for a cell whose cancel came first: on its own,
/// since a cancelled token needs no parent.
fn cancelled_token() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

/// The shared part of a group; see the module docs.
///
/// In declaration order (`repr(C)`), so that the state word's lines are the
/// group's alone without asking the allocator for 128-byte alignment (glibc
/// serves that through `posix_memalign`, several times the cost of a plain
/// allocation). First come 48 bytes that add, done and `go()` never touch,
/// so the line the state word starts on holds nothing of another allocation
/// (malloc's blocks are 16-byte aligned) nor anything those paths read;
/// then [`Hot`], 120 bytes; then the rest, among them the settings and the
/// registry that every add reads, on lines the state word's writes do not
/// take from the reader's cache.
#[repr(C)]
pub(crate) struct Node {
    /// The token new generations derive from: the caller's token or the
    /// parent's scope, as the first did (`None`: a fresh one); for a
    /// `child()`, its parent's latest scope instead once the parent started
    /// a generation after its first ([`Links::scope`]).
    origin: Option<CancellationToken>,
    /// For a group made with `child()`: its parent's table and its key there.
    owner: Option<(Weak<Table>, u64)>,
    /// The links, made when first needed (see [`Node::table`]).
    table: OnceLock<Arc<Table>>,
    /// What only some groups need, made when first needed (a deadline, a
    /// shielded section, a failure that cancels), so an empty group does not
    /// carry it, nor a group a shutdown stops.
    extra: OnceLock<Box<Extra>>,
    /// When a running shutdown aborts this group's tasks: set by every
    /// shutdown that reaches the group, cleared by `reopen()`. In a word of
    /// its own rather than in [`Extra`], so that a shutdown does not allocate
    /// for each idle group it stops.
    abort_at: AbortAt,
    hot: Hot,
    pub(crate) label: GroupLabel,
    pub(crate) config: Settings,
    /// The slots of the group's limit, if it has one.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) registry: Registry,
    /// The group's cancellation tokens: the first generation (see
    /// [`Tokens`]).
    tokens: Tokens,
    /// The generations after the first (see [`Later`]). Made by the first
    /// `reopen()` of a cancelled or drained group.
    later: OnceLock<Box<Later>>,
    failures: PlainMutex<Failures>,
}

/// The part of a group that only some groups need: the deadlines that bound
/// its tasks, the shielded sections a shutdown's forced phase waits for, and
/// the failure that cancelled it.
#[derive(Default)]
struct Extra {
    deadlines: PlainMutex<Deadlines>,
    /// The `go()` tasks of this group now in a shielded section.
    shields: PlainMutex<Shields>,
    /// Notified when a shielded section ends.
    shield_ended: tokio::sync::Notify,
    /// With a deadline of its own: cancelled when the last user handle
    /// goes, so that the deadline's timer can end once the group is idle
    /// too.
    released: Option<CancellationToken>,
    /// The first critical failure (`cancel_on_error`, or a critical task)
    /// of the latest generation that had one, and that generation: a
    /// failure recorded after it in that generation is secondary, even
    /// before the cancel it started has landed, and the first one of a later
    /// generation (after a `reopen()`) cancels again. The failure is `None`
    /// if the group was cancelled before it (it is secondary, not the
    /// cause). Written under the failures lock (then this lock, alone below
    /// it).
    cause: PlainMutex<Option<(Option<Arc<TaskError>>, u32)>>,
    /// The shutdowns aborting the group's tasks (see [`Node::aborting`]).
    aborting: PlainMutex<Aborting>,
}

/// The shielded sections of a group's `go()` tasks, and what the forced
/// phases waiting on them have yet to hear. Every operation is O(1) but the
/// snapshot (O(tasks in a section)), so a forced phase over many shielded
/// tasks is linear: it takes one snapshot, then hears of each task once,
/// when its last section ends ([`ShieldWatch::released`]), or when its
/// budget runs out.
#[derive(Default)]
struct Shields {
    /// Each task in a section: its registry slot, and the end of each of its
    /// sections' budgets (more than one if nested).
    open: HashMap<TaskId, (Slot, Vec<Instant>), BuildHasherDefault<IdHasher>>,
    /// The tasks whose last section ended while a forced phase watched, in
    /// order; each phase reads on from where it last stopped.
    released: Vec<TaskId>,
    /// The forced phases watching: `released` is emptied when the last one
    /// stops.
    watchers: usize,
}

/// What a task recording its abort handle reads of the shutdowns aborting
/// its group ([`Node::late_abort`]).
#[derive(Default)]
struct Aborting {
    /// The watches of the shutdowns now waiting for the group's aborts, in
    /// the order they began.
    watches: Vec<Arc<AbortWatch>>,
    /// Whether an abort walk began since the group was made or last
    /// reopened.
    walked: bool,
}

/// A shutdown aborting a group's tasks ([`Node::aborting`]): while it
/// lives, a task of the group whose abort handle comes late is aborted at
/// once and counted in its watch. Dropped before the shutdown's last wait
/// for its aborts (so that no task is counted after it), or with the
/// shutdown's future.
pub(crate) struct AbortPhase<'a> {
    node: &'a Node,
    watch: Arc<AbortWatch>,
}

impl Drop for AbortPhase<'_> {
    fn drop(&mut self) {
        let watches = &mut self.node.extra().aborting.lock().watches;
        if let Some(at) = watches.iter().rposition(|w| Arc::ptr_eq(w, &self.watch)) {
            watches.remove(at);
        }
    }
}

/// What bounds a group's tasks in time; the earliest of them all is the
/// deadline a task reads ([`Node::deadline`]).
#[derive(Debug, Default, Clone, Copy)]
struct Deadlines {
    /// The group's own deadline (`WaitGroupBuilder::deadline`), set when it
    /// is built.
    own: Option<Instant>,
    /// The earliest deadline of the groups above it, as they were when it
    /// was linked.
    inherited: Option<Instant>,
}

/// An abort time as [`AbortAt`] stores it: a shutdown encodes its deadline
/// once for all its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AbortTime(i64);

impl AbortTime {
    /// No time.
    pub(crate) const NONE: AbortTime = AbortTime(AbortAt::NONE);

    /// `at`, or no time at all if `at` is `None` (a shutdown without a time
    /// limit: its tasks' deadlines are their groups' own, if any).
    pub(crate) fn new(at: Option<Instant>) -> Self {
        AbortTime(AbortAt::word(at))
    }

    /// Whether this is a time.
    pub(crate) fn is_some(self) -> bool {
        self.0 != AbortAt::NONE
    }
}

/// An optional instant in one atomic word: signed nanoseconds from a
/// process-wide origin (the first time one is stored), so that an instant
/// of a paused Tokio clock, which may lie before the origin, fits too.
/// Exact within 292 years of the origin; the shutdown deadlines stored here
/// are at most about thirty years after the call (see `saturating_add`).
struct AbortAt(std::sync::atomic::AtomicI64);

impl AbortAt {
    /// No instant.
    const NONE: i64 = i64::MIN;

    fn none() -> Self {
        AbortAt(std::sync::atomic::AtomicI64::new(Self::NONE))
    }

    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    fn set(&self, at: Option<Instant>) {
        self.set_word(Self::word(at));
    }

    /// `at` as the word stores it (computed once for the many groups a
    /// shutdown starts with).
    fn word(at: Option<Instant>) -> i64 {
        at.map_or(Self::NONE, |at| {
            let origin = Self::origin();
            let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            match at.checked_duration_since(origin) {
                Some(after) => nanos(after),
                // `-i64::MAX` at the least, never `NONE`.
                None => -nanos(origin.duration_since(at)),
            }
        })
    }

    fn set_word(&self, word: i64) {
        self.0.store(word, std::sync::atomic::Ordering::Release);
    }

    /// Stores `word`, returning the word it replaces.
    fn swap_word(&self, word: i64) -> i64 {
        self.0.swap(word, std::sync::atomic::Ordering::AcqRel)
    }

    /// Puts `previous` back if the word is still `word`: a time stored since
    /// (by another shutdown) is kept.
    fn restore_word(&self, word: i64, previous: i64) {
        let _ = self.0.compare_exchange(
            word,
            previous,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn get(&self) -> Option<Instant> {
        let word = self.0.load(std::sync::atomic::Ordering::Acquire);
        if word == Self::NONE {
            return None;
        }
        let origin = Self::origin();
        let offset = Duration::from_nanos(word.unsigned_abs());
        // Out of range only for an instant clamped when stored.
        Some(if word >= 0 {
            origin.checked_add(offset).unwrap_or(origin)
        } else {
            origin.checked_sub(offset).unwrap_or(origin)
        })
    }
}

impl Counted for Node {
    #[inline]
    fn state(&self) -> &State {
        &self.hot.state
    }

    #[cfg(loom)]
    fn on_free(&self) {
        FREED.lock().unwrap().push(self.id());
    }

    /// The last task of a group with a waiter finished. If the group is a
    /// detached child, it may now leave its parent.
    fn on_idle(this: &Shared<Self>) {
        if this.owner.is_none() {
            return;
        }
        // Pairs with the release of the WAITING bit set in `release_user`:
        // the `done` that called us read that bit, so the handle's drop
        // (users at zero) happens-before this.
        fence(Ordering::Acquire);
        if this.hot.users.load(Ordering::Relaxed) == 0 {
            leave(this);
        }
    }
}

impl Node {
    /// A new group with one user handle.
    pub(crate) fn new(
        config: NodeConfig,
        origin: Option<CancellationToken>,
        owner: Option<(Weak<Table>, u64)>,
    ) -> NodeRef {
        let NodeConfig {
            settings,
            name,
            deadline,
            record_guards,
            abort_on_drop,
        } = config;
        // A group with a deadline of its own has its `Extra` from the start.
        let extra = match deadline {
            Some(own) => OnceLock::from(Box::new(Extra {
                deadlines: PlainMutex::new(Deadlines {
                    own: Some(own),
                    ..Deadlines::default()
                }),
                released: Some(CancellationToken::new()),
                ..Extra::default()
            })),
            None => OnceLock::new(),
        };
        Shared::new(|| Node {
            hot: Hot {
                state: State::new(),
                last_id: StdAtomicU64::new(0),
                users: AtomicUsize::new(1),
                generation: std::sync::atomic::AtomicU32::new(0),
                has_errors: AtomicBool::new(false),
                has_links: AtomicBool::new(false),
                flags: AtomicU8::new(if abort_on_drop { ABORT_ON_DROP } else { 0 }),
                record_guards,
            },
            label: GroupLabel {
                id: GroupId::next(),
                name,
            },
            slots: settings
                .limit
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            config: settings,
            tokens: Tokens::new(origin.as_ref()),
            later: OnceLock::new(),
            origin,
            abort_at: AbortAt::none(),
            registry: Registry::new(),
            failures: PlainMutex::new(Failures::default()),
            table: OnceLock::new(),
            owner,
            extra,
        })
    }

    pub(crate) fn id(&self) -> GroupId {
        self.label.id
    }

    /// Whether this group is a [`scoped_child`](crate::WaitGroup::scoped_child).
    fn is_scoped(&self) -> bool {
        self.hot.flags.load(Ordering::Relaxed) & SCOPED != 0
    }

    /// Whether every guard gets a registry entry
    /// ([`record_guards`](crate::WaitGroupBuilder::record_guards)).
    #[inline]
    pub(crate) fn record_guards(&self) -> bool {
        self.hot.record_guards
    }

    /// Pending guards and tasks of this group (not of its links).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.state().len() as usize
    }

    /// Idle, with no links and no failures: what [`errors_if_idle`] finds
    /// on such a group (empty failures), read in its order (the count
    /// before the failures), without making the empty list.
    #[inline]
    pub(crate) fn idle_and_clean(&self) -> bool {
        !self.hot.has_links.load(Ordering::Acquire)
            && self.len() == 0
            && !self.hot.has_errors.load(Ordering::Acquire)
    }

    /// Whether this group records every guard and has a unit counted in its
    /// state word without an entry: one between its count and its entry's
    /// insertion (a `go()` or `add()` under way), or between its entry's
    /// removal and its count given up (an end under way). Either is two
    /// steps with no wait between them, seen only as they pass.
    pub(crate) fn in_flight(&self) -> bool {
        self.record_guards() && {
            let len = self.len();
            len > 0 && len > self.registry.len()
        }
    }

    // ----- user handles -------------------------------------------------------

    /// Whether a user handle (`WaitGroup`) to the group is alive: without
    /// one, an idle group gets no more work (but through
    /// [`WaitGroup::linked`](crate::WaitGroup::linked), which makes one).
    pub(crate) fn has_users(&self) -> bool {
        self.hot.users.load(Ordering::Relaxed) != 0
    }

    /// A new user handle from an existing one.
    pub(crate) fn add_user(&self) {
        self.hot.users.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up a user handle (the caller still holds its `NodeRef`). The
    /// last one detaches the group: a child then leaves its parent now, if it
    /// is idle and bare, or when it becomes so; a group built with
    /// `abort_on_drop` aborts its tasks and those below it
    /// ([`abort_made_below`]).
    pub(crate) fn release_user(this: &NodeRef) {
        if this.hot.users.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if let Some(released) = this.extra.get().and_then(|t| t.released.as_ref()) {
            released.cancel();
        }
        if this.hot.flags.load(Ordering::Relaxed) & ABORT_ON_DROP != 0 {
            abort_made_below(this);
        }
        if this.owner.is_none() {
            return;
        }
        // Arm the notify path of the last `done` (see `on_idle`); if nothing
        // is pending there is no such `done` to come, so try now.
        if this.state().arm_idle_hook() == 0 {
            leave(this);
        }
    }

    // ----- children and links -------------------------------------------------

    /// The group's links, made on first use.
    fn table(&self) -> &Arc<Table> {
        self.table.get_or_init(|| {
            Arc::new(Table {
                links: Mutex::new(Links::default()),
                owner: self.owner.clone(),
                max_errors: self.config.max_errors,
            })
        })
    }

    /// The group's links, if it ever had any: `has_links` is set only after a
    /// push into the table, so once it reads `true` the table exists.
    fn links_table(&self) -> Option<&Arc<Table>> {
        if self.hot.has_links.load(Ordering::Acquire) {
            self.table.get()
        } else {
            None
        }
    }

    /// Makes a group linked below this one whose scope is a child of this
    /// group's, and which leaves once detached, idle and bare.
    pub(crate) fn make_child(this: &NodeRef, config: NodeConfig) -> NodeRef {
        let generation = this.generation();
        let tokens = this.tokens_in(&generation);
        let child = Node::push_child(this, config, tokens.scope.clone(), false);
        // After the push, one look at the parent's tokens: whether a cancel
        // of its scope marked it (then this child is cancelled through its
        // scope, now or soon), or it ever had a reason.
        let reasons = tokens.reasons();
        if reasons != 0 {
            Node::give_parents_reason(&child, tokens, reasons);
        }
        Node::start_as_left(this, &child);
        child
    }

    /// A plain child's reason, from its parent's `tokens` whose
    /// [`reasons`](Tokens::reasons) are not none: a cancel of the parent's
    /// scope (`cancel`, a failure, a deadline, or a cancel of a context
    /// above that reaches it) marks the parent and sets its reason before it
    /// reads the parent's links, then cancels: it found this child (pushed
    /// before that read, given the reason by the cancel's walk) or this
    /// child sees the mark here (pushed after: the parent's tokens lock,
    /// taken by the mark and by `reasons`, orders the walk's look at the
    /// links after the push or this read after the mark), and takes the
    /// reason before it can be seen cancelled by anyone but this thread.
    /// The child is marked as going in turn, so that a child made below it
    /// next (which the walk does not find either) takes the reason too.
    /// Before, the child read whether the parent had a reason before its
    /// push, and could be cancelled with none
    /// (`loom_drain::a_plain_child_made_during_a_cancel_of_the_tree_has_its_reason`).
    /// A group whose scope is cancelled otherwise (the caller's token) with
    /// a reason set gives that reason too, as it always did. The reason is
    /// the parent's first: the cancel's, unless the parent had one before
    /// (a shutdown's turn of it).
    #[cold]
    #[inline(never)]
    fn give_parents_reason(child: &NodeRef, tokens: &Tokens, reasons: u8) {
        // (The flag first: `is_cancelled` takes the token's lock.)
        let going = reasons & SCOPE_GOING != 0;
        if going || child.tokens.scope.is_cancelled() {
            if let Some(reason) = tokens.reason_set() {
                child.tokens.set_scope_reason(&reason);
            }
        }
    }

    /// Makes a [scoped child](crate::WaitGroup::scoped_child): as
    /// [`make_child`](Self::make_child), but its scope is a child of this
    /// group's context (its own tasks' token, made if it was not), not of its
    /// scope: whatever cancels this group's own work cancels the child and
    /// the groups below it too (see [`cancel_scoped`](Self::cancel_scoped)).
    /// Apart from `make_child` so that a plain child's making takes none of
    /// these steps (it took 8 instructions more when one function did both:
    /// `profile build flat` under callgrind).
    ///
    /// `generation`: whose context (a task's, or the current one).
    pub(crate) fn make_scoped_child(
        this: &NodeRef,
        config: NodeConfig,
        generation: &Generation,
    ) -> NodeRef {
        // That generation's context, and below its reason.
        let tokens = this.tokens_in(generation);
        let child = Node::push_child(this, config, tokens.own().clone(), true);
        // A cancel of the parent's context sets its reason, then gives it to
        // the scoped children it finds, then cancels (see `cancel_scoped`).
        // One that set it before this read may not have found this child:
        // the child takes it here, before it can be seen cancelled by anyone
        // but this thread. A reason set means the context is, or is about to
        // be, cancelled, and this child's scope with it: marked so, for a
        // child made below it next (see `give_parents_reason`).
        if let Some(reason) = tokens.reason_set() {
            child.tokens.set_scope_reason(&reason);
        }
        Node::start_as_left(this, &child);
        child
    }

    /// A new group whose scope is a child of `origin`, linked below `this`
    /// with the deadline `this` has; `scoped`: a scoped child, marked so
    /// before it is linked.
    #[inline(always)]
    fn push_child(
        this: &NodeRef,
        config: NodeConfig,
        origin: CancellationToken,
        scoped: bool,
    ) -> NodeRef {
        let inherited = this.deadline();
        let table = this.table();
        let mut links = table.links.lock();
        let key = links.next_key;
        let owner = Some((Arc::downgrade(table), key));
        let child = Node::new(config, Some(origin), owner);
        if inherited.is_some() {
            child.extra().deadlines.lock().inherited = inherited;
        }
        let in_a_scope = this.hot.flags.load(Ordering::Relaxed) & MADE_IN_A_SCOPE != 0;
        if scoped || in_a_scope {
            let scoped = if scoped { SCOPED } else { 0 };
            child
                .hot
                .flags
                .fetch_or(scoped | MADE_IN_A_SCOPE, Ordering::Relaxed);
        }
        links.push(child.clone());
        this.hot.has_links.store(true, Ordering::Release);
        if scoped {
            this.hot.flags.fetch_or(HAS_SCOPED, Ordering::Release);
        }
        drop(links);
        child
    }

    /// A child made once a shutdown has reached this group (closed, with an
    /// abort time, until reopened) starts as that shutdown leaves a group:
    /// closed, with the same abort time, and cancelled with the same reason,
    /// as work added to this group later starts cancelled.
    #[inline(always)]
    fn start_as_left(this: &NodeRef, child: &NodeRef) {
        if let Some(at) = this.abort_at.get().filter(|_| this.state().is_closed()) {
            child.close();
            child.set_abort_at(at);
            if let Some(reason) = this.with_tokens(Tokens::reason) {
                child.cancel_own(reason);
            }
        }
    }

    /// Links `child` below this node. The caller holds [`LINK_ORDER`] and has
    /// checked for cycles. Returns `false` if it was already linked.
    pub(crate) fn push_link(&self, child: &NodeRef) -> bool {
        let table = self.table();
        let mut links = table.links.lock();
        if links.linked.contains_key(&child.id()) || own_key(table, &links, child).is_some() {
            return false;
        }
        let key = links.push(child.clone());
        links.linked.insert(child.id(), key);
        self.hot.has_links.store(true, Ordering::Release);
        child.hot.flags.fetch_or(LINKED_BELOW, Ordering::Relaxed);
        true
    }

    /// Whether some group may hold this one below it: a `child()`'s parent,
    /// or a group this one was ever linked below (a flag never cleared, so
    /// `true` for a group unlinked since, or whose parent is gone). `false`
    /// means no group reaches this one, so linking anything below it cannot
    /// close a cycle, and [`link`](crate::WaitGroup::link) skips the walk of
    /// the child's subtree. The caller holds [`LINK_ORDER`], under which
    /// every link is pushed: no link below another can appear meanwhile (a
    /// `child()` is a new group, an edge to no existing one).
    pub(crate) fn may_be_below_another(&self) -> bool {
        self.owner.is_some() || self.hot.flags.load(Ordering::Relaxed) & LINKED_BELOW != 0
    }

    /// Removes `child` from the links; `false` if it was not linked.
    /// O(log n) in the links, as linking is O(1): a server may link many.
    pub(crate) fn remove_link(&self, child: &NodeRef) -> bool {
        let Some(table) = self.table.get() else {
            return false;
        };
        let removed = {
            let mut links = table.links.lock();
            let key = match links.linked.remove(&child.id()) {
                Some(key) => Some(key),
                None => own_key(table, &links, child),
            };
            let removed = key.and_then(|k| links.map.remove(&k));
            shrink_if_sparse(&mut links.linked);
            removed
        };
        // Dropped outside the lock: it may be the last reference.
        removed.is_some()
    }

    /// A copy of the links, in order; for a group that never had links, no
    /// lock and no allocation.
    ///
    /// Skipping the lock when `has_links` reads `false` cannot hide a link a
    /// caller must see: a link added before the last `done` of the work a
    /// wait waits for happens-before that wait reads the count at zero, as
    /// for failures (see [`Node::own_errors`]).
    pub(crate) fn links(&self) -> Vec<NodeRef> {
        let Some(table) = self.links_table() else {
            return Vec::new();
        };
        let links = table.links.lock();
        links.map.values().cloned().collect()
    }

    /// The links, each with a user handle counted for the caller to wrap
    /// (`WaitGroup::linked`). Counted under the links lock, which [`leave`]
    /// holds while it checks that a child has no user: so a detached child
    /// is either gone from the list or handed out again and kept.
    pub(crate) fn links_for_users(&self) -> Vec<NodeRef> {
        let Some(table) = self.links_table() else {
            return Vec::new();
        };
        let links = table.links.lock();
        links
            .map
            .values()
            .map(|l| {
                l.hot.users.fetch_add(1, Ordering::Relaxed);
                l.clone()
            })
            .collect()
    }

    fn is_bare(&self) -> bool {
        self.links_table()
            .map_or(true, |table| table.links.lock().map.is_empty())
    }

    // ----- guards and tasks --------------------------------------------------

    /// A fresh id, unique within the group.
    pub(crate) fn next_id(&self) -> TaskId {
        TaskId(
            self.hot
                .last_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        )
    }

    /// A slot for a task about to be spawned, if one is free.
    pub(crate) fn try_permit(&self) -> Permit {
        match &self.slots {
            None => Permit::Unlimited,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Permit::Held(permit),
                Err(_) => Permit::Queue,
            },
        }
    }

    /// A slot, once one is free.
    pub(crate) async fn acquire_permit(&self) -> Permit {
        match &self.slots {
            None => Permit::Unlimited,
            Some(slots) => Permit::Held(
                Arc::clone(slots)
                    .acquire_owned()
                    .await
                    .expect("a group's limit is never closed"),
            ),
        }
    }

    /// The id of a recorded guard.
    pub(crate) fn recorded_id(&self, slot: Slot) -> TaskId {
        self.registry.id(slot)
    }

    /// The id, name and say on cancelling of a recorded guard or task, from
    /// its entry.
    pub(crate) fn identity(&self, slot: Slot) -> (TaskId, Option<Label>, Option<bool>) {
        self.registry.identity(slot)
    }

    /// The current generation of the group's tokens, held for the caller.
    /// No lock for a group never reopened after a cancel or drain.
    #[inline]
    pub(crate) fn generation(&self) -> Generation {
        if self.generation_number() == 0 {
            return Generation(None);
        }
        self.current_later()
    }

    /// The current generation of a reopened group, from under its lock: a
    /// `reopen()` sets the number after it installs the generation, so a
    /// number other than 0 means `later` is made.
    #[cold]
    fn current_later(&self) -> Generation {
        let later = self
            .later
            .get()
            .expect("a generation is made before it is counted");
        Generation(Some(Arc::clone(&later.gens.lock().current)))
    }

    /// The number of the current generation of tokens (0: the node's own).
    #[inline]
    fn generation_number(&self) -> u32 {
        self.hot
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The tokens of `generation`, a generation of this group.
    #[inline]
    fn tokens_in<'a>(&'a self, generation: &'a Generation) -> &'a Tokens {
        generation.0.as_deref().unwrap_or(&self.tokens)
    }

    /// Calls `f` with the current generation's tokens.
    #[inline]
    fn with_tokens<R>(&self, f: impl FnOnce(&Tokens) -> R) -> R {
        let generation = self.generation();
        f(self.tokens_in(&generation))
    }

    /// The context token of `generation`.
    pub(crate) fn own_in<'a>(&'a self, generation: &'a Generation) -> &'a CancellationToken {
        self.tokens_in(generation).own()
    }

    /// The current generation's scope, as a clone: cancelled with the whole
    /// subtree (`cancel()`, a failure under `cancel_on_error`, a deadline,
    /// the caller's token, the parent's scope), not by a cancel of the
    /// context alone (`ctx.cancel()`, a shutdown's turn).
    pub(crate) fn scope_token(&self) -> CancellationToken {
        self.with_tokens(|tokens| tokens.scope.clone())
    }

    /// The current context token, as a clone.
    pub(crate) fn own_token(&self) -> CancellationToken {
        self.with_tokens(|tokens| tokens.own().clone())
    }

    /// The drain signal of `generation`.
    pub(crate) fn drain_in<'a>(&'a self, generation: &'a Generation) -> &'a CancellationToken {
        self.tokens_in(generation).drain()
    }

    /// Why `generation`'s context was cancelled, if it was.
    pub(crate) fn reason_in(&self, generation: &Generation) -> Option<CancelReason> {
        self.tokens_in(generation).reason()
    }

    /// Whether `generation` is draining: drained, or its context cancelled.
    /// Makes neither token.
    pub(crate) fn is_draining_in(&self, generation: &Generation) -> bool {
        let tokens = self.tokens_in(generation);
        tokens.is_drained() || tokens.is_own_cancelled()
    }

    /// The generations a cancel must reach (see [`Later`]): the current one
    /// and those before it that a drain ended, taken from the list (the
    /// caller cancels them). For a group never reopened, the node's own,
    /// without a lock or an allocation.
    fn uncancelled(&self) -> Uncancelled {
        let Some(later) = self.later.get() else {
            return Uncancelled {
                first: true,
                held: Vec::new(),
            };
        };
        let mut gens = later.gens.lock();
        let drained = gens.drained.take();
        let first = std::mem::take(&mut gens.first_drained);
        let held = drained
            .iter()
            .filter_map(Weak::upgrade)
            .chain(std::iter::once(Arc::clone(&gens.current)))
            .collect();
        Uncancelled { first, held }
    }

    /// Calls `f` on each generation of `uncancelled`, oldest first.
    fn each_of(&self, uncancelled: &Uncancelled, mut f: impl FnMut(&Tokens)) {
        if uncancelled.first {
            f(&self.tokens);
        }
        uncancelled.held.iter().for_each(|tokens| f(tokens));
    }

    /// Reopens a closed group; if its context was cancelled, starts a new
    /// generation of tokens, derived from the group's origin as the first
    /// was (so a group cancelled through its caller's token stays so), or,
    /// for a `child()` whose parent started a generation since, from the
    /// parent's latest scope. A scoped child's always from its origin, the
    /// context it was made from: cancelled once that is, with its reason.
    pub(crate) fn reopen(&self) -> bool {
        // The walks of the shutdowns before do not abort the tasks counted
        // once it is open (see `late_abort`).
        if let Some(extra) = self.extra.get() {
            extra.aborting.lock().walked = false;
        }
        // Read before the generation's lock, which is taken alone (see the
        // lock order): a parent reopened meanwhile is reopened after this.
        // Not for a scoped child, which hangs off the context it was made
        // from, not off its parent's scope: see below.
        let scoped = self.is_scoped();
        let origin = if scoped { None } else { self.parent_scope() };
        let number = self.generation_number();
        let generation = self.generation();
        let current = self.tokens_in(&generation);
        let one_at_a_time = current.lock.lock();
        let reopened = self.state().reopen();
        // Another `reopen()` started the next generation meanwhile (under
        // this lock).
        if self.generation_number() != number {
            return reopened;
        }
        let cancelled = current.is_own_cancelled();
        if cancelled || current.is_drained() {
            let next = number
                .checked_add(1)
                .expect("more than 2^32 - 1 reopens of a cancelled group");
            self.abort_at.set(None);
            let tokens = Arc::new(Tokens::new(origin.as_ref().or(self.origin.as_ref())));
            if scoped && tokens.scope.is_cancelled() {
                // The context it was made from is cancelled: so is the new
                // generation, for the reason the current one has. (Its lock
                // under the current one's: no one else sees it yet.)
                if let Some(reason) = one_at_a_time.as_ref() {
                    tokens.set_reason(reason);
                }
            }
            let scope = tokens.scope.clone();
            match self.later.get() {
                None => {
                    let gens = Gens {
                        current: tokens,
                        drained: Pruned::default(),
                        first_drained: !cancelled,
                    };
                    // Made here only, under the first generation's lock.
                    let made = self.later.set(Box::new(Later {
                        gens: Mutex::new(gens),
                    }));
                    assert!(made.is_ok(), "the first reopen makes `later` once");
                }
                Some(later) => {
                    let mut gens = later.gens.lock();
                    // Another `reopen()` replaced it after this one read it
                    // (and took its lock then, a lock this one does not hold).
                    if generation
                        .0
                        .as_ref()
                        .is_some_and(|read| !Arc::ptr_eq(read, &gens.current))
                    {
                        return reopened;
                    }
                    let old = std::mem::replace(&mut gens.current, tokens);
                    // A generation a cancel ended is reached by no later one.
                    if !cancelled {
                        gens.drained
                            .push(Arc::downgrade(&old), |held| held.strong_count() > 0);
                    }
                }
            }
            self.hot
                .generation
                .store(next, std::sync::atomic::Ordering::Release);
            drop(one_at_a_time);
            // For the `child()` groups, made or to be made: one made from
            // now on reads this generation's scope itself, one made before
            // reads it here when it is reopened. Makes the table if there is
            // none, so that a child made as this runs, which read the scope
            // before, finds it: a reopen of a cancelled group is rare, and a
            // table costs no walk while it holds no link.
            let mut links = self.table().links.lock();
            if links.scope.as_ref().map_or(true, |(seen, _)| *seen < next) {
                links.scope = Some((next, scope));
            }
        }
        reopened
    }

    /// The scope of the latest generation of the group this one is a
    /// `child()` of, if that group is alive and started one after its first
    /// (see [`Links::scope`]).
    fn parent_scope(&self) -> Option<CancellationToken> {
        let (table, _) = self.owner.as_ref()?;
        let table = table.upgrade()?;
        let links = table.links.lock();
        links.scope.as_ref().map(|(_, scope)| scope.clone())
    }

    // ----- failures -----------------------------------------------------------

    /// Records a task's failure; if the task is critical (by its own
    /// option, or else the group's `cancel_on_error`), cancels the group and
    /// everything below it, and the first such failure becomes the cause.
    pub(crate) fn record_failure(
        this: &NodeRef,
        error: TaskError,
        critical: Option<bool>,
    ) -> Arc<TaskError> {
        let mut error = error;
        let critical = critical.unwrap_or(this.config.cancel_on_error);
        // Decided under the failures lock, in the order of the list: the
        // first critical failure pushed is the cause (only it cancels, as in
        // errgroup) and is primary; one pushed after it is secondary, also
        // when it comes before the cancel has landed.
        let (error, cancels) = {
            let mut failures = this.failures.lock();
            let generation = this.generation_number();
            // A group without a critical failure needs no `Extra` for this.
            let extra = if critical {
                Some(this.extra())
            } else {
                this.extra.get().map(|extra| &**extra)
            };
            let mut cause = extra.map(|extra| extra.cause.lock());
            let after_cause = cause
                .as_deref()
                .and_then(Option::as_ref)
                .is_some_and(|(_, g)| *g == generation);
            let secondary = after_cause || this.is_cancelled();
            if secondary {
                error.set_secondary();
            }
            error.set_recorded();
            let error = Arc::new(error);
            // The first critical failure of this generation cancels (a
            // group cancelled already: what is below it that its cancel did
            // not reach, a linked group), and is the cause unless the group
            // was cancelled before it; it replaces a generation's before (a
            // group reopened).
            let cancels = critical && !after_cause;
            if let (true, Some(cause)) = (cancels, cause.as_deref_mut()) {
                *cause = Some(((!secondary).then(|| Arc::clone(&error)), generation));
            }
            drop(cause);
            failures.push(&error, this.config.max_errors);
            (error, cancels)
        };
        this.hot.has_errors.store(true, Ordering::Release);
        if cancels {
            cancel_tree(this, CancelReason::Failure(Arc::clone(&error)));
        }
        // Last: logging formats the task's error, and a `Display` that panics
        // must not keep the failure from being kept or acted on.
        crate::trace::task_failed(&error);
        error
    }

    /// The failure that cancelled the current generation (see
    /// [`Extra::cause`]); `None` once a `reopen()` started another.
    pub(crate) fn cause(&self) -> Option<Arc<TaskError>> {
        let generation = self.generation_number();
        let cause = self.extra.get()?.cause.lock();
        cause
            .as_ref()
            .filter(|(_, g)| *g == generation)
            .and_then(|(error, _)| error.clone())
    }

    /// A snapshot of this group's own failures (those of children that left
    /// it included); without failures, no lock.
    ///
    /// Why a wait cannot miss a failure by skipping the lock: `record_failure`
    /// pushes the error and sets `has_errors` before the failing task's guard
    /// completes (see the invariants). The guard's `done` lowers the count
    /// with `Release`, and a wait returns only after reading the count at zero
    /// with `Acquire`, from that decrement's release sequence. So the flag's
    /// store happens-before the waiter's load, which therefore reads `true`.
    fn own_errors(&self) -> Option<(Option<FailureList>, u64)> {
        if !self.hot.has_errors.load(Ordering::Acquire) {
            return None;
        }
        let failures = self.failures.lock();
        Some((failures.kept.clone(), failures.dropped))
    }

    fn take_own_errors(&self) -> Option<(Option<FailureList>, u64)> {
        if !self.hot.has_errors.load(Ordering::Acquire) {
            return None;
        }
        let mut failures = self.failures.lock();
        let taken = std::mem::take(&mut *failures);
        Some((taken.kept, taken.dropped))
    }

    // ----- cancellation and shutdown steps -------------------------------------

    pub(crate) fn is_cancelled(&self) -> bool {
        self.with_tokens(Tokens::is_own_cancelled)
    }

    /// Cancels this group's own context (not its scope: the groups below
    /// are reached in their turn), with `reason` unless it has one.
    pub(crate) fn cancel_own(&self, reason: CancelReason) {
        let traced = self.traced_cancel(&reason);
        if self.later.get().is_none() {
            // A group a shutdown stops often has no token made: none is made.
            self.tokens
                .cancel_or_mark_then(OWN_CANCELLED, Some(reason), |tokens| {
                    self.cancel_scoped(tokens, OWN_CANCELLED)
                });
        } else {
            self.cancel_generations(OWN_CANCELLED, reason);
        }
        self.trace_cancel(traced);
    }

    /// Between setting the reason of this group's context (`tokens`) and
    /// cancelling it: in a group that made a [scoped child](crate::WaitGroup::scoped_child),
    /// gives each scoped child made here, and the groups made below it, that
    /// reason ([`give_reason_below`]), then cancels the tokens `bits` name
    /// (the context), then their scopes ([`cancel_reached_scopes`]), and
    /// returns `true`. Their scopes are children of that context, so its
    /// cancel reaches them; the reasons first, as a cancel of the whole tree
    /// sets them first, so that their tasks read the shutdown (not "the
    /// caller's token") as why. One load, and `false`, in a group that never
    /// made a scoped child.
    ///
    /// A child made meanwhile is found here or finds the reason: it is
    /// pushed (and [`HAS_SCOPED`] set) under the links lock before it reads
    /// the reason under the tokens lock ([`Node::make_scoped_child`]), and this
    /// runs after the reason was set under that lock.
    #[inline(always)]
    fn cancel_scoped(&self, tokens: &Tokens, bits: u8) -> bool {
        if !self.has_scoped_children() {
            return false;
        }
        self.cancel_scoped_children(tokens, bits);
        true
    }

    /// [`cancel_scoped`](Self::cancel_scoped) in a group that made a scoped
    /// child: out of line, so that every other group's cancel pays the load
    /// only (measured under callgrind: `profile shutdown flat`).
    #[cold]
    #[inline(never)]
    fn cancel_scoped_children(&self, tokens: &Tokens, bits: u8) {
        let reason = tokens.reason_set().unwrap_or(CancelReason::Token);
        let reached = give_reason_below(self.scoped_made_here(), &reason);
        tokens.cancel_made(bits);
        cancel_reached_scopes(reached);
    }

    /// Whether this group ever made a
    /// [scoped child](crate::WaitGroup::scoped_child): one load of its flags.
    #[inline]
    pub(crate) fn has_scoped_children(&self) -> bool {
        self.hot.flags.load(Ordering::Acquire) & HAS_SCOPED != 0
    }

    /// Whether this group is a scoped child or was made by a group that is
    /// one or was made so ([`MADE_IN_A_SCOPE`]): one load of its flags.
    #[inline]
    pub(crate) fn was_made_in_a_scope(&self) -> bool {
        self.hot.flags.load(Ordering::Relaxed) & MADE_IN_A_SCOPE != 0
    }

    /// Whether this group is a scoped child or ever made one: one load of
    /// its flags, for a shutdown's turn to pass over the rest of a tree.
    #[inline]
    pub(crate) fn is_in_a_scope(&self) -> bool {
        self.hot.flags.load(Ordering::Acquire) & (HAS_SCOPED | SCOPED) != 0
    }

    /// The scoped children this group made and has now, and the groups
    /// made below them (`child()`, `scoped_child()`; not one `link()`ed
    /// there): what a cancel of this group's own context cancels besides it
    /// (see [`give_reason_below`]), for a shutdown whose turn of this group
    /// stopped them with it; but the groups `skip` picks and those below
    /// them (reached only through them). The groups made form a tree: none
    /// is listed twice.
    pub(crate) fn scoped_subtree_but(&self, skip: impl Fn(&NodeRef) -> bool) -> Vec<NodeRef> {
        let mut stack = self.scoped_made_here();
        let mut out = Vec::with_capacity(stack.len());
        while let Some(node) = stack.pop() {
            if skip(&node) {
                continue;
            }
            node.push_made_here(false, &mut stack);
            out.push(node);
        }
        out
    }

    /// Pushes the groups this group made and has linked now (not one
    /// another group made and linked here) onto `out`; the scoped ones
    /// only if `scoped`.
    fn push_made_here(&self, scoped: bool, out: &mut Vec<NodeRef>) {
        if let Some(table) = self.links_table() {
            let links = table.links.lock();
            out.extend(
                links
                    .map
                    .values()
                    .filter(|child| {
                        (!scoped || child.is_scoped()) && own_key(table, &links, child).is_some()
                    })
                    .cloned(),
            );
        }
    }

    /// The scoped children this group made and has now: not one that
    /// another group made and linked here.
    fn scoped_made_here(&self) -> Vec<NodeRef> {
        let mut scoped = Vec::new();
        self.push_made_here(true, &mut scoped);
        scoped
    }

    /// With the `tracing` feature, the reason to log a cancel of this group's
    /// own context with, if it is not cancelled yet ([`trace_cancel`] logs
    /// it once the cancel is made). Without the feature, nothing: no clone.
    ///
    /// [`trace_cancel`]: Self::trace_cancel
    #[inline]
    fn traced_cancel(&self, reason: &CancelReason) -> Option<CancelReason> {
        #[cfg(feature = "tracing")]
        return (!self.is_cancelled()).then(|| reason.clone());
        #[cfg(not(feature = "tracing"))]
        {
            let _ = reason;
            None
        }
    }

    #[inline]
    fn trace_cancel(&self, traced: Option<CancelReason>) {
        if let Some(reason) = traced {
            crate::trace::cancelled(&self.label, &reason);
        }
    }

    /// Cancels the generations of a reopened group that a cancel must reach
    /// (see [`Later`]): the current one as `bits` say, those before it
    /// (drained already) only cancelled.
    #[cold]
    fn cancel_generations(&self, bits: u8, reason: CancelReason) {
        let uncancelled = self.uncancelled();
        // Every generation's reason, then the scoped children's (made from
        // any generation's context: a task of an earlier one makes its own
        // from that one), then the cancels, then the scopes reached: no
        // scoped child is cancelled before the context it hangs off, nor
        // before it has its reason (see `cancel_scoped`).
        self.each_of(&uncancelled, |tokens| tokens.set_reason(&reason));
        let reached = self.has_scoped_children().then(|| {
            // The current generation's (the first set wins).
            let given = self.with_tokens(Tokens::reason_set);
            give_reason_below(self.scoped_made_here(), given.as_ref().unwrap_or(&reason))
        });
        let mut left = usize::from(uncancelled.first) + uncancelled.held.len();
        self.each_of(&uncancelled, |tokens| {
            left -= 1;
            // The current one last, as `bits` say.
            let bits = if left > 0 { OWN_CANCELLED } else { bits };
            tokens.cancel_or_mark(bits, Some(reason.clone()));
        });
        if let Some(reached) = reached {
            cancel_reached_scopes(reached);
        }
    }

    /// Tells this group's own tasks to drain: finish what they are doing and
    /// take no more.
    ///
    /// Its [scoped children](crate::WaitGroup::scoped_child) (and theirs)
    /// are drained with it, as they are cancelled with it: the work that
    /// waits for them finishes what it is doing, and so do they. Not the
    /// groups below them otherwise: those follow their turn.
    pub(crate) fn drain_own(&self) {
        self.drain_this();
        if self.has_scoped_children() {
            self.drain_scoped_children();
        }
    }

    /// [`drain_own`](Self::drain_own)'s walk of the scoped children, out of
    /// line as [`cancel_scoped_children`](Self::cancel_scoped_children) is.
    /// The groups made form a tree: none is reached twice.
    #[cold]
    #[inline(never)]
    fn drain_scoped_children(&self) {
        let mut stack = self.scoped_made_here();
        while let Some(node) = stack.pop() {
            // Drained already: with the scoped children it had then, by
            // this walk or a drain of the whole tree; one made since is not
            // drained (as a group made in a drained one is not).
            if node.with_tokens(Tokens::is_drained) {
                continue;
            }
            node.drain_this();
            if node.has_scoped_children() {
                node.push_made_here(true, &mut stack);
            }
        }
    }

    /// Drains this group's own tasks only, not its scoped children: for a
    /// walk that reaches those itself ([`drain_tree`]).
    fn drain_this(&self) {
        self.with_tokens(|tokens| tokens.cancel_or_mark(DRAINED, None));
    }

    /// [`drain_own`](Self::drain_own) then [`cancel_own`](Self::cancel_own)
    /// in one step, for a group with nothing to drain: one hold of the
    /// tokens lock where the two take it twice.
    pub(crate) fn drain_and_cancel_own(&self, reason: CancelReason) {
        let traced = self.traced_cancel(&reason);
        if self.later.get().is_none() {
            self.tokens
                .cancel_or_mark_then(DRAINED | OWN_CANCELLED, Some(reason), |tokens| {
                    self.cancel_scoped(tokens, DRAINED | OWN_CANCELLED)
                });
        } else {
            self.cancel_generations(DRAINED | OWN_CANCELLED, reason);
        }
        self.trace_cancel(traced);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.is_draining_in(&self.generation())
    }

    // ----- deadlines -------------------------------------------------------------

    /// The earliest deadline bounding this group's tasks: its own, those of
    /// the groups above it, and a running shutdown's abort time.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let abort_at = self.abort_at.get();
        // Most groups: no deadline, so no `Extra` to lock.
        let Some(extra) = self.extra.get() else {
            return abort_at;
        };
        let deadlines = *extra.deadlines.lock();
        [deadlines.own, deadlines.inherited, abort_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The group's [`Extra`], made on first use.
    fn extra(&self) -> &Extra {
        self.extra.get_or_init(Box::default)
    }

    /// A running shutdown aborts this group's tasks at `at` (set when the
    /// shutdown starts, and again when it reaches the group late).
    pub(crate) fn set_abort_at(&self, at: Instant) {
        self.abort_at.set(Some(at));
    }

    /// [`set_abort_at`](Self::set_abort_at) with a time encoded once for
    /// every group of a shutdown.
    pub(crate) fn set_abort_time(&self, at: AbortTime) {
        self.abort_at.set_word(at.0);
    }

    /// [`set_abort_time`](Self::set_abort_time), returning the time it
    /// replaces (a concurrent shutdown's, or none).
    pub(crate) fn swap_abort_time(&self, at: AbortTime) -> AbortTime {
        AbortTime(self.abort_at.swap_word(at.0))
    }

    /// Takes back the time `at` a dropped shutdown gave the group, unless
    /// another shutdown gave it a time since: puts back `previous`, the time
    /// of a shutdown still running that it replaced; with none, only on an
    /// open group (one the dropped shutdown did not reach: a group it
    /// reached keeps its time until reopened).
    pub(crate) fn unset_abort_time(&self, at: AbortTime, previous: AbortTime) {
        if previous.is_some() || !self.state().is_closed() {
            self.abort_at.restore_word(at.0, previous.0);
        }
    }

    /// The group's own deadline, if it has one, and the token its timer
    /// stops on once the group is released.
    pub(crate) fn own_deadline(&self) -> Option<(Instant, CancellationToken)> {
        let extra = self.extra.get()?;
        let at = extra.deadlines.lock().own?;
        Some((at, extra.released.clone()?))
    }

    // ----- shielded sections --------------------------------------------------

    /// Task `task` of this group (in registry slot `slot`) enters a shielded
    /// section that may run until `until`, even past the abort of a
    /// shutdown's forced phase.
    pub(crate) fn enter_shield(&self, task: TaskId, slot: Slot, until: Instant) {
        let mut shields = self.extra().shields.lock();
        let (_, ends) = shields.open.entry(task).or_insert((slot, Vec::new()));
        ends.push(until);
    }

    /// The section entered with `enter_shield(task, _, until)` ended.
    pub(crate) fn leave_shield(&self, task: TaskId, until: Instant) {
        let extra = self.extra();
        let mut shields = extra.shields.lock();
        let Some((_, ends)) = shields.open.get_mut(&task) else {
            return;
        };
        if let Some(i) = ends.iter().position(|&end| end == until) {
            ends.swap_remove(i);
        }
        if ends.is_empty() {
            shields.open.remove(&task);
            if shields.watchers > 0 {
                shields.released.push(task);
            }
            shrink_if_sparse(&mut shields.open);
        }
        drop(shields);
        extra.shield_ended.notify_waiters();
    }

    /// The tasks in a shielded section at `now` whose budget has not run
    /// out, each with its slot and the latest end of its sections.
    pub(crate) fn shielded(&self, now: Instant) -> ShieldMap {
        match self.extra.get() {
            Some(extra) => shielded_at(&extra.shields.lock(), now),
            None => ShieldMap::default(),
        }
    }

    /// [`shielded`](Self::shielded) for a forced phase, which from then on
    /// hears of each task whose last section ends, until the watch is
    /// dropped. Taken together, under the lock those ends take: no end is
    /// missed between the two.
    pub(crate) fn watch_shields(&self, now: Instant) -> ShieldWatch<'_> {
        let extra = self.extra();
        let mut shields = extra.shields.lock();
        shields.watchers += 1;
        ShieldWatch {
            shielded: shielded_at(&shields, now),
            read: shields.released.len(),
            shields: &extra.shields,
        }
    }

    /// Resolves when a shielded section of this group ends (register before
    /// reading [`ShieldWatch::released`] to miss none).
    pub(crate) fn shield_ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.extra().shield_ended.notified()
    }

    /// Closes the group to `try_add`/`try_go`; `true` if this call closed it.
    pub(crate) fn close(&self) -> bool {
        self.state().close()
    }

    /// What a shutdown counts from: entries ever removed from the registry,
    /// of those the tasks a shutdown aborted and listed, and, in a lean
    /// group, pending guards not in the registry.
    ///
    /// In a group that records every guard, every unit ends by its entry's
    /// removal, which the removals count: a unit counted there without an
    /// entry is one whose start (between its count and its entry) or end
    /// (between its entry's removal and its count) is under way on another
    /// thread, and is read as if it were through, with no wait. Counted as
    /// an unrecorded unit, its fall counted it finished once more than its
    /// entry's removal (a start), or than its listing as aborted (an abort's
    /// end): a forced stop's merged report counted one task both finished
    /// and aborted (`forcesig chain`, two workers, 1 run in 36). Reading
    /// again until it was through (64 looks, a thread yield between) missed
    /// a thread that lost its core in between for longer than that.
    pub(crate) fn counters(&self) -> Counters {
        if self.record_guards() {
            return Counters::of(self.registry.removed_and_len(), None);
        }
        // The count first, then the registry's counters and entries, each
        // shard's three read together. A unit that ends in between is in
        // the count and counted removed, not in the entries: one more
        // unrecorded unit, whose fall a report counts as finished, for a
        // unit whose removal it counts from already: once. (With the entries
        // read apart from the removals, after the count, a unit that ended
        // between the removals and the entries was one more unrecorded unit
        // and not yet counted removed: counted finished twice.) Removed and
        // aborted are read together: a task listed as aborted is never seen
        // removed but not aborted.
        let len = self.len();
        if self.registry.never_used() {
            // No entry was ever made: its pending units are all unrecorded.
            return Counters {
                unrecorded: len,
                ..Counters::default()
            };
        }
        Counters::of(self.registry.removed_and_len(), Some(len))
    }

    /// Aborts every running spawned task of this group but `spare`; `watch`
    /// learns when each abort took effect.
    pub(crate) fn abort_tasks(&self, spare: Option<TaskId>) -> Arc<AbortWatch> {
        let watch = AbortWatch::new(self.label.clone());
        self.registry.abort_all(&|id| Some(id) == spare, &watch);
        watch
    }

    /// Aborts every running spawned task of this group for which `spare`
    /// says no and that `watch` (or an earlier call) has not aborted yet.
    pub(crate) fn abort_more(&self, spare: &dyn Fn(TaskId) -> bool, watch: &Arc<AbortWatch>) {
        self.registry.abort_all(spare, watch);
    }

    /// Aborts task `id` in registry slot `slot`, as
    /// [`abort_more`](Self::abort_more) aborts each, if it is still there.
    pub(crate) fn abort_one(&self, slot: Slot, id: TaskId, watch: &Arc<AbortWatch>) {
        self.registry.abort_one(slot, id, watch);
    }

    /// A fresh abort watch for [`abort_more`](Self::abort_more).
    pub(crate) fn abort_watch(&self) -> Arc<AbortWatch> {
        AbortWatch::new(self.label.clone())
    }

    /// Starts a shutdown's abort of this group's tasks, before its walk
    /// ([`abort_more`](Self::abort_more)), on a closed group. Until the
    /// returned phase is dropped, a task of the group whose abort handle
    /// comes late is aborted as it comes and counted in `watch`
    /// ([`late_abort`](Self::late_abort)); one counted before the group
    /// closed is aborted even after. See [`Registry::set_abort`] for why a
    /// task the walk misses sees what this publishes.
    pub(crate) fn aborting<'a>(&'a self, watch: &Arc<AbortWatch>) -> AbortPhase<'a> {
        let mut aborting = self.extra().aborting.lock();
        aborting.watches.push(Arc::clone(watch));
        aborting.walked = true;
        AbortPhase {
            node: self,
            watch: Arc::clone(watch),
        }
    }

    /// Whether a task of this group recording its abort handle now is to be
    /// aborted instead (see [`Registry::set_abort`]): if a shutdown is
    /// aborting the group, it is, and the latest such shutdown's watch
    /// counts it (the count made here, under the lock that ends the phase,
    /// so the shutdown waits for it); if none is, but one walked the group's
    /// tasks since the task was counted (`counted_open`: the group was open
    /// then), it is too, as that walk would have done. One load of the state
    /// word for an open group.
    #[inline]
    pub(crate) fn late_abort(&self, counted_open: bool) -> Late {
        if !self.state().is_closed() {
            return Late::Keep;
        }
        self.late_abort_closed(counted_open)
    }

    #[cold]
    #[inline(never)]
    fn late_abort_closed(&self, counted_open: bool) -> Late {
        let Some(extra) = self.extra.get() else {
            return Late::Keep;
        };
        let aborting = extra.aborting.lock();
        if let Some(watch) = aborting.watches.last() {
            watch.expect(1);
            return Late::Abort(Some(Arc::clone(watch)));
        }
        // A walk since the group was last opened came after the count.
        if counted_open && aborting.walked {
            return Late::Abort(None);
        }
        Late::Keep
    }

    /// This group's pending work, as a report lists it; `None` if idle.
    fn pending(&self, now: Instant) -> Option<GroupPending> {
        // A group that never recorded anything (most idle groups of a tree)
        // has nothing to list.
        if self.registry.never_used() && self.len() == 0 {
            return None;
        }
        let mut tasks = Vec::with_capacity(self.registry.len());
        // In chunks: a report on a million entries must not stall add/done.
        self.registry
            .map_chunked(|entry| entry.info(&self.label, now), &mut tasks);
        let count = tasks.len() + self.unrecorded();
        self.group_pending(tasks, count)
    }

    /// The pending units that have no entry, for a report that lists the
    /// entries: none in a group that records every guard (a unit counted
    /// without an entry there is only one whose start or end is under way,
    /// see [`in_flight`](Self::in_flight), and the listing is the snapshot),
    /// else the group's count less its entries, not less what was listed.
    /// Read against the listing, work starting and ending on another thread
    /// while it was made showed as unrecorded guards: in most of a dump's
    /// snapshots of a recording group under add/done.
    pub(crate) fn unrecorded(&self) -> usize {
        if self.record_guards() {
            return 0;
        }
        self.len().saturating_sub(self.registry.len())
    }

    /// [`pending`](Self::pending), and the group's [`counters`](Self::counters)
    /// read with it, for a report that counts what ended too, so that each
    /// unit is counted once: each shard's counters of what was removed are
    /// read with what it lists (see `Registry::map_counted`), then the count
    /// of pending units with no end under way (see
    /// [`settled_counts`](Self::settled_counts)). (Read after the listing,
    /// the counters counted a unit that ended while it was listed as
    /// finished too: a shutdown's report counted it both pending and
    /// finished.)
    ///
    /// Not for a group that never recorded anything and has nothing
    /// pending ([`pending_counted_of`] answers for it).
    fn pending_counted(&self, now: Instant) -> (Option<GroupPending>, Counters) {
        let mut tasks = Vec::with_capacity(self.registry.len());
        let counts = self
            .registry
            .map_counted(|entry| entry.info(&self.label, now), &mut tasks);
        let (len, entries) = self.settled_counts();
        // The entries as read with the count, not with the listing: a unit
        // in flight then (a start, or a lean guard) is unrecorded, in a lean
        // group only (see `counters`).
        let lean = (!self.record_guards()).then_some(len);
        let counters = Counters::of(crate::registry::Counts { entries, ..counts }, lean);
        (self.group_pending(tasks, len), counters)
    }

    /// The group's count of pending units, and then its number of entries,
    /// read at a moment when no end is under way on another thread (see
    /// [`in_flight`](Self::in_flight)): such an end's entry is gone and
    /// counted removed, but its count is not given up yet, so a report
    /// would count it pending too. An end is two steps with no wait between
    /// them: in a group that records every guard (where a count above the
    /// entries is a unit in flight), the two are read again, up to
    /// [`SETTLE_LOOKS`] times, yielding the thread between reads, until the
    /// count is not above the entries; then the last read stands. A start
    /// under way (its count before its entry) reads the same, and is
    /// counted pending.
    fn settled_counts(&self) -> (usize, usize) {
        let mut len = self.len();
        let mut entries = self.registry.len();
        if self.record_guards() {
            for _ in 0..SETTLE_LOOKS {
                if len <= entries {
                    break;
                }
                std::thread::yield_now();
                len = self.len();
                entries = self.registry.len();
            }
        }
        (len, entries)
    }

    /// The group's pending work from its listed `tasks` and its count of
    /// pending units `len`; `None` if idle.
    fn group_pending(&self, mut tasks: Vec<TaskInfo>, len: usize) -> Option<GroupPending> {
        crate::registry::sort_by_id(&mut tasks, |t| t.id);
        let count = len.max(tasks.len());
        (count > 0).then(|| GroupPending {
            group: self.label.clone(),
            count,
            tasks,
        })
    }
}

impl Failures {
    fn kept(&self) -> &[Arc<TaskError>] {
        self.kept.as_deref().map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, error: &Arc<TaskError>, max: usize) {
        if self.kept().len() < max {
            Arc::make_mut(self.kept.get_or_insert_with(Arc::default)).push(Arc::clone(error));
        } else {
            self.dropped += 1;
        }
    }

    /// Takes in a departing child's failures: of these and those kept
    /// already, `max` are kept, in the order recorded, the rest counted.
    /// Beyond `max`, the latest secondary failures go first, then the latest
    /// ones: children each cancelled by their first failure (`cancel_on_error`,
    /// a shard of a job) left floods of secondary ones, and one child's flood,
    /// recorded before another child's cause, pushed that cause out (a user
    /// probe: 3 shards failed, 2 causes kept). (Pushed in turn, each child's
    /// first ones were kept whatever the order they were recorded in.)
    fn absorb(&mut self, kept: &[Arc<TaskError>], dropped: u64, max: usize) {
        self.dropped += dropped;
        let ours = self.kept();
        // Most often every one was recorded after the last one kept (children
        // leave in about the order they fail): then they go after it, with no
        // sort, or are only counted if there is no room for them, nor a
        // secondary failure for a cause of theirs to take the place of. A sort
        // on every leave would make a group that keeps everything
        // (`max_errors(usize::MAX)`) quadratic in its history.
        let later = ours.last().map_or(true, |last| {
            kept.iter().all(|e| e.recorded() > last.recorded())
        });
        let full = || {
            ours.len() >= max
                && !(kept.iter().any(|e| !e.is_secondary())
                    && ours.iter().any(|e| e.is_secondary()))
        };
        if kept.is_empty() || (later && full()) {
            self.dropped += kept.len() as u64;
            return;
        }
        let list = Arc::make_mut(self.kept.get_or_insert_with(Arc::default));
        list.extend(kept.iter().cloned());
        if !later {
            // Stable, and two sorted runs: a merge.
            list.sort_by_key(|e| e.recorded());
        }
        if list.len() > max {
            self.dropped += cut_to(list, max);
        }
    }

    /// A group's own failures (`self`) and those of its children that left
    /// it, as one list in the order recorded, of at most `max`: each list
    /// keeps its first `max`, so the first `max` of both are among them.
    /// Shared, not copied, when one of the two is empty.
    fn with_departed(
        own: Option<(Option<FailureList>, u64)>,
        departed: Option<&Failures>,
        max: usize,
    ) -> Option<(Option<FailureList>, u64)> {
        let departed = departed.filter(|d| d.kept.is_some() || d.dropped != 0);
        let Some(departed) = departed else {
            return own;
        };
        let (own_kept, own_dropped) = own.unwrap_or_default();
        let dropped = own_dropped + departed.dropped;
        let own_list = own_kept.as_deref().map_or(&[][..], Vec::as_slice);
        if own_list.is_empty() {
            return Some((departed.kept.clone(), dropped));
        }
        if departed.kept().is_empty() {
            return Some((own_kept, dropped));
        }
        let mut both = Failures {
            kept: own_kept,
            dropped,
        };
        both.absorb(departed.kept(), 0, max);
        Some((both.kept, both.dropped))
    }
}

/// Cuts `list` (failures in the order recorded) to `max`, the latest
/// secondary ones first, then the latest; returns how many went.
fn cut_to(list: &mut Vec<Arc<TaskError>>, max: usize) -> u64 {
    let over = list.len().saturating_sub(max);
    let mut secondary_out = over;
    let mut index = list.len();
    let mut out = vec![false; list.len()];
    while secondary_out > 0 && index > 0 {
        index -= 1;
        if list[index].is_secondary() {
            out[index] = true;
            secondary_out -= 1;
        }
    }
    let mut out = out.into_iter();
    list.retain(|_| !out.next().unwrap_or(false));
    list.truncate(max);
    over as u64
}

/// A node's counters at one moment; see [`Node::counters`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// Entries ever removed from the registry.
    pub(crate) removed: u64,
    /// Of those, the tasks a shutdown aborted and listed.
    pub(crate) aborted: u64,
    /// Pending units without an entry: a lean group's guards (and its work
    /// in flight); 0 in a group that records every guard.
    pub(crate) unrecorded: usize,
}

impl Counters {
    /// The registry's `counts` and, in a lean group, the group's count of
    /// pending units `lean`: those without an entry are unrecorded. `None`
    /// for a group that records every guard, whose units are counted by
    /// their entries' removals alone (see [`Node::counters`]).
    fn of(counts: crate::registry::Counts, lean: Option<usize>) -> Self {
        Counters {
            removed: counts.removed,
            aborted: counts.aborted,
            unrecorded: lean.map_or(0, |len| len.saturating_sub(counts.entries)),
        }
    }

    /// Work that ended between `self` and `later` other than by a
    /// shutdown's abort that some report lists (completed, failed, or
    /// aborted by its handle): entries removed, minus the tasks a shutdown
    /// aborted and listed, plus the fall in a lean group's unrecorded
    /// guards.
    pub(crate) fn finished_until(&self, later: &Counters) -> usize {
        let removed = later.removed.saturating_sub(self.removed);
        let aborted = later.aborted.saturating_sub(self.aborted);
        let lean = self.unrecorded.saturating_sub(later.unrecorded) as u64;
        (removed.saturating_sub(aborted) + lean) as usize
    }
}

// ----- the traversal -----------------------------------------------------------

/// Visits `root` and every group linked below it, each exactly once: root
/// first, then depth-first in link order (the order of a recursive walk that
/// skips groups already seen), a group's scoped children before its other
/// links. Iterative, so a chain of any depth is fine.
///
/// `at` is called for each group while its links are being read: under its
/// links lock, with them, if it ever had links (so that what it sees of the
/// group and of its links is one snapshot, see [`errors`]); without a lock,
/// and `None`, otherwise. Returning `Break` stops the walk.
pub(crate) fn visit(
    root: &NodeRef,
    at: impl FnMut(&NodeRef, Option<&mut Links>) -> ControlFlow<()>,
) {
    traverse(root, at, |_, _| ());
}

/// [`visit`], handing each group to `then` once `at` is done with it (and
/// its links lock released), unless `at` stopped the walk there: the walk's
/// own reference, so keeping the group costs no count; and how many groups
/// were left on the walk's stack below it as it was taken off it. The
/// groups a group reaches first are pushed onto the stack above those, and
/// taken off before any of those: so they are the ones that follow the
/// group in the walk with at least as many left below them.
fn traverse(
    root: &NodeRef,
    at: impl FnMut(&NodeRef, Option<&mut Links>) -> ControlFlow<()>,
    then: impl FnMut(NodeRef, usize),
) {
    traverse_from(root, |_| (), at, then);
}

/// [`traverse`], calling `first` on each group as the walk reaches it,
/// before its links are read (without their lock: `first` may take the
/// group's tokens lock, which is taken alone).
fn traverse_from(
    root: &NodeRef,
    mut first: impl FnMut(&NodeRef),
    mut at: impl FnMut(&NodeRef, Option<&mut Links>) -> ControlFlow<()>,
    mut then: impl FnMut(NodeRef, usize),
) {
    // `first` before even the look at `has_links`: what it does happens
    // before this walk reads any of the group's links.
    first(root);
    if !root.hot.has_links.load(Ordering::Acquire) {
        if at(root, None).is_continue() {
            then(root.clone(), 0);
        }
        return;
    }
    // A visit inside `at` finds the cell empty and starts from nothing.
    let Scratch {
        mut seen,
        mut stack,
    } = SCRATCH.try_with(Cell::take).unwrap_or_default();
    stack.push(root.clone());
    let mut first_done = true; // for `root`, above
    while let Some(node) = stack.pop() {
        if !seen.insert(node.id()) {
            continue;
        }
        if !std::mem::take(&mut first_done) {
            first(&node);
        }
        let below = stack.len();
        let flow = with_links(&node, |links| match links {
            Some(links) => {
                let flow = at(&node, Some(&mut *links));
                // Pushed in reverse, so the first link is visited next; the
                // scoped children, which belong with the group's own work,
                // before every other link (pushed last), so that a shutdown
                // stops them, aborts included, before the groups linked after
                // that work (a pool made before the requests).
                let table = node
                    .has_scoped_children()
                    .then(|| node.links_table())
                    .flatten();
                if let Some(table) = table {
                    let links = &*links;
                    let made_here =
                        |l: &&NodeRef| l.is_scoped() && own_key(table, links, l).is_some();
                    for scoped in [false, true] {
                        let values = links.map.values().rev();
                        stack.extend(values.filter(|l| made_here(l) == scoped).cloned());
                    }
                } else {
                    stack.extend(links.map.values().rev().cloned());
                }
                flow
            }
            None => at(&node, None),
        });
        if flow.is_break() {
            break;
        }
        then(node, below);
    }
    stack.clear();
    seen.clear();
    if seen.capacity() <= SCRATCH_KEPT && stack.capacity() <= SCRATCH_KEPT {
        let _ = SCRATCH.try_with(|cell| cell.set(Scratch { seen, stack }));
    }
}

/// Runs `f` with `node`'s links, under their lock, if it ever had links;
/// with `None`, and no lock, otherwise.
fn with_links<R>(node: &Node, f: impl FnOnce(Option<&mut Links>) -> R) -> R {
    match node.links_table() {
        Some(table) => f(Some(&mut table.links.lock())),
        None => f(None),
    }
}

/// What a [`visit`] works with, kept empty between visits on a thread so
/// that walking a tree again (a shutdown walks it twice) does not grow
/// a table and a stack from nothing each time.
#[derive(Default)]
struct Scratch {
    seen: IdSet,
    stack: Vec<NodeRef>,
}

/// The most entries a thread's [`Scratch`] keeps room for between visits
/// (room for trees of up to 1,792 groups: about 18 KB of set and 16 KB of
/// stack on 64-bit targets): a walk over a bigger tree frees what it grew,
/// so a thread does not hold memory for the largest tree it ever walked.
/// (64 under Miri, so that the test of both cases stays short there.)
const SCRATCH_KEPT: usize = if cfg!(miri) { 64 } else { 2048 };

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Gives back room in `map` once it is a quarter full (halving, so
/// amortized O(1) per removal): a long-lived group keeps room for what is
/// there now, not for the most there ever was.
fn shrink_if_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    let (len, room) = (map.len(), map.capacity());
    if room > 64 && len * 4 < room {
        map.shrink_to(len * 2);
    }
}

/// Tasks in a shielded section, each with its registry slot and the latest
/// end of its sections' budgets ([`Node::shielded`]).
pub(crate) type ShieldMap = HashMap<TaskId, (Slot, Instant), BuildHasherDefault<IdHasher>>;

fn shielded_at(shields: &Shields, now: Instant) -> ShieldMap {
    shields
        .open
        .iter()
        .filter_map(|(&task, (slot, ends))| {
            let until = ends.iter().copied().max()?;
            (until > now).then_some((task, (*slot, until)))
        })
        .collect()
}

/// A forced phase's view of its group's shielded sections
/// ([`Node::watch_shields`]): the tasks shielded when it began, and the
/// tasks whose last section ended since.
pub(crate) struct ShieldWatch<'a> {
    /// The tasks shielded when the watch began.
    pub(crate) shielded: ShieldMap,
    /// How much of the group's `released` list this watch has read.
    read: usize,
    shields: &'a PlainMutex<Shields>,
}

impl ShieldWatch<'_> {
    /// The tasks whose last section ended since the last call (or since
    /// the watch began), in order.
    pub(crate) fn released(&mut self) -> Vec<TaskId> {
        let shields = self.shields.lock();
        let new = shields.released[self.read..].to_vec();
        self.read = shields.released.len();
        new
    }
}

impl Drop for ShieldWatch<'_> {
    fn drop(&mut self) {
        let mut shields = self.shields.lock();
        shields.watchers -= 1;
        if shields.watchers == 0 {
            shields.released = Vec::new();
        }
    }
}

/// The groups a [`visit`] has seen. Group ids are unique and handed out in
/// sequence, so one multiplication hashes them well (an odd multiplier
/// permutes the low bits, which pick the bucket); SipHash, the default,
/// cost more than the rest of a visit per group.
pub(crate) type IdSet = HashSet<GroupId, BuildHasherDefault<IdHasher>>;

/// A map keyed by group id, hashed as [`IdSet`] is.
pub(crate) type IdMap<V> = HashMap<GroupId, V, BuildHasherDefault<IdHasher>>;

/// See [`IdSet`].
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(ID_MULTIPLIER);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(ID_MULTIPLIER);
    }
}

/// 2^64 / the golden ratio, odd.
const ID_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Every group reachable from `root`, in [`visit`] order.
pub(crate) fn walk(root: &NodeRef) -> Vec<NodeRef> {
    let mut out = Vec::new();
    traverse(
        root,
        |_, _| ControlFlow::Continue(()),
        |node, _| out.push(node),
    );
    out
}

/// What a group's links were when a walk read them: how many were ever made
/// and how many are live. A link is only ever added by [`Links::push`]
/// (`made` grows) and taken away by a removal (`live` falls, and nothing
/// else raises it), so the same version read twice means no link was added
/// or removed in between. A group without a links table reads as the
/// default, as does a table with no link ever made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LinksVersion {
    made: u64,
    live: usize,
}

/// A walk of a tree for a shutdown: [`walk_versioned`].
pub(crate) struct VersionedWalk {
    /// The groups, in walk order.
    pub(crate) groups: Vec<NodeRef>,
    /// Each group's [`LinksVersion`] as the walk read its links (under the
    /// same lock).
    pub(crate) versions: Vec<LinksVersion>,
    /// For each group with links that stops its children together
    /// ([`Config::stop_children_together`]), where in `groups` it is and
    /// where the groups the walk reached through it end: `at..end`, in walk
    /// order. One inside another's range has none of its own: the outer
    /// one starts it.
    pub(crate) together: Vec<Range<usize>>,
}

/// Like [`walk`], with each group's [`LinksVersion`], and the ranges of
/// groups stopped together: the groups the walk reached through a group are
/// those that follow it with at least as many groups left below them on the
/// walk's stack as it had (see [`traverse`]).
pub(crate) fn walk_versioned(root: &NodeRef) -> VersionedWalk {
    let mut groups = Vec::new();
    let mut versions = Vec::new();
    let mut together = Together::default();
    // Whether the group just read starts a range: only a group with links
    // can have others below it, so a leaf (most of a tree) is not asked.
    let starts = Cell::new(false);
    traverse(
        root,
        |node, links| {
            let Some(links) = links else {
                versions.push(LinksVersion::default());
                return ControlFlow::Continue(());
            };
            versions.push(links.version());
            starts.set(node.config.stop_children_together);
            ControlFlow::Continue(())
        },
        |node, below| {
            if starts.get() || together.open.is_some() {
                together.at(groups.len(), below, starts.take());
            }
            groups.push(node);
        },
    );
    VersionedWalk {
        together: together.end(groups.len()),
        groups,
        versions,
    }
}

/// The ranges of a [`VersionedWalk`] stopped together, as the walk finds
/// them.
#[derive(Default)]
struct Together {
    ranges: Vec<Range<usize>>,
    /// The range being found: where it starts, and how many groups were
    /// left below its group on the walk's stack.
    open: Option<(usize, usize)>,
}

impl Together {
    /// The walk is at the group at `at`, with `below` groups left below it
    /// on the stack; `starts`: whether it stops its children together.
    #[cold]
    fn at(&mut self, at: usize, below: usize, starts: bool) {
        if let Some((start, under_top)) = self.open {
            if below >= under_top {
                return;
            }
            self.ranges.push(start..at);
            self.open = None;
        }
        if starts {
            self.open = Some((at, below));
        }
    }

    /// The walk ended, with `len` groups.
    fn end(mut self, len: usize) -> Vec<Range<usize>> {
        if let Some((start, _)) = self.open {
            self.ranges.push(start..len);
        }
        self.ranges
    }
}

/// Whether every group of a [`walk_versioned`] still has the links it had
/// then, each read under its lock in turn. If so, a walk now would find the
/// same groups in the same order: by induction from the root, each group's
/// links lead to the groups they led to. Cheaper than that walk: one lock
/// per group, no hashing, no copies.
pub(crate) fn links_unchanged(groups: &[NodeRef], versions: &[LinksVersion]) -> bool {
    debug_assert_eq!(groups.len(), versions.len(), "one walk's");
    groups.iter().zip(versions).all(|(node, version)| {
        let now = with_links(node, |links| {
            links.map_or_else(LinksVersion::default, |links| links.version())
        });
        now == *version
    })
}

/// Whether `target` is `root` or reachable from it.
pub(crate) fn reaches(root: &NodeRef, target: GroupId) -> bool {
    if root.id() == target {
        return true;
    }
    let mut found = false;
    visit(root, |node, _| {
        found = node.id() == target;
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Whether `root` and every group below it are idle.
pub(crate) fn tree_is_idle(root: &NodeRef) -> bool {
    let mut idle = true;
    visit(root, |node, _| {
        idle = node.len() == 0;
        if idle {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    });
    idle
}

/// Cancels `root`'s scope and every linked group's (`cancel()`, the first
/// failure with `cancel_on_error`, a deadline), giving each `reason` unless
/// it has one. Every reason is set before any token is cancelled: a group
/// made with `child()` is cancelled through its parent's scope, and a task
/// that sees its context cancelled must find the reason there.
pub(crate) fn cancel_tree(root: &NodeRef, reason: CancelReason) {
    // Each group's current generation, and those before it that a drain
    // ended (see `Later`): the same ones in both passes, held between them.
    // Each group's reason is set as the walk reaches it, before its links
    // are read, its scope marked as going: a child linked meanwhile is
    // either found by the walk or reads that reason as it is made (see
    // `Node::make_scoped_child` and `Node::make_child`).
    let mut held: Vec<Uncancelled> = Vec::new();
    let mut nodes = Vec::new();
    traverse_from(
        root,
        |node| {
            let uncancelled = node.uncancelled();
            node.each_of(&uncancelled, |tokens| tokens.set_scope_reason(&reason));
            held.push(uncancelled);
        },
        |_, _| ControlFlow::Continue(()),
        |node, _| nodes.push(node),
    );
    for (node, held) in nodes.iter().zip(&held) {
        node.each_of(held, |tokens| tokens.scope.cancel());
    }
    // Last: the reason may format a task's error, whose `Display` may panic.
    crate::trace::cancelled(&root.label, &reason);
}

/// Aborts the running `go()` tasks of `root` and of every group made below
/// it (`child()`, `scoped_child()`; not one `link()`ed there): what the last
/// handle of a group built with `abort_on_drop` takes with it. The groups
/// `child()` makes below inherit the setting but do not act on it
/// themselves ([`ABORT_ON_DROP`]): a request's child whose handle is dropped
/// while its work runs is the way a child is used, and aborts nothing. The
/// groups made form a tree: none is reached twice.
fn abort_made_below(root: &NodeRef) {
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        drop(node.abort_tasks(None));
        node.push_made_here(false, &mut stack);
    }
}

/// Scoped children reached by a cancel of their parent's context
/// ([`give_reason_below`]), with the generations of each to cancel.
type Reached = Vec<(NodeRef, Uncancelled)>;

/// Gives `roots` (scoped children whose parent's context is being cancelled
/// with `reason`) and the groups each made below it, `child()` or
/// `scoped_child()`, `reason`: not the groups `link()`ed there, which a cancel
/// of the context does not reach (their turn comes in a shutdown's order).
/// Returns them, for [`cancel_reached_scopes`] to cancel once the parent's context
/// is: their scopes hang off it, so its cancel reaches them, and it is
/// marked cancelled (under its token's lock, which `is_cancelled` takes)
/// before any of them is seen cancelled; a task waiting for its parts never
/// sees them stop for the cancel while its own context reads uncancelled.
/// A group whose scope is cancelled already is passed over with all below
/// it: whatever cancelled it gave them their reasons first (the caller's
/// token aside, which they read as theirs). So each group is walked once
/// however many cancels of the contexts above it follow (a shutdown cancels
/// each group's in turn). The groups made form a tree: none is reached
/// twice.
fn give_reason_below(roots: Vec<NodeRef>, reason: &CancelReason) -> Reached {
    let mut stack = roots;
    let mut reached = Vec::new();
    while let Some(node) = stack.pop() {
        if node.with_tokens(|tokens| tokens.scope.is_cancelled()) {
            continue;
        }
        // The reason before the links are read, as `cancel_tree` does: the
        // scope goes too (`cancel_reached_scopes`).
        let uncancelled = node.uncancelled();
        node.each_of(&uncancelled, |tokens| tokens.set_scope_reason(reason));
        node.push_made_here(false, &mut stack);
        reached.push((node, uncancelled));
    }
    reached
}

/// After their parent's context was cancelled: cancels the scopes of the
/// groups [`give_reason_below`] reached. That cancel reached them already,
/// but for a scoped child made from a context of an earlier generation of
/// the parent that nothing holds any more (a reopened group's drained
/// generation, its tasks gone), which no cancel of the parent reaches now:
/// it was given the reason, so it is cancelled too.
fn cancel_reached_scopes(reached: Reached) {
    for (node, held) in &reached {
        node.each_of(held, |tokens| tokens.scope.cancel());
    }
}

/// Starts the timer of a group with a deadline of its own: at the deadline
/// it cancels the group and the groups below it ([`CancelReason::Deadline`]).
/// The timer ends early once the group is released (no user handle left)
/// and idle, so a short-lived group with a long deadline is not kept for the
/// deadline's sake. Not when it is cancelled: a group cancelled and then
/// [reopened](crate::WaitGroup::reopen) before its deadline is cancelled at
/// it (before, the timer had ended at the cancel, and the reopened group's
/// tasks read a deadline nothing enforced).
pub(crate) fn start_deadline_timer(this: &NodeRef, runtime: &tokio::runtime::Handle) {
    let Some((at, released)) = this.own_deadline() else {
        return;
    };
    let node = this.clone();
    runtime.spawn(async move {
        tokio::select! {
            biased;
            _ = async {
                released.cancelled().await;
                node.state().wait_idle().await;
            } => {}
            _ = tokio::time::sleep_until(at) => {
                cancel_tree(&node, CancelReason::Deadline);
            }
        }
    });
}

/// Tells `root` and every group below it to drain (`WaitGroup::drain`).
pub(crate) fn drain_tree(root: &NodeRef) {
    for node in walk(root) {
        node.drain_this();
    }
}

/// After `child` was linked below `parent`: the groups below `child` are
/// bounded by `parent`'s deadline too.
pub(crate) fn inherit_deadline(parent: &NodeRef, child: &NodeRef) {
    let Some(at) = parent.deadline() else {
        return;
    };
    for node in walk(child) {
        let mut deadlines = node.extra().deadlines.lock();
        deadlines.inherited = Some(deadlines.inherited.map_or(at, |old| old.min(at)));
    }
}

/// Every failure recorded by `root` and the groups below it, in walk order:
/// each group's own, then those of its children that left it.
pub(crate) fn errors(root: &NodeRef) -> TaskErrors {
    let mut errors = TaskErrors::default();
    visit(root, |node, links| {
        add_errors(&mut errors, node, links);
        ControlFlow::Continue(())
    });
    errors
}

/// [`errors`] of `groups` (a [`walk`] made before), in their order: the
/// same as a fresh walk would read, without walking again.
pub(crate) fn errors_of(groups: &[NodeRef]) -> TaskErrors {
    let mut errors = TaskErrors::default();
    for node in groups {
        with_links(node, |links| add_errors(&mut errors, node, links));
    }
    errors
}

/// Adds a group's own failures with those of its children that left it, in
/// the order recorded, at most the group's `max_errors`.
fn add_errors(errors: &mut TaskErrors, node: &NodeRef, links: Option<&mut Links>) {
    let departed = links.map(|links| &links.departed);
    let max = node.config.max_errors;
    if let Some((kept, dropped)) = Failures::with_departed(node.own_errors(), departed, max) {
        errors.push_part(kept, dropped);
    }
}

/// [`errors`], if `root` and every group below it are idle, in one visit:
/// `None` as soon as a group is busy. Each group's count is read before its
/// failures, so a group read idle has its failures read after every `done`
/// it counted (see [`Node::own_errors`]).
pub(crate) fn errors_if_idle(root: &NodeRef) -> Option<TaskErrors> {
    let mut errors = TaskErrors::default();
    let mut idle = true;
    visit(root, |node, links| {
        if node.len() != 0 {
            idle = false;
            return ControlFlow::Break(());
        }
        add_errors(&mut errors, node, links);
        ControlFlow::Continue(())
    });
    idle.then_some(errors)
}

/// Like [`errors`], and removes them from the groups.
pub(crate) fn take_errors(root: &NodeRef) -> TaskErrors {
    let mut errors = TaskErrors::default();
    visit(root, |node, links| {
        let departed = links.map(|links| std::mem::take(&mut links.departed));
        let max = node.config.max_errors;
        let own = node.take_own_errors();
        if let Some((kept, dropped)) = Failures::with_departed(own, departed.as_ref(), max) {
            errors.push_part(kept, dropped);
        }
        ControlFlow::Continue(())
    });
    errors
}

/// How many guards and tasks are pending in `root` and the groups below it
/// (each group's count read in turn: no lock on its registry).
#[cfg_attr(not(all(unix, feature = "systemd")), allow(dead_code))]
pub(crate) fn tree_len(root: &NodeRef) -> usize {
    let mut len = 0;
    visit(root, |node, _| {
        len += node.len();
        ControlFlow::Continue(())
    });
    len
}

/// Every pending guard and task of `root` and the groups below it.
pub(crate) fn pending(root: &NodeRef) -> Vec<GroupPending> {
    pending_of(&walk(root))
}

/// The pending work of `groups` (a [`walk`] made just before), in order.
pub(crate) fn pending_of(groups: &[NodeRef]) -> Vec<GroupPending> {
    let now = Instant::now();
    let mut out = Vec::new();
    for node in groups {
        out.extend(node.pending(now));
    }
    out
}

/// [`pending_of`], with each group's [`Counters`] read with its listing
/// (see [`Node::pending_counted`]), in the order of `groups`.
pub(crate) fn pending_counted_of(groups: &[NodeRef]) -> (Vec<GroupPending>, Vec<Counters>) {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut counters = Vec::with_capacity(groups.len());
    for node in groups {
        // A group that never recorded anything (most idle groups of a tree)
        // has nothing to list, nor any removal to count.
        if node.registry.never_used() && node.len() == 0 {
            counters.push(Counters::default());
            continue;
        }
        let (pending, counted) = node.pending_counted(now);
        out.extend(pending);
        counters.push(counted);
    }
    (out, counters)
}

/// The key of `child` in `table`'s `links` if it is there as a `child()` of
/// that table's group (its `owner` says so, and the link is still there).
fn own_key(table: &Arc<Table>, links: &Links, child: &NodeRef) -> Option<u64> {
    let (owner, key) = child.owner.as_ref()?;
    let here = std::ptr::eq(owner.as_ptr(), Arc::as_ptr(table))
        && links.map.get(key).is_some_and(|l| Shared::ptr_eq(l, child));
    here.then_some(*key)
}

// ----- leaving a parent ------------------------------------------------------------

/// Removes a detached, idle, bare child from its parent, copying its
/// failures there; then does the same for the parent if that made it
/// leavable, and so on up (a loop, not recursion).
fn leave(start: &NodeRef) {
    let mut node = start.clone();
    loop {
        let Some((parent_table, key)) = &node.owner else {
            return;
        };
        // The parent is gone: nobody can wait for it, nothing to leave.
        let Some(parent_table) = parent_table.upgrade() else {
            return;
        };
        let removed;
        let parent_bare;
        {
            let mut links = parent_table.links.lock();
            let still_here = links.map.get(key).is_some_and(|l| Shared::ptr_eq(l, &node));
            if !still_here
                || node.hot.users.load(Ordering::Acquire) != 0
                || node.len() != 0
                || !node.is_bare()
            {
                return;
            }
            removed = links.map.remove(key);
            // Idle: every failure of the child is recorded by now. Lock
            // order: the parent's links, then the child's.
            let max = parent_table.max_errors;
            if let Some((kept, dropped)) = node.own_errors() {
                links
                    .departed
                    .absorb(kept.as_deref().map_or(&[], Vec::as_slice), dropped, max);
            }
            if let Some(table) = node.links_table() {
                let departed = std::mem::take(&mut table.links.lock().departed);
                links
                    .departed
                    .absorb(departed.kept(), departed.dropped, max);
            }
            parent_bare = links.map.is_empty();
        }
        // Outside the lock: this may be the last reference to the child.
        drop(removed);
        if !parent_bare {
            return;
        }
        // The parent may now be leavable in turn: find it in its own parent.
        let Some((grand_table, parent_key)) = &parent_table.owner else {
            return;
        };
        let Some(grand_table) = grand_table.upgrade() else {
            return;
        };
        let parent = grand_table.links.lock().map.get(parent_key).cloned();
        match parent {
            Some(parent) if parent.hot.users.load(Ordering::Acquire) == 0 && parent.len() == 0 => {
                node = parent
            }
            _ => return,
        }
    }
}

// ----- dropping without recursion ----------------------------------------------------

/// The values of one type whose drop a [`drop_in_loop`] further up this
/// thread's stack will run; `None` when no such loop runs.
pub(crate) type DropQueue<T> = RefCell<Option<Vec<T>>>;

/// A value that may own a chain of values of its own type (a group's links,
/// a container's members), dropped by [`drop_in_loop`] with a queue of its
/// own on each thread.
pub(crate) trait DropInLoop: Sized + 'static {
    /// This type's queue on the current thread.
    fn queue() -> &'static LocalKey<DropQueue<Self>>;
}

impl DropInLoop for NodeRef {
    fn queue() -> &'static LocalKey<DropQueue<Self>> {
        thread_local! {
            static QUEUE: DropQueue<NodeRef> = const { RefCell::new(None) };
        }
        &QUEUE
    }
}

/// Drops `items` in a loop rather than by recursion, so a chain of any
/// depth (a structure users build) is dropped on a constant stack: a value
/// dropped while a loop for its type runs on this thread is queued to it,
/// not dropped in place.
///
/// Either queues `items` to the loop already under way, or becomes that
/// loop: drops them, then whatever was queued meanwhile, batch after batch.
/// If a drop panics, the rest are dropped while the panic unwinds (as a
/// `Vec` drops its other elements; a second panic aborts, as it would
/// there), and no queue is left behind for later drops on this thread.
/// Where the thread's locals are gone (a drop at thread exit), `items` are
/// dropped in place.
pub(crate) fn drop_in_loop<T: DropInLoop>(items: impl IntoIterator<Item = T>) {
    let owner = T::queue().try_with(|queue| {
        let mut queue = queue.borrow_mut();
        let owner = queue.is_none();
        if owner {
            *queue = Some(Vec::new());
        }
        owner
    });
    match owner {
        Err(_) => return drop_all(items),
        Ok(false) => {
            // Moving the items in drops nothing, so the borrow is not reentered.
            T::queue().with(|queue| {
                let mut queue = queue.borrow_mut();
                queue.as_mut().expect("a loop runs").extend(items);
            });
            return;
        }
        Ok(true) => {}
    }
    /// Ends the loop, even if a drop panicked: takes the queue away and
    /// drops what is left in it.
    struct Done<T: DropInLoop>(std::marker::PhantomData<T>);
    impl<T: DropInLoop> Drop for Done<T> {
        fn drop(&mut self) {
            let rest = T::queue().with(|queue| queue.borrow_mut().take());
            drop(rest);
        }
    }
    let _done = Done::<T>(std::marker::PhantomData);
    drop_all(items);
    loop {
        let batch = T::queue().with(|queue| queue.borrow_mut().as_mut().map(std::mem::take));
        match batch {
            Some(batch) if !batch.is_empty() => drop(batch),
            _ => return,
        }
    }
}

/// Drops each of `items`, in order.
fn drop_all<T>(items: impl IntoIterator<Item = T>) {
    items.into_iter().for_each(drop);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A start caught between its count and its entry by the counters a
    /// shutdown counts from, however long it stays there (its thread lost
    /// its core): its end is counted finished once, by its entry's removal,
    /// not also by the fall of an unrecorded unit. Nothing puts it through
    /// while the counters are read; they were read again 64 times, then
    /// counted it twice.
    #[test]
    fn a_start_in_flight_as_the_counters_are_read_is_counted_once() {
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        // Counted, no entry yet: a `go()` between its two steps.
        let unit = node.add_task().0;
        let starts = node.counters();
        let site = std::panic::Location::caller();
        let entry = crate::registry::Entry::new(node.next_id(), None, crate::TaskKind::Guard, site);
        let guard = crate::guard::TaskGuard::new_with(unit, entry).0;
        drop(guard);
        assert_eq!(starts.finished_until(&node.counters()), 1);
    }

    /// An aborted task's end caught between its entry's removal (where its
    /// shutdown's watch lists it) and its count given up, by the counters a
    /// shutdown counts from: the task is listed aborted, and not counted
    /// finished too by the fall of an unrecorded unit.
    #[test]
    fn an_abort_landing_as_the_counters_are_read_is_not_counted_finished() {
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        let site = std::panic::Location::caller();
        let entry = crate::registry::Entry::new(node.next_id(), None, crate::TaskKind::Task, site);
        let mut guard = crate::guard::TaskGuard::new_with(node.add_task().0, entry).0;
        // Marked aborted (it has no abort handle, never spawned); its watch
        // expects it.
        let watch = node.abort_tasks(None);
        // `task::drop_aborted`'s steps, the counters read between the first
        // two: the entry removed and listed, then the count given up.
        let marked = guard.remove_aborted().expect("a recorded guard");
        let starts = node.counters();
        drop(guard);
        marked.expect("marked aborted").settle();
        assert_eq!(watch.take_aborted().len(), 1);
        assert_eq!(starts.finished_until(&node.counters()), 0);
    }

    /// The one step a shutdown takes for an idle group
    /// (`drain_and_cancel_own`) reaches both tokens, made or not: a token
    /// made before is cancelled, one asked for after is made cancelled,
    /// and the first reason given stays.
    #[test]
    fn one_step_drain_and_cancel_reaches_both_tokens_made_or_not() {
        // Neither token made: both bits set, both made cancelled later.
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        node.drain_and_cancel_own(CancelReason::Shutdown);
        assert!(node.tokens.drain.get().is_none() && node.tokens.own.get().is_none());
        assert!(node.tokens.drain().is_cancelled() && node.tokens.own().is_cancelled());
        assert!(matches!(node.tokens.reason(), Some(CancelReason::Shutdown)));

        // Both made: both cancelled, the drain signal too (a task's
        // `draining()` also ends on the context alone, so only this shows it).
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        let (drain, own) = (node.tokens.drain().clone(), node.tokens.own().clone());
        node.drain_and_cancel_own(CancelReason::Shutdown);
        assert!(drain.is_cancelled() && own.is_cancelled());

        // One made, one not; an earlier reason is kept.
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        let drain = node.tokens.drain().clone();
        node.tokens.set_reason(&CancelReason::Deadline);
        node.drain_and_cancel_own(CancelReason::Shutdown);
        assert!(drain.is_cancelled() && node.tokens.own().is_cancelled());
        assert!(matches!(node.tokens.reason(), Some(CancelReason::Deadline)));
    }

    /// Shielded sections: nested ones keep a task shielded until the last
    /// ends, with the latest budget; a watch hears of a task once, when its
    /// last section ends, and only of ends after it began; when the last
    /// watch stops, what it heard is freed, and a group whose sections all
    /// ended keeps no entry.
    #[test]
    fn shields_release_a_task_once_its_last_section_ends() {
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (a, b, c) = (TaskId(1), TaskId(2), TaskId(3));
        let slot = |n| Slot::from_u64(n);
        node.enter_shield(a, slot(10), at(5));
        node.enter_shield(a, slot(10), at(2)); // nested, shorter
        node.enter_shield(b, slot(11), at(3));
        node.enter_shield(c, slot(12), at(1));
        node.leave_shield(c, at(1)); // before any watch: not heard
        let shielded = node.shielded(t0);
        assert_eq!(shielded.len(), 2);
        assert_eq!(shielded[&a], (slot(10), at(5)), "the latest end");
        assert!(node.shielded(at(4)).contains_key(&a) && !node.shielded(at(4)).contains_key(&b));

        let mut first = node.watch_shields(t0);
        assert_eq!(first.shielded.len(), 2);
        node.leave_shield(a, at(2)); // the inner one: still shielded
        assert!(first.released().is_empty());
        let mut second = node.watch_shields(t0);
        node.leave_shield(b, at(3));
        node.leave_shield(a, at(5));
        node.leave_shield(a, at(5)); // not entered: ignored
        assert_eq!(first.released(), [b, a]);
        assert!(first.released().is_empty(), "each heard once");
        drop(first);
        assert_eq!(second.released(), [b, a]);
        drop(second);
        {
            let shields = node.extra().shields.lock();
            assert!(shields.open.is_empty() && shields.watchers == 0);
            assert_eq!(shields.released.capacity(), 0, "freed with the last watch");
        }

        // Room for the sections open now, not for the most there ever were.
        let many = if cfg!(miri) { 300 } else { 10_000 };
        for n in 0..many {
            node.enter_shield(TaskId(n), slot(n), at(1));
        }
        for n in 0..many {
            node.leave_shield(TaskId(n), at(1));
        }
        assert!(node.extra().shields.lock().open.capacity() <= 128);
    }

    /// A task queued for a slot that a shutdown marked for abort does not
    /// start when a slot comes before its abort is made (here: the running
    /// task, marked too, ends by itself between the marking and the
    /// aborts): it waits for its abort, listed as queued.
    #[tokio::test]
    async fn a_queued_task_marked_for_abort_does_not_start() {
        use std::sync::atomic::AtomicBool;
        let wg = crate::WaitGroup::builder().limit(1).build();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let running = wg.go(|_| async move {
            let _ = released.await;
        });
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let queued = wg.go(move |_| async move { flag.store(true, Ordering::SeqCst) });
        tokio::task::yield_now().await;
        let node = wg.node();
        let watch = node.abort_watch();
        let mut marked = crate::registry::Marked::default();
        node.registry
            .mark_all(&|_| false, &watch, &mut marked, false);
        release.send(()).unwrap();
        running.await.unwrap();
        // The slot went to the queued task, woken: a few turns of this one
        // thread run it.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(
            !started.load(Ordering::SeqCst),
            "it started past its marking"
        );
        assert!(wg.pending().tasks().any(|t| t.is_queued()));
        drop(marked);
        assert!(queued.await.unwrap_err().is_aborted());
        assert!(!started.load(Ordering::SeqCst));
    }

    /// A `child()` shares its parent's settings (the same allocation, not an
    /// equal copy), takes a name but no deadline of its own, and has a limit
    /// of the same size but its own slots.
    #[test]
    fn a_child_shares_its_parents_settings() {
        let parent = crate::WaitGroup::builder()
            .max_errors(3)
            .limit(2)
            .abort_on_drop(true)
            .record_guards(false)
            .build();
        let Settings::Shared(theirs) = &parent.node().config else {
            panic!("settings apart from the defaults are allocated");
        };
        let child = parent.task().name("one").child();
        let Settings::Shared(ours) = &child.node().config else {
            panic!("the child's settings are its parent's");
        };
        assert!(Arc::ptr_eq(theirs, ours));
        assert_eq!(child.name(), Some("one"));
        assert!(!child.node().record_guards());
        assert_eq!(child.node().deadline(), None);
        let (a, b) = (
            parent.node().slots.as_ref().unwrap(),
            child.node().slots.as_ref().unwrap(),
        );
        assert!(!Arc::ptr_eq(a, b), "each group has its own slots");
        assert_eq!(b.available_permits(), 2);
        // A grandchild of a default group shares the static defaults.
        let plain = crate::WaitGroup::new().child().child();
        assert!(matches!(plain.node().config, Settings::Default));
        assert!(plain.node().record_guards());
    }

    /// A lean group with the other settings at their defaults shares the
    /// static defaults (no allocation for its settings), and its children
    /// are lean too, unless built otherwise.
    #[test]
    fn a_lean_group_keeps_its_setting_in_the_node() {
        let lean = crate::WaitGroup::builder().record_guards(false).build();
        assert!(!lean.node().record_guards());
        assert!(matches!(lean.node().config, Settings::Default));
        let child = lean.child();
        assert!(!child.node().record_guards());
        assert!(matches!(child.node().config, Settings::Default));
        let recording = crate::WaitGroup::builder().build_child(&lean);
        assert!(recording.node().record_guards());
        let other = crate::WaitGroup::builder()
            .record_guards(false)
            .max_errors(3)
            .build();
        assert!(!other.node().record_guards());
        assert!(matches!(other.node().config, Settings::Shared(_)));
        assert_eq!(
            *other.node().config,
            Config {
                max_errors: 3,
                ..Config::DEFAULT
            },
            "settings hold nothing of record_guards"
        );
        assert!(crate::WaitGroup::new().node().record_guards());
        // Unrecorded guards are counted, not listed; a child's neither.
        let _a = lean.add();
        let _b = child.add();
        let pending = lean.pending();
        assert_eq!(pending.tasks().count(), 0);
        let unrecorded: Vec<usize> = pending.groups().iter().map(|g| g.unrecorded()).collect();
        assert_eq!(unrecorded, [1, 1]);
    }

    /// A reopened group keeps the generations of its tokens that something
    /// holds, not one per reopen: the current one, and those a drain ended
    /// while a context of theirs lives, which a cancel still reaches. The
    /// list of drained ones is pruned, so it stays bounded too.
    #[test]
    fn a_reopened_group_keeps_only_the_generations_held() {
        use crate::TaskContext;
        let wg = crate::WaitGroup::new();
        let node = wg.node();
        let held = |generation: &Generation| Arc::downgrade(generation.0.as_ref().unwrap());
        // Cancelled and reopened: nothing holds the generations before.
        let cancelled: Vec<Weak<Tokens>> = (0..100)
            .map(|_| {
                wg.cancel();
                wg.reopen();
                held(&node.generation())
            })
            .collect();
        let live = |gens: &[Weak<Tokens>]| gens.iter().filter(|g| g.strong_count() > 0).count();
        assert_eq!(live(&cancelled), 1, "the current one");
        // Drained and reopened, a context of each held: a cancel reaches
        // every one, the first generation (the node's own) too.
        let first = TaskContext::new(node.clone());
        node.drain_own();
        wg.reopen();
        let contexts: Vec<TaskContext> = (0..20)
            .map(|_| {
                let ctx = TaskContext::new(node.clone());
                node.drain_own();
                wg.reopen();
                ctx
            })
            .collect();
        assert!(contexts.iter().all(|ctx| !ctx.is_cancelled()));
        wg.cancel();
        assert!(first.is_cancelled());
        assert!(contexts.iter().all(|ctx| ctx.is_cancelled()));
        let drained: Vec<Weak<Tokens>> =
            contexts.iter().map(|ctx| held(ctx.generation())).collect();
        drop(contexts);
        assert_eq!(live(&drained), 0);
        // Drained and reopened again and again, nothing held: the list of
        // generations a cancel must reach is pruned.
        for _ in 0..1_000 {
            node.drain_own();
            wg.reopen();
        }
        let later = node.later.get().unwrap();
        assert!(later.gens.lock().drained.len() <= 8);
    }

    /// The node stays 376 B: with its scope token (112 B) an empty group is
    /// then 488 B, under issue 16's 512 B. It asks for no more alignment than
    /// malloc gives anyway, and whatever the node's 16-byte-aligned address,
    /// the cache line its state word is on holds nothing of another
    /// allocation nor any field after [`Hot`] (see [`Node`]).
    /// A group made in a scope ([`MADE_IN_A_SCOPE`]) is a scoped child, or
    /// a group made by one, at any depth and by either kind of child; not a
    /// plain child outside any scope, nor a group `link()`ed below a scoped
    /// child (made elsewhere), nor the group that made the scoped child.
    #[test]
    fn groups_made_in_a_scope_are_flagged_when_made() {
        let root = crate::WaitGroup::new();
        let plain = root.child();
        let scoped = root.scoped_child();
        let below = scoped.child();
        let deeper = below.scoped_child().child();
        let linked = crate::WaitGroup::new();
        scoped.link(&linked).unwrap();
        let flagged = |g: &crate::WaitGroup| g.node().was_made_in_a_scope();
        assert!(!flagged(&root) && !flagged(&plain) && !flagged(&plain.child()));
        assert!(flagged(&scoped) && flagged(&below) && flagged(&deeper));
        assert!(!flagged(&linked));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_node_fits_three_lines() {
        assert_eq!(std::mem::size_of::<Node>(), 376);
        assert!(std::mem::align_of::<Node>() <= 16);
        assert_eq!(std::mem::size_of::<Hot>(), 120);
        let group = crate::WaitGroup::new();
        let node: &Node = group.node();
        let base = std::ptr::addr_of!(*node) as usize;
        let word = std::ptr::from_ref(node.hot.state.word()) as usize - base;
        let after_hot = std::ptr::addr_of!(node.label) as usize - base;
        let hot = std::ptr::addr_of!(node.hot) as usize - base;
        assert_eq!(after_hot, hot + std::mem::size_of::<Hot>());
        // The line holding `word` starts at most 48 bytes before it (the
        // node's address is a multiple of 16) and ends at most 64 after
        // the 16-byte block it is in.
        let block = word - word % 16;
        assert!(block >= 48, "{word}");
        assert!(block + 64 <= after_hot, "{word} {after_hot}");
    }

    /// What a task recording its abort handle late is told: to keep it while
    /// the group is open or no shutdown walked it; while a shutdown waits
    /// for its aborts, to be aborted and counted in its watch; after, to be
    /// aborted if it was counted while the group was open (before the walk),
    /// until the group is reopened.
    #[test]
    fn late_abort_follows_the_shutdowns_aborting_the_group() {
        let keeps = |late: Late| matches!(late, Late::Keep);
        let wg = crate::WaitGroup::new();
        let node: &Node = wg.node();
        assert!(keeps(node.late_abort(true)));
        node.close();
        assert!(keeps(node.late_abort(true)));
        let watch = node.abort_watch();
        let phase = node.aborting(&watch);
        // Either way, in the watch of the shutdown waiting.
        for open in [true, false] {
            match node.late_abort(open) {
                Late::Abort(Some(given)) => assert!(Arc::ptr_eq(&given, &watch)),
                other => panic!("{other:?}"),
            }
        }
        // Nothing allocated in the registry of a group that recorded
        // nothing.
        assert_eq!(node.registry.retained_bytes(), 0);
        drop(phase);
        assert!(matches!(node.late_abort(true), Late::Abort(None)));
        assert!(keeps(node.late_abort(false)));
        wg.reopen();
        node.close();
        assert!(keeps(node.late_abort(true)));
    }

    /// The ranges of groups stopped together: a group shared by two parents
    /// is reached through the first; the groups reached through a group are
    /// those that follow it deeper than it; a group with the setting inside
    /// another's range has none of its own.
    #[test]
    fn a_walk_finds_the_groups_reached_through_each_that_stops_them_together() {
        use crate::WaitGroup;
        let together = || WaitGroup::builder().stop_children_together(true);
        let root = WaitGroup::new();
        let a = together().build_child(&root);
        let shared = WaitGroup::new();
        a.link(&shared).unwrap();
        let a1 = a.child();
        assert!(a1.node().config.stop_children_together, "inherited");
        let b = root.child();
        b.link(&shared).unwrap();
        let c = together().build_child(&b);
        let d = c.child();
        let e = b.child();
        let walk = walk_versioned(root.node());
        let ids: Vec<_> = walk.groups.iter().map(|n| n.id()).collect();
        assert_eq!(
            ids,
            [
                root.id(),
                a.id(),
                shared.id(),
                a1.id(),
                b.id(),
                c.id(),
                d.id(),
                e.id()
            ]
        );
        assert_eq!(walk.together, [1..4, 5..7]);
        // The root's range is the whole walk.
        let walk = walk_versioned(a.node());
        assert_eq!(walk.together, vec![Range { start: 0, end: 3 }]);
        // From b: b, shared, c, d, e.
        let walk = walk_versioned(b.node());
        assert_eq!(walk.together, vec![Range { start: 2, end: 4 }]);
        assert!(walk_versioned(WaitGroup::new().node()).together.is_empty());
    }

    /// A walk's versions tell whether any group of the walk had a link added
    /// or removed since, at any depth: an addition and a removal that leave
    /// as many links as before too, and a first link of a group that had
    /// none.
    #[test]
    fn links_unchanged_sees_every_link_added_or_removed() {
        use crate::WaitGroup;
        let root = WaitGroup::new();
        let middle = root.child();
        let leaf = middle.child();
        let shared = WaitGroup::new();
        root.link(&shared).unwrap();
        middle.link(&shared).unwrap();
        let unchanged = |f: &dyn Fn()| {
            let VersionedWalk {
                groups, versions, ..
            } = walk_versioned(root.node());
            let ids: Vec<_> = groups.iter().map(|n| n.id()).collect();
            assert_eq!(ids, [root.id(), middle.id(), leaf.id(), shared.id()]);
            assert!(links_unchanged(&groups, &versions), "nothing yet");
            f();
            links_unchanged(&groups, &versions)
        };
        assert!(unchanged(&|| {}));
        // Added below the leaf, which had no links table.
        let late = WaitGroup::new();
        assert!(!unchanged(&|| leaf.link(&late).unwrap()));
        assert!(leaf.unlink(&late));
        // Removed, then another added: as many links as before.
        let other = WaitGroup::new();
        assert!(!unchanged(&|| {
            assert!(middle.unlink(&shared));
            middle.link(&other).unwrap();
        }));
        assert!(middle.unlink(&other));
        middle.link(&shared).unwrap();
        // Removed only.
        assert!(!unchanged(&|| assert!(root.unlink(&shared))));
    }

    /// A group's first link is kept in place (a chain allocates nothing
    /// for its links' slots); the second moves both to a vector.
    #[test]
    fn a_link_map_keeps_its_first_link_in_place() {
        let nodes: Vec<NodeRef> = (0..3)
            .map(|_| crate::WaitGroup::new().node().clone())
            .collect();
        let mut map = LinkMap::default();
        map.insert(0, nodes[0].clone());
        assert!(matches!(map.slots, Slots::One(Some(_))));
        assert!(Shared::ptr_eq(map.get(&0).unwrap(), &nodes[0]));
        assert!(Shared::ptr_eq(&map.remove(&0).unwrap(), &nodes[0]));
        assert!(matches!(map.slots, Slots::One(None)) && map.is_empty());
        map.insert(1, nodes[1].clone());
        map.insert(2, nodes[2].clone());
        assert!(matches!(map.slots, Slots::Many(_)));
        assert_eq!(map.iter().map(|(key, _)| key).collect::<Vec<_>>(), [1, 2]);
        assert!(map
            .into_values()
            .zip(&nodes[1..])
            .all(|(n, m)| Shared::ptr_eq(&n, m)));
    }

    /// The links keep their order and keys through removals and the
    /// compactions they cause, and give back room once most are gone.
    #[test]
    fn a_link_map_keeps_order_through_removals() {
        let nodes: Vec<NodeRef> = (0..1_000)
            .map(|_| crate::WaitGroup::new().node().clone())
            .collect();
        let mut map = LinkMap::default();
        for (key, node) in nodes.iter().enumerate() {
            map.insert(key as u64, node.clone());
        }
        // Every key not a multiple of 3, in an order that compacts midway.
        for key in (0..1_000u64).rev().filter(|k| k % 3 != 0) {
            let removed = map.remove(&key).expect("linked");
            assert!(Shared::ptr_eq(&removed, &nodes[key as usize]));
            assert!(map.remove(&key).is_none(), "removed once");
        }
        let left: Vec<u64> = map.iter().map(|(key, _)| key).collect();
        let expected: Vec<u64> = (0..1_000).filter(|k| k % 3 == 0).collect();
        assert_eq!(left, expected);
        assert!(map
            .values()
            .zip(&expected)
            .all(|(n, k)| Shared::ptr_eq(n, &nodes[*k as usize])));
        assert!(Shared::ptr_eq(map.get(&999).unwrap(), &nodes[999]));
        assert!(map.get(&998).is_none() && map.get(&5_000).is_none());
        map.insert(1_000, nodes[0].clone());
        assert_eq!(map.iter().next_back().map(|(key, _)| key), Some(1_000));
        for key in expected {
            map.remove(&key).expect("linked");
        }
        assert!(!map.is_empty());
        map.remove(&1_000).expect("linked");
        assert!(map.is_empty());
        assert!(map.slots.capacity() <= 8, "{}", map.slots.capacity());
    }

    /// The room a thread's walks keep between visits: kept after a tree
    /// that fits, given back after one that does not.
    #[test]
    fn walks_keep_bounded_room() {
        fn room() -> usize {
            SCRATCH.with(|cell| {
                let scratch = cell.take();
                let room = scratch.seen.capacity().max(scratch.stack.capacity());
                cell.set(scratch);
                room
            })
        }
        let tree = |children: usize| {
            let root = crate::WaitGroup::new();
            let kept: Vec<_> = (0..children).map(|_| root.child()).collect();
            (root, kept)
        };
        let small = SCRATCH_KEPT / 4;
        let (root, _kept) = tree(small);
        assert_eq!(walk(root.node()).len(), small + 1);
        let kept = room();
        assert!((small + 1..=SCRATCH_KEPT).contains(&kept), "{kept}");
        let (big, _kept) = tree(SCRATCH_KEPT * 2);
        assert_eq!(walk(big.node()).len(), SCRATCH_KEPT * 2 + 1);
        assert_eq!(room(), 0, "a big tree's room is given back");
    }

    /// An instant goes into the word and comes back exact, on either side
    /// of the origin and thirty years ahead; `None` too.
    #[test]
    fn abort_at_keeps_an_instant_exactly() {
        let word = AbortAt::none();
        assert_eq!(word.get(), None);
        let origin = AbortAt::origin();
        let far = Duration::from_secs(60 * 60 * 24 * 365 * 30) + Duration::from_nanos(7);
        let mut instants = vec![origin, origin + Duration::from_nanos(1), origin + far];
        instants.extend(origin.checked_sub(Duration::from_millis(1_500)));
        for at in instants {
            word.set(Some(at));
            assert_eq!(word.get(), Some(at));
        }
        word.set(None);
        assert_eq!(word.get(), None);
    }
}
