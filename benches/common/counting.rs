//! A global allocator that counts allocations and net bytes, but only while
//! a measurement is on ([`measure`]); otherwise it forwards to the system
//! allocator after one relaxed load of a flag that nobody writes, so the timed
//! rows of the report run at the system allocator's speed.
//!
//! Installed by `benches/report.rs` only (for the memory rows of issues 11 and
//! 16: the heap a transient child or a burst leaves behind, the bytes of an
//! empty group). `benches/alloc_count.rs` has its own counting allocator,
//! `stats_alloc`, which counts always; it cannot be used by the timed report
//! without slowing every allocation by two sequentially consistent atomic
//! additions.
//!
//! The only `unsafe` outside `src/shared.rs`: implementing [`GlobalAlloc`]
//! takes an `unsafe impl`, and its methods forward their arguments unchanged
//! to [`System`]. Bench code, not part of the library.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

/// Whether allocations are counted now.
static ON: AtomicBool = AtomicBool::new(false);
/// Allocations and reallocations while counting.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated minus bytes freed while counting.
static NET: AtomicIsize = AtomicIsize::new(0);

/// The counting allocator; see the module docs.
#[derive(Debug)]
pub(crate) struct Counting;

#[inline]
fn count(allocs: usize, bytes: isize) {
    if ON.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(allocs, Ordering::Relaxed);
        NET.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc`'s contract; counting touches only atomics and
// never allocates.
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is
        // `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` (every method of this
        // allocator forwards to it) with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, new_size as isize - layout.size() as isize);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s
        // contract on `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

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

/// Runs `f` with counting on, and returns what it allocated (on every thread:
/// run nothing else meanwhile). All zeros when the binary's global allocator
/// is not [`Counting`]; see [`installed`].
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    ALLOCS.store(0, Ordering::Relaxed);
    NET.store(0, Ordering::Relaxed);
    ON.store(true, Ordering::SeqCst);
    let r = f();
    ON.store(false, Ordering::SeqCst);
    let usage = Usage {
        allocs: ALLOCS.load(Ordering::Relaxed),
        net_bytes: NET.load(Ordering::Relaxed),
    };
    (r, usage)
}

/// Whether [`Counting`] is this binary's global allocator.
pub(crate) fn installed() -> bool {
    let (_, usage) = measure(|| std::hint::black_box(Box::new(0_u64)));
    usage.allocs > 0
}
