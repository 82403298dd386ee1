//! The projector runtime: what a projector is, how events reach it (in Rust or, where the
//! log is local, in SQL), and checkpoints. Following the log is `follow`; rebuilding a read
//! model from the whole log is `rebuild`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use stream_store::{EventStore, RecordedEvent, StoreError};

mod follow;
mod rebuild;
mod shadow;

pub use follow::{catch_up, catch_up_with, run_all, Leases};
pub use rebuild::rebuild;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at position {position} does not decode: {source}")]
    Decode {
        position: i64,
        source: domain::DecodeError,
    },
    #[error("read model row for the event at position {position} is corrupt: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("cannot copy the index {0:?} into a rebuild's schema")]
    Schema(String),
    #[error("unknown projection {0:?}")]
    Unknown(String),
    #[error("read model database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the rebuild's reader stopped: {0}")]
    Stopped(String),
    /// The live tables stayed locked through every attempt at the swap; the rebuilt tables
    /// were dropped and the live ones are as they were.
    #[error(
        "the rebuilt {projection} tables were not swapped in: the live ones stayed locked \
         through {attempts} attempts (held by: {holders})"
    )]
    SwapLocked {
        projection: &'static str,
        attempts: u32,
        /// Who held a lock on a live table when the rebuild gave up, one per backend.
        holders: String,
    },
}

/// Builds one read model from the global log.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Stable name; the key of its checkpoint and lease.
    fn name(&self) -> &'static str;

    /// The tables this projector alone writes; a rebuild replaces exactly these.
    fn tables(&self) -> &'static [&'static str];

    /// Applies a batch of consecutive events, in log order, inside the batch's transaction.
    /// Must ignore events it does not use, name its tables unqualified (a rebuild points
    /// `search_path` elsewhere) and read the time only from events, so that a rebuild produces
    /// the very same rows. The result must not depend on where the log is cut into batches.
    /// `log` is the store the events come from: a projector may read the earlier events of a
    /// stream from it (they never change) instead of keeping what it needs in its rows.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
        log: &dyn EventStore,
    ) -> Result<(), ProjectionError>;

    /// The same as `apply` in two steps, for a rebuild to compute one batch while it writes
    /// the one before: what the batch changes, computed without touching the read model's
    /// tables (so that it cannot depend on what the previous batch wrote), then the writes.
    /// `None` when the projector applies a batch only in one piece.
    ///
    /// A rebuild writes these changes with `Write::Appending` until the whole log is loaded.
    async fn prepare(
        &self,
        _events: &[RecordedEvent],
        _log: &dyn EventStore,
    ) -> Result<Option<Box<dyn Changes>>, ProjectionError> {
        Ok(None)
    }

    /// Tables whose rows a rebuild appends while it loads the log, instead of updating them
    /// in place: they get their keys only once loaded (a sorted build is far cheaper than a
    /// million lookups and inserts into a key index), after which each key keeps only the row
    /// with its highest version. For tables whose rows are rewritten whole at each change, of
    /// a projector whose `prepare` splits its batches (only those writes know `Write`).
    fn appended_in_rebuild(&self) -> &'static [AppendedTable] {
        &[]
    }

    /// Whether a rebuild's load inserts each key of every table at most once (no upserts,
    /// no rewritten rows), so that the tables' keys too can be built once the log is loaded,
    /// like their other indexes (a duplicate key then fails the build, and the rebuild).
    fn inserts_each_key_once(&self) -> bool {
        false
    }

    /// Applies the events at positions `after < p <= up_to` reading them straight from the
    /// log's table in SQL, which the runtime asks for only when the log is the `events` table
    /// of this very database. Must write the rows `apply` writes for those events, except
    /// that it may leave to readers what they can read from the log's table itself (the
    /// audit log leaves the payloads).
    /// The positions in `skip` (dead letters) are left out.
    /// Returns `false` (having done nothing) when the projector has no such path. A rebuild
    /// copies disjoint ranges at the same time, each in its own transaction and in any order,
    /// so the rows of one position must not depend on the rows of another.
    async fn apply_from_log(
        &self,
        _tx: &mut PgConnection,
        _after: i64,
        _up_to: i64,
        _skip: &[i64],
    ) -> Result<bool, ProjectionError> {
        Ok(false)
    }
}

/// The writes of one batch, computed by `Projector::prepare`.
#[async_trait]
pub trait Changes: Send {
    /// Writes them inside the batch's transaction (unqualified table names, as `apply`).
    async fn write(
        self: Box<Self>,
        tx: &mut PgConnection,
        how: Write,
    ) -> Result<(), ProjectionError>;

    /// The keys of the rows these changes append to each table of
    /// `Projector::appended_in_rebuild` (in that order), so that a rebuild looks for older
    /// rows only under keys appended more than once. `None`: not known (every key is then
    /// looked at).
    fn appended_keys(&self) -> Option<Vec<&[uuid::Uuid]>> {
        None
    }
}

/// How a batch's writes meet the rows of earlier batches in the tables of
/// `Projector::appended_in_rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Update them in place: the tables have their keys.
    InPlace,
    /// A rebuild's load: the tables have no keys yet; a changed row is appended as a whole,
    /// with its new version.
    Appending,
}

/// A table a rebuild loads by appending rows (see `Projector::appended_in_rebuild`).
#[derive(Debug, Clone, Copy)]
pub struct AppendedTable {
    pub table: &'static str,
    /// The column that identifies a row (its primary key, a UUID).
    pub key: &'static str,
    /// The column that grows with each change of a row.
    pub version: &'static str,
}

/// Whether the log is the `public.events` table of the read models' own database (the
/// PostgreSQL store on the same database), so that projectors may read it in SQL.
async fn log_is_local(store: &dyn EventStore, pool: &PgPool) -> Result<bool, ProjectionError> {
    let Some(log) = store.postgres_pool() else {
        return Ok(false);
    };
    async fn identity(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar!(
            "SELECT current_database()::text || ' ' || pg_postmaster_start_time()::text || ' '
                    || to_regclass('public.events')::oid::text"
        )
        .fetch_one(pool)
        .await
    }
    let here = identity(pool).await?;
    Ok(here.is_some() && identity(log).await? == here)
}

/// Applies `events`, the ones right after `after`, but for those at the positions in `skip`
/// (dead letters), in SQL from the log's table when it is local and the projector can, else
/// through the projector's Rust code.
pub(crate) async fn apply_events(
    tx: &mut PgConnection,
    projector: &dyn Projector,
    log: Log<'_>,
    after: i64,
    (events, skip): (&[RecordedEvent], &HashSet<i64>),
) -> Result<(), ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    if log.local {
        let skip: Vec<i64> = skip
            .iter()
            .copied()
            .filter(|p| (after + 1..=last.position).contains(p))
            .collect();
        if projector
            .apply_from_log(tx, after, last.position, &skip)
            .await?
        {
            return Ok(());
        }
    }
    let kept = without(events, skip);
    if kept.is_empty() {
        return Ok(());
    }
    projector.apply(tx, &kept, log.store).await
}

/// The store a projection follows, and whether it is the `events` table of the read models'
/// own database.
#[derive(Clone, Copy)]
pub(crate) struct Log<'a> {
    store: &'a dyn EventStore,
    local: bool,
}

impl<'a> Log<'a> {
    pub(crate) async fn of(
        store: &'a dyn EventStore,
        pool: &PgPool,
    ) -> Result<Self, ProjectionError> {
        let local = log_is_local(store, pool).await?;
        Ok(Self { store, local })
    }
}

/// Every read model of the ledger.
pub fn all_projectors() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(crate::ServiceDesk::default()),
        Arc::new(crate::AuditLog),
        Arc::new(crate::Users),
    ]
}

/// The projector called `name`.
pub fn projector(name: &str) -> Result<Arc<dyn Projector>, ProjectionError> {
    all_projectors()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
}

/// A projection's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub position: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The checkpoint of every projection that has one.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, ProjectionError> {
    Ok(sqlx::query_as!(
        Checkpoint,
        "SELECT name, position, updated_at FROM public.projection_checkpoints ORDER BY name"
    )
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<i64, ProjectionError> {
    sqlx::query!(
        "INSERT INTO public.projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar!(
        "SELECT position FROM public.projection_checkpoints WHERE name = $1",
        name
    )
    .fetch_one(pool)
    .await?)
}

/// Sets the checkpoint, in the transaction that applied the events before it.
pub(crate) async fn move_checkpoint(
    tx: &mut PgConnection,
    name: &str,
    position: i64,
) -> Result<(), ProjectionError> {
    sqlx::query!(
        "UPDATE public.projection_checkpoints SET position = $2, updated_at = now()
          WHERE name = $1",
        name,
        position
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Tells every listening process (read-your-writes waits, GraphQL subscriptions) that the
/// projection moved, once the move has committed, in a transaction of its own: PostgreSQL
/// keeps notifying transactions in line on one lock until their commit is flushed, so a NOTIFY
/// inside the batch made projection batches and append batches wait for each other's WAL flush
/// (see migrations/0009). A notification lost to a crash right after the commit is made up for
/// by the listeners, which re-read the checkpoints when they have heard nothing for a while;
/// so a failure here fails nothing.
pub(crate) async fn announce(conn: &mut PgConnection, name: &str, position: i64) {
    let sent = sqlx::query!(
        "SELECT pg_notify('ledger_projections', $1)",
        format!("{name}:{position}")
    )
    .execute(conn)
    .await;
    if let Err(e) = sent {
        tracing::warn!(projection = name, error = %e, "could not announce the checkpoint");
    }
}

/// `events` but for those at the positions in `skip`.
pub(crate) fn without<'a>(
    events: &'a [RecordedEvent],
    skip: &HashSet<i64>,
) -> std::borrow::Cow<'a, [RecordedEvent]> {
    if skip.is_empty() || !events.iter().any(|e| skip.contains(&e.position)) {
        return std::borrow::Cow::Borrowed(events);
    }
    std::borrow::Cow::Owned(
        events
            .iter()
            .filter(|e| !skip.contains(&e.position))
            .cloned()
            .collect(),
    )
}
