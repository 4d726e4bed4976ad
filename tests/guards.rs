//! Task guards: completion by `done()` or drop, ids, names and creation sites.

use std::collections::HashSet;
use std::time::Duration;

use taskgroup::{TaskGuard, TaskKind, WaitGroup};
use tokio_test::{assert_pending, assert_ready, task};

/// A server that creates its guard in `start()` and completes it in `close()`.
struct Server {
    listener: Option<TaskGuard>,
}

impl Server {
    fn start(wg: &WaitGroup) -> Self {
        Server {
            listener: Some(wg.task().name("listener").add()),
        }
    }
    fn close(&mut self) {
        self.listener.take().expect("started").done();
    }
}

#[test]
fn guard_completed_in_another_method() {
    let wg = WaitGroup::new();
    let mut server = Server::start(&wg);
    let mut wait = task::spawn(wg.wait());
    assert_pending!(wait.poll());
    assert_eq!(wg.len(), 1);

    server.close();
    assert!(wait.is_woken(), "the last done() must wake the waiter");
    assert!(assert_ready!(wait.poll()).is_ok());
    assert!(wg.is_empty());
}

#[test]
fn dropping_a_guard_completes_it() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    let mut wait = task::spawn(wg.wait());
    assert_pending!(wait.poll());
    drop(guard);
    assert!(wait.is_woken());
    assert!(assert_ready!(wait.poll()).is_ok());
}

#[test]
fn guard_completed_on_another_thread() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    std::thread::spawn(move || guard.done()).join().unwrap();
    assert!(wg.is_empty());
}

#[test]
fn ids_are_unique_and_increasing_within_a_group() {
    let wg = WaitGroup::new();
    let n = if cfg!(miri) { 100 } else { 1000 };
    let guards: Vec<_> = (0..n).map(|_| wg.add()).collect();
    let ids: HashSet<_> = guards.iter().map(|g| g.id()).collect();
    assert_eq!(ids.len(), n);
    assert!(guards.windows(2).all(|w| w[0].id() < w[1].id()));
    assert_eq!(guards[0].id().to_string(), "#1");
    // Ids keep increasing after guards complete: never reused.
    let last = guards.last().unwrap().id();
    drop(guards);
    assert!(wg.add().id() > last);
}

#[test]
fn ids_are_unique_across_threads() {
    let wg = WaitGroup::new();
    let per_thread = if cfg!(miri) { 50 } else { 500 };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let wg = wg.clone();
            std::thread::spawn(move || (0..per_thread).map(|_| wg.add()).collect::<Vec<_>>())
        })
        .collect();
    let guards: Vec<TaskGuard> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ids: HashSet<_> = guards.iter().map(|g| g.id()).collect();
    assert_eq!(ids.len(), 4 * per_thread);
    assert_eq!(wg.len(), 4 * per_thread);
}

#[test]
fn guard_belongs_to_its_group() {
    let a = WaitGroup::new();
    let b = WaitGroup::new();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.add().group_id(), a.id());
}

#[tokio::test]
async fn wait_on_a_group_that_never_had_work_returns_at_once() {
    let wg = WaitGroup::new();
    assert!(wg.is_empty());
    let mut wait = task::spawn(wg.wait());
    assert!(assert_ready!(wait.poll()).is_ok());
    // Also after work came and went, and when closed.
    wg.add().done();
    wg.close();
    assert!(wg.wait().await.is_ok());
    assert!(wg.wait_blocking().is_ok());
}

#[tokio::test(start_paused = true)]
async fn pending_report_names_guards_with_their_creation_site() {
    let wg = WaitGroup::builder().name("server").build();
    let line = line!() + 1;
    let _listener = wg.task().name("listener").add();
    let _anon = wg.add();
    tokio::time::advance(Duration::from_secs(3)).await;

    let report = wg.pending();
    assert_eq!(report.len(), 2);
    let tasks: Vec<_> = report.tasks().collect();
    assert_eq!(tasks[0].name(), Some("listener"));
    assert_eq!(tasks[0].kind(), TaskKind::Guard);
    assert_eq!(tasks[0].site().file(), file!());
    assert_eq!(tasks[0].site().line(), line);
    assert_eq!(tasks[0].age(), Duration::from_secs(3));
    assert_eq!(tasks[0].group_name(), Some("server"));
    assert_eq!(tasks[1].name(), None);
    let text = report.to_string();
    assert!(
        text.contains(
            "task \"listener\" #1 in group \"server\" (guard, created at tests/guards.rs:"
        ),
        "{text}"
    );
}

/// A lean group counts its guards without recording them, but a guard given
/// a name is recorded: naming it asks for it (the name is never dropped).
#[test]
fn lean_groups_count_guards_without_recording_them_unless_named() {
    let wg = WaitGroup::builder().record_guards(false).build();
    let named = wg.task().name("listener").add();
    let _b = wg.add();
    let _c = wg.add();
    assert_eq!(named.id().as_u64(), 1);
    let report = wg.pending();
    assert_eq!(report.len(), 3);
    let names: Vec<_> = report.tasks().map(|t| t.name()).collect();
    assert_eq!(names, [Some("listener")]);
    assert_eq!(report.groups()[0].unrecorded(), 2);
    assert!(
        report.to_string().contains("2 unrecorded guard(s)"),
        "{report}"
    );
}

#[test]
fn lean_guards_take_unique_ids_when_first_asked() {
    let wg = WaitGroup::builder().record_guards(false).build();
    let guards: Vec<_> = (0..64).map(|_| wg.add()).collect();
    // Ids are handed out on first request, in that order, and then stable.
    assert_eq!(guards[10].id().as_u64(), 1);
    assert_eq!(guards[3].id().as_u64(), 2);
    assert_eq!(guards[10].id().as_u64(), 1);
    // Threads racing to ask the same guards still agree, and ids stay unique.
    let guards = std::sync::Arc::new(guards);
    let seen: Vec<Vec<_>> = (0..4)
        .map(|_| {
            let guards = guards.clone();
            std::thread::spawn(move || guards.iter().map(|g| g.id()).collect())
        })
        .map(|t| t.join().unwrap())
        .collect();
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(seen[0].iter().collect::<HashSet<_>>().len(), 64);
}

#[test]
fn a_guard_is_two_words() {
    assert_eq!(
        std::mem::size_of::<TaskGuard>(),
        2 * std::mem::size_of::<usize>()
    );
}

#[test]
fn guard_debug_names_id_and_group() {
    let wg = WaitGroup::builder().name("db").build();
    let guard = wg.add();
    assert_eq!(
        format!("{guard:?}"),
        "TaskGuard { id: #1, group: group \"db\" }"
    );
}
