//! A report's text stays a screenful however much work it covers: the first
//! 100 aborted and 100 pending tasks, then how many more; `{:#}` lists all.
//! The lists themselves (`aborted()`, `pending()`, serde) stay whole.

use std::time::Duration;

use taskgroup::{TaskGuard, WaitGroup};

/// What a report's text lists of each kind before it counts the rest.
const LISTED: usize = 100;

fn lines_starting(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

/// A shutdown of `stuck` tasks that ignore cancellation and `guards` pending
/// guards, all in a group named "app".
async fn unclean_shutdown(
    stuck: usize,
    guards: usize,
) -> (taskgroup::ShutdownReport, Vec<TaskGuard>) {
    let wg = WaitGroup::builder().name("app").build();
    for i in 0..stuck {
        wg.task()
            .name(format!("conn {i}"))
            .go(|_| std::future::pending::<()>());
    }
    let held: Vec<TaskGuard> = (0..guards).map(|_| wg.task().name("lease").add()).collect();
    (wg.shutdown(Duration::from_secs(1)).await, held)
}

#[tokio::test(start_paused = true)]
async fn a_report_lists_the_first_hundred_aborted_and_counts_the_rest() {
    let (report, _held) = unclean_shutdown(250, 0).await;
    assert_eq!(report.aborted().len(), 250, "the list itself stays whole");
    let text = report.to_string();
    assert_eq!(lines_starting(&text, "  aborted: "), LISTED, "{text}");
    // By id: the first hundred spawned.
    assert!(text.contains("\"conn 0\""), "{text}");
    assert!(text.contains("\"conn 99\""), "{text}");
    assert!(!text.contains("\"conn 100\""), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("  and 150 more aborted"),
        "{text}"
    );
    assert!(text.starts_with("shutdown took "), "{text}");
    assert!(
        text.lines().next().unwrap().contains("250 aborted"),
        "{text}"
    );

    let all = format!("{report:#}");
    assert_eq!(lines_starting(&all, "  aborted: "), 250, "{all}");
    assert!(!all.contains("more aborted"), "{all}");
}

#[tokio::test(start_paused = true)]
async fn exactly_a_hundred_are_all_listed_without_a_count() {
    let (report, _held) = unclean_shutdown(LISTED, LISTED).await;
    let text = report.to_string();
    assert_eq!(lines_starting(&text, "  aborted: "), LISTED, "{text}");
    assert_eq!(lines_starting(&text, "  pending: "), LISTED, "{text}");
    assert!(!text.contains(" more "), "{text}");
    assert_eq!(text, format!("{report:#}"));
}

#[tokio::test(start_paused = true)]
async fn pending_guards_are_capped_too_and_the_error_prints_the_same() {
    let (report, held) = unclean_shutdown(3, 1_234).await;
    let text = report.to_string();
    assert_eq!(lines_starting(&text, "  aborted: "), 3, "{text}");
    assert_eq!(lines_starting(&text, "  pending: "), LISTED, "{text}");
    assert_eq!(
        text.lines().last(),
        Some("  and 1,134 more pending"),
        "{text}"
    );
    assert_eq!(report.pending().tasks().count(), 1_234);

    // What `main` returning the error prints, and its verbose forms.
    let err = report.into_result().unwrap_err();
    assert_eq!(format!("{err:?}"), text);
    assert_eq!(format!("{err}"), text);
    let all = format!("{err:#?}");
    assert_eq!(lines_starting(&all, "  pending: "), 1_234, "{all}");
    assert_eq!(all, format!("{err:#}"));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_wait_names_a_hundred_and_counts_the_rest() {
    let wg = WaitGroup::builder().name("app").build();
    let held: Vec<TaskGuard> = (0..250)
        .map(|i| wg.task().name(format!("job {i}")).add())
        .collect();
    let err = wg
        .wait_timeout(Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let pending = err.pending().expect("a timeout carries the pending report");
    assert_eq!(pending.len(), 250);
    assert_eq!(
        pending.tasks().count(),
        250,
        "the report itself stays whole"
    );

    let text = err.to_string();
    assert!(text.starts_with("timed out: 250 pending; "), "{text}");
    assert_eq!(
        text.matches(" in group \"app\" (guard,").count(),
        LISTED,
        "{text}"
    );
    assert!(text.contains("\"job 99\""), "{text}");
    assert!(!text.contains("\"job 100\""), "{text}");
    assert!(text.ends_with("; and 150 more"), "{text}");

    let all = format!("{err:#}");
    assert_eq!(
        all.matches(" in group \"app\" (guard,").count(),
        250,
        "{all}"
    );
    assert!(!all.contains("more"), "{all}");
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn unrecorded_guards_count_as_what_they_stand_for() {
    // A recording group with 99 named guards, then a lean child with 500
    // unrecorded ones and a recording child with 10: the hundredth item is
    // the lean child's count, and "more" counts the work not listed.
    let root = WaitGroup::builder().name("root").build();
    let named: Vec<TaskGuard> = (0..99).map(|_| root.task().name("a").add()).collect();
    let lean = WaitGroup::builder()
        .name("lean")
        .record_guards(false)
        .build();
    root.link(&lean).unwrap();
    let unrecorded: Vec<TaskGuard> = (0..500).map(|_| lean.add()).collect();
    let late = WaitGroup::builder().name("late").build();
    root.link(&late).unwrap();
    let late_guards: Vec<TaskGuard> = (0..10).map(|_| late.add()).collect();

    let pending = root.pending();
    assert_eq!(pending.len(), 609);
    let text = pending.to_string();
    assert!(text.starts_with("609 pending; "), "{text}");
    assert!(
        text.contains("; 500 unrecorded guard(s) in group \"lean\""),
        "{text}"
    );
    assert!(!text.contains("\"late\""), "{text}");
    assert!(text.ends_with("; and 10 more"), "{text}");
    let all = format!("{pending:#}");
    assert_eq!(all.matches(" in group \"late\"").count(), 10, "{all}");
    drop((named, unrecorded, late_guards));
}

/// 200,000 aborted tasks print about what a hundred do, where listing every
/// one took 25 MB (and a million, 123 MB).
#[test]
fn many_aborted_tasks_print_a_screenful() {
    let tasks = 200_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (report, _held) = rt.block_on(unclean_shutdown(tasks, 0));
    assert_eq!(report.aborted().len(), tasks);
    let text = report.to_string();
    assert_eq!(lines_starting(&text, "  aborted: "), LISTED);
    assert!(text.lines().next().unwrap().contains(" 200,000 aborted, "));
    assert_eq!(text.lines().last(), Some("  and 199,900 more aborted"));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
}

/// Failures too: a tree of many groups keeps up to `max_errors` in each, so
/// a wait's error and a shutdown report list the first 100 and count the
/// rest (kept or only counted) in one line.
#[tokio::test]
async fn failures_are_listed_up_to_a_hundred_then_counted() {
    let root = WaitGroup::builder().name("root").max_errors(200).build();
    for i in 0..250 {
        root.task()
            .name(format!("job {i}"))
            .go(|_| async { Err::<(), _>("disk full") });
    }
    let err = root.wait().await.unwrap_err();
    assert_eq!(err.errors().len(), 200);
    assert_eq!(err.errors().total(), 250);
    let text = err.to_string();
    assert!(text.starts_with("250 tasks failed; 1) "), "{text}");
    assert!(text.contains("; 100) "), "{text}");
    assert!(!text.contains("; 101) "), "{text}");
    assert!(text.ends_with("; and 150 more failures"), "{text}");
    let all = format!("{err:#}");
    assert!(all.contains("; 200) ") && !all.contains("; 201) "), "{all}");
    assert!(all.ends_with("; and 50 more failures"), "{all}");

    let report = root.shutdown(Duration::from_secs(1)).await;
    let text = report.to_string();
    assert_eq!(lines_starting(&text, "  failed: "), LISTED, "{text}");
    assert_eq!(
        text.lines().last(),
        Some("  and 150 more failures"),
        "{text}"
    );
    let all = format!("{report:#}");
    assert_eq!(lines_starting(&all, "  failed: "), 200, "{all}");
    assert_eq!(all.lines().last(), Some("  and 50 more failures"), "{all}");
}

/// A shutdown's text has a line for a lean group's unrecorded guards, as a
/// `PendingReport` has: "7 still pending" with nothing below it said nothing
/// of where they are (found by a doc audit, `probe-docs` `b2`).
#[tokio::test(start_paused = true)]
async fn unrecorded_guards_have_their_line_in_a_shutdown_report() {
    let lean = WaitGroup::builder()
        .name("lean")
        .record_guards(false)
        .build();
    let held: Vec<TaskGuard> = (0..7).map(|_| lean.add()).collect();
    let one = WaitGroup::builder()
        .name("one")
        .record_guards(false)
        .build();
    let single = one.add();
    lean.link(&one).unwrap();
    let report = lean.shutdown(Duration::from_millis(10)).await;
    let text = report.to_string();
    let pending: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        pending,
        [
            "  pending: 7 unrecorded guards in group \"lean\"",
            "  pending: 1 unrecorded guard in group \"one\"",
        ],
        "{text}"
    );
    assert!(
        text.lines().next().unwrap().ends_with("8 still pending"),
        "{text}"
    );
    drop((held, single));
}

/// A failure whose message has several lines (an `assert_eq!` panic, an error
/// that lists) keeps them indented under its item: every line of the report
/// after the summary is an item (two spaces and a word) or a continuation
/// (four spaces). The panic's `left:` and `right:` lines read as items of
/// their own before.
#[tokio::test(start_paused = true)]
async fn a_failure_of_several_lines_stays_inside_its_item() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task().name("check").go(|_| async {
        assert_eq!(1 + 1, 3, "arithmetic");
    });
    wg.task()
        .name("load")
        .go(|_| async { Err::<(), _>("bad config:\n  line 3: no port\n") });
    wg.task().name("stuck").go(|_| std::future::pending::<()>());
    let report = wg.shutdown(Duration::from_secs(1)).await;
    let text = report.to_string();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("shutdown took "),
        "{text}"
    );
    let (mut items, mut continued) = (0, 0);
    for line in lines {
        if ["  failed: ", "  aborted: "]
            .iter()
            .any(|p| line.starts_with(p))
        {
            items += 1;
        } else {
            assert!(line.starts_with("    "), "{line:?} in\n{text}");
            continued += 1;
        }
    }
    // Two failures and one abort; the panic's `left` and `right`, and the
    // error's further line (its last line break is not written).
    assert_eq!((items, continued), (3, 3), "{text}");
    assert!(text.contains("\n      left: 2\n     right: 3"), "{text}");
}

/// A message that ends with a line break keeps what follows it on its line
/// (no line of four spaces, then ` (after the group was cancelled)` alone),
/// and a lone `\r`, which a terminal would use to write the rest over the
/// start of the item, and `\r\n` are line breaks like `\n`.
#[tokio::test(start_paused = true)]
async fn line_breaks_at_the_end_and_carriage_returns_stay_inside_their_item() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task().name("late").go(|ctx| async move {
        ctx.cancelled().await;
        panic!("boom\r\n");
    });
    wg.task().name("cr").go(|ctx| async move {
        ctx.cancelled().await;
        Err::<(), _>("hidden\rshown\r\nlast\n\n")
    });
    let report = wg.shutdown(Duration::from_secs(1)).await;
    let text = report.to_string();
    assert!(
        text.contains("panicked: boom (after the group was cancelled)"),
        "{text}"
    );
    assert!(
        text.contains("failed: hidden\n    shown\n    last (after the group was cancelled)"),
        "{text}"
    );
    assert!(!text.contains('\r'), "{text:?}");
}
