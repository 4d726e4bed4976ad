//! The accept loop of `taskgroup::http::serve` out of file descriptors
//! (`EMFILE`): it backs off and serves again once descriptors are free,
//! instead of ending the server. The scenario runs in a child process (this
//! test binary again, under `ulimit -Sn 64`), so the limit touches nothing
//! else.
#![cfg(unix)]

use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use taskgroup::WaitGroup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(15);
const CHILD: &str = "TASKGROUP_HTTP_EMFILE_CHILD";

#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_and_serves_again() {
    if std::env::var_os(CHILD).is_some() {
        return emfile_scenario();
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 64 && exec "$0" "$@""#)
        .arg(exe)
        .args([
            "--exact",
            "out_of_file_descriptors_the_accept_loop_backs_off_and_serves_again",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stdout.contains("hit EMFILE"), "{stdout}");
}

#[tokio::main(flavor = "current_thread")]
async fn emfile_scenario() {
    let group = WaitGroup::builder().name("http").build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    let accept = taskgroup::http::serve_router(&group, listener, router);

    // Connect until this process has no descriptor left: the connections
    // the server could not accept wait in the listener's backlog.
    let mut clients = Vec::new();
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => clients.push(stream),
            Err(e) if e.raw_os_error() == Some(24) => break, // EMFILE
            Err(e) => panic!("connect: {e}"),
        }
        assert!(clients.len() < 1000, "the descriptor limit did not apply");
    }
    println!("hit EMFILE after {} connections", clients.len());
    // Let the loop run into EMFILE and back off a few times (its pauses
    // start at 1 ms); nothing below depends on how many.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!accept.is_finished(), "the accept loop ended on EMFILE");
    let served = group.len() - 1; // all but the accept loop
    assert!(
        served < clients.len(),
        "{served} of {} served",
        clients.len()
    );

    // Free descriptors: the first half of the clients hang up (their
    // connections end on the server too). The last client, in the
    // backlog until now, is then accepted and answered.
    let mut last = clients.pop().unwrap();
    clients.truncate(clients.len() / 2);
    last.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    timeout(LIMIT, last.read_to_end(&mut response))
        .await
        .expect("answered within the limit")
        .expect("answered, not reset");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello"), "{response}");

    drop(clients);
    let report = group.shutdown(LIMIT).await;
    assert!(report.errors().is_empty(), "{report}");
    assert!(report.aborted().is_empty(), "{report}");
}
