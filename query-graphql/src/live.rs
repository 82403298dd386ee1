//! The tickets that subscriptions follow, read once per process per change and fanned out: on
//! each move of the read models one query asks the versions of every followed ticket, and only
//! those that changed are read (in one query) and sent to their subscribers. The work per
//! commit grows with the tickets followed and changed, not with the number of subscribers.
//! Work queues likewise: one read per followed queue per change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use async_graphql::{SimpleObject, ID};

use crate::error::QueryError;
use crate::freshness::Freshness;
use crate::tickets::{rows_by_id, TicketRow};
use crate::Settings;

/// Changes a slow subscriber may fall behind by before it skips to the newest.
const BACKLOG: usize = 16;

struct Followed {
    /// The version last sent (or seen when the first subscriber came).
    version: i64,
    sender: broadcast::Sender<Arc<TicketRow>>,
}

/// Shared by every subscription of the process (in the schema's data).
#[derive(Clone)]
pub struct TicketFeed {
    followed: Arc<Mutex<HashMap<Uuid, Followed>>>,
}

impl TicketFeed {
    /// Starts the task that follows the read models (needs a Tokio runtime).
    pub fn start(pool: PgPool, freshness: Freshness) -> Self {
        let feed = TicketFeed {
            followed: Arc::default(),
        };
        let task = feed.clone();
        tokio::spawn(async move { task.run(pool, freshness).await });
        feed
    }

    /// Changes of ticket `id` after `version` (the version the subscriber has seen), and the
    /// version the feed has sent last (above `version`: the subscriber missed a change).
    pub fn follow(&self, id: Uuid, version: i64) -> (broadcast::Receiver<Arc<TicketRow>>, i64) {
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        let entry = followed.entry(id).or_insert_with(|| Followed {
            version,
            sender: broadcast::channel(BACKLOG).0,
        });
        (entry.sender.subscribe(), entry.version)
    }

    async fn run(self, pool: PgPool, freshness: Freshness) {
        let mut changes = freshness.changes();
        while changes.changed().await.is_ok() {
            let ids: Vec<Uuid> = {
                let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                followed.retain(|_, f| f.sender.receiver_count() > 0);
                followed.keys().copied().collect()
            };
            if ids.is_empty() {
                continue;
            }
            if let Err(e) = self.send_changed(&pool, &ids).await {
                tracing::warn!(error = %e, "subscriptions could not read the changed tickets");
            }
        }
    }

    async fn send_changed(&self, pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        let versions = sqlx::query!(
            "SELECT ticket_id, version FROM tickets WHERE ticket_id = ANY($1)",
            ids
        )
        .fetch_all(pool)
        .await?;
        let changed: Vec<Uuid> = {
            let followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
            versions
                .iter()
                .filter(|r| {
                    followed
                        .get(&r.ticket_id)
                        .is_some_and(|f| f.version < r.version)
                })
                .map(|r| r.ticket_id)
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        let rows = rows_by_id(pool, &changed).await?;
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            if let Some(f) = followed.get_mut(&row.ticket_id) {
                if f.version < row.version {
                    f.version = row.version;
                    // No receiver left: the entry goes at the next change.
                    let _ = f.sender.send(Arc::new(row));
                }
            }
        }
        Ok(())
    }
}

struct FollowedQueue {
    /// What the queue was when last sent (or when its first subscriber came).
    signature: String,
    sender: broadcast::Sender<Arc<QueueChange>>,
}

/// The work queues subscriptions follow (a technician's, or `None`: the unassigned one), each
/// read once per process per change and fanned out.
#[derive(Clone)]
pub struct QueueFeed {
    followed: Arc<Mutex<HashMap<Option<Uuid>, FollowedQueue>>>,
}

impl QueueFeed {
    /// Starts the task that follows the read models (needs a Tokio runtime).
    pub fn start(pool: PgPool, settings: Settings, freshness: Freshness) -> Self {
        let feed = QueueFeed {
            followed: Arc::default(),
        };
        let task = feed.clone();
        tokio::spawn(async move { task.run(pool, settings, freshness).await });
        feed
    }

    /// Changes of the queue after `signature` (what the subscriber has seen), and the
    /// signature the feed sent last (another: the subscriber missed a change).
    pub fn follow(
        &self,
        technician: Option<Uuid>,
        signature: &str,
    ) -> (broadcast::Receiver<Arc<QueueChange>>, String) {
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        let entry = followed.entry(technician).or_insert_with(|| FollowedQueue {
            signature: signature.to_owned(),
            sender: broadcast::channel(BACKLOG).0,
        });
        (entry.sender.subscribe(), entry.signature.clone())
    }

    async fn run(self, pool: PgPool, settings: Settings, freshness: Freshness) {
        let mut changes = freshness.changes();
        while changes.changed().await.is_ok() {
            let keys: Vec<Option<Uuid>> = {
                let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                followed.retain(|_, f| f.sender.receiver_count() > 0);
                followed.keys().copied().collect()
            };
            for key in keys {
                match queue(&pool, &settings, key).await {
                    Ok((change, signature)) => {
                        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(f) = followed.get_mut(&key) {
                            if f.signature != signature {
                                f.signature = signature;
                                let _ = f.sender.send(Arc::new(change));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "subscriptions could not read a queue");
                    }
                }
            }
        }
    }
}

/// A work queue after a change: the ids in queue order (highest priority first).
#[derive(SimpleObject, Clone, PartialEq)]
pub struct QueueChange {
    /// Null for the unassigned queue.
    pub technician_id: Option<ID>,
    pub total_count: i64,
    pub ticket_ids: Vec<ID>,
}

/// The queue now, and a signature that changes whenever any of its tickets does.
pub(crate) async fn queue(
    pool: &PgPool,
    settings: &Settings,
    technician: Option<Uuid>,
) -> Result<(QueueChange, String), QueryError> {
    let policy =
        serde_json::to_value(&settings.policy).map_err(|e| QueryError::Internal(Box::new(e)))?;
    let rows = sqlx::query!(
        r#"SELECT ticket_id, version FROM tickets
           WHERE status IN ('open', 'in_progress')
             AND (($1::uuid IS NULL AND assignee_id IS NULL) OR assignee_id = $1)
           ORDER BY priority_score(severity, customer_tier, impact, raised_at, now(), $2) DESC,
                    raised_position"#,
        technician,
        policy
    )
    .fetch_all(pool)
    .await?;
    let signature = rows
        .iter()
        .map(|r| format!("{}:{}", r.ticket_id, r.version))
        .collect::<Vec<_>>()
        .join(",");
    let change = QueueChange {
        technician_id: technician.map(|t| ID(t.to_string())),
        total_count: rows.len() as i64,
        ticket_ids: rows.iter().map(|r| ID(r.ticket_id.to_string())).collect(),
    };
    Ok((change, signature))
}
