//! systemd notifications around a [`ShutdownPlan`] (feature `systemd`):
//! `READY=1` once the server listens, `STOPPING=1` as readiness fails (the
//! plan's first phase), a `STATUS=` line for each phase, and
//! `EXTEND_TIMEOUT_USEC=` while the drain makes progress, so a long drain
//! that is still getting somewhere is not killed at `TimeoutStopSec=`.
//!
//! A unit for it (`Type=notify`: systemd considers the service started on
//! `READY=1`):
//!
//! ```text
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/app --serve
//! KillSignal=SIGTERM
//! TimeoutStopSec=10
//! ```
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) the example plays systemd
//! itself: it binds a datagram socket, points the notifier at it, and at the
//! end prints and checks the lines it received. `cargo run --example
//! sd_notify --features systemd` serves for a second, then shuts down by
//! itself; with `-- --serve` it waits for SIGTERM or Ctrl-C, as under
//! systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use taskgroup::shutdown::{shutdown_signal, Readiness, ShutdownPlan};
use taskgroup::systemd::Notifier;
use taskgroup::{BoxError, WaitGroup};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = std::env::args().any(|a| a == "--serve");
    // Under systemd, its socket; elsewhere one of ours, read at the end.
    let (notifier, fake) = match Notifier::from_env()? {
        Some(notifier) => (notifier, None),
        None => {
            let path = std::env::temp_dir().join(format!("sd_notify-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let fake = UnixDatagram::bind(&path)?;
            fake.set_nonblocking(true)?;
            println!("NOTIFY_SOCKET unset: playing systemd at {}", path.display());
            (Notifier::connect(&path)?, Some((fake, path)))
        }
    };

    // Work that takes a while to drain: five jobs, each finishing 300 ms
    // apart once asked to stop, so the drain makes progress for 1.5 s.
    let app = WaitGroup::builder().name("app").build();
    for i in 1..=5_u64 {
        app.task()
            .name(format!("job {i}"))
            .go(move |ctx| async move {
                ctx.draining().await;
                tokio::time::sleep(Duration::from_millis(300 * i)).await;
            });
    }
    let readiness = Readiness::new();
    readiness.set_ready();
    notifier.notify("READY=1\nSTATUS=serving")?;

    if serve {
        let signal = shutdown_signal().await?;
        println!("received {signal}");
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let report = ShutdownPlan::new(Duration::from_secs(5))
        .pre_stop_delay(Duration::from_millis(200))
        .readiness(readiness)
        .systemd(notifier)
        .run(&app)
        .await;
    println!("{report}");

    if let Some((fake, path)) = fake {
        let mut lines = Vec::new();
        let mut buf = [0_u8; 512];
        while let Ok(n) = fake.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).replace('\n', " | "));
        }
        let _ = std::fs::remove_file(path);
        println!("systemd received:");
        for line in &lines {
            println!("  {line}");
        }
        assert_eq!(
            lines.first().map(String::as_str),
            Some("READY=1 | STATUS=serving")
        );
        assert!(lines.iter().any(|l| l.starts_with("STOPPING=1")));
        assert!(
            lines.iter().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
            "the drain made progress"
        );
        assert!(lines
            .last()
            .is_some_and(|l| l.starts_with("STATUS=stopped: 5 finished")));
    }
    Ok(())
}
