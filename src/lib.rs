//! taskgroup: start work, wait for it, close it cleanly.

pub mod service;
