//! [`serve`]: the accept loop and the connections as tasks of a group.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::Location;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::drain_signal;
use crate::{BoxError, TaskContext, TaskHandle, WaitGroup};

/// Connection settings for [`serve_with`]: the time limits on idle and slow
/// clients, HTTP/2's stream limit and keep-alive pings, HTTP/1 half-closes.
///
/// [`ServeOptions::new`] (and `Default`) are what [`serve`] uses: the values
/// each setter names as its default. The names follow hyper's builders
/// (`http1_`, `http2_` as hyper 0.14's server named them): each setting
/// applies to the protocol it names, and [`sniff_timeout`](Self::sniff_timeout)
/// to the bytes that tell the protocol.
///
/// # Idle connections
///
/// On HTTP/1 hyper has one timer for a slow request and an idle keep-alive
/// connection: [`http1_header_read_timeout`](Self::http1_header_read_timeout)
/// runs from the end of a response until the next request's headers are in.
/// On HTTP/2 [`http2_idle_timeout`](Self::http2_idle_timeout) closes a
/// connection with no stream open. Behind a load balancer that keeps idle
/// connections for 60 s (AWS ALB), the server must keep them longer, so set
/// both above it, e.g. to 75 s; a public server fighting slow clients
/// (slowloris) sets a short header read timeout (the sniff timeout follows
/// it).
///
/// Neither runs while a response is being sent. A client that asks for a
/// response and then takes none of it is dropped by
/// [`send_timeout`](Self::send_timeout) (60 s by default: the server's
/// socket writes blocked that long, no byte written since), on either
/// protocol, while serving and while draining; a client that reads slowly
/// but gets bytes out of the server within each timeout, and a response
/// that writes nothing for a while (a long poll), are kept. On HTTP/2 a
/// client more often holds a response back with flow control (it grants no
/// more window, and h2 writes nothing): the send timeout counts that too,
/// once every response of the connection is held back so.
///
/// A client that stops inside a request body its handler reads is
/// answered (the read fails) after
/// [`request_body_timeout`](Self::request_body_timeout), 60 s by default,
/// under [`serve_router`] only: [`serve`]'s service reads hyper's body
/// itself.
///
/// # Durations
///
/// `Duration::MAX`, or any duration of thirty years or more, means no limit
/// (on HTTP/2 keep-alive: no pings). A zero duration is refused (see
/// `# Panics` on each setter): it would close or drop connections before
/// they could be used, or ping without pause; for no limit, pass
/// `Duration::MAX`. A connection kept without a limit holds its slot under a
/// [`limit`](crate::WaitGroupBuilder::limit) as long as its client wants.
///
/// # Examples
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use taskgroup::{http::ServeOptions, WaitGroup};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let group = WaitGroup::builder().name("http").build();
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// let hello = service_fn(|_req: Request<Incoming>| async {
///     Ok::<_, Infallible>(Response::new("hello\n".to_string()))
/// });
/// // Behind a load balancer whose idle timeout is 60 s: outlive it.
/// let opts = ServeOptions::new()
///     .http1_header_read_timeout(Duration::from_secs(75))
///     .http2_idle_timeout(Duration::from_secs(75));
/// taskgroup::http::serve_with(&group, listener, hello, opts);
///
/// tokio::signal::ctrl_c().await?;
/// let report = group.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServeOptions {
    http1_header_read_timeout: Duration,
    http1_half_close: bool,
    /// `None`: the HTTP/1 header read timeout.
    sniff_timeout: Option<Duration>,
    http2_idle_timeout: Duration,
    http2_max_concurrent_streams: u32,
    /// `None`: no pings.
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
    tcp_nodelay: bool,
    send_timeout: Duration,
    request_body_timeout: Duration,
}

impl fmt::Debug for ServeOptions {
    /// The settings in effect: the sniff timeout is the header read timeout
    /// unless set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("http1_header_read_timeout", &self.http1_header_read_timeout)
            .field("http1_half_close", &self.http1_half_close)
            .field(
                "sniff_timeout",
                &self.sniff_timeout.unwrap_or(self.http1_header_read_timeout),
            )
            .field("http2_idle_timeout", &self.http2_idle_timeout)
            .field(
                "http2_max_concurrent_streams",
                &self.http2_max_concurrent_streams,
            )
            .field("http2_keep_alive_interval", &self.http2_keep_alive_interval)
            .field("http2_keep_alive_timeout", &self.http2_keep_alive_timeout)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("send_timeout", &self.send_timeout)
            .field("request_body_timeout", &self.request_body_timeout)
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions::new()
    }
}

impl ServeOptions {
    /// The settings [`serve`] uses, each named as its setter's default.
    pub fn new() -> ServeOptions {
        ServeOptions {
            http1_header_read_timeout: Duration::from_secs(30),
            http1_half_close: false,
            sniff_timeout: None,
            http2_idle_timeout: Duration::from_secs(30),
            // hyper's default, fixed here: the `serve` docs promise it,
            // and hyper says its own may change.
            http2_max_concurrent_streams: 200,
            http2_keep_alive_interval: None,
            http2_keep_alive_timeout: Duration::from_secs(20),
            tcp_nodelay: true,
            // nginx's `send_timeout`.
            send_timeout: Duration::from_secs(60),
            // nginx's `client_body_timeout`.
            request_body_timeout: Duration::from_secs(60),
        }
    }

    /// Sets up an accepted connection's socket.
    fn configure_socket(&self, stream: &TcpStream) -> io::Result<()> {
        if self.tcp_nodelay {
            stream.set_nodelay(true)?;
        }
        Ok(())
    }

    /// Whether each accepted connection's socket sends small writes at once
    /// (`TCP_NODELAY`), rather than holding them back until the peer
    /// acknowledges the last ones (Nagle's algorithm). Default `true`: with
    /// Nagle, an HTTP/2 connection's last frames at a shutdown (its
    /// `GOAWAY`) waited for the client's delayed acknowledgement, about 40
    /// ms on Linux, and so did small responses. `false` leaves the socket as
    /// the system makes it.
    #[must_use]
    pub fn tcp_nodelay(mut self, enabled: bool) -> ServeOptions {
        self.tcp_nodelay = enabled;
        self
    }

    /// How long an HTTP/1 connection may take to send a request's headers,
    /// counted from its first bytes or from the end of its last response:
    /// so this is also how long an idle keep-alive connection is kept (hyper
    /// runs one timer for both). A connection that runs out of it is
    /// closed, unanswered. Default 30 s (hyper's).
    ///
    /// `Duration::MAX`: no limit (an idle HTTP/1 connection is kept for as
    /// long as its client keeps it).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[must_use]
    #[track_caller]
    pub fn http1_header_read_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::http1_header_read_timeout: a timeout of zero would close HTTP/1 \
             connections before their requests are read (Duration::MAX means no limit)"
        );
        self.http1_header_read_timeout = timeout;
        self
    }

    /// Whether an HTTP/1 client may shut down its writing side once it has
    /// sent its request and still get the response (hyper's `half_close`).
    /// Default `false`, hyper's: such a client's connection is closed as
    /// one that hung up, once the server reads the end of its bytes
    /// (unanswered, unless its response was ready by then).
    #[must_use]
    pub fn http1_half_close(mut self, enabled: bool) -> ServeOptions {
        self.http1_half_close = enabled;
        self
    }

    /// How long a new connection may take to send the bytes that tell its
    /// protocol (its first byte on HTTP/1; on HTTP/2 the 24 bytes of the
    /// preface, which hyper-util reads with no limit of its own) before it
    /// is dropped, counted from when it is served (its accept, or under a
    /// [`limit`](crate::WaitGroupBuilder::limit) when it gets its slot).
    /// Default: the
    /// [HTTP/1 header read timeout](Self::http1_header_read_timeout) (30 s
    /// unless set), so that a silent client is kept no longer than one that
    /// stops in its headers.
    ///
    /// `Duration::MAX`: no limit.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[must_use]
    #[track_caller]
    pub fn sniff_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::sniff_timeout: a timeout of zero would drop every connection \
             before its first bytes are read (Duration::MAX means no limit)"
        );
        self.sniff_timeout = Some(timeout);
        self
    }

    /// How long an HTTP/2 connection with no stream open (no request
    /// running, no response being sent) is kept, counted from the end of
    /// its last stream or from its preface; then it is sent `GOAWAY` and
    /// closed, as a drain closes it (see [`serve`]). `PING`s, the server's
    /// [keep-alive](Self::http2_keep_alive_interval) ones too, are not
    /// use of it. A stream whose response the client holds back with flow
    /// control (granting no window) is open, so it keeps its connection,
    /// and the [send timeout](Self::send_timeout) does not see it either.
    /// Default 30 s.
    ///
    /// `Duration::MAX`: no limit (an idle HTTP/2 connection is kept for as
    /// long as its client keeps it).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[must_use]
    #[track_caller]
    pub fn http2_idle_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::http2_idle_timeout: a timeout of zero would close HTTP/2 \
             connections at their preface (Duration::MAX means no limit)"
        );
        self.http2_idle_timeout = timeout;
        self
    }

    /// How many streams (requests) an HTTP/2 client may have open at a time
    /// on one connection, sent to it in the connection's `SETTINGS`
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); h2 refuses the streams beyond
    /// it. They all run in their connection's slot under a
    /// [`limit`](crate::WaitGroupBuilder::limit). Default 200 (hyper's).
    /// `u32::MAX` is the protocol's no limit.
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    #[must_use]
    #[track_caller]
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> ServeOptions {
        assert!(
            max != 0,
            "ServeOptions::http2_max_concurrent_streams: a limit of zero would refuse every \
             HTTP/2 request"
        );
        self.http2_max_concurrent_streams = max;
        self
    }

    /// Sends an HTTP/2 `PING` when the client has sent nothing for
    /// `interval`, and closes the connection if the client does not answer
    /// within the [keep-alive timeout](Self::http2_keep_alive_timeout): a
    /// client gone without closing its socket is found out, and a
    /// long-lived stream (gRPC streaming) keeps the middleboxes on its path
    /// from dropping it. It does not keep an idle connection open past the
    /// [idle timeout](Self::http2_idle_timeout). Default: no pings.
    ///
    /// hyper sends the next `PING` once `interval` has passed since the last
    /// bytes it read from the client, its answer to the previous `PING`
    /// included: an interval of milliseconds pings almost without pause and
    /// costs CPU on both sides for nothing. Keep-alive intervals are seconds
    /// to minutes (gRPC's are).
    ///
    /// `Duration::MAX`: no pings.
    ///
    /// # Panics
    ///
    /// If `interval` is zero.
    #[must_use]
    #[track_caller]
    pub fn http2_keep_alive_interval(mut self, interval: Duration) -> ServeOptions {
        assert!(
            !interval.is_zero(),
            "ServeOptions::http2_keep_alive_interval: an interval of zero would ping without \
             pause (Duration::MAX means no pings)"
        );
        self.http2_keep_alive_interval = Some(interval);
        self
    }

    /// How long the client has to answer a keep-alive `PING` (see
    /// [`http2_keep_alive_interval`](Self::http2_keep_alive_interval), without
    /// which this does nothing) before the connection is closed. Default
    /// 20 s (hyper's).
    ///
    /// `Duration::MAX`: no limit (pings are sent, and never time out).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[must_use]
    #[track_caller]
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::http2_keep_alive_timeout: a timeout of zero would close a \
             connection at each keep-alive ping (Duration::MAX means no limit)"
        );
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// How long a connection's writes may stay blocked, the client taking
    /// none of the response's bytes, before the connection is dropped:
    /// counted from when a write found the socket's send buffer full, and
    /// started again by each write that gets bytes out. So it is a limit
    /// between two successive writes, not on the whole response (nginx's
    /// `send_timeout`). Default 60 s (nginx's).
    ///
    /// It holds on both protocols, while a connection serves and while it
    /// drains: a client that asks for a response and stops reading it (or
    /// whose host is gone without closing) keeps its connection, its slot
    /// under a [`limit`](crate::WaitGroupBuilder::limit) and a shutdown's
    /// drain this long, not until the shutdown's deadline (nor for ever
    /// under `Duration::MAX`). A client that reads slowly but steadily is
    /// not dropped, nor a response that writes nothing for minutes (a long
    /// poll, server-sent events between events): no write is blocked then.
    /// "Steadily" is the system's measure: a blocked write goes on once the
    /// client has read enough of what the server's socket holds (Linux wakes
    /// the writer when about a third of the send buffer is free, a buffer it
    /// sizes up to 4 MB by default), so a client that reads less than that
    /// within each timeout is dropped. On loopback with Linux's defaults that
    /// is about 1 to 1.5 MB a timeout, some 25 KB/s under the default 60 s: a
    /// client reading 16 KB every 500 ms kept its connection for 3 minutes,
    /// one reading 16 KB every 700 ms was dropped after 105-126 s. Over a
    /// real network the buffer is sized to the
    /// path, smaller for a slow client.
    ///
    /// On HTTP/2 a client whose application stops reading a body stops
    /// granting flow-control window rather than reading its socket: h2
    /// sends no more than the window (64 KB by the protocol's default, 2 MB
    /// by hyper's client), which the sockets hold, so no write blocks. So on
    /// HTTP/2 the timeout also runs while every response of the connection
    /// not sent yet is held back by flow control: its `DATA` has used up its
    /// stream's window, or it has begun (its headers sent) while the
    /// connection's window is used up, whether it has more to send or not (a
    /// server-sent-events stream between events); each window the client
    /// grants that lets one go on starts the count again. One stream that
    /// still moves, or that has not begun (a handler still working), or
    /// that has sent nothing on a stream whose window the client opened at
    /// zero, keeps the connection: the whole connection is dropped, not one
    /// stream, and only once nothing on it moves.
    ///
    /// "Steadily" is the client's measure here: it grants window as its
    /// application consumes what it was sent, often only once half of its
    /// window is consumed (nghttp2, which curl uses, does so), so a client
    /// that consumes less than half its window within each timeout is
    /// dropped. With curl 7.88 (`--limit-rate`, a 100 MB body): at 50 KB/s
    /// dropped after 128 s under the default 60 s, at 200 KB/s kept 200 s;
    /// on HTTP/1 at 50 KB/s dropped after 77 s.
    ///
    /// Not caught: a stream held back while the connection's other streams
    /// keep going, which h2 gives no way to time out alone (no per-stream
    /// timeout here). So a client can keep one response held, with its
    /// connection and its slot under a limit, for as long as it sends a
    /// new request at least once a timeout; not through a drain, where new
    /// streams are not waited for (see [`serve`]).
    ///
    /// `Duration::MAX`: no limit.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[must_use]
    #[track_caller]
    pub fn send_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::send_timeout: a timeout of zero would drop a connection at the \
             first write that finds its socket full (Duration::MAX means no limit)"
        );
        self.send_timeout = timeout;
        self
    }

    /// How long a handler's read of the request body may wait for the
    /// client's next bytes before it fails: counted from when a read found
    /// no data, and started again by each part of the body that comes, so
    /// it is a limit between two successive reads, not on the whole body
    /// (nginx's `client_body_timeout`). Default 60 s (nginx's). For
    /// [`serve_router`] and [`serve_router_with`] only (see below).
    ///
    /// A client that sends its headers and then stops inside the body (or
    /// whose host is gone without closing) otherwise holds its request, and
    /// with it its connection, its slot under a
    /// [`limit`](crate::WaitGroupBuilder::limit) and a shutdown's drain, as
    /// long as the handler waits: hyper has no timeout on a body. With it,
    /// the handler's read fails once the client has sent nothing for the
    /// timeout: axum's extractors (`String`, `Bytes`, `Json`, ...) then
    /// reject the request with `400 Bad Request`, and a handler that reads
    /// the body itself (`Body::into_data_stream`, `Body::frame`) gets the
    /// error, an [`io::Error`] of kind [`TimedOut`](io::ErrorKind::TimedOut)
    /// in its source chain, and answers as it likes (`408 Request
    /// Timeout`). The body ends there; on HTTP/1 the connection is closed
    /// after the response (the rest of the body was never read), on HTTP/2
    /// only the stream ends. The wait starts when a read finds no data, the
    /// server then asking the client for more, and runs until data comes,
    /// whether the handler still awaits that read or not (one dropped by a
    /// `select!` or a `timeout` still started it): a handler that has not
    /// got to the body yet, or never reads it, starts no wait (hyper reads
    /// ahead only what it buffers, a part of the body on HTTP/1, up to the
    /// stream's flow-control window on HTTP/2, so the client is held back
    /// by the handler then, not timed), and a body that comes slowly but
    /// steadily, each part within the timeout, is read to its end.
    ///
    /// [`serve`] and [`serve_with`] hand the service hyper's own body type,
    /// which cannot be wrapped there: bound the read in the service (a
    /// timeout around each read, or tower-http's `RequestBodyTimeoutLayer`).
    /// This setting does nothing for them.
    ///
    /// `Duration::MAX`: no limit.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[cfg(not(feature = "axum"))] fn main() {} // the example needs `axum`
    /// # #[cfg(feature = "axum")]
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// use axum::{http::StatusCode, routing::post, Router};
    /// use taskgroup::{http::ServeOptions, WaitGroup};
    ///
    /// // An upload that reads the body itself, and answers 408 to a client
    /// // that stalls in it.
    /// async fn upload(body: axum::body::Body) -> StatusCode {
    ///     use futures::StreamExt;
    ///     let mut data = body.into_data_stream();
    ///     while let Some(part) = data.next().await {
    ///         match part {
    ///             Ok(_bytes) => {} // store them
    ///             Err(e) if timed_out(&e) => return StatusCode::REQUEST_TIMEOUT,
    ///             Err(_) => return StatusCode::BAD_REQUEST,
    ///         }
    ///     }
    ///     StatusCode::CREATED
    /// }
    ///
    /// fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    ///     let mut cause = Some(e);
    ///     while let Some(e) = cause {
    ///         if let Some(io) = e.downcast_ref::<std::io::Error>() {
    ///             return io.kind() == std::io::ErrorKind::TimedOut;
    ///         }
    ///         cause = e.source();
    ///     }
    ///     false
    /// }
    ///
    /// let group = WaitGroup::builder().name("http").build();
    /// let app = Router::new().route("/upload", post(upload));
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// // Mobile clients: give a stalled upload 2 minutes.
    /// let opts = ServeOptions::new().request_body_timeout(Duration::from_secs(120));
    /// taskgroup::http::serve_router_with(&group, listener, app, opts);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn request_body_timeout(mut self, timeout: Duration) -> ServeOptions {
        assert!(
            !timeout.is_zero(),
            "ServeOptions::request_body_timeout: a timeout of zero would fail every read of a \
             body that has not all come yet (Duration::MAX means no limit)"
        );
        self.request_body_timeout = timeout;
        self
    }

    /// The sniff timeout in effect; `None` for no limit.
    fn sniff_limit(&self) -> Option<Duration> {
        limited(self.sniff_timeout.unwrap_or(self.http1_header_read_timeout))
    }

    /// Sets hyper's part of these settings on a connection's builder.
    fn configure(&self, builder: &mut auto::Builder<GroupExecutor>) {
        // hyper adds its timeouts to `Instant::now()`, which panics past
        // the end of `Instant`: a timeout we take as no limit is given to
        // hyper as none (the header read timeout, the ping interval) or as
        // thirty years (the ping timeout, which has no "none").
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limited(self.http1_header_read_timeout))
            .half_close(self.http1_half_close);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .keep_alive_interval(self.http2_keep_alive_interval.and_then(limited))
            .keep_alive_timeout(self.http2_keep_alive_timeout.min(crate::shutdown::FAR));
    }
}

/// `d` as a time limit: `None` for no limit (see [`ServeOptions`]).
fn limited(d: Duration) -> Option<Duration> {
    (!crate::shutdown::is_unlimited(d)).then_some(d)
}

/// Sleeps for `limit`; for ever if `None`.
async fn sleep_or_never(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Serves HTTP/1 and HTTP/2 on `listener` with `service`, as work of `group`.
///
/// The accept loop is a `go()` task of `group` named `http accept <addr>`;
/// each accepted connection is a task of the same group named `conn <peer>`,
/// and each HTTP/2 request a task named `<METHOD> <path> (conn <peer>)`, the
/// path without its query and cut at 256 bytes with `…`, as
/// [`TrackRequests`](super::TrackRequests) cuts it (hyper runs HTTP/2
/// requests apart from their connection; HTTP/1 requests run in the
/// connection's task). The protocol is told by the connection's first
/// bytes (hyper-util's `auto` builder, with HTTP upgrades such as WebSockets
/// enabled and hyper's 30 s limit on reading a request's headers).
///
/// No connection is kept idle for ever, nor held for ever by a client that
/// stops reading its response (but an HTTP/2 client that keeps sending new
/// requests beside it, see [`send_timeout`](ServeOptions::send_timeout)),
/// so that none holds its slot under a
/// [`limit`](crate::WaitGroupBuilder::limit) for ever. One way to hold a
/// connection is not bounded here: a client that
/// stops sending a request body its handler reads (hyper has no timeout
/// on a body, and `serve` hands the service hyper's: bound the read in the
/// service, with a timeout around it or tower-http's
/// `RequestBodyTimeoutLayer`; [`serve_router`] bounds it, see
/// [`request_body_timeout`](ServeOptions::request_body_timeout)). Each of the limits
/// below, 30 s or 60 s here, is a setting of [`serve_with`] (see [`ServeOptions`],
/// also for HTTP/2's stream limit and keep-alive pings and HTTP/1
/// half-closes, off here: a client that shuts down its writing side after
/// its request may get no response):
///
/// * an HTTP/1 connection is closed once it has waited 30 s for the
///   headers of its next request, from the end of its last response or
///   from its first bytes (hyper's header timeout,
///   [`http1_header_read_timeout`](ServeOptions::http1_header_read_timeout));
/// * an HTTP/2 connection on which no stream has been open for 30 s (no
///   request running, no response being sent), counted from the end of its
///   last stream or from its preface, is closed as the drain closes it
///   (below): `GOAWAY`, the streams the client sent before reading it
///   served, then closed. `PING`s and settings do not count as use. A
///   request that runs, or a response that is sent, for longer (a slow
///   download, a long-lived stream) keeps its connection as long
///   ([`http2_idle_timeout`](ServeOptions::http2_idle_timeout));
/// * a connection whose first bytes have not told its protocol 30 s after
///   it was served (accepted, or given its slot under a `limit`: a silent
///   client, or one stopped inside the HTTP/2 preface, which hyper-util
///   reads with no timeout) is dropped
///   ([`sniff_timeout`](ServeOptions::sniff_timeout));
/// * a connection whose socket writes have been blocked for 60 s, the
///   client taking none of a response's bytes in that time, is dropped, on
///   either protocol and during a drain too, as is an HTTP/2 connection
///   whose responses have all been held back by the client's flow control
///   that long; each write that gets bytes out, and each window granted
///   that lets a response go on, starts the count again, so a client that
///   reads slowly but steadily is kept, and a response that writes nothing
///   for a while blocks nothing
///   ([`send_timeout`](ServeOptions::send_timeout), nginx's: see there
///   what "steadily" takes).
///
/// When `group` is cancelled, as its [`shutdown`](WaitGroup::shutdown) does
/// after closing it:
///
/// * the accept loop ends and drops the listener: new connections are
///   refused by the system;
/// * each connection shuts down gracefully: HTTP/1 answers its in-flight
///   request with `connection: close` and closes (an idle connection, or
///   one that has sent nothing yet, closes at once; one whose request
///   headers are still arriving counts as in flight, up to the header
///   read timeout, 30 s here), HTTP/2 sends `GOAWAY` and closes once its
///   streams are done (their responses sent: a client reading a large one
///   at its own pace gets it to the end, as on HTTP/1) and the client
///   answered the `PING` sent with it (a client that has not answered one
///   second after its last response was sent, or that died without closing
///   its socket, has the connection dropped; streams such a client opens
///   more than a second after the `GOAWAY` are served, but not waited for,
///   so it cannot hold the drain open by opening more). A client that stops reading a
///   response it asked for, or on HTTP/2 stops granting window for it,
///   holds the drain for the send timeout (60 s here), then is dropped,
///   also under `shutdown(Duration::MAX)`;
/// * what is still running at the shutdown's deadline is aborted and named
///   in its report (`conn 1.2.3.4:5678`, created at the line that called
///   `serve`), and groups linked after `group` are closed only after those
///   aborts took effect.
///
/// A connection accepted once the group is [closed](WaitGroup::close) is
/// dropped unserved (the client sees the connection closed without a
/// response), and the accept loop ends. Under the group's
/// [`limit`](crate::WaitGroupBuilder::limit) (which counts the accept loop
/// and the connections) the loop waits for a free slot before serving the
/// next connection. A connection holds its slot until it closes: an idle
/// one for at most 30 s on either protocol, one whose client stops reading
/// its response for at most 60 s (see above; what [`ServeOptions`] sets),
/// so `n` clients that connect and do nothing, or ask and do not read, can
/// hold `n` slots that long, but not for ever (the way above aside: a
/// client that stops sending a body its handler reads, which
/// [`serve_router`] bounds).
/// An HTTP/2 request runs in its connection's slot, as an HTTP/1 request
/// runs in its connection's task (hyper bounds the streams of a
/// connection: 200 at a time, see
/// [`http2_max_concurrent_streams`](ServeOptions::http2_max_concurrent_streams)).
///
/// An upgraded connection (a WebSocket) leaves the group at the upgrade:
/// see the [module docs](super). A handler that awaits a group of its own
/// makes it with [`group.scoped_child()`](WaitGroup::scoped_child), which
/// is cancelled with the connections: one made with `group.child()` is
/// cancelled only after them, so it holds its connection until the deadline
/// and is aborted there, unanswered (see
/// [work a handler starts](super#work-a-handler-starts)).
///
/// An accept error that concerns one connection (reset or aborted before it
/// was accepted, and the network errors Linux reports there) is skipped; one
/// that says the process is out of resources (`EMFILE`, `ENFILE`, `ENOBUFS`,
/// `ENOMEM`) makes the loop pause, 1 ms at first, doubling up to 1 s, and
/// back to 1 ms after the next success; any other ends the accept loop with
/// that error, recorded as its failure (connections already served go on).
///
/// A connection's own errors (a client that hangs up mid-request, a
/// malformed request, a header timeout) are the client's: they end the
/// connection and are not recorded as failures. A handler's panic is
/// recorded, with the connection's name, and its client gets no response:
/// on HTTP/1 the panic ends the connection's task, so the connection is
/// closed; on HTTP/2 the request's stream is reset. For a `500` instead,
/// catch panics in the service (tower-http's `CatchPanicLayer` does). Connections are not
/// [critical](crate::TaskBuilder::critical): their failure does not cancel
/// the group, even with `cancel_on_error`.
///
/// `service` is a hyper service, cloned for each connection; for a tower
/// service (an axum `Router`, a `ServiceBuilder` stack) wrap it in
/// [`hyper_util::service::TowerToHyperService`], or use [`serve_router`].
/// With the `axum` feature each request carries the client's address as
/// axum's `ConnectInfo<SocketAddr>` extension, so handlers can extract it
/// as with `into_make_service_with_connect_info`.
///
/// # Examples
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let group = WaitGroup::builder().name("http").build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let hello = service_fn(|_req: Request<Incoming>| async {
///     Ok::<_, Infallible>(Response::new("hello\n".to_string()))
/// });
/// taskgroup::http::serve(&group, listener, hello);
///
/// tokio::signal::ctrl_c().await?;
/// let report = group.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// If called outside a Tokio runtime.
#[track_caller]
pub fn serve<S, B>(group: &WaitGroup, listener: TcpListener, service: S) -> TaskHandle<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(group, listener, service, ServeOptions::default())
}

/// [`serve`] with the connection settings `opts`: its time limits on idle
/// and slow clients, HTTP/2's stream limit and keep-alive pings, HTTP/1
/// half-closes (see [`ServeOptions`]). `serve` is
/// `serve_with(.., ServeOptions::default())`.
///
/// # Examples
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use taskgroup::{http::ServeOptions, WaitGroup};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let group = WaitGroup::builder().name("http").build();
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// let hello = service_fn(|_req: Request<Incoming>| async {
///     Ok::<_, Infallible>(Response::new("hello\n".to_string()))
/// });
/// // A public server: slow clients get 10 s for their headers.
/// let opts = ServeOptions::new().http1_header_read_timeout(Duration::from_secs(10));
/// taskgroup::http::serve_with(&group, listener, hello, opts);
///
/// tokio::signal::ctrl_c().await?;
/// let report = group.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// If called outside a Tokio runtime.
#[track_caller]
pub fn serve_with<S, B>(
    group: &WaitGroup,
    listener: TcpListener,
    service: S,
    opts: ServeOptions,
) -> TaskHandle<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let name = match listener.local_addr() {
        Ok(addr) => format!("http accept {addr}"),
        Err(_) => "http accept".to_owned(),
    };
    let conns = group.clone();
    // The connections' and requests' tasks are created here too, as
    // reports name them (not where the loop spawns them, in this crate).
    let site = Location::caller();
    group
        .task()
        .name(name)
        .go(move |ctx| accept_loop(ctx, conns, listener, service, Arc::new(opts), site))
}

/// [`serve`] for an axum [`Router`](axum::Router): the same as
/// `serve(group, listener, TowerToHyperService::new(router))`, but that a
/// handler's read of the request body fails once the client has sent
/// nothing of it for 60 s, so that a client that stops inside its body
/// does not hold its connection for ever (see
/// [`request_body_timeout`](ServeOptions::request_body_timeout); axum's
/// extractors answer `400` then).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use taskgroup::WaitGroup;
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let group = WaitGroup::builder().name("http").build();
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// taskgroup::http::serve_router(&group, listener, app);
///
/// tokio::signal::ctrl_c().await?;
/// let report = group.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// If called outside a Tokio runtime.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[track_caller]
pub fn serve_router(
    group: &WaitGroup,
    listener: TcpListener,
    router: axum::Router,
) -> TaskHandle<()> {
    serve_router_with(group, listener, router, ServeOptions::default())
}

/// [`serve_router`] with the connection settings `opts` (see
/// [`ServeOptions`]): the same as
/// `serve_with(group, listener, TowerToHyperService::new(router), opts)`,
/// with each request's body read under
/// [`request_body_timeout`](ServeOptions::request_body_timeout).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use taskgroup::{http::ServeOptions, WaitGroup};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let group = WaitGroup::builder().name("http").build();
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// // Many streams at a time on one HTTP/2 connection, and a ping after
/// // 20 s of silence, to find clients gone without closing.
/// let opts = ServeOptions::new()
///     .http2_max_concurrent_streams(1000)
///     .http2_keep_alive_interval(Duration::from_secs(20));
/// taskgroup::http::serve_router_with(&group, listener, app, opts);
///
/// tokio::signal::ctrl_c().await?;
/// let report = group.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// If called outside a Tokio runtime.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[track_caller]
pub fn serve_router_with(
    group: &WaitGroup,
    listener: TcpListener,
    router: axum::Router,
    opts: ServeOptions,
) -> TaskHandle<()> {
    let router = super::body::TimedRouter::new(router, limited(opts.request_body_timeout));
    serve_with(
        group,
        listener,
        hyper_util::service::TowerToHyperService::new(router),
        opts,
    )
}

/// Accepts connections until the drain signal, or until the group is
/// closed; each is a task of `group`, created at `site`.
async fn accept_loop<S, B>(
    ctx: TaskContext,
    group: WaitGroup,
    listener: TcpListener,
    service: S,
    opts: Arc<ServeOptions>,
    site: &'static Location<'static>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut backoff = Backoff::new();
    loop {
        if group.is_closed() {
            return Ok(()); // served on a closed group: refuse at once
        }
        let accepted = tokio::select! {
            biased;
            () = drain_signal(&ctx) => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) => match AcceptError::of(&e) {
                AcceptError::Connection => continue,
                AcceptError::Resources => {
                    tokio::select! {
                        biased;
                        () = drain_signal(&ctx) => return Ok(()),
                        () = tokio::time::sleep(backoff.next()) => continue,
                    }
                }
                AcceptError::Fatal => return Err(e),
            },
        };
        // A socket that fails this is failing already: its connection ends
        // as any such does.
        let _ = opts.configure_socket(&stream);
        let conn = Conn {
            group: group.clone(),
            label: Arc::new(ConnLabel::new(peer, site)),
            service: service.clone(),
            opts: opts.clone(),
        };
        let name = conn.label.name.clone();
        // Waits for a slot only under a limit; refused once closed (the
        // stream is dropped with the closure: the client sees it closed).
        let spawned = tokio::select! {
            biased;
            () = drain_signal(&ctx) => return Ok(()),
            spawned = group
                .task()
                .name(name)
                .critical(false)
                .go_when_free_at(site, move |ctx| conn.run(ctx, stream)) => spawned,
        };
        if spawned.is_err() {
            return Ok(());
        }
    }
}

/// One connection's task: its group (for HTTP/2 requests), its name, the
/// service and the server's settings.
struct Conn<S> {
    group: WaitGroup,
    label: Arc<ConnLabel>,
    service: S,
    opts: Arc<ServeOptions>,
}

impl<S, B> Conn<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves the connection until the client closes it or, after the drain
    /// signal or once idle on HTTP/2 ([`h2_idle`]), until its graceful
    /// shutdown is done; drops it if its protocol is still unknown after
    /// the sniff timeout ([`undecided`]). Its errors are the client's, so
    /// they are not returned.
    async fn run(self, ctx: TaskContext, stream: TcpStream) {
        let executor = GroupExecutor {
            group: self.group,
            label: self.label.clone(),
        };
        let mut builder = auto::Builder::new(executor);
        self.opts.configure(&mut builder);
        let (sniff, idle, send) = (
            self.opts.sniff_limit(),
            limited(self.opts.http2_idle_timeout),
            limited(self.opts.send_timeout),
        );
        let label = self.label.clone();
        let service = NameRequests {
            inner: self.service,
            label: self.label,
            ctx: ctx.clone(),
        };
        let stream = Sniff {
            inner: stream,
            matched: 0,
            label: label.clone(),
            h2: None,
        };
        let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
        // Biased: once the drain signal is there, the connection is told
        // before it is polled again. A response finished in a poll that
        // began before the signal (the handler saw it, the connection did
        // not yet) gets `connection: close` from `NameRequests`.
        tokio::select! {
            biased;
            () = drain_signal(&ctx) => {
                conn.as_mut().graceful_shutdown();
                let closing = async {
                    if label.h2.load(Ordering::Relaxed) {
                        close_h2(conn, &label).await;
                    } else {
                        let _ = conn.await;
                    }
                };
                unless_stalled(closing, &label, send).await;
            }
            _ = conn.as_mut() => {}
            () = undecided(&label, sniff) => {}
            () = h2_idle(&label, idle) => {
                conn.as_mut().graceful_shutdown();
                unless_stalled(close_h2(conn, &label), &label, send).await;
            }
            () = stalled(&label, send) => {}
        }
    }
}

/// Resolves `limit` (the sniff timeout; `None` for none) after the
/// connection was accepted if its protocol is not known by then (it is
/// dropped); never if it is.
/// hyper-util reads the first bytes, up to the 24 of the HTTP/2 preface,
/// with no timeout of its own (hyper's header timeout starts once it handed
/// the connection to HTTP/1), so a client that sent part of the preface and
/// stopped would hold its connection, and its slot under a `limit`, for
/// ever.
async fn undecided(label: &ConnLabel, limit: Option<Duration>) {
    sleep_or_never(limit).await;
    if label.sniffed.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Resolves once an HTTP/2 connection has had no stream open (none
/// running, no response being sent) for `limit` (the HTTP/2 idle timeout;
/// `None` for none: never), counted from the end of its last stream, or
/// from the end of the preface if it had none; never on HTTP/1, where
/// hyper's header timeout closes an idle connection. `PING`s and other
/// frames that open no stream do not count: they are no work for the
/// server.
async fn h2_idle(label: &ConnLabel, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        label.streams_done().await;
        label.responses_sent().await;
        // Made before the look: a stream that starts after it wakes it.
        let busy = label.busy.notified();
        if label.streams.load(Ordering::Acquire) != 0
            || label.responses.load(Ordering::Acquire) != 0
        {
            continue;
        }
        // Biased: a stream that started in the poll in which the time ran
        // out (read by the connection's task just before) keeps it.
        tokio::select! {
            biased;
            () = busy => continue,
            () = tokio::time::sleep(limit) => {}
        }
        if label.h2.load(Ordering::Relaxed) {
            return;
        }
        if label.sniffed.load(Ordering::Relaxed) {
            // HTTP/1: hyper's header timeout closes an idle connection.
            std::future::pending::<()>().await;
        }
        // Undecided: dropped by `undecided`, or HTTP/2 by the next round.
    }
}

/// Resolves once the client has taken nothing of what the server sends
/// for `limit` (the send timeout; `None` for none: never): the connection's
/// socket writes blocked, no write getting bytes out since the block began
/// (see [`ConnLabel::write_blocked`]), or on HTTP/2 every response not sent
/// yet held back by the client's flow control, no window granted that lets
/// one go on (see [`H2Frames`]). A block or hold that ends starts the count
/// again at the next one.
async fn stalled(label: &ConnLabel, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    tokio::select! {
        () = lasted(&label.blocked_since, &label.blocked, label.created, limit) => {}
        () = lasted(&label.held_since, &label.held, label.created, limit) => {}
    }
}

/// Resolves once `since` (milliseconds from `created`, plus one, when
/// something began; 0 while it is not under way) has kept one value other
/// than 0 for `limit`; `starts` is notified when it is set. Counted to the
/// millisecond: a span that ended and another that began in the same
/// millisecond are one.
async fn lasted(
    since: &AtomicU64,
    starts: &tokio::sync::Notify,
    created: Instant,
    limit: Duration,
) {
    loop {
        // Made before the look: a span that starts after it wakes it.
        let started = starts.notified();
        let at = since.load(Ordering::Acquire);
        if at == 0 {
            started.await;
            continue;
        }
        let began = created + Duration::from_millis(at - 1);
        tokio::time::sleep_until(began + limit).await;
        if since.load(Ordering::Acquire) == at {
            return;
        }
    }
}

/// `created.elapsed()` in milliseconds, plus one (so never 0), as the
/// spans of [`lasted`] are kept.
fn millis_since(created: Instant) -> u64 {
    let ms = created.elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// Runs `closing` (a connection's graceful shutdown) unless the
/// connection's writes stay blocked for `limit` first ([`stalled`]), in
/// which case it is dropped, and the connection with it.
async fn unless_stalled(
    closing: impl Future<Output = ()>,
    label: &ConnLabel,
    limit: Option<Duration>,
) {
    tokio::select! {
        biased;
        () = closing => {}
        () = stalled(label, limit) => {}
    }
}

/// How long an HTTP/2 connection told to shut down is kept once none of
/// its streams is running, for the client to answer the `PING` sent with
/// the `GOAWAY` (a round trip; hyper closes the connection as soon as the
/// answer comes).
const H2_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Waits for an HTTP/2 connection told to shut down (its `GOAWAY` sent) to
/// close: as long as its streams run or their responses are being sent (the
/// group's shutdown bounds that), then [`H2_CLOSE_WAIT`] with none starting,
/// running or being sent, after which it is dropped. h2 closes a connection
/// that has sent its `GOAWAY` only once the client answered the `PING` sent
/// with it, so a client that never answers (or a peer that died without
/// closing its socket) would hold the drain until its deadline, and forever
/// under `Duration::MAX`.
///
/// A stream's task ends once hyper has handed the response's last bytes to
/// h2, which sends them as the client's flow-control window allows: a large
/// response to a client that reads it at its own pace is still being sent
/// then, so the responses are counted apart, from the frames on the socket
/// (see [`H2Frames`]), until their last frame is written. As on HTTP/1, a
/// client that stops reading a response (or granting window for it) holds
/// the drain until the send timeout drops it (see [`stalled`]; `Conn::run`
/// races it with this).
///
/// Until that answer, h2 still takes new streams (the first `GOAWAY` allows
/// any). A client answers within a round trip, and only the streams it sent
/// before reading the `GOAWAY` are in flight; one that has not answered
/// after [`H2_CLOSE_WAIT`] ignores it. The streams that start from then on
/// are late: served, but neither waited for nor counted as starting, so a
/// client that opens one every second or faster cannot hold the drain open
/// for ever. They are cut off when the connection is dropped (their tasks,
/// tasks of the group, run on to their end, as the shutdown's grace allows).
async fn close_h2<C: Future>(mut conn: Pin<&mut C>, label: &ConnLabel) {
    let _ = label
        .late_from
        .set(tokio::time::Instant::now() + H2_CLOSE_WAIT);
    loop {
        let started = label.streams_started.load(Ordering::Acquire);
        let idle = async {
            label.streams_done().await;
            label.responses_sent().await;
            tokio::time::sleep(H2_CLOSE_WAIT).await;
        };
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = idle => {}
        }
        if label.streams.load(Ordering::Acquire) == 0
            && label.streams_started.load(Ordering::Acquire) == started
            && label.responses.load(Ordering::Acquire) == 0
        {
            return;
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4): a connection that
/// starts with it is HTTP/2, as hyper-util's `auto` builder tells them.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's socket, which notes in its [`ConnLabel`] whether the
/// client's first bytes are the HTTP/2 preface (hyper-util does not say
/// which protocol it chose), and on HTTP/2 which responses are still being
/// sent (see [`H2Frames`]). On HTTP/1 only the first bytes are looked at.
struct Sniff {
    inner: TcpStream,
    /// How many bytes of the preface the client's first bytes matched;
    /// `usize::MAX` once one did not.
    matched: usize,
    label: Arc<ConnLabel>,
    /// The frames of an HTTP/2 connection, from the end of its preface.
    h2: Option<Box<H2Frames>>,
}

impl Sniff {
    /// Notes the bytes `new` just read.
    fn read(&mut self, mut new: &[u8]) {
        if self.matched < H2_PREFACE.len() {
            let rest = &H2_PREFACE[self.matched..];
            let n = new.len().min(rest.len());
            if new[..n] != rest[..n] {
                self.matched = usize::MAX;
                self.label.sniffed.store(true, Ordering::Relaxed);
                return;
            }
            self.matched += n;
            new = &new[n..];
            if self.matched < H2_PREFACE.len() {
                return;
            }
            self.label.h2.store(true, Ordering::Relaxed);
            self.label.sniffed.store(true, Ordering::Relaxed);
            // The idle timeout counts from the preface (see `h2_idle`).
            self.label.busy.notify_waiters();
            self.h2 = Some(Box::default());
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.read(new, &self.label);
        }
    }

    /// Notes the first `n` bytes of `bufs` (`n > 0`), just written: a
    /// blocked write, if any, is over (see [`stalled`]).
    fn written<'b>(&mut self, bufs: impl IntoIterator<Item = &'b [u8]>, mut n: usize) {
        self.label.wrote();
        let Some(h2) = self.h2.as_mut() else {
            return;
        };
        for buf in bufs {
            if n == 0 {
                break;
            }
            let part = &buf[..n.min(buf.len())];
            n -= part.len();
            h2.written(part, &self.label);
        }
    }
}

impl AsyncRead for Sniff {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.matched != usize::MAX {
            this.read(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for Sniff {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        match written {
            Poll::Ready(Ok(n)) if n > 0 => this.written([buf], n),
            Poll::Pending => this.label.write_blocked(),
            _ => {}
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        match written {
            Poll::Ready(Ok(n)) if n > 0 => this.written(bufs.iter().map(|b| &**b), n),
            Poll::Pending => this.label.write_blocked(),
            _ => {}
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The streams of an HTTP/2 connection whose response is not sent yet, told
/// from the frames read and written (hyper does not say when h2 has sent a
/// response: its stream's task ends when the body is handed over), and
/// whether the client's flow control holds all of them back.
///
/// A stream is open from the client's first `HEADERS` on it (a new stream
/// id, they only grow) until the server writes a frame that ends it
/// (`END_STREAM` on `DATA` or `HEADERS`) or either side resets it
/// (`RST_STREAM`). A stream the client opens from [`ConnLabel::late_from`]
/// on is not counted (see [`close_h2`]). The count is in
/// [`ConnLabel::responses`]; the set is as large as the streams in flight
/// (h2 refuses, with a reset, what is beyond its limit).
///
/// # Flow control
///
/// The server may send on a stream no more `DATA` than the client's window
/// for that stream and for the connection allow (RFC 9113, section 5.2):
/// each starts at 65,535 bytes (a stream's at the client's
/// `SETTINGS_INITIAL_WINDOW_SIZE`, which moves every open stream's window
/// by the change), grows by the client's `WINDOW_UPDATE`s and shrinks by
/// the `DATA` written. A client whose application stops reading stops
/// granting window, and h2 then writes nothing: no socket write blocks, so
/// [`ConnLabel::write_blocked`] cannot see it. So the windows are counted
/// here, and the connection is *held* ([`held`](Self::held)) while every
/// open response is held back: one whose `DATA` has used up its stream's
/// window, or one whose response has begun (`HEADERS` written) while the
/// connection's window is used up (whether it has more to send or not: a
/// server-sent-events stream between events counts). A response whose
/// handler has not answered yet, or that has sent no `DATA` on a stream
/// whose window the client opened at zero, is not held (it may have
/// nothing to send), nor is the connection while any such response is
/// open: one stream that still moves keeps the connection, and so does a
/// new request, which un-holds it until its response is held or sent.
struct H2Frames {
    read: FrameHeaders,
    written: FrameHeaders,
    /// The highest stream id the client opened.
    newest: u32,
    open: std::collections::HashMap<u32, Flow>,
    /// The client's `SETTINGS_INITIAL_WINDOW_SIZE`: a new stream's window.
    initial: i64,
    /// The connection's window: what the server may still send on all its
    /// streams together.
    window: i64,
    /// Whether the connection was held at the last look.
    held: bool,
}

impl Default for H2Frames {
    fn default() -> Self {
        H2Frames {
            read: FrameHeaders::default(),
            written: FrameHeaders::default(),
            newest: 0,
            open: std::collections::HashMap::new(),
            initial: frame::DEFAULT_WINDOW,
            window: frame::DEFAULT_WINDOW,
            held: false,
        }
    }
}

/// An open stream's response, as far as flow control goes.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// What the client granted on the stream beyond the initial window,
    /// less the `DATA` sent: the stream's window is the initial window plus
    /// this (negative after the client shrank the initial window below
    /// what was sent). Kept apart from the initial window, so that a change
    /// of it moves every stream's window at once, not one stream at a time
    /// (a client sending thousands of settings a frame, each a change, cost
    /// settings times streams).
    credit: i64,
    /// The response's `HEADERS` are written.
    started: bool,
    /// Some of its `DATA` is written.
    sent: bool,
}

impl Flow {
    /// Held back by the client's flow control (see [`H2Frames`]), the
    /// initial window being `initial` and the connection's `window`.
    fn held(&self, initial: i64, window: i64) -> bool {
        (self.sent && initial + self.credit <= 0) || (self.started && window <= 0)
    }
}

/// HTTP/2 frame types, flags and settings (RFC 9113, sections 6 and 6.5.2).
mod frame {
    pub(super) const DATA: u8 = 0x0;
    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const WINDOW_UPDATE: u8 = 0x8;
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const ACK: u8 = 0x1;
    pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// A window before any setting or update changes it.
    pub(super) const DEFAULT_WINDOW: i64 = 65_535;
}

impl H2Frames {
    fn read(&mut self, bytes: &[u8], label: &ConnLabel) {
        let Self {
            read,
            newest,
            open,
            initial,
            window,
            ..
        } = self;
        let keep = |kind| kind == frame::SETTINGS || kind == frame::WINDOW_UPDATE;
        read.feed(bytes, keep, |f, payload| match f.kind {
            frame::HEADERS if f.stream > *newest => {
                *newest = f.stream;
                let late = label
                    .late_from
                    .get()
                    .is_some_and(|from| Instant::now() >= *from);
                if !late {
                    let flow = Flow {
                        credit: 0,
                        started: false,
                        sent: false,
                    };
                    open.insert(f.stream, flow);
                }
            }
            frame::RST_STREAM => {
                open.remove(&f.stream);
            }
            frame::SETTINGS if f.flags & frame::ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    if id != frame::INITIAL_WINDOW_SIZE {
                        continue;
                    }
                    let value = [setting[2], setting[3], setting[4], setting[5]];
                    *initial = i64::from(u32::from_be_bytes(value));
                }
            }
            frame::WINDOW_UPDATE => {
                let Ok(increment) = <[u8; 4]>::try_from(payload) else {
                    return; // malformed: h2 ends the connection
                };
                let increment = i64::from(u32::from_be_bytes(increment) & 0x7fff_ffff);
                if f.stream == 0 {
                    *window += increment;
                } else if let Some(flow) = open.get_mut(&f.stream) {
                    flow.credit += increment;
                }
            }
            _ => {}
        });
        self.publish(label);
    }

    fn written(&mut self, bytes: &[u8], label: &ConnLabel) {
        let Self {
            written,
            open,
            window,
            ..
        } = self;
        written.feed(
            bytes,
            |_| false,
            |f, _| {
                let ends = f.flags & frame::END_STREAM != 0;
                match f.kind {
                    frame::DATA => {
                        let len = f.len as i64;
                        *window -= len;
                        if ends {
                            open.remove(&f.stream);
                        } else if let Some(flow) = open.get_mut(&f.stream) {
                            flow.credit -= len;
                            flow.started = true;
                            flow.sent = true;
                        }
                    }
                    frame::HEADERS if ends => {
                        open.remove(&f.stream);
                    }
                    frame::HEADERS => {
                        if let Some(flow) = open.get_mut(&f.stream) {
                            flow.started = true;
                        }
                    }
                    frame::RST_STREAM => {
                        open.remove(&f.stream);
                    }
                    _ => {}
                }
            },
        );
        self.publish(label);
    }

    /// Whether every open response is held back by the client's flow
    /// control (see the type's docs); not with none open.
    fn held(&self) -> bool {
        let (initial, window) = (self.initial, self.window);
        !self.open.is_empty() && self.open.values().all(|flow| flow.held(initial, window))
    }

    /// Puts the count where [`close_h2`] and [`h2_idle`] read it; wakes the
    /// first when it falls to zero, the second when it rises from zero.
    /// Notes a change of [`held`](Self::held) for [`stalled`].
    fn publish(&mut self, label: &ConnLabel) {
        let now = self.open.len();
        match label.responses.swap(now, Ordering::AcqRel) {
            0 if now > 0 => label.busy.notify_waiters(),
            before if before > 0 && now == 0 => label.responses_ended.notify_waiters(),
            _ => {}
        }
        let held = self.held();
        if held != self.held {
            self.held = held;
            label.set_held(held);
        }
    }
}

/// A frame's header (RFC 9113, section 4.1).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    /// The payload's length.
    len: usize,
}

/// The most of a frame's payload [`FrameHeaders::feed`] keeps: a `SETTINGS`
/// frame of the largest size a client may send before it is told more
/// (16,384 bytes, RFC 9113, section 4.2), 2,730 settings.
const MAX_KEPT: usize = 16_384;

/// The most room [`FrameHeaders`] keeps for payloads between frames: a
/// usual `SETTINGS` frame (a few settings of 6 bytes each) fits.
const KEPT_BETWEEN: usize = 64;

/// The HTTP/2 frames in a byte stream, their headers and the payloads of
/// the few kinds asked for; fed the bytes as they come, in pieces of any
/// size.
#[derive(Default)]
struct FrameHeaders {
    header: [u8; 9],
    /// How much of `header` the bytes so far filled.
    filled: usize,
    /// What is left of the current frame's payload.
    skip: usize,
    /// The current frame, if its payload is kept.
    keeping: Option<Frame>,
    /// The kept payload so far (at most [`MAX_KEPT`] bytes; what is beyond
    /// is skipped).
    payload: Vec<u8>,
}

impl FrameHeaders {
    /// Calls `f(frame, payload)` for each frame in `bytes`: at its header,
    /// with no payload, or, for a frame of a kind that `keep` takes, once
    /// its payload is in, with the payload (its first [`MAX_KEPT`] bytes).
    fn feed(
        &mut self,
        mut bytes: &[u8],
        keep: impl Fn(u8) -> bool,
        mut f: impl FnMut(Frame, &[u8]),
    ) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                if self.keeping.is_some() {
                    let room = MAX_KEPT - self.payload.len();
                    self.payload.extend_from_slice(&bytes[..n.min(room)]);
                }
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    if let Some(frame) = self.keeping.take() {
                        f(frame, &self.payload);
                        self.payload.clear();
                        // A few settings or a window update fit: a larger
                        // buffer (a client's long SETTINGS) is not kept.
                        if self.payload.capacity() > KEPT_BETWEEN {
                            self.payload = Vec::new();
                        }
                    }
                }
                continue;
            }
            let n = (self.header.len() - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == self.header.len() {
                self.filled = 0;
                let h = self.header;
                let frame = Frame {
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    len: u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize,
                };
                self.skip = frame.len;
                if frame.len > 0 && keep(frame.kind) {
                    self.keeping = Some(frame);
                } else {
                    f(frame, &[]);
                }
            }
        }
    }
}

/// A connection's name, the name of the HTTP/2 request hyper is about to
/// hand to the executor, and what its shutdown needs to know of HTTP/2.
///
/// hyper's HTTP/2 server calls the service and then, in the same poll of
/// the connection, gives the request's future to the executor: so the name
/// the service records is the one the executor takes next. Should hyper
/// ever do otherwise, a request's task is named after its connection only.
struct ConnLabel {
    /// The client's address.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    peer: SocketAddr,
    /// `conn <peer>`.
    name: Cow<'static, str>,
    /// Where the server was started: its tasks' creation site.
    site: &'static Location<'static>,
    /// `<METHOD> <path>` of the HTTP/2 request being spawned.
    next: Mutex<Option<String>>,
    /// The client's first bytes were the HTTP/2 preface.
    h2: AtomicBool,
    /// The client's first bytes told the protocol (see [`undecided`]).
    sniffed: AtomicBool,
    /// What hyper handed to the executor (HTTP/2 streams) and is still
    /// running, and how many it handed in all; neither counts a late one
    /// (see [`close_h2`]).
    streams: AtomicUsize,
    streams_started: AtomicU64,
    /// From when a new stream is late: [`H2_CLOSE_WAIT`] after the `GOAWAY`.
    late_from: std::sync::OnceLock<tokio::time::Instant>,
    /// Notified when `streams` falls to zero.
    streams_ended: tokio::sync::Notify,
    /// HTTP/2 responses not sent yet (see [`H2Frames`]).
    responses: AtomicUsize,
    /// Notified when `responses` falls to zero.
    responses_ended: tokio::sync::Notify,
    /// Notified when `streams` or `responses` rises from zero, and at the
    /// end of the HTTP/2 preface: the connection is no longer idle, or its
    /// idle time starts again (see [`h2_idle`]).
    busy: tokio::sync::Notify,
    /// When the socket's writes blocked (a write returned `Pending`) with
    /// none getting bytes out since: milliseconds from `created`, plus one;
    /// 0 while not blocked. Set by the first write that blocks, cleared by
    /// the next one that writes bytes (see [`stalled`]).
    blocked_since: AtomicU64,
    /// What `blocked_since` and `held_since` count from.
    created: Instant,
    /// Notified when `blocked_since` is set: a block starts.
    blocked: tokio::sync::Notify,
    /// On HTTP/2, when every response not sent yet came to be held back by
    /// the client's flow control (see [`H2Frames`]), as `blocked_since`
    /// counts; 0 while not.
    held_since: AtomicU64,
    /// Notified when `held_since` is set.
    held: tokio::sync::Notify,
}

impl ConnLabel {
    fn new(peer: SocketAddr, site: &'static Location<'static>) -> ConnLabel {
        ConnLabel {
            peer,
            site,
            name: Cow::Owned(format!("conn {peer}")),
            next: Mutex::new(None),
            h2: AtomicBool::new(false),
            sniffed: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            streams_started: AtomicU64::new(0),
            late_from: std::sync::OnceLock::new(),
            streams_ended: tokio::sync::Notify::new(),
            responses: AtomicUsize::new(0),
            responses_ended: tokio::sync::Notify::new(),
            busy: tokio::sync::Notify::new(),
            blocked_since: AtomicU64::new(0),
            created: Instant::now(),
            blocked: tokio::sync::Notify::new(),
            held_since: AtomicU64::new(0),
            held: tokio::sync::Notify::new(),
        }
    }

    /// Notes that a write of the socket returned `Pending`: the block
    /// starts now, unless it had already.
    #[cold]
    fn write_blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            return; // the same block, woken without room
        }
        let since = millis_since(self.created);
        // Release: a watcher woken by the notification, or that reads
        // `since`, counts from it (`stalled` reads it with Acquire).
        self.blocked_since.store(since, Ordering::Release);
        self.blocked.notify_waiters();
    }

    /// Notes that a write got bytes out: a block, if any, is over. The
    /// write path's only cost: one relaxed load and a branch.
    #[inline]
    fn wrote(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Notes whether every HTTP/2 response not sent yet is held back by the
    /// client's flow control (see [`H2Frames::held`]), as it changed.
    #[cold]
    fn set_held(&self, held: bool) {
        if held {
            self.held_since
                .store(millis_since(self.created), Ordering::Release);
            self.held.notify_waiters();
        } else {
            self.held_since.store(0, Ordering::Release);
        }
    }

    /// Resolves once no response is being sent.
    async fn responses_sent(&self) {
        until_zero(&self.responses, &self.responses_ended).await;
    }

    /// Resolves once no stream is running.
    async fn streams_done(&self) {
        until_zero(&self.streams, &self.streams_ended).await;
    }
}

/// Resolves once `count` is zero; `zero` is notified (`notify_waiters`) each
/// time it falls to zero.
async fn until_zero(count: &AtomicUsize, zero: &tokio::sync::Notify) {
    loop {
        // Made before the look: a `notify_waiters` after it wakes it.
        let ended = zero.notified();
        if count.load(Ordering::Acquire) == 0 {
            return;
        }
        ended.await;
    }
}

/// One stream of a connection, counted in its [`ConnLabel`] while its task
/// runs (until it ends, or is dropped unfinished).
struct Stream(Arc<ConnLabel>);

impl Stream {
    /// The stream, counted; `None` for a late one (see [`close_h2`]).
    fn new(label: Arc<ConnLabel>) -> Option<Stream> {
        if let Some(from) = label.late_from.get() {
            if tokio::time::Instant::now() >= *from {
                return None;
            }
        }
        label.streams_started.fetch_add(1, Ordering::AcqRel);
        if label.streams.fetch_add(1, Ordering::AcqRel) == 0 {
            label.busy.notify_waiters();
        }
        Some(Stream(label))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.streams_ended.notify_waiters();
        }
    }
}

/// The service of one connection: records the name of each HTTP/2 request
/// for the executor (see [`ConnLabel`]).
struct NameRequests<S> {
    inner: S,
    label: Arc<ConnLabel>,
    /// The connection task's context: an HTTP/1 response finished once it
    /// is draining says `connection: close`.
    ctx: TaskContext,
}

impl<S, B> Service<Request<Incoming>> for NameRequests<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CloseWhenDraining<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        #[cfg(feature = "axum")]
        let req = {
            let mut req = req;
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(self.label.peer));
            req
        };
        let http1 = req.version() < http::Version::HTTP_2;
        if req.version() == http::Version::HTTP_2 {
            *self.label.next.lock() = Some(super::request_name(req.method(), req.uri().path()));
        }
        CloseWhenDraining {
            inner: self.inner.call(req),
            ctx: http1.then(|| self.ctx.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future. For HTTP/1, a response finished once the
    /// connection is draining gets `connection: close` (hyper then closes
    /// the connection after it), whichever of the drain signal and the
    /// response the connection's task saw first.
    struct CloseWhenDraining<F> {
        #[pin]
        inner: F,
        // `None` for HTTP/2, which drains with GOAWAY instead.
        ctx: Option<TaskContext>,
    }
}

impl<F, B, E> Future for CloseWhenDraining<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(ctx)) = (&mut result, this.ctx.as_ref()) {
            // Not a protocol switch (a WebSocket upgrade): that connection
            // is handed over, not closed.
            if response.status() != http::StatusCode::SWITCHING_PROTOCOLS && ctx.is_draining() {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }
        std::task::Poll::Ready(result)
    }
}

/// Runs what hyper spawns for a connection (its HTTP/2 requests) as tasks of
/// the group, so that a shutdown waits for them, aborts them and names them,
/// as it does the connections.
#[derive(Clone)]
struct GroupExecutor {
    group: WaitGroup,
    label: Arc<ConnLabel>,
}

impl<F> hyper::rt::Executor<F> for GroupExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let name = match self.label.next.lock().take() {
            Some(request) => format!("{request} ({})", self.label.name),
            None => format!("{} stream", self.label.name),
        };
        // Not `try_go`: a request the connection accepted before the group
        // closed is served during the drain. In the connection's slot under
        // a limit: a request that waited for a slot of its own would wait
        // for a connection to close, forever if open connections filled the
        // limit.
        let stream = Stream::new(self.label.clone());
        self.group
            .task()
            .name(name)
            .critical(false)
            .go_in_held_slot(self.label.site, move |_ctx| async move {
                let _stream = stream;
                fut.await;
            });
    }
}

impl fmt::Debug for GroupExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupExecutor")
            .field("group", &self.group)
            .field("conn", &self.label.name)
            .finish()
    }
}

/// What an accept error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// One connection failed before it was accepted: accept the next.
    Connection,
    /// The process or system is out of resources: pause, then retry.
    Resources,
    /// The listener cannot go on: end the loop with the error.
    Fatal,
}

impl AcceptError {
    fn of(e: &io::Error) -> AcceptError {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionAborted | ConnectionReset | ConnectionRefused | PermissionDenied
            | Interrupted | WouldBlock | TimedOut => AcceptError::Connection,
            OutOfMemory => AcceptError::Resources,
            _ => match e.raw_os_error() {
                Some(code) if errno::RESOURCES.contains(&code) => AcceptError::Resources,
                Some(code) if errno::CONNECTION.contains(&code) => AcceptError::Connection,
                _ => AcceptError::Fatal,
            },
        }
    }
}

/// The system error codes not told apart by `io::ErrorKind` (on our MSRV).
mod errno {
    #[cfg(unix)]
    pub(super) const RESOURCES: &[i32] = &[libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
    /// accept(2) on Linux: "already-pending network errors on the new
    /// socket", to be treated like `EAGAIN`.
    #[cfg(unix)]
    pub(super) const CONNECTION: &[i32] = &[
        libc::ENETDOWN,
        libc::EPROTO,
        libc::ENOPROTOOPT,
        libc::EHOSTDOWN,
        libc::EHOSTUNREACH,
        libc::EOPNOTSUPP,
        libc::ENETUNREACH,
    ];
    /// WSAEMFILE, WSAENOBUFS.
    #[cfg(windows)]
    pub(super) const RESOURCES: &[i32] = &[10024, 10055];
    /// WSAENETDOWN, WSAEHOSTUNREACH, WSAENETUNREACH.
    #[cfg(windows)]
    pub(super) const CONNECTION: &[i32] = &[10050, 10065, 10051];
    #[cfg(not(any(unix, windows)))]
    pub(super) const RESOURCES: &[i32] = &[];
    #[cfg(not(any(unix, windows)))]
    pub(super) const CONNECTION: &[i32] = &[];
}

/// The accept loop's pause after running out of resources: 1 ms, doubling
/// up to 1 s; back to 1 ms after a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The pause to take now.
    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(Self::MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted connection's socket sends small writes at once unless
    /// the options say otherwise (the system's default holds them back).
    #[tokio::test]
    async fn accepted_sockets_have_nodelay_unless_turned_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (opts, nodelay) in [
            (ServeOptions::new(), true),
            (ServeOptions::new().tcp_nodelay(false), false),
        ] {
            let _client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            opts.configure_socket(&stream).unwrap();
            assert_eq!(stream.nodelay().unwrap(), nodelay, "{opts:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut backoff = Backoff::new();
        let pauses: Vec<u64> = (0..13).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000]
        );
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(1));
    }

    #[test]
    fn frame_headers_are_read_from_pieces_of_any_size() {
        // HEADERS on stream 1 (3-byte payload), DATA with END_STREAM on
        // stream 1 (no payload), RST_STREAM on stream 3 (4-byte payload).
        let mut bytes = vec![0, 0, 3, 1, 4, 0, 0, 0, 1, 0xa, 0xb, 0xc];
        bytes.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 1]);
        bytes.extend_from_slice(&[0, 0, 4, 3, 0, 0x80, 0, 0, 3, 0, 0, 0, 8]);
        let want = [(1, 4, 1), (0, 1, 1), (3, 0, 3)];
        for piece in 1..=bytes.len() {
            let mut frames = FrameHeaders::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                frames.feed(
                    chunk,
                    |_| false,
                    |f, _| got.push((f.kind, f.flags, f.stream)),
                );
            }
            assert_eq!(got, want, "in pieces of {piece}");
        }
    }

    #[test]
    fn kept_payloads_are_given_whole_from_pieces_of_any_size() {
        // SETTINGS (two settings), an empty SETTINGS ACK, DATA on stream 1
        // (payload skipped), WINDOW_UPDATE on stream 1.
        let mut bytes = vec![0, 0, 12, 4, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0, 4, 0, 0, 0, 9, 0, 3, 0, 0, 0, 100]);
        bytes.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 1, 0xa, 0xb]);
        bytes.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
        let want: [(u8, Vec<u8>); 4] = [
            (4, vec![0, 4, 0, 0, 0, 9, 0, 3, 0, 0, 0, 100]),
            (4, vec![]),
            (0, vec![]),
            (8, vec![0, 1, 0, 0]),
        ];
        let keep = |kind| kind == 4 || kind == 8;
        for piece in 1..=bytes.len() {
            let mut frames = FrameHeaders::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                frames.feed(chunk, keep, |f, payload| {
                    got.push((f.kind, payload.to_vec()))
                });
            }
            assert_eq!(got, want, "in pieces of {piece}");
        }
    }

    /// A raw frame: header and payload.
    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    #[tokio::test]
    async fn flow_control_windows_are_counted_from_the_frames() {
        use frame::*;
        let label = ConnLabel::new("127.0.0.1:1".parse().unwrap(), Location::caller());
        let mut h2 = H2Frames::default();
        let update = |stream, n: u32| raw(WINDOW_UPDATE, 0, stream, &n.to_be_bytes());
        // Streams 1 and 3 open; 1 answers (HEADERS) and sends 65,535 bytes
        // of DATA in two frames: its window is used up, but 3 has not
        // answered, so the connection is not held.
        h2.read(&raw(HEADERS, 4, 1, &[]), &label);
        h2.read(&raw(HEADERS, 4, 3, &[]), &label);
        h2.written(&raw(HEADERS, 4, 1, &[]), &label);
        h2.written(&raw(DATA, 0, 1, &[0; 65_000]), &label);
        h2.written(&raw(DATA, 0, 1, &[0; 535]), &label);
        assert_eq!(h2.initial + h2.open[&1].credit, 0);
        assert_eq!(h2.window, 0);
        assert!(!h2.held());
        // 3 answers: its response has begun with the connection's window
        // used up, so both are held.
        h2.written(&raw(HEADERS, 4, 3, &[]), &label);
        assert!(h2.held() && label.held_since.load(Ordering::Relaxed) != 0);
        // The connection's window opens: 3 may send, 1 still may not.
        h2.read(&update(0, 1_000), &label);
        assert!(!h2.held() && label.held_since.load(Ordering::Relaxed) == 0);
        // 3 ends; 1 alone is held by its own window.
        h2.written(&raw(DATA, 1, 3, &[0; 10]), &label);
        assert_eq!(h2.window, 990);
        assert!(h2.held());
        // The client raises the initial window by 100: 1's window moves
        // with it; a new stream starts with it.
        let settings = [&[0, 4][..], &65_635_u32.to_be_bytes()].concat();
        h2.read(&raw(SETTINGS, 0, 0, &settings), &label);
        assert_eq!(h2.initial + h2.open[&1].credit, 100);
        assert!(!h2.held());
        h2.read(&raw(HEADERS, 4, 5, &[]), &label);
        assert_eq!(h2.initial + h2.open[&5].credit, 65_635);
        // A SETTINGS ACK and a stream's WINDOW_UPDATE in one read; a reset
        // by the client closes its stream.
        let both = [raw(SETTINGS, ACK, 0, &[]), update(1, 7)].concat();
        h2.read(&both, &label);
        assert_eq!(h2.initial + h2.open[&1].credit, 107);
        h2.read(&raw(RST_STREAM, 0, 5, &[0, 0, 0, 8]), &label);
        assert!(!h2.open.contains_key(&5));
        assert_eq!(label.responses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn accept_errors_are_classified() {
        use io::ErrorKind::*;
        let kind = |k| AcceptError::of(&io::Error::from(k));
        assert_eq!(kind(ConnectionAborted), AcceptError::Connection);
        assert_eq!(kind(ConnectionReset), AcceptError::Connection);
        assert_eq!(kind(OutOfMemory), AcceptError::Resources);
        assert_eq!(kind(InvalidInput), AcceptError::Fatal);
        assert_eq!(kind(Other), AcceptError::Fatal);
        #[cfg(unix)]
        {
            let os = |code| AcceptError::of(&io::Error::from_raw_os_error(code));
            assert_eq!(os(libc::EMFILE), AcceptError::Resources);
            assert_eq!(os(libc::ENFILE), AcceptError::Resources);
            assert_eq!(os(libc::ENOBUFS), AcceptError::Resources);
            assert_eq!(os(libc::ENOMEM), AcceptError::Resources);
            assert_eq!(os(libc::ECONNABORTED), AcceptError::Connection);
            assert_eq!(os(libc::EPROTO), AcceptError::Connection);
            assert_eq!(os(libc::EBADF), AcceptError::Fatal);
            assert_eq!(os(libc::EINVAL), AcceptError::Fatal);
        }
    }
}
