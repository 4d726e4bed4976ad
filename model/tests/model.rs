//! Model-based property test: random sequences of operations on a tree of
//! groups, run against a `WaitGroup` and against a plain sequential model;
//! after every operation the two must agree on every group's count, closed
//! and cancelled flags, pending report, errors (count, identity, order) and
//! cancel cause, and every wait and shutdown must return what the model says.
//!
//! Deterministic: a current-thread runtime with paused time; after each
//! operation the test yields until every task that can run has run.
//!
//! Cases: `PROPTEST_CASES` (default 256; 8 under miri).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use taskgroup::TaskContext;
use taskgroup::{
    GroupId, LinkError, PendingReport, ShutdownReport, TaskErrors, TaskGuard, TaskKind, WaitError,
    WaitGroup,
};
use tokio::sync::oneshot;

const MAX_GROUPS: usize = 6;
const NAMES: [&str; 3] = ["a", "b", "c"];
const GRACE: Duration = Duration::from_secs(1);

/// How a task ends once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    Panic,
}

#[derive(Debug, Clone)]
enum Op {
    /// `add` (or a named `task().add()`) on group `g`.
    Add {
        g: u8,
        name: Option<u8>,
    },
    /// `try_add` on group `g`.
    TryAdd {
        g: u8,
    },
    /// Complete a held guard with `done()`.
    Done {
        i: u8,
    },
    /// Complete a held guard by dropping it.
    Drop {
        i: u8,
    },
    /// `go`/named `go`/`try_go` on group `g`; a polite task also ends (Ok)
    /// when its context is cancelled, an impolite one only when released.
    Go {
        g: u8,
        name: Option<u8>,
        outcome: Outcome,
        polite: bool,
        try_go: bool,
    },
    /// Let a running task end with its outcome.
    Release {
        i: u8,
    },
    /// A new independent group (something to `link`).
    NewGroup,
    /// `child()` of group `g`.
    Child {
        g: u8,
    },
    /// `link(child)` of group `p`.
    Link {
        p: u8,
        c: u8,
    },
    Close {
        g: u8,
    },
    Cancel {
        g: u8,
    },
    /// `wait_timeout` with a zero or a short duration.
    WaitTimeout {
        g: u8,
        zero: bool,
    },
    /// `shutdown(GRACE)`.
    Shutdown {
        g: u8,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Error),
        Just(Outcome::Panic)
    ];
    let name = proptest::option::of(0u8..3);
    prop_oneof![
        4 => (any::<u8>(), name.clone()).prop_map(|(g, name)| Op::Add { g, name }),
        1 => any::<u8>().prop_map(|g| Op::TryAdd { g }),
        2 => any::<u8>().prop_map(|i| Op::Done { i }),
        2 => any::<u8>().prop_map(|i| Op::Drop { i }),
        5 => (any::<u8>(), name, outcome, any::<bool>(), any::<bool>()).prop_map(
            |(g, name, outcome, polite, try_go)| Op::Go { g, name, outcome, polite, try_go }
        ),
        4 => any::<u8>().prop_map(|i| Op::Release { i }),
        1 => Just(Op::NewGroup),
        1 => any::<u8>().prop_map(|g| Op::Child { g }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(p, c)| Op::Link { p, c }),
        1 => any::<u8>().prop_map(|g| Op::Close { g }),
        1 => any::<u8>().prop_map(|g| Op::Cancel { g }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(g, zero)| Op::WaitTimeout { g, zero }),
        1 => any::<u8>().prop_map(|g| Op::Shutdown { g }),
    ]
}

// ----- the model ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct MEntry {
    name: Option<String>,
    kind: TaskKind,
    /// For tasks: whether it ends on cancellation.
    polite: bool,
    outcome: Outcome,
}

/// A failure as both sides describe it: (group, task id, name, panic?, message).
type MError = (usize, u64, Option<String>, bool, String);

#[derive(Debug, Default)]
struct MGroup {
    /// The group whose scope token is this group's scope's parent (`child()`).
    scope_parent: Option<usize>,
    links: Vec<usize>,
    closed: bool,
    scope_cancelled: bool,
    own_cancelled: bool,
    /// A shutdown reached it (the model has no `reopen`): a child made
    /// later starts closed and cancelled.
    shut_down: bool,
    cancel_on_error: bool,
    /// A failure with `cancel_on_error` was recorded: the next ones only
    /// add to the errors (secondary).
    critical_seen: bool,
    /// That failure, if the group was not cancelled already when it came.
    cause: Option<u64>,
    last_id: u64,
    entries: BTreeMap<u64, MEntry>,
    errors: Vec<MError>,
}

#[derive(Debug, Default)]
struct Model {
    groups: Vec<MGroup>,
}

/// A comparable pending report: (group, count, [(id, name, kind)]).
type MPending = Vec<(usize, usize, Vec<(u64, Option<String>, TaskKind)>)>;

impl Model {
    fn is_cancelled(&self, g: usize) -> bool {
        self.groups[g].own_cancelled || self.groups[g].scope_cancelled
    }

    /// Cancels `g`'s scope token and every token below it.
    fn cancel_scope(&mut self, g: usize) {
        self.groups[g].scope_cancelled = true;
        for c in 0..self.groups.len() {
            if self.groups[c].scope_parent == Some(g) && !self.groups[c].scope_cancelled {
                self.cancel_scope(c);
            }
        }
    }

    /// `WaitGroup::cancel`: the scope, then every linked group, recursively.
    fn cancel_tree(&mut self, g: usize) {
        self.cancel_scope(g);
        for c in self.groups[g].links.clone() {
            self.cancel_tree(c);
        }
    }

    fn register(&mut self, g: usize, entry: MEntry) -> u64 {
        let group = &mut self.groups[g];
        group.last_id += 1;
        group.entries.insert(group.last_id, entry);
        group.last_id
    }

    /// A task ends: record its failure (maybe cancelling), then remove it.
    fn finish(&mut self, g: usize, id: u64, outcome: Outcome) {
        let entry = self.groups[g]
            .entries
            .remove(&id)
            .expect("finishing a live task");
        let failure = match outcome {
            Outcome::Ok => None,
            Outcome::Error => Some((false, "model-error".to_owned())),
            Outcome::Panic => Some((true, "model-panic".to_owned())),
        };
        if let Some((panic, message)) = failure {
            self.groups[g]
                .errors
                .push((g, id, entry.name, panic, message));
            if self.groups[g].cancel_on_error && !self.groups[g].critical_seen {
                self.groups[g].critical_seen = true;
                if !self.is_cancelled(g) {
                    self.groups[g].cause = Some(id);
                }
                self.cancel_tree(g);
            }
        }
    }

    /// Polite tasks of cancelled groups end (Ok) once the runtime runs them.
    fn settle(&mut self) {
        for g in 0..self.groups.len() {
            if self.is_cancelled(g) {
                let polite: Vec<u64> = self.groups[g]
                    .entries
                    .iter()
                    .filter(|(_, e)| e.kind == TaskKind::Task && e.polite)
                    .map(|(id, _)| *id)
                    .collect();
                for id in polite {
                    self.finish(g, id, Outcome::Ok);
                }
            }
        }
    }

    fn reaches(&self, from: usize, target: usize) -> bool {
        from == target
            || self.groups[from]
                .links
                .iter()
                .any(|&l| self.reaches(l, target))
    }

    /// The groups a wait/report on `g` visits, in order (DFS, each once).
    fn tree(&self, g: usize) -> Vec<usize> {
        fn visit(m: &Model, g: usize, out: &mut Vec<usize>) {
            if out.contains(&g) {
                return;
            }
            out.push(g);
            for &l in &m.groups[g].links {
                visit(m, l, out);
            }
        }
        let mut out = Vec::new();
        visit(self, g, &mut out);
        out
    }

    fn pending(&self, g: usize) -> MPending {
        self.tree(g)
            .into_iter()
            .filter(|&t| !self.groups[t].entries.is_empty())
            .map(|t| {
                let entries = &self.groups[t].entries;
                let tasks = entries
                    .iter()
                    .map(|(id, e)| (*id, e.name.clone(), e.kind))
                    .collect();
                (t, entries.len(), tasks)
            })
            .collect()
    }

    fn errors(&self, g: usize) -> Vec<MError> {
        self.tree(g)
            .into_iter()
            .flat_map(|t| self.groups[t].errors.clone())
            .collect()
    }

    fn tree_idle(&self, g: usize) -> bool {
        self.tree(g)
            .iter()
            .all(|&t| self.groups[t].entries.is_empty())
    }

    /// `shutdown(GRACE)` on `g`: returns (finished, aborted [(group, id, name)]).
    fn shutdown(&mut self, g: usize) -> (usize, Vec<(usize, u64, Option<String>)>) {
        let mut finished = 0;
        let mut aborted = Vec::new();
        let mut seen = Vec::new();
        self.shutdown_group(g, &mut seen, &mut finished, &mut aborted);
        (finished, aborted)
    }

    /// A group's turn in a shutdown. Cancelled polite tasks end by themselves
    /// (at once: the model has no durations), whether the group is reached
    /// before the deadline or after it (a group reached late still gets its
    /// share of the forced phase); what is left is then aborted.
    fn shutdown_group(
        &mut self,
        g: usize,
        seen: &mut Vec<usize>,
        finished: &mut usize,
        aborted: &mut Vec<(usize, u64, Option<String>)>,
    ) {
        if seen.contains(&g) {
            return;
        }
        seen.push(g);
        self.groups[g].closed = true;
        self.groups[g].own_cancelled = true;
        self.groups[g].shut_down = true;
        if !self.groups[g].entries.is_empty() {
            let before = self.groups[g].entries.len();
            self.settle_group(g);
            *finished += before - self.groups[g].entries.len();
            let tasks: Vec<u64> = self.groups[g]
                .entries
                .iter()
                .filter(|(_, e)| e.kind == TaskKind::Task)
                .map(|(id, _)| *id)
                .collect();
            for id in tasks {
                let e = self.groups[g].entries.remove(&id).unwrap();
                aborted.push((g, id, e.name));
            }
        }
        for c in self.groups[g].links.clone() {
            self.shutdown_group(c, seen, finished, aborted);
        }
    }

    fn settle_group(&mut self, g: usize) {
        let polite: Vec<u64> = self.groups[g]
            .entries
            .iter()
            .filter(|(_, e)| e.kind == TaskKind::Task && e.polite)
            .map(|(id, _)| *id)
            .collect();
        for id in polite {
            self.finish(g, id, Outcome::Ok);
        }
    }
}

// ----- the system under test ---------------------------------------------------

struct Held {
    group: usize,
    id: u64,
    guard: TaskGuard,
}

struct Running {
    group: usize,
    id: u64,
    release: Option<oneshot::Sender<()>>,
}

struct Sut {
    groups: Vec<WaitGroup>,
    index: HashMap<GroupId, usize>,
    guards: Vec<Held>,
    tasks: Vec<Running>,
}

impl Sut {
    fn push_group(&mut self, wg: WaitGroup) {
        self.index.insert(wg.id(), self.groups.len());
        self.groups.push(wg);
    }

    fn pending(&self, report: &PendingReport) -> MPending {
        report
            .groups()
            .iter()
            .map(|gp| {
                assert_eq!(gp.unrecorded(), 0);
                let tasks = gp
                    .tasks()
                    .iter()
                    .map(|t| (t.id().as_u64(), t.name().map(str::to_owned), t.kind()))
                    .collect();
                (self.index[&gp.group_id()], gp.len(), tasks)
            })
            .collect()
    }

    fn errors(&self, errors: &TaskErrors) -> Vec<MError> {
        errors
            .iter()
            .map(|e| {
                let message = match e.panic_message() {
                    Some(m) => m.to_owned(),
                    None => e.error().expect("an error or a panic").to_string(),
                };
                (
                    self.index[&e.group_id()],
                    e.id().as_u64(),
                    e.name().map(str::to_owned),
                    e.is_panic(),
                    message,
                )
            })
            .collect()
    }
}

/// Runs every task that can run (the runtime is current-thread and only this
/// test drives it).
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

fn pick(n: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| usize::from(n) % len)
}

fn spawn(
    wg: &WaitGroup,
    name: Option<&'static str>,
    outcome: Outcome,
    polite: bool,
    try_go: bool,
) -> (Option<u64>, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let body = move |ctx: TaskContext| async move {
        let released = if polite {
            tokio::select! {
                biased;
                r = rx => r.is_ok(),
                () = ctx.cancelled() => false,
            }
        } else {
            rx.await.is_ok()
        };
        match (released, outcome) {
            (false, _) | (true, Outcome::Ok) => Ok(()),
            (true, Outcome::Error) => Err("model-error"),
            (true, Outcome::Panic) => panic!("model-panic"),
        }
    };
    let id = match (try_go, name) {
        (false, None) => Some(wg.go(body)),
        (false, Some(name)) => Some(wg.task().name(name).go(body)),
        (true, None) => wg.try_go(body).ok(),
        (true, Some(name)) => wg.task().name(name).try_go(body).ok(),
    };
    (id.map(|task| task.id().as_u64()), tx)
}

async fn run_case(ops: Vec<Op>, cancel_on_error: bool) {
    let mut model = Model::default();
    let mut sut = Sut {
        groups: Vec::new(),
        index: HashMap::new(),
        guards: Vec::new(),
        tasks: Vec::new(),
    };
    sut.push_group(
        WaitGroup::builder()
            .cancel_on_error(cancel_on_error)
            .build(),
    );
    model.groups.push(MGroup {
        cancel_on_error,
        ..MGroup::default()
    });

    for (step, op) in ops.into_iter().enumerate() {
        let n = sut.groups.len();
        match op {
            Op::Add { g, name } => {
                let g = usize::from(g) % n;
                let name = name.map(|i| NAMES[usize::from(i)]);
                let guard = match name {
                    Some(name) => sut.groups[g].task().name(name).add(),
                    None => sut.groups[g].add(),
                };
                let id = model.register(
                    g,
                    MEntry {
                        name: name.map(str::to_owned),
                        kind: TaskKind::Guard,
                        polite: false,
                        outcome: Outcome::Ok,
                    },
                );
                assert_eq!(guard.id().as_u64(), id, "guard id");
                sut.guards.push(Held {
                    group: g,
                    id,
                    guard,
                });
            }
            Op::TryAdd { g } => {
                let g = usize::from(g) % n;
                let result = sut.groups[g].try_add();
                assert_eq!(
                    result.is_ok(),
                    !model.groups[g].closed,
                    "try_add on closed={}",
                    model.groups[g].closed
                );
                if let Ok(guard) = result {
                    let id = model.register(
                        g,
                        MEntry {
                            name: None,
                            kind: TaskKind::Guard,
                            polite: false,
                            outcome: Outcome::Ok,
                        },
                    );
                    assert_eq!(guard.id().as_u64(), id);
                    sut.guards.push(Held {
                        group: g,
                        id,
                        guard,
                    });
                }
            }
            Op::Done { i } | Op::Drop { i } => {
                if let Some(i) = pick(i, sut.guards.len()) {
                    let held = sut.guards.swap_remove(i);
                    model.groups[held.group]
                        .entries
                        .remove(&held.id)
                        .expect("held guard in model");
                    if matches!(op, Op::Done { .. }) {
                        held.guard.done();
                    } else {
                        drop(held.guard);
                    }
                }
            }
            Op::Go {
                g,
                name,
                outcome,
                polite,
                try_go,
            } => {
                let g = usize::from(g) % n;
                let name = name.map(|i| NAMES[usize::from(i)]);
                let (id, tx) = spawn(&sut.groups[g], name, outcome, polite, try_go);
                let refused = try_go && model.groups[g].closed;
                assert_eq!(id.is_none(), refused, "try_go on a closed group");
                if let Some(id) = id {
                    let mid = model.register(
                        g,
                        MEntry {
                            name: name.map(str::to_owned),
                            kind: TaskKind::Task,
                            polite,
                            outcome,
                        },
                    );
                    assert_eq!(id, mid, "task id");
                    sut.tasks.push(Running {
                        group: g,
                        id,
                        release: Some(tx),
                    });
                }
            }
            Op::Release { i } => {
                // Only tasks still running in the model can be released.
                sut.tasks
                    .retain(|t| model.groups[t.group].entries.contains_key(&t.id));
                if let Some(i) = pick(i, sut.tasks.len()) {
                    let mut t = sut.tasks.swap_remove(i);
                    let outcome = model.groups[t.group].entries[&t.id].outcome;
                    let _ = t.release.take().unwrap().send(());
                    model.finish(t.group, t.id, outcome);
                }
            }
            Op::NewGroup => {
                if n < MAX_GROUPS {
                    sut.push_group(WaitGroup::new());
                    model.groups.push(MGroup::default());
                }
            }
            Op::Child { g } => {
                let g = usize::from(g) % n;
                if n < MAX_GROUPS {
                    let child = sut.groups[g].child();
                    sut.push_group(child);
                    let cancelled = model.groups[g].scope_cancelled;
                    let cancel_on_error = model.groups[g].cancel_on_error;
                    // Made after a shutdown reached its parent: as that
                    // shutdown left the parent.
                    let stopped = model.groups[g].shut_down && model.groups[g].closed;
                    model.groups.push(MGroup {
                        scope_parent: Some(g),
                        scope_cancelled: cancelled,
                        cancel_on_error,
                        closed: stopped,
                        own_cancelled: stopped && model.groups[g].own_cancelled,
                        shut_down: stopped,
                        ..MGroup::default()
                    });
                    model.groups[g].links.push(n);
                }
            }
            Op::Link { p, c } => {
                let (p, c) = (usize::from(p) % n, usize::from(c) % n);
                let got = sut.groups[p].link(&sut.groups[c]);
                let (pid, cid) = (sut.groups[p].id(), sut.groups[c].id());
                let want = if p == c {
                    Err(LinkError::SelfLink { group: pid })
                } else if model.reaches(c, p) {
                    Err(LinkError::Cycle {
                        parent: pid,
                        child: cid,
                    })
                } else if model.groups[p].links.contains(&c) {
                    Err(LinkError::AlreadyLinked {
                        parent: pid,
                        child: cid,
                    })
                } else {
                    model.groups[p].links.push(c);
                    Ok(())
                };
                assert_eq!(got, want, "link {p} -> {c}");
            }
            Op::Close { g } => {
                let g = usize::from(g) % n;
                sut.groups[g].close();
                model.groups[g].closed = true;
            }
            Op::Cancel { g } => {
                let g = usize::from(g) % n;
                sut.groups[g].cancel();
                model.cancel_tree(g);
            }
            Op::WaitTimeout { g, zero } => {
                let g = usize::from(g) % n;
                let timeout = if zero {
                    Duration::ZERO
                } else {
                    Duration::from_millis(10)
                };
                let got = sut.groups[g].wait_timeout(timeout).await;
                let errors = model.errors(g);
                match got {
                    Ok(()) => {
                        assert!(model.tree_idle(g), "wait returned Ok with work pending");
                        assert!(errors.is_empty(), "wait returned Ok with errors {errors:?}");
                    }
                    Err(WaitError::Failed { errors: got }) => {
                        assert!(model.tree_idle(g), "wait returned Failed with work pending");
                        assert_eq!(sut.errors(&got), errors);
                    }
                    Err(WaitError::TimedOut {
                        pending,
                        errors: got,
                    }) => {
                        assert!(!model.tree_idle(g), "timed out on an idle tree");
                        assert_eq!(sut.pending(&pending), model.pending(g));
                        assert_eq!(sut.errors(&got), errors);
                    }
                    Err(other) => panic!("unexpected wait error: {other}"),
                }
            }
            Op::Shutdown { g } => {
                let g = usize::from(g) % n;
                let report: ShutdownReport = sut.groups[g].shutdown(GRACE).await;
                let (finished, aborted) = model.shutdown(g);
                assert_eq!(report.finished(), finished, "finished: {report}");
                let got_aborted: Vec<_> = report
                    .aborted()
                    .iter()
                    .map(|t| {
                        (
                            sut.index[&t.group_id()],
                            t.id().as_u64(),
                            t.name().map(str::to_owned),
                        )
                    })
                    .collect();
                assert_eq!(got_aborted, aborted, "aborted: {report}");
                assert_eq!(
                    sut.pending(report.pending()),
                    model.pending(g),
                    "pending: {report}"
                );
                assert_eq!(
                    sut.errors(report.errors()),
                    model.errors(g),
                    "errors: {report}"
                );
                assert!(
                    report.elapsed() <= GRACE + Duration::from_secs(1),
                    "{report}"
                );
            }
        }
        settle().await;
        model.settle();
        check(&sut, &model, step);
    }
    // Tear down: release everything, so no task outlives the case.
    drop(sut.guards);
    for g in &sut.groups {
        g.cancel();
    }
    for t in sut.tasks.iter_mut() {
        if let Some(tx) = t.release.take() {
            let _ = tx.send(());
        }
    }
    for g in &sut.groups {
        let _ = g.wait_timeout(Duration::from_secs(10)).await;
        assert!(g.is_empty(), "a task outlived its case");
    }
}

fn check(sut: &Sut, model: &Model, step: usize) {
    for (g, wg) in sut.groups.iter().enumerate() {
        let m = &model.groups[g];
        assert_eq!(
            wg.len(),
            m.entries.len(),
            "len of group {g} after step {step}"
        );
        assert_eq!(
            wg.is_closed(),
            m.closed,
            "closed of group {g} after step {step}"
        );
        assert_eq!(
            wg.is_cancelled(),
            model.is_cancelled(g),
            "cancelled of group {g} after step {step}"
        );
        assert_eq!(
            wg.cancel_cause().map(|e| e.id().as_u64()),
            m.cause,
            "cause of group {g}"
        );
        assert_eq!(
            sut.pending(&wg.pending()),
            model.pending(g),
            "pending of group {g} after step {step}"
        );
        assert_eq!(
            sut.errors(&wg.errors()),
            model.errors(g),
            "errors of group {g} after step {step}"
        );
    }
}

#[test]
fn waitgroup_matches_the_sequential_model() {
    // Panics are expected (the Panic outcome); keep their messages quiet.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let expected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| *m == "model-panic");
        if !expected {
            default_hook(info);
        }
    }));

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(miri) { 8 } else { 256 });
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let ran = AtomicUsize::new(0);
    let ops_run = AtomicUsize::new(0);
    let max_len = if cfg!(miri) { 12 } else { 48 };
    let strategy = (
        proptest::collection::vec(op_strategy(), 1..max_len),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(ops, cancel_on_error)| {
        ran.fetch_add(1, Ordering::Relaxed);
        ops_run.fetch_add(ops.len(), Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(ops, cancel_on_error));
        Ok(())
    });
    println!(
        "model: {} cases run ({} configured), {} operations",
        ran.load(Ordering::Relaxed),
        cases,
        ops_run.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
