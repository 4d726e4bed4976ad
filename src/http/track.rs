//! [`TrackRequests`]: each in-flight request a named guard of a group.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{TaskGuard, WaitGroup};

/// A tower [`Layer`] that makes each in-flight request a guard of a group,
/// for a server that spawns its connections itself (`axum::serve`, tonic,
/// hyper-util's `GracefulShutdown`).
///
/// * Each request is a [`TaskGuard`] named `<METHOD> <path>` (the path
///   without its query, as the client sent it: with the `axum` feature, a
///   router [nested](https://docs.rs/axum/0.8/axum/struct.Router.html#method.nest)
///   under a prefix still names its requests by their whole path, from
///   axum's `OriginalUri`; a path longer than 256 bytes is cut there, with
///   `…`, so a client cannot make every report line 64 KB long), created
///   where the layer was made ([`TrackRequests::new`]'s caller), taken when
///   the request reaches the layer and completed when its response body has
///   been sent, or when the response or the body is dropped (the client went
///   away, the server aborted the connection). The body counts so that a
///   streamed response (server-sent events, a large download) is in flight
///   until its end.
/// * Once the group is [closed](WaitGroup::close) (a
///   [`shutdown`](WaitGroup::shutdown) closes it first), a new request is
///   not passed on: it gets `503 Service Unavailable` with an empty body,
///   and `connection: close` on HTTP/1.
/// * A shutdown of the group waits for the requests in flight, and its
///   report lists those still running at the deadline as pending, by name.
///
/// A guard cannot be aborted: a request slower than the grace keeps running
/// in the server's own task after the shutdown returns, and a group linked
/// after this one (a database pool) is closed while it runs. Where that
/// must not happen, serve with [`serve`](super::serve), whose connections
/// are aborted at the deadline. For the same reason, a handler that calls
/// the group's [`shutdown`](WaitGroup::shutdown) waits for itself: its
/// shutdown takes the whole grace and lists it as pending (and its
/// [`wait`](WaitGroup::wait) never returns). Start the shutdown in a task of
/// its own instead. `axum::serve`'s graceful shutdown waits for every
/// connection to close, a request's still running after the shutdown too:
/// bound that wait, as the example below does, or the process outlives its
/// shutdown for as long as the request runs and its client waits. A handler
/// that awaits a group of its own makes it with
/// [`scoped_child()`](WaitGroup::scoped_child), cancelled with the requests:
/// one made with `group.child()` is cancelled only at its turn, after them
/// (see [work a handler starts](super#work-a-handler-starts)). A connection
/// upgraded to a WebSocket is not a request in flight once its `101`
/// response is sent.
///
/// The layer changes the response body's type ([`TrackedBody`]). Inside a
/// `Router` (`.layer(..)`, as below) axum boxes it again; a `Router` wrapped
/// from outside (`TrackRequests::new(&group).layer(router)`) must box it
/// itself for `axum::serve`, for example with tower-http's
/// `MapResponseBodyLayer::new(axum::body::Body::new)`.
///
/// `axum::serve(..).with_graceful_shutdown(group.cancelled_owned())` stops
/// axum when the group is cancelled; with a drain phase
/// ([`Grace::drain`](crate::shutdown::Grace::drain), a
/// [`ShutdownPlan`](crate::shutdown::ShutdownPlan)'s), pass
/// [`draining_owned()`](WaitGroup::draining_owned) instead, so that axum
/// closes its listener and its connections at the drain signal rather than
/// after the drain phase.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(not(feature = "axum"))] fn main() {} // the example needs `axum`
/// # #[cfg(feature = "axum")]
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use taskgroup::{http::TrackRequests, WaitGroup};
///
/// let requests = WaitGroup::builder().name("requests").build();
/// let app = Router::new()
///     .route("/", get(|| async { "hello\n" }))
///     .layer(TrackRequests::new(&requests));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let server = axum::serve(listener, app).with_graceful_shutdown(requests.cancelled_owned());
/// let server = tokio::spawn(async move { server.await });
///
/// tokio::signal::ctrl_c().await?;
/// let report = requests.shutdown(Duration::from_secs(10)).await;
/// println!("{report}"); // names the requests still running, e.g. "GET /export"
/// // axum waits for their connections too: not for ever.
/// match tokio::time::timeout(Duration::from_secs(1), server).await {
///     Ok(served) => served??,
///     Err(_) => eprintln!("requests still running after the shutdown: exiting"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TrackRequests {
    group: WaitGroup,
    site: &'static Location<'static>,
}

impl TrackRequests {
    /// Tracks requests in `group`; reports name this call's line as where
    /// each request was created.
    #[track_caller]
    pub fn new(group: &WaitGroup) -> TrackRequests {
        TrackRequests {
            group: group.clone(),
            site: Location::caller(),
        }
    }
}

impl<S> Layer<S> for TrackRequests {
    type Service = TrackRequestsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequestsService {
            inner,
            group: self.group.clone(),
            site: self.site,
        }
    }
}

/// The service [`TrackRequests`] wraps around another.
#[derive(Clone, Debug)]
pub struct TrackRequestsService<S> {
    inner: S,
    group: WaitGroup,
    site: &'static Location<'static>,
}

/// A request's name: `<METHOD> <path>`, the path as the client sent it
/// (axum's `OriginalUri`, if a router put it there: a nested router sees
/// only what follows its prefix), cut as [`super::request_name`] cuts it.
fn request_name<B>(req: &Request<B>) -> String {
    #[cfg(feature = "axum")]
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path(), |original| original.0.path());
    #[cfg(not(feature = "axum"))]
    let path = req.uri().path();
    super::request_name(req.method(), path)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackRequestsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let name = request_name(&req);
        match self.group.task().name(name).try_add_at(self.site) {
            Ok(guard) => ResponseFuture {
                state: State::Running {
                    future: self.inner.call(req),
                    guard: Some(guard),
                },
            },
            Err(_closed) => ResponseFuture {
                state: State::Refused {
                    http1: req.version() < Version::HTTP_2,
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`TrackRequestsService`]: holds the request's
    /// guard, and hands it to the response's body.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F, guard: Option<TaskGuard> },
        Refused { http1: bool },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future, guard } => {
                let response = ready!(future.poll(cx))?;
                let guard = guard.take();
                Poll::Ready(Ok(response.map(|body| TrackedBody {
                    kind: Kind::Body { body },
                    guard,
                })))
            }
            StateProj::Refused { http1 } => {
                let mut response = Response::new(TrackedBody {
                    kind: Kind::Empty,
                    guard: None,
                });
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                if *http1 {
                    response.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Running { guard, .. } => d.field("guard", guard),
            State::Refused { .. } => d.field("refused", &true),
        };
        d.finish_non_exhaustive()
    }
}

pin_project! {
    /// A response body that holds its request's guard (see
    /// [`TrackRequests`]) until the body's end, an error, or its drop; or
    /// the empty body of a refused request.
    pub struct TrackedBody<B> {
        #[pin]
        kind: Kind<B>,
        guard: Option<TaskGuard>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Body { #[pin] body: B },
        Empty,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Body { body } => {
                let frame = ready!(body.poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    // The end, or an error that ends it: the request is done.
                    this.guard.take();
                }
                Poll::Ready(frame)
            }
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Body { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Body { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedBody")
            .field("empty", &matches!(self.kind, Kind::Empty))
            .field("guard", &self.guard)
            .finish()
    }
}
