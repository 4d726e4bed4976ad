//! Two services play ping-pong for a few rounds under a restarting supervisor.
//!
//! Pong drops the ball once (it panics at round 3): the supervisor catches the panic,
//! reports it, and restarts pong after its backoff delay; ping serves the ball again.
//! After the last round ping cancels the root token and both stop.
//!
//! Run with `cargo run --example ping_pong`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use taskgroup::service::{service_fn, Backoff, Ready, StatusHub, Supervisor};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

const ROUNDS: u32 = 5;

type Ball = (u32, oneshot::Sender<u32>);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The panic below is caught by the supervisor and reported as a status event; this hook
    // only shortens the default panic report to one line.
    std::panic::set_hook(Box::new(|info| eprintln!("  (panic) {info}")));
    let root = CancellationToken::new();
    let (table_tx, table_rx) = mpsc::channel::<Ball>(1);
    // One pong run at a time owns the receiving end; a restarted pong takes it over. (An
    // async mutex is made to be held across `.await`, and it is released even on a panic.)
    let table_rx = Arc::new(Mutex::new(table_rx));
    let dropped_once = Arc::new(AtomicBool::new(false));

    let pong = service_fn("pong", move |ctx: CancellationToken, ready: Ready| {
        let table_rx = table_rx.clone();
        let dropped_once = dropped_once.clone();
        async move {
            let mut table = table_rx.lock().await;
            ready.ready();
            loop {
                let (n, reply) = tokio::select! {
                    () = ctx.cancelled() => return Ok(()),
                    ball = table.recv() => match ball {
                        Some(ball) => ball,
                        None => return Ok(()),
                    },
                };
                if n == 3 && !dropped_once.swap(true, Ordering::SeqCst) {
                    panic!("pong dropped the ball at round {n}");
                }
                println!("        pong {n}");
                let _ = reply.send(n);
            }
        }
    });

    let game_over = root.clone();
    let ping = service_fn("ping", move |ctx: CancellationToken, ready: Ready| {
        let table_tx = table_tx.clone();
        let game_over = game_over.clone();
        async move {
            ready.ready();
            let mut n = 1;
            while n <= ROUNDS {
                println!("ping {n}");
                let (reply_tx, reply_rx) = oneshot::channel();
                table_tx.send((n, reply_tx)).await?;
                match reply_rx.await {
                    Ok(_) => n += 1,
                    Err(_) => println!("ping: ball lost, serving round {n} again"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!("game over after {ROUNDS} rounds");
            game_over.cancel();
            ctx.cancelled().await;
            Ok(())
        }
    });

    let hub = StatusHub::default();
    let mut events = hub.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("  [status] {event}");
        }
    });

    let mut supervisor = Supervisor::builder("table")
        .service(ping)
        .service(pong)
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(2),
            2.0,
            0.0,
        )?)
        .status(hub)
        .build()?;
    let result = supervisor.serve(root).await;
    drop(supervisor); // drops the last hub handles, which ends the printer
    printer.await?;
    match result {
        Ok(()) => println!("supervisor stopped cleanly"),
        Err(err) => println!("supervisor failed: {err}"),
    }
    Ok(())
}
