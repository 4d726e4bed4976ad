//! Workloads 1 and 2 of issue 4: an add/done pair on one thread (another
//! guard pending; last one out with no waiter; with a waiter), and two threads
//! contending on one group, against TaskTracker, crossbeam's and awaitgroup's
//! WaitGroups and the `Arc<AtomicUsize>` floor.
//!
//! `cargo bench -p taskgroup-bench --bench add_done`; for the interleaved comparison with ratios
//! and targets, `scripts/bench-report`.

mod common;

use common::Occupancy;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    common::criterion_workload(&mut c, common::add_done(Occupancy::Busy), false);
    common::criterion_workload(&mut c, common::add_done(Occupancy::LastOut), false);
    common::criterion_workload(&mut c, common::add_done_waiter(), false);
    common::criterion_workload(&mut c, common::contended(), true);
    c.final_summary();
}
