//! Loom models of a member's end against its container's `Drop` (`crate::service::exit`):
//! the member's future ends (returns, panics, or is dropped by an abort) on one thread
//! while the container leaves the report of that end to it on another. In every
//! interleaving the end is reported exactly once: by the container if the run had ended
//! when it looked, else by the member, through the heir; a panic's message is there for
//! whichever reports it.

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use super::loom_models::model;
use crate::service::exit::{Exit, Heir, DROPPED, PANICKED, RETURNED};
use crate::service::runner::End;

/// An heir that counts its calls, and checks it is given `expect`'s kind of end.
fn counting(reports: &Arc<AtomicUsize>, panicked: bool) -> Heir {
    let reports = reports.clone();
    Box::new(move |end: End| {
        assert_eq!(matches!(end, End::Panic(_)), panicked);
        reports.fetch_add(1, Ordering::Relaxed);
    })
}

/// The member ends `how` on one thread (calling the heir it is handed back, as
/// `MemberRun` does), `leavers` containers leave the report on others; the end is reported
/// once.
fn ends_once(how: u8, leavers: usize) {
    let exit = Arc::new(Exit::new());
    let reports = Arc::new(AtomicUsize::new(0));
    let member = {
        let exit = exit.clone();
        thread::spawn(move || {
            if how == PANICKED {
                *exit.panic.lock() = Some("boom".to_owned());
            }
            if let Some(heir) = exit.ended(how) {
                let end = match how {
                    PANICKED => End::Panic(exit.panic.lock().take().unwrap()),
                    _ => End::Done,
                };
                heir(end);
            }
        })
    };
    let leavers: Vec<_> = (0..leavers)
        .map(|_| {
            let (exit, reports) = (exit.clone(), reports.clone());
            thread::spawn(move || {
                if let Some(ended) = exit.leave(counting(&reports, how == PANICKED)) {
                    assert_eq!(ended & (RETURNED | PANICKED | DROPPED), how);
                    if how == PANICKED {
                        // Set before the end: there for the leaver that reports it.
                        assert_eq!(exit.panic.lock().as_deref(), Some("boom"));
                    }
                    reports.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    member.join().unwrap();
    for leaver in leavers {
        leaver.join().unwrap();
    }
    assert_eq!(reports.load(Ordering::Relaxed), 1);
}

#[test]
fn loom_exit_a_return_is_reported_once() {
    model("exit: returned vs left", || ends_once(RETURNED, 1));
}

#[test]
fn loom_exit_a_panic_is_reported_once_with_its_message() {
    model("exit: panicked vs left", || ends_once(PANICKED, 1));
}

#[test]
fn loom_exit_an_abort_is_reported_once() {
    model("exit: dropped vs left", || ends_once(DROPPED, 1));
}

/// Two leavers (a run's `Drop` and its abort's, say): the first one's heir, or one of
/// them, reports; never both, never none.
#[test]
fn loom_exit_two_leavers_report_once() {
    model("exit: returned vs two left", || ends_once(RETURNED, 2));
}
