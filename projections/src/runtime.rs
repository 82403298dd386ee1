use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use stream_store::{EventStore, RecordedEvent, StoreError};
use tokio_util::sync::CancellationToken;

/// Most events applied in one transaction.
const BATCH: usize = 500;
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at position {position} does not decode: {source}")]
    Decode {
        position: i64,
        source: domain::DecodeError,
    },
    #[error("read model database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds one read model from the global log.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Stable name; the key of its checkpoint.
    fn name(&self) -> &'static str;

    /// Applies one event inside the batch's transaction. Must ignore events it does not use.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// Every read model of the ledger.
pub fn all_projectors() -> Vec<Arc<dyn Projector>> {
    vec![Arc::new(crate::TicketQueue), Arc::new(crate::AuditLog)]
}

/// A projection's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub position: i64,
}

/// The checkpoint of every projection that has one.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, ProjectionError> {
    Ok(sqlx::query_as!(
        Checkpoint,
        "SELECT name, position FROM projection_checkpoints ORDER BY name"
    )
    .fetch_all(pool)
    .await?)
}

async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<i64, ProjectionError> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name
    )
    .execute(pool)
    .await?;
    Ok(sqlx::query_scalar!(
        "SELECT position FROM projection_checkpoints WHERE name = $1",
        name
    )
    .fetch_one(pool)
    .await?)
}

enum BatchOutcome {
    Applied(i64),
    /// Another process moved the checkpoint: nothing was applied; resume from here.
    Moved(i64),
}

/// Applies `events` (all after `from`) and moves the checkpoint, in one transaction. The
/// checkpoint row is locked and compared first, so two runners of one projection can never
/// both apply the same event.
async fn apply_batch(
    pool: &PgPool,
    projector: &dyn Projector,
    from: i64,
    events: &[RecordedEvent],
) -> Result<BatchOutcome, ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(BatchOutcome::Applied(from));
    };
    let mut tx = pool.begin().await?;
    let current = sqlx::query_scalar!(
        "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
        projector.name()
    )
    .fetch_one(&mut *tx)
    .await?;
    if current != from {
        return Ok(BatchOutcome::Moved(current));
    }
    for event in events {
        projector.apply(&mut tx, event).await?;
    }
    sqlx::query!(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
        projector.name(),
        last.position
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(BatchOutcome::Applied(last.position))
}

/// Applies everything up to the current head, then returns how many events were applied.
/// Tests use it to drain a projection without sleeping.
pub async fn catch_up(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
) -> Result<usize, ProjectionError> {
    let mut position = load_checkpoint(pool, projector.name()).await?;
    let mut applied = 0;
    loop {
        let events = store.read_all(position, BATCH).await?;
        if events.is_empty() {
            return Ok(applied);
        }
        match apply_batch(pool, projector, position, &events).await? {
            BatchOutcome::Applied(p) => {
                applied += events.len();
                position = p;
            }
            BatchOutcome::Moved(p) => position = p,
        }
    }
}

/// Runs every projector until `shutdown` is cancelled: catch up, then follow live appends.
pub async fn run_all(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projectors: Vec<Arc<dyn Projector>>,
    shutdown: CancellationToken,
) {
    let tasks: Vec<_> = projectors
        .into_iter()
        .map(|p| tokio::spawn(run_one(store.clone(), pool.clone(), p, shutdown.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn run_one(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projector: Arc<dyn Projector>,
    shutdown: CancellationToken,
) {
    let name = projector.name();
    while !shutdown.is_cancelled() {
        if let Err(e) = follow(&*store, &pool, &*projector, &shutdown).await {
            tracing::warn!(projection = name, error = %e, "projection stopped; retrying");
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
    tracing::debug!(projection = name, "projection stopped");
}

/// Follows the log from the stored checkpoint until shutdown or the first error.
async fn follow(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
    shutdown: &CancellationToken,
) -> Result<(), ProjectionError> {
    let mut position = load_checkpoint(pool, projector.name()).await?;
    let mut feed = store.subscribe_all(position).ready_chunks(BATCH);
    loop {
        let chunk = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            chunk = feed.next() => chunk,
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let events = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
        let span = tracing::debug_span!(
            "projection batch",
            projection = projector.name(),
            from = position,
            events = events.len()
        );
        let _guard = span.enter();
        match apply_batch(pool, projector, position, &events).await? {
            BatchOutcome::Applied(p) => position = p,
            BatchOutcome::Moved(p) => {
                // Another runner got ahead: re-subscribe from its checkpoint.
                tracing::info!(
                    projection = projector.name(),
                    checkpoint = p,
                    "checkpoint moved elsewhere"
                );
                position = p;
                feed = store.subscribe_all(position).ready_chunks(BATCH);
            }
        }
    }
}
