//! Poison events: an event a projector cannot apply (it does not decode, a statement fails on
//! it) is retried a few times with backoff, then set aside as a dead letter so that the
//! projection moves on (marked degraded) instead of stopping for good. A dead letter is applied
//! again by `retry` once the projector is fixed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{Connection, PgConnection, PgPool};
use stream_store::{EventStore, RecordedEvent};

use crate::runtime::{apply_events, Log, ProjectionError, Projector};

/// What a projection does with an event it cannot apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPoison {
    /// Set it aside as a dead letter and go on (the projection is then `degraded`).
    Quarantine,
    /// Stop at it and retry it every second until it applies (the read model stays behind).
    Stop,
}

/// A projection's handling of poison events (`[projections.NAME]` in `ledger.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoisonPolicy {
    pub on_poison: OnPoison,
    /// Attempts at an event before it is set aside (with backoff between them).
    pub attempts: u32,
    /// The pause after the first failed attempt, in milliseconds; it doubles after each one.
    pub backoff_ms: u64,
}

impl Default for PoisonPolicy {
    fn default() -> Self {
        Self {
            on_poison: OnPoison::Quarantine,
            attempts: 5,
            backoff_ms: 100,
        }
    }
}

impl PoisonPolicy {
    /// Fail at the first poison event, retrying nothing (what tests draining a projection
    /// with `catch_up` expect).
    pub const STOP: PoisonPolicy = PoisonPolicy {
        on_poison: OnPoison::Stop,
        attempts: 1,
        backoff_ms: 0,
    };

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(10);
        Duration::from_millis(self.backoff_ms.saturating_mul(factor).min(30_000))
    }
}

/// The policy of each projection, by name; projections not named get the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PoisonPolicies(pub BTreeMap<String, PoisonPolicy>);

impl PoisonPolicies {
    pub fn of(&self, projection: &str) -> PoisonPolicy {
        self.0.get(projection).copied().unwrap_or_default()
    }
}

/// Whether `e` is about the event itself (the same event would fail again), rather than the
/// database or the log being unreachable, busy or shutting down, which is retried as long as
/// it lasts and never sets an event aside.
pub(crate) fn is_poison(e: &ProjectionError) -> bool {
    match e {
        ProjectionError::Decode { .. } | ProjectionError::Corrupt { .. } => true,
        ProjectionError::Database(sqlx::Error::Database(db)) => {
            let code = db.code();
            let class = code.as_deref().map_or("", |c| c.get(..2).unwrap_or(""));
            // Data exceptions, integrity constraints, errors raised by a trigger or function:
            // what the event's data makes a statement do. Anything else (a read-only standby
            // after a failover, permissions, resources, a shutdown) is the database's state,
            // retried as long as it lasts.
            matches!(class, "22" | "23" | "P0")
        }
        ProjectionError::Database(
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. },
        ) => true,
        _ => false,
    }
}

/// An event a projection set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub projection: String,
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub error: String,
    pub attempts: i32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// The dead letters not yet applied, of one projection or of all, in log order.
pub async fn dead_letters(
    pool: &PgPool,
    projection: Option<&str>,
) -> Result<Vec<DeadLetter>, ProjectionError> {
    Ok(sqlx::query_as!(
        DeadLetter,
        "SELECT projection, position, event_id, stream_id, event_type, schema_version, error,
                attempts, first_seen, last_seen
           FROM public.projection_dead_letters
          WHERE resolved_at IS NULL AND ($1::text IS NULL OR projection = $1)
          ORDER BY projection, position",
        projection
    )
    .fetch_all(pool)
    .await?)
}

/// Positions of the projection's open dead letters (a rebuild leaves them out too).
pub(crate) async fn open_positions(
    pool: &PgPool,
    projection: &str,
) -> Result<HashSet<i64>, ProjectionError> {
    Ok(sqlx::query_scalar!(
        "SELECT position FROM public.projection_dead_letters
          WHERE projection = $1 AND resolved_at IS NULL",
        projection
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// Marks the projection's open dead letters at `positions` resolved.
pub(crate) async fn resolve(
    tx: &mut PgConnection,
    projection: &str,
    positions: &[i64],
) -> Result<(), ProjectionError> {
    if positions.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE public.projection_dead_letters SET resolved_at = now()
          WHERE projection = $1 AND position = ANY($2) AND resolved_at IS NULL",
        projection,
        positions
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The first attempt at an event and what it has come to.
pub(crate) struct Failing {
    pub first_seen: DateTime<Utc>,
    pub attempts: u32,
}

/// Sets `event` aside: moves the checkpoint past it (only from `from`, the position right
/// before it, as a batch does) and records the dead letter, in one transaction. Returns
/// `false` when another runner had moved the checkpoint meanwhile (nothing was written).
pub(crate) async fn quarantine(
    conn: &mut PgConnection,
    projection: &str,
    from: i64,
    event: &RecordedEvent,
    error: &ProjectionError,
    failing: &Failing,
) -> Result<bool, ProjectionError> {
    let mut tx = conn.begin().await?;
    let moved = sqlx::query!(
        "UPDATE public.projection_checkpoints SET position = $3, updated_at = now()
          WHERE name = $1 AND position = $2",
        projection,
        from,
        event.position
    )
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    record(&mut tx, projection, event, error, failing).await?;
    tx.commit().await?;
    tracing::error!(
        projection,
        position = event.position,
        event_type = event.event_type,
        error = %error,
        "event set aside as a dead letter; the projection goes on (degraded)"
    );
    Ok(true)
}

async fn record(
    tx: &mut PgConnection,
    projection: &str,
    event: &RecordedEvent,
    error: &ProjectionError,
    failing: &Failing,
) -> Result<(), ProjectionError> {
    sqlx::query!(
        "INSERT INTO public.projection_dead_letters (projection, position, event_id, stream_id,
                event_type, schema_version, error, attempts, first_seen, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
         ON CONFLICT (projection, position) DO UPDATE SET
                error = EXCLUDED.error,
                attempts = projection_dead_letters.attempts + EXCLUDED.attempts,
                last_seen = EXCLUDED.last_seen, resolved_at = NULL",
        projection,
        event.position,
        event.event_id,
        event.stream_id.as_str(),
        event.event_type,
        event.schema_version,
        error.to_string(),
        i32::try_from(failing.attempts).unwrap_or(i32::MAX),
        failing.first_seen
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// What `retry` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetryReport {
    /// Positions applied and cleared.
    pub applied: Vec<i64>,
    /// Positions that failed again, with the error (they stay dead letters).
    pub failed: Vec<(i64, String)>,
}

/// Applies the projection's open dead letters again (only the one at `position`, if given),
/// each in its own transaction and in log order, with the projector as it is now: one that
/// applies is marked resolved in that transaction; one that fails again stays, its attempts
/// and error updated. The checkpoint does not move.
pub async fn retry(
    store: &dyn EventStore,
    pool: &PgPool,
    projector: &dyn Projector,
    position: Option<i64>,
) -> Result<RetryReport, ProjectionError> {
    let log = Log::of(store, pool).await?;
    let mut report = RetryReport::default();
    let letters = dead_letters(pool, Some(projector.name())).await?;
    let mut conn = pool.acquire().await?;
    for letter in letters {
        if position.is_some_and(|p| p != letter.position) {
            continue;
        }
        let events = store.read_all(letter.position - 1, 1).await?;
        let Some(event) = events.into_iter().find(|e| e.position == letter.position) else {
            continue;
        };
        let mut tx = conn.begin().await?;
        // Under the checkpoint's lock, as a batch: a rebuild's swap either sees this letter
        // open (and leaves it out) or resolved (and applies it to the tables it puts in place).
        sqlx::query_scalar!(
            "SELECT position FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE",
            projector.name()
        )
        .fetch_optional(&mut *tx)
        .await?;
        // One retry at a time applies a dead letter: another one waits here, then skips it.
        let open = sqlx::query_scalar!(
            r#"SELECT true AS "open!" FROM public.projection_dead_letters
                WHERE projection = $1 AND position = $2 AND resolved_at IS NULL FOR UPDATE"#,
            projector.name(),
            letter.position
        )
        .fetch_optional(&mut *tx)
        .await?;
        if open.is_none() {
            continue;
        }
        // The attempt in a savepoint: a failure is recorded under the same locks, so no other
        // retry resolves the letter in between (and sees it reopened).
        let mut attempt = tx.begin().await?;
        let applied = apply_events(
            &mut attempt,
            projector,
            log,
            letter.position - 1,
            (std::slice::from_ref(&event), &HashSet::new()),
        )
        .await;
        match applied {
            Ok(()) => {
                attempt.commit().await?;
                resolve(&mut tx, projector.name(), &[letter.position]).await?;
                tx.commit().await?;
                report.applied.push(letter.position);
            }
            Err(e) => {
                attempt.rollback().await?;
                let failing = Failing {
                    first_seen: letter.first_seen,
                    attempts: 1,
                };
                record(&mut tx, projector.name(), &event, &e, &failing).await?;
                tx.commit().await?;
                report.failed.push((letter.position, e.to_string()));
            }
        }
    }
    Ok(report)
}
