//! Workloads 3 and 4 of issue 4: 100k trivial tasks spawned then waited, and
//! 100k tasks returning `Result` with 1% failing, on a current-thread and a
//! 2-worker runtime; `go()` against `TaskTracker`, `JoinSet` and raw
//! `tokio::spawn` with awaited handles.
//!
//! `cargo bench -p taskgroup-bench --bench spawn`.

mod common;

use common::Flavor;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        common::criterion_workload(&mut c, common::spawn_trivial(flavor), true);
        common::criterion_workload(&mut c, common::spawn_failing(flavor), true);
    }
    c.final_summary();
}
