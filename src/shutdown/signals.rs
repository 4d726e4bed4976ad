//! Listening for SIGINT and SIGTERM (Ctrl-C elsewhere), shared by the service layer's
//! [`SignalService`](crate::service::SignalService) and the core's signal path.
//!
//! # What is counted
//!
//! Tokio's signal streams coalesce: every delivery of one kind that arrives before the
//! runtime polls the stream becomes *one* notification. [`Signals::recv`] therefore returns
//! every kind that is pending at one wake-up (SIGINT and SIGTERM that both arrived before
//! the poll count as two signals, so "first graceful, second forces" holds for them), and
//! [`Signals::received`] keeps them in the order observed.
//!
//! Two deliveries *of the same kind* before one poll remain one notification: counting them
//! needs a handler of our own (`signal_hook_registry::register`, which tokio already links,
//! but which is `unsafe` to call and needs a direct dependency), outside what this module
//! may do today. Within one wake-up the order of two different kinds is not known either;
//! they are listed SIGINT first.

use std::io;

#[cfg(all(unix, not(loom)))]
use futures::FutureExt;

use super::Signal;

/// The signal streams; dropping this releases them. Registered on creation, so a signal
/// that arrives after [`Signals::new`] returns is caught.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(all(unix, not(loom)))]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(all(unix, not(loom)))]
    terminate: tokio::signal::unix::Signal,
    /// Every signal received so far, in the order observed.
    received: Vec<Signal>,
}

impl Signals {
    /// Registers the handlers.
    ///
    /// # Errors
    ///
    /// If a signal handler cannot be registered.
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(all(unix, not(loom)))]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
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

    /// Waits for the next signals: each kind pending at this wake-up once. Appends them to
    /// [`received`](Self::received) and returns how many arrived.
    ///
    /// # Errors
    ///
    /// If the signal streams closed (the runtime is shutting down).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal not yet returned stays pending in its stream.
    pub(crate) async fn recv(&mut self) -> io::Result<usize> {
        let before = self.received.len();
        #[cfg(all(unix, not(loom)))]
        {
            let first = tokio::select! {
                biased;
                Some(()) = self.interrupt.recv() => Signal::Interrupt,
                Some(()) = self.terminate.recv() => Signal::Terminate,
                else => return Err(io::Error::other("signal streams closed")),
            };
            self.received.push(first);
            // The other kind, if it is pending too: it arrived before this wake-up.
            let other = match first {
                Signal::Interrupt => self.terminate.recv().now_or_never(),
                Signal::Terminate => self.interrupt.recv().now_or_never(),
            };
            if let Some(Some(())) = other {
                self.received.push(match first {
                    Signal::Interrupt => Signal::Terminate,
                    Signal::Terminate => Signal::Interrupt,
                });
            }
        }
        #[cfg(all(not(unix), not(loom)))]
        {
            tokio::signal::ctrl_c().await?;
            self.received.push(Signal::Interrupt);
        }
        // tokio has no signal handling in the loom models' build; no signal ever arrives.
        #[cfg(loom)]
        {
            std::future::pending::<()>().await;
        }
        Ok(self.received.len() - before)
    }
}
