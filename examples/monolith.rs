//! A "monolith": four services in one group. The queue consumer fails; the group cancels
//! the others; the cache's teardown fails too; every error is printed with its service's
//! name. Background jobs spawned with `WaitGroup::go` are a member too (`TasksService`):
//! the group's stop is their shutdown.
//!
//! Run with `cargo run --example monolith`.

use std::sync::Arc;
use std::time::Duration;

use taskgroup::service::{run_teardown, service_fn, BoxError, Ready, ServiceGroup, TasksService};
use taskgroup::WaitGroup;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http = service_fn("http", |ctx: CancellationToken, ready: Ready| async move {
        println!("http: listening");
        ready.ready();
        ctx.cancelled().await;
        println!("http: draining connections");
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!("http: stopped");
        Ok(())
    });

    let queue = service_fn(
        "queue",
        |_ctx: CancellationToken, ready: Ready| async move {
            println!("queue: consuming");
            ready.ready();
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!("queue: broker went away");
            Err("broker connection lost".into())
        },
    );

    // A cache stopped by a method call rather than a token: run + teardown.
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let cache = run_teardown(
        "cache",
        move |ready: Ready| {
            let stop = stop.clone();
            async move {
                println!("cache: warm");
                ready.ready();
                stop.notified().await;
                println!("cache: stopped");
                Ok(())
            }
        },
        move || {
            let stop = stop2.clone();
            async move {
                println!("cache: flushing to disk");
                stop.notify_one();
                Err(BoxError::from("flush: disk full"))
            }
        },
    );

    // Background jobs: plain `go()` tasks, stopped by the group like any member.
    let jobs = WaitGroup::builder().name("jobs").build();
    for i in 0..2 {
        jobs.task()
            .name(format!("job-{i}"))
            .go(move |ctx| async move {
                ctx.cancelled().await;
                println!("jobs: job-{i} stopped");
                Ok::<_, BoxError>(())
            });
    }

    let mut app = ServiceGroup::builder("monolith")
        .service(http)
        .service(TasksService::new("jobs", jobs).grace(Duration::from_secs(1)))
        .service(queue)
        .service(cache)
        .stop_timeout(Duration::from_secs(2))
        .build()?;
    match app.serve(CancellationToken::new()).await {
        Ok(()) => println!("all services stopped cleanly"),
        Err(err) => {
            println!(
                "the monolith stopped with {} error(s):",
                err.failures().len()
            );
            for failure in err.failures() {
                println!("  - {failure}");
            }
        }
    }
    Ok(())
}
