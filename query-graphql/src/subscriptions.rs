//! Live updates over WebSocket (graphql-ws): each fires after a projection has applied the
//! change, once per change.

use async_graphql::{Context, Result, SimpleObject, Subscription, ID};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::access::{principal, require_ticket};
use crate::error::{gql, QueryError};
use crate::freshness::Freshness;
use crate::live::TicketFeed;
use crate::tickets::{load, parse_id, with_priority, Ticket};
use crate::Settings;

/// A work queue after a change: the ids in queue order (highest priority first).
#[derive(SimpleObject, Clone, PartialEq)]
pub struct QueueChange {
    /// Null for the unassigned queue.
    pub technician_id: Option<ID>,
    pub total_count: i64,
    pub ticket_ids: Vec<ID>,
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The ticket, each time its read model changes. Only for who may read the ticket (as
    /// `ticket(id:)`); a reader who loses access (a technician the ticket was taken from) gets
    /// no further change, and the subscription completes.
    async fn ticket_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Ticket>> {
        let reader = principal(ctx)?.clone();
        let id = parse_id(&id)?;
        let pool = ctx.data::<PgPool>()?.clone();
        let settings = ctx.data::<Settings>()?.clone();
        let feed = ctx.data::<TicketFeed>()?.clone();
        let Some(current) = load(&pool, &settings, Some(id), None).await? else {
            // Customers and technicians learn nothing of tickets that are not theirs.
            return Err(if reader.role.is_staff() {
                gql(QueryError::BadInput("no ticket with this id".into()))
            } else {
                gql(QueryError::Forbidden("read this ticket"))
            });
        };
        require_ticket(ctx, current.parties)?;
        let (changes, sent) = feed.follow(id, current.version);
        // A change the feed sent before this subscriber joined is read now.
        let missed = if sent > current.version {
            load(&pool, &settings, Some(id), None).await?
        } else {
            None
        };
        let missed = futures::stream::iter(missed);
        let later = futures::stream::unfold(changes, move |mut changes| {
            let settings = settings.clone();
            async move {
                loop {
                    match changes.recv().await {
                        Ok(row) => {
                            return Some((with_priority((*row).clone(), &settings), changes))
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(missed
            .chain(later)
            .take_while(move |t| futures::future::ready(reader.may_read_ticket(t.parties))))
    }

    /// A technician's queue (or, without `technicianId`, the unassigned queue), each time a
    /// ticket enters it, leaves it or changes in it.
    async fn queue_changed(
        &self,
        ctx: &Context<'_>,
        technician_id: Option<ID>,
    ) -> Result<impl Stream<Item = QueueChange>> {
        crate::tickets::queue_access(ctx, technician_id.as_ref())?;
        let technician = technician_id.as_ref().map(parse_id).transpose()?;
        let pool = ctx.data::<PgPool>()?.clone();
        let settings = ctx.data::<Settings>()?.clone();
        let changes = ctx.data::<Freshness>()?.changes();
        let last = queue(&pool, &settings, technician).await?;
        Ok(futures::stream::unfold(
            (changes, last.1),
            move |(mut changes, mut last)| {
                let (pool, settings) = (pool.clone(), settings.clone());
                async move {
                    loop {
                        changes.changed().await.ok()?;
                        if let Ok((change, signature)) = queue(&pool, &settings, technician).await {
                            if signature != last {
                                last = signature;
                                return Some((change, (changes, last)));
                            }
                        }
                    }
                }
            },
        ))
    }
}

/// The queue now, and a signature that changes whenever any of its tickets does.
async fn queue(
    pool: &PgPool,
    settings: &Settings,
    technician: Option<Uuid>,
) -> Result<(QueueChange, String)> {
    let policy = serde_json::to_value(&settings.policy)
        .map_err(|e| gql(QueryError::Internal(Box::new(e))))?;
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
    .await
    .map_err(gql)?;
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
