//! The interleaved comparison behind `scripts/bench-report` and
//! `docs/PERFORMANCE.md`.
//!
//! Criterion runs each benchmark on its own, minutes apart, and on a shared
//! machine the background load changes in between. This harness runs the
//! variants of one workload in turn (A B C, B C A, C A B, …) for several
//! rounds, one sample of each per round, after one unrecorded warm-up round,
//! and prints the median of each as a markdown table, with ratios to the
//! workload's reference (the atomic floor, raw `tokio::spawn`, or a tokio
//! `oneshot`) and a list of issue 4's targets, met or missed.
//!
//! ```text
//! cargo bench --bench report -- [--rounds N] [--only KEY-PREFIX]
//! ```

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use common::{Flavor, Occupancy, Workload};

/// Makes one workload's variants.
type Build = fn() -> Workload;

/// Every sample (time per op, in round order) of every variant, by workload
/// key then variant name.
type Samples = BTreeMap<&'static str, BTreeMap<String, Vec<f64>>>;

/// Iterations of one sample, per workload: long enough to dwarf the timer,
/// short enough for seven or more rounds in a few minutes.
fn iters_per_sample(key: &str) -> u64 {
    match key {
        "w1.busy" | "w1.last" => 2_000_000,
        "w1.waiter" => 200_000,
        "w2" => 4_000_000,
        "w5.thread" => 1_000,
        "w5.task" => 20_000,
        "w8" => 20,
        // One batch of 100k or 1e6, or one snapshot.
        _ => 1,
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// A duration in ns, printed with a unit that keeps three significant digits.
fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn run_workload(mut w: Workload, rounds: usize, out: &mut String, all: &mut Samples) {
    let iters = iters_per_sample(w.key);
    let per_op = |d: std::time::Duration| d.as_nanos() as f64 / (iters * w.ops_per_iter) as f64;
    let n = w.variants.len();
    eprintln!(
        "[bench-report] {} ({n} variants x {rounds} rounds)",
        w.title
    );
    let started = Instant::now();
    // Warm-up round, not recorded: page faults, lazy statics, runtime threads.
    for v in &mut w.variants {
        (v.run)(iters);
    }
    common::take_overlap();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    let mut overlaps = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let d = (w.variants[i].run)(iters);
            samples[i].push(per_op(d));
            if let Some(overlap) = common::take_overlap() {
                overlaps[i].push(overlap);
            }
        }
    }
    let with_overlap = overlaps.iter().any(|o| !o.is_empty());
    let in_round_order = samples.clone();
    let mut table: Vec<(String, f64, f64, f64)> = Vec::new();
    for (v, s) in w.variants.iter().zip(&mut samples) {
        let (min, max) = (
            s.iter().copied().fold(f64::INFINITY, f64::min),
            s.iter().copied().fold(0.0, f64::max),
        );
        table.push((v.name.clone(), median(s), min, max));
    }
    let reference = table[0].1;
    let _ = writeln!(out, "### {}\n", w.title);
    let _ = writeln!(
        out,
        "{} samples per variant, {} {}(s) each; time per {}. Ratio: median / median of `{}`.\n",
        rounds,
        iters * w.ops_per_iter,
        w.op,
        w.op,
        table[0].0
    );
    if with_overlap {
        let _ = writeln!(
            out,
            "Overlap: median fraction of a sample's wall time during which both threads were \
             running (1.00 = fully concurrent; near 0.50 = one ran after the other, so the pair \
             costs are mostly uncontended).\n"
        );
        let _ = writeln!(out, "| variant | median | min | max | ratio | overlap |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    } else {
        let _ = writeln!(out, "| variant | median | min | max | ratio |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    }
    for ((name, med, min, max), overlap) in table.iter().zip(&mut overlaps) {
        let overlap = if with_overlap {
            format!(" {:.2} |", median(overlap))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.2}x |{overlap}",
            human(*med),
            human(*min),
            human(*max),
            med / reference
        );
    }
    let _ = writeln!(out);
    eprintln!(
        "[bench-report]   took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    all.insert(
        w.key,
        w.variants
            .iter()
            .map(|v| v.name.clone())
            .zip(in_round_order)
            .collect(),
    );
}

/// One target of issue 4, checked on the medians.
struct Check {
    target: String,
    ratio: f64,
    limit: f64,
    detail: String,
}

/// Issue 4's targets, each checked as the median over rounds of the ratio of
/// two samples taken in the same round (paired, so a burst of background load
/// that slows one round slows both sides of its ratio).
fn targets(m: &Samples) -> Vec<Check> {
    let get = |key: &str, name: &str| -> Option<Vec<f64>> { m.get(key)?.get(name).cloned() };
    // Per round, over the placements of one implementation in workload 2:
    // the worst (`pick_worst`) or the median sample.
    let placements = |prefix: &str, pick_worst: bool| -> Option<Vec<f64>> {
        let rows: Vec<&Vec<f64>> = m
            .get("w2")?
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, v)| v)
            .collect();
        let rounds = rows.first()?.len();
        Some(
            (0..rounds)
                .map(|r| {
                    let mut at: Vec<f64> = rows.iter().map(|row| row[r]).collect();
                    if pick_worst {
                        at.iter().copied().fold(0.0, f64::max)
                    } else {
                        median(&mut at)
                    }
                })
                .collect(),
        )
    };
    let mut checks = Vec::new();
    let mut ratio =
        |target: String, a: Option<Vec<f64>>, b: Option<Vec<f64>>, limit: f64, what: &str| {
            if let (Some(mut a), Some(mut b)) = (a, b) {
                let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
                let paired = median(&mut ratios);
                checks.push(Check {
                    target,
                    ratio: paired,
                    limit,
                    detail: format!(
                        "{} / {} ({what}; medians)",
                        human(median(&mut a)),
                        human(median(&mut b))
                    ),
                });
            }
        };
    const FLOOR: &str = "floor: Arc<AtomicUsize> add+sub";
    for key in ["w1.busy", "w1.last"] {
        ratio(
            format!("{key}: lean add/done <= 1.2x floor"),
            get(key, "taskgroup lean"),
            get(key, FLOOR),
            1.2,
            "taskgroup lean / floor",
        );
        ratio(
            format!("{key}: recording add/done <= TaskTracker token()+drop"),
            get(key, "taskgroup recording"),
            get(key, "TaskTracker token()"),
            1.0,
            "taskgroup recording / TaskTracker",
        );
    }
    // The floor's placement should not matter (nothing else is on its line),
    // so its median over placements is the reference; taskgroup's worst
    // placement is held against it.
    let floor2 = placements("floor", false);
    ratio(
        "w2: two threads, lean, worst placement <= 1.2x two-thread floor".into(),
        placements("taskgroup lean", true),
        floor2.clone(),
        1.2,
        "worst taskgroup lean placement / floor, median over placements",
    );
    ratio(
        "w2: two threads, recording, worst placement <= 1.2x two-thread floor".into(),
        placements("taskgroup recording", true),
        floor2,
        1.2,
        "worst taskgroup recording placement / floor, median over placements",
    );
    for (key, limit) in [("w3.ct", 1.0), ("w3.mt", 1.1)] {
        ratio(
            format!("{key}: go()+wait() <= {limit}x TaskTracker spawn+close+wait"),
            get(key, "taskgroup go() + wait()"),
            get(key, "TaskTracker spawn + close + wait"),
            limit,
            "taskgroup / TaskTracker",
        );
        ratio(
            format!("{key}: go()+wait() <= 0.65x JoinSet"),
            get(key, "taskgroup go() + wait()"),
            get(key, "JoinSet spawn + join_next"),
            0.65,
            "taskgroup / JoinSet",
        );
    }
    for key in ["w4.ct", "w4.mt"] {
        ratio(
            format!("{key}: 1% failing <= 1.05x all succeed"),
            get(key, "taskgroup go(), 1% fail"),
            get(key, "taskgroup go(), all succeed"),
            1.05,
            "1% fail / all succeed",
        );
        ratio(
            format!("{key}: 1% failing <= 0.65x JoinSet collecting errors"),
            get(key, "taskgroup go(), 1% fail"),
            get(key, "JoinSet, errors collected"),
            0.65,
            "taskgroup / JoinSet",
        );
    }
    for key in ["w5.thread", "w5.task"] {
        for name in ["taskgroup lean", "taskgroup recording"] {
            ratio(
                format!("{key}: {name} wake latency <= 1.1x oneshot"),
                get(key, name),
                get(key, "tokio oneshot"),
                1.1,
                "taskgroup / oneshot",
            );
        }
    }
    checks
}

fn main() {
    let mut rounds = 15;
    let mut only: Option<String> = None;
    let mut benching = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N");
            }
            "--only" => only = args.next(),
            // `cargo bench` passes `--bench`; `cargo test --benches` does not.
            "--bench" => benching = true,
            _ => {}
        }
    }
    if !benching {
        eprintln!("report: a multi-minute benchmark; run it with `cargo bench --bench report` or scripts/bench-report");
        return;
    }
    let wanted = |key: &str| only.as_deref().map_or(true, |p| key.starts_with(p));

    let builders: [(&str, Build); 14] = [
        ("w1.busy", || common::add_done(Occupancy::Busy)),
        ("w1.last", || common::add_done(Occupancy::LastOut)),
        ("w1.waiter", common::add_done_waiter),
        ("w2", common::contended),
        ("w3.ct", || common::spawn_trivial(Flavor::CurrentThread)),
        ("w3.mt", || common::spawn_trivial(Flavor::MultiThread)),
        ("w4.ct", || common::spawn_failing(Flavor::CurrentThread)),
        ("w4.mt", || common::spawn_failing(Flavor::MultiThread)),
        ("w5.thread", common::wake_thread),
        ("w5.task", common::wake_task),
        ("w7.guards", common::scale_guards),
        ("w7.tasks", common::scale_idle_tasks),
        ("w7.report", common::scale_report),
        ("w8", common::tree),
    ];

    let started = Instant::now();
    let mut out = String::new();
    let mut all = Samples::new();
    for (key, build) in builders {
        if wanted(key) {
            // Each workload's variants (runtimes, 1e6 guards) are dropped
            // before the next is built.
            run_workload(build(), rounds, &mut out, &mut all);
        }
    }

    println!("## Timings\n");
    print!("{out}");
    println!("## Targets (timings)\n");
    println!(
        "Ratio: median over the {rounds} rounds of the two sides' ratio within a round (paired); \
         the measured column gives each side's median.\n"
    );
    println!("| target | measured | ratio | limit | |");
    println!("|---|---|---:|---:|---|");
    for check in targets(&all) {
        let met = check.ratio <= check.limit;
        let by = if met {
            String::new()
        } else {
            format!(" by {:.0}%", (check.ratio / check.limit - 1.0) * 100.0)
        };
        println!(
            "| {} | {} | {:.2}x | {:.2}x | {}{} |",
            check.target,
            check.detail,
            check.ratio,
            check.limit,
            if met { "met" } else { "**missed**" },
            by
        );
    }
    println!();
    eprintln!(
        "[bench-report] timings took {:.0}s",
        started.elapsed().as_secs_f64()
    );
}
