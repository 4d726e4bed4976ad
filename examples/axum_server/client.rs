//! A minimal HTTP/1 client over one keep-alive connection (hyper's
//! connection API), used by the `axum_server` example's self-test traffic and
//! by `tests/http_drain.rs`.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use taskgroup::BoxError;
use tokio::net::TcpStream;

/// One client connection.
#[derive(Debug)]
pub(crate) struct Client {
    local: SocketAddr,
    send: SendRequest<Empty<Bytes>>,
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
    /// Connects to `addr` (refused once the server's listener is closed).
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let local = stream.local_addr()?;
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn); // drives the connection; ends when it closes
        Ok(Client { local, send })
    }

    /// This end's address: the server names the connection `conn <local>`.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `GET path` on this connection.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Response, BoxError> {
        self.send.ready().await?;
        let request = Request::get(path)
            .header(header::HOST, "127.0.0.1")
            .body(Empty::new())?;
        let response = self.send.send_request(request).await?;
        let status = response.status();
        let closing = response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            closing,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
