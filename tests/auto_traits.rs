//! The auto traits the public types promise.

use std::future::Future;

use taskgroup::{
    Closed, GroupId, LinkError, PendingReport, ShutdownReport, TaskError, TaskErrors, TaskGuard,
    TaskId, TaskInfo, WaitError, WaitGroup, WaitGroupBuilder,
};

fn send_sync_static<T: Send + Sync + Unpin + 'static>() {}
fn send_future<F: Future + Send>(_: F) {}

#[test]
fn public_types_are_send_sync_unpin_static() {
    send_sync_static::<WaitGroup>();
    send_sync_static::<TaskGuard>();
    send_sync_static::<WaitGroupBuilder>();
    send_sync_static::<TaskId>();
    send_sync_static::<GroupId>();
    send_sync_static::<TaskError>();
    send_sync_static::<TaskErrors>();
    send_sync_static::<WaitError>();
    send_sync_static::<PendingReport>();
    send_sync_static::<TaskInfo>();
    send_sync_static::<ShutdownReport>();
    send_sync_static::<Closed>();
    send_sync_static::<LinkError>();
}

#[test]
fn wait_futures_are_send() {
    let wg = WaitGroup::new();
    send_future(wg.wait());
    send_future(wg.wait_timeout(std::time::Duration::ZERO));
    send_future(wg.shutdown(std::time::Duration::ZERO));
    send_future(wg.cancelled());
}

#[test]
fn handles_are_unwind_safe() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    unwind_safe::<WaitGroup>();
    unwind_safe::<TaskGuard>();
    unwind_safe::<taskgroup::TaskContext>();
}

#[test]
fn wait_group_is_clone_and_default() {
    fn clone_default<T: Clone + Default>() {}
    clone_default::<WaitGroup>();
}

#[test]
fn errors_are_std_errors() {
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<TaskError>();
    error::<TaskErrors>();
    error::<WaitError>();
    error::<Closed>();
    error::<LinkError>();
}
