//! With the `tokio-console` feature and `--cfg tokio_unstable`, a task's
//! name reaches tokio's own `runtime.spawn` span, which tokio-console shows.
//! CI runs it: `RUSTFLAGS="--cfg tokio_unstable" cargo test --features
//! tokio-console,tracing --test console_names`.
#![cfg(all(tokio_unstable, feature = "tokio-console", feature = "tracing"))]

use taskgroup::WaitGroup;
use tracing_subscriber::fmt::format::FmtSpan;

mod common {
    pub(crate) mod capture;
}
use common::capture::Capture;

#[test]
fn named_tasks_are_named_for_tokio_console() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wg = WaitGroup::new();
        wg.task().name("conn 10.0.0.1:4000").go(|_| async {});
        wg.wait().await.unwrap();
    });
    let text = capture.text();
    assert!(
        text.contains("runtime.spawn") && text.contains("task.name=\"conn 10.0.0.1:4000\""),
        "{text}"
    );
}
