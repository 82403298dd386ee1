//! The stream-store conformance suite. Every check takes `&dyn EventStore`, so each backend
//! runs the very same source; `conformance_tests!` instantiates it for one backend.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use serde_json::json;
use stream_store::{
    Actor, AppendRequest, CommandMetadata, EventStore, ExpectedVersion, NewEvent, StoreError,
    StreamId,
};
use uuid::Uuid;

pub fn meta() -> CommandMetadata {
    let command_id = Uuid::new_v4();
    CommandMetadata {
        command_id,
        correlation_id: Uuid::new_v4(),
        causation_id: command_id,
        actor: Actor {
            id: "user-1".into(),
            role: "admin".into(),
        },
        recorded_at: Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap(),
    }
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "ThingHappened".into(),
            schema_version: 1,
            data: json!({ "n": i }),
        })
        .collect()
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(format!("{name}-{}", Uuid::new_v4().simple())).unwrap()
}

async fn stream_len(store: &dyn EventStore, s: &StreamId) -> usize {
    stream_store::read_full_stream(store, s)
        .await
        .unwrap()
        .len()
}

pub async fn append_then_read_in_order(store: &dyn EventStore) {
    let s = stream("order");
    let meta = meta();
    let out = store
        .append(&s, ExpectedVersion::NoStream, events(3), &meta)
        .await
        .unwrap();
    assert_eq!(out.version, 3);
    assert!(!out.duplicate);
    assert!(out.created_stream());
    let read = store.read_stream(&s, 0, 100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        read.iter()
            .map(|e| e.data.to_value()["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(read, out.events, "the append answers what a read returns");
    let e = &read[0];
    assert_eq!(e.command_id, meta.command_id);
    assert_eq!(e.correlation_id, meta.correlation_id);
    assert_eq!(e.causation_id, meta.causation_id);
    assert_eq!(e.actor, meta.actor);
    assert_eq!(e.recorded_at, meta.recorded_at);
    assert_eq!(e.schema_version, 1);
    let tail = store.read_stream(&s, 1, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        store.read_stream(&s, 0, 2).await.unwrap().len(),
        2,
        "limit is honoured"
    );
    for through in 0..=3 {
        let first = store.read_stream_through(&s, through).await.unwrap();
        assert_eq!(
            first.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=through).collect::<Vec<_>>(),
            "the first {through} events"
        );
    }
}

pub async fn expected_version_conflicts_are_typed_and_write_nothing(store: &dyn EventStore) {
    let s = stream("conflict");
    store
        .append(&s, ExpectedVersion::NoStream, events(1), &meta())
        .await
        .unwrap();
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(5),
    ] {
        match store.append(&s, expected, events(2), &meta()).await {
            Err(StoreError::Conflict {
                actual,
                expected: e,
                ..
            }) => {
                assert_eq!(actual, 1);
                assert_eq!(e, expected);
            }
            other => panic!("expected a conflict for {expected:?}, got {other:?}"),
        }
    }
    assert_eq!(
        stream_len(store, &s).await,
        1,
        "a refused append writes nothing"
    );
    assert_eq!(
        store
            .append(&s, ExpectedVersion::Exact(1), events(1), &meta())
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        store
            .append(&s, ExpectedVersion::Any, events(1), &meta())
            .await
            .unwrap()
            .version,
        3
    );
    match store
        .append(
            &stream("fresh"),
            ExpectedVersion::Exact(1),
            events(1),
            &meta(),
        )
        .await
    {
        Err(StoreError::Conflict { actual: 0, .. }) => {}
        other => panic!("expected a conflict on a missing stream, got {other:?}"),
    }
}

pub async fn the_same_command_id_appends_once(store: &dyn EventStore) {
    let s = stream("idem");
    let meta = meta();
    let first = store
        .append(&s, ExpectedVersion::NoStream, events(2), &meta)
        .await
        .unwrap();
    // Same command id, even with other events and another expectation: nothing new.
    let again = store
        .append(&s, ExpectedVersion::Any, events(3), &meta)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(
        (again.version, again.position),
        (first.version, first.position)
    );
    assert_eq!(stream_len(store, &s).await, 2);
    let found = store
        .find_command(meta.command_id)
        .await
        .unwrap()
        .expect("command is known");
    assert_eq!(found.events, first.events);
    assert!(store.find_command(Uuid::new_v4()).await.unwrap().is_none());
}

/// A command id names one request: appended again for another request (another causation
/// id, one key reused with another body) it writes nothing and says so, and a chain stops
/// there; two such requests racing append exactly one of them.
pub async fn a_command_id_reused_by_another_request_is_refused(store: &dyn EventStore) {
    let s = stream("reused");
    let first = meta();
    store
        .append(&s, ExpectedVersion::NoStream, events(1), &first)
        .await
        .unwrap();
    let other = CommandMetadata {
        causation_id: Uuid::new_v4(),
        ..first.clone()
    };
    let refused = store
        .append(&s, ExpectedVersion::Any, events(1), &other)
        .await;
    assert!(
        matches!(refused, Err(StoreError::CommandReused { command_id }) if command_id == first.command_id),
        "{refused:?}"
    );
    let next = stream("reused-next");
    let chain = store
        .append_chain(vec![
            AppendRequest {
                stream: s.clone(),
                expected: ExpectedVersion::Any,
                events: events(1),
                meta: other,
            },
            request(&next, ExpectedVersion::NoStream, 1),
        ])
        .await;
    assert!(
        matches!(chain[..], [Err(StoreError::CommandReused { .. })]),
        "{chain:?}"
    );
    assert_eq!(
        (stream_len(store, &s).await, stream_len(store, &next).await),
        (1, 0)
    );

    let raced = stream("reused-race");
    let shared = meta();
    let bodies: Vec<CommandMetadata> = (0..8)
        .map(|_| CommandMetadata {
            causation_id: Uuid::new_v4(),
            ..shared.clone()
        })
        .collect();
    let answers = futures::future::join_all(
        bodies
            .iter()
            .map(|m| store.append(&raced, ExpectedVersion::Any, events(1), m)),
    )
    .await;
    let appended = answers.iter().filter(|a| a.is_ok()).count();
    let reused = answers
        .iter()
        .filter(|a| matches!(a, Err(StoreError::CommandReused { .. })))
        .count();
    assert_eq!((appended, reused), (1, 7), "{answers:?}");
    assert_eq!(stream_len(store, &raced).await, 1);
}

fn request(stream: &StreamId, expected: ExpectedVersion, n: usize) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        events: events(n),
        meta: meta(),
    }
}

/// A chain appends each request only while the ones before it succeed (a duplicate counts as
/// success); it answers up to the first failure and leaves what came before it appended.
pub async fn an_append_chain_stops_at_its_first_failure(store: &dyn EventStore) {
    use ExpectedVersion::{Exact, NoStream};
    let (a, b, c) = (stream("chain-a"), stream("chain-b"), stream("chain-c"));

    // All succeed: each request's events, in order, right after the one before.
    let all = store
        .append_chain(vec![request(&a, NoStream, 1), request(&b, NoStream, 2)])
        .await;
    let all: Vec<_> = all.into_iter().map(Result::unwrap).collect();
    assert_eq!((all[0].version, all[1].version), (1, 2));
    assert!(all[0].position < all[1].events[0].position);
    assert_eq!(
        (stream_len(store, &a).await, stream_len(store, &b).await),
        (1, 2)
    );

    // The first fails: nothing after it is made.
    let stopped = store
        .append_chain(vec![request(&a, NoStream, 1), request(&c, NoStream, 1)])
        .await;
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(matches!(
        stopped[0],
        Err(StoreError::Conflict { actual: 1, .. })
    ));
    assert_eq!(
        stream_len(store, &c).await,
        0,
        "a request after a failure was appended"
    );

    // A request with no events fails there, as `append` would.
    let empty = store
        .append_chain(vec![request(&c, NoStream, 0), request(&c, NoStream, 1)])
        .await;
    assert!(
        matches!(empty[..], [Err(StoreError::Invalid(_))]),
        "{empty:?}"
    );
    assert_eq!(stream_len(store, &c).await, 0);

    // The second fails: the first stays appended.
    let half = store
        .append_chain(vec![request(&c, NoStream, 1), request(&b, Exact(1), 1)])
        .await;
    assert_eq!(half.len(), 2, "{half:?}");
    assert_eq!(half[0].as_ref().map(|o| o.version).ok(), Some(1));
    assert!(matches!(
        half[1],
        Err(StoreError::Conflict { actual: 2, .. })
    ));
    assert_eq!(
        (stream_len(store, &b).await, stream_len(store, &c).await),
        (2, 1)
    );

    // A duplicate first request (its command appended before) lets the next one through: a
    // command retried after a crash between the two finds its claim and makes the rest.
    let claimed = request(&stream("chain-d"), NoStream, 1);
    let first = store
        .append(
            &claimed.stream,
            claimed.expected,
            claimed.events.clone(),
            &claimed.meta,
        )
        .await
        .unwrap();
    let e = stream("chain-e");
    let retried = store
        .append_chain(vec![claimed, request(&e, NoStream, 1)])
        .await;
    assert_eq!(retried.len(), 2, "{retried:?}");
    let again = retried[0].as_ref().unwrap();
    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(retried[1].as_ref().map(|o| o.version).ok(), Some(1));
    assert_eq!(stream_len(store, &e).await, 1);
}

pub async fn concurrent_duplicates_append_once(store: &dyn EventStore) {
    let s = stream("idem-race");
    let meta = meta();
    let attempts = futures::future::join_all(
        (0..16).map(|_| store.append(&s, ExpectedVersion::Any, events(1), &meta)),
    )
    .await;
    let outcomes: Vec<_> = attempts.into_iter().map(Result::unwrap).collect();
    assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1);
    assert!(outcomes.iter().all(|o| o.events == outcomes[0].events));
    assert_eq!(stream_len(store, &s).await, 1);
}

pub async fn concurrent_writers_to_one_stream_never_overwrite(store: &dyn EventStore) {
    let s = stream("race");
    store
        .append(&s, ExpectedVersion::NoStream, events(1), &meta())
        .await
        .unwrap();
    let metas: Vec<_> = (0..10).map(|_| meta()).collect();
    let attempts = futures::future::join_all(
        metas
            .iter()
            .map(|m| store.append(&s, ExpectedVersion::Exact(1), events(1), m)),
    )
    .await;
    let won = attempts.iter().filter(|r| r.is_ok()).count();
    let conflicts = attempts
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { .. })))
        .count();
    assert_eq!((won, conflicts), (1, 9));
    assert_eq!(stream_len(store, &s).await, 2);
}

pub async fn a_multi_event_append_is_atomic(store: &dyn EventStore) {
    let s = stream("atomic");
    let taken = store
        .append(&stream("other"), ExpectedVersion::Any, events(1), &meta())
        .await
        .unwrap();
    let mut batch = events(3);
    // The third event reuses an event id already in the log: the database refuses it after
    // the first two rows of the append were inserted.
    batch[2].event_id = taken.events[0].event_id;
    let result = store
        .append(&s, ExpectedVersion::NoStream, batch, &meta())
        .await;
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "the append must fail: {result:?}"
    );
    assert_eq!(
        stream_len(store, &s).await,
        0,
        "no event of a failed append is stored"
    );
    assert!(
        store
            .append(&s, ExpectedVersion::NoStream, vec![], &meta())
            .await
            .is_err(),
        "empty appends are refused"
    );
    assert!(StreamId::new("").is_err());
    assert!(StreamId::new("a\nb").is_err());
}

pub async fn the_global_log_is_ordered(store: &dyn EventStore) {
    let head = store.head().await.unwrap();
    let (a, b) = (stream("a"), stream("b"));
    let mut written = Vec::new();
    for (s, n) in [(&a, 2), (&b, 1), (&a, 1)] {
        written.push(
            store
                .append(s, ExpectedVersion::Any, events(n), &meta())
                .await
                .unwrap(),
        );
    }
    // Other writers may share the log (EventStoreDB): look at ours only.
    let mine = |events: Vec<stream_store::RecordedEvent>| -> Vec<stream_store::RecordedEvent> {
        events
            .into_iter()
            .filter(|e| e.stream_id == a || e.stream_id == b)
            .collect()
    };
    let all = mine(store.read_all(head, 10_000).await.unwrap());
    assert_eq!(
        all.iter()
            .map(|e| (e.stream_id.clone(), e.version))
            .collect::<Vec<_>>(),
        vec![
            (a.clone(), 1),
            (a.clone(), 2),
            (b.clone(), 1),
            (a.clone(), 3)
        ]
    );
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions only grow"
    );
    assert_eq!(
        all.last().map(|e| e.position),
        written.last().map(|o| o.position)
    );
    assert!(store.head().await.unwrap() >= all[3].position);
    let after_second = mine(store.read_all(all[1].position, 10_000).await.unwrap());
    assert_eq!(
        after_second.first().map(|e| e.position),
        Some(all[2].position),
        "after is exclusive"
    );
}

pub async fn a_subscription_hands_over_from_catch_up_to_live_without_gap(store: &dyn EventStore) {
    let s = stream("sub");
    let start = store.head().await.unwrap();
    for _ in 0..5 {
        store
            .append(&s, ExpectedVersion::Any, events(2), &meta())
            .await
            .unwrap();
    }
    let mut feed = store.subscribe_all(start);
    let mut seen: Vec<stream_store::RecordedEvent> = Vec::new();
    async fn next_of(
        feed: &mut stream_store::EventStream,
        s: &StreamId,
        limit: Duration,
    ) -> Option<stream_store::RecordedEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let e = tokio::time::timeout_at(deadline, feed.next())
                .await
                .ok()??
                .unwrap();
            if &e.stream_id == s {
                return Some(e);
            }
        }
    }
    while seen.len() < 10 {
        seen.push(
            next_of(&mut feed, &s, Duration::from_secs(10))
                .await
                .expect("catch-up in time"),
        );
    }
    // Live: appends made while the subscriber waits, from several tasks at once.
    let metas: Vec<_> = (0..5).map(|_| meta()).collect();
    let writers: Vec<_> = metas
        .iter()
        .map(|m| store.append(&s, ExpectedVersion::Any, events(2), m))
        .collect();
    let (written, ()) = tokio::join!(futures::future::join_all(writers), async {
        while seen.len() < 20 {
            seen.push(
                next_of(&mut feed, &s, Duration::from_secs(10))
                    .await
                    .expect("live event in time"),
            );
        }
    });
    assert!(written.iter().all(Result::is_ok));
    assert_eq!(
        seen.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    assert!(
        next_of(&mut feed, &s, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more"
    );
    // A subscription from the middle starts right after it.
    let mut from_middle = store.subscribe_all(seen[6].position);
    assert_eq!(
        next_of(&mut from_middle, &s, Duration::from_secs(10))
            .await
            .map(|e| e.version),
        Some(8)
    );
}

/// Which backend runs the suite: PostgreSQL always; EventStoreDB when `EVENTSTORE_URL` points
/// at a server (otherwise each test says it skipped, and why).
pub async fn eventstoredb() -> Option<std::sync::Arc<dyn EventStore>> {
    let Ok(url) = std::env::var("EVENTSTORE_URL") else {
        eprintln!("skipped: EVENTSTORE_URL is not set, so no EventStoreDB server to run the conformance suite against");
        return None;
    };
    let store = stream_store::EsdbEventStore::connect(&url)
        .expect("EVENTSTORE_URL is an esdb:// connection string");
    match tokio::time::timeout(Duration::from_secs(5), store.head()).await {
        Ok(Ok(_)) => Some(std::sync::Arc::new(store)),
        other => {
            eprintln!("skipped: EventStoreDB at EVENTSTORE_URL is not reachable ({other:?})");
            None
        }
    }
}

/// Instantiates every conformance check as a test for one backend.
macro_rules! conformance_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            conformance_tests!(@each $make;
                append_then_read_in_order,
                expected_version_conflicts_are_typed_and_write_nothing,
                the_same_command_id_appends_once,
                a_command_id_reused_by_another_request_is_refused,
                an_append_chain_stops_at_its_first_failure,
                concurrent_duplicates_append_once,
                concurrent_writers_to_one_stream_never_overwrite,
                the_global_log_is_ordered,
                a_subscription_hands_over_from_catch_up_to_live_without_gap);
        }
    };
    (@each $make:expr; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(store) = $make else { return };
                super::$check(&*store).await;
            }
        )+
    };
}

conformance_tests!(postgres, Some(crate::harness::test_db().await.store));
conformance_tests!(eventstoredb, super::eventstoredb().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_multi_event_appends_are_atomic() {
    a_multi_event_append_is_atomic(&*crate::harness::test_db().await.store).await;
}

/// Payloads are stored as the JSON text sent (migrations/0014) and read back equal, by stream
/// and by position; a payload holding U+0000, which PostgreSQL's `jsonb` and `text` cannot
/// hold, is refused before it is written, whether in a string or in a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_payloads_round_trip_and_a_nul_is_refused() {
    let db = crate::harness::test_db().await;
    let store = &*db.store;
    let s = stream("payload");
    let tricky = json!({
        "quote\"and\\backslash": "line\nbreak\ttab \u{1} \u{7f} é 漢字 🎫 \u{2028}",
        "escaped nul as text": "\\u0000",
        "numbers": [0, -1, 1.5e300, 12345678901234567890u64, -0.0],
        "nested": { "empty": {}, "list": [], "null": null, "yes": true },
        "": "empty key"
    });
    let mut batch = events(1);
    batch[0].data = tricky.clone();
    store
        .append(&s, ExpectedVersion::NoStream, batch, &meta())
        .await
        .unwrap();
    let by_stream = stream_store::read_full_stream(store, &s).await.unwrap();
    assert_eq!(by_stream[0].data.to_value(), tricky);
    let by_position = store.read_all(by_stream[0].position - 1, 1).await.unwrap();
    assert_eq!(by_position[0].data.to_value(), tricky);

    let head = store.head().await.unwrap();
    for bad in [
        json!({ "name": "a\u{0}b" }),
        json!({ "list": [1, { "deep": "\u{0}" }] }),
        json!({ "key\u{0}": 1 }),
    ] {
        let mut batch = events(2);
        batch[1].data = bad.clone();
        let result = store
            .append(&stream("nul"), ExpectedVersion::Any, batch, &meta())
            .await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{bad} must be refused: {result:?}"
        );
    }
    assert_eq!(
        store.head().await.unwrap(),
        head,
        "a refused append writes nothing"
    );
    let convertible: i64 = sqlx::query_scalar("SELECT count(data::jsonb) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(convertible, head, "every stored payload reads as jsonb");
}

/// A read of the log cut short, its future dropped while the server is still sending rows,
/// leaves no connection in the pool that would hand those rows to the next query: reads on a
/// pool of two connections (one of them the store's listener's), each after a read stopped at
/// a later point, stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_log_read_cut_short_leaves_the_pool_usable() {
    let db = crate::harness::test_db().await;
    for _ in 0..10 {
        db.store
            .append(&stream("bulk"), ExpectedVersion::Any, events(1000), &meta())
            .await
            .unwrap();
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    // A store of its own: its tail is empty, so every read goes to the table.
    let reader = stream_store::PgEventStore::new(pool);
    let mut cut_short = 0;
    for micros in (0..40).map(|i| i * 250) {
        let whole =
            tokio::time::timeout(Duration::from_micros(micros), reader.read_all(0, 10_000)).await;
        cut_short += usize::from(whole.is_err());
        let page = reader.read_all(5_000, 3).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.position).collect::<Vec<_>>(),
            [5_001, 5_002, 5_003],
            "after a read stopped at {micros} us"
        );
        assert_eq!(page[0].data.to_value(), json!({ "n": 0 }));
    }
    assert!(cut_short > 0, "no read was cut short");
}

/// On PostgreSQL a chain reaches the writer whole: among concurrent appends and chains, each
/// chain's events are written by one transaction, at consecutive positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_chain_is_one_transaction_among_concurrent_appends() {
    let db = crate::harness::test_db().await;
    let store = &*db.store;
    let chains = (0..16).map(|i| {
        let (a, b) = (stream(&format!("key-{i}")), stream(&format!("owner-{i}")));
        store.append_chain(vec![
            request(&a, ExpectedVersion::NoStream, 1),
            request(&b, ExpectedVersion::NoStream, 2),
        ])
    });
    let singles = (0..16).map(|_| async {
        let (s, m) = (stream("single"), meta());
        store.append(&s, ExpectedVersion::Any, events(1), &m).await
    });
    let (chains, singles) = tokio::join!(
        futures::future::join_all(chains),
        futures::future::join_all(singles)
    );
    assert!(singles.iter().all(Result::is_ok));
    for chain in chains {
        let [Ok(a), Ok(b)] = &chain[..] else {
            panic!("a chain failed: {chain:?}")
        };
        assert_eq!(b.events[0].position, a.position + 1, "{chain:?}");
        let writers: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT xmin::text FROM events WHERE position BETWEEN $1 AND $2",
        )
        .bind(a.position)
        .bind(b.position)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            writers.len(),
            1,
            "one chain, several transactions: {writers:?}"
        );
    }
    let all = store.read_all(0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_positions_are_dense() {
    let store = crate::harness::test_db().await.store;
    for n in [2, 1, 3] {
        store
            .append(&stream("d"), ExpectedVersion::Any, events(n), &meta())
            .await
            .unwrap();
    }
    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(store.head().await.unwrap(), 6);
}

/// Two processes' stores on one database (each with its own stream cache): what one appends,
/// the other reads soon after (its cache follows the log's notifications), and an append the
/// other decides on a stale copy is refused by the database, after which it reads the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stream_caches_follow_other_writers() {
    let db = crate::harness::test_db().await;
    let other_pool = ledger::connect_and_migrate(&db.url).await.unwrap();
    let other = stream_store::PgEventStore::new(other_pool);
    let (a, b): (&dyn EventStore, &dyn EventStore) = (&*db.store, &other);
    let s = stream("cached");
    a.append(&s, ExpectedVersion::NoStream, events(2), &meta())
        .await
        .unwrap();
    assert_eq!(stream_len(a, &s).await, 2);
    assert_eq!(stream_len(b, &s).await, 2);

    // A stale decision: b appends, then a (whose copy may still say 2) tries at 2 as well.
    b.append(&s, ExpectedVersion::Exact(2), events(1), &meta())
        .await
        .unwrap();
    match a
        .append(&s, ExpectedVersion::Exact(2), events(1), &meta())
        .await
    {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 3),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(stream_len(a, &s).await, 3, "a conflict refreshes the copy");

    // Without a conflict to tell it, the copy follows the log's notifications.
    b.append(&s, ExpectedVersion::Exact(3), events(2), &meta())
        .await
        .unwrap();
    crate::harness::eventually(Duration::from_secs(5), "a to see b's append", || async {
        (stream_len(a, &s).await == 5).then_some(())
    })
    .await;
    // And its own appends extend it.
    a.append(&s, ExpectedVersion::Exact(5), events(1), &meta())
        .await
        .unwrap();
    let read = stream_store::read_full_stream(a, &s).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    // b learns of a's append through the notifications too (not in the same instant).
    crate::harness::eventually(Duration::from_secs(5), "b to see a's append", || async {
        (stream_len(b, &s).await == 6).then_some(())
    })
    .await;
}

/// A writer announces its appends after they commit (migrations/0009); one that dies in
/// between leaves a committed append nobody was told of. The other processes' stream caches
/// and subscribers still find it: their listeners re-read the head when the log is quiet. The
/// orphan is written here with plain SQL, as that writer's commit left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_append_whose_announcement_was_lost_is_found() {
    let db = crate::harness::test_db().await;
    let store = &*db.store;
    let s = stream("orphan");
    store
        .append(&s, ExpectedVersion::NoStream, events(2), &meta())
        .await
        .unwrap();
    assert_eq!(stream_len(store, &s).await, 2);
    let mut feed = store.subscribe_all(2);
    sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         VALUES (3, $1, 3, $2, 'Orphaned', 1, '{}', $3, $3, $3, 'crashed', 'system', now())",
    )
    .bind(s.as_str())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&db.pool)
    .await
    .unwrap();
    crate::harness::eventually(Duration::from_secs(5), "the cache to find it", || async {
        (stream_len(store, &s).await == 3).then_some(())
    })
    .await;
    let next = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("the subscriber to find it");
    assert_eq!(next.unwrap().unwrap().event_type, "Orphaned");
}

/// A store answers reads of the log's newest events from what its own writer just committed
/// (src/tail.rs), but never across another process's append: here the log is a, b, a, and a
/// reader of the first store, however it starts, sees b's event between its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_of_own_appends_never_skip_another_writers() {
    let db = crate::harness::test_db().await;
    let other_pool = ledger::connect_and_migrate(&db.url).await.unwrap();
    let other = stream_store::PgEventStore::new(other_pool);
    let (a, b): (&dyn EventStore, &dyn EventStore) = (&*db.store, &other);
    let mine = stream("mine");
    let theirs = stream("theirs");
    a.append(&mine, ExpectedVersion::Any, events(2), &meta())
        .await
        .unwrap();
    b.append(&theirs, ExpectedVersion::Any, events(1), &meta())
        .await
        .unwrap();
    a.append(&mine, ExpectedVersion::Any, events(2), &meta())
        .await
        .unwrap();
    let streams = |events: Vec<stream_store::RecordedEvent>| {
        events
            .iter()
            .map(|e| (e.position, e.stream_id.as_str().to_owned()))
            .collect::<Vec<_>>()
    };
    let log: Vec<(i64, String)> = [(1, &mine), (2, &mine), (3, &theirs), (4, &mine), (5, &mine)]
        .into_iter()
        .map(|(p, s)| (p, s.as_str().to_owned()))
        .collect();
    for after in 0..5 {
        assert_eq!(
            streams(a.read_all(after, 100).await.unwrap()),
            log[after as usize..],
            "read after {after}"
        );
    }
    let mut feed = a.subscribe_all(2);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("an event in time");
        seen.push(next.unwrap().unwrap());
    }
    assert_eq!(streams(seen), log[2..]);
}
