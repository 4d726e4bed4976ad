//! The [`Service`] trait, its readiness handle, and the closure and run+teardown adapters.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::error::{BoxError, TeardownError};

/// A long-running unit of work with a name: a server, a consumer, an exporter.
///
/// [`run`](Service::run) is called with a [`CancellationToken`] (the service's context: when it
/// is cancelled the service should stop and return) and a [`Ready`] handle (call
/// [`Ready::ready`] once the service is able to serve, e.g. once its listener is bound; a
/// [`Sequence`](super::Sequence) starts the next service only then).
///
/// # Why `&mut self` and a `'static` future
///
/// `run` takes `&mut self` and returns an owned (`'static`) boxed future, so a service is a
/// *factory of runs*:
/// - a [`Restarter`](super::Restarter) calls `run` again after a failure, on the same value,
///   which may keep state between runs (a consuming `self: Box<Self>` could run only once);
/// - the future owns what it needs, so a [`ServiceGroup`](super::ServiceGroup) spawns it on its own tokio
///   task (services run in parallel, a panic is caught per service, and a service that
///   ignores its stop timeout is aborted) while the service value itself stays in the group,
///   ready for the next run;
/// - the method returns a [`BoxFuture`] instead of being an `async fn`, which keeps the trait
///   object-safe: services of different types go into one group as `Box<dyn Service>`.
///
/// `run` itself should only *prepare* the future (clone a handle, capture settings); the work
/// belongs inside the future, which does nothing until it is polled. Groups and sequences call
/// `run` on all their services up front and start (spawn) each future later.
///
/// A long-running service returns `Ok(())` only after its context was cancelled. It may return
/// [`Cancelled`](super::Cancelled) to say it stopped because of the cancellation; any other error is reported.
///
/// # Examples
///
/// ```
/// use futures::future::BoxFuture;
/// use taskgroup::service::{BoxError, Ready, Service};
/// use tokio_util::sync::CancellationToken;
///
/// #[derive(Debug)]
/// struct Ticker {
///     runs: u32,
/// }
///
/// impl Service for Ticker {
///     fn name(&self) -> &str {
///         "ticker"
///     }
///
///     fn run(&mut self, ctx: CancellationToken, ready: Ready) -> BoxFuture<'static, Result<(), BoxError>> {
///         self.runs += 1; // state kept across restarts
///         Box::pin(async move {
///             ready.ready();
///             ctx.cancelled().await;
///             Ok(())
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut ticker = Ticker { runs: 0 };
/// let ctx = CancellationToken::new();
/// let run = ticker.run(ctx.clone(), Ready::noop());
/// ctx.cancel();
/// run.await.unwrap();
/// assert_eq!(ticker.runs, 1);
/// # }
/// ```
pub trait Service: Send + 'static {
    /// The service's name, used in errors (`"name: error"`) and status events. Names must be
    /// unique within one group or sequence.
    fn name(&self) -> &str;

    /// Prepares one run of the service. The returned future runs it until `ctx` is cancelled
    /// (then it should return soon) or until it fails.
    ///
    /// # Errors
    ///
    /// Whatever the service fails with. [`Cancelled`](super::Cancelled) means "stopped because cancelled" and
    /// is not reported as a failure.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the run: it is the "abort" of a service.
    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>>;
}

impl<S: Service + ?Sized> Service for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        (**self).run(ctx, ready)
    }
}

/// The handle a service calls once it is ready to serve.
///
/// Calling [`ready`](Ready::ready) consumes the handle, so a run reports ready at most once.
/// Dropping it without calling `ready` means "never became ready" (the waiting
/// [`WhenReady`] resolves to `false`).
///
/// # Examples
///
/// ```
/// use taskgroup::service::Ready;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (ready, when_ready) = Ready::channel();
/// ready.ready();
/// assert!(when_ready.await);
///
/// let (ready, when_ready) = Ready::channel();
/// drop(ready);
/// assert!(!when_ready.await);
/// # }
/// ```
#[derive(Debug)]
pub struct Ready {
    tx: Option<oneshot::Sender<()>>,
}

impl Ready {
    /// A readiness handle and the future that resolves when it is used.
    pub fn channel() -> (Ready, WhenReady) {
        let (tx, rx) = oneshot::channel();
        (Ready { tx: Some(tx) }, WhenReady { rx })
    }

    /// A handle nobody listens to, for running a service on its own.
    pub fn noop() -> Ready {
        Ready { tx: None }
    }

    /// Reports that the service is ready. Has no effect if nobody listens any more.
    pub fn ready(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
    }
}

/// A future that resolves to `true` when the matching [`Ready`] handle reports ready, or to
/// `false` when the handle is dropped unused.
///
/// # Examples
///
/// See [`Ready`].
///
/// # Panics
///
/// Polling it again after it has resolved panics (as with any `oneshot` receiver).
///
/// # Cancel safety
///
/// Cancel safe: it can be polled by reference in a `select!` loop until it resolves.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WhenReady {
    rx: oneshot::Receiver<()>,
}

impl Future for WhenReady {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.is_ok())
    }
}

/// A [`Service`] made of a name and a closure, built by [`service_fn`].
pub struct ServiceFn<F> {
    name: String,
    f: F,
}

impl<F> fmt::Debug for ServiceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes a [`Service`] from a name and a closure `|ctx, ready| async move { .. }`.
///
/// The closure is `FnMut`: it is called once per run, so a restarted service gets a fresh
/// future each time (clone what the future needs inside the closure).
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, Ready, Service};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut svc = service_fn("http", |ctx: CancellationToken, ready: Ready| async move {
///     // bind the listener here, then:
///     ready.ready();
///     ctx.cancelled().await;
///     Ok(())
/// });
/// assert_eq!(svc.name(), "http");
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// svc.run(ctx, Ready::noop()).await.unwrap();
/// # }
/// ```
pub fn service_fn<F, Fut>(name: impl Into<String>, f: F) -> ServiceFn<F>
where
    F: FnMut(CancellationToken, Ready) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    ServiceFn {
        name: name.into(),
        f,
    }
}

impl<F, Fut> Service for ServiceFn<F>
where
    F: FnMut(CancellationToken, Ready) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin((self.f)(ctx, ready))
    }
}

/// A [`Service`] made of a run and a teardown, built by [`run_teardown`] or
/// [`blocking_run_teardown`].
pub struct RunTeardown<R, T> {
    name: String,
    run: R,
    // Shared with the running future, which calls it only on cancel. Locked only to call the
    // closure (which builds the teardown future), never across an `.await`.
    teardown: Arc<Mutex<T>>,
}

impl<R, T> fmt::Debug for RunTeardown<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunTeardown")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes a [`Service`] from an async `run` and an async `teardown`, for things that are
/// stopped by calling a method rather than by watching a token (a server with a `shutdown()`).
///
/// The run future is started; when the context is cancelled, the teardown future runs, and
/// then the run is awaited to its end (teardown is expected to make it return). If the run
/// ends by itself, `teardown` is not called. The result:
/// - only the run failed: the run's error;
/// - the teardown failed: a [`TeardownError`] carrying the teardown's error and, if it failed
///   too, the run's error, so the run's error is never lost.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use taskgroup::service::{run_teardown, Ready, Service};
/// use tokio::sync::Notify;
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let stop = Arc::new(Notify::new());
/// let stop2 = stop.clone();
/// let mut svc = run_teardown(
///     "server",
///     move |ready: Ready| {
///         let stop = stop.clone();
///         async move {
///             ready.ready();
///             stop.notified().await; // serve until told to stop
///             Ok(())
///         }
///     },
///     move || {
///         let stop = stop2.clone();
///         async move {
///             stop.notify_one();
///             Ok(())
///         }
///     },
/// );
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// svc.run(ctx, Ready::noop()).await.unwrap();
/// # }
/// ```
///
/// # Errors
///
/// See above.
pub fn run_teardown<R, RFut, T, TFut>(
    name: impl Into<String>,
    run: R,
    teardown: T,
) -> RunTeardown<R, T>
where
    R: FnMut(Ready) -> RFut + Send + 'static,
    RFut: Future<Output = Result<(), BoxError>> + Send + 'static,
    T: FnMut() -> TFut + Send + 'static,
    TFut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    RunTeardown {
        name: name.into(),
        run,
        teardown: Arc::new(Mutex::new(teardown)),
    }
}

impl<R, RFut, T, TFut> Service for RunTeardown<R, T>
where
    R: FnMut(Ready) -> RFut + Send + 'static,
    RFut: Future<Output = Result<(), BoxError>> + Send + 'static,
    T: FnMut() -> TFut + Send + 'static,
    TFut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &mut self,
        ctx: CancellationToken,
        ready: Ready,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let run = (self.run)(ready);
        let teardown = self.teardown.clone();
        Box::pin(run_then_teardown(ctx, run, move || (teardown.lock())()))
    }
}

async fn run_then_teardown<TFut>(
    ctx: CancellationToken,
    run: impl Future<Output = Result<(), BoxError>>,
    teardown: impl FnOnce() -> TFut,
) -> Result<(), BoxError>
where
    TFut: Future<Output = Result<(), BoxError>>,
{
    let mut run = std::pin::pin!(run);
    tokio::select! {
        res = &mut run => return res,
        () = ctx.cancelled() => {}
    }
    let torn = teardown().await;
    let ran = run.await;
    match (ran, torn) {
        (ran, Ok(())) => ran,
        (ran, Err(teardown)) => Err(Box::new(TeardownError {
            teardown,
            run: ran.err(),
        })),
    }
}

/// Makes a [`Service`] from a *blocking* `run` and a blocking `teardown`, each called on
/// tokio's blocking thread pool ([`tokio::task::spawn_blocking`]).
///
/// Same semantics as [`run_teardown`]: teardown is called on cancel (it must make the blocking
/// run return, e.g. by closing its socket), then the run is awaited; the run's error is never
/// lost.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::sync::{Arc, Mutex};
/// use taskgroup::service::{blocking_run_teardown, Ready, Service};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = mpsc::channel::<()>();
/// let rx = Arc::new(Mutex::new(rx));
/// let tx = Mutex::new(tx);
/// let mut svc = blocking_run_teardown(
///     "legacy",
///     move |ready: Ready| {
///         ready.ready();
///         let _ = rx.lock().unwrap().recv(); // blocks until teardown
///         Ok(())
///     },
///     move || {
///         let _ = tx.lock().unwrap().send(());
///         Ok(())
///     },
/// );
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// svc.run(ctx, Ready::noop()).await.unwrap();
/// # }
/// ```
///
/// # Errors
///
/// As for [`run_teardown`]; a panic in `run` or `teardown` is resumed on the service's task,
/// where a group or restarter catches it.
#[allow(clippy::type_complexity)]
pub fn blocking_run_teardown<R, T>(
    name: impl Into<String>,
    run: R,
    teardown: T,
) -> RunTeardown<
    impl FnMut(Ready) -> BoxFuture<'static, Result<(), BoxError>> + Send + 'static,
    impl FnMut() -> BoxFuture<'static, Result<(), BoxError>> + Send + 'static,
>
where
    R: Fn(Ready) -> Result<(), BoxError> + Send + Sync + 'static,
    T: Fn() -> Result<(), BoxError> + Send + Sync + 'static,
{
    let run = Arc::new(run);
    let teardown = Arc::new(teardown);
    run_teardown(
        name,
        move |ready: Ready| {
            let run = run.clone();
            async move { join_blocking(tokio::task::spawn_blocking(move || run(ready))).await }
                .boxed()
        },
        move || {
            let teardown = teardown.clone();
            async move { join_blocking(tokio::task::spawn_blocking(move || teardown())).await }
                .boxed()
        },
    )
}

async fn join_blocking(
    handle: tokio::task::JoinHandle<Result<(), BoxError>>,
) -> Result<(), BoxError> {
    match handle.await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Box::new(e)),
    }
}
