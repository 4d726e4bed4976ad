//! HTTP servers whose connections and requests are work of a group, so that a
//! shutdown drains them, aborts and names the stragglers, and closes what is
//! linked after the server only once they are gone.
//!
//! Two ways in, by how much of the server you hand over:
//!
//! * [`serve`] (and [`serve_router`] for an axum `Router`) runs the accept
//!   loop as a task of a group and each connection as a task of the same
//!   group, named `conn <peer>` (HTTP/1 and HTTP/2, told apart by the first
//!   bytes, over hyper-util's `auto` connection). When the group drains (a
//!   shutdown's drain phase, see [`Grace`](crate::shutdown::Grace), or at
//!   once with a plain `Duration` grace):
//!   the accept loop stops and drops the listener, so new connections are
//!   refused; each connection shuts down gracefully (an HTTP/1 keep-alive
//!   connection closes after its in-flight response, which carries
//!   `connection: close`, an idle one at once; HTTP/2 sends `GOAWAY` and
//!   finishes the streams it has, their responses sent to the end, and a
//!   client that has not answered the `GOAWAY`'s `PING` a second after its
//!   last response was sent is dropped; a client that stops reading its
//!   response is dropped once the server's writes have been blocked, or on
//!   HTTP/2 its responses held back by flow control, for the
//!   [send timeout](ServeOptions::send_timeout), 60 s);
//!   whatever is still running at the deadline is aborted, and the
//!   [report](crate::ShutdownReport) names it. Because the handlers run
//!   inside those tasks, a group [linked](crate::WaitGroup::link) after the
//!   server's (a database pool) is closed only after every handler has
//!   returned or been dropped: the ordered teardown holds. Not for an
//!   upgraded connection (a WebSocket): its task ends at the upgrade, and
//!   the upgraded session runs wherever the handler spawns it (axum's
//!   `WebSocketUpgrade::on_upgrade` uses `tokio::spawn`), out of the group's
//!   sight. Run the session as a task of a group (`group.go(..)` with the
//!   upgraded IO) for a shutdown to stop it in order.
//! * [`TrackRequests`], a tower layer, for a server you keep running yourself
//!   (`axum::serve`, tonic, ...): each in-flight request is a guard of a group
//!   named `GET /path`, requests get `503 Service Unavailable` once the group
//!   is closed, and a shutdown report names the requests still running. The
//!   server's own tasks stay out of sight: guards cannot be aborted, so a
//!   request slower than the grace keeps running (reported as pending) and
//!   the ordered teardown does not hold for it. Prefer [`serve`] where that
//!   matters.
//!
//! Both need the `hyper` cargo feature; [`serve_router`] needs `axum`.
//!
//! # Work a handler starts
//!
//! Give handlers the server's group (axum's `State`) and start their work
//! in it:
//!
//! * a background job (`group.go(..)`, answering `202 Accepted` at once)
//!   is a task of the group: its context is cancelled at the same moment
//!   as the connections', it is aborted at the deadline and named in the
//!   report if it runs on;
//! * a streamed response fed by a task of the group (a channel behind an
//!   axum `Body::from_stream`): the task sees the cancel, and once it drops
//!   its sender the client gets the body's end;
//! * **a group per request that the handler awaits**: make it with
//!   [`group.scoped_child()`](crate::WaitGroup::scoped_child) (named:
//!   `group.task().name("report").scoped_child()`), fan out into it, and
//!   `parts.wait().await`. A scoped child is cancelled with the group's own
//!   work, the handler's connection among it, so its tasks see the cancel
//!   when the handler does, and the handler answers within the grace. Not
//!   with a plain [`child()`](crate::WaitGroup::child): a shutdown stops a
//!   group's own work before the groups below it, and cancels a child only
//!   at the child's turn (see [`WaitGroup::shutdown`](crate::WaitGroup::shutdown)),
//!   so while the handler waits for its child, the child waits for the
//!   handler. A child task that only stops when cancelled then holds its
//!   request until the deadline, where [`serve`] aborts the connection (the
//!   client gets no response) and [`TrackRequests`] reports the request
//!   pending; and the child's tasks that end when their handler is dropped
//!   are counted as finished, not aborted, as the child's turn comes after
//!   that (a scoped child's are marked with the connections and named as
//!   aborted). (A group built with
//!   [`stop_children_together(true)`](crate::WaitGroupBuilder::stop_children_together)
//!   cancels all its children with its own work, plain ones too.)
//!
//! # Examples
//!
//! An axum server, with a database pool that must outlive every request,
//! and a handler that fans its work out into a group of its own:
//!
//! ```no_run
//! # #[cfg(not(feature = "axum"))] fn main() {} // the example needs `axum`
//! # #[cfg(feature = "axum")]
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use axum::{extract::State, http::StatusCode, routing::get, Router};
//! use taskgroup::WaitGroup;
//!
//! let root = WaitGroup::builder().name("app").build();
//! let http = WaitGroup::builder().name("http").build();
//! let pool = WaitGroup::builder().name("db pool").build();
//! // Shut down in this order: connections (and the requests' groups), then the pool.
//! root.link(&http).unwrap();
//! root.link(&pool).unwrap();
//!
//! async fn report(State(http): State<WaitGroup>) -> StatusCode {
//!     // Cancelled with the connections, not after them.
//!     let parts = http.task().name("report").scoped_child();
//!     for _ in 0..10 {
//!         parts.go(|ctx| async move {
//!             let part = tokio::time::sleep(Duration::from_millis(50)); // the real work
//!             ctx.run_until_cancelled(part).await; // or stop when cancelled
//!         });
//!     }
//!     match parts.wait().await {
//!         Ok(()) => StatusCode::OK,
//!         Err(_) => StatusCode::INTERNAL_SERVER_ERROR, // a part panicked
//!     }
//! }
//!
//! let app = Router::new()
//!     .route("/", get(|| async { "hello\n" }))
//!     .route("/report", get(report))
//!     .with_state(http.clone());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! taskgroup::http::serve_router(&http, listener, app);
//!
//! taskgroup::shutdown::shutdown_signal().await?; // SIGTERM or Ctrl-C
//! let report = root.shutdown(Duration::from_secs(10)).await;
//! println!("{report}"); // names the connections aborted at the deadline
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "axum")]
mod body;
mod server;
mod track;

pub use server::{serve, serve_with, ServeOptions};
#[cfg(feature = "axum")]
pub use server::{serve_router, serve_router_with};
pub use track::{ResponseFuture, TrackRequests, TrackRequestsService, TrackedBody};

use crate::TaskContext;

/// The longest path a request's name keeps, in bytes.
const MAX_PATH: usize = 256;

/// A request's name, `<METHOD> <path>`, the path cut at [`MAX_PATH`] bytes
/// with `…`: a client cannot make a report line, or a task's name held
/// while its request runs, as long as the longest path the server reads
/// (HTTP/2 takes 16 KB of headers).
fn request_name(method: &http::Method, path: &str) -> String {
    if path.len() <= MAX_PATH {
        return format!("{method} {path}");
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{method} {}…", &path[..end])
}

/// Resolves when a connection task, or the accept loop, is to start
/// draining: stop accepting, shut connections down gracefully. The group's
/// drain signal: a shutdown's drain phase, or its cancellation (which
/// implies it).
async fn drain_signal(ctx: &TaskContext) {
    ctx.draining().await;
}
