//! A minimal HTTP client over one connection (hyper's connection API, HTTP/1
//! or HTTP/2), used by the `axum_server` example's self-test traffic and by
//! the tests in `tests/http_*.rs`.

#![allow(dead_code)] // each user takes what it needs

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;

use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use taskgroup::BoxError;
use tokio::net::TcpStream;

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
    pub(crate) async fn connect_h2(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let local = stream.local_addr()?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
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
