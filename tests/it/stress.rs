//! Concurrent writers in several processes: a subscriber must see every event exactly once,
//! in one stable order.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stream_store::{EventStore, ExpectedVersion, PgEventStore, StreamId};

use crate::harness;
use crate::store::{events, meta};

const PROCESSES: usize = 3;
const TASKS_PER_PROCESS: usize = 4;
const APPENDS_PER_TASK: usize = 60;
const SHARED_STREAMS: usize = 4;

/// Body of a writer process: started by the test below with `STRESS_DATABASE_URL` set; does
/// nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of concurrent_writers_in_several_processes_are_seen_once_in_order"]
async fn writer_process() {
    let Ok(url) = std::env::var("STRESS_DATABASE_URL") else {
        return;
    };
    let writer: usize = std::env::var("STRESS_WRITER").unwrap().parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool));
    write_load(store, writer).await;
}

/// Appends 1 to 3 events at a time, to shared streams (with `Any`) and to its own stream
/// (with exact versions), from several tasks.
async fn write_load(store: Arc<dyn EventStore>, writer: usize) {
    let tasks: Vec<_> = (0..TASKS_PER_PROCESS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let own = StreamId::new(format!("own-{writer}-{task}")).unwrap();
                for i in 0..APPENDS_PER_TASK {
                    let n = 1 + (i + task) % 3;
                    if i % 2 == 0 {
                        let shared =
                            StreamId::new(format!("shared-{}", i % SHARED_STREAMS)).unwrap();
                        store
                            .append(&shared, ExpectedVersion::Any, events(n), &meta())
                            .await
                            .unwrap();
                    } else {
                        let version = stream_store::read_full_stream(&*store, &own)
                            .await
                            .unwrap()
                            .len() as i64;
                        store
                            .append(&own, ExpectedVersion::Exact(version), events(n), &meta())
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_in_several_processes_are_seen_once_in_order() {
    let db = harness::test_db().await;
    let mut feed = db.store.subscribe_all(0);

    let children: Vec<_> = (0..PROCESSES)
        .map(|writer| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stress::writer_process",
                    "--ignored",
                    "--test-threads=1",
                    "-q",
                ])
                .env("STRESS_DATABASE_URL", &db.url)
                .env("STRESS_WRITER", writer.to_string())
                // Its own test summary would read as part of this run's.
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn writer process")
        })
        .collect();
    // This process writes too, while it subscribes.
    let mut local = tokio::spawn(write_load(db.store.clone(), PROCESSES));

    let mut waiting = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|mut c| c.wait().unwrap().success())
            .collect::<Vec<_>>()
    });
    let mut seen = Vec::new();
    let (mut statuses, mut local_done) = (None, None);
    loop {
        // The writers' ends are waited for here too: the last event can arrive before the
        // task that appended it has finished, and then no further event would wake this loop.
        tokio::select! {
            done = &mut waiting, if statuses.is_none() => statuses = Some(done.unwrap()),
            done = &mut local, if local_done.is_none() => local_done = Some(done),
            next = tokio::time::timeout(Duration::from_secs(60), feed.next()) => {
                let event = next.expect("an event within a minute").unwrap().unwrap();
                seen.push(event);
            }
        }
        if statuses.is_some() && local_done.is_some() {
            let head = db.store.head().await.unwrap();
            if seen.last().map_or(0, |e| e.position) == head {
                break;
            }
        }
    }
    assert!(
        statuses.unwrap().iter().all(|ok| *ok),
        "every writer process succeeded"
    );
    local_done.unwrap().unwrap();

    let head = db.store.head().await.unwrap();
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "every position exactly once, in order"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "no event delivered twice");
    let appends = (PROCESSES + 1) * TASKS_PER_PROCESS * APPENDS_PER_TASK;
    assert!(
        head as usize >= appends,
        "all {appends} appends are in the log"
    );

    // A second reader, paging through the log, sees the same order.
    let mut reread = Vec::new();
    loop {
        let page = db
            .store
            .read_all(
                reread
                    .last()
                    .map_or(0, |e: &stream_store::RecordedEvent| e.position),
                97,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        reread.extend(page);
    }
    assert_eq!(reread, seen, "the order is stable");
    // Stream versions are dense too.
    for s in 0..SHARED_STREAMS {
        let stream = stream_store::read_full_stream(
            &*db.store,
            &StreamId::new(format!("shared-{s}")).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            stream.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=stream.len() as i64).collect::<Vec<_>>()
        );
    }
}
