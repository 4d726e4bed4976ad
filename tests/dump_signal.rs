//! The dump on SIGUSR1 (issue 15, point 5), in a test binary of its own: the
//! signal is raised in this process, and must find the handler registered.
#![cfg(unix)]

use std::io::Write;
use std::time::Duration;

use taskgroup::dump::{self, Sink};
use taskgroup::WaitGroup;
use tokio::sync::mpsc;

/// A writer that hands each write to the test.
struct Chunks(mpsc::UnboundedSender<Vec<u8>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.send(Vec::new()); // a flush ends one dump
        Ok(())
    }
}

/// Everything written up to the next flush.
async fn next_dump(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> String {
    let mut text = Vec::new();
    loop {
        // A generous bound: the dump runs as soon as the signal is seen.
        let chunk = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a dump within 30 s")
            .expect("the sink is alive");
        if chunk.is_empty() {
            return String::from_utf8(text).unwrap();
        }
        text.extend(chunk);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_writes_the_tree_each_time_until_stopped() {
    let wg = WaitGroup::builder().name("app").build();
    let child = wg.task().name("http").child();
    let conn = child.task().name("conn 1").add();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let dumping = dump::on_signal(&wg, Sink::writer(Chunks(tx))).unwrap();

    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    let first = next_dump(&mut rx).await;
    assert!(
        first.starts_with("task tree: 2 groups, 1 pending\n"),
        "{first}"
    );
    assert!(first.contains("guard \"conn 1\" #1: running"), "{first}");
    assert!(first.ends_with('\n'));

    // The dump is live: the next signal sees the change.
    drop(conn);
    let _second = wg.task().name("late").add();
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    let second = next_dump(&mut rx).await;
    assert!(second.contains("guard \"late\" #"), "{second}");
    assert!(!second.contains("conn 1"), "{second}");

    // Stopped: the task ends and drops the sink (the channel closes), and a
    // signal no longer kills the process or writes anything.
    dumping.stop();
    assert!(tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the sink is dropped")
        .is_none());
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    // Not in the group: only "late" is pending there.
    assert_eq!(wg.len(), 1);
}
