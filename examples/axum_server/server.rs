//! The server of the `axum_server` example, also compiled into
//! `tests/http_drain.rs` (with `#[path]`), so the test runs this exact code.
//!
//! Groups: `server` (the accept loop and one task per connection), and below
//! it, in link order, `db` (a fake connection pool the handlers query) and
//! `log flusher`. A shutdown drains them in that order: the pool stays open
//! while connections finish their requests, the flusher writes last. One
//! deadline covers all three: if a connection uses it up, it is aborted, and
//! the pool and the flusher, still in that order, share the forced phase
//! after the deadline (the abort timeout) to close; whatever has not closed
//! within its share is aborted (the log says so).

use std::fmt;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use taskgroup::shutdown::{Phase, Readiness, ShutdownPlan};
use taskgroup::{BoxError, ShutdownReport, TaskContext, WaitGroup};
use tokio::net::{TcpListener, TcpStream};
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
/// receiver was given to [`Server::start`], sent to it (the test follows the
/// shutdown through these).
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
    /// Phases 3 and 4 begin: the group closes, so the accept loop stops and
    /// drops the listener, and connections finish their in-flight requests.
    Draining { grace: Duration },
    /// Phase 3: the listener is closed; new connections are refused.
    ListenerClosed { open: usize },
    /// A connection finished by itself (after its in-flight request, if any).
    ConnClosed { peer: SocketAddr },
    /// Phase 5: a connection was aborted at the deadline.
    ConnAborted { peer: SocketAddr },
    /// Phase 6: the database pool is closing (the server group is drained).
    DbClosing { queries: u64 },
    /// Phase 6: the database pool is closed.
    DbClosed,
    /// Phase 6: the database pool was aborted: a straggler had used up the
    /// deadline.
    DbAborted,
    /// Phase 6: the log flusher is flushing (the pool is closed).
    FlusherClosing,
    /// Phase 6: the log flusher is closed.
    FlusherClosed,
    /// Phase 6: the log flusher was aborted (no time was left).
    FlusherAborted,
    /// The shutdown is done; what it did.
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
                "(3) closing the listener; (4) draining in-flight requests for up to {grace:?}"
            ),
            Event::ListenerClosed { open } => write!(
                f,
                "(3) listener closed, new connections are refused; {open} connection(s) draining"
            ),
            Event::ConnClosed { peer } => write!(f, "conn {peer}: closed"),
            Event::ConnAborted { peer } => {
                write!(f, "(5) conn {peer}: aborted at the deadline, mid-request")
            }
            Event::DbClosing { queries } => write!(
                f,
                "(6) db: server drained, closing the pool ({queries} queries served)"
            ),
            Event::DbClosed => write!(f, "(6) db: pool closed"),
            Event::DbAborted => write!(f, "(6) db: no time left, pool aborted"),
            Event::FlusherClosing => write!(f, "(6) log flusher: db closed, flushing"),
            Event::FlusherClosed => write!(f, "(6) log flusher: closed"),
            Event::FlusherAborted => write!(f, "(6) log flusher: no time left, aborted"),
            Event::Done { report } => write!(f, "(5) report: {report}"),
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
    /// Binds, starts the database pool, the log flusher and the accept loop,
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
        // once the connections are done, and the flusher after the pool.
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

        let conns = group.clone();
        let accept_log = log.clone();
        group.task().name("accept").go(move |ctx| async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = ctx.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        // A client that gave up, or no file descriptors
                        // left: keep serving (pausing on the latter, so as
                        // not to spin).
                        Err(e) => {
                            if !is_connection_error(&e) {
                                eprintln!("accept: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            continue;
                        }
                    },
                };
                let (app, log) = (app.clone(), accept_log.clone());
                // Refused once the group is closed: no connection slips past
                // the shutdown.
                let conn = conns
                    .task()
                    .name(format!("conn {peer}"))
                    .try_go(move |ctx| serve_connection(stream, peer, app, ctx, log));
                if conn.is_err() {
                    break;
                }
            }
            drop(listener);
            accept_log.emit(Event::ListenerClosed {
                open: conns.len().saturating_sub(1), // all but this task
            });
            Ok::<_, std::io::Error>(())
        });

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

    /// Runs the shutdown phases: not ready, pre-stop delay, close and drain
    /// under the grace period, abort stragglers, close the database pool and
    /// then the log flusher; returns the report.
    pub(crate) async fn shutdown(self) -> ShutdownReport {
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
            .run(&self.group)
            .await
    }
}

/// An accept error that concerns one connection only.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
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

/// Serves one connection until the client hangs up, or, once the group is
/// cancelled, until its in-flight request is answered (HTTP/1 keep-alive is
/// turned off, so the response carries `connection: close`); an idle
/// connection closes at once. A shutdown aborts it at the deadline.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    ctx: TaskContext,
    log: Log,
) -> Result<(), hyper::Error> {
    let mut aborted = AbortLog::new(&log, Event::ConnAborted { peer });
    let mut conn = pin!(http1::Builder::new()
        .timer(TokioTimer::new()) // enables the 30 s header read timeout
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app)));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = ctx.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    aborted.disarm();
    log.emit(Event::ConnClosed { peer });
    result
}

/// Logs an event if a task is dropped before it finished: what an abort
/// does.
struct AbortLog {
    log: Log,
    event: Option<Event>,
}

impl AbortLog {
    fn new(log: &Log, event: Event) -> AbortLog {
        AbortLog {
            log: log.clone(),
            event: Some(event),
        }
    }

    /// The task finished: log nothing.
    fn disarm(&mut self) {
        self.event = None;
    }
}

impl Drop for AbortLog {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.log.emit(event);
        }
    }
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
            let mut aborted = AbortLog::new(&log, Event::DbAborted);
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
            aborted.disarm();
            log.emit(Event::DbClosed);
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
        let mut aborted = AbortLog::new(&log, Event::FlusherAborted);
        ctx.cancelled().await;
        log.emit(Event::FlusherClosing);
        tokio::time::sleep(Duration::from_millis(10)).await; // writing buffered lines
        aborted.disarm();
        log.emit(Event::FlusherClosed);
        Ok::<_, BoxError>(())
    });
}
