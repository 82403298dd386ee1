//! The tickets that subscriptions follow, read once per process per change and fanned out: on
//! each move of the read models one query asks the versions of every followed ticket, and only
//! those that changed are read (in one query) and sent to their subscribers. The work per
//! commit grows with the tickets followed and changed, not with the number of subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::freshness::Freshness;
use crate::tickets::{rows_by_id, TicketRow};

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
