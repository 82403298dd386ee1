//! How far the read models are: read-your-writes waits and subscriptions follow it.
//!
//! One listener task per process keeps every projection's checkpoint in memory, from the
//! `name:position` payloads of `ledger_projections` notifications (sent when a batch commits),
//! and re-reads the checkpoint table after each (re)connect and whenever it heard nothing for a
//! while. Waiters only look at that in-memory state: a thousand read-your-writes waits cost no
//! more database work than one (each querying the table on every notification starved the
//! projectors of pool connections under load).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

/// Re-read the checkpoints when nothing was heard for this long, should a notification be lost.
const POLL: Duration = Duration::from_millis(250);

/// What the listener knows; every change is published, so subscribers wake on each batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every read model has applied the log up to here (the lowest checkpoint). Never ahead of
    /// the database: notifications are sent on commit.
    pub caught_up_to: i64,
}

/// Wakes its subscribers whenever a projection commits a batch (in any process).
#[derive(Clone)]
pub struct Freshness {
    changes: watch::Receiver<Progress>,
}

impl Freshness {
    /// Starts following the projections' notifications. Needs a tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = watch::channel(Progress::default());
        tokio::spawn(listen(pool, tx));
        Freshness { changes: rx }
    }

    /// Changes each time some projection moved (or may have).
    pub fn changes(&self) -> watch::Receiver<Progress> {
        self.changes.clone()
    }

    /// Waits until every read model has applied `position`; false when `limit` ran out.
    pub async fn wait_for(&self, position: i64, limit: Duration) -> bool {
        let mut changes = self.changes();
        let reached = changes.wait_for(|p| p.caught_up_to >= position);
        let reached = matches!(tokio::time::timeout(limit, reached).await, Ok(Ok(_)));
        reached
    }
}

async fn listen(pool: PgPool, tx: watch::Sender<Progress>) {
    let mut checkpoints = BTreeMap::new();
    while !pool.is_closed() && !tx.is_closed() {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await {
            if listener.listen("ledger_projections").await.is_ok() {
                'connected: loop {
                    // After (re)connecting, and after a quiet spell: notifications may have been
                    // lost, so the table is the truth.
                    if reload(&pool, &mut checkpoints).await.is_err() {
                        break 'connected;
                    }
                    publish(&tx, &checkpoints, false);
                    loop {
                        match tokio::time::timeout(POLL, listener.try_recv()).await {
                            Err(_) => break,
                            Ok(Ok(Some(n))) => {
                                if let Some((name, position)) = n.payload().rsplit_once(':') {
                                    if let Ok(position) = position.parse::<i64>() {
                                        let known =
                                            checkpoints.entry(name.to_owned()).or_insert(position);
                                        *known = (*known).max(position);
                                    }
                                }
                                publish(&tx, &checkpoints, true);
                            }
                            // Reconnected by the listener: some notifications may be lost.
                            Ok(Ok(None)) => break,
                            Ok(Err(_)) => break 'connected,
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn reload(pool: &PgPool, checkpoints: &mut BTreeMap<String, i64>) -> Result<(), sqlx::Error> {
    let rows = sqlx::query!("SELECT name, position FROM projection_checkpoints")
        .fetch_all(pool)
        .await?;
    checkpoints.clear();
    checkpoints.extend(rows.into_iter().map(|r| (r.name, r.position)));
    Ok(())
}

/// `moved`: a projection committed a batch, so subscribers re-read even when the lowest
/// checkpoint stayed where it was.
fn publish(tx: &watch::Sender<Progress>, checkpoints: &BTreeMap<String, i64>, moved: bool) {
    let caught_up_to = checkpoints.values().copied().min().unwrap_or(0);
    tx.send_if_modified(|p| {
        let changed = p.caught_up_to != caught_up_to;
        p.caught_up_to = caught_up_to;
        changed || moved
    });
}
