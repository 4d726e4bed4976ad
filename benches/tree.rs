//! Workload 8 of issue 4: a linked tree (depth 3, fan-out 10) with one task
//! per group, waited, and shut down; against a TaskTracker per node with a
//! CancellationToken tree.
//!
//! `cargo bench -p taskgroup-bench --bench tree`.

mod common;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    common::criterion_workload(&mut c, common::tree(), true);
    c.final_summary();
}
