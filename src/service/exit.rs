//! How a member run's future ended, and who reports that end once its container is gone:
//! the hand-off between a member's task and its container's `Drop`
//! ([`Spawned::leave`](super::runner::Spawned::leave)).
//!
//! Its word and locks are `crate::sync` types, so the loom model of the hand-off
//! (`src/tests/loom_exit.rs`, run by `scripts/proofs`) explores them.

use crate::sync::{AtomicU8, Mutex, Ordering};

use super::runner::End;

/// How a member run's future ended, and who reports that end if its container is gone.
///
/// A container reports each member's end as it takes it. A container whose future is
/// dropped cannot wait for the members it has not taken yet: it hands their reports to the
/// members themselves ([`Spawned::leave`](super::runner::Spawned::leave)), which make them
/// as their futures return, panic or are dropped (aborted). Without it, a member that
/// returned an error on another worker just after the container looked was reported
/// `Stopped`, its failure nowhere.
///
/// # Invariants
///
/// - The member sets one end bit (`RETURNED`, `PANICKED` or `DROPPED`), once, with a
///   `fetch_or` ([`ended`](Self::ended)); what the end carries (the error in the run's slot,
///   the panic's message) is written before it.
/// - `GONE` is set once, by the first container to leave ([`leave`](Self::leave)), with a
///   `fetch_or` made under the heir's lock, after the heir is stored there.
/// - The two `fetch_or`s are on one word, so one comes second and sees the other's bit:
///   the member, if second, takes the heir (under the lock, so after it was stored) and
///   reports through it; the container, if second, reports the end itself and drops the
///   heir. Exactly one reports (loom: `src/tests/loom_exit.rs`).
/// - The heir is dropped or called outside the lock.
pub(crate) struct Exit {
    /// `RETURNED`, `PANICKED` or `DROPPED` once the future ended (one of them), and `GONE`
    /// once the container left the report to the member.
    state: AtomicU8,
    /// The panic's message, set before `PANICKED` (the core records the panic only after
    /// the future is dropped, too late for a report read on another thread meanwhile).
    pub(crate) panic: Mutex<Option<String>>,
    /// Who reports the end once `GONE`: set before `GONE`, taken by the member.
    heir: Mutex<Option<Heir>>,
}

/// What a member reports its own end with once its container is gone.
pub(crate) type Heir = Box<dyn FnOnce(End) + Send>;

/// The future returned, its error (if any) handed over first.
pub(crate) const RETURNED: u8 = 1;
/// The future, or the factory that made it, panicked.
pub(crate) const PANICKED: u8 = 2;
/// The future was dropped before it returned (aborted, or its runtime shut down), or never
/// started: its container was gone before it first ran.
pub(crate) const DROPPED: u8 = 4;
/// The container left the report of the end to the member ([`Exit::leave`]).
pub(crate) const GONE: u8 = 8;

impl std::fmt::Debug for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exit")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Exit {
    /// The exit of a run that has not ended, and whose report nobody left to it.
    pub(crate) fn new() -> Self {
        Exit {
            state: AtomicU8::new(0),
            panic: Mutex::new(None),
            heir: Mutex::new(None),
        }
    }

    /// Whether the run's future returned or panicked, rather than being aborted or dropped.
    pub(crate) fn on_its_own(&self) -> bool {
        self.state.load(Ordering::Acquire) & (RETURNED | PANICKED) != 0
    }

    /// Whether the run's future returned (not panicked, not aborted).
    pub(crate) fn returned(&self) -> bool {
        self.state.load(Ordering::Acquire) & RETURNED != 0
    }

    /// Whether a container left the report of the end to the run: it is gone.
    pub(crate) fn left(&self) -> bool {
        self.state.load(Ordering::Acquire) & GONE != 0
    }

    /// The member's side: its future ended `how` (once; a panic's message set first).
    /// Returns the heir if the container left the report to it: the caller reports.
    pub(crate) fn ended(&self, how: u8) -> Option<Heir> {
        let before = self.state.fetch_or(how, Ordering::AcqRel);
        if before & GONE == 0 {
            return None;
        }
        self.heir.lock().take()
    }

    /// The container's side: leaves the report of the end to `heir` unless the run ended
    /// already. Returns how it ended if it had (the caller reports, and `heir` is dropped);
    /// `None` if `heir` will be called when it ends, or if the report was left already.
    pub(crate) fn leave(&self, heir: Heir) -> Option<u8> {
        let mut left = self.heir.lock();
        if self.state.load(Ordering::Acquire) & GONE != 0 {
            return None;
        }
        *left = Some(heir);
        let before = self.state.fetch_or(GONE, Ordering::AcqRel);
        if before & (RETURNED | PANICKED | DROPPED) == 0 {
            return None;
        }
        let heir = left.take();
        drop(left);
        drop(heir);
        Some(before)
    }
}
