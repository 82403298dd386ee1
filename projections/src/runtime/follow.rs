//! Following the log: one runner per projection holds its lease, applies batches with their
//! checkpoint in one transaction, and sets poison events aside.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use sqlx::{Connection, PgConnection, PgPool};
use stream_store::{EventStore, RecordedEvent};
use tokio_util::sync::CancellationToken;

use super::{announce, apply_events, load_checkpoint, Log, ProjectionError, Projector};
use crate::dead_letters::{is_poison, quarantine, Failing, OnPoison, PoisonPolicies, PoisonPolicy};

/// Most events applied in one transaction while following the log: one page of the
/// PostgreSQL store's subscription, so that catching up applies whole pages (with 500, every
/// page of 512 also made a transaction of 12 events, which `LINGER` then held back).
const BATCH: usize = stream_store::SUBSCRIPTION_PAGE;
/// After a batch that was not full, the least time before the next one starts: every commit
/// waits for its own flush of the WAL, and the append writer's commits wait behind the
/// projections' (at one client a command took 1.3 ms with both projections following, 0.9
/// ms without). Under load the events of a few milliseconds go in one transaction, and a
/// ticket changed several times in them is written once; a quiet log's next event is applied
/// at once. 10 ms against 3 ms: 32 HTTP clients 8,289 / 8,196 → 10,154 / 9,583 commands/s,
/// visibility at 1,000 commands/s p99 14.3 / 10.5 → 16.0 / 16.4 ms (target 50); 20 ms gained
/// little more (10,456) for a p99 of 27.6 ms (BENCHMARKS.md, sixteenth round).
const LINGER: Duration = Duration::from_millis(10);

const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a runner without the lease tries to take it, and a holder checks it still has it.
const LEASE_INTERVAL: Duration = Duration::from_secs(1);
/// First key of the projection leases' advisory locks (the second is the name's hash).
const LEASE_CLASS: i32 = 0x4C45_4447;

enum BatchOutcome {
    Applied(i64),
    /// Another process moved the checkpoint: nothing was applied; resume from here.
    Moved(i64),
}

/// Applies `events` (all after `from`) and moves the checkpoint, in one transaction. The
/// checkpoint is moved first, only from `from` (which locks its row), so two runners of one
/// projection (or a runner and a rebuild) can never both apply the same event; moving it
/// before the events are applied saves the batch a round trip, and the commit makes both
/// visible at once.
async fn apply_batch(
    conn: &mut PgConnection,
    projector: &dyn Projector,
    log: Log<'_>,
    from: i64,
    events: &[RecordedEvent],
) -> Result<BatchOutcome, ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(BatchOutcome::Applied(from));
    };
    let mut tx = conn.begin().await?;
    let claimed = sqlx::query!(
        "UPDATE public.projection_checkpoints SET position = $3, updated_at = now()
          WHERE name = $1 AND position = $2",
        projector.name(),
        from,
        last.position
    )
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        let current = sqlx::query_scalar!(
            "SELECT position FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE",
            projector.name()
        )
        .fetch_one(&mut *tx)
        .await?;
        return Ok(BatchOutcome::Moved(current));
    }
    apply_events(&mut tx, projector, log, from, (events, &HashSet::new())).await?;
    tx.commit().await?;
    announce(conn, projector.name(), last.position).await;
    Ok(BatchOutcome::Applied(last.position))
}

/// A batch of events right after `from`, read from `log`.
#[derive(Clone, Copy)]
struct Batch<'a> {
    log: Log<'a>,
    from: i64,
    events: &'a [RecordedEvent],
}

/// `apply_batch`, or, when the batch fails on an event (not on the database being away),
/// the batch one event at a time: each event is tried `policy.attempts` times with backoff,
/// and one that still fails is set aside as a dead letter (the checkpoint moves past it)
/// under `OnPoison::Quarantine`, or fails the batch under `OnPoison::Stop`.
async fn apply_guarded(
    conn: &mut PgConnection,
    projector: &dyn Projector,
    batch: Batch<'_>,
    policy: PoisonPolicy,
    shutdown: &CancellationToken,
) -> Result<BatchOutcome, ProjectionError> {
    let Batch { log, from, events } = batch;
    match apply_batch(conn, projector, log, from, events).await {
        Err(e) if is_poison(&e) && policy.on_poison == OnPoison::Quarantine => {
            tracing::warn!(projection = projector.name(), error = %e,
                "a batch failed on an event; applying it one event at a time");
        }
        other => return other,
    }
    let mut position = from;
    for event in events {
        let mut failing = Failing {
            first_seen: chrono::Utc::now(),
            attempts: 0,
        };
        loop {
            let single = std::slice::from_ref(event);
            let error = match apply_batch(conn, projector, log, position, single).await {
                Ok(BatchOutcome::Applied(p)) => {
                    position = p;
                    break;
                }
                Ok(moved @ BatchOutcome::Moved(_)) => return Ok(moved),
                Err(e) if is_poison(&e) => e,
                Err(e) => return Err(e),
            };
            failing.attempts += 1;
            if failing.attempts >= policy.attempts.max(1) {
                if !quarantine(conn, projector.name(), position, event, &error, &failing).await? {
                    let current = load_checkpoint_on(conn, projector.name()).await?;
                    return Ok(BatchOutcome::Moved(current));
                }
                announce(conn, projector.name(), event.position).await;
                position = event.position;
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Err(error),
                () = tokio::time::sleep(policy.backoff(failing.attempts)) => {}
            }
        }
    }
    Ok(BatchOutcome::Applied(position))
}

async fn load_checkpoint_on(conn: &mut PgConnection, name: &str) -> Result<i64, ProjectionError> {
    Ok(sqlx::query_scalar!(
        "SELECT position FROM public.projection_checkpoints WHERE name = $1",
        name
    )
    .fetch_one(conn)
    .await?)
}

/// Applies everything up to the current head, then returns how many events were applied.
/// Tests use it to drain a projection without sleeping. The first event that fails stops it
/// with its error (`PoisonPolicy::STOP`); `catch_up_with` takes another policy.
pub async fn catch_up(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
) -> Result<usize, ProjectionError> {
    catch_up_with(store, pool, projector, PoisonPolicy::STOP).await
}

/// `catch_up` with the given handling of poison events. Events set aside count as applied.
pub async fn catch_up_with(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
    policy: PoisonPolicy,
) -> Result<usize, ProjectionError> {
    let mut position = load_checkpoint(pool, projector.name()).await?;
    let log = Log::of(store, pool).await?;
    let mut conn = pool.acquire().await?;
    let mut applied = 0;
    let never = CancellationToken::new();
    loop {
        let events = store.read_all(position, BATCH).await?;
        if events.is_empty() {
            return Ok(applied);
        }
        let batch = Batch {
            log,
            from: position,
            events: &events,
        };
        match apply_guarded(&mut conn, projector, batch, policy, &never).await? {
            BatchOutcome::Applied(p) => {
                applied += events.len();
                position = p;
            }
            BatchOutcome::Moved(p) => position = p,
        }
    }
}

/// Which projections this process runs right now (it holds their leases).
#[derive(Clone, Default)]
pub struct Leases(Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>>);

impl Leases {
    pub fn held(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    fn set(&self, name: &'static str, held: bool) {
        if let Ok(mut set) = self.0.lock() {
            if held {
                set.insert(name);
            } else {
                set.remove(name);
            }
        }
    }
}

/// Runs every projector until `shutdown` is cancelled. Each projection runs in one process at a
/// time: the one that holds its lease (a session advisory lock); the others wait and take over
/// within about a second when the holder's session ends.
pub async fn run_all(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projectors: Vec<Arc<dyn Projector>>,
    leases: Leases,
    policies: PoisonPolicies,
    shutdown: CancellationToken,
) {
    let tasks: Vec<_> = projectors
        .into_iter()
        .map(|p| {
            let policy = policies.of(p.name());
            tokio::spawn(run_one(
                store.clone(),
                pool.clone(),
                p,
                leases.clone(),
                policy,
                shutdown.clone(),
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn pause(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

async fn run_one(
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projector: Arc<dyn Projector>,
    leases: Leases,
    policy: PoisonPolicy,
    shutdown: CancellationToken,
) {
    let name = projector.name();
    while !shutdown.is_cancelled() {
        let mut lease = match take_lease(&pool, name).await {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                pause(&shutdown, LEASE_INTERVAL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "cannot ask for the lease");
                pause(&shutdown, RETRY_AFTER).await;
                continue;
            }
        };
        tracing::info!(projection = name, "running projection (lease taken)");
        leases.set(name, true);
        let outcome = follow(&*store, &pool, &mut lease, &*projector, policy, &shutdown).await;
        leases.set(name, false);
        // Ending the session releases the lease for another process.
        let _ = lease.close().await;
        if let Err(e) = outcome {
            tracing::warn!(projection = name, error = %e, "projection stopped; retrying");
            pause(&shutdown, RETRY_AFTER).await;
        }
    }
    tracing::debug!(projection = name, "projection stopped");
}

/// A dedicated session holding the projection's lease, or `None` if another process holds it.
async fn take_lease(pool: &PgPool, name: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    let taken = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1, hashtext($2)) AS "taken!""#,
        LEASE_CLASS,
        name
    )
    .fetch_one(&mut conn)
    .await?;
    if taken {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

/// Follows the log from the stored checkpoint until shutdown or the first error. Batches are
/// applied on the lease's own session: a batch can only commit while the lease is held (and
/// no pooled connection is taken and checked back per batch). While the log is quiet the
/// session is pinged, so a lost lease is noticed within about a second.
async fn follow(
    store: &dyn EventStore,
    pool: &PgPool,
    lease: &mut PgConnection,
    projector: &dyn Projector,
    policy: PoisonPolicy,
    shutdown: &CancellationToken,
) -> Result<(), ProjectionError> {
    let mut position = load_checkpoint(pool, projector.name()).await?;
    let log = Log::of(store, pool).await?;
    let mut feed = store.subscribe_all(position).ready_chunks(BATCH);
    let mut next_batch_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(next_batch_at) => {}
        }
        let chunk = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            chunk = feed.next() => chunk,
            () = tokio::time::sleep(LEASE_INTERVAL) => {
                lease.ping().await?;
                continue;
            }
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let events = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
        next_batch_at = tokio::time::Instant::now()
            + if events.len() < BATCH {
                LINGER
            } else {
                Duration::ZERO
            };
        let batch = Batch {
            log,
            from: position,
            events: &events,
        };
        match apply_guarded(lease, projector, batch, policy, shutdown).await? {
            BatchOutcome::Applied(p) => position = p,
            BatchOutcome::Moved(p) => {
                // A rebuild (or another runner) moved it: re-subscribe from there.
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
