//! Test-only modules of the library: the loom models of the state word, the
//! event and the reference count (run by `scripts/proofs` under
//! `--cfg loom`). They live here, not among the production modules.

#[cfg(loom)]
mod loom_drain;
#[cfg(loom)]
mod loom_event;
#[cfg(loom)]
mod loom_models;
#[cfg(loom)]
mod loom_node;
