//! The synchronisation primitives the core state machine is built on.
//!
//! Under `--cfg loom` these are loom's model-checked types; otherwise they are
//! `std` atomics and `parking_lot` locks. [`crate::state`] and
//! [`crate::event`] use this module, so those two files, with the
//! reference counting in [`crate::shared`] built on them, are what the loom
//! models check; [`crate::node`] uses it for what a child leaving its parent
//! races on (the user count, the links and their lock).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};

    /// Blocks on `condvar` until notified, or until `deadline` passes.
    /// Returns the guard and whether the deadline passed.
    pub(crate) fn wait<'a, T>(
        condvar: &Condvar,
        mut guard: MutexGuard<'a, T>,
        deadline: Option<std::time::Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        let timed_out = match deadline {
            None => {
                condvar.wait(&mut guard);
                false
            }
            Some(deadline) => condvar.wait_until(&mut guard, deadline).timed_out(),
        };
        (guard, timed_out)
    }
}

#[cfg(loom)]
mod imp {
    /// `parking_lot`-shaped wrapper over loom's mutex (no poisoning).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
    }

    /// `parking_lot`-shaped wrapper over loom's condition variable.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// Loom has no clock, so a deadline cannot pass: every wait is untimed.
    pub(crate) fn wait<'a, T>(
        condvar: &Condvar,
        guard: MutexGuard<'a, T>,
        _deadline: Option<std::time::Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        (condvar.0.wait(guard).unwrap(), false)
    }
}

pub(crate) use imp::*;
