//! Helpers for tests: fail, naming the creation sites, when a test leaves a
//! guard or a task behind.
//!
//! A test that forgets a [`TaskGuard`](crate::TaskGuard) in a struct, or
//! leaves a `go()` task running, passes today and hangs a shutdown in
//! production. These helpers check that a group and every group below it are
//! **quiescent** (nothing pending) and, when they are not, fail with the
//! [task tree](crate::dump), which names each leftover's creation site:
//!
//! * [`assert_quiescent`] panics now; [`check_quiescent`] returns the same as
//!   a `Result`;
//! * [`wait_quiescent`] first gives the work a bounded time to finish (tasks
//!   that were just cancelled need a moment to end);
//! * a [`QuiescenceGuard`] checks when it goes out of scope, so a test
//!   cannot forget to.
//!
//! Failures recorded by the groups are not checked: look at
//! [`WaitGroup::errors`] for those.
//!
//! # Examples
//!
//! ```
//! use taskgroup::testing::QuiescenceGuard;
//! use taskgroup::WaitGroup;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let wg = WaitGroup::builder().name("app").build();
//! let _check = QuiescenceGuard::new(&wg); // checked when the test ends
//! wg.task().name("job").go(|_| async {});
//! wg.wait().await.unwrap();
//! # }
//! ```
//!
//! A leftover fails the test with the tree:
//!
//! ```text
//! group "app" #1 is not quiescent: 1 pending (checked by the QuiescenceGuard made at tests/api.rs:12:18)
//! task tree: 1 group, 1 pending
//! group "app" #1 (open): 1 pending
//!   guard "lease" #2: running, age 0.0ns, created at tests/api.rs:14:21
//! ```

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use crate::dump::TaskTree;
use crate::WaitGroup;

/// Work left pending where none was expected; from [`check_quiescent`],
/// [`wait_quiescent`] and [`QuiescenceGuard::check`].
///
/// `Display` (and `Debug`, for `unwrap` and a test's `Result`) reads: the
/// group, the pending count, where the check was made, then the task tree.
#[derive(Clone)]
pub struct NotQuiescent {
    tree: TaskTree,
    checked_at: &'static Location<'static>,
    by_guard: bool,
}

impl NotQuiescent {
    /// The tree when the check was made.
    pub fn tree(&self) -> &TaskTree {
        &self.tree
    }

    /// Where the check was made: the caller of the function, or where the
    /// [`QuiescenceGuard`] was made.
    pub fn checked_at(&self) -> &'static Location<'static> {
        self.checked_at
    }
}

impl fmt::Display for NotQuiescent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(root) = self.tree.groups().first() {
            match root.name() {
                Some(name) => write!(f, "group {name:?} {}", root.id())?,
                None => write!(f, "group {}", root.id())?,
            }
        }
        write!(f, " is not quiescent: {} pending ", self.tree.len())?;
        if self.by_guard {
            write!(
                f,
                "(checked by the QuiescenceGuard made at {})",
                self.checked_at
            )?;
        } else {
            write!(f, "(checked at {})", self.checked_at)?;
        }
        write!(f, "\n{}", self.tree)
    }
}

impl fmt::Debug for NotQuiescent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotQuiescent {}

fn check(
    wg: &WaitGroup,
    checked_at: &'static Location<'static>,
    by_guard: bool,
) -> Result<(), NotQuiescent> {
    let tree = wg.dump();
    if tree.is_empty() {
        Ok(())
    } else {
        Err(NotQuiescent {
            tree,
            checked_at,
            by_guard,
        })
    }
}

/// `Ok` if nothing is pending in `wg` or any group below it, else the tree.
///
/// # Errors
///
/// [`NotQuiescent`], naming every leftover's creation site.
#[track_caller]
pub fn check_quiescent(wg: &WaitGroup) -> Result<(), NotQuiescent> {
    check(wg, Location::caller(), false)
}

/// Panics, with the task tree, if anything is pending in `wg` or any group
/// below it.
///
/// # Panics
///
/// If work is pending: the message names the group, this call's site and
/// every leftover's creation site.
#[track_caller]
pub fn assert_quiescent(wg: &WaitGroup) {
    if let Err(err) = check(wg, Location::caller(), false) {
        panic!("{err}");
    }
}

/// Waits up to `timeout` (on Tokio's clock; `Duration::MAX` means no limit)
/// for `wg` and every group below it to be quiescent, then checks.
/// Failures the groups recorded do not matter here.
///
/// The site reported is this call's (it is taken when the future is made).
/// Called from a `go()` task of the tree, it does not wait: that task is
/// pending itself, so [`wait`](WaitGroup::wait) refuses at once
/// ([`WaitError::WaitFromOwnTask`](crate::WaitError::WaitFromOwnTask)), and
/// the check that follows names it among the leftovers.
///
/// # Errors
///
/// [`NotQuiescent`] if work is still pending at the timeout (or at once,
/// from one of the tree's tasks).
///
/// # Cancel safety
///
/// Cancel safe: it only waits.
#[track_caller]
pub fn wait_quiescent(
    wg: &WaitGroup,
    timeout: Duration,
) -> impl Future<Output = Result<(), NotQuiescent>> + '_ {
    let site = Location::caller();
    async move {
        // `timeout` saturates: an unrepresentable deadline means none.
        let _ = tokio::time::timeout(timeout, wg.wait()).await;
        check(wg, site, false)
    }
}

/// Checks that its group is quiescent when it goes out of scope, and panics
/// (failing the test) with the task tree if it is not.
///
/// If the thread is already panicking (the test failed for another reason)
/// it checks nothing, so a failing test reports its own panic instead of
/// aborting on a second one. [`check`](Self::check) checks now, by value,
/// and [`disarm`](Self::disarm) gives up the check.
///
/// # Panics
///
/// On drop, if work is pending in the group or any group below it: the
/// message names where the guard was made and every leftover's creation
/// site.
#[must_use = "the check runs when the guard is dropped: bind it with `let _check = ...`"]
pub struct QuiescenceGuard {
    wg: WaitGroup,
    site: &'static Location<'static>,
    armed: bool,
}

impl QuiescenceGuard {
    /// A guard over `wg` (a clone of the handle is kept).
    #[track_caller]
    pub fn new(wg: &WaitGroup) -> Self {
        QuiescenceGuard {
            wg: wg.clone(),
            site: Location::caller(),
            armed: true,
        }
    }

    /// Checks now, instead of on drop.
    ///
    /// # Errors
    ///
    /// [`NotQuiescent`] if work is pending.
    pub fn check(mut self) -> Result<(), NotQuiescent> {
        self.armed = false;
        check(&self.wg, self.site, true)
    }

    /// Gives up the check.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for QuiescenceGuard {
    fn drop(&mut self) {
        if !self.armed || std::thread::panicking() {
            return;
        }
        if let Err(err) = check(&self.wg, self.site, true) {
            panic!("{err}");
        }
    }
}

impl fmt::Debug for QuiescenceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuiescenceGuard")
            .field("group", &self.wg.id())
            .field("site", &format_args!("{}", self.site))
            .field("armed", &self.armed)
            .finish()
    }
}
