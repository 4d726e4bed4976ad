//! systemd notifications around a [`ShutdownPlan`], with the `sd-notify`
//! crate: `READY=1` once the server listens, `STOPPING=1` as readiness fails
//! (the plan's first phase), and a `STATUS=` line for each phase.
//!
//! A unit for it (`Type=notify`: systemd considers the service started on
//! `READY=1`; keep `TimeoutStopSec` above pre-stop delay + grace + the abort
//! timeout):
//!
//! ```text
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/app --serve
//! KillSignal=SIGTERM
//! TimeoutStopSec=10
//! ```
//!
//! Outside systemd `NOTIFY_SOCKET` is unset and every notification does
//! nothing, so the example runs anywhere: `cargo run --example sd_notify`
//! serves for two seconds, then shuts down by itself (SIGTERM or Ctrl-C
//! sooner). With `-- --serve` it waits for the signal, as under systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use taskgroup::shutdown::shutdown_signal;
use taskgroup::shutdown::{Phase, Readiness, ShutdownPlan};
use taskgroup::{BoxError, WaitGroup};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Sends `states` to systemd; a failure is printed, not fatal (the service
/// works without its manager hearing about it).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        eprintln!("sd_notify: {e}");
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let at = move || start.elapsed().as_millis();
    let serve = std::env::args().any(|a| a == "--serve");
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => println!("NOTIFY_SOCKET={socket:?}: notifying systemd"),
        None => println!("NOTIFY_SOCKET unset (not under systemd): notifications do nothing"),
    }

    // A small TCP service: answers each connection with one line.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = WaitGroup::builder().name("app").build();
    let conns = app.clone();
    app.task().name("accept").go(move |ctx| async move {
        loop {
            let (mut stream, peer) = tokio::select! {
                () = ctx.cancelled() => return Ok::<_, std::io::Error>(()),
                accepted = listener.accept() => accepted?,
            };
            let greeted = conns
                .task()
                .name(format!("conn {peer}"))
                .try_go(move |_ctx| async move { stream.write_all(b"hello\n").await });
            if greeted.is_err() {
                return Ok(()); // closing
            }
        }
    });

    let readiness = Readiness::new();
    readiness.set_ready();
    let status = format!("listening on {addr}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    println!("{:>5} ms  READY=1, STATUS={status}", at());

    if serve {
        println!("serving until SIGTERM or Ctrl-C");
        let signal = shutdown_signal().await?;
        println!("{:>5} ms  received {signal:?}", at());
    } else {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                println!("{:>5} ms  two seconds are up", at());
            }
            signal = shutdown_signal() => println!("{:>5} ms  received {:?}", at(), signal?),
        }
    }

    let report = ShutdownPlan::new(Duration::from_secs(5))
        .pre_stop_delay(Duration::from_millis(200))
        .readiness(readiness)
        .on_phase(move |phase| match phase {
            Phase::NotReady => {
                notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
                println!("{:>5} ms  STOPPING=1 (not ready)", at());
            }
            Phase::PreStop { delay } => {
                let status = format!("stopping: pre-stop delay {delay:?}");
                notify(&[NotifyState::Status(&status)]);
                println!("{:>5} ms  STATUS={status}", at());
            }
            Phase::Draining { grace, .. } => {
                let status = format!("stopping: draining for up to {grace:?}");
                notify(&[NotifyState::Status(&status)]);
                println!("{:>5} ms  STATUS={status}", at());
            }
            Phase::Done { report } => {
                let status = format!(
                    "stopped: {} finished, {} aborted",
                    report.finished(),
                    report.aborted().len()
                );
                notify(&[NotifyState::Status(&status)]);
                println!("{:>5} ms  STATUS={status}", at());
            }
            _ => {}
        })
        .run(&app)
        .await;
    println!("{report}");
    Ok(())
}
