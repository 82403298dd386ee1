//! How each projection is doing, for `/health`, `ledger projections` and GraphQL: one rule.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stream_store::EventStore;

use crate::runtime::{all_projectors, ProjectionError};

/// A projection is stuck when the next event it has to apply was recorded this long ago.
pub const STUCK_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// One projection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Following the log, nothing set aside.
    Ok,
    /// Following the log, with events set aside as dead letters.
    Degraded,
    /// Behind the head and not moving (failing on an event under `on_poison = "stop"`, or no
    /// process runs it).
    Stuck,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Stuck => "stuck",
        }
    }
}

/// How far a projection has got, and what it set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: &'static str,
    pub checkpoint: i64,
    pub head: i64,
    pub lag: i64,
    /// When the checkpoint last moved (`None`: never).
    pub updated_at: Option<DateTime<Utc>>,
    /// Open dead letters.
    pub dead_letters: i64,
    pub state: State,
}

/// The status of every projection of the ledger, as of `now`.
pub async fn status(
    store: &dyn EventStore,
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<Status>, ProjectionError> {
    let head = store.head().await?;
    let rows = sqlx::query!(
        r#"SELECT c.name, c.position, c.updated_at,
                  (SELECT count(*) FROM public.projection_dead_letters d
                    WHERE d.projection = c.name AND d.resolved_at IS NULL) AS "dead_letters!"
             FROM public.projection_checkpoints c"#
    )
    .fetch_all(pool)
    .await?;
    let mut all = Vec::new();
    for p in all_projectors() {
        let row = rows.iter().find(|r| r.name == p.name());
        let checkpoint = row.map_or(0, |r| r.position);
        let updated_at = row.map(|r| r.updated_at);
        let dead_letters = row.map_or(0, |r| r.dead_letters);
        let lag = head - checkpoint;
        // Waiting since the next event was recorded (not since the checkpoint last moved: a
        // projection idle for an hour is not stuck the moment an event arrives).
        let waiting = if lag > 0 {
            let next = store.read_all(checkpoint, 1).await?;
            next.first()
                .is_some_and(|e| now - e.recorded_at > STUCK_AFTER)
        } else {
            false
        };
        let state = if waiting {
            State::Stuck
        } else if dead_letters > 0 {
            State::Degraded
        } else {
            State::Ok
        };
        all.push(Status {
            name: p.name(),
            checkpoint,
            head,
            lag,
            updated_at,
            dead_letters,
            state,
        });
    }
    Ok(all)
}
