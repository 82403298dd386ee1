//! The projector runtime: checkpoint and read model move together, resume after a restart,
//! and two runners of one projection never apply an event twice.

use projections::{catch_up, checkpoints, AuditLog, Projector};
use serde_json::{json, Value};
use stream_store::{EventStore, ExpectedVersion, NewEvent};
use uuid::Uuid;

use crate::harness::test_db;
use crate::store::{events, meta, stream};

async fn audit_rows(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM audit_log ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_resumes_from_its_checkpoint() {
    let db = test_db().await;
    let s = stream("p");
    db.store
        .append(&s, ExpectedVersion::Any, events(3), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 3);
    // A restarted runner applies nothing twice...
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 0);
    // ...and picks up only what is new.
    db.store
        .append(&s, ExpectedVersion::Any, events(2), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 2);
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
    let cp = checkpoints(&db.pool).await.unwrap();
    assert!(cp.iter().any(|c| c.name == "audit_log" && c.position == 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_runners_of_one_projection_apply_each_event_once() {
    let db = test_db().await;
    for _ in 0..20 {
        db.store
            .append(&stream("race"), ExpectedVersion::Any, events(30), &meta())
            .await
            .unwrap();
    }
    let runners: Vec<_> = (0..4)
        .map(|_| catch_up(&*db.store, &db.pool, &AuditLog))
        .collect();
    let applied: usize = futures::future::join_all(runners)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert_eq!(applied, 600, "each event applied by exactly one runner");
    assert_eq!(audit_rows(&db.pool).await, (1..=600).collect::<Vec<_>>());
}

/// A projector that fails on one event: the batch's effects and its checkpoint roll back
/// together, as after a crash in the middle of a batch.
struct FailsAt(i64);

#[async_trait::async_trait]
impl Projector for FailsAt {
    fn name(&self) -> &'static str {
        "audit_log"
    }
    fn tables(&self) -> &'static [&'static str] {
        AuditLog.tables()
    }
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[stream_store::RecordedEvent],
        log: &dyn EventStore,
    ) -> Result<(), projections::ProjectionError> {
        let Some(at) = events.iter().position(|e| e.position == self.0) else {
            return AuditLog.apply(tx, events, log).await;
        };
        // Apply what comes before, then abort the transaction the way a crash or a broken
        // statement would.
        AuditLog.apply(tx, &events[..at], log).await?;
        sqlx::query("SELECT 1/0").execute(&mut *tx).await?;
        AuditLog.apply(tx, &events[at..], log).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_leaves_neither_effects_nor_checkpoint() {
    let db = test_db().await;
    db.store
        .append(&stream("f"), ExpectedVersion::Any, events(5), &meta())
        .await
        .unwrap();
    assert!(catch_up(&*db.store, &db.pool, &FailsAt(4)).await.is_err());
    assert!(
        audit_rows(&db.pool).await.is_empty(),
        "events 1..3 were rolled back with the batch"
    );
    let cp = checkpoints(&db.pool).await.unwrap();
    assert!(cp.iter().all(|c| c.position == 0));
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 5);
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
}

/// Where the log is the `events` table of the read models' database, the audit log is copied
/// in SQL, leaving payloads in the log: what auditors read must be what the projector's Rust
/// code (the path for a log elsewhere) writes, password hashes redacted the same way (only a
/// top-level `passwordHash` of an object payload), whichever way the rows were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_copied_in_sql_reads_as_its_rust_code_writes() {
    let db = test_db().await;
    let mut new = events(3);
    for data in [
        json!({ "email": "a@example.com", "passwordHash": "$argon2id$v=19$secret" }),
        json!({ "nested": { "passwordHash": "kept" } }),
        json!(["passwordHash"]),
        json!("passwordHash"),
    ] {
        new.push(NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "UserRegistered".into(),
            schema_version: 1,
            data,
        });
    }
    db.store
        .append(&stream("sql"), ExpectedVersion::Any, new, &meta())
        .await
        .unwrap();
    let logged = db.store.read_all(0, 100).await.unwrap();
    let head = logged.last().unwrap().position;

    let mut tx = db.pool.begin().await.unwrap();
    let mut read = Vec::new();
    for (schema, in_sql) in [("by_sql", true), ("by_rust", false)] {
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(&format!(
            "CREATE TABLE {schema}.audit_log (LIKE public.audit_log INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
            .execute(&mut *tx)
            .await
            .unwrap();
        if in_sql {
            assert!(AuditLog
                .apply_from_log(&mut tx, 0, head, &[])
                .await
                .unwrap());
        } else {
            AuditLog.apply(&mut tx, &logged, &*db.store).await.unwrap();
        }
        let filter = query_graphql::AuditFilter::default();
        read.push(
            query_graphql::audit_entries(&mut tx, &filter, 100, 0)
                .await
                .unwrap(),
        );
    }
    let stored_payloads =
        |schema: &str| format!("SELECT count(*) FROM {schema}.audit_log WHERE data IS NOT NULL");
    for (schema, payloads) in [("by_sql", 0), ("by_rust", 7)] {
        let n: i64 = sqlx::query_scalar(&stored_payloads(schema))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(n, payloads, "payloads stored in {schema}");
    }
    assert_eq!(
        read[0], read[1],
        "the SQL copy and the Rust code read differently"
    );
    let data: Vec<Value> = read[0].iter().map(|e| e.data.0.clone()).collect();
    assert_eq!(data.len(), 7);
    assert_eq!(data[3]["passwordHash"], "[redacted]");
    assert_eq!(data[3]["email"], "a@example.com");
    assert_eq!(data[4]["nested"]["passwordHash"], "kept");
    assert_eq!(data[5], json!(["passwordHash"]));
    // A log elsewhere (EventStoreDB) has positions `events` does not hold: its rows are read
    // as stored.
    let mut elsewhere = logged[0].clone();
    elsewhere.position = 1_000;
    elsewhere.data = stream_store::Payload::from_value(&json!({ "from": "elsewhere" })).unwrap();
    AuditLog
        .apply(&mut tx, &[elsewhere], &*db.store)
        .await
        .unwrap();
    let filter = query_graphql::AuditFilter {
        event_type: Some(logged[0].event_type.clone()),
        ..Default::default()
    };
    let last = query_graphql::audit_entries(&mut tx, &filter, 100, 0)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.position, last.data.0),
        (1_000, json!({ "from": "elsewhere" }))
    );
}

/// The audit log with its Rust code refusing to run: following the log and rebuilding work
/// only if the runtime takes the SQL path, as it must when the log is in the same database.
struct SqlOnly;

#[async_trait::async_trait]
impl Projector for SqlOnly {
    fn name(&self) -> &'static str {
        "audit_log"
    }
    fn tables(&self) -> &'static [&'static str] {
        AuditLog.tables()
    }
    async fn apply(
        &self,
        _tx: &mut sqlx::PgConnection,
        events: &[stream_store::RecordedEvent],
        _log: &dyn EventStore,
    ) -> Result<(), projections::ProjectionError> {
        Err(projections::ProjectionError::Corrupt {
            position: events.first().map_or(0, |e| e.position),
            reason: "the Rust path was taken".into(),
        })
    }
    async fn apply_from_log(
        &self,
        tx: &mut sqlx::PgConnection,
        after: i64,
        up_to: i64,
        skip: &[i64],
    ) -> Result<bool, projections::ProjectionError> {
        AuditLog.apply_from_log(tx, after, up_to, skip).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_in_the_same_database_is_copied_in_sql() {
    let db = test_db().await;
    db.store
        .append(&stream("local"), ExpectedVersion::Any, events(7), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &SqlOnly).await.unwrap(), 7);
    assert_eq!(audit_rows(&db.pool).await, (1..=7).collect::<Vec<_>>());
    let position = projections::rebuild(&db.store, &db.pool, &SqlOnly, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(position, 7);
    assert_eq!(audit_rows(&db.pool).await, (1..=7).collect::<Vec<_>>());
}

/// A rebuild copies a log longer than one SQL batch (100,000 positions) in ranges, two at a
/// time and in any order: every position lands once, and the progress reaches the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_is_copied_in_sql_ranges_without_gaps_or_repeats() {
    let db = test_db().await;
    const N: i64 = 200_001;
    sqlx::query(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                             data, command_id, correlation_id, causation_id, actor_id,
                             actor_role, recorded_at)
         SELECT g, 'bulk-' || (g % 1000), g / 1000 + 1, gen_random_uuid(), 'Happened', 1,
                jsonb_build_object('n', g), gen_random_uuid(), gen_random_uuid(),
                gen_random_uuid(), 'tester', 'admin', now()
         FROM generate_series(1, $1) AS g",
    )
    .bind(N)
    .execute(&db.pool)
    .await
    .unwrap();
    let reported = std::sync::atomic::AtomicI64::new(0);
    let position = projections::rebuild(&db.store, &db.pool, &SqlOnly, &|done, head| {
        assert!(done <= head, "progress {done} beyond the head {head}");
        reported.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(position, N);
    assert_eq!(reported.into_inner(), N);
    let (rows, first, last, sum): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), min(a.position), max(a.position), sum((e.data->>'n')::bigint)::bigint
         FROM audit_log a JOIN events e USING (position)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((rows, first, last, sum), (N, 1, N, N * (N + 1) / 2));
}

/// A ticket's way from its raise to resolved: raise (the `seq`th ticket of the day), assign,
/// start, resolve. Its texts hold what a bulk load must escape (tab, line breaks, backslashes,
/// a literal `\N`).
pub(crate) fn lifecycle(
    id: domain::TicketId,
    customer: domain::CustomerId,
    technician: domain::TechnicianId,
    seq: u64,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<domain::TicketCommand> {
    use domain::{
        Category, CustomerFacts, Impact, RaiseTicket, Severity, TechnicianFacts, Text,
        TicketCommand, TicketNumber, Tier,
    };
    let text = |s: &str| Text::parse("text", s, 100).unwrap();
    vec![
        TicketCommand::Raise(RaiseTicket {
            ticket_id: id,
            number: TicketNumber::generate(at.date_naive(), seq),
            customer_id: customer,
            customer: Some(CustomerFacts {
                id: customer,
                tier: Tier::Paid,
            }),
            device_id: None,
            device: None,
            category: Category::Repair,
            subject: text("Fan noise"),
            description: text("Loud\tfan,\r\nrattles \\N at C:\\fan\\"),
            severity: Severity::Major,
            impact: Impact::parse("impact", 2).unwrap(),
            policy: Default::default(),
        }),
        TicketCommand::AssignTechnician {
            technician_id: technician,
            technician: Some(TechnicianFacts {
                id: technician,
                active: true,
            }),
        },
        TicketCommand::StartWork,
        TicketCommand::Resolve {
            resolution: text("Cleaned\n\\ done"),
        },
    ]
}

/// The service desk keeps the tickets it last wrote in memory. A runner continuing a ticket
/// that another runner moved meanwhile (a takeover, a rebuild) must fold its stream again: here
/// two projector instances take turns, and the ticket row must still be the domain's own fold
/// of the whole stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_moved_by_another_runner_is_folded_from_its_stream_not_remembered() {
    use domain::{Aggregate, CustomerId, EventPayload, TechnicianId, Ticket, TicketId};
    let db = test_db().await;
    let runners = [
        projections::projector("service_desk").unwrap(),
        projections::projector("service_desk").unwrap(),
    ];
    let now = chrono::Utc::now();
    let (id, customer, technician) = (
        TicketId::from_uuid(Uuid::new_v4()),
        CustomerId::from_uuid(Uuid::new_v4()),
        TechnicianId::from_uuid(Uuid::new_v4()),
    );
    let commands = lifecycle(id, customer, technician, 7, now);
    let stream = stream_store::StreamId::for_aggregate(Ticket::STREAM_PREFIX, id);
    let mut ticket = Ticket::default();
    for (turn, command) in commands.into_iter().enumerate() {
        let events = ticket.decide(command, now).unwrap();
        let new = events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                data: e.to_data(),
            })
            .collect();
        db.store
            .append(&stream, ExpectedVersion::Any, new, &meta())
            .await
            .unwrap();
        ticket = events.iter().fold(ticket, |t, e| t.evolve(e));
        let runner = &runners[turn % 2];
        catch_up(&*db.store, &db.pool, &**runner).await.unwrap();
    }
    let row: (String, Option<Uuid>, Option<String>, i64, bool, bool) = sqlx::query_as(
        "SELECT status, assignee_id, resolution, version, assigned_at IS NOT NULL,
                started_at IS NOT NULL
         FROM tickets WHERE ticket_id = $1",
    )
    .bind(id.as_uuid())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let s = ticket.state().unwrap();
    assert_eq!(
        row,
        (
            s.status.label().to_owned(),
            s.assignee.map(|a| a.as_uuid()),
            s.resolution.as_ref().map(|r| r.as_str().to_owned()),
            4,
            true,
            true
        )
    );
}

/// Sets the event at `position` aside as the audit log's dead letter, as the runner does with
/// an event it cannot apply (its row is not in the live table).
async fn set_aside(pool: &sqlx::PgPool, position: i64) {
    sqlx::query("DELETE FROM audit_log WHERE position = $1")
        .bind(position)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, position, event_id, stream_id,
                event_type, schema_version, error, attempts, first_seen, last_seen)
         SELECT 'audit_log', position, event_id, stream_id, event_type, schema_version,
                'refused', 5, now(), now()
           FROM events WHERE position = $1",
    )
    .bind(position)
    .execute(pool)
    .await
    .unwrap();
}

/// A rebuild that copies the log in SQL leaves the dead letters out, as the Rust path does:
/// the rebuilt tables are the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_copied_in_sql_leaves_dead_letters_out() {
    let db = test_db().await;
    db.store
        .append(&stream("dead"), ExpectedVersion::Any, events(7), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &SqlOnly).await.unwrap(), 7);
    set_aside(&db.pool, 3).await;
    projections::rebuild(&db.store, &db.pool, &SqlOnly, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 4, 5, 6, 7]);
}

/// A dead letter retried while a rebuild runs (after the rebuild left it out) is in the
/// tables the rebuild puts in place: the retry is not undone by the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retried_during_a_rebuild_stays_applied() {
    let db = test_db().await;
    db.store
        .append(&stream("retry"), ExpectedVersion::Any, events(5), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 5);
    set_aside(&db.pool, 3).await;
    let (store, pool) = (db.store.clone(), db.pool.clone());
    let retried = std::sync::atomic::AtomicBool::new(false);
    // The retry runs after the rebuild has read the dead letters and copied the log.
    let progress = |_, _| {
        if !retried.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let report = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(projections::retry(&*store, &pool, &AuditLog, None))
            })
            .unwrap();
            assert_eq!(report.applied, vec![3]);
        }
    };
    projections::rebuild(&db.store, &db.pool, &AuditLog, &progress)
        .await
        .unwrap();
    assert!(retried.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
}

/// An event the live projection sets aside while a rebuild runs, which the rebuild applied,
/// is resolved by the swap: the rebuilt tables hold it, and a retry must not apply it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_set_aside_during_a_rebuild_that_applied_it_is_resolved() {
    let db = test_db().await;
    db.store
        .append(&stream("late"), ExpectedVersion::Any, events(5), &meta())
        .await
        .unwrap();
    assert_eq!(catch_up(&*db.store, &db.pool, &AuditLog).await.unwrap(), 5);
    let pool = db.pool.clone();
    let set = std::sync::atomic::AtomicBool::new(false);
    // Set aside after the rebuild has read the open dead letters and copied the log.
    let progress = |_, _| {
        if !set.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(set_aside(&pool, 3))
            });
        }
    };
    projections::rebuild(&db.store, &db.pool, &AuditLog, &progress)
        .await
        .unwrap();
    assert!(set.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(audit_rows(&db.pool).await, vec![1, 2, 3, 4, 5]);
    let open = projections::dead_letters(&db.pool, Some("audit_log"))
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
}
