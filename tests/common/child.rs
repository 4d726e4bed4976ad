//! Scenarios run in a child process: the test binary re-executed with a
//! filter for one `child_*` test and an environment variable naming it.
//! Without the variable a `child_*` test does nothing, so the scenario (and
//! any signal it sends to itself) never runs in the main test process.
//!
//! A parent test calls [`run_child`] and asserts on the [`Output`]; the
//! `child_*` test starts with `if !is_child("child_x") { return; }`.
//!
//! A test file declares the `common` modules it uses, one per concern:
//! `mod common { pub(crate) mod child; }` (a test file is a crate root, so
//! the path is `tests/common/child.rs`). No `tests/common/mod.rs` lists them
//! all, so no file compiles helpers it does not use and none needs
//! `allow(dead_code)`.

use std::process::{Command, Output};

/// The environment variable that tells a re-executed test binary which
/// `child_*` test is the scenario to run.
const CHILD: &str = "TASKGROUP_TEST_CHILD";

/// Runs the test `test` of this binary in a child process, alone and with
/// its output not captured, and waits for it.
pub(crate) fn run_child(test: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap()
}

/// Whether this process is the child [`run_child`] started for `test`.
pub(crate) fn is_child(test: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(test)
}

/// Sends `signal` (a `kill` option: `-TERM`, `-INT`) to this process.
pub(crate) fn kill_self(signal: &str) {
    let status = Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A current-thread runtime with IO and time, for a child's scenario.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
