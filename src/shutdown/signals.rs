//! Listening for SIGINT and SIGTERM (Ctrl-C elsewhere), shared by the service layer's
//! [`SignalService`](crate::service::SignalService) and the core's signal path.
//!
//! # What is counted
//!
//! Signals, not wake-ups. Tokio's signal streams coalesce every delivery of one kind that
//! arrives before the runtime polls into one notification, so two SIGTERMs sent back to back
//! while the runtime's thread is busy would be seen as one, and "the second signal forces"
//! would not hold. On Unix each kind gets a handler of its own (`signal-hook`'s safe
//! self-pipe registration) that writes one byte to a socket per delivery; [`Signals::recv`]
//! reads them and returns one [`Signal`] per byte. Within one wake-up the order of two
//! *different* kinds is not known: the kind whose socket the runtime saw ready first comes
//! first (SIGINT when both were). The kernel itself merges two deliveries of one standard
//! signal when the second is sent while the first is still pending, before a thread of the
//! process took it: two `kill`s a few milliseconds apart can be one on a machine too busy to
//! schedule the process in between (the tests raise theirs in the receiving thread). Two
//! presses of Ctrl-C, or a supervisor's signals seconds apart, are two.
//!
//! Elsewhere (no Unix signals) Ctrl-C is listened to through tokio.

use std::io;

use super::Signal;

/// The signal handlers; dropping this releases them. Registered on creation, so a signal
/// that arrives after [`Signals::new`] returns is caught.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(all(unix, not(loom)))]
    kinds: [Kind; 2],
    /// Every signal received so far, in the order observed.
    received: Vec<Signal>,
}

/// One signal kind's handler: it writes a byte to `reader`'s peer per delivery.
#[cfg(all(unix, not(loom)))]
#[derive(Debug)]
struct Kind {
    signal: Signal,
    reader: tokio::net::UnixStream,
    id: signal_hook::SigId,
}

#[cfg(all(unix, not(loom)))]
impl Kind {
    fn new(number: i32, signal: Signal) -> io::Result<Self> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        let id = signal_hook::low_level::pipe::register(number, writer)?;
        let reader = match tokio::net::UnixStream::from_std(reader) {
            Ok(reader) => reader,
            Err(err) => {
                signal_hook::low_level::unregister(id);
                return Err(err);
            }
        };
        Ok(Kind { signal, reader, id })
    }

    /// How many deliveries are waiting (their bytes are consumed).
    fn take(&self) -> io::Result<usize> {
        let mut count = 0;
        let mut buf = [0_u8; 64];
        loop {
            match self.reader.try_read(&mut buf) {
                Ok(0) => return Ok(count),
                Ok(n) => count += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(count),
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(all(unix, not(loom)))]
impl Drop for Kind {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.id);
    }
}

impl Signals {
    /// Registers the handlers.
    ///
    /// # Errors
    ///
    /// If a signal handler cannot be registered, or (on Unix) outside a Tokio runtime.
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(all(unix, not(loom)))]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            Ok(Signals {
                kinds: [
                    Kind::new(SIGINT, Signal::Interrupt)?,
                    Kind::new(SIGTERM, Signal::Terminate)?,
                ],
                received: Vec::new(),
            })
        }
        #[cfg(any(not(unix), loom))]
        {
            Ok(Signals {
                received: Vec::new(),
            })
        }
    }

    /// Every signal received so far, in the order observed.
    pub(crate) fn received(&self) -> &[Signal] {
        &self.received
    }

    /// Waits for the next signals: every delivery that arrived by this wake-up, each once.
    /// Appends them to [`received`](Self::received) and returns how many arrived.
    ///
    /// # Errors
    ///
    /// If a handler's socket fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal not yet returned stays in its socket.
    pub(crate) async fn recv(&mut self) -> io::Result<usize> {
        let before = self.received.len();
        #[cfg(all(unix, not(loom)))]
        loop {
            let [interrupt, terminate] = &self.kinds;
            let first = tokio::select! {
                biased;
                ready = interrupt.reader.readable() => { ready?; 0 }
                ready = terminate.reader.readable() => { ready?; 1 }
            };
            for i in [first, 1 - first] {
                let kind = &self.kinds[i];
                let count = kind.take()?;
                self.received
                    .extend(std::iter::repeat(kind.signal).take(count));
            }
            if self.received.len() > before {
                break;
            }
        }
        #[cfg(all(not(unix), not(loom)))]
        {
            tokio::signal::ctrl_c().await?;
            self.received.push(Signal::Interrupt);
        }
        // No signal handling in the loom models' build; no signal ever arrives.
        #[cfg(loom)]
        {
            std::future::pending::<()>().await;
        }
        Ok(self.received.len() - before)
    }
}
