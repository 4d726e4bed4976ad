//! The server of the `axum_server` example.
//!
//! Groups: `server` (the accept loop and one task per connection, from
//! `taskgroup::http::serve_router`), and below it, in link order, `db` (a
//! fake connection pool the handlers query) and `log flusher`. A shutdown
//! drains them in that order: the pool stays open while connections finish
//! their requests (or are aborted at the deadline), the flusher writes last.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use taskgroup::shutdown::{Phase, Readiness, ShutdownPlan, SignalError};
use taskgroup::{BoxError, ShutdownReport, WaitGroup};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Where to listen and how to shut down.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The address to bind; port 0 picks a free port.
    pub(crate) addr: SocketAddr,
    /// How long to keep serving after readiness fails (Kubernetes: while the
    /// endpoints controller and load balancers catch up).
    pub(crate) pre_stop: Duration,
    /// How long in-flight requests get to finish, for the server and the
    /// resources below it together.
    pub(crate) grace: Duration,
}

/// Something that happened, printed with the time since start and, when a
/// receiver was given to [`Server::start`], sent to it.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// The listener is bound; the server is ready.
    Listening { addr: SocketAddr },
    /// A `/work` request began its work.
    WorkStarted { ms: u64 },
    /// A `/work` request finished its work and queried the database.
    WorkFinished { ms: u64, query: u64 },
    /// Phase 1: readiness fails.
    NotReady,
    /// Phase 2: the pre-stop delay begins; the listener is still open.
    PreStop { delay: Duration },
    /// Phase 3: the group closes and is cancelled: the accept loop drops the
    /// listener, connections finish their in-flight requests.
    Draining { grace: Duration },
    /// Phase 6: the database pool is closing (the server group is drained).
    DbClosing { queries: u64 },
    /// Phase 6: the log flusher is flushing (the pool is closed).
    FlusherClosing,
    /// Phase 7: the shutdown is done; what it did.
    Done { report: ShutdownReport },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening { addr } => write!(f, "listening on http://{addr}, ready"),
            Event::WorkStarted { ms } => write!(f, "GET /work?ms={ms}: working"),
            Event::WorkFinished { ms, query } => {
                write!(f, "GET /work?ms={ms}: done (db query #{query})")
            }
            Event::NotReady => write!(f, "(1) not ready: /health/ready answers 503"),
            Event::PreStop { delay } => write!(
                f,
                "(2) pre-stop delay {delay:?}: still accepting while load balancers catch up"
            ),
            Event::Draining { grace } => write!(
                f,
                "(3) listener closed; (4) draining in-flight requests for up to {grace:?}"
            ),
            Event::DbClosing { queries } => write!(
                f,
                "(6) db: connections gone, closing the pool ({queries} queries served)"
            ),
            Event::FlusherClosing => write!(f, "(6) log flusher: db closed, flushing"),
            Event::Done { report } => write!(f, "(7) report: {report}"),
        }
    }
}

/// Prints events with the time since the server started, and forwards them.
#[derive(Debug, Clone)]
struct Log {
    start: Instant,
    events: Option<mpsc::UnboundedSender<Event>>,
}

impl Log {
    fn emit(&self, event: Event) {
        println!("{:>6} ms  {event}", self.start.elapsed().as_millis());
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

/// A running server.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    group: WaitGroup,
    readiness: Readiness,
    config: Config,
    log: Log,
}

impl Server {
    /// Binds, starts the database pool, the log flusher and the HTTP server,
    /// and reports ready. Events go to stdout and, if given, to `events`.
    pub(crate) async fn start(
        config: Config,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> std::io::Result<Server> {
        let log = Log {
            start: Instant::now(),
            events,
        };
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;

        let group = WaitGroup::builder().name("server").build();
        // Linked below the server in this order, so a shutdown closes the pool
        // once the connections are gone, and the flusher after the pool.
        let db = Db::start(&group.task().name("db").child(), log.clone());
        start_flusher(&group.task().name("log flusher").child(), log.clone());

        let readiness = Readiness::new();
        let app = Router::new()
            .route("/health/ready", get(ready))
            .route("/work", get(work))
            .with_state(App {
                readiness: readiness.clone(),
                db,
                log: log.clone(),
            });
        // The accept loop and each connection (`conn <peer>`) are tasks of
        // `group`: its shutdown drains, aborts and names them.
        taskgroup::http::serve_router(&group, listener, app);

        readiness.set_ready();
        log.emit(Event::Listening { addr });
        Ok(Server {
            addr,
            group,
            readiness,
            config,
            log,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the shutdown phases now: not ready, pre-stop delay, close and
    /// drain under the grace period, abort stragglers, close the database
    /// pool and then the log flusher; returns the report.
    pub(crate) async fn shutdown(self) -> ShutdownReport {
        self.plan().run(&self.group).await
    }

    /// Runs the same phases on the first SIGTERM or Ctrl-C; a second signal
    /// aborts what is left at once ([`SignalError::Forced`]).
    pub(crate) async fn shutdown_on_signal(self) -> Result<ShutdownReport, SignalError> {
        self.plan().run_on_signal(&self.group).await
    }

    fn plan(&self) -> ShutdownPlan {
        let log = self.log.clone();
        ShutdownPlan::new(self.config.grace)
            .pre_stop_delay(self.config.pre_stop)
            .readiness(self.readiness.clone())
            .on_phase(move |phase| match phase {
                Phase::NotReady => log.emit(Event::NotReady),
                Phase::PreStop { delay } => log.emit(Event::PreStop { delay: *delay }),
                Phase::Draining { grace, .. } => log.emit(Event::Draining { grace: *grace }),
                Phase::Done { report } => log.emit(Event::Done {
                    report: (*report).clone(),
                }),
                _ => {}
            })
    }
}

/// The handlers' state.
#[derive(Debug, Clone)]
struct App {
    readiness: Readiness,
    db: Db,
    log: Log,
}

/// `GET /health/ready`: 200 while ready, 503 once the shutdown has begun.
async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// `GET /work?ms=N`: works for N ms, records it in the database, answers
/// `done N`.
async fn work(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> Result<String, (StatusCode, &'static str)> {
    let ms = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
        .and_then(|ms| ms.parse().ok())
        .ok_or((StatusCode::BAD_REQUEST, "expected /work?ms=N\n"))?;
    app.log.emit(Event::WorkStarted { ms });
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let query = app
        .db
        .query()
        .await
        .ok_or((StatusCode::SERVICE_UNAVAILABLE, "database closed\n"))?;
    app.log.emit(Event::WorkFinished { ms, query });
    Ok(format!("done {ms}"))
}

/// A fake database pool: one task answering queries with a sequence number.
#[derive(Debug, Clone)]
struct Db {
    queries: mpsc::Sender<oneshot::Sender<u64>>,
}

impl Db {
    fn start(group: &WaitGroup, log: Log) -> Db {
        let (queries, mut incoming) = mpsc::channel::<oneshot::Sender<u64>>(16);
        group.task().name("db pool").go(move |ctx| async move {
            let mut served = 0;
            loop {
                tokio::select! {
                    () = ctx.cancelled() => break,
                    query = incoming.recv() => match query {
                        Some(reply) => {
                            served += 1;
                            let _ = reply.send(served);
                        }
                        None => break,
                    },
                }
            }
            log.emit(Event::DbClosing { queries: served });
            drop(incoming); // later queries fail: "database closed"
            tokio::time::sleep(Duration::from_millis(20)).await; // closing connections
            Ok::<_, BoxError>(())
        });
        Db { queries }
    }

    /// The query's sequence number, or `None` once the pool is closed.
    async fn query(&self) -> Option<u64> {
        let (reply, answer) = oneshot::channel();
        self.queries.send(reply).await.ok()?;
        answer.await.ok()
    }
}

/// A fake log flusher: on cancellation, flushes and closes.
fn start_flusher(group: &WaitGroup, log: Log) {
    group.task().name("flusher").go(move |ctx| async move {
        ctx.cancelled().await;
        log.emit(Event::FlusherClosing);
        tokio::time::sleep(Duration::from_millis(10)).await; // writing buffered lines
        Ok::<_, BoxError>(())
    });
}
