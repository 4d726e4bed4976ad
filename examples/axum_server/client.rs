//! A minimal HTTP client over one connection (hyper's connection API, HTTP/1
//! or HTTP/2), used by the `axum_server` example's self-test traffic and by
//! the tests in `tests/http_*.rs`.

#![allow(dead_code)] // each user takes what it needs

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::Poll;

use futures::stream::{FuturesUnordered, StreamExt};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use taskgroup::BoxError;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One client connection.
#[derive(Debug)]
pub(crate) struct Client {
    local: SocketAddr,
    send: Send,
    /// The task driving the connection: it ends when the connection closes.
    driver: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
enum Send {
    Http1(http1::SendRequest<String>),
    Http2(http2::SendRequest<String>),
}

/// A future hyper spawned, run by the connection's driver.
type Spawned = Pin<Box<dyn Future<Output = ()> + std::marker::Send>>;

/// The executor of an HTTP/2 connection: hands what hyper spawns to the
/// task driving the connection (see [`Client::connect_h2`]).
#[derive(Clone)]
struct SameTask(mpsc::UnboundedSender<Spawned>);

impl<F> hyper::rt::Executor<F> for SameTask
where
    F: Future<Output = ()> + std::marker::Send + 'static,
{
    fn execute(&self, fut: F) {
        // The driver is gone only once the connection and all it ran ended.
        let _ = self.0.send(Box::pin(fut));
    }
}

/// A response: its status, whether the server will close the connection after
/// it (`connection: close`), and its body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) closing: bool,
    pub(crate) body: String,
}

impl Client {
    /// Connects to `addr` with HTTP/1.1 (refused once the server's listener
    /// is closed).
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let local = stream.local_addr()?;
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client {
            local,
            send: Send::Http1(send),
            driver: Some(driver),
        })
    }

    /// Connects to `addr` with HTTP/2 (prior knowledge, no TLS).
    ///
    /// What hyper spawns for the connection (the h2 connection, each
    /// request's response) runs in the task that drives it, not in tasks of
    /// its own. With them on other threads, hyper 1.x's client can fail a
    /// request it has sent, and the server answered, with the server's
    /// `GOAWAY` (`GoAway(NO_ERROR, Remote)`): after sending a request it
    /// checks at once whether the connection is still open for more, and
    /// fails the request it holds if a `GOAWAY` was read in between, which
    /// another thread can do while that one is descheduled. In one task,
    /// nothing is read between the two. (Seen once in CI, in a drain test:
    /// reproduced by a sleep put between the two calls in a copy of hyper.)
    pub(crate) async fn connect_h2(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let local = stream.local_addr()?;
        let (spawn, mut spawned) = mpsc::unbounded_channel();
        let (send, conn) = http2::handshake(SameTask(spawn), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let mut conn = pin!(conn);
            let mut conn_done = false;
            let mut running = FuturesUnordered::new();
            poll_fn(|cx| loop {
                while let Poll::Ready(Some(fut)) = spawned.poll_recv(cx) {
                    running.push(fut);
                }
                if !conn_done {
                    conn_done = conn.as_mut().poll(cx).is_ready();
                }
                while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                // Polling may have spawned more: take them before sleeping.
                if !spawned.is_empty() {
                    continue;
                }
                break if conn_done && running.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            })
            .await;
        });
        Ok(Client {
            local,
            send: Send::Http2(send),
            driver: Some(driver),
        })
    }

    /// Another handle to the same HTTP/2 connection, for concurrent
    /// requests on it.
    ///
    /// # Panics
    ///
    /// On an HTTP/1 connection.
    pub(crate) fn stream(&self) -> Client {
        match &self.send {
            Send::Http2(send) => Client {
                local: self.local,
                send: Send::Http2(send.clone()),
                driver: None,
            },
            Send::Http1(_) => panic!("an HTTP/1 connection has one request at a time"),
        }
    }

    /// Resolves when the server has closed the connection (at once on a
    /// handle from [`stream`](Self::stream)).
    pub(crate) async fn closed(mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
    }

    /// This end's address: the server names the connection `conn <local>`.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `GET path` on this connection.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Response, BoxError> {
        let response = match &mut self.send {
            Send::Http1(send) => {
                send.ready().await?;
                let request = Request::get(path)
                    .header(header::HOST, "127.0.0.1")
                    .body(String::new())?;
                send.send_request(request).await?
            }
            Send::Http2(send) => {
                send.ready().await?;
                let request = Request::get(format!("http://127.0.0.1{path}"))
                    .version(hyper::Version::HTTP_2)
                    .body(String::new())?;
                send.send_request(request).await?
            }
        };
        let status = response.status();
        let closing = response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = collect(response.into_body()).await?;
        Ok(Response {
            status,
            closing,
            body,
        })
    }
}

/// A response body, read to its end.
async fn collect(mut body: Incoming) -> Result<String, hyper::Error> {
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
