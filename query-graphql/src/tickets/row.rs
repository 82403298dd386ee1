//! The stored ticket row, read the same way by every query, and its current priority.

use super::*;

/// One row of the `tickets` read model with the names and the priority computed now.
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
    pub(super) score: i32,
    pub(super) level: String,
    pub(super) due_at: DateTime<Utc>,
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

/// Fills in the current score, level and due time with `domain::priority` (what the SQL
/// functions of migrations/0003 mirror for queries that sort or filter by them).
pub(super) fn current_priority(
    r: &mut TicketRow,
    policy: &domain::priority::PriorityPolicy,
    now: DateTime<Utc>,
) {
    // The stored labels are the domain's serde names; read in place, without a JSON value.
    use serde::de::{value::Error, Deserialize, IntoDeserializer};
    let severity =
        domain::Severity::deserialize(IntoDeserializer::<Error>::into_deserializer(&*r.severity));
    let tier = domain::Tier::deserialize(IntoDeserializer::<Error>::into_deserializer(
        &*r.customer_tier,
    ));
    let impact = domain::Impact::parse("impact", i64::from(r.impact));
    if let (Ok(severity), Ok(tier), Ok(impact)) = (severity, tier, impact) {
        let inputs = domain::priority::PriorityInputs {
            severity,
            tier,
            impact,
            raised_at: r.raised_at,
        };
        let score = policy.score(inputs, now);
        r.score = i32::try_from(score).unwrap_or(i32::MAX);
        r.level = crate::types::label(policy.level(score));
        let at_raise = policy.level(policy.base_score(severity, tier, impact));
        r.due_at = policy.due_at(at_raise, r.raised_at);
    }
}

/// The ticket with its priority now: the domain's own priority engine is cheaper than planning
/// the SQL mirror of it for one row.
pub(crate) fn with_priority(mut row: TicketRow, settings: &Settings) -> Result<Ticket> {
    current_priority(&mut row, &settings.policy, Utc::now());
    Ticket::try_from(row).map_err(gql)
}
