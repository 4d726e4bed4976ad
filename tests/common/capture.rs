//! [`Capture`]: what a `tracing_subscriber::fmt` subscriber writes, kept in
//! memory for a test to read.
//!
//! A test file declares the `common` modules it uses, one per concern:
//! `mod common { pub(crate) mod capture; }` (a test file is a crate root, so
//! the path is `tests/common/capture.rs`). No `tests/common/mod.rs` lists them
//! all, so no file compiles helpers it does not use and none needs
//! `allow(dead_code)`.

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// A writer that appends to a shared buffer, and the subscriber's
/// [`MakeWriter`] for it: pass a clone to `with_writer`, read
/// [`text`](Capture::text) afterwards.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}
