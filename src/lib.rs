//! Start work, wait for it, close it cleanly.
//!
//! `taskgroup` is for the lifecycle of long-running tokio services: a server's
//! `start()` registers work, its `close()` drains it within a deadline, and
//! nested parts (listener, connections, database pool, log flusher) stop in
//! order. One type, [`WaitGroup`], does the bookkeeping:
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::{ShutdownReport, TaskGuard, WaitGroup};
//!
//! struct Server { wg: WaitGroup, listener: Option<TaskGuard> }
//!
//! impl Server {
//!     fn start() -> Self {
//!         let wg = WaitGroup::builder().name("server").build();
//!         let listener = Some(wg.task().name("listener").add()); // completed in close()
//!         wg.task().name("conn").go(|ctx| async move {         // errors and panics kept
//!             ctx.cancelled().await;                            // drain on shutdown
//!         });
//!         Server { wg, listener }
//!     }
//!     async fn close(&mut self) -> ShutdownReport {
//!         drop(self.listener.take());
//!         self.wg.shutdown(Duration::from_secs(5)).await     // close, cancel, wait, abort
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut server = Server::start();
//! let report = server.close().await;
//! assert!(report.is_clean(), "{report}");
//! # }
//! ```
//!
//! # The types, by role
//!
//! **A group and its work**
//! * [`WaitGroup`] — the group: a cheap handle; waits, closes, cancels, links
//!   groups below it, shuts them down in order under one deadline. Below it:
//!   [`child`](WaitGroup::child) groups, stopped after its own work, and
//!   [`scoped_child`](WaitGroup::scoped_child) groups (a request's fan-out
//!   its handler waits for), stopped with it.
//!   [`WaitGroupBuilder`] configures one (name, `cancel_on_error`, `limit`,
//!   `max_errors`, `abort_timeout`, a caller's token, ...).
//! * [`TaskBuilder`] — one unit of work, from [`WaitGroup::task`]: its name,
//!   whether its failure cancels the group ([`critical`](TaskBuilder::critical)),
//!   and where it runs: a guard ([`add`](TaskBuilder::add)), a task
//!   ([`go`](TaskBuilder::go)), blocking ([`spawn_blocking`](TaskBuilder::spawn_blocking)),
//!   local ([`spawn_local`](TaskBuilder::spawn_local)), another runtime
//!   ([`spawn_on`](TaskBuilder::spawn_on)), a future you poll
//!   ([`track_future`](TaskBuilder::track_future)), a child group.
//!   [`WaitGroup::add`], [`try_add`](WaitGroup::try_add), [`go`](WaitGroup::go)
//!   and [`try_go`](WaitGroup::try_go) are the short forms.
//! * [`TaskGuard`] — pending work you complete yourself, by `done()` or drop.
//! * [`TaskContext`] — what a task receives: the drain signal, the cancel
//!   signal (it dereferences to the group's [`CancellationToken`]), its
//!   deadline, shielded sections for cleanup, and a
//!   [scoped child](TaskContext::scoped_child) to fan out into.
//! * [`TaskHandle`] — what spawning returns: await it for the task's value
//!   ([`TaskOutput`]: `()` or `Result<T, E>`), or abort that one task;
//!   [`JoinError`] says why there is no value. [`Tracked`] is a tracked future.
//!
//! **What happened**
//! * [`TaskErrors`] / [`TaskError`] — every failure (error or panic) with the
//!   task's identity; nothing is lost ([`DEFAULT_MAX_ERRORS`] kept per group,
//!   the rest counted).
//! * [`PendingReport`], [`GroupPending`], [`TaskInfo`], [`TaskKind`] — what is
//!   still pending: id, name, creation site, age, group.
//! * [`ShutdownReport`] — what a shutdown finished, aborted, left pending;
//!   [`ShutdownError`] is an unclean one as an error, for `?`.
//! * [`CancelReason`] — why a group was cancelled; failures after it are
//!   [secondary](TaskError::is_secondary).
//! * [`WaitError`], [`Closed`], [`TryGoError`], [`LinkError`] — why a call
//!   did not do what was asked. [`GroupId`] and [`TaskId`] identify groups and
//!   work.
//!
//! **Modules**
//! * [`shutdown`] — [`Grace`](shutdown::Grace) (drain, then cancel),
//!   [`ShutdownPlan`](shutdown::ShutdownPlan), its
//!   [`Phase`](shutdown::Phase)s and [`Readiness`](shutdown::Readiness) for
//!   Kubernetes and systemd, and the signals that start a shutdown:
//!   [`ShutdownPlan::run_on_signal`](shutdown::ShutdownPlan::run_on_signal)
//!   (the first SIGINT or SIGTERM runs the plan, a second forces) and
//!   [`shutdown_signal`](shutdown::shutdown_signal).
//! * [`dump`] — the live task tree ([`WaitGroup::dump`]): groups, their state
//!   and pending work, as text or versioned JSON, on demand or on SIGUSR1.
//! * [`testing`] — for tests: fail, naming creation sites, when a test
//!   leaves work behind ([`assert_quiescent`](testing::assert_quiescent),
//!   [`QuiescenceGuard`](testing::QuiescenceGuard)).
//! * [`service`] — long-running services as a group that fails together, an
//!   ordered sequence, under restart policies, with status events.
//! * `taskgroup::http` (features `hyper`, `axum`) — HTTP servers whose
//!   connections are tasks of a group, drained and aborted by its shutdown; a
//!   tower layer that makes each request a named guard.
//! * `taskgroup::systemd` (feature `systemd`) — readiness, stopping, and more
//!   time while a drain makes progress.
//!
//! # Compared with the alternatives
//!
//! | | `taskgroup` | tokio-util `TaskTracker` | tokio `JoinSet` | `tokio-graceful-shutdown` |
//! |---|---|---|---|---|
//! | guard kept in a struct | [`TaskGuard`] with id, name, site | `TaskTrackerToken` | no | no |
//! | task values | [`TaskHandle`] | `JoinHandle` | joined one by one | no |
//! | failures | all kept with the task's identity | no | `JoinError` one by one | `Failed`/`Panicked` with the name |
//! | wait on an empty group | returns at once | needs `close()` first | `join_next` → `None` | n/a |
//! | wait with a deadline | report of what is pending | wrap in `timeout`; `len()` | wrap in `timeout` | top level only |
//! | concurrency limit | [`limit`](WaitGroupBuilder::limit), queued tasks reported | no | no | no |
//! | nested groups | `scoped_child` (stopped with its parent), `child`/`link` (after it), one shared deadline | no | no | subsystem tree, stopped together |
//! | a nested failure | cancels its own group (`cancel_on_error`), kept by the parent | n/a | n/a | stops the whole tree |
//! | abort after grace | `shutdown`, with a report | no | `abort_all` | yes |
//! | blocking wait | `wait_blocking` | no | no | no |
//!
//! Moving from one of them: `docs/MIGRATING.md` maps each one's concepts to
//! this crate's, with the programs side by side, and lists the pitfalls.
//!
//! # Feature flags and runtime
//!
//! * `tracing` (off by default): each spawned task runs in a `task` span with
//!   its group, name and id; closing and cancelling a group, a task failure, a
//!   timed-out wait (with its pending report), an abort, the end of a shutdown
//!   and service transitions are logged as events. Without the feature none of
//!   this code is compiled.
//! * `serde` (off by default): `Serialize` for the reports ([`ShutdownReport`],
//!   [`PendingReport`] and their parts), the errors ([`TaskErrors`],
//!   [`TaskError`], [`WaitError`]), [`CancelReason`] and the shutdown
//!   [`Signal`](shutdown::Signal), the ids, the [task-tree dump](dump) and the
//!   service status events; the JSON shapes are documented on those types.
//! * `tokio-console` (off by default): spawned tasks carry their names for
//!   tokio-console, through tokio's task builder; like tokio-console itself
//!   it needs `RUSTFLAGS="--cfg tokio_unstable"`, and does nothing without.
//! * `systemd` (off by default, Unix only, no extra dependency): the
//!   `taskgroup::systemd` module, to tell systemd the service is ready
//!   or stopping, and to extend its stop timeout while a drain makes progress.
//! * `hyper` (off by default): `taskgroup::http`: `serve` (the accept loop and each
//!   connection as tasks of a group, HTTP/1 and HTTP/2 over hyper-util) and
//!   the `TrackRequests` tower layer. Pulls in hyper, hyper-util, http,
//!   http-body and tower's service and layer traits.
//! * `axum` (off by default; implies `hyper`): `http::serve_router` for an
//!   axum `Router` (`examples/axum_server`, and with `serde`
//!   `examples/health.rs`).
//!
//! Spawning needs a Tokio runtime; the deadline variants need Tokio's time
//! driver, and use Tokio's clock, so paused time in tests applies to them.
//!
//! # Unsafe code
//!
//! One private module uses `unsafe`: the group's memory is reference-counted
//! by its state word, which also counts the pending tasks, so that a lean
//! guard ([`record_guards(false)`](WaitGroupBuilder::record_guards)) costs
//! one atomic step to create and one to complete (an `Arc` would add a
//! second counter on another cache line). Its invariant is written out in the
//! module, and it is model-checked with loom (every interleaving of the last
//! handle, the last task and a waiter, freed exactly once and never used
//! after) and run under Miri with the test suite (`docs/RELIABILITY.md`).
//! `unsafe_code` is denied everywhere else.

#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod context;
mod drain;
mod error;
mod event;
mod guard;
mod label;
mod node;
mod pruned;
mod reason;
mod registry;
mod report;
#[cfg(feature = "serde")]
mod serde_impl;
// The one module with `unsafe`: a reference count in the state word (see its docs).
#[allow(unsafe_code)]
mod shared;
mod state;
mod sync;
mod task;
#[cfg(test)]
mod tests;
mod trace;
mod wait_group;

pub mod dump;
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod http;
pub mod service;
pub mod shutdown;
#[cfg(all(unix, feature = "systemd"))]
#[cfg_attr(docsrs, doc(cfg(all(unix, feature = "systemd"))))]
pub mod systemd;
pub mod testing;

// A group and its work.
pub use context::TaskContext;
pub use guard::TaskGuard;
pub use task::{JoinError, TaskHandle, TaskOutput, Tracked};
#[doc(no_inline)]
pub use tokio_util::sync::CancellationToken;
pub use wait_group::{TaskBuilder, WaitGroup, WaitGroupBuilder, DEFAULT_MAX_ERRORS};

// What happened.
pub use error::{
    BoxError, Closed, ErrorsIter, LinkError, TaskError, TaskErrors, TryGoError, WaitError,
};
pub use label::{GroupId, TaskId};
pub use reason::CancelReason;
pub use report::{GroupPending, PendingReport, ShutdownError, ShutdownReport, TaskInfo, TaskKind};

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The migration guide's programs, the same way (its HTTP ones need `axum`).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../docs/MIGRATING.md")]
struct MigratingDoctests;
