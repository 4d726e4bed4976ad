//! Status events of supervised services, and a snapshot of every service's last status.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use super::error::ServiceError;

/// The state of a service, as reported in a [`StatusEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceState {
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

impl ServiceState {
    fn as_str(self) -> &'static str {
        match self {
            ServiceState::Idle => "idle",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Restarting => "restarting",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
            ServiceState::Panicked => "panicked",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ServiceState {
    /// The lowercase name, as `Display` writes it: `"running"`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for StatusEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("StatusEvent", 5)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("state", &self.state)?;
        st.serialize_field("attempt", &self.attempt)?;
        st.serialize_field("error", &self.error)?;
        st.serialize_field("delay_ms", &self.delay.map(crate::serde_impl::millis))?;
        st.end()
    }
}

/// One status transition of one service.
///
/// # Serialization
///
/// With the `serde` feature, as JSON (the delay in milliseconds, `null` when
/// the event has none; the state as `Display` writes it):
///
/// ```json
/// {"name": "backend/db", "state": "restarting", "attempt": 2, "error": "connection refused", "delay_ms": 500}
/// ```
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
    pub state: ServiceState,
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
        match self.delay {
            // `Duration::MAX` is no limit: not 18446744073709551615.999999999s.
            Some(delay) if crate::shutdown::is_unlimited(delay) => {
                f.write_str(" after a delay without a time limit")?;
            }
            Some(delay) => write!(f, " in {delay:?}")?,
            None => {}
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
/// Reporting takes a short lock of the hub's own snapshot (never held across an `.await`
/// nor while user code runs) and a non-blocking broadcast send, so a listener can never
/// block [`report`](StatusHub::report): [`StatusHub::watch`] hands out a [`StatusWatch`],
/// which lends no reference into the hub (a `tokio::sync::watch::Ref` held by a listener
/// would block every sender).
///
/// # One hub per tree
///
/// Give the hub to the outermost container: every member below it, at any depth, reports
/// to it once, named by its path below that container (`"backend/db"`). A
/// [`Restarter`](super::Restarter) reports its own member (with its attempts), and the
/// container around it then does not, so giving the same hub to both reports each event
/// once. A nested container or restarter given the hub too reports its members `Idle`
/// when it is built, by their names relative to itself (it cannot know yet where it will
/// run); when it runs below a container that reports to the same hub, those entries leave
/// the snapshot (without an event; watchers see the change) and its members report by
/// their paths. With the `tracing` feature every transition is also a `tracing` event
/// (target `taskgroup::service`), named by its full path, with or without a hub.
///
/// # What the snapshot keeps
///
/// The last event of every service, with two exceptions that keep it bounded by what runs:
/// the build-time `Idle` entries above, and the entries of a nested container's run that
/// ended, which leave the snapshot (without an event) when another run starts below the
/// same member, but for the names a run still going has a member at. So a member that runs
/// a fresh container per job, its members named after the job, keeps the entries of the
/// jobs running and of those that ended since the last job started, with their final
/// states, not one set per job it ever ran; and a nested container restarted keeps its
/// last attempt's. (A run whose container's future was dropped ends once what it aborted
/// has ended.) The entries of a run that ended stay until then, so the final states of
/// a tree that stopped stay in the snapshot. A hub given to top-level containers keeps
/// every name they report: give it to one container around the jobs instead of one per job.
///
/// An entry follows the latest run of the container or restarter that reports it: one
/// whose future was dropped and that was run again may have members of its first run
/// still ending after the second run's started (a restarter, or a member past the
/// container's stop timeout, which its next run waits for); their late ends go to
/// listeners (`db #1: stopped`) but leave the entries of the run going on
/// (`db #2: running`).
///
/// # Examples
///
/// ```
/// use taskgroup::service::{ServiceState, StatusHub};
///
/// let hub = StatusHub::new(64);
/// let mut events = hub.subscribe();
/// hub.report("db", ServiceState::Starting, 1, None, None);
/// let event = events.try_recv().unwrap();
/// assert_eq!((event.name.as_str(), event.state, event.attempt), ("db", ServiceState::Starting, 1));
/// assert_eq!(hub.snapshot()["db"].state, ServiceState::Starting);
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
    /// Locked only to insert, remove or clone, never across user code or an `.await`.
    snapshot: Mutex<Snapshot>,
    /// Bumped after every snapshot change. Its receivers live only inside [`StatusWatch`],
    /// which never lends a borrow out, so a send never waits for a listener.
    version: watch::Sender<u64>,
}

#[derive(Default)]
struct Snapshot {
    /// The last event of every service, from its latest run ([`Entry`]).
    events: BTreeMap<String, Entry>,
    /// The entries that are still the `Idle` a container or restarter reported when it was
    /// built, with who did. Invariant: a name here is in `events` with that `Idle`; any
    /// other report of the name removes it from here.
    built: HashMap<String, Owner>,
    /// The runs of containers that report here under a path prefix (nested below a
    /// container that holds this hub), by [`HubRun`] mark: the live ones, and the ended
    /// ones until a run starts under their prefix or one around it ([`StatusHub::begin_run`]).
    runs: HashMap<u64, RunRecord>,
    /// The ended ones of `runs`, by prefix, so that a run that starts finds those below its
    /// prefix without looking at the live ones (thousands of jobs side by side).
    ended: BTreeMap<String, Vec<u64>>,
    /// How many live runs have a member at each key (most often one).
    live_keys: HashMap<String, usize>,
}

/// A service's last event in the snapshot, and the run of a container or restarter that
/// reported it (`None`: reported by user code, or `Idle` at build).
struct Entry {
    event: StatusEvent,
    run: Option<RunId>,
}

/// One run of one container or restarter: who (built once, run many times) and which run.
/// A container's future dropped and the container run again at once, the first run's
/// members end after the second's started (as their aborts land, on other workers; as they
/// return, without a runtime to abort them): their ends are of an older run of the same
/// owner, and must not replace the entries of the one going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId {
    owner: Owner,
    run: u32,
}

impl RunId {
    pub(crate) fn new(owner: Owner, run: u32) -> Self {
        RunId { owner, run }
    }

    pub(crate) fn owner(self) -> Owner {
        self.owner
    }

    /// The run's number: 1 for the first.
    pub(crate) fn run(self) -> u32 {
        self.run
    }

    /// Whether `self` is an earlier run of the same owner than `other`.
    fn before(self, other: Option<RunId>) -> bool {
        other.is_some_and(|other| other.owner == self.owner && self.run < other.run)
    }
}

/// One run of a nested container, as a hub keeps it: its members' keys, so that they can
/// leave the snapshot once a later run below the same member has started.
struct RunRecord {
    /// `"member/"`: the path below which the run's members are named.
    prefix: String,
    /// Each member's key (`"member/name"`).
    keys: Vec<String>,
}

impl Snapshot {
    /// Removes `key` and every key below it (`"key/…"`), but keys a live run has a member
    /// at: what ended runs below a member left.
    fn remove_below(&mut self, key: &str, removed: &mut bool) {
        if self.live_keys.contains_key(key) {
            return;
        }
        let below = format!("{key}/");
        let mut gone: Vec<String> = self
            .events
            .range::<str, _>((Bound::Included(below.as_str()), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&below))
            .filter(|k| !self.live_keys.contains_key(k.as_str()))
            .cloned()
            .collect();
        gone.push(key.to_owned());
        for k in gone {
            *removed |= self.events.remove(&k).is_some();
            self.built.remove(&k);
        }
    }
}

/// Who reported a build-time `Idle` entry to a hub: a container, for its members, or a
/// restarter, for itself. Unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(u64);

impl Owner {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Owner(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Debug for StatusHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusHub")
            .field("listeners", &self.inner.events.receiver_count())
            .field("services", &self.inner.snapshot.lock().events.len())
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
    /// A hub whose listeners may fall `capacity` events behind before they lag. The
    /// events' buffer is allocated here: `capacity` rounded up to a power of two slots.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or more than `usize::MAX / 2` (see
    /// [`tokio::sync::broadcast::channel`]).
    pub fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity);
        let (version, _) = watch::channel(0);
        StatusHub {
            inner: Arc::new(Inner {
                events,
                snapshot: Mutex::default(),
                version,
            }),
        }
    }

    /// A listener for every event reported from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.inner.events.subscribe()
    }

    /// The last event of every service that reported, by name (its path below the
    /// container that holds the hub); see [what it keeps](StatusHub#what-the-snapshot-keeps).
    pub fn snapshot(&self) -> BTreeMap<String, StatusEvent> {
        let snap = self.inner.snapshot.lock();
        snap.events
            .iter()
            .map(|(name, entry)| (name.clone(), entry.event.clone()))
            .collect()
    }

    /// A watcher of the snapshot, to wait for a condition
    /// ([`StatusWatch::wait_for`]) or a change.
    pub fn watch(&self) -> StatusWatch {
        StatusWatch {
            hub: self.clone(),
            rx: self.inner.version.subscribe(),
        }
    }

    /// Reports `name` `Idle` as `owner` built it, unless its last event already is `Idle`:
    /// then `owner` takes the entry over without a second event (a restarter's own report,
    /// taken over by the container it is a member of).
    pub(crate) fn report_built(&self, name: &str, owner: Owner) {
        let mut snap = self.inner.snapshot.lock();
        snap.built.insert(name.to_owned(), owner);
        if snap
            .events
            .get(name)
            .is_some_and(|e| e.event.state == ServiceState::Idle)
        {
            return;
        }
        let event = StatusEvent {
            name: name.to_owned(),
            state: ServiceState::Idle,
            attempt: 0,
            error: None,
            delay: None,
        };
        let entry = Entry {
            event: event.clone(),
            run: None,
        };
        snap.events.insert(event.name.clone(), entry);
        drop(snap);
        self.published(event);
    }

    /// Removes `name`'s entry from the snapshot if it is still the `Idle` that `owner`
    /// reported when it was built: the container (or restarter) runs below a container
    /// that reports to this hub too, under its path, so that entry would stay `Idle`
    /// forever. No event is sent; watchers see the change.
    pub(crate) fn withdraw_built(&self, name: &str, owner: Owner) {
        let mut snap = self.inner.snapshot.lock();
        if snap.built.get(name) != Some(&owner) {
            return;
        }
        snap.built.remove(name);
        snap.events.remove(name);
        drop(snap);
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Enters run `mark` of a container whose members are `keys` (each `prefix` and a
    /// member's name), and removes from the snapshot what runs below `prefix` that have
    /// ended left there (their members, and everything below them), but for the keys a live
    /// run has a member at: a member that runs a fresh container per job, each with members
    /// of their own names, keeps the last job's entries, not one per job it ever ran.
    /// No event is sent; watchers see the change.
    pub(crate) fn begin_run(&self, mark: u64, prefix: &str, keys: Vec<String>) {
        let mut snap = self.inner.snapshot.lock();
        for key in &keys {
            *snap.live_keys.entry(key.clone()).or_default() += 1;
        }
        let prefixes: Vec<String> = snap
            .ended
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        let mut removed = false;
        for p in prefixes {
            for old in snap.ended.remove(&p).unwrap_or_default() {
                if let Some(run) = snap.runs.remove(&old) {
                    for key in &run.keys {
                        snap.remove_below(key, &mut removed);
                    }
                }
            }
        }
        snap.runs.insert(
            mark,
            RunRecord {
                prefix: prefix.to_owned(),
                keys,
            },
        );
        drop(snap);
        if removed {
            self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Run `mark` ended: its members' entries stay until a later run below the same
    /// member starts ([`begin_run`](Self::begin_run)).
    pub(crate) fn end_run(&self, mark: u64) {
        let mut snap = self.inner.snapshot.lock();
        let snap = &mut *snap;
        let Some(run) = snap.runs.get(&mark) else {
            return;
        };
        snap.ended.entry(run.prefix.clone()).or_default().push(mark);
        for key in &run.keys {
            if let Some(count) = snap.live_keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    snap.live_keys.remove(key);
                }
            }
        }
    }

    /// Whether `self` and `other` are the same hub.
    pub(crate) fn same(&self, other: &StatusHub) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The hub's identity, equal for clones: for keys while the hub lives (a key compared
    /// after the hub was dropped could match a later one at the same address).
    pub(crate) fn identity(&self) -> *const () {
        Arc::as_ptr(&self.inner).cast()
    }

    /// Reports a transition. Never waits: with no listener the event only updates the
    /// snapshot, and no listener can hold a lock this takes.
    pub fn report(
        &self,
        name: &str,
        state: ServiceState,
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
        self.report_event(event, None);
    }

    /// Reports `event` of `run`, and keeps it in the snapshot unless the entry's last
    /// event came from a later run of the same container or restarter ([`RunId`]): then
    /// only listeners hear of it.
    pub(crate) fn report_event(&self, event: StatusEvent, run: Option<RunId>) {
        let kept = {
            let mut snap = self.inner.snapshot.lock();
            let last = snap.events.get(&event.name).and_then(|e| e.run);
            if run.is_some_and(|run| run.before(last)) {
                false
            } else {
                let entry = Entry {
                    event: event.clone(),
                    run,
                };
                if !snap.built.is_empty() {
                    snap.built.remove(&event.name);
                }
                snap.events.insert(event.name.clone(), entry);
                true
            }
        };
        if kept {
            self.published(event);
        } else {
            // An error only means nobody listens right now.
            let _ = self.inner.events.send(event);
        }
    }

    /// Tells watchers and listeners of `event`, already in the snapshot.
    fn published(&self, event: StatusEvent) {
        // `send_modify` takes the watch's write lock, which only `StatusWatch` borrows,
        // for one integer read: it cannot wait on a listener.
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        // An error only means nobody listens right now.
        let _ = self.inner.events.send(event);
    }
}

/// Waits for changes of a [`StatusHub`]'s snapshot; made by [`StatusHub::watch`].
///
/// Unlike a `tokio::sync::watch::Receiver`, it never lends a reference into the hub: every
/// look is a copy, so holding one cannot block [`StatusHub::report`].
///
/// # Examples
///
/// ```
/// use taskgroup::service::{ServiceState, StatusHub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = StatusHub::new(8);
/// let mut watch = hub.watch();
/// hub.report("db", ServiceState::Running, 1, None, None);
/// let snap = watch.wait_for(|m| m.get("db").is_some_and(|e| e.state == ServiceState::Running)).await.unwrap();
/// assert_eq!(snap["db"].attempt, 1);
/// # }
/// ```
#[derive(Debug)]
pub struct StatusWatch {
    hub: StatusHub,
    rx: watch::Receiver<u64>,
}

impl StatusWatch {
    /// The current snapshot (a copy).
    pub fn snapshot(&self) -> BTreeMap<String, StatusEvent> {
        self.hub.snapshot()
    }

    /// Waits for the next change of the snapshot after the last one this watcher saw.
    ///
    /// # Errors
    ///
    /// Never in practice: the watcher keeps its hub alive. The type is the watch channel's.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// Waits until `f` holds for the snapshot and returns that snapshot. `f` runs on a copy,
    /// with no lock held.
    ///
    /// # Errors
    ///
    /// As [`changed`](Self::changed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no change is lost, the condition is checked on the latest snapshot.
    pub async fn wait_for(
        &mut self,
        mut f: impl FnMut(&BTreeMap<String, StatusEvent>) -> bool,
    ) -> Result<BTreeMap<String, StatusEvent>, watch::error::RecvError> {
        loop {
            // Marked seen before the copy, so a report after the copy wakes `changed`.
            self.rx.borrow_and_update();
            let snap = self.hub.snapshot();
            if f(&snap) {
                return Ok(snap);
            }
            self.rx.changed().await?;
        }
    }
}

/// A container's run as the hubs it reports to under a path prefix know it
/// ([`Reporter::begin_run`]): ends there when dropped, which is when the last of what
/// reports under it is gone. It is held by the run, by each of its members' task futures
/// (a restarter's attempts' too), and by the runs nested in them: a member still running
/// when its container's future was dropped (a restarter among them too) reports its own end
/// as its future ends, after the run itself, and an entry reported after its run ended
/// would outlive the clean-up of the next run below the same member (one entry per job, for
/// a member that runs a container per job).
#[derive(Debug)]
pub(crate) struct HubRun {
    mark: u64,
    hubs: Vec<StatusHub>,
    /// The nearest run around this one that reports under a prefix: it ends after this one.
    parent: Option<Arc<HubRun>>,
}

impl Drop for HubRun {
    fn drop(&mut self) {
        for hub in &self.hubs {
            hub.end_run(self.mark);
        }
        // The runs around end in a loop, not by recursion: a chain of nested containers is
        // as deep as its user made it. Each that this one held last is ended here.
        let mut parent = self.parent.take();
        while let Some(run) = parent {
            parent = match Arc::try_unwrap(run) {
                // Ended as it is dropped, at the end of this arm, its parent taken first.
                Ok(mut run) => run.parent.take(),
                Err(_) => None,
            };
        }
    }
}

/// Where a container or restarter reports its members: the hubs (its own and the one
/// inherited from the containers around it, each once), each with the prefix of the names
/// below it, and the full path for `tracing`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reporter {
    /// Each hub once, with the prefix (`""` or `"nested/"`) of member names in it.
    hubs: Vec<(StatusHub, String)>,
    /// The full path prefix of member names (`"top/nested/"`), for `tracing`.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    full: String,
    attempt: u32,
    /// The run of the container or restarter whose members this reports.
    run: Option<RunId>,
}

impl Reporter {
    /// A reporter for the members of the container at `path`: to `own` (names relative to
    /// this container) and to `inherited` (names relative to its owner, `rel` being this
    /// container's name there), once each; `run`: which run of which container.
    pub(crate) fn new(
        own: Option<&StatusHub>,
        inherited: Option<&(StatusHub, String)>,
        path: &str,
        attempt: u32,
        run: RunId,
    ) -> Self {
        let mut hubs: Vec<(StatusHub, String)> = Vec::new();
        if let Some((hub, rel)) = inherited {
            hubs.push((hub.clone(), format!("{rel}/")));
        }
        if let Some(hub) = own {
            if !hubs.iter().any(|(h, _)| h.same(hub)) {
                hubs.push((hub.clone(), String::new()));
            }
        }
        Reporter {
            hubs,
            full: if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            },
            attempt,
            run: Some(run),
        }
    }

    /// A reporter for a member that reports itself (a restarter) named `name` at `path`:
    /// its own hub with names as they are, the inherited one with the prefix of the
    /// member's relative name; `run`: which run of which restarter.
    pub(crate) fn for_member(
        own: Option<&StatusHub>,
        inherited: Option<&(StatusHub, String)>,
        path: &str,
        name: &str,
        run: RunId,
    ) -> Self {
        let mut hubs: Vec<(StatusHub, String)> = Vec::new();
        if let Some((hub, rel)) = inherited {
            let prefix = rel.strip_suffix(name).unwrap_or(rel.as_str());
            hubs.push((hub.clone(), prefix.to_owned()));
        }
        if let Some(hub) = own {
            if !hubs.iter().any(|(h, _)| h.same(hub)) {
                hubs.push((hub.clone(), String::new()));
            }
        }
        let full = path.strip_suffix(name).unwrap_or(path).to_owned();
        Reporter {
            hubs,
            full,
            attempt: 0,
            run: Some(run),
        }
    }

    /// Withdraws the `Idle` entries `owner` reported to `own` at build for `names` (see
    /// [`StatusHub::withdraw_built`]), when this reporter sends to that hub under a prefix:
    /// the hub was also given to a container around, and names below it are paths.
    pub(crate) fn withdraw_built<'a>(
        &self,
        own: Option<&StatusHub>,
        owner: Owner,
        names: impl IntoIterator<Item = &'a str>,
    ) {
        let Some(own) = own else { return };
        if self
            .hubs
            .iter()
            .any(|(hub, prefix)| hub.same(own) && !prefix.is_empty())
        {
            for name in names {
                own.withdraw_built(name, owner);
            }
        }
    }

    /// Enters a run of a container with members `names` in every hub this reporter sends
    /// to under a path prefix (see [`StatusHub::begin_run`]), inside `parent`, the run
    /// around that does so; the run ends there when the last clone of the returned guard
    /// is dropped; `None` when there is no such hub. Hubs it sends to as they are (its own,
    /// at the top) keep every entry: their names are the container's members.
    pub(crate) fn begin_run<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
        parent: Option<&Arc<HubRun>>,
    ) -> Option<Arc<HubRun>> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut prefixed = self.hubs.iter().filter(|(_, p)| !p.is_empty()).peekable();
        prefixed.peek()?;
        let mark = NEXT.fetch_add(1, Ordering::Relaxed);
        let hubs = prefixed
            .map(|(hub, prefix)| {
                let keys = names.clone().map(|n| format!("{prefix}{n}")).collect();
                hub.begin_run(mark, prefix, keys);
                hub.clone()
            })
            .collect();
        Some(Arc::new(HubRun {
            mark,
            hubs,
            parent: parent.cloned(),
        }))
    }

    /// The hub members below inherit, with the member's name relative to it: the first
    /// (outermost) hub.
    pub(crate) fn inherit(&self, member: &str) -> Option<(StatusHub, String)> {
        self.hubs
            .first()
            .map(|(hub, prefix)| (hub.clone(), format!("{prefix}{member}")))
    }

    /// The hub entries `name` is reported to, whatever the attempt: each hub (by identity)
    /// with the entry's key. Two reporters with equal entries for a name report it to the
    /// same places.
    pub(crate) fn entries(&self, name: &str) -> Vec<(*const (), String)> {
        self.hubs
            .iter()
            .map(|(hub, prefix)| (hub.identity(), format!("{prefix}{name}")))
            .collect()
    }

    /// The same reporter for another attempt.
    pub(crate) fn with_attempt(&self, attempt: u32) -> Self {
        Reporter {
            attempt,
            ..self.clone()
        }
    }

    pub(crate) fn report(&self, name: &str, state: ServiceState) {
        self.send(name, state, None, None);
    }

    /// Reports a transition with a delay (a scheduled restart).
    pub(crate) fn report_delay(&self, name: &str, state: ServiceState, delay: Duration) {
        self.send(name, state, None, Some(delay));
    }

    /// Reports a failure. `error` formats user code, which may panic: it is called only
    /// when a hub or a `tracing` subscriber listens, inside `catch_unwind`.
    pub(crate) fn report_failure(
        &self,
        name: &str,
        state: ServiceState,
        error: impl FnOnce() -> String,
    ) {
        #[cfg(feature = "tracing")]
        let traced = tracing::enabled!(target: "taskgroup::service", tracing::Level::INFO);
        #[cfg(not(feature = "tracing"))]
        let traced = false;
        let text = (!self.hubs.is_empty() || traced).then(|| crate::error::unpanicking(error));
        self.send(name, state, text, None);
    }

    fn send(
        &self,
        name: &str,
        state: ServiceState,
        error: Option<String>,
        delay: Option<Duration>,
    ) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "taskgroup::service",
            tracing::Level::INFO,
            service = %format_args!("{}{}", self.full, name),
            state = %state,
            attempt = self.attempt,
            delay = ?delay,
            failed = matches!(state, ServiceState::Failed | ServiceState::Panicked),
            error = error.as_deref(),
            "service {state}"
        );
        for (hub, prefix) in &self.hubs {
            let event = StatusEvent {
                name: format!("{prefix}{name}"),
                state,
                attempt: self.attempt,
                error: error.clone(),
                delay,
            };
            hub.report_event(event, self.run);
        }
    }

    /// Reports how a member ended: `Stopped` when `failure` is `None`, else `Panicked` or
    /// `Failed` with the failure's text (formatted only for a hub or a `tracing` subscriber,
    /// inside `catch_unwind`).
    pub(crate) fn ended(&self, name: &str, failure: Option<&ServiceError>) {
        match failure {
            None => self.report(name, ServiceState::Stopped),
            Some(ServiceError::Panicked { message, .. }) => {
                self.report_failure(name, ServiceState::Panicked, || message.clone())
            }
            Some(other) => self.report_failure(name, ServiceState::Failed, || other.reason()),
        }
    }
}
