//! An axum HTTP server that shuts down the way Kubernetes and systemd expect.
//!
//! `taskgroup::http::serve_router` serves axum's router as work of the
//! `server` group: the accept loop and each connection (`conn <peer>`, HTTP/1
//! or HTTP/2) are its tasks. A fake database pool and a log flusher are
//! groups linked below it, in that order.
//! On shutdown a [`ShutdownPlan`](taskgroup::shutdown::ShutdownPlan) runs the phases,
//! each logged with the time since start:
//!
//! 1. readiness fails: `/health/ready` answers 503;
//! 2. the pre-stop delay: the listener stays open while load balancers notice;
//! 3. the group closes and is cancelled: the accept loop stops and drops the
//!    listener;
//! 4. in-flight requests finish under the grace period (an HTTP/1 keep-alive
//!    connection closes after its current response, HTTP/2 sends `GOAWAY`);
//! 5. connections still busy at the deadline are aborted;
//! 6. the database pool closes, then the log flusher;
//! 7. the report names what finished and what was aborted in 5.
//!
//! Endpoints: `GET /health/ready`, `GET /work?ms=N` (works N ms, queries the
//! database, answers `done N`).
//!
//! Run with `cargo run --example axum_server --features axum`: it sends itself a quick, a slow
//! and a too-slow request, shuts down while they are in flight, probes
//! readiness during the pre-stop delay and connects once the listener is
//! closed, then exits (in about 2 s). With `-- --serve` it serves until
//! SIGTERM or Ctrl-C instead, and runs the same phases then
//! ([`ShutdownPlan::run_on_signal`](taskgroup::shutdown::ShutdownPlan::run_on_signal));
//! a second signal aborts what is left and exits with 130 (Ctrl-C) or 143
//! (SIGTERM):
//!
//! ```text
//! cargo run --example axum_server --features axum -- --serve 8080
//! curl -i 127.0.0.1:8080/health/ready
//! curl -i '127.0.0.1:8080/work?ms=5000' & kill -TERM <pid>
//! ```
//!
//! Settings: the port from the first argument or `PORT` (default 0: any free
//! port, printed), `PRE_STOP_MS` (default 200), `GRACE_MS` (default 2000).
//! With Kubernetes, keep `PRE_STOP_MS + GRACE_MS` plus the abort timeout (1 s)
//! below `terminationGracePeriodSeconds`.

mod client;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use taskgroup::BoxError;
use tokio::sync::mpsc;

use client::{Client, Response};
use server::{Config, Event, Server};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.iter().any(|a| a == "--serve");
    let port = match args.iter().find(|a| !a.starts_with("--")) {
        Some(port) => port.clone(),
        None => std::env::var("PORT").unwrap_or_else(|_| "0".into()),
    };
    let port: u16 = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
    let config = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pre_stop: env_ms("PRE_STOP_MS", 200)?,
        grace: env_ms("GRACE_MS", 2000)?,
    };

    let report = if serve {
        let server = Server::start(config, None).await?;
        let addr = server.addr();
        println!("try: curl -i http://{addr}/health/ready; curl -i 'http://{addr}/work?ms=3000'");
        println!("serving until SIGTERM or Ctrl-C (a second one aborts what is left)");
        match server.shutdown_on_signal().await {
            Ok(report) => report,
            Err(err) => {
                // A second signal (exit 130 or 143, as a shell reports a
                // process killed by it), or no signal handler.
                eprintln!("{err}");
                std::process::exit(err.exit_code());
            }
        }
    } else {
        let (events_tx, events) = mpsc::unbounded_channel();
        let server = Server::start(config, Some(events_tx)).await?;
        self_test(server, events).await?
    };
    // Work that outlived the shutdown (a guard, or a task stuck in blocking
    // code) is reported as pending: exit non-zero so the supervisor knows.
    if !report.pending().is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Sends the server a quick, a slow and a too-slow request, shuts it down
/// while they are in flight, and shows what clients see in each phase.
async fn self_test(
    server: Server,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<taskgroup::ShutdownReport, BoxError> {
    let addr = server.addr();
    let mut probe = Client::connect(addr).await?;
    let ready = probe.get("/health/ready").await;
    show(&probe, "/health/ready", ready);

    let mut requests = ["/work?ms=50", "/work?ms=1000", "/work?ms=10000"].map(|path| {
        Some(tokio::spawn(async move {
            let mut client = Client::connect(addr).await?;
            let response = client.get(path).await;
            show(&client, path, response);
            Ok::<_, BoxError>(())
        }))
    });
    // Shut down once all three are being worked on.
    let mut working = 0;
    while working < requests.len() {
        match events.recv().await {
            Some(Event::WorkStarted { .. }) => working += 1,
            Some(_) => {}
            None => return Err("the server stopped".into()),
        }
    }

    let shutdown = tokio::spawn(server.shutdown());
    while let Some(event) = events.recv().await {
        match event {
            // The listener is still open, but the probe fails.
            Event::PreStop { .. } => {
                let ready = probe.get("/health/ready").await;
                show(&probe, "/health/ready", ready);
            }
            // Once the slow request is answered during the drain, the
            // listener is long closed.
            Event::WorkFinished { ms: 1000, .. } => {
                if let Some(slow) = requests[1].take() {
                    slow.await??;
                }
                match Client::connect(addr).await {
                    Ok(_) => println!("{:>9}  client: new connection accepted (unexpected)", ""),
                    Err(e) => println!("{:>9}  client: new connection refused ({e})", ""),
                }
            }
            Event::Done { .. } => break,
            _ => {}
        }
    }
    let report = shutdown.await?;
    for request in requests.into_iter().flatten() {
        request.await??;
    }
    Ok(report)
}

/// Prints what a client got.
fn show(client: &Client, path: &str, response: Result<Response, BoxError>) {
    let from = client.local_addr();
    match response {
        Ok(r) => println!(
            "{:>9}  client {from}: GET {path} -> {} {:?}{}",
            "",
            r.status,
            r.body.trim_end(),
            if r.closing {
                " (connection: close)"
            } else {
                ""
            }
        ),
        Err(e) => println!("{:>9}  client {from}: GET {path} -> error: {e}", ""),
    }
}

/// A duration in milliseconds from the environment, or the default.
fn env_ms(name: &str, default: u64) -> Result<Duration, BoxError> {
    match std::env::var(name) {
        Ok(ms) => Ok(Duration::from_millis(
            ms.parse().map_err(|e| format!("{name}={ms:?}: {e}"))?,
        )),
        Err(_) => Ok(Duration::from_millis(default)),
    }
}
