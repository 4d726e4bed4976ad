//! A flaky service restarted with exponential backoff, every status change printed, until
//! the intensity limit is reached and the restarter gives up.
//!
//! Run with `cargo run --example restart`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use taskgroup::service::{service_fn, Backoff, Intensity, Ready, Restarter, Service, StatusHub};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The panic below is caught by the supervisor and reported as a status event; this hook
    // only shortens the default panic report to one line.
    std::panic::set_hook(Box::new(|info| eprintln!("  (panic) {info}")));
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky = service_fn("flaky-db", move |_ctx: CancellationToken, ready: Ready| {
        let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            ready.ready();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if n == 2 {
                panic!("corrupted state on attempt {n}");
            }
            Err(format!("connection refused (attempt {n})").into())
        }
    });

    let hub = StatusHub::default();
    let mut events = hub.subscribe();
    let printer = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        while let Ok(event) = events.recv().await {
            println!("{:>6} ms  {event}", start.elapsed().as_millis());
        }
    });

    // 100 ms, 200 ms, 400 ms, ... up to 2 s, each reduced by up to 20 % of jitter; at most
    // 4 restarts within 10 s.
    let backoff =
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2), 2.0, 0.2)?;
    let mut restarter = Restarter::new(flaky)
        .backoff(backoff)
        .intensity(Intensity::new(4, Duration::from_secs(10))?)
        .status(hub);
    let result = restarter.run(CancellationToken::new(), Ready::noop()).await;
    drop(restarter); // drops the last hub handle, which ends the printer
    printer.await?;
    match result {
        Ok(()) => println!("stopped"),
        Err(err) => println!("escalated: {err}"),
    }
    Ok(())
}
