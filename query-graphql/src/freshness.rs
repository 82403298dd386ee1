//! How far the read models are: read-your-writes waits and subscriptions follow it.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

/// Also re-read this often, should a notification be lost.
const POLL: Duration = Duration::from_millis(250);

/// Wakes its subscribers whenever a projection commits a batch (in any process).
#[derive(Clone)]
pub struct Freshness {
    pool: PgPool,
    changes: watch::Receiver<u64>,
}

impl Freshness {
    /// Starts following the projections' notifications. Needs a tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(listen(pool.clone(), tx));
        Freshness { pool, changes: rx }
    }

    /// Changes each time some projection moved (or may have).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The lowest checkpoint over all projections: every read model has applied up to it.
    pub async fn caught_up_to(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT COALESCE(MIN(position), 0) AS "position!" FROM projection_checkpoints"#
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Waits until every read model has applied `position`; false when `limit` ran out.
    pub async fn wait_for(&self, position: i64, limit: Duration) -> Result<bool, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.changes();
        loop {
            changes.borrow_and_update();
            if self.caught_up_to().await? >= position {
                return Ok(true);
            }
            let wait = POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if wait.is_zero() {
                return Ok(false);
            }
            let _ = tokio::time::timeout(wait, changes.changed()).await;
        }
    }
}

async fn listen(pool: PgPool, tx: watch::Sender<u64>) {
    while !pool.is_closed() && !tx.is_closed() {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await {
            if listener.listen("ledger_projections").await.is_ok() {
                tx.send_modify(|n| *n += 1);
                loop {
                    match tokio::time::timeout(POLL, listener.try_recv()).await {
                        Err(_) => {}
                        // A notification, or a reconnect after which some may be lost.
                        Ok(Ok(_)) => tx.send_modify(|n| *n += 1),
                        Ok(Err(_)) => break,
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
