//! The test kit (issue 15, point 7): a test that leaves work behind fails,
//! naming the leftover's creation site.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use taskgroup::testing::{assert_quiescent, check_quiescent, wait_quiescent, QuiescenceGuard};
use taskgroup::WaitGroup;

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => (*payload.downcast::<&str>().expect("a string payload")).to_owned(),
    }
}

#[tokio::test]
async fn a_clean_group_passes() {
    let wg = WaitGroup::builder().name("app").build();
    let check = QuiescenceGuard::new(&wg);
    let child = wg.task().name("jobs").child();
    child.task().name("job").go(|_| async {});
    let guard = wg.task().name("lease").add();
    guard.done();
    wg.wait().await.unwrap();
    assert_quiescent(&wg);
    assert!(check_quiescent(&wg).is_ok());
    drop(check); // checks, and passes
}

#[test]
fn a_leaked_guard_fails_the_guard_with_its_creation_site() {
    let wg = WaitGroup::builder().name("app").build();
    let (check, check_line) = (QuiescenceGuard::new(&wg), line!());
    let child = wg.task().name("jobs").child();
    let (leaked, leak_line) = (child.task().name("lease").add(), line!());

    let msg = message(catch_unwind(AssertUnwindSafe(|| drop(check))).unwrap_err());
    let leak_site = format!("tests/testing.rs:{leak_line}:");
    let check_site = format!("the QuiescenceGuard made at tests/testing.rs:{check_line}:");
    assert!(
        msg.starts_with(&format!(
            "group \"app\" {} is not quiescent: 1 pending",
            wg.id()
        )),
        "{msg}"
    );
    assert!(msg.contains(&check_site), "{msg}");
    assert!(
        msg.lines()
            .any(|l| l.contains("guard \"lease\" #1: running") && l.contains(&leak_site)),
        "{msg}"
    );
    assert!(
        msg.contains("group \"jobs\""),
        "the tree shows the group below: {msg}"
    );
    drop(leaked);
}

#[test]
#[should_panic(expected = "is not quiescent: 1 pending (checked at tests/testing.rs:")]
fn assert_quiescent_panics_with_the_tree() {
    let wg = WaitGroup::new();
    let _leaked = wg.add();
    assert_quiescent(&wg);
}

#[test]
fn a_failing_test_reports_its_own_panic_not_a_second_one() {
    let wg = WaitGroup::new();
    let _leaked = wg.add();
    // A second panic during unwinding would abort the whole test binary.
    let payload = catch_unwind(AssertUnwindSafe(|| {
        let _check = QuiescenceGuard::new(&wg);
        panic!("the test's own failure");
    }))
    .unwrap_err();
    assert_eq!(message(payload), "the test's own failure");
}

#[tokio::test(start_paused = true)]
async fn wait_quiescent_gives_cancelled_tasks_time_to_end() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task().name("slow to stop").go(|ctx| async move {
        ctx.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    wg.cancel();
    let err = check_quiescent(&wg).unwrap_err();
    assert_eq!(err.tree().len(), 1);
    assert_eq!(err.checked_at().file(), "tests/testing.rs");
    assert!(format!("{err:?}").contains("task \"slow to stop\" #1: running"));

    let stuck = wg.task().name("stuck").add();
    let err = wait_quiescent(&wg, Duration::from_secs(5))
        .await
        .unwrap_err();
    let names: Vec<_> = err.tree().tasks().map(|t| t.name()).collect();
    assert_eq!(names, [Some("stuck")], "the slow task ended within the 5 s");
    drop(stuck);
    wait_quiescent(&wg, Duration::MAX).await.unwrap();
}

#[test]
fn disarm_and_check_by_value() {
    let wg = WaitGroup::new();
    let leaked = wg.add();
    QuiescenceGuard::new(&wg).disarm();
    assert!(QuiescenceGuard::new(&wg).check().is_err());
    drop(leaked);
    QuiescenceGuard::new(&wg).check().unwrap();
}
