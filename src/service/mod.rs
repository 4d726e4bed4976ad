//! Run, sequence, restart and supervise long-running services.
//!
//! A [`Service`] is a named unit of long-running work (a server, a consumer, an exporter)
//! that runs until its [`CancellationToken`] is cancelled and reports [`Ready`] once it can
//! serve. On top of it:
//!
//! - [`service_fn`], [`run_teardown`], [`blocking_run_teardown`]: services from closures, or
//!   from a run + teardown pair (the run's error is never lost);
//! - [`ServiceGroup`]: start all at once; the first failure (error, panic, or early exit) stops the
//!   rest; stop under one deadline; every error reported as `name: error`; a member added
//!   with [`ServiceGroupBuilder::ending`] ends the group when it returns (oklog/run);
//! - [`Sequence`]: start in order, each once the previous is ready; stop in reverse;
//! - [`Restarter`] and [`Supervisor`]: restart by [`RestartPolicy`], with [`Backoff`] and an
//!   [`Intensity`] limit that escalates;
//! - [`TasksService`]: a [`WaitGroup`](crate::WaitGroup) and its `go()` tasks as a member,
//!   stopped by its `shutdown`, whose report is the stop result;
//! - [`StatusHub`]: every transition as a [`StatusEvent`], plus a snapshot
//!   ([`StatusWatch`]); one hub on the outermost container sees every member at any depth;
//! - [`SignalService`]: SIGINT/SIGTERM, graceful then forced (the signals themselves are in
//!   [`taskgroup::shutdown`](crate::shutdown)).
//!
//! Groups, sequences, restarters and the signal wrapper are services themselves, so they
//! nest.
//!
//! # On the core
//!
//! Every member run is a `go()` task of the core, in a child
//! [`WaitGroup`](crate::WaitGroup) per member run below the outermost container's group, so
//! the core's guarantees hold here too: a panic anywhere in a member (its `run`, its future,
//! the future's `Drop`, a panic payload's `Drop`) is recorded and becomes a reported member
//! failure, never a hang or a crash of the container; the container's stop report is the
//! core's pending report of the whole tree, naming every hung leaf by its path
//! (`app/backend/db`), where it was added and its age. A nested container's stop deadline is
//! never later than its parent's, and the parent lets it report before aborting it; what a
//! nested container collected (its members' failures) is in the report even when it is
//! aborted before it returns.
//!
//! `Duration::MAX` is accepted wherever a duration is (stop and start timeouts, backoff,
//! intensity window) and means "no limit". Every container without members is valid: it
//! reports ready and returns `Ok` at once. `serve` on a running container returns
//! [`ServiceError::AlreadyRunning`]. Errors are [`ServiceError`] (what went wrong at run time) and [`ConfigError`]
//! (invalid settings, reported when building).
//!
//! # Under a shutdown plan
//!
//! [`SignalService`] stops a tree on SIGINT/SIGTERM; for a
//! [`ShutdownPlan`](crate::shutdown::ShutdownPlan)'s phases (readiness off, a pre-stop delay,
//! systemd's `STOPPING=1`, a report of what did not stop), run the outermost container as a
//! `go()` task of a [`WaitGroup`](crate::WaitGroup) with the task's token, and run the plan on
//! that group: its cancel stops the container, which stops its members in its own order under
//! its own stop timeout (give the plan a grace longer than that), and the container's error,
//! if any, is the task's failure in the plan's report.
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::service::{service_fn, Ready, Sequence};
//! use taskgroup::shutdown::{Readiness, ShutdownPlan};
//! use taskgroup::WaitGroup;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let part = |name: &'static str| {
//!     service_fn(name, |ctx: CancellationToken, ready: Ready| async move {
//!         ready.ready();
//!         ctx.cancelled().await;
//!         Ok(())
//!     })
//! };
//! let mut daemon = Sequence::builder("daemon")
//!     .service(part("flusher"))
//!     .service(part("db"))
//!     .service(part("consumer"))
//!     .stop_timeout(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! let group = WaitGroup::builder().name("daemon").build();
//! group
//!     .task()
//!     .name("daemon")
//!     .go(move |ctx| async move { daemon.serve(ctx.token().clone()).await });
//! let readiness = Readiness::new();
//! readiness.set_ready();
//! let plan = ShutdownPlan::new(Duration::from_secs(10))
//!     .readiness(readiness.clone())
//!     .pre_stop_delay(Duration::from_secs(1));
//! // In the daemon: `plan.run_on_signal(&group).await`.
//! let report = plan.run(&group).await;
//! assert!(report.is_clean(), "{report}");
//! assert!(!readiness.is_ready());
//! # }
//! ```
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::service::{service_fn, ServiceGroup, Ready, Sequence};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let server = |name: &'static str| {
//!     service_fn(name, |ctx: CancellationToken, ready: Ready| async move {
//!         ready.ready();
//!         ctx.cancelled().await;
//!         Ok(())
//!     })
//! };
//! let backend = Sequence::builder("backend")
//!     .service(server("db"))
//!     .service(server("cache"))
//!     .build()
//!     .unwrap();
//! let mut app = ServiceGroup::builder("app")
//!     .service(backend)
//!     .service(server("http"))
//!     .service(service_fn("job", |_ctx, _ready| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Err("disk full".into())
//!     }))
//!     .build()
//!     .unwrap();
//! let err = app.serve(CancellationToken::new()).await.unwrap_err();
//! assert_eq!(err.to_string(), "job: disk full");
//! # }
//! ```

mod error;
pub(crate) mod exit;
mod group;
mod restart;
pub(crate) mod runner;
mod sequence;
#[allow(clippy::module_inception)]
mod service;
mod signal;
mod status;
mod tasks;

pub use error::{BoxError, Cancelled, ConfigError, ServiceError, TeardownError};
pub use group::{ServiceGroup, ServiceGroupBuilder};
pub use restart::{Backoff, Intensity, RestartPolicy, Restarter, Supervisor, SupervisorBuilder};
pub use sequence::{Sequence, SequenceBuilder};
pub use service::{
    blocking_run_teardown, run_teardown, service_fn, Ready, RunTeardown, Service, ServiceFn,
    WhenReady,
};
pub use signal::SignalService;
pub use status::{ServiceState, StatusEvent, StatusHub, StatusWatch};
pub use tasks::{TasksService, UncleanShutdown};

#[doc(no_inline)]
pub use tokio_util::sync::CancellationToken;
