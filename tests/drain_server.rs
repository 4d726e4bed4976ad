//! A line-based TCP request/response server built on taskgroup, drained by
//! `shutdown` in the middle of load from 500 concurrent clients (loopback
//! only; bounded in count and time).
//!
//! # The server
//!
//! One group, "server". Its accept loop is a `go()` task; each accepted
//! connection becomes a `task().name("conn <peer>").try_go(..)` task, or, once the group
//! is closed, is dropped unanswered. A connection task reads a request line
//! and writes the response line; between requests it stops when cancelled.
//! An `upload` request is followed by a body line, which the task waits for
//! even when cancelled (a request in flight is finished, not cut): a client
//! that never sends the body is a slow client.
//!
//! # Accounting (each request is exactly one of)
//!
//! * **answered**: the client read the complete, correct response line;
//! * **dropped**: the client wrote it (or tried to) and the connection closed
//!   (EOF or reset) before any byte of a response; the server never read it;
//! * **aborted**: a slow client's `upload`: read by the server, still waiting
//!   for its body at the deadline, so the task is aborted and named in the
//!   report.
//!
//! A **truncated** response (some bytes, then EOF) would break the promise
//! that every request read gets a complete response; the test asserts there
//! are none. Connections opened after `close()` was observed are **refused**
//! (connect fails) or **closed** without any response.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use taskgroup::WaitGroup;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const CLIENTS: usize = 500;
const SLOW: usize = 10;
const LATE: usize = 50;
/// Answered requests before the shutdown starts (with every client connected
/// and answered at least once, the load is then well under way).
const WARMUP_ANSWERS: usize = 10 * CLIENTS;
/// Upper bound on requests per client, so the load is bounded in count.
const MAX_REQUESTS: usize = 100_000;
/// Generous, so that on a loaded machine only the slow clients are still busy at
/// the deadline.
const GRACE: Duration = Duration::from_secs(5);
const ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Generous bound for waiting on a signal on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct ServerStats {
    reads: AtomicUsize,
    responses: AtomicUsize,
    refused: AtomicUsize,
    accept_errors: AtomicUsize,
    uploads_started: AtomicUsize,
}

#[derive(Default)]
struct ClientStats {
    /// How many clients run (not counting late ones).
    clients: usize,
    /// Notified when every client got its first response.
    all_active: Notify,
    /// Notified when `WARMUP_ANSWERS` requests were answered.
    warm: Notify,
    /// The server-side task names of the slow clients' connections.
    slow_addrs: parking_lot::Mutex<BTreeSet<String>>,
    /// Clients that got their first response.
    active: AtomicUsize,
    sent: AtomicUsize,
    answered: AtomicUsize,
    dropped: AtomicUsize,
    truncated: AtomicUsize,
    aborted: AtomicUsize,
    late_refused: AtomicUsize,
    late_closed: AtomicUsize,
    late_answered: AtomicUsize,
}

/// The soft limit on open files, from /proc (Linux); `None` if unknown.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(usize::MAX)
    } else {
        soft.parse().ok()
    }
}

fn start_server(
    listener: TcpListener,
    stats: Arc<ServerStats>,
    uploads_ready: Arc<Notify>,
    slow: usize,
) -> WaitGroup {
    let server = WaitGroup::builder()
        .name("server")
        .abort_timeout(ABORT_TIMEOUT)
        .build();
    let wg = server.clone();
    server.task().name("accept").go(move |ctx| async move {
        let mut first_error = None;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = ctx.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Keep serving (e.g. EMFILE is transient); report it.
                        stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                        tokio::task::yield_now().await;
                        continue;
                    }
                },
            };
            let (stats2, ready) = (stats.clone(), uploads_ready.clone());
            let spawned = wg
                .task()
                .name(format!("conn {peer}"))
                .try_go(move |ctx| serve(stream, ctx, stats2, ready, slow));
            if spawned.is_err() {
                // Closed: the connection is dropped without a response.
                stats.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Dropping the listener refuses connections from here on.
        drop(listener);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    server
}

async fn serve(
    stream: TcpStream,
    ctx: taskgroup::TaskContext,
    stats: Arc<ServerStats>,
    uploads_ready: Arc<Notify>,
    slow: usize,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // Between requests, stop when cancelled (biased: cancellation first,
        // so an unread request is left unread and its client sees the close).
        let n = tokio::select! {
            biased;
            () = ctx.cancelled() => return Ok(()),
            n = reader.read_line(&mut line) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            // EOF in the middle of a line: the client went away.
            return Ok(());
        }
        // A request has been read: from here on it is answered in full,
        // whatever the cancellation says.
        stats.reads.fetch_add(1, Ordering::Relaxed);
        let request = line.trim_end().to_owned();
        if request.starts_with("upload") {
            if stats.uploads_started.fetch_add(1, Ordering::Relaxed) + 1 == slow {
                uploads_ready.notify_one();
            }
            let mut body = String::new();
            reader.read_line(&mut body).await?; // ignores cancellation
        }
        let response = format!("ok {request}\n");
        write.write_all(response.as_bytes()).await?;
        stats.responses.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client that sends requests back to back until the server closes the
/// connection (or `MAX_REQUESTS`). A slow client sends one normal request,
/// then an `upload` header without its body, and waits for the close.
async fn client(addr: SocketAddr, id: usize, slow: bool, stats: Arc<ClientStats>) {
    let stream = TcpStream::connect(addr).await.expect("connect during load");
    if slow {
        stats
            .slow_addrs
            .lock()
            .insert(format!("conn {}", stream.local_addr().unwrap()));
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    for seq in 0..MAX_REQUESTS {
        let request = if slow && seq == 1 {
            format!("upload {id}")
        } else {
            format!("req {id} {seq}")
        };
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if write
            .write_all(format!("{request}\n").as_bytes())
            .await
            .is_err()
        {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(_) if line == format!("ok {request}\n") => {
                if seq == 0 && stats.active.fetch_add(1, Ordering::Relaxed) + 1 == stats.clients {
                    stats.all_active.notify_one();
                }
                if stats.answered.fetch_add(1, Ordering::Relaxed) + 1 == WARMUP_ANSWERS {
                    stats.warm.notify_one();
                }
            }
            Ok(_) | Err(_) if line.is_empty() => {
                // Closed with no response at all.
                if slow && seq == 1 {
                    stats.aborted.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(_) | Err(_) => {
                stats.truncated.fetch_add(1, Ordering::Relaxed);
                panic!("client {id}: truncated or wrong response {line:?} to {request:?}");
            }
        }
    }
}

/// A client that connects after `close()` was observed: it must be refused,
/// or closed without a response.
async fn late_client(addr: SocketAddr, id: usize, stats: Arc<ClientStats>) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        stats.late_refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (read, mut write) = stream.into_split();
    let _ = write.write_all(format!("late {id}\n").as_bytes()).await;
    let mut line = String::new();
    let _ = BufReader::new(read).read_line(&mut line).await;
    if line.is_empty() {
        stats.late_closed.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.late_answered.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_server_under_load() {
    // ~2 sockets per client (both ends) plus slack.
    let needed = 2 * (CLIENTS + LATE) + 64;
    let limit = open_file_limit();
    let clients = match limit {
        Some(limit) if limit < needed => {
            let fit = (limit.saturating_sub(64 + 2 * LATE)) / 2;
            eprintln!(
                "drain_server: WARNING: open-file limit {limit} < {needed}; \
                 running {fit} clients instead of {CLIENTS} (raise `ulimit -n`)"
            );
            assert!(
                fit > SLOW * 2,
                "open-file limit {limit} too low for this test"
            );
            fit
        }
        _ => CLIENTS,
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    // A backlog that holds every client connecting at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_stats = Arc::new(ServerStats::default());
    let uploads_ready = Arc::new(Notify::new());
    let server = start_server(listener, server_stats.clone(), uploads_ready.clone(), SLOW);

    let stats = Arc::new(ClientStats {
        clients,
        ..ClientStats::default()
    });
    let mut client_tasks = Vec::new();
    for id in 0..clients {
        client_tasks.push(tokio::spawn(client(addr, id, id < SLOW, stats.clone())));
    }

    // Shut down mid-load: once the load is under way and every slow client's
    // upload is in flight (signals, not sleeps).
    tokio::time::timeout(LIMIT, stats.all_active.notified())
        .await
        .expect("not every client connected and got a response");
    tokio::time::timeout(LIMIT, stats.warm.notified())
        .await
        .expect("load never warmed up");
    tokio::time::timeout(LIMIT, uploads_ready.notified())
        .await
        .expect("slow uploads never started");
    let answered_at_shutdown = stats.answered.load(Ordering::Relaxed);

    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(GRACE).await }
    });
    // Connections opened after close() was observed.
    while !server.is_closed() {
        tokio::task::yield_now().await;
    }
    let late: Vec<_> = (0..LATE)
        .map(|id| tokio::spawn(late_client(addr, id, stats.clone())))
        .collect();

    let report = tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("shutdown hung")
        .unwrap();
    for task in client_tasks.into_iter().chain(late) {
        tokio::time::timeout(LIMIT, task)
            .await
            .expect("a client never saw its connection close")
            .unwrap();
    }

    let s = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let (sent, answered, dropped, aborted) = (
        s(&stats.sent),
        s(&stats.answered),
        s(&stats.dropped),
        s(&stats.aborted),
    );
    println!(
        "drain_server: {clients} clients ({SLOW} slow) + {LATE} late; sent {sent} = answered \
         {answered} + dropped {dropped} + aborted {aborted}; {answered_at_shutdown} answered \
         before shutdown; server read {} and refused {} connections after close; late: {} \
         refused, {} closed; {report}",
        s(&server_stats.reads),
        s(&server_stats.refused),
        s(&stats.late_refused),
        s(&stats.late_closed),
    );

    // Every request the server read got a complete response, except the slow
    // uploads, which were aborted at the deadline.
    assert_eq!(s(&stats.truncated), 0);
    assert_eq!(s(&server_stats.responses), answered);
    assert_eq!(s(&server_stats.reads), answered + SLOW);
    assert_eq!(aborted, SLOW);
    // The counts add up: every request sent is answered, dropped unread, or
    // aborted.
    assert_eq!(sent, answered + dropped + aborted);
    // Connections after close(): none answered.
    assert_eq!(s(&stats.late_answered), 0);
    assert_eq!(s(&stats.late_refused) + s(&stats.late_closed), LATE);
    // The slow clients' tasks, and only those, were aborted, by name.
    let aborted_names: BTreeSet<String> = report
        .aborted()
        .iter()
        .map(|t| t.name().unwrap().to_owned())
        .collect();
    assert_eq!(aborted_names, *stats.slow_addrs.lock(), "{report}");
    assert!(report.pending().is_empty(), "{report}");
    // The accept loop's error, if it had one, is the only failure reported.
    let errors: Vec<_> = report.errors().iter().map(|e| e.name()).collect();
    if s(&server_stats.accept_errors) == 0 {
        assert!(errors.is_empty(), "{report}");
    } else {
        assert_eq!(errors, [Some("accept")], "{report}");
    }
    // Within the deadline plus the abort timeout plus a generous bound.
    assert!(report.elapsed() >= GRACE, "{report}");
    assert!(
        report.elapsed() <= GRACE + ABORT_TIMEOUT + Duration::from_secs(10),
        "{report}"
    );
    assert!(server.is_empty());
    // Nothing left on the runtime. A task whose JoinHandle has resolved can
    // still be counted alive until its worker releases it, so this polls the
    // count, with an upper bound, instead of reading it once.
    let settle_started = std::time::Instant::now();
    while metrics.num_alive_tasks() != baseline {
        assert!(
            settle_started.elapsed() < LIMIT,
            "tasks left behind: {} alive, baseline {baseline}",
            metrics.num_alive_tasks()
        );
        tokio::task::yield_now().await;
    }
}
