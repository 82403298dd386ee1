//! A technician's queue, the hottest list, read from the head of an index.

use super::*;

pub(super) const ACTIVE: [TicketStatus; 2] = [TicketStatus::Open, TicketStatus::InProgress];

/// Queue pages that end before this many tickets are read from the head of each priority group
/// (`queue_head`); deeper pages scan and score the whole queue.
pub(super) const QUEUE_HEAD: i64 = 500;

/// A queue request with no filter but statuses of the active ones.
pub(super) fn plain_queue(f: &TicketFilter) -> bool {
    f.category.is_none()
        && f.priority_level.is_none()
        && f.customer_id.is_none()
        && f.assignee_id.is_none()
        && f.unassigned.is_none()
        && f.overdue.is_none()
        && f.raised_from.is_none()
        && f.raised_to.is_none()
        && f.search.as_deref().is_none_or(|s| s.trim().is_empty())
        && f.status
            .as_ref()
            .is_none_or(|s| s.iter().all(|s| ACTIVE.contains(s)))
}

/// Every (severity, tier, impact) the domain allows, as stored: the priority groups.
pub(super) fn priority_groups() -> (Vec<String>, Vec<String>, Vec<i16>) {
    use domain::{Severity, Tier};
    // The matches make a new variant a compile error here rather than a missing group.
    let severities = [Severity::Critical, Severity::Major, Severity::Minor].map(|s| match s {
        Severity::Critical => "critical",
        Severity::Major => "major",
        Severity::Minor => "minor",
    });
    let tiers = [Tier::Free, Tier::Paid, Tier::Enterprise].map(|t| match t {
        Tier::Free => "free",
        Tier::Paid => "paid",
        Tier::Enterprise => "enterprise",
    });
    let impacts = (1..=5i64)
        .filter_map(|i| domain::Impact::parse("impact", i).ok())
        .map(|i| i16::from(i.get()))
        .collect();
    (
        severities.map(str::to_owned).to_vec(),
        tiers.map(str::to_owned).to_vec(),
        impacts,
    )
}

/// A page of the work queue (a technician's, or the unassigned tickets), by current priority
/// then age, without scoring every ticket in it: within one priority group (same severity,
/// tier and impact) the score only grows with age, so the first `offset + limit` tickets of
/// the queue are among the oldest `offset + limit` of each group (index
/// `tickets_active_queue_idx`). Same order as `list` with `TicketOrder::Priority`.
pub(super) async fn queue_head(
    ctx: &Context<'_>,
    statuses: &[TicketStatus],
    assignee: Option<Uuid>,
    offset: i64,
    limit: i64,
) -> Result<Page<Ticket>> {
    // No optional filters: the pool with cached plans (see `build_schema`). The candidates come
    // from `queue_candidates` (migrations/0006), which keeps the planner on the ordered index.
    let pool = &ctx.data::<crate::Lookups>()?.pool;
    let settings = ctx.data::<Settings>()?;
    let policy = serde_json::to_value(&settings.policy)
        .map_err(|e| gql(QueryError::Internal(Box::new(e))))?;
    let statuses: Vec<String> = statuses.iter().map(|s| s.db().to_owned()).collect();
    let (severities, tiers, impacts) = priority_groups();
    let now = Utc::now();
    // The page's ids in queue order; then the rows, by the one select of ticket rows.
    let page_ids = sqlx::query_scalar!(
        r#"SELECT q.candidate AS "candidate!"
           FROM queue_candidates($5, $4, $1, $2, $3, $8) AS q
           ORDER BY priority_score(q.severity, q.tier, q.impact, q.raised_at, $6, $7) DESC,
                    q.raised_at, q.raised_position
           LIMIT $9 OFFSET $10"#,
        &severities,
        &tiers,
        &impacts,
        &statuses,
        assignee,
        now,
        policy,
        offset + limit + 1,
        limit + 1,
        offset
    )
    .fetch_all(pool)
    .await
    .map_err(gql)?;
    let mut rows: HashMap<Uuid, TicketRow> = rows_by_id(pool, &page_ids)
        .await
        .map_err(gql)?
        .into_iter()
        .map(|r| (r.ticket_id, r))
        .collect();
    let total = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "count!" FROM tickets t
           WHERE t.status IN ('open', 'in_progress') AND t.status = ANY($1)
             AND COALESCE(t.assignee_id, '00000000-0000-0000-0000-000000000000'::uuid)
                 = COALESCE($2::uuid, '00000000-0000-0000-0000-000000000000'::uuid)"#,
        &statuses,
        assignee
    )
    .fetch_one(pool)
    .await
    .map_err(gql)?;
    // The page's priorities with the domain's engine, at the time the SQL ordered by.
    let tickets = page_ids
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
