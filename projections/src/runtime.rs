use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use sqlx::{Connection, PgConnection, PgPool};
use stream_store::{EventStore, RecordedEvent, StoreError};
use tokio_util::sync::CancellationToken;

use crate::dead_letters::{
    is_poison, open_positions, quarantine, Failing, OnPoison, PoisonPolicies, PoisonPolicy,
};

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
/// Events per transaction during a rebuild.
const REBUILD_BATCH: usize = 10_000;
/// Deferred index builds (and ANALYZEs) a rebuild runs at the same time. One more than two
/// cores: with two, the audit log's builds (1.8, 1.7, 1.6 and 0.6 s) paired up badly and one
/// core waited for the other's second build.
const INDEX_BUILDS_AT_ONCE: usize = 3;
/// Events per transaction during a rebuild by a projector that reads the log in SQL.
const REBUILD_SQL_BATCH: i64 = 100_000;
/// Such transactions a rebuild runs at the same time.
const SQL_COPIES_AT_ONCE: usize = 2;
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a runner without the lease tries to take it, and a holder checks it still has it.
const LEASE_INTERVAL: Duration = Duration::from_secs(1);
/// First key of the projection leases' advisory locks (the second is the name's hash).
const LEASE_CLASS: i32 = 0x4C45_4447;

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

async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<i64, ProjectionError> {
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

/// Sets the checkpoint, in the transaction that applied the events before it.
async fn move_checkpoint(
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
async fn announce(conn: &mut PgConnection, name: &str, position: i64) {
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

/// How long the swap waits for a table lock before it rolls back and tries again. Below
/// PostgreSQL's `deadlock_timeout` (1 s), so when the swap and a reader's query wait on each
/// other it is the swap that gives way, never the reader.
const SWAP_LOCK_TIMEOUT: &str = "500ms";
/// Attempts at the swap before the rebuild gives up (`ProjectionError::SwapLocked`: the live
/// tables stay as they were).
const SWAP_ATTEMPTS: u32 = 40;
const SWAP_PAUSE: Duration = Duration::from_millis(50);

/// Rebuilds a projection from the whole log into fresh tables, then swaps them in.
///
/// The new tables are built in a schema of their own (`rebuild_{name}`) while the live ones
/// keep answering queries. They start with the live tables' keys and unique constraints only
/// (upserts need them); every other index is built once the log is loaded, with the live
/// index's name and definition, which is far cheaper than maintaining it through a million
/// inserts. The swap is one short transaction taken under the checkpoint's row lock (the live
/// runner pauses for it and resumes from the new checkpoint): apply what was appended
/// meanwhile, drop the live tables, move the new ones into `public`, set the checkpoint.
/// Readers wait for the swap's locks for at most `SWAP_LOCK_TIMEOUT`, after which the swap
/// rolls back and tries again. `progress(done, head)` is called after each batch.
pub async fn rebuild(
    store: &Arc<dyn EventStore>,
    pool: &PgPool,
    projector: &dyn Projector,
    progress: &(dyn Fn(i64, i64) + Send + Sync),
) -> Result<i64, ProjectionError> {
    let name = projector.name();
    let shadow = format!("rebuild_{name}");
    let appended = projector.appended_in_rebuild();
    let deferred = create_shadow(pool, &shadow, projector, appended).await?;
    load_checkpoint(pool, name).await?;
    let log = Log::of(&**store, pool).await?;

    // The events the live projection set aside are left out here too, so that the rebuilt
    // tables are the live ones (`ledger projections retry` applies them once fixed; one
    // resolved while this rebuild runs is applied by the swap).
    let skip = open_positions(pool, name).await?;
    let head = store.head().await?;
    let mut position = 0;
    // A projector that reads the log in SQL needs no event shipped through this process: the
    // first range tells whether it can, the others are copied two at a time (one backend's
    // copy keeps one core busy).
    if log.local && head > 0 && copy_from_log(pool, projector, (&shadow, &skip), (0, head)).await? {
        let done = AtomicI64::new(head.min(REBUILD_SQL_BATCH));
        progress(done.load(Ordering::Relaxed), head);
        let ranges = (1..)
            .map(|n| n * REBUILD_SQL_BATCH)
            .take_while(|after| *after < head)
            .map(|after| (after, head.min(after + REBUILD_SQL_BATCH)));
        futures::stream::iter(ranges)
            .map(|range| {
                let done = &done;
                let (shadow, skip) = (&shadow, &skip);
                async move {
                    copy_from_log(pool, projector, (shadow, skip), range).await?;
                    let copied = range.1 - range.0;
                    progress(done.fetch_add(copied, Ordering::Relaxed) + copied, head);
                    Ok::<_, ProjectionError>(())
                }
            })
            .buffer_unordered(SQL_COPIES_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        position = head;
    }
    let mut events = if position < head {
        store.read_all(position, REBUILD_BATCH).await?
    } else {
        Vec::new()
    };
    // Three batches in flight: the next one is read (on a task of its own, so that decoding
    // the rows takes the other core), this one is computed, the previous one is written (on
    // a task of its own while this one is computed). Writes stay one at a time, in log order.
    let mut writing: Option<tokio::task::JoinHandle<Result<(), ProjectionError>>> = None;
    let mut appended_twice = AppendedTwice::new(appended.len());
    while let Some(last) = events.last().map(|e| e.position) {
        let reading = {
            let store = store.clone();
            tokio::spawn(async move { store.read_all(last, REBUILD_BATCH).await })
        };
        let prepared = projector.prepare(&without(&events, &skip), log.store).await;
        let written = match writing.take() {
            Some(write) => landed(write)
                .await
                .map(|()| progress(position, head.max(position))),
            None => Ok(()),
        };
        let applied = match (written, prepared) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(Some(changes))) => {
                appended_twice.note(changes.appended_keys());
                let (pool, shadow) = (pool.clone(), shadow.clone());
                writing = Some(tokio::spawn(async move {
                    let mut tx = begin_in(&pool, &shadow).await?;
                    changes.write(&mut tx, Write::Appending).await?;
                    tx.commit().await?;
                    Ok(())
                }));
                Ok(())
            }
            (Ok(()), Ok(None)) => {
                let applied =
                    apply_to_shadow(pool, projector, (&shadow, log), position, (&events, &skip))
                        .await;
                applied.map(|()| progress(last, head.max(last)))
            }
        };
        let next = match reading.await {
            Ok(next) => next.map_err(ProjectionError::from),
            Err(e) => Err(ProjectionError::Stopped(e.to_string())),
        };
        let next = match (applied, next) {
            (Ok(()), Ok(next)) => next,
            (Err(e), _) | (Ok(()), Err(e)) => {
                // Not a write left running after the rebuild has given up.
                if let Some(write) = writing.take() {
                    let _ = landed(write).await;
                }
                return Err(e);
            }
        };
        position = last;
        if position >= head {
            break;
        }
        events = next;
    }
    if let Some(write) = writing.take() {
        landed(write).await?;
        progress(position, head.max(position));
    }
    // Of the rows appended for one key, the newest is the row. Only keys appended more than
    // once are looked at when they are known: grouping every row of a large table by its
    // key took as long as building two of its indexes.
    for (i, t) in appended.iter().enumerate() {
        let (table, key, version) = (t.table, t.key, t.version);
        match appended_twice.keys(i) {
            Some(keys) if keys.is_empty() => {}
            Some(keys) => {
                sqlx::query(&format!(
                    "DELETE FROM {shadow}.{table} a
                     USING (SELECT {key} AS k, max({version}) AS v FROM {shadow}.{table}
                            WHERE {key} = ANY($1) GROUP BY {key}) newest
                     WHERE a.{key} = ANY($1) AND a.{key} = newest.k AND a.{version} < newest.v"
                ))
                .bind(keys)
                .execute(pool)
                .await?;
            }
            None => {
                sqlx::query(&format!(
                    "DELETE FROM {shadow}.{table} a
                     USING (SELECT {key} AS k, max({version}) AS v FROM {shadow}.{table}
                            GROUP BY {key} HAVING count(*) > 1) newest
                     WHERE a.{key} = newest.k AND a.{version} < newest.v"
                ))
                .execute(pool)
                .await?;
            }
        }
    }
    // Fresh tables have no statistics; without them the first queries would plan blind.
    let mut statements = deferred.indexes;
    for table in projector.tables() {
        statements.push(format!("ANALYZE {shadow}.{table}"));
    }
    // Each build is one backend's sort; two at a time keep two cores busy.
    futures::stream::iter(statements)
        .map(|statement| async move { sqlx::query(&statement).execute(pool).await })
        .buffer_unordered(INDEX_BUILDS_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    for statement in deferred.constraints {
        sqlx::query(&statement).execute(pool).await?;
    }
    // What was appended while the indexes were built, so that the swap's share is small.
    loop {
        let events = store.read_all(position, REBUILD_BATCH).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        apply_to_shadow(pool, projector, (&shadow, log), position, (&events, &skip)).await?;
        position = last;
    }

    let mut attempt = 1;
    let position = loop {
        match swap(&**store, pool, projector, (&shadow, log, &skip), position).await {
            Err(ProjectionError::Database(e)) if is_lock_timeout(&e) => {
                if attempt == SWAP_ATTEMPTS {
                    let holders = lock_holders(pool, projector.tables()).await;
                    // The rebuilt tables would only hold the disk until the next rebuild.
                    let drop = format!("DROP SCHEMA IF EXISTS {shadow} CASCADE");
                    if let Err(e) = sqlx::query(&drop).execute(pool).await {
                        tracing::warn!(projection = name, error = %e, "cannot drop {shadow}");
                    }
                    return Err(ProjectionError::SwapLocked {
                        projection: name,
                        attempts: attempt,
                        holders,
                    });
                }
                attempt += 1;
                tokio::time::sleep(SWAP_PAUSE).await;
            }
            result => break result?,
        }
    };
    progress(position, position);
    Ok(position)
}

/// Which keys a rebuild's load appended to each appended table more than once, as far as
/// every batch told (`Changes::appended_keys`).
struct AppendedTwice {
    /// Per table: every key appended so far, and those appended again. `None` once a batch
    /// did not tell its keys.
    tables: Option<Vec<(HashSet<uuid::Uuid>, HashSet<uuid::Uuid>)>>,
}

impl AppendedTwice {
    fn new(tables: usize) -> Self {
        Self {
            tables: Some(vec![(HashSet::new(), HashSet::new()); tables]),
        }
    }

    fn note(&mut self, batch: Option<Vec<&[uuid::Uuid]>>) {
        let (Some(tables), Some(batch)) = (self.tables.as_mut(), batch) else {
            self.tables = None;
            return;
        };
        if batch.len() != tables.len() {
            self.tables = None;
            return;
        }
        for ((seen, again), keys) in tables.iter_mut().zip(batch) {
            for key in keys {
                if !seen.insert(*key) {
                    again.insert(*key);
                }
            }
        }
    }

    /// The keys of table `i` appended more than once; `None` if not known.
    fn keys(&self, i: usize) -> Option<Vec<uuid::Uuid>> {
        self.tables
            .as_ref()
            .and_then(|t| t.get(i))
            .map(|(_, again)| again.iter().copied().collect())
    }
}

/// The outcome of a batch's write running on a task of its own.
async fn landed(
    write: tokio::task::JoinHandle<Result<(), ProjectionError>>,
) -> Result<(), ProjectionError> {
    write
        .await
        .map_err(|e| ProjectionError::Stopped(e.to_string()))?
}

/// What a rebuild builds once its tables are loaded.
struct Deferred {
    /// `CREATE INDEX` statements (including the unique indexes of keys built after the load).
    indexes: Vec<String>,
    /// `ALTER TABLE … ADD CONSTRAINT` statements of keys built after the load, run after the
    /// indexes (a key becomes a constraint on the index already built).
    constraints: Vec<String>,
}

/// Creates `shadow` with an empty copy of each table: columns, defaults, checks, keys and
/// unique constraints, under the live names; an appended table, or any table of a projector
/// that inserts each key once, gets no key or unique index. Returns what to build once the
/// tables are loaded: the other indexes, with the live names and definitions, and the keys
/// left out.
async fn create_shadow(
    pool: &PgPool,
    shadow: &str,
    projector: &dyn Projector,
    appended: &[AppendedTable],
) -> Result<Deferred, ProjectionError> {
    let mut conn = pool.acquire().await?;
    // Identifiers cannot be bound; these come from our own constants.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {shadow}"))
        .execute(&mut *conn)
        .await?;
    let mut deferred = Deferred {
        indexes: Vec::new(),
        constraints: Vec::new(),
    };
    for table in projector.tables() {
        let keys_after_load =
            appended.iter().any(|t| t.table == *table) || projector.inserts_each_key_once();
        sqlx::query(&format!(
            "CREATE TABLE {shadow}.{table} (LIKE public.{table} INCLUDING DEFAULTS
                 INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)
             WITH (autovacuum_enabled = false)"
        ))
        .execute(&mut *conn)
        .await?;
        let live = format!("public.{table}");
        let on_live = format!(" ON {live} USING ");
        let on_shadow = format!(" ON {shadow}.{table} USING ");
        let in_shadow = |definition: String| {
            if definition.matches(&on_live).count() == 1 {
                Ok(definition.replacen(&on_live, &on_shadow, 1))
            } else {
                Err(ProjectionError::Schema(definition))
            }
        };
        let constraints = sqlx::query!(
            r#"SELECT conname AS "name!", pg_get_constraintdef(oid) AS "definition!",
                      contype::text AS "kind!", pg_get_indexdef(conindid) AS "index!"
               FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype IN ('p', 'u', 'x')
               ORDER BY conname"#,
            live
        )
        .fetch_all(&mut *conn)
        .await?;
        for c in constraints {
            let add = format!(
                "ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{}\" {}",
                c.name, c.definition
            );
            if !keys_after_load {
                sqlx::query(&add).execute(&mut *conn).await?;
            } else if c.kind == "x" {
                deferred.constraints.push(add);
            } else {
                // The constraint's index under the constraint's name, then the constraint on it.
                deferred.indexes.push(in_shadow(c.index)?);
                let kind = if c.kind == "p" {
                    "PRIMARY KEY"
                } else {
                    "UNIQUE"
                };
                deferred.constraints.push(format!(
                    "ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{0}\" {kind} USING INDEX \"{0}\"",
                    c.name
                ));
            }
        }
        let indexes = sqlx::query!(
            r#"SELECT pg_get_indexdef(i.indexrelid) AS "definition!", i.indisunique AS "unique!"
               FROM pg_index i
               WHERE i.indrelid = $1::text::regclass
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
               ORDER BY i.indexrelid"#,
            live
        )
        .fetch_all(&mut *conn)
        .await?;
        for index in indexes {
            let definition = in_shadow(index.definition)?;
            if index.unique && !keys_after_load {
                // Upserts may infer their conflict target from it.
                sqlx::query(&definition).execute(&mut *conn).await?;
            } else {
                deferred.indexes.push(definition);
            }
        }
    }
    Ok(deferred)
}

/// Copies the log's positions `after < p <= up_to` (`up_to` capped at one batch's worth) into
/// the shadow tables in SQL, in one transaction; `false` (nothing done) when the projector has
/// no such path.
async fn copy_from_log(
    pool: &PgPool,
    projector: &dyn Projector,
    (shadow, skip): (&str, &HashSet<i64>),
    (after, up_to): (i64, i64),
) -> Result<bool, ProjectionError> {
    let up_to = up_to.min(after + REBUILD_SQL_BATCH);
    let skip: Vec<i64> = skip
        .iter()
        .copied()
        .filter(|p| (after + 1..=up_to).contains(p))
        .collect();
    let mut tx = begin_in(pool, shadow).await?;
    if !projector
        .apply_from_log(&mut tx, after, up_to, &skip)
        .await?
    {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Applies one batch of events to the shadow tables, in one transaction.
async fn apply_to_shadow(
    pool: &PgPool,
    projector: &dyn Projector,
    (shadow, log): (&str, Log<'_>),
    after: i64,
    events: (&[RecordedEvent], &HashSet<i64>),
) -> Result<(), ProjectionError> {
    let mut tx = begin_in(pool, shadow).await?;
    apply_events(&mut tx, projector, log, after, events).await?;
    tx.commit().await?;
    Ok(())
}

/// `events` but for those at the positions in `skip`.
fn without<'a>(
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

/// A transaction whose unqualified table names are the shadow tables.
async fn begin_in(
    pool: &PgPool,
    shadow: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL search_path TO {shadow}"))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Brings the shadow tables to the head and puts them in place of the live ones, in one
/// transaction under the checkpoint's lock.
async fn swap(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
    (shadow, log, skipped): (&str, Log<'_>, &HashSet<i64>),
    mut position: i64,
) -> Result<i64, ProjectionError> {
    let name = projector.name();
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar!(
        "SELECT position FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE",
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(&format!("SET LOCAL search_path TO {shadow}"))
        .execute(&mut *tx)
        .await?;
    // The dead letters `ledger projections retry` applied to the live tables since the
    // rebuild began (a retry holds the checkpoint's lock while it applies one, so none is
    // half done now), in log order as the rebuild would have.
    let skip = open_positions(pool, name).await?;
    let mut resolved: Vec<i64> = skipped.difference(&skip).copied().collect();
    resolved.sort_unstable();
    for p in resolved.into_iter().filter(|p| *p <= position) {
        let events = store.read_all(p - 1, 1).await?;
        let event: Vec<RecordedEvent> = events.into_iter().filter(|e| e.position == p).collect();
        apply_events(&mut tx, projector, log, p - 1, (&event, &HashSet::new())).await?;
    }
    // Whatever was appended meanwhile, up to the head as seen under the lock, but for what
    // the live projection set aside (as of now, under the checkpoint's lock).
    loop {
        let events = store.read_all(position, REBUILD_BATCH).await?;
        let Some(last) = events.last() else { break };
        let last = last.position;
        apply_events(&mut tx, projector, log, position, (&events, &skip)).await?;
        position = last;
    }
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    let live = live_tables(projector.tables());
    // First the lock a vacuum holds, which no reader or writer conflicts with. An autovacuum
    // of a live table (typically of the rows the previous rebuild put in place) would outlast
    // every attempt of the swap: PostgreSQL cancels an autovacuum that blocks a lock request
    // only after `deadlock_timeout`, longer than SWAP_LOCK_TIMEOUT. Waiting here past it,
    // readers go on meanwhile and the autovacuum gives way; a manual VACUUM does not, and the
    // attempt times out and is tried again.
    sqlx::query(
        "SELECT set_config('lock_timeout', (EXTRACT(EPOCH FROM current_setting('deadlock_timeout')::interval) * 2000 + 1000)::bigint::text, true)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
        live.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // All locks at once, before anything is dropped: a reader holding one of them makes the
    // swap wait (at most SWAP_LOCK_TIMEOUT), never fail halfway.
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        live.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    for table in projector.tables() {
        sqlx::query(&format!("DROP TABLE public.{table}"))
            .execute(&mut *tx)
            .await?;
        // Moves the table's indexes and constraints along, under their live names.
        sqlx::query(&format!("ALTER TABLE {shadow}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
        // Autovacuum was kept off the new table while it was loaded: a worker on it holds a
        // lock the swap's `SET SCHEMA` would wait for past `SWAP_LOCK_TIMEOUT`, every attempt
        // (its vacuum of a million fresh rows outlasts them all). The rebuild ANALYZEd it.
        sqlx::query(&format!(
            "ALTER TABLE public.{table} RESET (autovacuum_enabled)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {shadow}"))
        .execute(&mut *tx)
        .await?;
    move_checkpoint(&mut tx, name, position).await?;
    tx.commit().await?;
    if let Ok(mut conn) = pool.acquire().await {
        announce(&mut conn, name, position).await;
    }
    Ok(position)
}

/// The qualified names of a projector's live tables.
fn live_tables(tables: &[&str]) -> Vec<String> {
    tables.iter().map(|t| format!("public.{t}")).collect()
}

/// The backends holding a lock on one of the live `tables`, for an operator to look at:
/// "pid 4242 (autovacuum worker, ShareUpdateExclusiveLock: autovacuum: VACUUM public.audit_log)".
async fn lock_holders(pool: &PgPool, tables: &[&str]) -> String {
    let live = live_tables(tables);
    let held = sqlx::query_scalar::<_, String>(
        "SELECT format('pid %s (%s, %s: %s)', a.pid, a.backend_type,
                       string_agg(DISTINCT l.mode, ', '), left(a.query, 120))
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.granted AND l.relation = ANY($1::regclass[]) AND a.pid <> pg_backend_pid()
         GROUP BY a.pid, a.backend_type, a.query ORDER BY a.pid",
    )
    .bind(&live)
    .fetch_all(pool)
    .await;
    match held {
        Ok(held) if held.is_empty() => "no one any more".to_owned(),
        Ok(held) => held.join("; "),
        Err(e) => format!("unknown: {e}"),
    }
}

/// PostgreSQL's `lock_not_available`: a lock was not granted within `lock_timeout`.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03")
}

#[cfg(test)]
mod tests {
    use super::AppendedTwice;
    use uuid::Uuid;

    #[test]
    fn keys_appended_by_more_than_one_batch_are_the_ones_looked_at() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut twice = AppendedTwice::new(1);
        twice.note(Some(vec![&[a, b][..]]));
        assert_eq!(twice.keys(0), Some(vec![]));
        twice.note(Some(vec![&[b, c][..]]));
        twice.note(Some(vec![&[b][..]]));
        assert_eq!(twice.keys(0), Some(vec![b]));
    }

    #[test]
    fn a_batch_that_does_not_tell_its_keys_makes_every_key_looked_at() {
        let a = Uuid::new_v4();
        let mut twice = AppendedTwice::new(1);
        twice.note(Some(vec![&[a][..]]));
        twice.note(None);
        twice.note(Some(vec![&[a][..]]));
        assert_eq!(twice.keys(0), None);
        let mut mismatched = AppendedTwice::new(2);
        mismatched.note(Some(vec![&[a][..]]));
        assert_eq!(mismatched.keys(0), None);
    }
}
