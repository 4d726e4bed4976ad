//! Workload 7 of issue 4: 1e6 pending guards then all done; 1e6 idle tasks
//! released at once then waited; the pending report of 1e6 entries.
//!
//! `cargo bench -p taskgroup-bench --bench scale` (memory: about 1 GB at peak).

mod common;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    common::criterion_workload(&mut c, common::scale_guards(), true);
    common::criterion_workload(&mut c, common::scale_idle_tasks(), true);
    common::criterion_workload(&mut c, common::scale_report(), true);
    c.final_summary();
}
