//! Linked groups: waits cover children in order, errors are tagged, cycles refused.

use taskgroup::{LinkError, WaitGroup};
use tokio_test::{assert_pending, assert_ready, task};

#[test]
fn a_parent_waits_for_its_own_work_then_each_linked_group() {
    let parent = WaitGroup::builder().name("parent").build();
    let a = WaitGroup::builder().name("a").build();
    let b = parent.task().name("b").child();
    parent.link(&a).unwrap();
    let own = parent.add();
    let in_a = a.add();
    let in_b = b.add();

    // The report lists groups in the order the wait visits them.
    let order: Vec<_> = parent
        .pending()
        .groups()
        .iter()
        .map(|g| g.group_name().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["parent", "b", "a"]);

    let mut wait = task::spawn(parent.wait());
    assert_pending!(wait.poll());
    drop(own);
    assert_pending!(wait.poll(), "child b is still busy");
    drop(in_b);
    assert_pending!(wait.poll(), "linked a is still busy");
    drop(in_a);
    assert!(assert_ready!(wait.poll()).is_ok());
}

#[test]
fn work_added_to_an_earlier_group_while_waiting_on_a_later_one_is_covered() {
    let parent = WaitGroup::new();
    let child = parent.child();
    let in_child = child.add();
    let mut wait = task::spawn(parent.wait());
    assert_pending!(wait.poll());
    // The wait has moved on to the child; new work appears in the parent.
    let late = parent.add();
    drop(in_child);
    assert_pending!(wait.poll(), "the parent's new work must be waited for");
    drop(late);
    assert!(assert_ready!(wait.poll()).is_ok());
}

#[tokio::test]
async fn a_childs_errors_are_reported_by_the_parent_tagged_with_the_child() {
    let parent = WaitGroup::builder().name("server").build();
    let db = parent.task().name("db").child();
    parent
        .task()
        .name("http")
        .go(|_| async { Err::<(), _>("bad request") });
    db.task()
        .name("pool")
        .go(|_| async { Err::<(), _>("connection lost") });
    let err = parent.wait().await.unwrap_err();
    let lines: Vec<_> = err.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        [
            "task \"http\" #1 in group \"server\" failed: bad request",
            "task \"pool\" #1 in group \"db\" failed: connection lost",
        ]
    );
    // The child's own wait sees only its own failures.
    assert_eq!(db.wait().await.unwrap_err().errors().len(), 1);
}

#[test]
fn self_links_cycles_and_duplicates_are_refused() {
    let a = WaitGroup::new();
    let b = WaitGroup::new();
    let c = WaitGroup::new();
    assert_eq!(a.link(&a), Err(LinkError::SelfLink { group: a.id() }));
    a.link(&b).unwrap();
    b.link(&c).unwrap();
    assert_eq!(
        c.link(&a),
        Err(LinkError::Cycle {
            parent: c.id(),
            child: a.id()
        })
    );
    assert_eq!(
        b.link(&a),
        Err(LinkError::Cycle {
            parent: b.id(),
            child: a.id()
        })
    );
    assert_eq!(
        a.link(&b),
        Err(LinkError::AlreadyLinked {
            parent: a.id(),
            child: b.id()
        })
    );
    let child = a.child();
    assert!(matches!(child.link(&a), Err(LinkError::Cycle { .. })));
    let message = c.link(&a).unwrap_err().to_string();
    assert!(message.contains("would create a cycle"), "{message}");
    // Refused links changed nothing: waiting terminates.
    let _ = a.wait_blocking();
}

#[test]
fn concurrent_opposite_links_never_both_succeed() {
    let rounds = if cfg!(miri) { 20 } else { 200 };
    for _ in 0..rounds {
        let a = WaitGroup::new();
        let b = WaitGroup::new();
        let (a2, b2) = (a.clone(), b.clone());
        let t = std::thread::spawn(move || a2.link(&b2).is_ok());
        let here = b.link(&a).is_ok();
        let there = t.join().unwrap();
        assert!(
            here ^ there,
            "exactly one of two opposite links may succeed"
        );
    }
}

#[test]
fn a_group_can_be_linked_under_several_parents() {
    let p1 = WaitGroup::new();
    let p2 = WaitGroup::new();
    let shared = WaitGroup::builder().name("shared").build();
    p1.link(&shared).unwrap();
    p2.link(&shared).unwrap();
    let top = WaitGroup::new();
    top.link(&p1).unwrap();
    top.link(&p2).unwrap();
    let guard = shared.add();
    // Reported once even though it is reachable twice.
    assert_eq!(top.pending().len(), 1);
    let mut w1 = task::spawn(p1.wait());
    let mut w2 = task::spawn(p2.wait());
    let mut wt = task::spawn(top.wait());
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    assert_pending!(wt.poll());
    drop(guard);
    assert!(assert_ready!(w1.poll()).is_ok());
    assert!(assert_ready!(w2.poll()).is_ok());
    assert!(assert_ready!(wt.poll()).is_ok());
    assert_eq!(p1.linked().len(), 1);
}

/// A `child()` is linked once: linking it again is refused, `unlink` finds
/// it by its own key, and once unlinked it can be linked again (then by
/// `link`'s own record), under this parent only.
#[test]
fn a_child_is_found_by_its_key_and_a_link_by_its_id() {
    let parent = WaitGroup::new();
    let other = WaitGroup::new();
    let child = parent.child();
    assert_eq!(
        parent.link(&child),
        Err(LinkError::AlreadyLinked {
            parent: parent.id(),
            child: child.id()
        })
    );
    assert!(!other.unlink(&child), "not linked there");
    assert!(parent.unlink(&child));
    assert!(!parent.unlink(&child));
    assert!(parent.linked().is_empty());
    parent.link(&child).unwrap();
    other.link(&child).unwrap();
    assert!(matches!(
        parent.link(&child),
        Err(LinkError::AlreadyLinked { .. })
    ));
    assert_eq!(parent.linked().len(), 1);
    assert!(parent.unlink(&child));
    assert!(!parent.unlink(&child));
    assert!(other.unlink(&child));
}

/// Linking and unlinking 40,000 groups under one parent is linear: each
/// link used to scan every link before it for a duplicate, and each unlink
/// to scan for its group (quadratic: 0.75 s and 0.6 s in a release build at
/// 40,000, where they now take 8 ms and 6 ms; the bound below is for a
/// loaded debug build).
#[test]
fn linking_and_unlinking_many_groups_is_linear() {
    let n = if cfg!(miri) { 200 } else { 40_000 };
    let parent = WaitGroup::new();
    let groups: Vec<WaitGroup> = (0..n).map(|_| WaitGroup::new()).collect();
    let started = std::time::Instant::now();
    for group in &groups {
        parent.link(group).unwrap();
    }
    assert_eq!(parent.linked().len(), n);
    assert!(matches!(
        parent.link(&groups[n / 2]),
        Err(LinkError::AlreadyLinked { .. })
    ));
    for group in groups.iter().rev() {
        assert!(parent.unlink(group));
    }
    assert!(parent.linked().is_empty());
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

/// Linking below a group that no other group holds does not look for a cycle
/// in what is linked: none can close through a group nothing reaches. A
/// chain built bottom up (each new group linked above the top) and fresh
/// groups each linking one shared group with many below it (a request group
/// linking the database's) used to walk everything below the linked group,
/// under the process-wide link lock: quadratic, 23 s for a 20,000-group chain
/// built bottom up in a release build (0.4 ms a link to a shared group with
/// 10,000 below it). The bound below is for a loaded debug build. Cycles are
/// still found wherever a group may be held by another.
#[test]
fn linking_above_a_large_subtree_does_not_walk_it() {
    let n = if cfg!(miri) { 100 } else { 20_000 };
    let started = std::time::Instant::now();

    // Bottom up: the new top is held by nothing when it links the old one.
    let bottom = WaitGroup::new();
    let mut top = bottom.clone();
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        let above = WaitGroup::new();
        above.link(&top).unwrap();
        chain.push(top);
        top = above;
    }
    assert!(matches!(bottom.link(&top), Err(LinkError::Cycle { .. })));
    assert!(matches!(
        chain[n / 2].link(&top),
        Err(LinkError::Cycle { .. })
    ));

    // A shared group with `n` below it, linked by `n` fresh groups.
    let db = WaitGroup::new();
    let below: Vec<WaitGroup> = (0..n).map(|_| db.child()).collect();
    let requests: Vec<WaitGroup> = (0..n).map(|_| WaitGroup::new()).collect();
    for request in &requests {
        request.link(&db).unwrap();
    }
    // A `child()` is held by its parent, and `db` now by every request.
    assert!(matches!(below[0].link(&db), Err(LinkError::Cycle { .. })));
    assert!(matches!(
        db.link(&requests[0]),
        Err(LinkError::Cycle { .. })
    ));
    // Once a request lets go of it, `db` may hold that request, which then
    // may not link `db` again.
    assert!(requests[1].unlink(&db));
    db.link(&requests[1]).unwrap();
    assert!(matches!(
        requests[1].link(&db),
        Err(LinkError::Cycle { .. })
    ));

    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}
