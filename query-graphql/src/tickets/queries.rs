//! The ticket queries of the GraphQL root.

use super::*;

#[derive(Default)]
pub struct TicketQueries;

#[Object]
impl TicketQueries {
    /// Tickets, filtered; oldest first unless ordered by priority.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    pub(super) async fn tickets(
        &self,
        ctx: &Context<'_>,
        status: Option<TicketStatus>,
        assignee_id: Option<ID>,
        filter: Option<TicketFilter>,
        #[graphql(default)] order_by: TicketOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Ticket>> {
        let mut filter = filter.unwrap_or_default();
        if let Some(status) = status {
            filter.status = Some(vec![status]);
        }
        if assignee_id.is_some() {
            filter.assignee_id = assignee_id;
        }
        list(ctx, Query::new(filter, order_by)?, first, after).await
    }

    /// The work queue: open and in-progress tickets by current priority, then age. With
    /// `technicianId`, that technician's tickets; without, the unassigned ones.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    pub(super) async fn ticket_queue(
        &self,
        ctx: &Context<'_>,
        technician_id: Option<ID>,
        filter: Option<TicketFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Ticket>> {
        queue_access(ctx, technician_id.as_ref())?;
        let mut filter = filter.unwrap_or_default();
        if plain_queue(&filter) {
            let (offset, limit) = window(first, after.clone())?;
            if offset + limit < QUEUE_HEAD {
                let statuses = filter.status.unwrap_or_else(|| ACTIVE.to_vec());
                let technician = technician_id.as_ref().map(parse_id).transpose()?;
                return queue_head(ctx, &statuses, technician, offset, limit).await;
            }
        }
        filter.status = Some(filter.status.unwrap_or_else(|| ACTIVE.to_vec()));
        match technician_id {
            Some(id) => filter.assignee_id = Some(id),
            None => filter.unassigned = Some(true),
        }
        list(
            ctx,
            Query::new(filter, TicketOrder::Priority)?,
            first,
            after,
        )
        .await
    }

    /// The ticket a technician should take next: the highest-priority unassigned open one.
    pub(super) async fn next_ticket(
        &self,
        ctx: &Context<'_>,
        technician_id: Option<ID>,
    ) -> Result<Option<Ticket>> {
        queue_access(ctx, technician_id.as_ref())?;
        let page = queue_head(ctx, &[TicketStatus::Open], None, 0, 1).await?;
        Ok(page.edges.into_iter().next().map(|e| e.node))
    }

    /// Open and in-progress tickets past their SLA due time, by current priority.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    pub(super) async fn overdue_tickets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Ticket>> {
        queue_access(ctx, None)?;
        let filter = TicketFilter {
            status: Some(ACTIVE.to_vec()),
            overdue: Some(true),
            ..Default::default()
        };
        list(
            ctx,
            Query::new(filter, TicketOrder::Priority)?,
            first,
            after,
        )
        .await
    }

    /// One ticket by id, or null.
    pub(super) async fn ticket(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Ticket>> {
        let id = parse_id(&id)?;
        one(ctx, Some(id), None).await
    }

    /// One ticket by its number (`TKT-YYYYMMDD-XXXXXX`), or null.
    pub(super) async fn ticket_by_number(
        &self,
        ctx: &Context<'_>,
        number: String,
    ) -> Result<Option<Ticket>> {
        let number = domain::TicketNumber::parse("number", &number)
            .map_err(|e| gql(QueryError::BadInput(e.to_string())))?;
        one(ctx, None, Some(number.as_str().to_owned())).await
    }
}

pub(super) async fn one(
    ctx: &Context<'_>,
    id: Option<Uuid>,
    number: Option<String>,
) -> Result<Option<Ticket>> {
    let lookups = ctx.data::<crate::Lookups>()?;
    let settings = ctx.data::<Settings>()?;
    let row = match id {
        Some(id) => {
            let freshness = ctx.data::<crate::Freshness>()?.now();
            match lookups.tickets.get(id, freshness) {
                Some(row) => Some(row),
                None => {
                    let row = lookups.ticket_rows.load_one(id).await.map_err(gql)?;
                    if let Some(row) = &row {
                        lookups.tickets.put(id, freshness, row);
                    }
                    row
                }
            }
        }
        None => fetch(&lookups.pool, None, number).await?,
    };
    let ticket = row.map(|row| with_priority(row, settings)).transpose()?;
    if let Some(t) = &ticket {
        require_ticket(ctx, t.parties)?;
    } else {
        principal(ctx)?;
    }
    Ok(ticket)
}
