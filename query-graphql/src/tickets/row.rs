//! The stored ticket row, read the same way by every query, and its current priority.

use super::*;
use crate::types::from_label;

/// One row of the `tickets` read model with the customer's and the assignee's names: the one
/// read of it (`rows_by_id`), whatever query found the ticket.
#[derive(Clone)]
pub(crate) struct TicketRow {
    pub(crate) ticket_id: Uuid,
    pub(super) number: String,
    pub(super) status: String,
    pub(super) category: String,
    pub(super) subject: String,
    pub(super) description: String,
    pub(super) severity: String,
    pub(super) impact: i16,
    pub(super) customer_id: Uuid,
    pub(super) customer_name: String,
    pub(super) customer_tier: String,
    pub(super) device_id: Option<Uuid>,
    pub(super) assignee_id: Option<Uuid>,
    pub(super) assignee_name: Option<String>,
    pub(super) priority_score_at_raise: i32,
    pub(super) priority_level_at_raise: String,
    pub(super) notes: i32,
    pub(super) quote_amount: Option<i64>,
    pub(super) quote_description: Option<String>,
    pub(super) quote_decision: Option<String>,
    pub(super) approved_quote: Option<i64>,
    pub(super) final_cost: Option<i64>,
    pub(super) repair_summary: Option<String>,
    pub(super) parts_cost: i64,
    pub(super) paid: i64,
    pub(super) bill: i64,
    pub(super) covered: i64,
    pub(super) balance: i64,
    pub(super) claim_decision: Option<String>,
    pub(super) claim_reason: Option<String>,
    pub(super) rating: Option<i16>,
    pub(super) feedback_comment: Option<String>,
    pub(super) resolution: Option<String>,
    pub(crate) version: i64,
    pub(super) raised_at: DateTime<Utc>,
    pub(super) assigned_at: Option<DateTime<Utc>>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) completed_at: Option<DateTime<Utc>>,
    pub(super) resolved_at: Option<DateTime<Utc>>,
    pub(super) closed_at: Option<DateTime<Utc>>,
    pub(super) cancelled_at: Option<DateTime<Utc>>,
    pub(super) reopened_at: Option<DateTime<Utc>>,
    pub(super) settled_at: Option<DateTime<Utc>>,
    pub(super) updated_at: DateTime<Utc>,
}

/// A ticket's priority now and its SLA due time, by `domain::priority` (what the SQL functions
/// of migrations/0003 mirror for queries that sort or filter by them).
pub(crate) struct CurrentPriority {
    pub(super) score: i32,
    pub(super) level: PriorityLevel,
    pub(super) due_at: DateTime<Utc>,
}

impl CurrentPriority {
    pub(super) fn of(
        r: &TicketRow,
        policy: &domain::priority::PriorityPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, QueryError> {
        let severity = from_label::<domain::Severity>(&r.severity)?;
        let tier = from_label::<domain::Tier>(&r.customer_tier)?;
        let impact = domain::Impact::parse("impact", i64::from(r.impact))
            .map_err(|e| QueryError::Internal(Box::new(e)))?;
        let inputs = domain::priority::PriorityInputs {
            severity,
            tier,
            impact,
            raised_at: r.raised_at,
        };
        let score = policy.score(inputs, now);
        let at_raise = policy.level(policy.base_score(severity, tier, impact));
        Ok(CurrentPriority {
            score: i32::try_from(score).unwrap_or(i32::MAX),
            level: policy.level(score).into(),
            due_at: policy.due_at(at_raise, r.raised_at),
        })
    }
}

/// The ticket with its priority now: the domain's own priority engine is cheaper than planning
/// the SQL mirror of it for one row.
pub(crate) fn with_priority(row: TicketRow, settings: &Settings) -> Result<Ticket> {
    let now = Utc::now();
    let priority = CurrentPriority::of(&row, &settings.policy, now).map_err(gql)?;
    Ticket::new(row, priority, now).map_err(gql)
}
