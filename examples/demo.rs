//! A TCP server with `start()` and `close()`, drained within a deadline.
//!
//! The server answers one line per request (`work <ms>` → `done <ms>`).
//! The demo starts it on 127.0.0.1, runs a burst of clients against it
//! (most quick, a few far slower than the shutdown deadline), then closes it
//! with a 500 ms deadline while requests are in flight, and prints the
//! drain report: connections finished, aborted (by name), still pending.
//!
//! Run it with `cargo run --example demo`.

use std::net::SocketAddr;
use std::time::Duration;

use taskgroup::{ShutdownReport, TaskGuard, WaitGroup};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The server: its group, and the guard that says "the listener is open".
struct Server {
    wg: WaitGroup,
    addr: SocketAddr,
    listening: Option<TaskGuard>,
}

impl Server {
    async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let wg = WaitGroup::builder().name("server").build();
        // Completed in close(): until then, the group is never idle.
        let listening = Some(wg.task().name("listener").add());

        let conns = wg.clone();
        wg.task().name("accept").go(move |ctx| async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = ctx.draining() => return Ok::<_, std::io::Error>(()), // take no more
                    accepted = listener.accept() => accepted?,
                };
                // Refused once the server is closing: no connection slips in.
                let name = format!("conn {peer}");
                if conns
                    .task()
                    .name(name)
                    .try_go(move |ctx| serve(stream, ctx))
                    .is_err()
                {
                    return Ok(());
                }
            }
            // `listener` is dropped here: new connections are refused.
        });
        Ok(Server {
            wg,
            addr,
            listening,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`,
    /// aborts the rest, and says what happened.
    async fn close(&mut self, grace: Duration) -> ShutdownReport {
        if let Some(listening) = self.listening.take() {
            listening.done();
        }
        self.wg.shutdown(grace).await
    }
}

/// One connection: answers requests until the client hangs up or the
/// server shuts down. A request already read is always answered (or the
/// task is aborted at the deadline); no new request is read after shutdown
/// begins.
async fn serve(stream: TcpStream, ctx: taskgroup::TaskContext) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            line = lines.next_line() => line?,
        };
        let Some(line) = line else { return Ok(()) };
        let ms: u64 = line
            .strip_prefix("work ")
            .and_then(|ms| ms.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad request {line:?}")))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        write.write_all(format!("done {ms}\n").as_bytes()).await?;
    }
}

/// A client sending `requests` requests of `ms` each; returns how many were
/// answered.
async fn client(addr: SocketAddr, requests: usize, ms: u64) -> usize {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut answered = 0;
    for _ in 0..requests {
        if write
            .write_all(format!("work {ms}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        match lines.next_line().await {
            Ok(Some(_)) => answered += 1,
            _ => break,
        }
    }
    answered
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut server = Server::start().await?;
    println!("server listening on {}", server.addr);

    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..40 {
        // Quick clients: a few short requests each.
        clients.spawn(client(server.addr, 3, 20 + i % 5 * 10));
    }
    for _ in 0..3 {
        // Slow clients: one request far longer than the deadline.
        clients.spawn(client(server.addr, 1, 10_000));
    }
    // Shut down in the middle of the burst: quick clients are between
    // requests or mid-request, slow ones are deep in theirs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "{} connections open after {:.0?}; closing with a 500ms deadline",
        server.wg.len().saturating_sub(2),
        start.elapsed()
    );

    let report = server.close(Duration::from_millis(500)).await;

    let late = TcpStream::connect(server.addr).await;
    println!(
        "a client connecting after close: {}",
        match late {
            Ok(_) => "accepted (unexpected)".to_owned(),
            Err(e) => format!("refused ({e})"),
        }
    );

    let mut answered = 0;
    while let Some(n) = clients.join_next().await {
        answered += n.expect("client task");
    }
    println!("requests answered: {answered}");
    println!();
    println!("drain report:");
    println!(
        "  finished: {} (accept loop, listener guard, and connections)",
        report.finished()
    );
    println!("  aborted:  {}", report.aborted().len());
    for task in report.aborted() {
        println!("    {task}");
    }
    println!("  pending:  {}", report.pending().len());
    for task in report.pending().tasks() {
        println!("    {task}");
    }
    println!("  failed:   {}", report.errors().len());
    for error in report.errors() {
        println!("    {error}");
    }
    println!("  took:     {:?}", report.elapsed());
    Ok(())
}
