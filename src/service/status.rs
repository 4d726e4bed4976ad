//! Status events of supervised services, and a snapshot of every service's last status.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::error::ServiceError;

/// The state of a service, as reported in a [`StatusEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Registered, not started yet.
    Idle,
    /// `run` was called; the service has not reported ready yet.
    Starting,
    /// The service reported ready and is running.
    Running,
    /// The service failed or exited and waits for its backoff delay before the next attempt.
    Restarting,
    /// The service stopped: it was cancelled, or it ended and will not be restarted.
    Stopped,
    /// The service returned an error (the event carries it). A `Restarting` event follows
    /// if it will be restarted. A restarter that gives up reports one more `Failed` event
    /// whose error text says so (`"gave up after …"`).
    Failed,
    /// The service panicked (the event carries the message). A `Restarting` event follows if
    /// it will be restarted.
    Panicked,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "idle",
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Panicked => "panicked",
        })
    }
}

/// One status transition of one service.
///
/// # Examples
///
/// See [`StatusHub`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StatusEvent {
    /// The service's name.
    pub name: String,
    /// The new state.
    pub state: State,
    /// The attempt this event is about: 1 for the first run, 2 for the first restart, and
    /// so on; for `Restarting`, the attempt that will run after the delay. 0 for `Idle`.
    pub attempt: u32,
    /// The error text, for `Failed` and `Panicked`.
    pub error: Option<String>,
    /// The backoff delay, for `Restarting`.
    pub delay: Option<Duration>,
}

impl fmt::Display for StatusEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}: {}", self.name, self.attempt, self.state)?;
        if let Some(delay) = self.delay {
            write!(f, " in {delay:?}")?;
        }
        if let Some(error) = &self.error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

/// Where supervised services report their status, and where listeners read it.
///
/// Cloning is cheap and shares the hub: every clone reports to, and reads from, the same
/// channels (there is no race to open by cloning, since reporting is all a clone can do).
///
/// # Delivery, and why
///
/// A [`StatusHub`] delivers every event on a [`tokio::sync::broadcast`] channel and keeps the
/// last event of every service in a [`tokio::sync::watch`] channel:
/// - `broadcast` never makes the sender wait: a listener that falls more than the channel's
///   capacity behind gets [`RecvError::Lagged(n)`](tokio::sync::broadcast::error::RecvError),
///   which tells it how many events it missed, and then continues with the oldest retained
///   event. A slow listener therefore never stalls a supervisor (a bounded `mpsc` queue would
///   make the supervisor wait or drop events silently; an unbounded one would grow without
///   limit);
/// - because a lagging listener loses events, the `watch` snapshot gives the current state of
///   every service at any time, whatever was missed ([`StatusHub::snapshot`],
///   [`StatusHub::watch`]).
///
/// Reporting takes a short lock inside `watch` (never held across an `.await`) and a
/// non-blocking broadcast send.
///
/// # Examples
///
/// ```
/// use taskgroup::service::{State, StatusHub};
///
/// let hub = StatusHub::new(64);
/// let mut events = hub.subscribe();
/// hub.report("db", State::Starting, 1, None, None);
/// let event = events.try_recv().unwrap();
/// assert_eq!((event.name.as_str(), event.state, event.attempt), ("db", State::Starting, 1));
/// assert_eq!(hub.snapshot()["db"].state, State::Starting);
/// ```
///
/// # Panics
///
/// [`new`](StatusHub::new) panics if `capacity` is 0 or too large for a broadcast channel.
#[derive(Clone)]
pub struct StatusHub {
    inner: Arc<Inner>,
}

struct Inner {
    events: broadcast::Sender<StatusEvent>,
    snapshot: watch::Sender<BTreeMap<String, StatusEvent>>,
}

impl fmt::Debug for StatusHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusHub")
            .field("listeners", &self.inner.events.receiver_count())
            .field("services", &self.inner.snapshot.borrow().len())
            .finish()
    }
}

impl Default for StatusHub {
    /// A hub whose listeners may fall 1024 events behind before they lag.
    fn default() -> Self {
        StatusHub::new(1024)
    }
}

impl StatusHub {
    /// A hub whose listeners may fall `capacity` events behind before they lag.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (see [`tokio::sync::broadcast::channel`]).
    pub fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity);
        let (snapshot, _) = watch::channel(BTreeMap::new());
        StatusHub {
            inner: Arc::new(Inner { events, snapshot }),
        }
    }

    /// A listener for every event reported from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.inner.events.subscribe()
    }

    /// The last event of every service that reported, by name.
    pub fn snapshot(&self) -> BTreeMap<String, StatusEvent> {
        self.inner.snapshot.borrow().clone()
    }

    /// A receiver of the snapshot, to wait for changes (`changed().await`).
    pub fn watch(&self) -> watch::Receiver<BTreeMap<String, StatusEvent>> {
        self.inner.snapshot.subscribe()
    }

    /// Reports a transition. Never waits: with no listener the event only updates the
    /// snapshot.
    pub fn report(
        &self,
        name: &str,
        state: State,
        attempt: u32,
        error: Option<String>,
        delay: Option<Duration>,
    ) {
        let event = StatusEvent {
            name: name.to_owned(),
            state,
            attempt,
            error,
            delay,
        };
        self.inner.snapshot.send_modify(|map| {
            map.insert(event.name.clone(), event.clone());
        });
        // An error only means nobody listens right now.
        let _ = self.inner.events.send(event);
    }
}

/// Reports the members of a group or sequence, if it was given a hub.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    hub: Option<StatusHub>,
    attempt: u32,
}

impl Reporter {
    pub(crate) fn new(hub: Option<StatusHub>, attempt: u32) -> Self {
        Reporter { hub, attempt }
    }

    pub(crate) fn report(&self, name: &str, state: State) {
        if let Some(hub) = &self.hub {
            hub.report(name, state, self.attempt, None, None);
        }
    }

    /// Reports how a member ended: `Stopped` when `failure` is `None`, else `Panicked` or
    /// `Failed` with the failure's text.
    pub(crate) fn ended(&self, name: &str, failure: Option<&ServiceError>) {
        let Some(hub) = &self.hub else { return };
        let (state, error) = match failure {
            None => (State::Stopped, None),
            Some(ServiceError::Panicked { message, .. }) => {
                (State::Panicked, Some(message.clone()))
            }
            Some(other) => (State::Failed, Some(other.reason())),
        };
        hub.report(name, state, self.attempt, error, None);
    }
}
