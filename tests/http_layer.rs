//! `taskgroup::http::TrackRequests` with plain `axum::serve(..)
//! .with_graceful_shutdown(group.cancelled_owned())`, under real HTTP/1 and
//! HTTP/2 clients on loopback. Time appears only as generous upper bounds.

#[path = "../examples/axum_server/client.rs"]
mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use client::Client;
use taskgroup::http::TrackRequests;
use taskgroup::shutdown::Grace;
use taskgroup::WaitGroup;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

/// The longest any single step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(15);

struct Server {
    requests: WaitGroup,
    addr: SocketAddr,
    started: mpsc::UnboundedReceiver<&'static str>,
    release: Arc<Semaphore>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `axum::serve` with the layer, shut down gracefully on the group's
/// cancellation; `/slow` answers when released, `/stuck` never, `/stream`
/// sends `a`, then `b` when released.
async fn start() -> Server {
    start_with(false).await
}

/// [`start`], shut down gracefully at the group's drain signal if `on_drain`
/// (`draining_owned()`), else on its cancellation (`cancelled_owned()`).
async fn start_with(on_drain: bool) -> Server {
    let requests = WaitGroup::builder().name("requests").build();
    let (tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/slow", {
            let (tx, release) = (tx.clone(), release.clone());
            get(move || async move {
                tx.send("/slow").unwrap();
                release.acquire().await.unwrap().forget();
                "slow done"
            })
        })
        .route("/stuck", {
            let tx = tx.clone();
            get(move || async move {
                tx.send("/stuck").unwrap();
                std::future::pending::<()>().await;
                "unreachable"
            })
        })
        .route("/stream", {
            let release = release.clone();
            get(move || async move {
                let chunks = futures::stream::unfold(0, move |n| {
                    let (tx, release) = (tx.clone(), release.clone());
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>("a"), 1)),
                            1 => {
                                tx.send("/stream").unwrap();
                                release.acquire().await.unwrap().forget();
                                Some((Ok("b"), 2))
                            }
                            _ => None,
                        }
                    }
                });
                Body::from_stream(chunks)
            })
        })
        .layer(TrackRequests::new(&requests));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = if on_drain {
        Box::pin(requests.draining_owned())
    } else {
        Box::pin(requests.cancelled_owned())
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { serve.await });
    Server {
        requests,
        addr,
        started,
        release,
        server,
    }
}

impl Server {
    async fn started(&mut self, what: &str) {
        let event = timeout(LIMIT, self.started.recv()).await.unwrap().unwrap();
        assert_eq!(event, what);
    }

    fn pending_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .requests
            .pending()
            .tasks()
            .map(|t| t.name().unwrap_or("?").to_owned())
            .collect();
        names.sort();
        names
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_the_requests_still_running_and_closed_groups_answer_503() {
    let mut server = start().await;
    let addr = server.addr;
    let mut idle_h1 = Client::connect(addr).await.unwrap();
    let mut idle_h2 = Client::connect_h2(addr).await.unwrap();
    assert_eq!(idle_h1.get("/hello").await.unwrap().body, "hello");
    assert_eq!(idle_h2.get("/hello").await.unwrap().body, "hello");

    let mut slow_client = Client::connect(addr).await.unwrap();
    let slow = tokio::spawn(async move { slow_client.get("/slow?secret=1").await });
    server.started("/slow").await;
    let mut stuck_client = Client::connect_h2(addr).await.unwrap();
    let stuck = tokio::spawn(async move { stuck_client.get("/stuck").await });
    server.started("/stuck").await;
    // Named by method and path (the query is left out).
    assert_eq!(server.pending_names(), ["GET /slow", "GET /stuck"]);

    // Closed: new requests, also on open connections, get 503 and are not
    // passed on; HTTP/1 is told to close the connection.
    server.requests.close();
    let refused = idle_h1.get("/hello").await.unwrap();
    assert_eq!((refused.status.as_u16(), refused.closing), (503, true));
    assert_eq!(refused.body, "");
    let refused = idle_h2.get("/hello").await.unwrap();
    assert_eq!((refused.status.as_u16(), refused.body.as_str()), (503, ""));
    assert_eq!(server.pending_names(), ["GET /slow", "GET /stuck"]);

    let requests = server.requests.clone();
    let shutdown = tokio::spawn(async move { requests.shutdown(Duration::from_millis(500)).await });
    timeout(LIMIT, server.requests.cancelled()).await.unwrap();
    server.release.add_permits(1);
    let slow = timeout(LIMIT, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.body.as_str()),
        (200, "slow done")
    );

    // A guard cannot be aborted: the stuck request is still running after
    // the deadline, and the report names it.
    let report = timeout(LIMIT, shutdown).await.unwrap().unwrap();
    println!("{report}");
    let pending: Vec<_> = report.pending().tasks().filter_map(|t| t.name()).collect();
    assert_eq!(pending, ["GET /stuck"], "{report}");
    assert!(report.aborted().is_empty(), "{report}");
    assert!(report.to_string().contains("GET /stuck"), "{report}");
    assert!(!stuck.is_finished());
    // axum's graceful shutdown waits for every connection, the stuck
    // request's too: `TrackRequests`' example bounds its wait for the server.
    assert!(!server.server.is_finished());
    stuck.abort();
    server.server.abort();
}

/// With a drain phase, `draining_owned()` stops `axum::serve` at the drain
/// signal: it closes its listener while a request in flight holds the group
/// in its drain phase, before the group is cancelled, and that request is
/// answered. (With `cancelled_owned()` it keeps accepting until the cancel.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_owned_stops_axum_serve_at_the_drain_signal() {
    let mut server = start_with(true).await;
    let mut client = Client::connect(server.addr).await.unwrap();
    let slow = tokio::spawn(async move { client.get("/slow").await });
    server.started("/slow").await;

    let requests = server.requests.clone();
    let grace = Grace::drain(Duration::from_secs(60)).then_cancel(Duration::from_secs(60));
    let shutdown = tokio::spawn(async move { requests.shutdown(grace).await });
    timeout(LIMIT, server.requests.draining_owned())
        .await
        .unwrap();
    // axum::serve took the signal: it closes its listener. It says so by no
    // signal of its own, so this looks every 10 ms (the bound is generous).
    let refused = async {
        while Client::connect(server.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(LIMIT, refused)
        .await
        .expect("axum::serve still accepts in the drain phase");
    // Still in the drain phase: the request in flight holds it.
    assert!(!server.requests.is_cancelled());
    server.release.add_permits(1);
    let slow = timeout(LIMIT, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(slow.status.as_u16(), 200);

    let report = timeout(LIMIT, shutdown).await.unwrap().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.elapsed() < Duration::from_secs(60), "{report}");
    timeout(LIMIT, server.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A request is named by the path the client sent, also in a router nested
/// under a prefix (which sees only the rest of the path), cut at 256 bytes;
/// and it is created where the layer was made, not in the layer's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_named_by_their_whole_path_cut_short_and_created_at_the_layer() {
    let requests = WaitGroup::builder().name("requests").build();
    let (tx, mut started) = mpsc::unbounded_channel();
    let stuck = move || {
        let tx = tx.clone();
        async move {
            tx.send(()).unwrap();
            std::future::pending::<()>().await;
            "unreachable"
        }
    };
    let layer_line = line!() + 4;
    let api = Router::new()
        .route("/x", get(stuck.clone()))
        .route("/long/{*rest}", get(stuck))
        .layer(TrackRequests::new(&requests));
    let app = Router::new().nest("/api", api);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = axum::serve(listener, app).with_graceful_shutdown(requests.cancelled_owned());
    let server = tokio::spawn(async move { serve.await });

    let long = format!("/api/long/{}", "a".repeat(10_000));
    let mut clients = Vec::new();
    for path in ["/api/x".to_owned(), long.clone()] {
        let mut client = Client::connect(addr).await.unwrap();
        clients.push(tokio::spawn(async move { client.get(&path).await }));
        timeout(LIMIT, started.recv()).await.unwrap().unwrap();
    }
    let pending = requests.pending();
    let mut names: Vec<&str> = pending.tasks().filter_map(|t| t.name()).collect();
    names.sort();
    // 256 bytes of the path: `/api/long/` and 246 `a`s.
    let cut = format!("GET /api/long/{}…", "a".repeat(246));
    assert_eq!(names, [cut.as_str(), "GET /api/x"]);
    for task in pending.tasks() {
        assert_eq!(
            (task.site().file(), task.site().line()),
            (file!(), layer_line)
        );
    }
    for client in clients {
        client.abort();
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_in_flight_until_its_body_is_sent_or_dropped() {
    let mut server = start().await;

    // The handler has returned; the body is still streaming.
    let mut client = Client::connect(server.addr).await.unwrap();
    let streaming = tokio::spawn(async move { client.get("/stream").await });
    server.started("/stream").await;
    assert_eq!(server.pending_names(), ["GET /stream"]);
    server.release.add_permits(1);
    let response = timeout(LIMIT, streaming).await.unwrap().unwrap().unwrap();
    assert_eq!(response.body, "ab");
    timeout(LIMIT, server.requests.wait())
        .await
        .unwrap()
        .unwrap();

    // A client that goes away mid-request: hyper drops the handler's
    // future, and the guard with it.
    let mut client = Client::connect_h2(server.addr).await.unwrap();
    let stuck = tokio::spawn(async move { client.get("/stuck").await });
    server.started("/stuck").await;
    assert_eq!(server.pending_names(), ["GET /stuck"]);
    stuck.abort(); // drops the client: the connection closes
    timeout(LIMIT, server.requests.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(server.requests.is_empty());

    let report = server.requests.shutdown(LIMIT).await;
    assert!(report.is_clean(), "{report}");
    timeout(LIMIT, server.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn the_layer_types_are_send_sync_and_static() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    send_sync_static::<TrackRequests>();
    send_sync_static::<taskgroup::http::TrackRequestsService<Router>>();
    send_static::<taskgroup::http::TrackedBody<Body>>(); // Sync as its body is
    send_static::<
        taskgroup::http::ResponseFuture<
            axum::routing::future::RouteFuture<std::convert::Infallible>,
        >,
    >();
}
