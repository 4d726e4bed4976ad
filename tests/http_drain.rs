//! The `axum_server` example's server, shut down under real HTTP clients on
//! loopback. The test follows the shutdown through the server's events; time
//! appears only as generous upper bounds.

#[path = "../examples/axum_server/client.rs"]
mod client;
#[path = "../examples/axum_server/server.rs"]
mod server;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use client::Client;
use server::{Config, Event, Server};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// The longest any single step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(15);

/// The server's events, kept in the order they happened.
struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
}

impl Events {
    /// Waits until an event matching `pred` has happened; its index.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> usize {
        if let Some(i) = self.seen.iter().position(&pred) {
            return i;
        }
        loop {
            match timeout(LIMIT, self.rx.recv()).await {
                Ok(Some(event)) => {
                    let matched = pred(&event);
                    self.seen.push(event);
                    if matched {
                        return self.seen.len() - 1;
                    }
                }
                Ok(None) => panic!("no {what}: the server is gone; saw {:#?}", self.seen),
                Err(_) => panic!("no {what} within {LIMIT:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// The index of the only event matching `pred`, among those seen.
    fn only(&self, what: &str, pred: impl Fn(&Event) -> bool) -> usize {
        let found: Vec<usize> = (0..self.seen.len())
            .filter(|&i| pred(&self.seen[i]))
            .collect();
        assert_eq!(found.len(), 1, "{what}: in {:#?}", self.seen);
        found[0]
    }

    /// The indices of the events matching `pred`.
    fn all(&self, pred: impl Fn(&Event) -> bool) -> Vec<usize> {
        (0..self.seen.len())
            .filter(|&i| pred(&self.seen[i]))
            .collect()
    }
}

async fn start(pre_stop: Duration, grace: Duration) -> (Server, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        pre_stop,
        grace,
    };
    let server = Server::start(config, Some(tx)).await.unwrap();
    let events = Events {
        rx,
        seen: Vec::new(),
    };
    (server, events)
}

/// `GET /work?ms={ms}` on a new connection, in a task; the connection's local
/// address (the server names the connection after it) and the task.
async fn spawn_work(
    addr: SocketAddr,
    ms: u64,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<client::Response, taskgroup::BoxError>>,
) {
    let mut client = Client::connect(addr).await.unwrap();
    let local = client.local_addr();
    let path = format!("/work?ms={ms}");
    (local, tokio::spawn(async move { client.get(&path).await }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_seen_by_clients_with_a_straggler_aborted_and_named() {
    let pre_stop = Duration::from_secs(1);
    let grace = Duration::from_secs(3);
    let (server, mut events) = start(pre_stop, grace).await;
    let addr = server.addr();

    // Ready before the shutdown, on a keep-alive connection kept for later.
    let mut probe = Client::connect(addr).await.unwrap();
    let ready = probe.get("/health/ready").await.unwrap();
    assert_eq!((ready.status.as_u16(), ready.closing), (200, false));

    // A slow request that fits in pre-stop + grace, and one that does not.
    let (slow_peer, slow) = spawn_work(addr, 2_000).await;
    let (stuck_peer, stuck) = spawn_work(addr, 60_000).await;
    events
        .wait_for("slow request started", |e| {
            matches!(e, Event::WorkStarted { ms: 2_000 })
        })
        .await;
    events
        .wait_for("stuck request started", |e| {
            matches!(e, Event::WorkStarted { ms: 60_000 })
        })
        .await;

    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());

    // (1), (2): during the pre-stop delay readiness answers 503, on the open
    // keep-alive connection and on a new one (the listener is still open).
    events
        .wait_for("pre-stop", |e| matches!(e, Event::PreStop { .. }))
        .await;
    let not_ready = probe.get("/health/ready").await.unwrap();
    assert_eq!(not_ready.status.as_u16(), 503);
    assert_eq!(not_ready.body, "shutting down\n");
    let mut late = Client::connect(addr)
        .await
        .expect("the listener stays open during the pre-stop delay");
    assert_eq!(
        late.get("/health/ready").await.unwrap().status.as_u16(),
        503
    );

    // (3): once the listener is closed, a new connection is refused.
    events
        .wait_for("listener closed", |e| {
            matches!(e, Event::ListenerClosed { .. })
        })
        .await;
    let refused = TcpStream::connect(addr)
        .await
        .expect_err("connected after the listener closed");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    // (4): the slow request, in flight when draining began, is answered; the
    // response closes its keep-alive connection, as sent during the drain.
    let slow = timeout(LIMIT, slow).await.unwrap().unwrap();
    let slow = slow.expect("the slow request is answered");
    assert_eq!(slow.status.as_u16(), 200);
    assert_eq!(slow.body, "done 2000");
    assert!(slow.closing, "answered during the drain: connection: close");

    // (5): the stuck request is cut off at the deadline and named.
    let stuck = timeout(LIMIT, stuck).await.unwrap().unwrap();
    let error = stuck.expect_err("the stuck request must not be answered");
    let report = timeout(LIMIT, shutdown).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    println!("client saw: {error}\n{report}");
    let stuck_name = format!("conn {stuck_peer}");
    let aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    assert_eq!(aborted[0], Some(stuck_name.as_str()), "{report}");
    assert_eq!(report.aborted()[0].group_name(), Some("server"));
    assert!(report.to_string().contains(&stuck_name), "{report}");
    assert!(report.pending().is_empty(), "{report}");
    assert!(report.errors().is_empty(), "{report}");
    assert!(elapsed >= pre_stop + grace, "aborted before the deadline");
    assert!(elapsed < pre_stop + grace + LIMIT, "took {elapsed:?}");

    // (6) and the order of everything: the slow request finished during the
    // drain; every connection ended before the pool's turn; the flusher's
    // turn came after the pool's. The stuck connection used up the shared
    // deadline, so the pool and the flusher may have been aborted rather
    // than closed: the order holds either way.
    events
        .wait_for("done", |e| matches!(e, Event::Done { .. }))
        .await;
    let draining = events.only("draining", |e| matches!(e, Event::Draining { .. }));
    let slow_done = events.only("slow finished", |e| {
        matches!(e, Event::WorkFinished { ms: 2_000, .. })
    });
    let slow_closed = events.only(
        "slow closed",
        |e| matches!(e, Event::ConnClosed { peer } if *peer == slow_peer),
    );
    let stuck_aborted = events.only(
        "stuck aborted",
        |e| matches!(e, Event::ConnAborted { peer } if *peer == stuck_peer),
    );
    let conns_ended =
        events.all(|e| matches!(e, Event::ConnClosed { .. } | Event::ConnAborted { .. }));
    assert_eq!(conns_ended.len(), 4, "probe, late, slow, stuck");
    // The straggler used up the grace period, yet the pool and the flusher
    // close cleanly, in order, in the forced phase after the deadline.
    let db_end = events.only("db closing", |e| matches!(e, Event::DbClosing { .. }));
    let db_closed = events.only("db closed", |e| matches!(e, Event::DbClosed));
    let flusher_end = events.only("flusher closing", |e| matches!(e, Event::FlusherClosing));
    let flusher_closed = events.only("flusher closed", |e| matches!(e, Event::FlusherClosed));
    assert!(
        events
            .all(|e| matches!(e, Event::DbAborted | Event::FlusherAborted))
            .is_empty(),
        "{:#?}",
        events.seen
    );

    let done = events.only("done", |e| matches!(e, Event::Done { .. }));
    assert!(draining < slow_done && slow_done < slow_closed);
    assert!(
        conns_ended.iter().all(|&i| i < db_end),
        "{:#?}",
        events.seen
    );
    assert!(stuck_aborted < db_end && db_end < flusher_end && flusher_end < done);
    assert!(db_closed < flusher_end && flusher_closed < done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stragglers_the_pool_then_the_flusher_close_after_the_connections() {
    let grace = Duration::from_secs(10);
    let (server, mut events) = start(Duration::ZERO, grace).await;
    let addr = server.addr();

    let (slow_peer, slow) = spawn_work(addr, 1_000).await;
    events
        .wait_for("slow request started", |e| {
            matches!(e, Event::WorkStarted { ms: 1_000 })
        })
        .await;
    let started = Instant::now();
    let report = timeout(LIMIT, server.shutdown()).await.unwrap();

    let slow = timeout(LIMIT, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.body.as_str()),
        (200, "done 1000")
    );
    assert!(report.is_clean(), "{report}");
    assert!(
        started.elapsed() < grace,
        "the drain ends when the work does"
    );

    events
        .wait_for("done", |e| matches!(e, Event::Done { .. }))
        .await;
    let slow_closed = events.only(
        "slow closed",
        |e| matches!(e, Event::ConnClosed { peer } if *peer == slow_peer),
    );
    let order = [
        events.only("draining", |e| matches!(e, Event::Draining { .. })),
        events.only("slow finished", |e| {
            matches!(e, Event::WorkFinished { ms: 1_000, .. })
        }),
        slow_closed,
        events.only("db closing", |e| matches!(e, Event::DbClosing { .. })),
        events.only("db closed", |e| matches!(e, Event::DbClosed)),
        events.only("flusher closing", |e| matches!(e, Event::FlusherClosing)),
        events.only("flusher closed", |e| matches!(e, Event::FlusherClosed)),
        events.only("done", |e| matches!(e, Event::Done { .. })),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", events.seen);
    assert!(events
        .all(|e| matches!(
            e,
            Event::ConnAborted { .. } | Event::DbAborted | Event::FlusherAborted
        ))
        .is_empty());
}
