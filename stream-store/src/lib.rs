//! The stream store: append-only streams of events with a global, gap-free order.
//!
//! [`EventStore`] is the whole contract; [`PgEventStore`] is the PostgreSQL backend. This crate
//! knows events only as a type name, a schema version and a JSON payload.

mod cache;
mod copy_out;
mod error;
mod esdb;
mod postgres;
mod tail;
mod types;

pub use error::StoreError;
pub use esdb::EsdbEventStore;
pub use postgres::{PgEventStore, SUBSCRIPTION_PAGE};
pub use types::{
    Actor, AppendOutcome, AppendRequest, CommandMetadata, EventStream, ExpectedVersion, NewEvent,
    Payload, RecordedEvent, StreamId,
};

use async_trait::async_trait;
use uuid::Uuid;

/// The contract every backend meets (and the conformance suite in `tests/` checks).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to one stream atomically, if the stream is at `expected`.
    ///
    /// If `meta.command_id` was already appended for the same request (`meta.causation_id`),
    /// nothing is written and the first outcome is returned with `duplicate = true`; if for
    /// another request, nothing is written and the answer is `StoreError::CommandReused`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, StoreError>;

    /// Appends each request of `chain` in turn, each only if the one before it was appended
    /// (now, or by an earlier delivery of its request: a duplicate counts, a reuse does not). Answers one result
    /// per request up to and including the first that failed; the requests after it are not
    /// made. Not all-or-nothing: what was appended before a failure stays, exactly as if each
    /// request had been appended on its own in turn. A backend that can writes the whole
    /// chain with one commit (PostgreSQL: one `ledger_append` call in one writer batch), so a
    /// command that must claim a key before it appends (a ticket number) waits for one commit,
    /// not two.
    async fn append_chain(
        &self,
        chain: Vec<AppendRequest>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        let mut results = Vec::with_capacity(chain.len());
        for request in chain {
            let result = self
                .append(
                    &request.stream,
                    request.expected,
                    request.events,
                    &request.meta,
                )
                .await;
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

    /// The outcome of a command id that was already appended, if any.
    async fn find_command(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError>;

    /// Events of one stream with a version greater than `after_version`, in order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The first `through` events of one stream, read where the log is kept. A backend may
    /// answer `read_stream` from a copy that trails the log by a notification's delay; this
    /// never does, for readers that know the stream has reached `through` (a projector
    /// continuing a stream from a later event it was handed).
    async fn read_stream_through(
        &self,
        stream: &StreamId,
        through: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const PAGE: usize = 1000;
        let mut events: Vec<RecordedEvent> = Vec::new();
        loop {
            let after = events.last().map_or(0, |e| e.version);
            let Some(want) = usize::try_from(through - after).ok().filter(|n| *n > 0) else {
                return Ok(events);
            };
            let page = self.read_stream(stream, after, want.min(PAGE)).await?;
            if page.is_empty() {
                return Ok(events);
            }
            events.extend(page);
        }
    }

    /// Events of the global log with a position greater than `after`, in order.
    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last committed event (0 when the log is empty).
    async fn head(&self) -> Result<i64, StoreError>;

    /// Every event after `after`, then every new event as it is committed, without gaps or
    /// repeats at the hand-over from catch-up to live.
    fn subscribe_all(&self, after: i64) -> EventStream;

    /// The pool of the PostgreSQL database whose `public.events` table is this log, when the
    /// backend is PostgreSQL: projections kept in that same database may then read the log
    /// in SQL instead of through this process.
    fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        None
    }
}

/// Reads a whole stream (all pages).
pub async fn read_full_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, StoreError> {
    const PAGE: usize = 1000;
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &RecordedEvent| e.version);
        let page = store.read_stream(stream, after, PAGE).await?;
        let done = page.len() < PAGE;
        events.extend(page);
        if done {
            return Ok(events);
        }
    }
}
