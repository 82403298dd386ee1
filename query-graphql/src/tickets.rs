//! Tickets: queues ordered by the current priority, filters, details, history.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{ComplexObject, Context, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stream_store::{read_full_stream, EventStore, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::access::{principal, require_ticket};
use crate::error::{gql, QueryError};
use crate::types::{
    page, window, CustomerTier, Decision, Money, NoteVisibility, Page, PriorityLevel, Severity,
    TicketCategory, TicketStatus,
};
use crate::Settings;
use domain::access::{Role, TicketParties};

pub fn parse_id(id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        gql(QueryError::BadInput(format!(
            "{:?} is not a valid id",
            id.as_str()
        )))
    })
}

/// Filters for ticket lists; all optional, combined with AND.
#[derive(InputObject, Default, Clone)]
pub struct TicketFilter {
    pub status: Option<Vec<TicketStatus>>,
    pub category: Option<TicketCategory>,
    pub priority_level: Option<PriorityLevel>,
    pub customer_id: Option<ID>,
    pub assignee_id: Option<ID>,
    /// true: only tickets nobody is assigned to; false: only assigned ones.
    pub unassigned: Option<bool>,
    /// Only tickets past (true) or within (false) their SLA due time, open or in progress.
    pub overdue: Option<bool>,
    /// Raised at or after.
    pub raised_from: Option<DateTime<Utc>>,
    /// Raised before.
    pub raised_to: Option<DateTime<Utc>>,
    /// Case-insensitive text in the number, the subject or the customer's name.
    pub search: Option<String>,
}

#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum TicketOrder {
    /// Oldest first.
    #[default]
    RaisedAt,
    /// Highest current priority score first (it ages up while a ticket waits), then oldest.
    Priority,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Ticket {
    pub id: ID,
    pub number: String,
    pub status: TicketStatus,
    pub category: TicketCategory,
    pub subject: String,
    pub description: String,
    pub severity: Severity,
    pub impact: i32,
    pub customer: PartyRef,
    pub customer_tier: CustomerTier,
    pub assignee: Option<PartyRef>,
    #[graphql(skip)]
    pub device_id: Option<Uuid>,
    #[graphql(skip)]
    pub parties: TicketParties,
    /// The priority now: it ages up while the ticket waits.
    pub priority: Priority,
    /// The priority engine's assessment when the ticket was raised.
    pub priority_at_raise: Priority,
    /// When the SLA of the level it was raised at runs out.
    pub due_at: DateTime<Utc>,
    /// Open or in progress and past `dueAt`.
    pub overdue: bool,
    pub quote: Option<Quote>,
    pub final_cost: Option<Money>,
    pub repair_summary: Option<String>,
    pub parts_cost: Money,
    pub bill: Money,
    pub paid: Money,
    /// What an approved warranty claim covers.
    pub covered: Money,
    pub balance: Money,
    pub warranty_claim: Option<WarrantyClaim>,
    pub feedback: Option<Feedback>,
    pub resolution: Option<String>,
    /// All notes, internal ones included (`noteCount` counts what the reader may see).
    #[graphql(skip)]
    pub note_count: i32,
    /// Version of the ticket's stream this row reflects.
    pub version: i64,
    pub raised_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub reopened_at: Option<DateTime<Utc>>,
    /// When the balance last reached zero.
    pub settled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(SimpleObject, Clone)]
pub struct PartyRef {
    pub id: ID,
    pub name: String,
}

#[derive(SimpleObject, Clone, Copy)]
pub struct Priority {
    pub score: i32,
    pub level: PriorityLevel,
}

#[derive(SimpleObject)]
pub struct Quote {
    pub amount: Money,
    pub description: String,
    pub decision: Decision,
    /// The latest approved amount (the bill until the repair is complete).
    pub approved_amount: Option<Money>,
}

#[derive(SimpleObject)]
pub struct WarrantyClaim {
    pub decision: Decision,
    pub reason: Option<String>,
}

#[derive(SimpleObject)]
pub struct Feedback {
    pub rating: i32,
    pub comment: Option<String>,
}

#[derive(SimpleObject)]
pub struct Note {
    pub id: ID,
    pub text: String,
    pub visibility: NoteVisibility,
    /// The user who wrote it; staff only (null for customers, who must not learn staff ids).
    pub author_id: Option<String>,
    pub added_at: DateTime<Utc>,
}

#[derive(SimpleObject)]
pub struct PartUse {
    pub part: PartyRef,
    pub quantity: i32,
    pub unit_cost: Money,
    pub total: Money,
    pub used_at: DateTime<Utc>,
}

#[derive(SimpleObject)]
pub struct Payment {
    pub id: ID,
    pub amount: Money,
    /// cash, card, bank_transfer, upi or other.
    pub method: String,
    pub paid_at: DateTime<Utc>,
}

/// One row of the `tickets` read model with the names and the priority computed now.
#[derive(Clone)]
pub(crate) struct TicketRow {
    pub(crate) ticket_id: Uuid,
    number: String,
    status: String,
    category: String,
    subject: String,
    description: String,
    severity: String,
    impact: i16,
    customer_id: Uuid,
    customer_name: String,
    customer_tier: String,
    device_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
    assignee_name: Option<String>,
    priority_score_at_raise: i32,
    priority_level_at_raise: String,
    score: i32,
    level: String,
    due_at: DateTime<Utc>,
    notes: i32,
    quote_amount: Option<i64>,
    quote_description: Option<String>,
    quote_decision: Option<String>,
    approved_quote: Option<i64>,
    final_cost: Option<i64>,
    repair_summary: Option<String>,
    parts_cost: i64,
    paid: i64,
    bill: i64,
    covered: i64,
    balance: i64,
    claim_decision: Option<String>,
    claim_reason: Option<String>,
    rating: Option<i16>,
    feedback_comment: Option<String>,
    resolution: Option<String>,
    pub(crate) version: i64,
    raised_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    reopened_at: Option<DateTime<Utc>>,
    settled_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// Fills in the current score, level and due time with `domain::priority` (what the SQL
/// functions of migrations/0003 mirror for queries that sort or filter by them).
fn current_priority(
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
        r.level = PriorityLevel::from_domain(policy.level(score))
            .db()
            .to_owned();
        let at_raise = policy.level(policy.base_score(severity, tier, impact));
        r.due_at = policy.due_at(at_raise, r.raised_at);
    }
}

impl From<TicketRow> for Ticket {
    fn from(r: TicketRow) -> Self {
        let active = r.status == "open" || r.status == "in_progress";
        Ticket {
            id: ID(r.ticket_id.to_string()),
            number: r.number,
            status: TicketStatus::from_db(&r.status),
            category: TicketCategory::from_db(&r.category),
            subject: r.subject,
            description: r.description,
            severity: Severity::from_db(&r.severity),
            impact: i32::from(r.impact),
            customer: PartyRef {
                id: ID(r.customer_id.to_string()),
                name: r.customer_name,
            },
            customer_tier: CustomerTier::from_db(&r.customer_tier),
            assignee: r.assignee_id.map(|id| PartyRef {
                id: ID(id.to_string()),
                name: r.assignee_name.unwrap_or_default(),
            }),
            device_id: r.device_id,
            parties: TicketParties {
                customer_id: domain::CustomerId::from_uuid(r.customer_id),
                assignee: r.assignee_id.map(domain::TechnicianId::from_uuid),
            },
            priority: Priority {
                score: r.score,
                level: PriorityLevel::from_db(&r.level),
            },
            priority_at_raise: Priority {
                score: r.priority_score_at_raise,
                level: PriorityLevel::from_db(&r.priority_level_at_raise),
            },
            overdue: active && r.due_at < Utc::now(),
            due_at: r.due_at,
            quote: r.quote_amount.map(|amount| Quote {
                amount: Money(amount),
                description: r.quote_description.unwrap_or_default(),
                decision: Decision::from_db(r.quote_decision.as_deref().unwrap_or("pending")),
                approved_amount: r.approved_quote.map(Money),
            }),
            final_cost: r.final_cost.map(Money),
            repair_summary: r.repair_summary,
            parts_cost: Money(r.parts_cost),
            bill: Money(r.bill),
            paid: Money(r.paid),
            covered: Money(r.covered),
            balance: Money(r.balance),
            warranty_claim: r.claim_decision.map(|d| WarrantyClaim {
                decision: Decision::from_db(&d),
                reason: r.claim_reason,
            }),
            feedback: r.rating.map(|rating| Feedback {
                rating: i32::from(rating),
                comment: r.feedback_comment,
            }),
            resolution: r.resolution,
            note_count: r.notes,
            version: r.version,
            raised_at: r.raised_at,
            assigned_at: r.assigned_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            resolved_at: r.resolved_at,
            closed_at: r.closed_at,
            cancelled_at: r.cancelled_at,
            reopened_at: r.reopened_at,
            settled_at: r.settled_at,
            updated_at: r.updated_at,
        }
    }
}

#[ComplexObject]
impl Ticket {
    /// How many notes the reader may see: all for staff, the public ones for customers.
    #[graphql(complexity = "QUERY_COST")]
    async fn note_count(&self, ctx: &Context<'_>) -> Result<i32> {
        if principal(ctx)?.role.is_staff() {
            return Ok(self.note_count);
        }
        let pool = ctx.data::<PgPool>()?;
        let id = parse_id(&self.id)?;
        let public = sqlx::query_scalar!(
            r#"SELECT count(*)::int AS "count!" FROM ticket_notes
               WHERE ticket_id = $1 AND visibility <> 'internal'"#,
            id
        )
        .fetch_one(pool)
        .await
        .map_err(gql)?;
        Ok(public)
    }

    /// Notes, oldest first. Customers see only public ones.
    #[graphql(complexity = "list_cost(child_complexity)")]
    async fn notes(&self, ctx: &Context<'_>) -> Result<Vec<Note>> {
        let pool = ctx.data::<PgPool>()?;
        let staff = principal(ctx)?.role.is_staff();
        let id = parse_id(&self.id)?;
        let rows = sqlx::query!(
            "SELECT note_id, text, visibility, actor_id, added_at FROM ticket_notes
             WHERE ticket_id = $1 ORDER BY position",
            id
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .filter(|r| staff || r.visibility != "internal")
            .map(|r| Note {
                id: ID(r.note_id.to_string()),
                text: r.text,
                visibility: if r.visibility == "internal" {
                    NoteVisibility::Internal
                } else {
                    NoteVisibility::Public
                },
                author_id: staff.then_some(r.actor_id),
                added_at: r.added_at,
            })
            .collect())
    }

    /// Spare parts used, in order.
    #[graphql(complexity = "list_cost(child_complexity)")]
    async fn parts(&self, ctx: &Context<'_>) -> Result<Vec<PartUse>> {
        let pool = ctx.data::<PgPool>()?;
        let id = parse_id(&self.id)?;
        let rows = sqlx::query!(
            r#"SELECT u.part_id, COALESCE(p.name, '') AS "name!", u.quantity, u.unit_cost, u.used_at
               FROM ticket_parts u LEFT JOIN parts p USING (part_id)
               WHERE u.ticket_id = $1 ORDER BY u.position"#,
            id
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|r| PartUse {
                part: PartyRef {
                    id: ID(r.part_id.to_string()),
                    name: r.name,
                },
                quantity: r.quantity,
                unit_cost: Money(r.unit_cost),
                total: Money(r.unit_cost.saturating_mul(i64::from(r.quantity))),
                used_at: r.used_at,
            })
            .collect())
    }

    /// Payments, in order.
    #[graphql(complexity = "list_cost(child_complexity)")]
    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<Payment>> {
        let pool = ctx.data::<PgPool>()?;
        let id = parse_id(&self.id)?;
        let rows = sqlx::query!(
            "SELECT payment_id, amount, method, paid_at FROM ticket_payments
             WHERE ticket_id = $1 ORDER BY position",
            id
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        Ok(rows
            .into_iter()
            .map(|r| Payment {
                id: ID(r.payment_id.to_string()),
                amount: Money(r.amount),
                method: r.method,
                paid_at: r.paid_at,
            })
            .collect())
    }

    /// The device the ticket is about, if any.
    async fn device(&self, ctx: &Context<'_>) -> Result<Option<crate::devices::Device>> {
        match self.device_id {
            Some(id) => crate::devices::device_by_id(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The ticket as it was after `version`, or at `time`, rebuilt from its events by the
    /// domain's own code. Null before the ticket existed.
    async fn state_at(
        &self,
        ctx: &Context<'_>,
        version: Option<i64>,
        time: Option<DateTime<Utc>>,
    ) -> Result<Option<TicketSnapshot>> {
        staff_only(ctx)?;
        let store = ctx.data::<Arc<dyn EventStore>>()?;
        let id = parse_id(&self.id)?;
        let events = read_full_stream(&**store, &StreamId::for_aggregate("ticket", id))
            .await
            .map_err(gql)?;
        let chosen = crate::history::up_to(&events, version, time)?;
        let Some(last) = chosen.last() else {
            return Ok(None);
        };
        let ticket: domain::Ticket = crate::history::fold(chosen)?;
        Ok(ticket.state().map(|s| TicketSnapshot::new(s, last)))
    }

    /// Every event of the ticket's stream, read from the store (not from a read model).
    #[graphql(complexity = "list_cost(child_complexity)")]
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<HistoryEvent>> {
        staff_only(ctx)?;
        let store = ctx.data::<Arc<dyn EventStore>>()?;
        let id = parse_id(&self.id)?;
        let stream = StreamId::for_aggregate("ticket", id);
        let events = read_full_stream(&**store, &stream).await.map_err(gql)?;
        Ok(events.into_iter().map(HistoryEvent).collect())
    }
}

/// A ticket as it was at one version of its stream.
#[derive(SimpleObject)]
pub struct TicketSnapshot {
    pub version: i64,
    pub position: i64,
    /// When the last event included was recorded.
    pub recorded_at: DateTime<Utc>,
    pub status: TicketStatus,
    pub assignee_id: Option<ID>,
    pub bill: Money,
    pub paid: Money,
    pub covered: Money,
    pub balance: Money,
    /// The whole state, as the domain holds it.
    pub state: Json<serde_json::Value>,
}

impl TicketSnapshot {
    fn new(s: &domain::TicketState, last: &RecordedEvent) -> Self {
        TicketSnapshot {
            version: last.version,
            position: last.position,
            recorded_at: last.recorded_at,
            status: TicketStatus::from_db(s.status.label()),
            assignee_id: s.assignee.map(|a| ID(a.to_string())),
            bill: Money(s.bill().minor_units()),
            paid: Money(s.paid.minor_units()),
            covered: Money(s.covered().minor_units()),
            balance: Money(s.balance().minor_units()),
            state: Json(serde_json::to_value(s).unwrap_or_default()),
        }
    }
}

/// Queues are staff views; a technician sees their own and the unassigned one.
pub(crate) fn queue_access(ctx: &Context<'_>, technician_id: Option<&ID>) -> Result<()> {
    let who = principal(ctx)?;
    let technician = technician_id.map(parse_id).transpose()?;
    match who.role {
        Role::Admin | Role::Auditor => Ok(()),
        Role::Technician
            if technician.is_none() || technician == who.technician_id.map(|t| t.as_uuid()) =>
        {
            Ok(())
        }
        _ => Err(gql(QueryError::Forbidden("read this queue"))),
    }
}

/// The raw history holds staff-only facts (internal notes): staff only.
fn staff_only(ctx: &Context<'_>) -> Result<()> {
    if principal(ctx)?.role.is_staff() {
        Ok(())
    } else {
        Err(gql(QueryError::Forbidden("read a ticket's raw history")))
    }
}

/// Who caused an event.
#[derive(SimpleObject, Debug, PartialEq)]
pub struct Actor {
    pub id: String,
    pub role: String,
}

/// One event of a stream, with its metadata.
pub struct HistoryEvent(pub RecordedEvent);

#[Object]
impl HistoryEvent {
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    async fn version(&self) -> i64 {
        self.0.version
    }
    async fn position(&self) -> i64 {
        self.0.position
    }
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    async fn actor(&self) -> Actor {
        Actor {
            id: self.0.actor.id.clone(),
            role: self.0.actor.role.clone(),
        }
    }
    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.data.to_value())
    }
    async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    async fn schema_version(&self) -> i32 {
        self.0.schema_version
    }
    async fn command_id(&self) -> ID {
        ID(self.0.command_id.to_string())
    }
    async fn correlation_id(&self) -> ID {
        ID(self.0.correlation_id.to_string())
    }
    async fn causation_id(&self) -> ID {
        ID(self.0.causation_id.to_string())
    }
}

/// The parameters of one ticket list query, in SQL's terms.
struct Query {
    statuses: Option<Vec<String>>,
    category: Option<String>,
    level: Option<String>,
    customer: Option<Uuid>,
    assignee: Option<Uuid>,
    unassigned: Option<bool>,
    overdue: Option<bool>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    search: Option<String>,
    by_priority: bool,
}

fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Query {
    fn new(filter: TicketFilter, order: TicketOrder) -> Result<Self> {
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
async fn list(
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
    Ok(page(
        rows.into_iter().map(Ticket::from).collect(),
        offset,
        limit,
        total,
    ))
}

/// What a field that runs its own SQL query costs beyond its children (a list query, or a
/// list below each item of a page): aliasing one such field hundreds of times is refused.
pub(crate) const QUERY_COST: usize = 25;
/// Items a list without paging (a ticket's notes, parts, payments, history) is charged for.
pub(crate) const UNPAGED_ITEMS: usize = 10;

/// A page costs its query, and its node's complexity once per requested item.
pub(crate) fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first
        .map_or(crate::types::DEFAULT_PAGE, i64::from)
        .clamp(1, crate::types::MAX_PAGE);
    usize::try_from(items)
        .unwrap_or(1)
        .saturating_mul(child_complexity)
        .saturating_add(QUERY_COST)
}

/// An unpaged list below a ticket: its query, and its items as `UNPAGED_ITEMS`.
pub(crate) fn list_cost(child_complexity: usize) -> usize {
    child_complexity
        .saturating_mul(UNPAGED_ITEMS)
        .saturating_add(QUERY_COST)
}

const ACTIVE: [TicketStatus; 2] = [TicketStatus::Open, TicketStatus::InProgress];

/// Queue pages that end before this many tickets are read from the head of each priority group
/// (`queue_head`); deeper pages scan and score the whole queue.
const QUEUE_HEAD: i64 = 500;

/// A queue request with no filter but statuses of the active ones.
fn plain_queue(f: &TicketFilter) -> bool {
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
fn priority_groups() -> (Vec<String>, Vec<String>, Vec<i16>) {
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
async fn queue_head(
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
        .map(|mut row| {
            current_priority(&mut row, &settings.policy, now);
            Ticket::from(row)
        })
        .collect();
    Ok(page(tickets, offset, limit, total))
}

#[derive(Default)]
pub struct TicketQueries;

#[Object]
impl TicketQueries {
    /// Tickets, filtered; oldest first unless ordered by priority.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn tickets(
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
    async fn ticket_queue(
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
    async fn next_ticket(
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
    async fn overdue_tickets(
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
    async fn ticket(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Ticket>> {
        let id = parse_id(&id)?;
        one(ctx, Some(id), None).await
    }

    /// One ticket by its number (`TKT-YYYYMMDD-XXXXXX`), or null.
    async fn ticket_by_number(&self, ctx: &Context<'_>, number: String) -> Result<Option<Ticket>> {
        let number = domain::TicketNumber::parse("number", &number)
            .map_err(|e| gql(QueryError::BadInput(e.to_string())))?;
        one(ctx, None, Some(number.as_str().to_owned())).await
    }
}

async fn one(
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
    let ticket = row.map(|row| with_priority(row, settings));
    if let Some(t) = &ticket {
        require_ticket(ctx, t.parties)?;
    } else {
        principal(ctx)?;
    }
    Ok(ticket)
}

/// Most ticket rows kept by `TicketCache` (a row is about a kilobyte).
const CACHED_TICKETS: usize = 20_000;

/// Ticket rows by id for `ticket(id:)`, so that reading a ticket again costs no round trip.
/// A row is served only while the `Freshness` generation it was read under is current: any
/// projection commit (heard, or found by a reload) ends it, and nothing is served while the
/// listener is not listening. Read-your-writes holds: a wait that saw position P also saw
/// the generation move past every row read before P. Least recently used rows go first.
pub(crate) struct TicketCache {
    rows: std::sync::Mutex<lru::LruCache<Uuid, (u64, TicketRow)>>,
}

impl Default for TicketCache {
    fn default() -> Self {
        let capacity =
            std::num::NonZeroUsize::new(CACHED_TICKETS).unwrap_or(std::num::NonZeroUsize::MIN);
        TicketCache {
            rows: std::sync::Mutex::new(lru::LruCache::new(capacity)),
        }
    }
}

impl TicketCache {
    fn get(&self, id: Uuid, now: crate::freshness::Progress) -> Option<TicketRow> {
        if !now.listening {
            return None;
        }
        let mut rows = self.rows.lock().ok()?;
        match rows.get(&id) {
            Some((generation, row)) if *generation == now.generation => Some(row.clone()),
            _ => None,
        }
    }

    /// `read_under`: the progress taken before the row was read.
    fn put(&self, id: Uuid, read_under: crate::freshness::Progress, row: &TicketRow) {
        if !read_under.listening {
            return;
        }
        if let Ok(mut rows) = self.rows.lock() {
            rows.put(id, (read_under.generation, row.clone()));
        }
    }
}

/// One ticket by id or number, outside of a request's context (subscriptions).
pub(crate) async fn load(
    pool: &PgPool,
    settings: &Settings,
    id: Option<Uuid>,
    number: Option<String>,
) -> Result<Option<Ticket>> {
    Ok(fetch(pool, id, number)
        .await?
        .map(|row| with_priority(row, settings)))
}

/// One ticket row by id or number, as stored (the priority is computed when it is served).
async fn fetch(
    pool: &PgPool,
    id: Option<Uuid>,
    number: Option<String>,
) -> Result<Option<TicketRow>> {
    let id = match (id, number) {
        (Some(id), _) => id,
        (None, Some(number)) => {
            // Unique by construction; the first raised should a duplicate ever appear.
            let id = sqlx::query_scalar!(
                "SELECT ticket_id FROM tickets WHERE number = $1 ORDER BY raised_position LIMIT 1",
                number
            )
            .fetch_optional(pool)
            .await
            .map_err(gql)?;
            match id {
                Some(id) => id,
                None => return Ok(None),
            }
        }
        (None, None) => return Ok(None),
    };
    Ok(rows_by_id(pool, &[id]).await.map_err(gql)?.pop())
}

/// Ticket rows by id, in one query.
pub(crate) async fn rows_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<TicketRow>, sqlx::Error> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.ticket_id, t.number, t.status, t.category, t.subject, t.description,
                  t.severity, t.impact, t.customer_id, COALESCE(c.name, '') AS "customer_name!",
                  t.customer_tier, t.device_id, t.assignee_id, te.name AS "assignee_name?",
                  t.priority_score_at_raise, t.priority_level_at_raise,
                  0 AS "score!", '' AS "level!", t.raised_at AS "due_at!",
                  t.notes, t.quote_amount, t.quote_description, t.quote_decision, t.approved_quote,
                  t.final_cost, t.repair_summary, t.parts_cost, t.paid, t.bill, t.covered,
                  t.balance, t.claim_decision, t.claim_reason, t.rating, t.feedback_comment,
                  t.resolution, t.version, t.raised_at, t.assigned_at, t.started_at,
                  t.completed_at, t.resolved_at, t.closed_at, t.cancelled_at, t.reopened_at,
                  t.settled_at, t.updated_at
           FROM tickets t
           LEFT JOIN customers c ON c.customer_id = t.customer_id
           LEFT JOIN technicians te ON te.technician_id = t.assignee_id
           WHERE t.ticket_id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await
}

/// Batches the `ticket(id:)` reads of concurrent requests into one query (a `DataLoader` in
/// the schema's data, shared by every request): under load one round trip serves several
/// requests, and the pool's connections are taken and released once per batch.
pub(crate) struct TicketLoader(pub(crate) PgPool);

impl async_graphql::dataloader::Loader<Uuid> for TicketLoader {
    type Value = TicketRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, TicketRow>, Self::Error> {
        let rows = rows_by_id(&self.0, ids).await.map_err(Arc::new)?;
        Ok(rows.into_iter().map(|r| (r.ticket_id, r)).collect())
    }
}

/// The ticket with its priority now: the domain's own priority engine is cheaper than planning
/// the SQL mirror of it for one row.
pub(crate) fn with_priority(mut row: TicketRow, settings: &Settings) -> Ticket {
    current_priority(&mut row, &settings.policy, Utc::now());
    Ticket::from(row)
}
