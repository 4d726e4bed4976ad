//! The systemd hook against a Unix datagram socket standing in for
//! systemd's (issue 15): `EXTEND_TIMEOUT_USEC=` while the drain makes
//! progress, nothing once it stalls; the plan's `STOPPING=1` and statuses.
#![cfg(all(unix, feature = "systemd"))]

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use taskgroup::shutdown::ShutdownPlan;
use taskgroup::systemd::{extend_while_draining, Notifier};
use taskgroup::WaitGroup;

/// A socket playing systemd, at a fresh path.
struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
}

impl FakeSystemd {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("taskgroup-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        FakeSystemd { socket, path }
    }
    /// Every datagram received so far.
    fn received(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0_u8; 512];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Three tasks that finish 1 s apart during the drain, one that never does:
/// three extensions (one per fall), then none while the drain is stuck.
#[tokio::test(start_paused = true)]
async fn extends_while_the_drain_makes_progress_and_not_when_it_stalls() {
    let systemd = FakeSystemd::new("extend");
    let notifier = Notifier::connect(&systemd.path).unwrap();
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(1))
        .build();
    for i in 0..3_u64 {
        wg.go(move |_ctx| async move {
            // Ignores cancellation; finishes in its own time.
            tokio::time::sleep(Duration::from_millis(500 + 1000 * i)).await;
        });
    }
    wg.task()
        .name("stuck")
        .go(|_ctx| std::future::pending::<()>());
    let report = extend_while_draining(
        &notifier,
        &wg,
        Duration::from_secs(1),
        wg.shutdown(Duration::from_secs(10)),
    )
    .await;
    assert_eq!(report.finished(), 3, "{report}");
    assert_eq!(report.aborted().len(), 1, "{report}");
    assert_eq!(systemd.received(), vec!["EXTEND_TIMEOUT_USEC=2000000"; 3]);
}

/// A plan told about systemd sends `STOPPING=1`, a status per phase, one
/// extension for the one look (2 s into the drain) that saw progress,
/// and the final counts.
#[tokio::test(start_paused = true)]
async fn a_plan_tells_systemd_each_phase() {
    let systemd = FakeSystemd::new("plan");
    let notifier = Notifier::connect(&systemd.path).unwrap();
    let wg = WaitGroup::new();
    for ms in [1500, 2500] {
        wg.go(move |ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        });
    }
    let report = ShutdownPlan::new(Duration::from_secs(5))
        .pre_stop_delay(Duration::from_secs(1))
        .systemd(notifier)
        .run(&wg)
        .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        systemd.received(),
        [
            "STOPPING=1\nSTATUS=stopping: not ready",
            "STATUS=stopping: pre-stop delay 1s",
            "STATUS=stopping: draining for up to 5s",
            "EXTEND_TIMEOUT_USEC=2000000",
            "STATUS=stopped: 2 finished, 0 aborted, 0 still pending",
        ]
    );
}

/// A drain without a time limit (`Duration::MAX`) says so, not a number of
/// seconds 20 digits long (found by a hostile probe, `probe-obs` `sd`).
#[tokio::test(start_paused = true)]
async fn a_plan_without_a_time_limit_says_so() {
    let systemd = FakeSystemd::new("unlimited");
    let notifier = Notifier::connect(&systemd.path).unwrap();
    let wg = WaitGroup::new();
    let report = ShutdownPlan::new(Duration::MAX)
        .systemd(notifier)
        .run(&wg)
        .await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        systemd.received(),
        [
            "STOPPING=1\nSTATUS=stopping: not ready",
            "STATUS=stopping: draining without a time limit",
            "STATUS=stopped: 0 finished, 0 aborted, 0 still pending",
        ]
    );
}

/// A pre-stop delay without a time limit says so too (`probe-limits`).
#[tokio::test(start_paused = true)]
async fn a_pre_stop_delay_without_a_time_limit_says_so() {
    let systemd = FakeSystemd::new("unlimited-pre-stop");
    let notifier = Notifier::connect(&systemd.path).unwrap();
    let wg = WaitGroup::new();
    let plan = ShutdownPlan::new(Duration::ZERO)
        .pre_stop_delay(Duration::from_secs(u64::MAX))
        .systemd(notifier);
    // The delay never ends: the plan is still in it when dropped.
    let run = tokio::time::timeout(Duration::from_secs(3600), plan.run(&wg)).await;
    assert!(run.is_err());
    assert_eq!(
        systemd.received(),
        [
            "STOPPING=1\nSTATUS=stopping: not ready",
            "STATUS=stopping: pre-stop delay without a time limit",
        ]
    );
}

/// Hostile input: no socket there; an abstract address; a zero interval.
#[tokio::test(start_paused = true)]
async fn errors_and_odd_input() {
    let missing = std::env::temp_dir().join("taskgroup-no-such-socket.sock");
    assert!(Notifier::connect(&missing).is_err());
    let systemd = FakeSystemd::new("zero");
    let notifier = Notifier::connect(&systemd.path).unwrap();
    let wg = WaitGroup::new();
    let report =
        extend_while_draining(&notifier, &wg, Duration::ZERO, wg.shutdown(Duration::MAX)).await;
    assert!(report.is_clean());
    #[cfg(target_os = "linux")]
    {
        let name = format!("@taskgroup-abstract-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::connect(std::path::Path::new(&name)).unwrap();
        notifier.notify("READY=1").unwrap();
        let mut buf = [0_u8; 16];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
