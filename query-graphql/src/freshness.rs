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
    /// Changes whenever a read model may have changed: each notification, each reload that
    /// found a checkpoint moved, each (re)connect. Rows cached from the read models stay valid
    /// only while it is the same and `listening` holds.
    pub generation: u64,
    /// Connected and listening: a commit of a projection would be heard.
    pub listening: bool,
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

    /// What is known now.
    pub fn now(&self) -> Progress {
        *self.changes.borrow()
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
                let mut connected = true;
                'connected: loop {
                    // After (re)connecting, and after a quiet spell: notifications may have been
                    // lost, so the table is the truth.
                    let Ok(moved) = reload(&pool, &mut checkpoints).await else {
                        break 'connected;
                    };
                    publish(&tx, &checkpoints, moved || std::mem::take(&mut connected));
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
                            Ok(Ok(None)) => {
                                tx.send_if_modified(|p| std::mem::replace(&mut p.listening, false));
                                connected = true;
                                break;
                            }
                            Ok(Err(_)) => break 'connected,
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        }
        tx.send_if_modified(|p| std::mem::replace(&mut p.listening, false));
        tokio::time::sleep(POLL).await;
    }
}

/// Re-reads every checkpoint; true when one differs from what was known.
async fn reload(
    pool: &PgPool,
    checkpoints: &mut BTreeMap<String, i64>,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query!("SELECT name, position FROM projection_checkpoints")
        .fetch_all(pool)
        .await?;
    let fresh: BTreeMap<String, i64> = rows.into_iter().map(|r| (r.name, r.position)).collect();
    let moved = fresh != *checkpoints;
    *checkpoints = fresh;
    Ok(moved)
}

/// `moved`: a read model may have changed (a projection committed a batch, or what happened
/// meanwhile is unknown), so subscribers re-read even when the lowest checkpoint stayed.
fn publish(tx: &watch::Sender<Progress>, checkpoints: &BTreeMap<String, i64>, moved: bool) {
    let caught_up_to = checkpoints.values().copied().min().unwrap_or(0);
    tx.send_if_modified(|p| {
        let changed = p.caught_up_to != caught_up_to || !p.listening;
        p.caught_up_to = caught_up_to;
        p.listening = true;
        if moved {
            p.generation += 1;
        }
        changed || moved
    });
}
