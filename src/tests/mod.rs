//! Test-only modules of the library: the loom models of the state word, the
//! event, the reference count and a member's end against its container's drop
//! (run by `scripts/proofs` under `--cfg loom`). They live here, not among the
//! production modules.

#[cfg(loom)]
mod loom_drain;
#[cfg(loom)]
mod loom_event;
#[cfg(loom)]
mod loom_exit;
#[cfg(loom)]
mod loom_models;
#[cfg(loom)]
mod loom_node;
