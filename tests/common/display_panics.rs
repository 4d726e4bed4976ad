//! An error whose `Display` panics: the crate must never format a task's
//! error itself (only the caller's formatting of a report or an error runs
//! it). Tests return it from a task or a service and check that waits,
//! shutdowns and restarts get through.

/// An error whose `Display` panics.
#[derive(Debug)]
pub(crate) struct DisplayPanics;

impl std::fmt::Display for DisplayPanics {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Display panicked")
    }
}

impl std::error::Error for DisplayPanics {}
