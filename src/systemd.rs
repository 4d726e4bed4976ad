//! systemd's notification protocol, for a drain longer than
//! `TimeoutStopSec=` (feature `systemd`, Unix only, no extra dependency).
//!
//! systemd kills a service whose stop takes longer than `TimeoutStopSec=`,
//! even while it is making progress. A service may ask for more time with
//! `EXTEND_TIMEOUT_USEC=`: [`extend_while_draining`] sends it while the
//! number of pending guards and tasks falls, and stops when the drain stalls,
//! so a drain that still makes progress gets its time and a stuck one is
//! still killed. [`ShutdownPlan::systemd`](crate::shutdown::ShutdownPlan::systemd)
//! does this for a plan, and sends `STOPPING=1` and a `STATUS=` line per
//! phase.
//!
//! ```no_run
//! use std::time::Duration;
//! use taskgroup::shutdown::ShutdownPlan;
//! use taskgroup::systemd::Notifier;
//! use taskgroup::WaitGroup;
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let server = WaitGroup::builder().name("server").build();
//! let notifier = Notifier::from_env()?; // None outside systemd
//! if let Some(n) = &notifier {
//!     n.notify("READY=1")?;
//! }
//! let mut plan = ShutdownPlan::new(Duration::from_secs(60));
//! if let Some(n) = notifier {
//!     plan = plan.systemd(n);
//! }
//! let report = plan.run(&server).await;
//! # let _ = report;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::wait_group::WaitGroup;

/// A connection to systemd's notification socket (`NOTIFY_SOCKET`). Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Arc<UnixDatagram>,
}

impl Notifier {
    /// The socket systemd named in `NOTIFY_SOCKET`; `None` when it is unset
    /// (not started by systemd, or not `Type=notify`). An abstract address
    /// (`@name`) is supported on Linux.
    ///
    /// # Errors
    ///
    /// If the socket cannot be reached.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(path) => Notifier::connect(Path::new(&path)).map(Some),
        }
    }

    /// A notifier for the datagram socket at `path` (`@name`: an abstract
    /// address, Linux only).
    ///
    /// # Errors
    ///
    /// If the socket cannot be reached.
    pub fn connect(path: &Path) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_os_str().as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.connect_addr(&addr)?;
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                let _ = name;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract socket addresses are Linux-only",
                ));
            }
        } else {
            socket.connect(path)?;
        }
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket: Arc::new(socket),
        })
    }

    /// Sends one notification: newline-separated `KEY=value` lines, such as
    /// `READY=1`, `STOPPING=1`, `STATUS=draining`.
    ///
    /// # Errors
    ///
    /// If the datagram cannot be sent (systemd gone, or its queue full).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send(state.as_bytes()).map(|_| ())
    }
}

/// Runs `drain` (a shutdown) while asking systemd for more time as long as
/// it makes progress: every `interval`, if fewer guards and tasks are
/// pending in `group` and the groups below it than at the last look, sends
/// `EXTEND_TIMEOUT_USEC=` for twice the interval (so one missed look does
/// not let the timeout run out); when the count stalls, it sends nothing and
/// systemd's own timeout runs on. Failing sends are ignored (the drain goes
/// on without its manager hearing about it). `interval` is at least 1 ms.
///
/// # Cancel safety
///
/// Dropping it drops `drain`.
pub async fn extend_while_draining<F: Future>(
    notifier: &Notifier,
    group: &WaitGroup,
    interval: Duration,
    drain: F,
) -> F::Output {
    let interval = interval.max(Duration::from_millis(1));
    let extend = format!(
        "EXTEND_TIMEOUT_USEC={}",
        interval.saturating_mul(2).as_micros().min(u64::MAX as u128)
    );
    let mut last = crate::node::tree_len(group.node());
    let mut ticks = tokio::time::interval_at(crate::shutdown::deadline_after(interval), interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            out = &mut drain => return out,
            _ = ticks.tick() => {
                let now = crate::node::tree_len(group.node());
                if now < last {
                    let _ = notifier.notify(&extend);
                }
                last = now;
            }
        }
    }
}
