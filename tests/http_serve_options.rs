//! `taskgroup::http::serve_with` and `ServeOptions`: each setting seen from a
//! client on loopback (hyper's client, or raw bytes where the test must see
//! frames or stop mid-request). Time limits are checked on Tokio's paused
//! clock, ticking a millisecond at a time; real time appears only as generous
//! upper bounds. `serve`'s defaults are checked by `tests/http_serve.rs`.

// Needs the `axum` feature (as `tests/http_serve.rs`, which Cargo.toml lists).
#![cfg(feature = "axum")]

#[path = "../examples/axum_server/client.rs"]
mod client;
mod common {
    pub(crate) mod h2;
}
use common::h2::h2_frame;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use client::Client;
use taskgroup::http::ServeOptions;
use taskgroup::WaitGroup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// The longest any single step may take before the test fails (real time),
/// or a span of paused time far past every limit under test.
const LIMIT: Duration = Duration::from_secs(300);

/// How long (paused) a connection kept without a limit is watched: past
/// every default and setting in these tests.
const PAST: Duration = Duration::from_secs(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A server of `/hello`, and of `/late` (answered after a second), with
/// `opts`, as work of a group named `http`.
async fn start(opts: ServeOptions) -> (WaitGroup, SocketAddr) {
    let group = WaitGroup::builder().name("http").build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/late",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "late"
            }),
        );
    taskgroup::http::serve_router_with(&group, listener, router, opts);
    (group, addr)
}

/// Shuts the group down and asserts that nothing was aborted, pending or failed.
async fn shut_down_clean(group: &WaitGroup) {
    let report = timeout(LIMIT, group.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

/// Makes tokio's paused clock advance a millisecond at a time, so that what
/// a socket brings is read when it comes (as in `tests/http_serve.rs`: with
/// nothing to run, the paused clock jumps to the next timer, even in the
/// turn of the runtime that found a socket readable).
fn tick_every_millisecond() {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

/// Reads `stream` to its end; the bytes, and how long after `from` it ended.
async fn read_to_close(stream: &mut TcpStream, from: Instant) -> (Vec<u8>, Duration) {
    let mut buf = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut buf))
        .await
        .expect("the connection is closed")
        .ok();
    (buf, from.elapsed())
}

/// Whether `stream` is still open after `wait` (of paused time), the client
/// having sent what it sent: nothing arrives and it is not closed.
async fn still_open_after(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0; 1];
    timeout(wait, stream.read(&mut buf)).await.is_err()
}

/// An HTTP/1 header read timeout of 5 s closes a connection that stopped in
/// its headers 5 s after its first bytes (not hyper's 30 s), an idle
/// keep-alive connection 5 s after its last response (hyper runs one timer
/// for both), and, as the sniff timeout follows it, a silent connection 5 s
/// after its accept.
#[tokio::test(start_paused = true)]
async fn a_shorter_http1_header_read_timeout_closes_slow_and_idle_connections_at_that_time() {
    tick_every_millisecond();
    let opts = ServeOptions::new().http1_header_read_timeout(Duration::from_secs(5));
    let (group, addr) = start(opts).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (idle, idle_started) = {
        let mut client = Client::connect(addr).await.unwrap();
        assert_eq!(client.get("/hello").await.unwrap().body, "hello");
        (client, Instant::now())
    };
    let (buf, slow_closed) = read_to_close(&mut slow, started).await;
    assert!(buf.is_empty(), "no response");
    assert!(
        slow_closed >= ms(5_000) && slow_closed < ms(5_100),
        "{slow_closed:?}"
    );
    let (buf, silent_closed) = read_to_close(&mut silent, started).await;
    assert!(buf.is_empty(), "no response");
    assert!(
        silent_closed >= ms(5_000) && silent_closed < ms(5_100),
        "{silent_closed:?}"
    );
    timeout(LIMIT, idle.closed()).await.unwrap();
    let idle_closed = idle_started.elapsed();
    assert!(
        idle_closed >= ms(5_000) && idle_closed < ms(5_100),
        "{idle_closed:?}"
    );
    shut_down_clean(&group).await;
}

/// A sniff timeout of its own drops a connection that has not told its
/// protocol (silent, or stopped inside the HTTP/2 preface) at that time,
/// while a connection that stopped in its HTTP/1 headers keeps the header
/// read timeout.
#[tokio::test(start_paused = true)]
async fn a_sniff_timeout_of_its_own_drops_undecided_connections_at_that_time() {
    tick_every_millisecond();
    let opts = ServeOptions::new()
        .http1_header_read_timeout(Duration::from_secs(10))
        .sniff_timeout(Duration::from_secs(2));
    let (group, addr) = start(opts).await;
    let mut preface = TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    for stream in [&mut preface, &mut silent] {
        let (buf, closed) = read_to_close(stream, started).await;
        assert!(buf.is_empty());
        assert!(closed >= ms(2_000) && closed < ms(2_100), "{closed:?}");
    }
    let (buf, closed) = read_to_close(&mut slow, started).await;
    assert!(buf.is_empty());
    assert!(closed >= ms(10_000) && closed < ms(10_100), "{closed:?}");
    shut_down_clean(&group).await;
}

/// An HTTP/2 idle timeout of 75 s keeps an idle connection past the default
/// 30 s, and closes it (`GOAWAY`, answered by hyper's client) 75 s after its
/// last stream.
#[tokio::test(start_paused = true)]
async fn a_longer_http2_idle_timeout_keeps_the_connection_past_30_s_and_closes_it_after() {
    tick_every_millisecond();
    let opts = ServeOptions::new().http2_idle_timeout(Duration::from_secs(75));
    let (group, addr) = start(opts).await;
    let mut client = Client::connect_h2(addr).await.unwrap();
    assert_eq!(client.get("/hello").await.unwrap().body, "hello");
    let answered = Instant::now();
    timeout(LIMIT, client.closed()).await.unwrap();
    let idle = answered.elapsed();
    assert!(idle >= ms(75_000) && idle < ms(75_100), "{idle:?}");
    shut_down_clean(&group).await;
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The next HTTP/2 frame: type, flags and payload; `None` at the end of the
/// connection.
async fn next_frame(read: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0; 9];
    read.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let mut payload = vec![0; len as usize];
    read.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// A raw HTTP/2 connection that has sent its preface and empty settings.
async fn h2_raw(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream
        .write_all(&h2_frame(SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    stream
}

/// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` (0x3), from its first
/// `SETTINGS` frame.
async fn max_concurrent_streams(addr: SocketAddr) -> Option<u32> {
    let mut stream = h2_raw(addr).await;
    loop {
        let (kind, flags, payload) = timeout(LIMIT, next_frame(&mut stream))
            .await
            .unwrap()
            .expect("the server's SETTINGS");
        if kind != SETTINGS || flags & ACK != 0 {
            continue;
        }
        return payload.chunks(6).find_map(|s| {
            (s[..2] == [0, 3]).then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        });
    }
}

/// The stream limit is what the client is told in the server's `SETTINGS`;
/// `serve` tells 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_concurrent_streams_is_what_the_client_is_told() {
    let opts = ServeOptions::new().http2_max_concurrent_streams(500);
    let (group, addr) = start(opts).await;
    assert_eq!(max_concurrent_streams(addr).await, Some(500));
    let (default, default_addr) = start(ServeOptions::default()).await;
    assert_eq!(max_concurrent_streams(default_addr).await, Some(200));
    for group in [group, default] {
        let report = timeout(LIMIT, group.shutdown(Duration::from_secs(1)))
            .await
            .unwrap();
        // The raw clients never answer the GOAWAY's PING: dropped a second
        // later, not aborted.
        assert!(report.is_clean(), "{report}");
    }
}

/// `GET /late` on HTTP/1 from a client that then shuts down its writing
/// side, on a connection of `opts`: the bytes that came back before the
/// server closed. The response comes a second after the request (paused
/// time, ticking), long after the server read the end of the client's
/// bytes: on loopback the FIN is queued before the server reads the request.
async fn half_closed_request(opts: ServeOptions) -> String {
    let (group, addr) = start(opts).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut buf = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    shut_down_clean(&group).await;
    String::from_utf8(buf).unwrap()
}

/// With `http1_half_close(true)`, a client that shuts down its writing side
/// after its request gets the response; without (`serve`'s default), its
/// connection is closed unanswered once the server reads that end (a
/// response ready before could still be sent).
#[tokio::test(start_paused = true)]
async fn http1_half_close_answers_a_client_that_shut_down_its_writing_side() {
    tick_every_millisecond();
    let response = half_closed_request(ServeOptions::new().http1_half_close(true)).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response:?}");
    assert!(response.ends_with("late"), "{response:?}");
    let response = half_closed_request(ServeOptions::default()).await;
    assert_eq!(response, "", "the default closes it unanswered");
}

/// With a keep-alive interval of 10 s and a timeout of 5 s, a connection
/// whose client sends nothing is pinged at 10 s and, the client not
/// answering, closed at 15 s (before its idle timeout).
#[tokio::test(start_paused = true)]
async fn http2_keep_alive_pings_and_closes_a_client_that_does_not_answer() {
    tick_every_millisecond();
    let opts = ServeOptions::new()
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::from_secs(5));
    let (group, addr) = start(opts).await;
    let mut mute = h2_raw(addr).await;
    let started = Instant::now();
    let mut pings = Vec::new();
    while let Some((kind, flags, _)) = timeout(LIMIT, next_frame(&mut mute)).await.unwrap() {
        if kind == PING && flags & ACK == 0 {
            pings.push(started.elapsed());
        }
    }
    let closed = started.elapsed();
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert!(pings[0] >= ms(10_000) && pings[0] < ms(10_100), "{pings:?}");
    assert!(closed >= ms(15_000) && closed < ms(15_100), "{closed:?}");
    shut_down_clean(&group).await;
}

/// `Duration::MAX` for every duration is no limit, and panics nowhere (hyper
/// adds its timeouts to `Instant::now()`): requests are served on both
/// protocols, and a client stopped in its HTTP/1 headers, a silent one, one
/// stopped in the HTTP/2 preface, an idle HTTP/1 one and an idle HTTP/2 one
/// that never answers a `PING` are all still open 100 s later.
#[tokio::test(start_paused = true)]
async fn duration_max_is_no_limit_and_panics_nowhere() {
    tick_every_millisecond();
    let opts = ServeOptions::new()
        .http1_header_read_timeout(Duration::MAX)
        .sniff_timeout(Duration::MAX)
        .http2_idle_timeout(Duration::MAX)
        .http2_keep_alive_interval(Duration::MAX)
        .http2_keep_alive_timeout(Duration::MAX)
        .send_timeout(Duration::MAX)
        .request_body_timeout(Duration::MAX);
    let (group, addr) = start(opts).await;
    let mut h1 = Client::connect(addr).await.unwrap();
    assert_eq!(h1.get("/hello").await.unwrap().body, "hello");
    let mut h2 = Client::connect_h2(addr).await.unwrap();
    assert_eq!(h2.get("/hello").await.unwrap().body, "hello");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut preface = TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2").await.unwrap();
    let mut idle_raw_h2 = h2_raw(addr).await;
    // The raw HTTP/2 client gets the server's SETTINGS, its window update
    // and the ACK of its own: no PING, no GOAWAY, and it is not closed.
    let mut frames = Vec::new();
    let h2_watch = async {
        timeout(PAST, async {
            while let Some((kind, ..)) = next_frame(&mut idle_raw_h2).await {
                frames.push(kind);
            }
        })
        .await
        .is_err()
    };
    // Side by side, on the paused clock.
    let (slow_open, silent_open, preface_open, h2_open) = tokio::join!(
        still_open_after(&mut slow, PAST),
        still_open_after(&mut silent, PAST),
        still_open_after(&mut preface, PAST),
        h2_watch,
    );
    assert!(
        slow_open && silent_open && preface_open && h2_open,
        "{frames:?}"
    );
    assert!(
        !frames.contains(&PING) && !frames.contains(&GOAWAY),
        "{frames:?}"
    );
    assert_eq!(h1.get("/hello").await.unwrap().body, "hello");
    assert_eq!(h2.get("/hello").await.unwrap().body, "hello");
    drop((h1, h2, slow, silent, preface, idle_raw_h2));
    shut_down_clean(&group).await;
}

/// A keep-alive timeout of `Duration::MAX` with pings on: pinged every
/// 10 s, never closed for not answering.
#[tokio::test(start_paused = true)]
async fn an_unlimited_http2_keep_alive_timeout_pings_and_never_closes() {
    tick_every_millisecond();
    let opts = ServeOptions::new()
        .http2_idle_timeout(Duration::MAX)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::MAX);
    let (group, addr) = start(opts).await;
    let mut mute = h2_raw(addr).await;
    let started = Instant::now();
    let mut pings = 0;
    let open = timeout(PAST, async {
        while let Some((kind, flags, _)) = next_frame(&mut mute).await {
            pings += usize::from(kind == PING && flags & ACK == 0);
            assert_ne!(kind, GOAWAY);
        }
    })
    .await
    .is_err();
    assert!(open, "closed after {:?}", started.elapsed());
    // hyper pings once until it is answered.
    assert_eq!(pings, 1);
    drop(mute);
    shut_down_clean(&group).await;
}

/// Zero is refused by every duration setter, and by the stream limit, with
/// a message that names the setter.
#[test]
fn zero_is_refused_with_a_message_naming_the_setter() {
    type Setter = fn(ServeOptions) -> ServeOptions;
    let setters: [(&str, Setter); 8] = [
        ("http1_header_read_timeout", |o| {
            o.http1_header_read_timeout(Duration::ZERO)
        }),
        ("sniff_timeout", |o| o.sniff_timeout(Duration::ZERO)),
        ("http2_idle_timeout", |o| {
            o.http2_idle_timeout(Duration::ZERO)
        }),
        ("http2_max_concurrent_streams", |o| {
            o.http2_max_concurrent_streams(0)
        }),
        ("http2_keep_alive_interval", |o| {
            o.http2_keep_alive_interval(Duration::ZERO)
        }),
        ("http2_keep_alive_timeout", |o| {
            o.http2_keep_alive_timeout(Duration::ZERO)
        }),
        ("send_timeout", |o| o.send_timeout(Duration::ZERO)),
        ("request_body_timeout", |o| {
            o.request_body_timeout(Duration::ZERO)
        }),
    ];
    for (name, set) in setters {
        let panic = std::panic::catch_unwind(|| set(ServeOptions::new())).unwrap_err();
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("ServeOptions::{name}: ")),
            "{message:?}"
        );
    }
}

/// The options are `Debug`, `Clone`, `Default` (= `new()`), `Send` and
/// `Sync`, and tiny durations are taken as given.
#[test]
fn options_are_debug_clone_default_send_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ServeOptions>();
    assert_eq!(
        format!("{:?}", ServeOptions::default()),
        format!("{:?}", ServeOptions::new())
    );
    let opts = ServeOptions::new().http1_header_read_timeout(Duration::from_nanos(1));
    let copy = opts.clone();
    assert_eq!(format!("{opts:?}"), format!("{copy:?}"));
    let debug = format!("{opts:?}");
    assert!(debug.contains("http1_header_read_timeout: 1ns"), "{debug}");
    // The sniff timeout in effect: the header read timeout, unless set.
    assert!(debug.contains("sniff_timeout: 1ns"), "{debug}");
    let debug = format!("{:?}", opts.sniff_timeout(Duration::from_secs(2)));
    assert!(debug.contains("sniff_timeout: 2s"), "{debug}");
    let debug = format!("{:?}", ServeOptions::new());
    assert!(debug.contains("send_timeout: 60s"), "{debug}");
    let debug = format!("{:?}", ServeOptions::new().send_timeout(ms(1_500)));
    assert!(debug.contains("send_timeout: 1.5s"), "{debug}");
    let debug = format!("{:?}", ServeOptions::new());
    assert!(debug.contains("request_body_timeout: 60s"), "{debug}");
}

// The send timeout: a client that asks for a response and takes none of it.

/// How large `/big`'s body is: far more than any socket buffer on the way
/// (Linux sizes a send buffer up to 4 MB by default).
const BIG: usize = 64 << 20;

/// A body of `left` bytes of `x`, made a 64 KB frame at a time as hyper
/// asks for them, not held whole.
struct Repeat {
    left: usize,
}

impl http_body::Body for Repeat {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        static CHUNK: [u8; 64 << 10] = [b'x'; 64 << 10];
        let n = self.left.min(CHUNK.len());
        self.left -= n;
        std::task::Poll::Ready((n > 0).then(|| {
            Ok(http_body::Frame::data(axum::body::Bytes::from_static(
                &CHUNK[..n],
            )))
        }))
    }
}

/// Serves, as work of `group`, `/big` (a body of [`BIG`] bytes), `/hello`
/// and `/five` (answered after five seconds, writing nothing before) with
/// `opts`.
async fn serve_big(group: &WaitGroup, opts: ServeOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route(
            "/big",
            get(|| async { axum::body::Body::new(Repeat { left: BIG }) }),
        )
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/five",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "five"
            }),
        );
    taskgroup::http::serve_router_with(group, listener, router, opts);
    addr
}

/// A raw HTTP/1 client with a small receive buffer (4 KB asked; Linux
/// doubles it) that has sent `GET path`.
async fn ask(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// How long (paused) until `group` holds `n` tasks, looked at every
/// millisecond; at most [`LIMIT`].
async fn until_len(group: &WaitGroup, n: usize) -> Duration {
    let from = Instant::now();
    timeout(LIMIT, async {
        while group.len() != n {
            tokio::time::sleep(ms(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} tasks, not {n}", group.len()));
    from.elapsed()
}

/// A client that asks for a 64 MB body and reads none of it has its
/// connection dropped once the server's writes have been blocked for the
/// send timeout, 1 s here: the connection's task ends (the accept loop is
/// left alone) 1 s after the request (the socket fills within the same
/// millisecond), and the client, reading then, gets part of the body and
/// the end of the connection.
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_nothing_of_a_response_is_dropped_after_the_send_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let mut client = ask(addr, "/big").await;
    let asked = Instant::now();
    until_len(&group, 2).await;
    until_len(&group, 1).await;
    let dropped = asked.elapsed();
    assert!(dropped >= ms(1_000) && dropped < ms(1_100), "{dropped:?}");
    let (buf, _) = read_to_close(&mut client, asked).await;
    assert!(
        buf.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        &buf[..buf.len().min(20)]
    );
    assert!(buf.len() < BIG, "cut short: {} bytes", buf.len());
    shut_down_clean(&group).await;
}

/// A client that reads its response at its own pace, 256 KB every 200 ms
/// (paused), keeps its connection for 5 s, five send timeouts, though the
/// server's writes block between its reads: each read lets them go on. It
/// gets 6.4 MB, more than the sockets on the way hold (2.8 MB in the test
/// above, on Linux), so the server wrote all along.
///
/// Reading much less would not do: Linux wakes a blocked writer only once
/// about a third of its socket's send buffer is free (most of the 2.8 MB),
/// so a client reading 4 KB every 200 ms (each read getting its 4 KB) had
/// lost its connection by the end of the 5 s (see
/// `ServeOptions::send_timeout`).
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_slowly_but_steadily_keeps_its_connection() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let mut client = ask(addr, "/big").await;
    let mut buf = vec![0; 256 << 10];
    for step in 0..25 {
        tokio::time::sleep(ms(200)).await;
        timeout(LIMIT, client.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("read {step}: {e}"));
        assert_eq!(group.len(), 2, "the connection is kept (read {step})");
    }
    drop(client);
    shut_down_clean(&group).await;
}

/// The same on HTTP/2: a raw client that grants the server all the window
/// it can (so h2 writes until the socket is full), asks for `/big` and
/// reads nothing has its connection, and the request's task, dropped 1 s
/// after the request.
#[tokio::test(start_paused = true)]
async fn an_http2_client_that_reads_nothing_is_dropped_after_the_send_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    const WINDOW_UPDATE: u8 = 0x8;
    let max_window = 0x7fff_ffff_u32;
    let mut hello = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) for the streams; the connection's
    // window raised by a WINDOW_UPDATE.
    let mut settings = vec![0, 4];
    settings.extend_from_slice(&max_window.to_be_bytes());
    hello.extend(h2_frame(SETTINGS, 0, 0, &settings));
    hello.extend(h2_frame(
        WINDOW_UPDATE,
        0,
        0,
        &(max_window - 65_535).to_be_bytes(),
    ));
    // GET /big, ending the stream: HPACK `:method: GET`, `:scheme: http`,
    // `:path` and `:authority` as literals.
    let mut block = vec![0x82, 0x86, 0x04, 4];
    block.extend_from_slice(b"/big");
    block.extend_from_slice(&[0x01, 1, b'x']);
    hello.extend(h2_frame(0x1, 0x5, 1, &block));
    client.write_all(&hello).await.unwrap();
    let asked = Instant::now();
    until_len(&group, 3).await; // the accept loop, the connection, the request
    until_len(&group, 1).await;
    let dropped = asked.elapsed();
    assert!(dropped >= ms(1_000) && dropped < ms(1_100), "{dropped:?}");
    let (buf, _) = read_to_close(&mut client, asked).await;
    assert!(buf.len() < BIG, "cut short: {} bytes", buf.len());
    shut_down_clean(&group).await;
}

/// A response that writes nothing for longer than the send timeout (its
/// handler answers after 5 s, the timeout is 1 s) is answered in full: no
/// write was blocked.
#[tokio::test(start_paused = true)]
async fn a_response_that_writes_nothing_for_a_while_is_not_cut() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let mut client = Client::connect(addr).await.unwrap();
    let asked = Instant::now();
    assert_eq!(client.get("/five").await.unwrap().body, "five");
    assert!(asked.elapsed() >= ms(5_000), "{:?}", asked.elapsed());
    drop(client);
    shut_down_clean(&group).await;
}

/// Under a limit of two tasks (the accept loop and one connection), a
/// client that reads nothing of its response holds the one slot only for
/// the send timeout: the next client is served after it, 1 s later.
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_nothing_frees_its_slot_under_a_limit_after_the_send_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").limit(2).build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let stuck = ask(addr, "/big").await;
    let asked = Instant::now();
    until_len(&group, 2).await;
    let mut next = Client::connect(addr).await.unwrap();
    let response = timeout(LIMIT, next.get("/hello")).await.unwrap().unwrap();
    assert_eq!(response.body, "hello");
    let served = asked.elapsed();
    assert!(served >= ms(1_000) && served < ms(1_100), "{served:?}");
    drop((stuck, next));
    shut_down_clean(&group).await;
}

/// After the drain signal, a client that reads nothing of its response
/// holds the drain only for the send timeout: `shutdown(Duration::MAX)`
/// returns 1 s after the request, clean (the connection dropped, not
/// aborted).
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_nothing_holds_an_unbounded_drain_only_for_the_send_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let mut client = ask(addr, "/big").await;
    let asked = Instant::now();
    // The response has begun: the drain finds it in flight.
    let mut status = [0; 15];
    client.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200 OK");
    let report = timeout(LIMIT, group.shutdown(Duration::MAX)).await.unwrap();
    assert!(report.is_clean(), "{report}");
    let drained = asked.elapsed();
    assert!(drained >= ms(1_000) && drained < ms(1_100), "{drained:?}");
}

/// A send timeout of `Duration::MAX` is no limit: a client that reads
/// nothing of its response keeps its connection 100 s later.
#[tokio::test(start_paused = true)]
async fn an_unlimited_send_timeout_keeps_a_client_that_reads_nothing() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(Duration::MAX)).await;
    let client = ask(addr, "/big").await;
    until_len(&group, 2).await;
    tokio::time::sleep(PAST).await;
    assert_eq!(group.len(), 2, "the connection is kept");
    drop(client);
    shut_down_clean(&group).await;
}

// The request body timeout: a client that stops sending a body its handler
// reads.

/// Serves, as work of `group`, `/echo` (answers the request's body, read
/// whole by axum's `String` extractor: `400` if the read fails), `/late-echo`
/// (the same, after five seconds of doing something else first), `/stream`
/// (reads the body itself: `408` on a timed-out read) and `/hello`, with
/// `opts`.
async fn serve_echo(group: &WaitGroup, opts: ServeOptions) -> SocketAddr {
    use axum::http::StatusCode;
    use axum::routing::post;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/late-echo",
            post(|body: axum::body::Body| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(bytes) => (StatusCode::OK, bytes),
                    Err(_) => (StatusCode::BAD_REQUEST, Default::default()),
                }
            }),
        )
        .route(
            "/stream",
            post(|body: axum::body::Body| async move {
                let mut read = 0;
                let mut body = std::pin::pin!(body);
                while let Some(frame) =
                    std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
                {
                    match frame {
                        Ok(frame) => read += frame.data_ref().map_or(0, |d| d.len()),
                        Err(e) if timed_out(&e) => {
                            return (StatusCode::REQUEST_TIMEOUT, format!("{read} {e}"));
                        }
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
                    }
                }
                (StatusCode::OK, read.to_string())
            }),
        )
        .route("/hello", get(|| async { "hello" }));
    taskgroup::http::serve_router_with(group, listener, router, opts);
    addr
}

/// Whether `e`'s source chain holds an `io::Error` of kind `TimedOut`.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        cause = e.source();
    }
    false
}

/// A raw HTTP/1 client that has sent `POST path` with a body of
/// `content-length` bytes, of which only `sent`.
async fn post_part(addr: SocketAddr, path: &str, content_length: usize, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {content_length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

/// A client that sends 3 bytes of a 10-byte body and stops gets `400` from
/// axum's extractor once the handler's read has waited the body timeout,
/// 1 s here, and the connection is closed after it (the rest of the body
/// was never read); the handler that reads the body itself gets an
/// `io::Error` of kind `TimedOut` naming the setting.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_a_body_is_answered_after_the_request_body_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let opts = ServeOptions::new().request_body_timeout(ms(1_000));
    let addr = serve_echo(&group, opts).await;
    let asked = Instant::now();
    let mut extractor = post_part(addr, "/echo", 10, b"abc").await;
    let mut streaming = post_part(addr, "/stream", 10, b"abc").await;
    let (buf, closed) = read_to_close(&mut extractor, asked).await;
    let response = String::from_utf8_lossy(&buf);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(closed >= ms(1_000) && closed < ms(1_100), "{closed:?}");
    let (buf, closed) = read_to_close(&mut streaming, asked).await;
    let response = String::from_utf8_lossy(&buf);
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(
        response.ends_with(
            "3 the client sent no more of the request body in 1s \
             (ServeOptions::request_body_timeout)"
        ),
        "{response}"
    );
    assert!(closed >= ms(1_000) && closed < ms(1_100), "{closed:?}");
    shut_down_clean(&group).await;
}

/// A body that comes a byte every 900 ms under a 1 s timeout (ten bytes,
/// 8.1 s in all) is read to its end: the limit is between two reads, not
/// on the whole body.
#[tokio::test(start_paused = true)]
async fn a_body_that_comes_slowly_but_steadily_is_read_to_its_end() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let opts = ServeOptions::new().request_body_timeout(ms(1_000));
    let addr = serve_echo(&group, opts).await;
    let mut stream = post_part(addr, "/echo", 10, b"0").await;
    for byte in b"123456789" {
        tokio::time::sleep(ms(900)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let mut buf = vec![0; 512];
    let n = timeout(LIMIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("\r\n\r\n0123456789"), "{response}");
    drop(stream);
    shut_down_clean(&group).await;
}

/// The wait counts only while the handler reads: a handler that works 5 s
/// before it reads a body that comes 500 ms after that (5.5 s after the
/// request, past a 1 s timeout had it counted from there) reads it all.
#[tokio::test(start_paused = true)]
async fn a_handler_that_reads_the_body_late_is_not_timed_for_its_own_delay() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let opts = ServeOptions::new().request_body_timeout(ms(1_000));
    let addr = serve_echo(&group, opts).await;
    let asked = Instant::now();
    let mut stream = post_part(addr, "/late-echo", 6, b"").await;
    tokio::time::sleep(ms(5_500)).await;
    stream.write_all(b"abcdef").await.unwrap();
    let mut buf = vec![0; 512];
    let n = timeout(LIMIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("\r\n\r\nabcdef"), "{response}");
    assert!(asked.elapsed() >= ms(5_500), "{:?}", asked.elapsed());
    drop(stream);
    shut_down_clean(&group).await;
}

/// Under a limit of two tasks (the accept loop and one connection), a
/// client that stops inside its body holds the one slot only for the body
/// timeout: the next client is served 1 s after it; and
/// `shutdown(Duration::MAX)` with such a client in flight returns then,
/// clean (the request answered, the connection closed).
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_a_body_frees_its_slot_and_the_drain_after_the_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").limit(2).build();
    let opts = ServeOptions::new().request_body_timeout(ms(1_000));
    let addr = serve_echo(&group, opts.clone()).await;
    let stuck = post_part(addr, "/echo", 10, b"abc").await;
    let asked = Instant::now();
    until_len(&group, 2).await;
    let mut next = Client::connect(addr).await.unwrap();
    let response = timeout(LIMIT, next.get("/hello")).await.unwrap().unwrap();
    assert_eq!(response.body, "hello");
    let served = asked.elapsed();
    assert!(served >= ms(1_000) && served < ms(1_100), "{served:?}");
    drop((stuck, next));
    shut_down_clean(&group).await;

    let group = WaitGroup::builder().name("http").build();
    let addr = serve_echo(&group, opts).await;
    let mut stuck = post_part(addr, "/echo", 10, b"abc").await;
    let asked = Instant::now();
    until_len(&group, 2).await;
    let report = timeout(LIMIT, group.shutdown(Duration::MAX)).await.unwrap();
    assert!(report.is_clean(), "{report}");
    let drained = asked.elapsed();
    assert!(drained >= ms(1_000) && drained < ms(1_100), "{drained:?}");
    let (buf, _) = read_to_close(&mut stuck, asked).await;
    let response = String::from_utf8_lossy(&buf);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
}

/// An HTTP/2 `HEADERS` frame (`END_HEADERS`, and `END_STREAM` if `end`) of
/// a request `method path` with a `content-length` if given, its fields
/// HPACK-coded as literals without indexing (RFC 7541, section 6.2.2), by
/// their names' static table indexes.
fn h2_request(stream: u32, method: &str, path: &str, length: Option<usize>, end: bool) -> Vec<u8> {
    fn field(block: &mut Vec<u8>, index: u8, value: &str) {
        if index < 15 {
            block.push(index);
        } else {
            block.extend_from_slice(&[0x0f, index - 15]);
        }
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = Vec::new();
    field(&mut block, 2, method); // :method
    field(&mut block, 6, "http"); // :scheme
    field(&mut block, 4, path); // :path
    field(&mut block, 1, "x"); // :authority
    if let Some(length) = length {
        field(&mut block, 28, &length.to_string()); // content-length
    }
    let flags = 0x4 | u8::from(end);
    h2_frame(HEADERS, flags, stream, &block)
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;

/// The `:status` of the response `HEADERS` on `stream`, read from `conn`
/// (the server's frames on other streams and the connection skipped), from
/// its first field as h2 codes it: indexed, from the static table (`200`
/// is index 8, `400` index 12).
async fn h2_status(conn: &mut TcpStream, stream: u32) -> u8 {
    loop {
        let mut header = [0; 9];
        conn.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        let mut payload = vec![0; len];
        conn.read_exact(&mut payload).await.unwrap();
        if header[3] == HEADERS && id == stream {
            return payload[0];
        }
    }
}

/// On HTTP/2 a stream whose client stops inside its body gets `400` after
/// the body timeout, 1 s here, and only the stream ends: a request sent on
/// the same connection after it is answered.
#[tokio::test(start_paused = true)]
async fn an_http2_stream_that_stops_sending_its_body_is_answered_and_the_connection_kept() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let opts = ServeOptions::new().request_body_timeout(ms(1_000));
    let addr = serve_echo(&group, opts).await;
    let mut conn = h2_raw(addr).await;
    conn.write_all(&h2_request(1, "POST", "/echo", Some(10), false))
        .await
        .unwrap();
    conn.write_all(&h2_frame(DATA, 0, 1, b"abc")).await.unwrap();
    let asked = Instant::now();
    let status = timeout(LIMIT, h2_status(&mut conn, 1)).await.unwrap();
    assert_eq!(status, 0x80 | 12, "400");
    let answered = asked.elapsed();
    assert!(
        answered >= ms(1_000) && answered < ms(1_100),
        "{answered:?}"
    );
    conn.write_all(&h2_request(3, "GET", "/hello", None, true))
        .await
        .unwrap();
    let status = timeout(LIMIT, h2_status(&mut conn, 3)).await.unwrap();
    assert_eq!(status, 0x80 | 8, "200");
    drop(conn);
    shut_down_clean(&group).await;
}

/// A body timeout of `Duration::MAX` is no limit: a client that stops
/// inside its body still has its request running 100 s later.
#[tokio::test(start_paused = true)]
async fn an_unlimited_request_body_timeout_keeps_a_client_that_stops_sending() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let opts = ServeOptions::new().request_body_timeout(Duration::MAX);
    let addr = serve_echo(&group, opts).await;
    let mut stuck = post_part(addr, "/echo", 10, b"abc").await;
    until_len(&group, 2).await;
    assert!(still_open_after(&mut stuck, PAST).await);
    assert_eq!(group.len(), 2, "the request runs");
    stuck.write_all(b"defghij").await.unwrap();
    let mut buf = vec![0; 512];
    let n = timeout(LIMIT, stuck.read(&mut buf)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.ends_with("\r\n\r\nabcdefghij"), "{response}");
    drop(stuck);
    shut_down_clean(&group).await;
}

// The send timeout on HTTP/2: a client that stops granting flow-control
// window, so that h2 writes nothing and no write blocks.

const WINDOW_UPDATE: u8 = 0x8;

/// The next frame on `conn`: type, stream id and payload length; `None` at
/// the end of the connection.
async fn next_frame_on(conn: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(u8, u32, usize)> {
    let mut header = [0; 9];
    conn.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let mut payload = vec![0; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some((header[3], stream, len))
}

/// What a raw HTTP/2 client read to its connection's end.
#[derive(Debug, Default)]
struct Seen {
    /// `DATA` bytes on streams 1 and 3.
    data: [usize; 2],
    /// Whether stream 3's response `HEADERS` came.
    answered_3: bool,
    /// When the last `DATA` came and when the connection ended, from the
    /// watch's start.
    last_data: Duration,
    closed: Duration,
}

/// Reads `conn` to its end (at most [`LIMIT`]).
async fn watch(mut conn: tokio::net::tcp::OwnedReadHalf) -> Seen {
    let from = Instant::now();
    let mut seen = Seen::default();
    timeout(LIMIT, async {
        while let Some((kind, stream, len)) = next_frame_on(&mut conn).await {
            match (kind, stream) {
                (DATA, 1) => seen.data[0] += len,
                (DATA, 3) => seen.data[1] += len,
                (HEADERS, 3) => seen.answered_3 = true,
                _ => continue,
            }
            if kind == DATA {
                seen.last_data = from.elapsed();
            }
        }
    })
    .await
    .expect("the connection ends");
    seen.closed = from.elapsed();
    seen
}

/// A raw HTTP/2 client that read everything it was sent and granted no
/// window beyond the protocol's 65,535 bytes: it gets that much of `/big`,
/// and once the server's `DATA` used the window up, the connection is
/// dropped after the send timeout, 1 s, though no write ever blocked.
#[tokio::test(start_paused = true)]
async fn an_http2_client_that_grants_no_window_is_dropped_after_the_send_timeout() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let (read, mut write) = h2_raw(addr).await.into_split();
    write
        .write_all(&h2_request(1, "GET", "/big", None, true))
        .await
        .unwrap();
    let seen = watch(read).await;
    assert_eq!(seen.data, [65_535, 0], "{seen:?}");
    let held = seen.closed - seen.last_data;
    assert!(held >= ms(1_000) && held < ms(1_100), "{seen:?}");
    until_len(&group, 1).await; // the accept loop alone
    shut_down_clean(&group).await;
}

/// A raw HTTP/2 client that reads what it is sent and then, 200 ms later,
/// grants 32 KB more of window, on the stream and the connection, keeps its
/// connection under a 2 s send timeout: each grant is sent in full, twenty
/// of them over 4 s. (Real time: on Tokio's paused clock h2 sends nothing
/// after such a grant, with or without the send timeout; the 200 ms against
/// 2 s are a wide margin for a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_grants_window_as_it_reads_keeps_its_connection() {
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(2_000))).await;
    let (mut read, mut write) = h2_raw(addr).await.into_split();
    write
        .write_all(&h2_request(1, "GET", "/big", None, true))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut granted, mut data) = (65_535, 0);
    for _ in 0..20 {
        timeout(LIMIT, async {
            while data < granted {
                let frame = next_frame_on(&mut read).await;
                let (kind, stream, len) = frame.expect("the connection is kept");
                if (kind, stream) == (DATA, 1) {
                    data += len;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(data, granted, "no more than the window");
        tokio::time::sleep(ms(200)).await;
        for stream in [0, 1] {
            let grant = h2_frame(WINDOW_UPDATE, 0, stream, &32_768_u32.to_be_bytes());
            write.write_all(&grant).await.unwrap();
        }
        granted += 32_768;
    }
    assert!(started.elapsed() >= ms(4_000));
    drop((read, write));
    shut_down_clean(&group).await;
}

/// One stream that still moves keeps the connection: with `/big` held by
/// the window from the start, `/five` on the same connection (answered
/// after 5 s) keeps it; once `/five` has answered, its `DATA` held back too
/// (`/big` used up the connection's window), the connection is dropped 1 s
/// later.
#[tokio::test(start_paused = true)]
async fn an_http2_connection_is_dropped_only_once_every_response_is_held() {
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let (read, mut write) = h2_raw(addr).await.into_split();
    let both = [
        h2_request(1, "GET", "/big", None, true),
        h2_request(3, "GET", "/five", None, true),
    ]
    .concat();
    write.write_all(&both).await.unwrap();
    let seen = watch(read).await;
    assert_eq!(seen.data, [65_535, 0], "{seen:?}");
    assert!(seen.answered_3, "{seen:?}");
    assert!(
        seen.closed >= ms(6_000) && seen.closed < ms(6_100),
        "{seen:?}"
    );
    shut_down_clean(&group).await;
}

/// After the drain signal, an HTTP/2 client that grants no window holds
/// the drain only for the send timeout: `shutdown(Duration::MAX)` returns
/// 1 s after its window was used up, clean.
#[tokio::test(start_paused = true)]
async fn an_http2_client_that_grants_no_window_holds_an_unbounded_drain_only_for_the_send_timeout()
{
    tick_every_millisecond();
    let group = WaitGroup::builder().name("http").build();
    let addr = serve_big(&group, ServeOptions::new().send_timeout(ms(1_000))).await;
    let (mut read, mut write) = h2_raw(addr).await.into_split();
    write
        .write_all(&h2_request(1, "GET", "/big", None, true))
        .await
        .unwrap();
    let mut data = 0;
    while data < 65_535 {
        let (kind, stream, len) = next_frame_on(&mut read).await.unwrap();
        if (kind, stream) == (DATA, 1) {
            data += len;
        }
    }
    let held = Instant::now();
    let report = timeout(LIMIT, group.shutdown(Duration::MAX)).await.unwrap();
    assert!(report.is_clean(), "{report}");
    let drained = held.elapsed();
    assert!(drained >= ms(990) && drained < ms(1_100), "{drained:?}");
    drop((read, write));
}
