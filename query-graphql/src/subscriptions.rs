//! Live updates over WebSocket (graphql-ws): each fires after a projection has applied the
//! change, once per change.

use async_graphql::{Context, Result, Subscription, ID};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::broadcast;

use crate::access::{principal, require_ticket};
use crate::error::{gql, QueryError};
pub use crate::live::QueueChange;
use crate::live::{queue, QueueFeed, TicketFeed};
use crate::tickets::{load, with_priority, Ticket};
use crate::types::parse_id;
use crate::Settings;
use domain::access::Role;

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
    ) -> Result<impl Stream<Item = Result<Ticket>>> {
        let reader = principal(ctx)?.clone();
        let id = parse_id(&id)?;
        let pool = ctx.data::<PgPool>()?.clone();
        let settings = ctx.data::<Settings>()?.clone();
        let feed = ctx.data::<TicketFeed>()?.clone();
        let Some(current) = load(&pool, &settings, Some(id), None).await? else {
            // Customers and technicians learn nothing of tickets that are not theirs.
            return Err(if matches!(reader.role, Role::Admin | Role::Auditor) {
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
        let missed = futures::stream::iter(missed.map(Ok));
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
        Ok(missed.chain(later).take_while(move |t| {
            // A row this build cannot read is answered as the error it is.
            let readable = t
                .as_ref()
                .map_or(true, |t| reader.may_read_ticket(t.parties));
            futures::future::ready(readable)
        }))
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
        let feed = ctx.data::<QueueFeed>()?.clone();
        let (_, signature) = queue(&pool, &settings, technician).await.map_err(gql)?;
        let (changes, sent) = feed.follow(technician, &signature);
        // A change the feed sent before this subscriber joined is read now.
        let missed = if sent != signature {
            Some(queue(&pool, &settings, technician).await.map_err(gql)?.0)
        } else {
            None
        };
        let later = futures::stream::unfold(changes, |mut changes| async move {
            loop {
                match changes.recv().await {
                    Ok(change) => return Some(((*change).clone(), changes)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(futures::stream::iter(missed).chain(later))
    }
}
