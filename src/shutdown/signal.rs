//! The first shutdown signal: SIGINT or SIGTERM (Ctrl-C on non-unix
//! platforms). Counting them, for "the second one forces", is in the private
//! [`signals`](super::signals) module, shared by the core's path and
//! [`SignalService`](crate::service::SignalService).

use std::fmt;
use std::io;

use super::signals::Signals;

/// A shutdown signal. It displays as `SIGINT` or `SIGTERM`, and serializes (feature
/// `serde`) as `"sigint"` or `"sigterm"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGINT, or Ctrl-C on non-unix platforms.
    Interrupt,
    /// SIGTERM (unix only).
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C on non-unix platforms).
///
/// The handlers are registered when the future is first polled and released when it
/// resolves or is dropped; from then on, a SIGINT or SIGTERM is ignored rather than fatal
/// (see [`SignalService`](crate::service::SignalService) for the process-wide handler that
/// stays installed).
///
/// # Examples
///
/// ```no_run
/// use taskgroup::shutdown::shutdown_signal;
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let ctx = CancellationToken::new();
/// let signal = shutdown_signal().await?;
/// println!("{signal}: shutting down");
/// ctx.cancel();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// If a signal handler cannot be registered.
///
/// # Panics
///
/// Outside a Tokio runtime with I/O enabled (its handlers are read through
/// Tokio's I/O driver).
///
/// # Cancel safety
///
/// Cancel safe: dropping it releases the handlers; a signal that arrived meanwhile is lost.
pub async fn shutdown_signal() -> io::Result<Signal> {
    let mut signals = Signals::new()?;
    signals.recv().await?;
    Ok(signals.received()[0])
}
