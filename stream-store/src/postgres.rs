//! PostgreSQL backend.
//!
//! **Global order without skips.** All appends of a database serialise on one
//! transaction-scoped advisory lock, taken before the head position is read. Positions are
//! therefore assigned in commit order, and dense: a transaction that holds position P commits
//! and becomes visible before the next one can even read the head. A reader that has seen P
//! can never later find a committed event at or below P, so `WHERE position > checkpoint` is
//! safe.
//!
//! **Group commit.** One writer task per process drains every append that is waiting and
//! commits them in one transaction: concurrent commands share one lock acquisition and one
//! WAL flush instead of queueing for a commit each.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{
    Actor, AppendOutcome, CommandMetadata, EventStore, EventStream, ExpectedVersion, NewEvent,
    RecordedEvent, StoreError, StreamId,
};

/// Key of the advisory lock that serialises appends ("LEDGER" in ASCII).
const APPEND_LOCK_KEY: i64 = 0x4C45_4447_4552;
/// Channel on which every append batch announces its last position.
const NOTIFY_CHANNEL: &str = "ledger_events";
/// How many waiting appends one transaction takes at most.
const MAX_BATCH: usize = 256;
/// Subscribers re-read at least this often, even if a notification was lost.
const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// The PostgreSQL event store. Cheap to clone; all clones share one writer task.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    writer: mpsc::Sender<AppendJob>,
    head: watch::Receiver<i64>,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

struct AppendJob {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    meta: CommandMetadata,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

impl PgEventStore {
    /// Starts the writer and the LISTEN task. Must be called inside a tokio runtime. The
    /// schema comes from the workspace's `migrations/`.
    pub fn new(pool: PgPool) -> Self {
        let (head_tx, head_rx) = watch::channel(0);
        let (writer_tx, writer_rx) = mpsc::channel(4 * MAX_BATCH);
        let head_tx = Arc::new(head_tx);
        tokio::spawn(run_writer(pool.clone(), writer_rx, head_tx.clone()));
        let listener = tokio::spawn(run_listener(pool.clone(), head_tx));
        Self {
            inner: Arc::new(Inner {
                pool,
                writer: writer_tx,
                head: head_rx,
                listener,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    #[tracing::instrument(skip_all, fields(stream = %stream, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, StoreError> {
        if events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let job = AppendJob {
            stream: stream.clone(),
            expected,
            events,
            meta: meta.clone(),
            reply,
        };
        let closed = || StoreError::Unavailable("the store's writer has stopped".into());
        self.inner.writer.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            "SELECT position, stream_id, version, event_id, event_type, schema_version, data,
                    command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
             FROM events WHERE command_id = $1 ORDER BY position",
            command_id
        )
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(outcome(
            rows.into_iter().map(RecordedEvent::from).collect(),
            true,
        ))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            "SELECT position, stream_id, version, event_id, event_type, schema_version, data,
                    command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
             FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            stream.as_str(),
            after_version,
            limit_i64(limit)
        )
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            "SELECT position, stream_id, version, event_id, event_type, schema_version, data,
                    command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
             FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            after,
            limit_i64(limit)
        )
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    async fn head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT COALESCE(MAX(position), 0) AS "head!" FROM events"#)
                .fetch_one(&self.inner.pool)
                .await?,
        )
    }

    fn subscribe_all(&self, after: i64) -> EventStream {
        let state = Subscription {
            store: self.clone(),
            after,
            buffer: VecDeque::new(),
            head: self.inner.head.clone(),
        };
        Box::pin(futures::stream::unfold(state, Subscription::next))
    }
}

struct Subscription {
    store: PgEventStore,
    after: i64,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<i64>,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<RecordedEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Some((Ok(event), self));
            }
            // Mark the head as seen *before* reading: a commit after the read changes it again.
            self.head.borrow_and_update();
            match self.store.read_all(self.after, 512).await {
                Ok(events) if !events.is_empty() => self.buffer.extend(events),
                Ok(_) => {
                    if let Ok(Err(_)) =
                        tokio::time::timeout(POLL_FALLBACK, self.head.changed()).await
                    {
                        tokio::time::sleep(POLL_FALLBACK).await;
                    }
                }
                Err(e) => {
                    tokio::time::sleep(POLL_FALLBACK).await;
                    return Some((Err(e), self));
                }
            }
        }
    }
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Builds the outcome of one command from its recorded events (`None` if there are none).
fn outcome(events: Vec<RecordedEvent>, duplicate: bool) -> Option<AppendOutcome> {
    let last = events.last()?;
    Some(AppendOutcome {
        stream_id: last.stream_id.clone(),
        version: last.version,
        position: last.position,
        duplicate,
        events,
    })
}

struct EventRow {
    position: i64,
    stream_id: String,
    version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    data: serde_json::Value,
    command_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
    actor_id: String,
    actor_role: String,
    recorded_at: DateTime<Utc>,
}

impl From<EventRow> for RecordedEvent {
    fn from(r: EventRow) -> Self {
        RecordedEvent {
            position: r.position,
            // Stored names were validated when appended.
            stream_id: StreamId::trusted(r.stream_id),
            version: r.version,
            event_id: r.event_id,
            event_type: r.event_type,
            schema_version: r.schema_version,
            data: r.data,
            command_id: r.command_id,
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            actor: Actor {
                id: r.actor_id,
                role: r.actor_role,
            },
            recorded_at: r.recorded_at,
        }
    }
}

async fn run_writer(
    pool: PgPool,
    mut jobs: mpsc::Receiver<AppendJob>,
    head: Arc<watch::Sender<i64>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match append_batch(&pool, &batch).await {
            Ok((results, last)) => {
                head.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            // One job may have poisoned the whole transaction: retry each on its own so
            // the others are not failed for it.
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, jobs = batch.len(), "append batch failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = append_batch(&pool, std::slice::from_ref(&job)).await;
                    let result = match result {
                        Ok((mut results, last)) => {
                            head.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
                            results
                                .pop()
                                .unwrap_or_else(|| Err(StoreError::Invalid("no result".into())))
                        }
                        Err(e) => Err(classify(e)),
                    };
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                let e = classify(e);
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(e.to_string().into())));
                }
            }
        }
    }
}

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("events_event_id_key") => {
            StoreError::Invalid("an event id in this append already exists".into())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22P05") => {
            StoreError::Invalid("event data contains characters PostgreSQL cannot store".into())
        }
        _ => StoreError::from(e),
    }
}

/// Appends every job of the batch in one transaction. Returns one result per job and the last
/// position written (0 if none).
async fn append_batch(
    pool: &PgPool,
    jobs: &[AppendJob],
) -> Result<(Vec<Result<AppendOutcome, StoreError>>, i64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let head = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(position), 0) AS "head!" FROM events"#)
        .fetch_one(&mut *tx)
        .await?;

    let command_ids: Vec<Uuid> = jobs.iter().map(|j| j.meta.command_id).collect();
    let mut already: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
    for row in sqlx::query_as!(
        EventRow,
        "SELECT position, stream_id, version, event_id, event_type, schema_version, data,
                command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
         FROM events WHERE command_id = ANY($1) ORDER BY position",
        &command_ids
    )
    .fetch_all(&mut *tx)
    .await?
    {
        already.entry(row.command_id).or_default().push(row.into());
    }

    let stream_names: Vec<String> = jobs.iter().map(|j| j.stream.as_str().to_owned()).collect();
    let mut versions: HashMap<String, i64> = sqlx::query!(
        r#"SELECT stream_id, MAX(version) AS "version!" FROM events
           WHERE stream_id = ANY($1) GROUP BY stream_id"#,
        &stream_names
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.stream_id, r.version))
    .collect();

    let mut rows = Columns::default();
    let mut results = Vec::with_capacity(jobs.len());
    let mut position = head;
    for job in jobs {
        if let Some(previous) = already.get(&job.meta.command_id) {
            results.push(Ok(outcome(previous.clone(), true).expect("non-empty group")));
            continue;
        }
        let actual = versions.get(job.stream.as_str()).copied().unwrap_or(0);
        if !job.expected.admits(actual) {
            results.push(Err(StoreError::Conflict {
                stream: job.stream.clone(),
                expected: job.expected,
                actual,
            }));
            continue;
        }
        let mut recorded = Vec::with_capacity(job.events.len());
        for (offset, event) in (1..).zip(&job.events) {
            position += 1;
            let e = RecordedEvent {
                position,
                stream_id: job.stream.clone(),
                version: actual + offset,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.clone(),
                command_id: job.meta.command_id,
                correlation_id: job.meta.correlation_id,
                causation_id: job.meta.causation_id,
                actor: job.meta.actor.clone(),
                // PostgreSQL keeps microseconds: answer with what a later read returns.
                recorded_at: job.meta.recorded_at.trunc_subsecs(6),
            };
            rows.push(&e);
            recorded.push(e);
        }
        versions.insert(
            job.stream.as_str().to_owned(),
            actual + recorded.len() as i64,
        );
        // A second job with the same command id in this batch is a duplicate of this one.
        already.insert(job.meta.command_id, recorded.clone());
        results.push(Ok(outcome(recorded, false).expect("non-empty append")));
    }

    if position > head {
        rows.insert(&mut tx).await?;
        sqlx::query!(
            "SELECT pg_notify($1, $2)",
            NOTIFY_CHANNEL,
            position.to_string()
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((results, if position > head { position } else { 0 }))
}

/// The rows of one batch insert, column by column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    position: Vec<i64>,
    stream_id: Vec<String>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<serde_json::Value>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Uuid>,
    actor_id: Vec<String>,
    actor_role: Vec<String>,
    recorded_at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn push(&mut self, e: &RecordedEvent) {
        self.position.push(e.position);
        self.stream_id.push(e.stream_id.as_str().to_owned());
        self.version.push(e.version);
        self.event_id.push(e.event_id);
        self.event_type.push(e.event_type.clone());
        self.schema_version.push(e.schema_version);
        self.data.push(e.data.clone());
        self.command_id.push(e.command_id);
        self.correlation_id.push(e.correlation_id);
        self.causation_id.push(e.causation_id);
        self.actor_id.push(e.actor.id.clone());
        self.actor_role.push(e.actor.role.clone());
        self.recorded_at.push(e.recorded_at);
    }

    async fn insert(self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO events (position, stream_id, version, event_id, event_type,
                                 schema_version, data, command_id, correlation_id,
                                 causation_id, actor_id, actor_role, recorded_at)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[],
                                  $5::text[], $6::int[], $7::jsonb[], $8::uuid[], $9::uuid[],
                                  $10::uuid[], $11::text[], $12::text[], $13::timestamptz[])",
            &self.position,
            &self.stream_id,
            &self.version,
            &self.event_id,
            &self.event_type,
            &self.schema_version,
            &self.data,
            &self.command_id,
            &self.correlation_id,
            &self.causation_id,
            &self.actor_id,
            &self.actor_role,
            &self.recorded_at,
        )
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Follows NOTIFY on the events channel and publishes the newest head position. When the
/// connection drops, notifications may have been lost: subscribers are woken to re-read.
async fn run_listener(pool: PgPool, head: Arc<watch::Sender<i64>>) {
    while !pool.is_closed() {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => {
                    head.send_modify(|_| {});
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) => {
                                if let Ok(p) = n.payload().parse::<i64>() {
                                    head.send_if_modified(|h| {
                                        std::mem::replace(h, (*h).max(p)) < p
                                    });
                                }
                            }
                            Ok(None) => head.send_modify(|_| {}),
                            Err(_) if pool.is_closed() => return,
                            Err(e) => {
                                tracing::warn!(error = %e, "event listener lost its connection");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
            },
            Err(e) => tracing::warn!(error = %e, "event listener cannot connect"),
        }
        tokio::time::sleep(POLL_FALLBACK).await;
    }
}
