//! Rebuilding a read model from the whole log into shadow tables, swapped in at the end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use stream_store::{EventStore, RecordedEvent};

use super::{
    announce, apply_events, load_checkpoint, move_checkpoint, without, Log, ProjectionError,
    Projector, Write,
};
use crate::dead_letters::{open_positions, resolve};

use super::shadow::create_shadow;

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
    // The letters the live projection set aside since the rebuild began, at positions the
    // rebuilt tables hold (the rebuild applied them): resolved with the swap, or a retry
    // would apply them a second time.
    let applied: Vec<i64> = skip
        .difference(skipped)
        .copied()
        .filter(|p| *p <= position)
        .collect();
    resolve(&mut tx, name, &applied).await?;
    let skip: HashSet<i64> = skip.into_iter().filter(|p| !applied.contains(p)).collect();
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
