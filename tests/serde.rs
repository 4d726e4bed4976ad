//! The `serde` feature's JSON (issue 14, point 5), checked against the shapes
//! documented on the types: the documentation's JSON blocks are read from the
//! sources here, so a field renamed in one and not the other fails.
#![cfg(feature = "serde")]

use std::time::Duration;

use serde_json::{json, Value};
use taskgroup::service::{ServiceState, StatusHub};
use taskgroup::WaitGroup;

/// The first ```` ```json ```` block after `anchor` (a doc heading)
/// in `file` (relative to the crate root).
fn documented(file: &str, anchor: &str) -> Value {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(&path).unwrap();
    let start = source
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} in {file}"));
    let mut lines = source[start..].lines().map(|l| {
        let l = l.trim_start();
        l.strip_prefix("///").unwrap_or(l).trim_start().to_owned()
    });
    lines
        .by_ref()
        .find(|l| l == "```json")
        .expect("a json block");
    let text: Vec<String> = lines.take_while(|l| l != "```").collect();
    serde_json::from_str(&text.join("\n")).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A value's shape: the same keys, with each leaf replaced by its JSON type
/// (numbers as "u64" when they fit, as every number here must), arrays by
/// the shape of their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_u64() => json!("u64"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

fn site_of(v: &Value) -> &str {
    v["site"].as_str().unwrap()
}

/// A site string is `file:line:col` with this test file and numbers.
fn assert_site(site: &str) {
    let mut parts = site.rsplitn(3, ':');
    let (col, line, file) = (parts.next(), parts.next(), parts.next());
    assert!(col.unwrap().parse::<u32>().is_ok(), "{site}");
    assert!(line.unwrap().parse::<u32>().is_ok(), "{site}");
    assert_eq!(file, Some("tests/serde.rs"), "{site}");
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_report_has_the_documented_shape() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task()
        .name("fetch")
        .go(|_| async { Err::<(), _>(FetchFailed(std::io::Error::other("disk full"))) });
    wg.task().name("stuck").go(|_| std::future::pending::<()>());
    let lease = wg.task().name("lease").add();
    tokio::task::yield_now().await; // "fetch" fails
    let report = wg.shutdown(Duration::from_secs(2)).await;
    let value = serde_json::to_value(&report).unwrap();
    drop(lease);

    let doc = documented("src/report.rs", "/// # Serialization");
    // The doc names the wrong struct if this anchor ever moves: check it is
    // the report's block by a field only it has.
    assert!(doc.get("elapsed_ms").is_some());
    assert_eq!(shape(&value), shape(&doc), "{value:#}");

    // The values, as the report holds them.
    assert_eq!(value["clean"], json!(false));
    assert_eq!(
        value["elapsed_ms"],
        json!(report.elapsed().as_millis() as u64)
    );
    assert!(value["elapsed_ms"].as_u64().unwrap() >= 2000);
    assert_eq!(value["finished"], json!(report.finished()));
    let aborted = &value["aborted"][0];
    assert_eq!(aborted["name"], json!("stuck"));
    assert_eq!(aborted["id"], json!(2));
    assert_eq!(aborted["kind"], json!("task"));
    assert_eq!(aborted["age_ms"], json!(2000));
    assert_eq!(aborted["group_id"], json!(wg.id().as_u64()));
    assert_eq!(aborted["group_name"], json!("app"));
    assert_site(site_of(aborted));
    assert_eq!(site_of(aborted), report.aborted()[0].site().to_string());
    let pending = &value["pending"];
    assert_eq!(pending["pending"], json!(1));
    assert_eq!(pending["groups"][0]["tasks"][0]["name"], json!("lease"));
    assert_eq!(pending["groups"][0]["tasks"][0]["kind"], json!("guard"));
    let errors = &value["errors"];
    assert_eq!(
        (errors["total"].clone(), errors["dropped"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        errors["errors"][0],
        json!({"id": 1, "name": "fetch", "group_id": wg.id().as_u64(), "group_name": "app",
               "kind": "error", "message": "fetch failed", "causes": ["disk full"],
               "secondary": false})
    );
}

#[derive(Debug, thiserror::Error)]
#[error("fetch failed")]
struct FetchFailed(#[source] std::io::Error);

/// A failure after its group was cancelled is `secondary`, as
/// `TaskError::is_secondary` says; a panic has no causes. (Both were left
/// out of the JSON: `probe-api`.)
#[tokio::test]
async fn a_secondary_failure_and_a_panic_say_so() {
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.task()
        .name("db")
        .go(|_| async { Err::<(), _>("connection refused") });
    wg.task().name("api").go(|ctx| async move {
        ctx.cancelled().await;
        Err::<(), _>("request aborted")
    });
    wg.task().name("worker").go(|ctx| async move {
        ctx.cancelled().await;
        panic!("worker gave up")
    });
    let errors = wg.wait().await.unwrap_err().errors().clone();
    let value = serde_json::to_value(&errors).unwrap();
    let by_name = |name: &str| {
        value["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == json!(name))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("db")["secondary"], json!(false));
    assert_eq!(by_name("api")["secondary"], json!(true));
    let worker = by_name("worker");
    assert_eq!(
        (&worker["kind"], &worker["secondary"], &worker["causes"]),
        (&json!("panic"), &json!(true), &json!([]))
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_report_has_the_documented_shape_with_nulls_for_no_name() {
    let wg = WaitGroup::builder().name("w").build();
    let _named = wg.task().name("named").add();
    let _anonymous = wg.add();
    tokio::time::advance(Duration::from_millis(1500)).await;
    let value = serde_json::to_value(wg.pending()).unwrap();
    let doc = documented("src/report.rs", "/// # Serialization");
    assert_eq!(
        shape(&value["groups"][0]),
        shape(&doc["pending"]["groups"][0])
    );
    assert_eq!(value["pending"], json!(2));
    let group = &value["groups"][0];
    assert_eq!(group["tasks"][1]["name"], Value::Null);
    assert_eq!(group["tasks"][0]["age_ms"], json!(1500));

    let anonymous = WaitGroup::new();
    let _guard = anonymous.task().name("g").add();
    let value = serde_json::to_value(anonymous.pending()).unwrap();
    assert_eq!(value["groups"][0]["group_name"], Value::Null);
    assert_eq!(value["groups"][0]["tasks"][0]["group_name"], Value::Null);
}

#[tokio::test]
async fn panics_lists_and_hostile_displays() {
    struct Hostile;
    impl std::fmt::Debug for Hostile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Hostile")
        }
    }
    impl std::fmt::Display for Hostile {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("Display panics")
        }
    }
    impl std::error::Error for Hostile {}

    let wg = WaitGroup::builder().name("w").max_errors(2).build();
    wg.task().name("p").go(|_| async {
        panic!("boom");
        #[allow(unreachable_code)]
        ()
    });
    tokio::task::yield_now().await;
    wg.go(|_| async { Err::<(), _>(Hostile) });
    tokio::task::yield_now().await;
    wg.go(|_| async { Err::<(), _>("third") });
    let errors = wg.wait().await.unwrap_err().errors().clone();
    let value = serde_json::to_value(&errors).unwrap();
    assert_eq!(value["total"], json!(3));
    assert_eq!(value["dropped"], json!(1));
    let list = value["errors"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let panic = list.iter().find(|e| e["kind"] == "panic").unwrap();
    assert_eq!(
        (&panic["name"], &panic["message"]),
        (&json!("p"), &json!("boom"))
    );
    let hostile = list.iter().find(|e| e["kind"] == "error").unwrap();
    assert_eq!(hostile["message"], json!("<the error's Display panicked>"));
}

/// A `Display` whose panic's payload panics again when dropped: the message
/// says the `Display` panicked, and the serializer's caller sees no panic (the
/// payload is dropped as a task's is; dropped plainly, the second panic
/// escaped the serializer).
#[tokio::test]
async fn an_error_whose_display_panics_with_a_payload_that_panics_on_drop_serializes() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop");
        }
    }
    #[derive(Debug)]
    struct Worse;
    impl std::fmt::Display for Worse {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            std::panic::panic_any(Bomb)
        }
    }
    impl std::error::Error for Worse {}

    let wg = WaitGroup::new();
    wg.go(|_| async { Err::<(), _>(Worse) });
    let errors = wg.wait().await.unwrap_err().errors().clone();
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_json::to_value(&errors).unwrap()
    }))
    .expect("serializing panicked");
    assert_eq!(
        value["errors"][0]["message"],
        json!("<the error's Display panicked>")
    );
}

/// An error whose `source()` panics, and a cause whose `source()` does:
/// the causes end there, and the serializer's caller sees no panic. It did
/// (the chain was walked outside `catch_unwind`): `probe-reg`.
#[tokio::test]
async fn an_error_whose_source_panics_serializes() {
    #[derive(Debug)]
    struct Sourceless(&'static str, bool);
    impl std::fmt::Display for Sourceless {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Sourceless {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            if self.1 {
                panic!("source panics")
            }
            Some(&CAUSE)
        }
    }
    static CAUSE: Sourceless = Sourceless("cause", true);

    let wg = WaitGroup::new();
    wg.task()
        .name("top")
        .go(|_| async { Err::<(), _>(Sourceless("top", true)) });
    wg.task()
        .name("chain")
        .go(|_| async { Err::<(), _>(Sourceless("chain", false)) });
    let errors = wg.wait().await.unwrap_err().errors().clone();
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_json::to_value(&errors).unwrap()
    }))
    .expect("serializing panicked");
    let causes = |name: &str| {
        let list = value["errors"].as_array().unwrap();
        let error = list.iter().find(|e| e["name"] == name).unwrap();
        error["causes"].clone()
    };
    assert_eq!(causes("top"), json!([]));
    assert_eq!(causes("chain"), json!(["cause"]));
}

#[test]
fn status_events_have_the_documented_shape_and_saturate() {
    let hub = StatusHub::new(8);
    hub.report(
        "backend/db",
        ServiceState::Restarting,
        2,
        Some("connection refused".into()),
        Some(Duration::from_millis(500)),
    );
    hub.report(
        "forever",
        ServiceState::Restarting,
        1,
        None,
        Some(Duration::MAX),
    );
    hub.report("api", ServiceState::Running, 1, None, None);
    let snapshot = hub.snapshot();
    let db = serde_json::to_value(&snapshot["backend/db"]).unwrap();
    let doc = documented("src/service/status.rs", "/// # Serialization");
    assert_eq!(db, doc, "the documented example is what this event prints");
    let forever = serde_json::to_value(&snapshot["forever"]).unwrap();
    assert_eq!(forever["delay_ms"], json!(u64::MAX));
    // And its text says so, not `in 18446744073709551615.999999999s`.
    assert_eq!(
        snapshot["forever"].to_string(),
        "forever #1: restarting after a delay without a time limit"
    );
    let api = serde_json::to_value(&snapshot["api"]).unwrap();
    assert_eq!(
        (&api["state"], &api["delay_ms"], &api["error"]),
        (&json!("running"), &Value::Null, &Value::Null)
    );
    let states = [
        ServiceState::Idle,
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Restarting,
        ServiceState::Stopped,
        ServiceState::Failed,
        ServiceState::Panicked,
    ];
    for state in states {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            json!(state.to_string())
        );
    }
}

#[tokio::test]
async fn ids_are_numbers_and_kinds_are_lowercase() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    assert_eq!(
        serde_json::to_value(wg.id()).unwrap(),
        json!(wg.id().as_u64())
    );
    assert_eq!(serde_json::to_value(guard.id()).unwrap(), json!(1));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let blocking = wg.task().spawn_blocking(move |_ctx| {
        let _ = rx.recv();
    });
    let tracked = wg.task().track_future(std::future::pending::<()>());
    let kinds: Vec<Value> = wg
        .pending()
        .tasks()
        .map(|t| serde_json::to_value(t.kind()).unwrap())
        .collect();
    assert_eq!(kinds, [json!("guard"), json!("blocking"), json!("tracked")]);
    drop((tx, tracked, guard));
    blocking.await.unwrap();
}

/// Every kind of `CancelReason` serializes as its type's docs show: a `kind`, and the
/// variant's details.
#[tokio::test]
async fn every_cancel_reason_has_the_documented_shape() {
    use taskgroup::shutdown::Signal;
    use taskgroup::CancelReason;

    let app = WaitGroup::builder()
        .name("app")
        .cancel_on_error(true)
        .build();
    app.task()
        .name("db")
        .go(|_| async { Err::<(), _>("connection refused") });
    let _ = app.wait().await;
    let failure = app.cancel_reason().expect("cancelled by its failure");
    assert!(matches!(failure, CancelReason::Failure(_)), "{failure:?}");
    let requested = WaitGroup::new();
    requested.cancel_with("config reloaded");
    let plain = WaitGroup::new();
    plain.cancel();

    let reasons = [
        requested.cancel_reason().unwrap(),
        plain.cancel_reason().unwrap(),
        failure,
        CancelReason::Token,
        CancelReason::Shutdown,
        CancelReason::Signal(Signal::Terminate),
        CancelReason::Forced(Signal::Interrupt),
        CancelReason::Deadline,
    ];
    let value = serde_json::to_value(reasons).unwrap();
    let doc = documented("src/reason.rs", "/// # Serialization");
    assert_eq!(shape(&value), shape(&doc), "{value:#}");
    let (value, doc) = (value.as_array().unwrap(), doc.as_array().unwrap());
    assert_eq!(value.len(), doc.len());
    for (i, (value, doc)) in value.iter().zip(doc).enumerate() {
        assert_eq!(shape(value), shape(doc), "{i}: {value:#}");
        if i != 2 {
            assert_eq!(value, doc, "{i}");
        }
    }
    assert_eq!(
        value[2]["error"],
        json!({"id": 1, "name": "db", "group_id": app.id().as_u64(), "group_name": "app",
               "kind": "error", "message": "connection refused", "causes": [],
               "secondary": false})
    );
    assert_eq!(
        serde_json::to_value([Signal::Interrupt, Signal::Terminate]).unwrap(),
        json!(["sigint", "sigterm"])
    );
}

/// Every kind of `WaitError` serializes as its type's docs show: a `kind`, beside the
/// variant's fields as the reports write them.
#[tokio::test(start_paused = true)]
async fn every_wait_error_has_the_documented_shape() {
    use taskgroup::WaitError;

    let app = WaitGroup::builder().name("app").build();
    app.task()
        .name("fetch")
        .go(|_| async { Err::<(), _>("disk full") });
    let failed = app.wait().await.unwrap_err();
    assert!(matches!(failed, WaitError::Failed { .. }), "{failed:?}");

    let held = WaitGroup::builder().name("app").build();
    let _lease = held.task().name("lease").add();
    let timed_out = held.wait_timeout(Duration::from_secs(2)).await.unwrap_err();
    assert!(timed_out.is_timeout(), "{timed_out:?}");

    let own = WaitGroup::new();
    let inner = own.clone();
    let from_own = own
        .go(move |_| async move { Ok::<_, std::convert::Infallible>(inner.wait().await) })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(from_own, WaitError::WaitFromOwnTask { .. }),
        "{from_own:?}"
    );

    let value = serde_json::to_value([&failed, &timed_out, &from_own]).unwrap();
    let doc = documented("src/error.rs", "/// # Serialization");
    assert_eq!(shape(&value), shape(&doc), "{value:#}");
    for (i, (value, doc)) in value
        .as_array()
        .unwrap()
        .iter()
        .zip(doc.as_array().unwrap())
        .enumerate()
    {
        assert_eq!(shape(value), shape(doc), "{i}: {value:#}");
    }
    assert_eq!(value[0]["kind"], json!("failed"));
    assert_eq!(
        value[0]["errors"],
        serde_json::to_value(failed.errors()).unwrap()
    );
    assert_eq!(value[1]["kind"], json!("timed_out"));
    assert_eq!(
        value[1]["pending"],
        serde_json::to_value(timed_out.pending().unwrap()).unwrap()
    );
    assert_eq!(
        value[1]["pending"]["groups"][0]["tasks"][0]["name"],
        json!("lease")
    );
    assert_eq!(
        value[1]["pending"]["groups"][0]["tasks"][0]["age_ms"],
        json!(2000)
    );
    assert_eq!(
        value[2],
        json!({"kind": "wait_from_own_task", "group_id": own.id().as_u64()})
    );
}
