//! The request body timeout of [`serve_router`](super::serve_router): a body
//! whose read fails once its client has sent nothing for a while, and the
//! router service that gives it to the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// A request body that fails, with an `io::Error` of kind `TimedOut`,
/// once a read of it has waited `limit` for the client's next bytes.
///
/// The wait starts when a read finds no data (the server then asks the
/// client for more) and ends when a frame comes, whether the handler still
/// awaits that read or dropped it (a `select!` that went the other way):
/// the client was asked then. A handler that does not read (it has not got
/// to the body yet, or will not) starts no wait; hyper reads ahead only
/// what it buffers (a frame on HTTP/1, the stream's flow-control window on
/// HTTP/2), so a client held back by the handler is not the one timed.
/// After the error the body ends: a read returns nothing more.
pub(crate) struct TimedBody<B> {
    inner: B,
    /// `None`: no limit.
    limit: Option<Duration>,
    /// The timer of the wait under way; kept between waits, so that a body
    /// that waits again and again allocates it once.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether a wait is under way (the timer set for it).
    waiting: bool,
    timed_out: bool,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, limit: Option<Duration>) -> Self {
        TimedBody {
            inner,
            limit,
            timer: None,
            waiting: false,
            timed_out: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        // What the client sent first: a frame that came as the timer ran
        // out is read, not timed out.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        if !this.waiting {
            this.waiting = true;
            // `limit` is under thirty years (`limited`): no overflow.
            let at = Instant::now() + limit;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let timer = this.timer.as_mut().expect("set when the wait began");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out = true;
        Poll::Ready(Some(Err(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client sent no more of the request body in {limit:?} \
                 (ServeOptions::request_body_timeout)"
            ),
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.timed_out {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// An axum `Router` whose requests' bodies are [`TimedBody`]s: what
/// [`serve_router_with`](super::serve_router_with) serves, as a tower
/// service of hyper's requests.
#[derive(Clone)]
pub(crate) struct TimedRouter {
    router: axum::Router,
    limit: Option<Duration>,
}

impl TimedRouter {
    pub(crate) fn new(router: axum::Router, limit: Option<Duration>) -> Self {
        TimedRouter { router, limit }
    }
}

type RouterFuture = <axum::Router as tower_service::Service<Request<TimedBody<Incoming>>>>::Future;

impl tower_service::Service<Request<Incoming>> for TimedRouter {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<Request<TimedBody<Incoming>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> RouterFuture {
        let limit = self.limit;
        tower_service::Service::call(
            &mut self.router,
            req.map(|body| TimedBody::new(body, limit)),
        )
    }
}
