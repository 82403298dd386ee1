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

struct Subscription {
    store: PgEventStore,
    after: i64,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<i64>,
    /// The last read came back short: it reached the head as it was when the read began, so
    /// there is nothing more to read until the head moves.
    drained: bool,
}

/// Events per read of a subscription.
pub const SUBSCRIPTION_PAGE: usize = 512;

impl Subscription {
    async fn next(mut self) -> Option<(Result<RecordedEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Some((Ok(event), self));
            }
            let mut heard = true;
            if std::mem::take(&mut self.drained) {
                heard = self.wait_for_head().await;
            }
            // Mark the head as seen *before* reading: a commit after the read changes it again.
            self.head.borrow_and_update();
            // Nothing heard for a while: ask the table itself, should an announcement be lost.
            let read = if heard {
                self.store.read_all(self.after, SUBSCRIPTION_PAGE).await
            } else {
                self.store
                    .read_all_from_table(self.after, SUBSCRIPTION_PAGE)
                    .await
            };
            match read {
                Ok(events) if !events.is_empty() => {
                    self.drained = events.len() < SUBSCRIPTION_PAGE;
                    self.buffer.extend(events);
                }
                Ok(_) => self.drained = true,
                Err(e) => {
                    tokio::time::sleep(POLL_FALLBACK).await;
                    return Some((Err(e), self));
                }
            }
        }
    }

    /// Until the head moves past what was seen (true), or `POLL_FALLBACK` passed without a
    /// word (false).
    async fn wait_for_head(&mut self) -> bool {
        match tokio::time::timeout(POLL_FALLBACK, self.head.changed()).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                tokio::time::sleep(POLL_FALLBACK).await;
                false
            }
            Err(_) => false,
        }
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

/// The writer's own session: appends never wait for a pool connection, nor pay the pool's
/// liveness check, and a broken session is replaced on the next batch.
struct WriterSession {
    pool: PgPool,
    conn: Option<PgConnection>,
}

impl WriterSession {
    async fn append(&mut self, requests: &[WriteRequest]) -> Result<(Answers, i64), sqlx::Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => {
                let conn = self.pool.acquire().await?.detach();
                empty.insert(conn)
            }
        };
        let result = append_batch(conn, requests).await;
        if let Err(e) = &result {
            if !matches!(e, sqlx::Error::Database(_)) {
                // The session may be broken (server restarted, network): start a new one.
                self.conn = None;
            }
        }
        result
    }
}

/// Hands the events of committed appends to the tail, then announces the new head: a
/// subscriber woken by the head finds them there. Other processes hear of it from the
/// announcer (`committed`).
fn publish<'a>(
    tail: &Tail,
    (head, committed): &Heads,
    results: impl IntoIterator<Item = &'a Result<AppendOutcome, StoreError>>,
    last: i64,
) {
    let events = results
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|o| !o.duplicate)
        .flat_map(|o| o.events.iter().cloned().map(Arc::new))
        .collect();
    tail.committed(events);
    head.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
    committed.send_if_modified(|h| std::mem::replace(h, (*h).max(last)) < last);
}

/// This process's head (what its subscribers follow) and the last position its writer
/// committed (what the announcer tells other processes).
type Heads = (Arc<watch::Sender<i64>>, watch::Sender<i64>);

/// NOTIFYs every other process of this process's committed appends, after their commit and in
/// a transaction of its own (see migrations/0009: inside the append it made every notifying
/// commit wait for the others' WAL flush). Announcements coalesce: while one is sent, later
/// commits only raise the position the next one carries. A notification lost to a crash right
/// after a commit is made up for by the listeners, which re-read the head when they have heard
/// nothing for `POLL_FALLBACK`.
async fn run_announcer(pool: PgPool, mut committed: watch::Receiver<i64>) {
    while committed.changed().await.is_ok() {
        let last = committed.borrow_and_update().to_string();
        let sent = sqlx::query!("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, last)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not announce appended events");
        }
    }
}

/// One answer per write request: its results, up to and including the first failure.
type Answers = Vec<Vec<Result<AppendOutcome, StoreError>>>;

async fn run_writer(
    pool: PgPool,
    mut requests: mpsc::Receiver<WriteRequest>,
    heads: Heads,
    tail: Arc<Tail>,
) {
    let mut session = WriterSession { pool, conn: None };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let outcome = session.append(&batch).await;
        tracing::debug!(
            requests = batch.len(),
            micros = started.elapsed().as_micros() as u64,
            "append batch"
        );
        match outcome {
            Ok((answers, last)) => {
                publish(&tail, &heads, answers.iter().flatten(), last);
                for (request, answer) in batch.drain(..).zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            // One request may have poisoned the whole transaction: retry each on its own (a
            // chain stays whole) so the others are not failed for it.
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, requests = batch.len(), "append batch failed; retrying one by one");
                tail.clear();
                for request in batch.drain(..) {
                    let answer = match session.append(std::slice::from_ref(&request)).await {
                        Ok((mut answers, last)) => {
                            publish(&tail, &heads, answers.iter().flatten(), last);
                            answers.pop().unwrap_or_default()
                        }
                        Err(e) => {
                            tail.clear();
                            vec![Err(classify(e))]
                        }
                    };
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                // The batch may have committed all the same: its events are not known here.
                tail.clear();
                // One request (the arm above takes larger batches), answered as each request
                // of a retried batch is: a refusal by the database stays Invalid.
                if let Some(request) = batch.pop() {
                    let _ = request.reply.send(vec![Err(classify(e))]);
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

/// Appends every request of the batch in one statement, `ledger_append` (migrations/0004,
/// 0011, 0014): one round trip and one commit for the whole batch. Returns one answer per
/// request and the last position written (0 if none).
async fn append_batch(
    conn: &mut PgConnection,
    requests: &[WriteRequest],
) -> Result<(Answers, i64), sqlx::Error> {
    let mut j = JobColumns::default();
    let mut e = EventColumns::default();
    let jobs: Vec<&AppendJob> = requests.iter().flat_map(|r| &r.chain).collect();
    for request in requests {
        // Each append of a chain after the first requires the one before it (1-based).
        let first = i32::try_from(j.stream.len() + 1).unwrap_or(i32::MAX);
        for (k, job) in (0..).zip(&request.chain) {
            j.after.push((k > 0).then(|| first + k - 1));
            j.push(job);
        }
    }
    for (index, job) in (1..).zip(&jobs) {
        for (offset, event) in (1..).zip(&job.events) {
            e.job.push(index);
            e.offset.push(offset);
            e.event_id.push(event.event_id);
            e.event_type.push(&event.event_type);
            e.schema_version.push(event.schema_version);
            e.data.push(event.data.raw().get());
        }
    }
    let rows = sqlx::query!(
        r#"SELECT job AS "job!", status AS "status!", version, last_position
           FROM ledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                              $16::text[]::json[])"#,
        &j.stream as &[&str],
        &j.expected as &[Option<i64>],
        &j.count,
        &j.command_id,
        &j.correlation_id,
        &j.causation_id,
        &j.actor_id as &[&str],
        &j.actor_role as &[&str],
        &j.recorded_at,
        &j.after as &[Option<i32>],
        &e.job,
        &e.offset,
        &e.event_id,
        &e.event_type as &[&str],
        &e.schema_version,
        &e.data as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?;

    // One result per job; None for a job skipped because the one it required failed.
    let mut results: Vec<Option<Result<AppendOutcome, StoreError>>> =
        Vec::with_capacity(jobs.len());
    let mut last_written = 0;
    for (job, row) in jobs.iter().zip(rows) {
        let result = match (row.status.as_str(), row.version, row.last_position) {
            ("skipped", _, _) => {
                results.push(None);
                continue;
            }
            ("appended", Some(version), Some(last)) => {
                last_written = last_written.max(last);
                Ok(recorded(job, version, last))
            }
            ("conflict", Some(actual), _) => Err(StoreError::Conflict {
                stream: job.stream.clone(),
                expected: job.expected,
                actual,
            }),
            ("duplicate", _, _) => {
                // A job earlier in this batch, or a command recorded before.
                let earlier = jobs.iter().zip(&results).find_map(|(other, r)| match r {
                    Some(Ok(o)) if other.meta.command_id == job.meta.command_id && !o.duplicate => {
                        Some(o.clone())
                    }
                    _ => None,
                });
                match earlier {
                    Some(o) => Ok(AppendOutcome {
                        duplicate: true,
                        ..o
                    }),
                    None => find_command(&mut *conn, job.meta.command_id)
                        .await?
                        .ok_or_else(|| StoreError::Invalid("a duplicate without events".into())),
                }
            }
            (status, _, _) => Err(StoreError::Invalid(format!(
                "ledger_append answered {status:?}"
            ))),
        };
        results.push(Some(result));
    }
    let mut results = results.into_iter();
    let answers = requests
        .iter()
        .map(|request| {
            let mut answer = Vec::with_capacity(request.chain.len());
            for result in results.by_ref().take(request.chain.len()) {
                if answer.last().is_some_and(Result::is_err) {
                    continue; // past the chain's first failure: skipped
                }
                answer.push(result.unwrap_or_else(|| {
                    Err(StoreError::Invalid(
                        "ledger_append skipped an append whose predecessor succeeded".into(),
                    ))
                }));
            }
            answer
        })
        .collect();
    Ok((answers, last_written))
}

/// The events of an appended job, as `ledger_append` numbered them.
fn recorded(job: &AppendJob, version: i64, last: i64) -> AppendOutcome {
    let n = job.events.len() as i64;
    let events: Vec<RecordedEvent> = (1..)
        .zip(&job.events)
        .map(|(k, event)| RecordedEvent {
            position: last - n + k,
            stream_id: job.stream.clone(),
            version: version - n + k,
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
        })
        .collect();
    AppendOutcome {
        stream_id: job.stream.clone(),
        version,
        position: last,
        duplicate: false,
        events,
    }
}

async fn find_command(
    db: impl sqlx::PgExecutor<'_>,
    command_id: Uuid,
) -> Result<Option<AppendOutcome>, sqlx::Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT position, stream_id, version, event_id, event_type, schema_version,
                    data AS "data: Json<Payload>",
                command_id, correlation_id, causation_id, actor_id, actor_role, recorded_at
         FROM events WHERE command_id = $1 ORDER BY position"#,
        command_id
    )
    .fetch_all(db)
    .await?;
    Ok(outcome(
        rows.into_iter().map(RecordedEvent::from).collect(),
        true,
    ))
}

/// The jobs of one batch, column by column.
#[derive(Default)]
struct JobColumns<'a> {
    stream: Vec<&'a str>,
    /// The job (1-based) that must have been appended, or be a duplicate, for this one to be.
    after: Vec<Option<i32>>,
    expected: Vec<Option<i64>>,
    count: Vec<i32>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Uuid>,
    actor_id: Vec<&'a str>,
    actor_role: Vec<&'a str>,
    recorded_at: Vec<DateTime<Utc>>,
}

impl<'a> JobColumns<'a> {
    fn push(&mut self, job: &'a AppendJob) {
        self.stream.push(job.stream.as_str());
        self.expected.push(match job.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        });
        self.count
            .push(i32::try_from(job.events.len()).unwrap_or(i32::MAX));
        self.command_id.push(job.meta.command_id);
        self.correlation_id.push(job.meta.correlation_id);
        self.causation_id.push(job.meta.causation_id);
        self.actor_id.push(&job.meta.actor.id);
        self.actor_role.push(&job.meta.actor.role);
        self.recorded_at.push(job.meta.recorded_at);
    }
}

/// The events of one batch, column by column; `job` and `offset` are 1-based.
#[derive(Default)]
struct EventColumns<'a> {
    job: Vec<i32>,
    offset: Vec<i32>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    /// JSON text, cast to `json` in the statement (migrations/0014).
    data: Vec<&'a str>,
}

/// Follows NOTIFY on the events channel: publishes the newest head position and tells the
/// stream cache which streams changed. When the connection drops, notifications may have been
/// lost: the cache is emptied and subscribers are woken to re-read.
async fn run_listener(
    pool: PgPool,
    head: Arc<watch::Sender<i64>>,
    cache: Arc<StreamCache>,
    tail: Arc<Tail>,
) {
    while !pool.is_closed() {
        cache.reset(None);
        if let Err(e) = follow_log(&pool, &head, &cache, &tail).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "event listener lost its connection");
        }
        cache.reset(None);
        head.send_modify(|_| {});
        tokio::time::sleep(POLL_FALLBACK).await;
    }
}

/// The last position in the log (0 when empty).
async fn log_head<'c>(conn: impl sqlx::PgExecutor<'c>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT COALESCE(MAX(position), 0) AS "head!" FROM events"#)
        .fetch_one(conn)
        .await
}

async fn follow_log(
    pool: &PgPool,
    head: &watch::Sender<i64>,
    cache: &StreamCache,
    tail: &Tail,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    // Listening already: every later append is announced, everything before is in the head.
    let now = log_head(&mut listener).await?;
    cache.reset(Some(now));
    head.send_modify(|h| *h = (*h).max(now));
    loop {
        let p = match tokio::time::timeout(POLL_FALLBACK, listener.try_recv()).await {
            Ok(Ok(Some(n))) => match n.payload().parse::<i64>() {
                Ok(p) => p,
                Err(_) => continue,
            },
            // The connection was lost: notifications may have been missed.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            // Quiet: a writer that died between its commit and its announcement is heard of here.
            // Asked on a pooled connection: the listener's own was cut off mid-receive, and
            // sqlx does not promise that a query on it then finds the protocol where it expects.
            Err(_) => log_head(pool).await?,
        };
        if let Some(from) = cache.mark().filter(|from| *from < p) {
            // This process's own batches are known without asking.
            if let Some(changes) = tail.changes(from, p) {
                cache.changed(&changes, p);
                head.send_if_modified(|h| std::mem::replace(h, (*h).max(p)) < p);
                continue;
            }
            let changes = sqlx::query!(
                r#"SELECT stream_id, MAX(version) AS "version!" FROM events
                   WHERE position > $1 AND position <= $2 GROUP BY stream_id"#,
                from,
                p
            )
            .fetch_all(&mut listener)
            .await?;
            let changes: Vec<(String, i64)> = changes
                .into_iter()
                .map(|r| (r.stream_id, r.version))
                .collect();
            cache.changed(&changes, p);
        }
        head.send_if_modified(|h| std::mem::replace(h, (*h).max(p)) < p);
    }
}
