//! Workload 5 of issue 4: wake latency, from the last `done()` to the waiting
//! task resumed, when `done()` runs on an OS thread and when it runs in another
//! task, against a tokio `oneshot`, TaskTracker and awaitgroup. Criterion sees
//! the summed latencies, not the wall time (each wake-up is preceded by a
//! 50 µs pause so the waiter is parked).
//!
//! `cargo bench -p taskgroup-bench --bench wake`.

mod common;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    common::criterion_workload(&mut c, common::wake_thread(), true);
    common::criterion_workload(&mut c, common::wake_task(), false);
    c.final_summary();
}
