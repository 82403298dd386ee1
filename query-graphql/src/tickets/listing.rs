//! Ticket lists: filters and orders in SQL, paged; what a list costs.

use super::*;

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
    // The number of matches and the page's ids in order; the rows are then read as every query
    // reads them (`rows_by_id`), their priorities computed at the time the SQL used.
    let found = sqlx::query!(
        r#"WITH matches AS (
             SELECT t.ticket_id, t.raised_at, t.raised_position,
                    CASE WHEN $11 THEN priority_score(t.severity, t.customer_tier, t.impact, t.raised_at, $12, $13) ELSE 0 END AS score
             FROM tickets t
             LEFT JOIN customers c ON c.customer_id = t.customer_id
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
               AND ($17::uuid IS NULL OR t.assignee_id IS NULL OR t.assignee_id = $17))
           SELECT (SELECT COUNT(*) FROM matches) AS "total!",
                  ARRAY(SELECT ticket_id FROM matches
                        ORDER BY score DESC, CASE WHEN $11 THEN raised_at END, raised_position
                        LIMIT $14 OFFSET $15) AS "ids!""#,
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
    .fetch_one(pool)
    .await
    .map_err(gql)?;
    let (total, ids) = (found.total, found.ids);
    let mut rows: HashMap<Uuid, TicketRow> = rows_by_id(pool, &ids)
        .await
        .map_err(gql)?
        .into_iter()
        .map(|r| (r.ticket_id, r))
        .collect();
    let tickets = ids
        .iter()
        .filter_map(|id| rows.remove(id))
        .map(|row| {
            let priority = CurrentPriority::of(&row, &settings.policy, now)?;
            Ticket::new(row, priority, now)
        })
        .collect::<Result<_, _>>()
        .map_err(gql)?;
    Ok(page(tickets, offset, limit, total))
}
