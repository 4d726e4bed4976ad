//! Counting what a region of code allocates, for the memory rows of the
//! report (issues 11 and 16: the heap a transient child or a burst leaves
//! behind, the bytes of an empty group).
//!
//! Built on `stats_alloc` (a dev-dependency, as in `benches/alloc_count.rs`)
//! so that the benches hold no `unsafe` of their own. It counts only in a
//! binary whose global allocator is [`INSTRUMENTED`]: `benches/alloc_count.rs`
//! installs it and prints the empty-group table (workload 10d) from it;
//! `benches/report.rs` does not, because it counts every allocation with
//! shared atomics and so skews the timed rows (on two workers most). The heap
//! columns of the w9 rows therefore read 0 in the report binary; the memory
//! kept per transient child and per burst guard is asserted by
//! `tests/soak.rs`.

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// The allocator `benches/alloc_count.rs` installs.
pub(crate) static INSTRUMENTED: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// What a measured region allocated.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Allocations and reallocations.
    pub(crate) allocs: usize,
    /// Bytes still allocated at the end of the region, net of frees.
    pub(crate) net_bytes: isize,
}

impl Usage {
    /// Per item of `n`: (net bytes, allocations).
    pub(crate) fn per(self, n: u64) -> (f64, f64) {
        (
            self.net_bytes as f64 / n as f64,
            self.allocs as f64 / n as f64,
        )
    }
}

/// Runs `f` and returns what it allocated (on every thread: run nothing else
/// meanwhile). All zeros when the binary's global allocator is not
/// [`INSTRUMENTED`]; see [`installed`].
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let region = Region::new(INSTRUMENTED);
    let r = f();
    let stats = region.change();
    let usage = Usage {
        allocs: stats.allocations + stats.reallocations,
        net_bytes: stats.bytes_allocated as isize - stats.bytes_deallocated as isize
            + stats.bytes_reallocated,
    };
    (r, usage)
}

/// Whether [`INSTRUMENTED`] is this binary's global allocator.
pub(crate) fn installed() -> bool {
    let (_, usage) = measure(|| std::hint::black_box(Box::new(0_u64)));
    usage.allocs > 0
}
