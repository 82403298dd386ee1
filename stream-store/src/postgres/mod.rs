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
//! WAL flush instead of queueing for a commit each. A chain of appends (`append_chain`) is
//! handed to the writer whole and always lands in one batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::types::Json;
use sqlx::PgConnection;
use sqlx::Postgres;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cache::{StreamCache, MAX_STREAM_EVENTS};
use crate::copy_out::{EventRows, EVENT_COLUMNS};
use crate::tail::Tail;
mod subscription;
mod writer;

pub use subscription::SUBSCRIPTION_PAGE;
use subscription::{log_head, run_listener, Subscription};
use writer::{find_command, run_announcer, run_writer};

use crate::{
    Actor, AppendOutcome, AppendRequest, CommandMetadata, EventStore, EventStream, ExpectedVersion,
    NewEvent, Payload, RecordedEvent, StoreError, StreamId,
};

/// Channel on which every append batch announces its last position.
const NOTIFY_CHANNEL: &str = "ledger_events";
/// How many waiting requests (single appends or chains) one transaction takes at most.
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
    cache: Arc<StreamCache>,
    tail: Arc<Tail>,
    writer: mpsc::Sender<WriteRequest>,
    head: watch::Receiver<i64>,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// One append, as the writer takes it.
struct AppendJob {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<PendingEvent>,
    meta: CommandMetadata,
}

impl AppendJob {
    fn new(request: AppendRequest) -> Result<Self, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        Ok(Self {
            events: request
                .events
                .into_iter()
                .map(PendingEvent::new)
                .collect::<Result<_, _>>()?,
            stream: request.stream,
            expected: request.expected,
            meta: request.meta,
        })
    }
}

/// What the writer is handed: one append, or a chain of them, each made only if the one
/// before it was. Answered with one result per append, up to and including the first that
/// failed.
struct WriteRequest {
    chain: Vec<AppendJob>,
    reply: oneshot::Sender<Vec<Result<AppendOutcome, StoreError>>>,
}

/// An event to append, its payload already JSON text: made on the appender's task, not on the
/// writer's, which every append waits for.
struct PendingEvent {
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    data: Payload,
}

impl PendingEvent {
    fn new(e: NewEvent) -> Result<Self, StoreError> {
        let data = Payload::from_value(&e.data)?;
        // The `json` column takes the escape \u0000, but a payload holding it could not be
        // read as `jsonb` or `text` afterwards (migrations/0014): refused here, before the
        // batch it would join. The text test is cheap and settles almost every payload.
        if data.raw().get().contains("\\u0000") && has_nul(&e.data) {
            return Err(StoreError::Invalid(
                "event data contains characters PostgreSQL cannot store".into(),
            ));
        }
        Ok(Self {
            data,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
        })
    }
}

/// Whether a string or an object key anywhere in `value` holds U+0000.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl PgEventStore {
    /// Starts the writer and the LISTEN task. Must be called inside a tokio runtime. The
    /// schema comes from the workspace's `migrations/`.
    pub fn new(pool: PgPool) -> Self {
        let (head_tx, head_rx) = watch::channel(0);
        let (writer_tx, writer_rx) = mpsc::channel(4 * MAX_BATCH);
        let (committed_tx, committed_rx) = watch::channel(0);
        let head_tx = Arc::new(head_tx);
        let tail = Arc::new(Tail::default());
        tokio::spawn(run_writer(
            pool.clone(),
            writer_rx,
            (head_tx.clone(), committed_tx),
            tail.clone(),
        ));
        tokio::spawn(run_announcer(pool.clone(), committed_rx));
        let cache = Arc::new(StreamCache::new());
        let listener = tokio::spawn(run_listener(
            pool.clone(),
            head_tx,
            cache.clone(),
            tail.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                pool,
                cache,
                tail,
                writer: writer_tx,
                head: head_rx,
                listener,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Hands a chain to the writer and keeps the stream cache up to date with its outcome.
    async fn write(
        &self,
        chain: Vec<AppendJob>,
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable("the store's writer has stopped".into());
        self.inner
            .writer
            .send(WriteRequest { chain, reply })
            .await
            .map_err(|_| closed())?;
        let results = answer.await.map_err(|_| closed())?;
        for result in &results {
            match result {
                Ok(outcome) => self.inner.cache.appended(outcome),
                Err(StoreError::Conflict { stream, .. }) => {
                    self.inner.cache.forget(stream.as_str())
                }
                Err(_) => {}
            }
        }
        Ok(results)
    }

    /// `read_all` from the table, past this process's tail and head (which only move when an
    /// append is heard of).
    async fn read_all_from_table(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // COPY takes no parameters; both values are integers formatted here.
        let statement = format!(
            "COPY (SELECT {EVENT_COLUMNS} FROM events WHERE position > {after} \
             ORDER BY position LIMIT {limit}) TO STDOUT (FORMAT binary)",
            limit = limit_i64(limit)
        );
        let mut copying = CloseUnlessRead {
            conn: self.inner.pool.acquire().await?,
            read: false,
        };
        // Sized once: a rebuild reads pages of 10,000 events, which a growing vector copied
        // about twice over.
        let mut events = Vec::with_capacity(limit.min(READ_CAPACITY));
        let mut rows = EventRows::default();
        let mut decoded = Ok(());
        let mut chunks = copying.conn.copy_out_raw(&statement).await?;
        while let Some(chunk) = chunks.try_next().await? {
            // After a decoding error the output is still read to its end, which leaves the
            // connection ready for its next query.
            if decoded.is_ok() {
                decoded = rows.feed(&chunk, &mut events);
            }
        }
        drop(chunks);
        copying.read = true;
        decoded.and_then(|()| rows.finish())?;
        Ok(events)
    }
}

/// A connection reading a COPY's output: closed instead of returned to the pool unless the
/// output was read to its end (a read cut short, its future dropped or its connection failing,
/// leaves the server still sending rows the next user of the connection would receive).
struct CloseUnlessRead {
    conn: PoolConnection<Postgres>,
    read: bool,
}

impl Drop for CloseUnlessRead {
    fn drop(&mut self) {
        if !self.read {
            self.conn.close_on_drop();
        }
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
        let job = AppendJob::new(AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            meta: meta.clone(),
        })?;
        self.write(vec![job])
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("the writer gave no result".into())))
    }

    #[tracing::instrument(skip_all, fields(appends = chain.len()))]
    async fn append_chain(
        &self,
        chain: Vec<AppendRequest>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        // A request that cannot be sent fails there, and the chain stops before it.
        let mut jobs = Vec::with_capacity(chain.len());
        let mut refused = None;
        for request in chain {
            match AppendJob::new(request) {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let mut results = if jobs.is_empty() {
            Vec::new()
        } else {
            match self.write(jobs).await {
                Ok(results) => results,
                Err(e) => return vec![Err(e)],
            }
        };
        if let Some(e) = refused.filter(|_| results.iter().all(Result::is_ok)) {
            results.push(Err(e));
        }
        results
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        Ok(find_command(&self.inner.pool, command_id).await?)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let cache = &self.inner.cache;
        if let Some(events) = cache.read(stream.as_str(), after_version, limit) {
            return Ok(events);
        }
        let mark = cache.mark();
        let rows = sqlx::query_as!(
            EventRow,
            r#"SELECT position, stream_id, version, event_id, event_type, schema_version,
                    data AS "data: Json<Payload>",
                    command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
             FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"#,
            stream.as_str(),
            after_version,
            limit_i64(limit)
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let events: Vec<RecordedEvent> = rows.into_iter().map(RecordedEvent::from).collect();
        // Only a whole stream is worth keeping.
        if after_version == 0 && events.len() < limit && events.len() <= MAX_STREAM_EVENTS {
            cache.fill(stream.as_str(), &events, mark);
        }
        Ok(events)
    }

    /// From the table, never the stream cache (which may trail by a notification's delay).
    async fn read_stream_through(
        &self,
        stream: &StreamId,
        through: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            r#"SELECT position, stream_id, version, event_id, event_type, schema_version,
                    data AS "data: Json<Payload>",
                    command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
             FROM events WHERE stream_id = $1 AND version <= $2 ORDER BY version"#,
            stream.as_str(),
            through
        )
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let head = *self.inner.head.borrow();
        if let Some(events) = self.inner.tail.read_all(after, limit, head) {
            return Ok(events);
        }
        self.read_all_from_table(after, limit).await
    }

    async fn head(&self) -> Result<i64, StoreError> {
        Ok(log_head(&self.inner.pool).await?)
    }

    fn subscribe_all(&self, after: i64) -> EventStream {
        let state = Subscription {
            store: self.clone(),
            after,
            buffer: VecDeque::new(),
            head: self.inner.head.clone(),
            drained: false,
        };
        Box::pin(futures::stream::unfold(state, Subscription::next))
    }

    fn postgres_pool(&self) -> Option<&PgPool> {
        Some(&self.inner.pool)
    }
}

/// The most events a read reserves room for before it has any.
const READ_CAPACITY: usize = 16_384;

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
    data: Json<Payload>,
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
            data: r.data.0,
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
