//! The task-tree dump (issue 15, point 5): golden files for a three-level
//! tree in text and JSON, with ages from the paused clock and sites and group
//! ids normalised; the walk on a deep chain; the states.
//!
//! `UPDATE_GOLDEN=1 cargo test --all-features --test dump` rewrites the
//! golden files from the output (review the diff).

use std::time::Duration;

use taskgroup::dump::{GroupState, TaskState, TaskTree};
use taskgroup::{TaskKind, WaitGroup};

/// `tests/dump.rs:12:34` → `tests/dump.rs:L:C`, wherever it occurs.
fn normalise_sites(text: &str) -> String {
    const FILE: &str = "tests/dump.rs:";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(FILE) {
        out.push_str(&rest[..at + FILE.len()]);
        rest = &rest[at + FILE.len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line = digits(rest);
        assert!(line > 0 && rest[line..].starts_with(':'), "a line number");
        rest = &rest[line + 1..];
        let col = digits(rest);
        assert!(col > 0, "a column");
        rest = &rest[col..];
        out.push_str("L:C");
    }
    out.push_str(rest);
    out
}

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(actual, expected, "{name} differs from the golden file");
}

struct Tree {
    app: WaitGroup,
    http: WaitGroup,
    db: WaitGroup,
    release: std::sync::mpsc::Sender<()>,
    keep: Vec<taskgroup::TaskGuard>,
}

/// app (open): a task and a guard, 3 s old
/// └ http (closed, limit 1): a running and a queued task, 2 s old
///   └ db (cancelled, lean): a blocking task and an unrecorded guard, 1 s old;
///     also linked straight below app.
async fn three_levels() -> Tree {
    let app = WaitGroup::builder().name("app").build();
    app.task()
        .name("listener")
        .go(|ctx| async move { ctx.cancelled().await });
    let mut keep = vec![app.task().name("config").add()];
    tokio::time::advance(Duration::from_secs(1)).await;

    let http = WaitGroup::builder().name("http").limit(1).build();
    app.link(&http).unwrap();
    for name in ["conn 10.0.0.7:5100", "conn 10.0.0.9:6200"] {
        http.task().name(name).go(|_| std::future::pending::<()>());
    }
    http.close();
    tokio::time::advance(Duration::from_secs(1)).await;

    let db = WaitGroup::builder().name("db").record_guards(false).build();
    http.link(&db).unwrap();
    app.link(&db).unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    db.task().name("flush").spawn_blocking(move |_| {
        let _ = blocked.recv();
    });
    keep.push(db.add());
    db.cancel();
    tokio::time::advance(Duration::from_secs(1)).await;
    Tree {
        app,
        http,
        db,
        release,
        keep,
    }
}

/// Group ids are per process: number them by name.
fn ids(tree: &Tree) -> [(&'static str, u64); 3] {
    [
        ("app", tree.app.id().as_u64()),
        ("http", tree.http.id().as_u64()),
        ("db", tree.db.id().as_u64()),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_three_level_tree_as_text() {
    let tree = three_levels().await;
    let mut text = normalise_sites(&tree.app.dump().to_string());
    for (n, (name, id)) in ids(&tree).into_iter().enumerate() {
        text = text.replace(
            &format!("group \"{name}\" #{id}"),
            &format!("group \"{name}\" #{}", n + 1),
        );
    }
    golden("tree.txt", &format!("{text}\n"));
    drop(tree.release);
    drop(tree.keep);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_three_level_tree_as_versioned_json() {
    let tree = three_levels().await;
    let dump = tree.app.dump();
    let value = serde_json::to_value(&dump).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(taskgroup::dump::JSON_VERSION, 1);
    // The text as written (fields in the documented order), with the group
    // ids numbered by name: a group's `id` and `parent` (six spaces in) and
    // the numbers of its `links` list.
    let ids = ids(&tree);
    let number = |id: &str| -> String {
        let id: u64 = id.trim_end_matches(',').parse().unwrap();
        let n = ids
            .iter()
            .position(|(_, g)| *g == id)
            .expect("one of the three");
        (n + 1).to_string()
    };
    let pretty = serde_json::to_string_pretty(&dump).unwrap();
    let mut out = Vec::new();
    let mut in_links = false;
    for line in pretty.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let comma = if trimmed.ends_with(',') { "," } else { "" };
        let renumbered = if in_links && trimmed.starts_with(']') {
            in_links = false;
            None
        } else if in_links {
            Some(format!("{indent}{}{comma}", number(trimmed)))
        } else if indent.len() == 6 && trimmed.starts_with("\"links\": [") {
            in_links = !trimmed.ends_with("],") && !trimmed.ends_with(']');
            None
        } else if indent.len() == 6 {
            ["\"id\": ", "\"parent\": "].iter().find_map(|key| {
                let rest = trimmed.strip_prefix(key)?;
                (rest != "null,").then(|| format!("{indent}{key}{}{comma}", number(rest)))
            })
        } else {
            None
        };
        out.push(renumbered.unwrap_or_else(|| line.to_owned()));
    }
    let text = normalise_sites(&out.join("\n"));
    golden("tree.json", &format!("{text}\n"));
    // And it parses back to the same value, ids aside.
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["groups"][2]["tasks"][0]["state"], "blocking");
    drop(tree.release);
    drop(tree.keep);
}

#[tokio::test(start_paused = true)]
async fn the_tree_says_what_each_group_and_task_is() {
    let tree = three_levels().await;
    let dump: TaskTree = tree.app.dump();
    assert_eq!(dump.len(), 6);
    let [app, http, db] = dump.groups() else {
        panic!("{dump}")
    };
    assert_eq!(
        (app.state(), http.state(), db.state()),
        (GroupState::Open, GroupState::Closed, GroupState::Cancelled)
    );
    assert_eq!((app.parent(), app.depth()), (None, 0));
    assert_eq!((http.parent(), http.depth()), (Some(tree.app.id()), 1));
    assert_eq!(
        (db.parent(), db.depth()),
        (Some(tree.http.id()), 2),
        "listed under the first parent the walk reaches"
    );
    assert_eq!(app.links(), [tree.http.id(), tree.db.id()]);
    let states: Vec<_> = dump.tasks().map(|t| (t.name(), t.state())).collect();
    assert_eq!(
        states,
        [
            (Some("listener"), TaskState::Running),
            (Some("config"), TaskState::Running),
            (Some("conn 10.0.0.7:5100"), TaskState::Running),
            (Some("conn 10.0.0.9:6200"), TaskState::Queued),
            (Some("flush"), TaskState::Blocking),
        ]
    );
    assert_eq!((db.len(), db.unrecorded()), (2, 1));
    let flush = &db.tasks()[0];
    assert_eq!(flush.kind(), TaskKind::Blocking);
    assert_eq!(flush.age(), Duration::from_secs(1));
    assert_eq!(flush.site().file(), "tests/dump.rs");
    assert_eq!(dump.group(tree.db.id()).map(|g| g.name()), Some(Some("db")));

    // A dump of a lower group starts there.
    let below = tree.http.dump();
    assert_eq!(below.groups().len(), 2);
    assert_eq!(below.groups()[1].depth(), 1);
    drop(tree.release);
    drop(tree.keep);
}

#[tokio::test]
async fn an_idle_group_is_listed_with_nothing_pending() {
    let wg = WaitGroup::new();
    wg.close();
    let dump = wg.dump();
    assert!(dump.is_empty());
    assert_eq!(
        dump.to_string(),
        format!(
            "task tree: 1 group, 0 pending\ngroup {} (closed): 0 pending",
            wg.id()
        )
    );
    let report = wg.shutdown(Duration::MAX).await;
    assert!(report.is_clean());
    assert_eq!(wg.dump().groups()[0].state(), GroupState::Cancelled);
}

/// A chain far deeper than a recursive walk's stack would allow (the
/// thread's stack is 256 KiB here); dropping it is iterative too.
#[test]
fn a_deep_chain_is_walked_without_recursion() {
    const DEPTH: usize = 20_000;
    let thread = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let root = WaitGroup::new();
            let mut last = root.clone();
            let mut all = vec![root.clone()];
            for _ in 0..DEPTH {
                let next = WaitGroup::new();
                last.link(&next).unwrap();
                last = next.clone();
                all.push(next);
            }
            let _guard = last.add();
            let dump = root.dump();
            assert_eq!(dump.groups().len(), DEPTH + 1);
            assert_eq!(dump.groups()[DEPTH].depth(), DEPTH);
            assert_eq!(dump.len(), 1);
            // The text stays proportional to the tree: the indentation stops
            // growing at 32 levels and the depth is written out.
            let text = dump.to_string();
            let last = text.lines().last().unwrap();
            let prefix = format!("{}[depth {}] guard #1: running", "  ".repeat(32), DEPTH + 1);
            assert!(last.starts_with(&prefix), "{last}");
            assert!(text.len() < 200 * DEPTH, "{} bytes", text.len());
            drop((dump, last, all));
        })
        .unwrap();
    thread.join().unwrap();
}

/// The JSON example in the module docs has the keys, order and types the
/// dump writes.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_documented_json_is_what_a_dump_writes() {
    use serde_json::Value;
    let source = include_str!("../src/dump.rs");
    let lines: Vec<&str> = source
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or("").trim_start())
        .skip_while(|l| *l != "# JSON (feature `serde`)")
        .skip_while(|l| *l != "```json")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    let doc: Value = serde_json::from_str(&lines.join("\n")).unwrap();

    let tree = three_levels().await;
    let actual = serde_json::to_value(tree.app.dump()).unwrap();
    /// Keys in order (serde_json sorts them; the order is checked by the
    /// golden file) and the type of each leaf.
    fn keys(v: &Value) -> Vec<(String, &'static str)> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let t = match v {
                    Value::Null => "null",
                    Value::Bool(_) => "bool",
                    Value::Number(n) if n.is_u64() => "u64",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                };
                (k.clone(), t)
            })
            .collect()
    }
    assert_eq!(keys(&actual), keys(&doc));
    assert_eq!(keys(&actual["groups"][0]), keys(&doc["groups"][0]));
    assert_eq!(keys(&actual["groups"][1]), keys(&doc["groups"][1]));
    assert_eq!(
        keys(&actual["groups"][0]["tasks"][0]),
        keys(&doc["groups"][0]["tasks"][0])
    );
    drop(tree.release);
    drop(tree.keep);
}

#[test]
fn the_dump_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<TaskTree>();
    send_sync::<taskgroup::dump::GroupEntry>();
    send_sync::<taskgroup::dump::TaskEntry>();
    send_sync::<taskgroup::dump::Sink>();
    #[cfg(unix)]
    send_sync::<taskgroup::dump::SignalDump>();
    send_sync::<taskgroup::testing::NotQuiescent>();
    send_sync::<taskgroup::testing::QuiescenceGuard>();
    send_sync::<taskgroup::ShutdownError>();
}

/// During a drain the dump says which group drains, and which task is in a
/// shielded section.
#[tokio::test(start_paused = true)]
async fn a_draining_group_and_a_shielded_task() {
    let wg = taskgroup::WaitGroup::builder().name("store").build();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    wg.task().name("flusher").go(|ctx| async move {
        ctx.draining().await;
        ctx.shielded(Duration::from_secs(5), async move {
            let _ = entered_tx.send(());
            std::future::pending::<()>().await
        })
        .await
    });
    wg.task()
        .name("reader")
        .go(|ctx| async move { ctx.cancelled().await });
    wg.drain();
    entered.await.unwrap();
    let dump = wg.dump();
    assert_eq!(dump.groups()[0].state(), GroupState::Draining);
    let states: Vec<_> = dump.tasks().map(|t| (t.name(), t.state())).collect();
    assert_eq!(
        states,
        [
            (Some("flusher"), TaskState::Shielded),
            (Some("reader"), TaskState::Draining)
        ]
    );
    assert!(dump.to_string().contains("shielded"), "{dump}");
    wg.cancel();
}
