//! The dump on SIGUSR1 as a `tracing` event (issue 15, point 5), in a test
//! binary of its own (the signal is process-wide).
#![cfg(all(unix, feature = "tracing"))]

use std::io::Write;
use std::time::Duration;

use taskgroup::dump::{self, Sink};
use taskgroup::WaitGroup;
use tokio::sync::mpsc;

/// A subscriber's writer that hands each write to the test.
#[derive(Clone)]
struct Lines(mpsc::UnboundedSender<String>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the dumping task emits on the thread whose default subscriber
// is set below.
#[tokio::test(flavor = "current_thread")]
async fn sigusr1_emits_one_event_with_counts_and_the_tree() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let writer = Lines(tx);
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let wg = WaitGroup::builder().name("app").build();
    let _held = wg.task().name("held").add();
    let _dumping = dump::on_signal(&wg, Sink::tracing()).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event within 30 s")
        .unwrap();
    assert!(event.contains("taskgroup::dump"), "{event}");
    assert!(event.contains("groups=1 pending=1"), "{event}");
    assert!(
        event.contains("task tree: 1 group, 1 pending\ngroup \"app\""),
        "{event}"
    );
    assert!(event.contains("guard \"held\" #1: running"), "{event}");
}
