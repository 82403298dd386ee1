//! Ticket lists: filters and orders in SQL, paged; what a list costs.

use super::*;
use crate::types::Stored as _;

/// The parameters of one ticket list query, in SQL's terms.
pub(super) struct Query {
    pub(super) statuses: Option<Vec<String>>,
    pub(super) category: Option<String>,
    pub(super) level: Option<String>,
    pub(super) customer: Option<Uuid>,
    pub(super) assignee: Option<Uuid>,
    pub(super) unassigned: Option<bool>,
    pub(super) overdue: Option<bool>,
    pub(super) from: Option<DateTime<Utc>>,
    pub(super) to: Option<DateTime<Utc>>,
    pub(super) search: Option<String>,
    pub(super) by_priority: bool,
}

pub(super) fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Query {
    pub(super) fn new(filter: TicketFilter, order: TicketOrder) -> Result<Self> {
        let id = |id: Option<ID>| id.as_ref().map(parse_id).transpose();
        let search = filter.search.filter(|s| !s.trim().is_empty());
        if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
            return Err(gql(QueryError::BadInput(
                "search must be at most 200 characters".into(),
            )));
        }
        Ok(Query {
            statuses: filter
                .status
                .map(|s| s.into_iter().map(|s| s.db().to_owned()).collect()),
            category: filter.category.map(|c| c.db().to_owned()),
            level: filter.priority_level.map(|l| l.db().to_owned()),
            customer: id(filter.customer_id)?,
            assignee: id(filter.assignee_id)?,
            unassigned: filter.unassigned,
            overdue: filter.overdue,
            from: filter.raised_from,
            to: filter.raised_to,
            search: search.map(|s| like_pattern(s.trim())),
            by_priority: order == TicketOrder::Priority,
        })
    }
}

/// Runs a ticket list query and pages it.
pub(super) async fn list(
    ctx: &Context<'_>,
    q: Query,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Page<Ticket>> {
    let pool = ctx.data::<PgPool>()?;
    let settings = ctx.data::<Settings>()?;
    let who = principal(ctx)?;
    // Customers see their own tickets; technicians theirs and the unassigned ones.
    let scope_customer = match who.role {
        Role::Customer => Some(who.customer_id.map_or(Uuid::nil(), |c| c.as_uuid())),
        _ => None,
    };
    let scope_technician = match who.role {
        Role::Technician => Some(who.technician_id.map_or(Uuid::nil(), |t| t.as_uuid())),
        _ => None,
    };
    let policy = serde_json::to_value(&settings.policy)
        .map_err(|e| gql(QueryError::Internal(Box::new(e))))?;
    let (offset, limit) = window(first, after)?;
    let now = Utc::now();
    let rows = sqlx::query_as!(
        TicketRow,
        r#"SELECT t.ticket_id, t.number, t.status, t.category, t.subject, t.description,
                  t.severity, t.impact, t.customer_id, COALESCE(c.name, '') AS "customer_name!",
                  t.customer_tier, t.device_id, t.assignee_id, te.name AS "assignee_name?",
                  t.priority_score_at_raise, t.priority_level_at_raise,
                  priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $12, $13) AS "score!",
                  priority_level(priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $12, $13), $13) AS "level!",
                  ticket_due_at(t.severity, t.customer_tier, t.impact, t.raised_at, $13) AS "due_at!",
                  t.notes, t.quote_amount, t.quote_description, t.quote_decision, t.approved_quote,
                  t.final_cost, t.repair_summary, t.parts_cost, t.paid, t.bill, t.covered,
                  t.balance, t.claim_decision, t.claim_reason, t.rating, t.feedback_comment,
                  t.resolution, t.version, t.raised_at, t.assigned_at, t.started_at,
                  t.completed_at, t.resolved_at, t.closed_at, t.cancelled_at, t.reopened_at,
                  t.settled_at, t.updated_at
           FROM tickets t
           LEFT JOIN customers c ON c.customer_id = t.customer_id
           LEFT JOIN technicians te ON te.technician_id = t.assignee_id
           WHERE ($1::text[] IS NULL OR t.status = ANY($1))
             AND ($2::text IS NULL OR t.category = $2)
             AND ($3::text IS NULL OR priority_level(priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $12, $13), $13) = $3)
             AND ($4::uuid IS NULL OR t.customer_id = $4)
             AND ($5::uuid IS NULL OR t.assignee_id = $5)
             AND ($6::bool IS NULL OR $6 = (t.assignee_id IS NULL))
             AND ($7::bool IS NULL OR $7 = (t.status IN ('open', 'in_progress')
                                           AND ticket_due_at(t.severity, t.customer_tier, t.impact, t.raised_at, $13) < $12))
             AND ($8::timestamptz IS NULL OR t.raised_at >= $8)
             AND ($9::timestamptz IS NULL OR t.raised_at < $9)
             AND ($10::text IS NULL OR t.number ILIKE $10 OR t.subject ILIKE $10 OR c.name ILIKE $10)
             AND ($16::uuid IS NULL OR t.customer_id = $16)
             AND ($17::uuid IS NULL OR t.assignee_id IS NULL OR t.assignee_id = $17)
           ORDER BY CASE WHEN $11 THEN priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $12, $13) ELSE 0 END DESC,
                    CASE WHEN $11 THEN t.raised_at END, t.raised_position
           LIMIT $14 OFFSET $15"#,
        q.statuses.as_deref(),
        q.category,
        q.level,
        q.customer,
        q.assignee,
        q.unassigned,
        q.overdue,
        q.from,
        q.to,
        q.search,
        q.by_priority,
        now,
        policy,
        limit + 1,
        offset,
        scope_customer,
        scope_technician
    )
    .fetch_all(pool)
    .await
    .map_err(gql)?;
    let total = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "count!"
           FROM tickets t LEFT JOIN customers c ON c.customer_id = t.customer_id
           WHERE ($1::text[] IS NULL OR t.status = ANY($1))
             AND ($2::text IS NULL OR t.category = $2)
             AND ($3::text IS NULL OR priority_level(priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $11, $12), $12) = $3)
             AND ($4::uuid IS NULL OR t.customer_id = $4)
             AND ($5::uuid IS NULL OR t.assignee_id = $5)
             AND ($6::bool IS NULL OR $6 = (t.assignee_id IS NULL))
             AND ($7::bool IS NULL OR $7 = (t.status IN ('open', 'in_progress')
                                           AND ticket_due_at(t.severity, t.customer_tier, t.impact, t.raised_at, $12) < $11))
             AND ($8::timestamptz IS NULL OR t.raised_at >= $8)
             AND ($9::timestamptz IS NULL OR t.raised_at < $9)
             AND ($10::text IS NULL OR t.number ILIKE $10 OR t.subject ILIKE $10 OR c.name ILIKE $10)
             AND ($13::uuid IS NULL OR t.customer_id = $13)
             AND ($14::uuid IS NULL OR t.assignee_id IS NULL OR t.assignee_id = $14)"#,
        q.statuses.as_deref(),
        q.category,
        q.level,
        q.customer,
        q.assignee,
        q.unassigned,
        q.overdue,
        q.from,
        q.to,
        q.search,
        now,
        policy,
        scope_customer,
        scope_technician
    )
    .fetch_one(pool)
    .await
    .map_err(gql)?;
    let tickets = rows
        .into_iter()
        .map(Ticket::try_from)
        .collect::<Result<_, _>>()
        .map_err(gql)?;
    Ok(page(tickets, offset, limit, total))
}
