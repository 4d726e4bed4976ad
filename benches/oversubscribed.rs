//! Recorded add/done from more threads than cores, all on one group: the
//! wait for a held registry shard when its holder may have lost its core.
//! Issue 16's notes compare two builds with it (the registry's spin-then-sleep
//! for a held shard):
//!
//! ```text
//! cargo run --release -p taskgroup-bench --example oversubscribed -- 32 200000
//! ```
//!
//! Arguments: threads (default 32), pairs per thread (default 200,000).
//! Prints the wall time and the time per pair over all threads.

use std::sync::Barrier;
use std::time::Instant;

use taskgroup::WaitGroup;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(32, |s| s.parse().expect("threads"));
    let pairs: usize = args.next().map_or(200_000, |s| s.parse().expect("pairs"));
    let group = WaitGroup::new();
    let barrier = Barrier::new(threads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..pairs {
                    let guard = group.add();
                    std::hint::black_box(&guard);
                    drop(guard);
                }
            });
        }
    });
    let took = start.elapsed();
    println!(
        "{threads} threads x {pairs} recorded add/done pairs: {took:?}, {:.1} ns per pair",
        took.as_nanos() as f64 / (threads * pairs) as f64
    );
}
