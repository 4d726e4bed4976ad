//! A health endpoint that serves the group tree, with counts and pending work,
//! as JSON (features `serde` and `axum`):
//!
//! * `GET /health`: `{"status": "ok" | "draining", "pending": n, "tree": <task tree>}`,
//!   200 while the app group is open and 503 once it is closed (draining); the
//!   tree is `WaitGroup::dump()`'s versioned JSON (see `taskgroup::dump`);
//! * `GET /health/pending`: the `PendingReport` (only the groups with work).
//!
//! With no arguments it runs a self-test: it starts some work (a worker
//! group with a job queue under a limit, a database group linked below it),
//! fetches `/health` over loopback, prints the JSON, shuts the app down while
//! the endpoint still answers (503, "draining"), and prints the shutdown
//! report as JSON. `-- --serve [port]` serves until Ctrl-C instead:
//!
//! ```sh
//! cargo run --example health --features serde,axum -- --serve 8080
//! curl -s 127.0.0.1:8080/health | jq .
//! ```

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use taskgroup::WaitGroup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The app's tree: the handle the endpoint reads.
#[derive(Clone)]
struct App {
    wg: WaitGroup,
}

async fn health(State(app): State<App>) -> impl IntoResponse {
    let tree = app.wg.dump();
    let draining = app.wg.is_closed();
    // Written around the tree's own JSON, so its fields keep their
    // documented order (a `serde_json::Value` would sort them).
    let body = format!(
        r#"{{"status":"{}","pending":{},"tree":{}}}"#,
        if draining { "draining" } else { "ok" },
        tree.len(),
        serde_json::to_string(&tree).expect("a tree serializes"),
    );
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn pending(State(app): State<App>) -> impl IntoResponse {
    let body = serde_json::to_string(&app.wg.pending()).expect("a report serializes");
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// Some work to look at: two workers, a queue of jobs under a limit, and a
/// database group linked below the workers that holds a connection.
fn start_work() -> (WaitGroup, taskgroup::TaskGuard) {
    let app = WaitGroup::builder().name("app").build();
    let workers = app.task().name("workers").child();
    let db = WaitGroup::builder().name("db").build();
    workers.link(&db).expect("a fresh group links");
    let jobs = WaitGroup::builder().name("jobs").limit(2).build();
    workers.link(&jobs).expect("a fresh group links");
    for i in 0..2 {
        workers
            .task()
            .name(format!("worker {i}"))
            .go(|ctx| async move { ctx.cancelled().await });
    }
    for i in 0..4 {
        jobs.task().name(format!("job {i}")).go(|ctx| async move {
            // A job that stops when asked.
            ctx.run_until_cancelled(std::future::pending::<()>()).await;
        });
    }
    let conn = db.task().name("connection").add();
    (app, conn)
}

/// GET over a fresh connection; the status line, the body as sent, and
/// parsed.
async fn get_json(addr: std::net::SocketAddr, path: &str) -> (String, String, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.expect("the server listens");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("utf-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let value = serde_json::from_str(body).expect("a JSON body");
    (status, body.to_owned(), value)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.first().is_some_and(|a| a == "--serve");
    let port: u16 = match args.get(1) {
        Some(port) if serve => port.parse()?,
        _ => 0,
    };

    let (wg, conn) = start_work();
    let router = Router::new()
        .route("/health", get(health))
        .route("/health/pending", get(pending))
        .with_state(App { wg: wg.clone() });
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("health endpoint on http://{addr}/health");
    // The endpoint is not part of the app's tree: it must keep answering
    // while the app drains, and stops after it.
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
    });

    if serve {
        tokio::signal::ctrl_c().await?;
    } else {
        let (status, text, body) = get_json(addr, "/health").await;
        println!("{status}\n{text}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["tree"]["version"], 1);
        assert_eq!(body["pending"], 7, "2 workers, 4 jobs, 1 connection");

        let (_, pending, _) = get_json(addr, "/health/pending").await;
        println!("/health/pending: {pending}");

        // Draining: closed, and the endpoint says so while the work stops.
        wg.close();
        let (status, _, body) = get_json(addr, "/health").await;
        println!("while draining: {status}, status {}", body["status"]);
        assert!(status.contains("503"), "{status}");
    }

    // The connection's holder returns it once the app is told to stop; the
    // workers and jobs stop on cancel too.
    let ctx = wg.context();
    let release = tokio::spawn(async move {
        ctx.cancelled().await;
        drop(conn);
    });
    let report = wg.shutdown(Duration::from_secs(2)).await;
    println!(
        "shutdown report: {}",
        serde_json::to_string_pretty(&report)?
    );
    release.await?;
    stop.cancel();
    server.await??;
    report.into_result()?;
    Ok(())
}
