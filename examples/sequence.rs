//! Database, then cache, then HTTP: each starts once the previous one is ready, and they
//! stop in reverse order. The run ends by itself after a second (Ctrl-C ends it sooner:
//! the signal wrapper starts the same graceful stop).
//!
//! Run with `cargo run --example sequence`.

use std::time::Duration;

use taskgroup::service::{service_fn, Ready, Sequence, Service, SignalService};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn component(name: &'static str, boot_ms: u64, t0: Instant) -> impl Service {
    service_fn(
        name,
        move |ctx: CancellationToken, ready: Ready| async move {
            let at = || t0.elapsed().as_millis();
            println!("{:>5} ms  {name}: starting", at());
            tokio::time::sleep(Duration::from_millis(boot_ms)).await;
            println!("{:>5} ms  {name}: ready", at());
            ready.ready();
            ctx.cancelled().await;
            println!("{:>5} ms  {name}: stopping", at());
            tokio::time::sleep(Duration::from_millis(50)).await;
            println!("{:>5} ms  {name}: stopped", at());
            Ok(())
        },
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let seq = Sequence::builder("app")
        .service(component("database", 300, t0))
        .service(component("cache", 150, t0))
        .service(component("http", 50, t0))
        .start_timeout(Duration::from_secs(5))
        .stop_timeout(Duration::from_secs(2))
        .build()?;
    let mut app = SignalService::new(seq);

    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let mut run = tokio::spawn(app.run(ctx.clone(), ready));
    if when_ready.await {
        println!(
            "{:>5} ms  all ready; serving for a second",
            t0.elapsed().as_millis()
        );
    }
    // A second, unless a signal stopped it first.
    let ended = tokio::select! {
        ended = &mut run => ended?,
        () = tokio::time::sleep(Duration::from_secs(1)) => {
            println!("{:>5} ms  shutting down", t0.elapsed().as_millis());
            ctx.cancel();
            run.await?
        }
    };
    match ended {
        Ok(()) => println!("{:>5} ms  stopped cleanly", t0.elapsed().as_millis()),
        // A failed stop (a second Ctrl-C forces it) fails the process too.
        Err(err) => return Err(format!("failed: {err}").into()),
    }
    Ok(())
}
