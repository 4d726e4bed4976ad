//! A task that starts others whose end its own drop brings, as a connection's
//! drop resets its HTTP/2 streams (whose tasks then return), or a request's
//! drop ends the parts waiting on it: what a shutdown's aborts must name as
//! aborted, whichever of the two lands first.
//!
//! A test file declares the `common` modules it uses, one per concern:
//! `mod common { pub(crate) mod starter; }` (a test file is a crate root, so
//! the path is `tests/common/starter.rs`). No `tests/common/mod.rs` lists them
//! all, so no file compiles helpers it does not use and none needs
//! `allow(dead_code)`.

use taskgroup::{ShutdownReport, TaskContext, WaitGroup};

/// Starts a task named `conn` in `group` that starts `n` tasks named `name`
/// in the group `into` gives it (from `group` and its own context: the group
/// itself, or a scoped child), each returning as soon as `conn`'s future is
/// dropped, and then waits for ever. Returns once all are started.
pub(crate) async fn start_conn(
    group: &WaitGroup,
    into: impl FnOnce(&WaitGroup, &TaskContext) -> WaitGroup + Send + 'static,
    n: usize,
    name: &'static str,
) {
    let (started, running) = tokio::sync::oneshot::channel();
    let same = group.clone();
    group.task().name("conn").go(move |ctx| async move {
        // Dropped with this task's future: ends the started tasks' waits.
        let (_alive, gone) = tokio::sync::watch::channel(());
        let into = into(&same, &ctx);
        for _ in 0..n {
            let mut gone = gone.clone();
            into.task().name(name).go(move |_| async move {
                let _ = gone.changed().await;
            });
        }
        started.send(()).unwrap();
        std::future::pending::<()>().await
    });
    running.await.unwrap();
}

/// How many of the tasks `report` lists as aborted are named `name`.
pub(crate) fn aborted_named(report: &ShutdownReport, name: &str) -> usize {
    report
        .aborted()
        .iter()
        .filter(|task| task.name() == Some(name))
        .count()
}
