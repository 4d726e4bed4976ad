//! Start work, wait for it, close it cleanly.
//!
//! `taskgroup` is for the lifecycle of long-running tokio services: a server's
//! `start()` registers work, its `close()` drains it within a deadline, and
//! nested parts (listener, connections, database pool, log flusher) stop in
//! order. One type, [`WaitGroup`], does the bookkeeping:
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::{TaskGuard, WaitGroup};
//!
//! struct Server { wg: WaitGroup, listener: Option<TaskGuard> }
//!
//! impl Server {
//!     fn start() -> Self {
//!         let wg = WaitGroup::builder().name("server").build();
//!         let listener = Some(wg.task().name("listener").add());    // completed in close()
//!         wg.task().name("conn").go(|ctx| async move {            // errors and panics kept
//!             ctx.cancelled().await;                        // drain on shutdown
//!             Ok::<_, std::io::Error>(())
//!         });
//!         Server { wg, listener }
//!     }
//!     async fn close(&mut self) -> taskgroup::ShutdownReport {
//!         drop(self.listener.take());
//!         self.wg.shutdown(Duration::from_secs(5)).await
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
//! # What it does
//!
//! * **Guards** — [`WaitGroup::add`] returns a [`TaskGuard`] that can be kept
//!   in a struct and completed later by [`TaskGuard::done`] or drop. Each has an
//!   id, an optional name and the place it was created.
//! * **Tasks** — [`WaitGroup::go`] spawns a task that receives the group's
//!   [`CancellationToken`](tokio_util::sync::CancellationToken) and returns a
//!   `Result`. Every error and panic is kept, with the task's identity, and
//!   returned by [`WaitGroup::wait`] as [`TaskErrors`]. With
//!   [`WaitGroupBuilder::cancel_on_error`] the first failure cancels the rest (Go's
//!   `errgroup`).
//! * **Links** — [`WaitGroup::link`] and [`WaitGroup::child`] attach groups
//!   below a group; its waits and shutdowns then cover them, in order.
//! * **Deadlines** — [`WaitGroup::wait_timeout`] returns a [`PendingReport`]
//!   naming every unfinished guard and task; [`WaitGroup::shutdown`] closes,
//!   cancels, waits, aborts stragglers and returns a [`ShutdownReport`].
//! * **Blocking** — [`WaitGroup::wait_blocking`] for `Drop` impls and
//!   synchronous code, outside any runtime.
//! * **Orchestrators** — [`shutdown::ShutdownPlan`] runs the phases
//!   Kubernetes and systemd expect (stop being
//!   [ready](shutdown::Readiness), pre-stop delay, drain, abort, close
//!   resources in order) around [`WaitGroup::shutdown`].
//! * **Services** — the [`service`] module runs long-running services as a
//!   group that fails together, as an ordered sequence (start in order, stop
//!   in reverse), under restart policies with backoff and limits, with status
//!   events and OS signal handling.
//!
//! # Compared with the alternatives
//!
//! | | `taskgroup` | tokio-util `TaskTracker` | tokio `JoinSet` | `tokio-graceful-shutdown` |
//! |---|---|---|---|---|
//! | guard kept in a struct | [`TaskGuard`] with id, name, site | `TaskTrackerToken` | no | no |
//! | tasks returning `Result` | yes, all errors kept | no (`JoinHandle`) | yes, joined one by one | yes |
//! | panics | error with the task's name and id | token dropped | `JoinError` | `Panicked(name)` |
//! | wait on an empty group | returns at once | needs `close()` first | `join_next` → `None` | n/a |
//! | wait with a deadline | report of what is pending | wrap in `timeout`; `len()` | wrap in `timeout` | top level only |
//! | nested groups, ordered teardown | `link`/`child`, one shared deadline | no | no | subsystem tree, unordered |
//! | abort after grace | `shutdown` | no | `abort_all` | yes |
//! | blocking wait | `wait_blocking` | no | no | no |
//!
//! # Feature flags and runtime
//!
//! * `tracing` (off by default): each `go()` task runs in a `task` span with
//!   its group, name and id; closing and cancelling a group, a task failure, a
//!   timed-out wait (with its pending report), an abort, the end of a shutdown
//!   and a service restart are logged as events. Without the feature none of
//!   this code is compiled.
//!
//! `go()` needs to be called inside a Tokio runtime; the deadline variants
//! need Tokio's time driver, and use Tokio's clock, so paused time in tests
//! applies to them.
//!
//! # Unsafe code
//!
//! One private module uses `unsafe`: the group's memory is reference-counted
//! by its state word, which also counts the pending tasks, so that a guard
//! costs one atomic step to create and one to complete (an `Arc` would add a
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
mod registry;
mod report;
// The one module with `unsafe`: a reference count in the state word (see its docs).
#[allow(unsafe_code)]
mod shared;
mod signals;
mod state;
mod sync;
mod task;
#[cfg(test)]
mod tests;
mod trace;
mod wait_group;

pub mod service;
pub mod shutdown;

pub use context::TaskContext;
pub use error::{
    BoxError, Closed, ErrorsIter, LinkError, TaskError, TaskErrors, TryGoError, WaitError,
};
pub use guard::TaskGuard;
pub use label::{GroupId, TaskId};
pub use report::{GroupPending, PendingReport, ShutdownReport, TaskInfo, TaskKind};
pub use task::{JoinError, TaskHandle, TaskOutput, Tracked};
pub use wait_group::{TaskBuilder, WaitGroup, WaitGroupBuilder, DEFAULT_MAX_ERRORS};

#[doc(no_inline)]
pub use tokio_util::sync::CancellationToken;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
