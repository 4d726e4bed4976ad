//! Shutdown on SIGINT or SIGTERM (Ctrl-C on non-unix platforms).

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, ServiceError};
use super::service::{Ready, Service};
use crate::shutdown::signals::Signals;

/// Runs a service until SIGINT or SIGTERM, then stops it gracefully; a second signal forces
/// the stop.
///
/// - the signal handlers are registered before the inner service starts (so once it reports
///   ready, which is forwarded, a signal is caught);
/// - the **first** signal cancels the inner service's token (a child of the context), and the
///   inner service stops as usual (a group within its stop timeout, a sequence in reverse);
/// - a **second** signal while it is still stopping drops the inner run, which aborts every
///   task a group or sequence spawned, and returns [`ServiceError::Forced`] naming the
///   signals in the order they arrived. Signals are counted, not wake-ups: a SIGINT and a
///   SIGTERM that both arrive before the runtime polls count as two and force the stop
///   (two deliveries of the *same* kind are merged into one by the kernel when the second is
///   sent while the first is still pending, as two `kill`s back to back can be; see the
///   private `signals` module). Exiting the process is left to the caller;
/// - the signal streams are dropped when the run ends, so no signal is queued for it
///   afterwards. Note that tokio, once a signal kind was listened to, keeps its process-wide
///   OS handler installed for the life of the process: after the streams are dropped, a
///   further SIGINT or SIGTERM is *ignored* rather than terminating the process. What
///   happens then, typically exiting with [`std::process::exit`], is the caller's choice.
///
/// # Examples
///
/// ```no_run
/// use taskgroup::service::{service_fn, Ready, Service, ServiceError, ServiceGroup, SignalService};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main]
/// # async fn main() {
/// let group = ServiceGroup::builder("app")
///     .service(service_fn("api", |ctx: CancellationToken, ready: Ready| async move {
///         ready.ready();
///         ctx.cancelled().await;
///         Ok(())
///     }))
///     .build()
///     .unwrap();
/// let mut app = SignalService::new(group);
/// if let Err(err) = app.run(CancellationToken::new(), Ready::noop()).await {
///     eprintln!("{err}");
///     // 130 or 143 after a second signal, else 1.
///     std::process::exit(err.downcast_ref::<ServiceError>().map_or(1, ServiceError::exit_code));
/// }
/// # }
/// ```
///
/// # Errors
///
/// The inner service's error; [`ServiceError::Forced`] on a second signal; a
/// [`std::io::Error`] if the handlers cannot be registered.
///
/// # Handlers
///
/// The signal streams are created when
/// [`shutdown_signal`](crate::shutdown::shutdown_signal), a
/// [`ShutdownPlan::run_on_signal`](crate::shutdown::ShutdownPlan::run_on_signal) or a
/// `SignalService` run starts and dropped when it ends, so no signal is queued for it
/// afterwards. Note that once a signal kind was listened to, its process-wide OS handler
/// (`signal-hook`'s, which `tokio::signal` shares) stays installed for the life of the
/// process, and does not restore the default action: after the streams are dropped, a further
/// SIGINT or SIGTERM is *ignored* rather than terminating the process, also when they were
/// dropped before any signal came (one of those in a `select!` that another branch won). What
/// happens then, typically exiting the process with [`std::process::exit`], is the caller's
/// choice. (Restoring the default action would kill the process under any other listener it
/// still has, tokio's among them.)
///
/// # Cancel safety
///
/// Dropping the run future drops the inner run and releases the handlers.
#[derive(Debug)]
pub struct SignalService<S> {
    inner: S,
}

impl<S: Service> SignalService<S> {
    /// Wraps `service`; the wrapper has the same name.
    pub fn new(service: S) -> Self {
        SignalService { inner: service }
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Service> Service for SignalService<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let name = self.inner.name().to_owned();
        let inner_token = ctx.child_token();
        let inner = self.inner.run(inner_token.clone(), ready);
        Box::pin(async move {
            let mut signals = Signals::new()?;
            let mut inner = std::pin::pin!(inner);
            loop {
                tokio::select! {
                    res = &mut inner => return res,
                    arrived = signals.recv() => {
                        arrived?;
                        // The first signal stops gracefully; the second forces, even when
                        // both arrived before this poll (see `crate::signals`).
                        inner_token.cancel();
                        let received = signals.received();
                        if received.len() >= 2 {
                            return Err(ServiceError::Forced {
                                name,
                                signal: received[1],
                                signals: received.to_vec(),
                            }
                            .into());
                        }
                    }
                }
            }
        })
    }
}
