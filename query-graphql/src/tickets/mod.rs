//! Tickets: queues ordered by the current priority, filters, details, history.

use crate::types::Stored as _;
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{ComplexObject, Context, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stream_store::{read_full_stream, EventStore, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::access::{principal, require_ticket};
use crate::error::{gql, QueryError};
pub(crate) use crate::types::{list_cost, page_cost, parse_id, PartyRef, QUERY_COST};
use crate::types::{
    page, window, CustomerTier, Decision, Money, NoteVisibility, Page, PriorityLevel, Severity,
    TicketCategory, TicketStatus,
};
use crate::Settings;
use domain::access::{Role, TicketParties};

mod access;
mod cache;
mod history;
mod listing;
mod queries;
mod queue;
mod row;

pub(crate) use access::queue_access;
use access::staff_only;
use cache::fetch;
pub(crate) use cache::{load, rows_by_id, TicketCache, TicketLoader};
pub use history::{Actor, HistoryEvent};
use listing::{list, Query};
pub use queries::TicketQueries;
use queue::{plain_queue, queue_head, ACTIVE, QUEUE_HEAD};

pub(crate) use row::{with_priority, CurrentPriority, TicketRow};

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
#[graphql(complex)]
pub struct Note {
    pub id: ID,
    pub text: String,
    pub visibility: NoteVisibility,
    /// The user who wrote it; staff only (null for customers, who must not learn staff ids).
    pub author_id: Option<String>,
    pub added_at: DateTime<Utc>,
    #[graphql(skip)]
    pub(crate) writer: String,
}

#[ComplexObject]
impl Note {
    /// Who wrote it, by name and role (what customers see of staff).
    async fn author(&self, ctx: &Context<'_>) -> Result<Option<crate::people::Person>> {
        crate::people::person(ctx, &self.writer).await
    }
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

impl Ticket {
    /// The ticket a stored row and its priority at `now` describe.
    fn new(r: TicketRow, current: CurrentPriority, now: DateTime<Utc>) -> Result<Self, QueryError> {
        let status = TicketStatus::from_db(&r.status)?;
        let active = matches!(status, TicketStatus::Open | TicketStatus::InProgress);
        let decision = |d: Option<&str>| Decision::from_db(d.unwrap_or("pending"));
        Ok(Ticket {
            id: ID(r.ticket_id.to_string()),
            number: r.number,
            status,
            category: TicketCategory::from_db(&r.category)?,
            subject: r.subject,
            description: r.description,
            severity: Severity::from_db(&r.severity)?,
            impact: i32::from(r.impact),
            customer: PartyRef {
                id: ID(r.customer_id.to_string()),
                name: r.customer_name,
            },
            customer_tier: CustomerTier::from_db(&r.customer_tier)?,
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
                score: current.score,
                level: current.level,
            },
            priority_at_raise: Priority {
                score: r.priority_score_at_raise,
                level: PriorityLevel::from_db(&r.priority_level_at_raise)?,
            },
            overdue: active && current.due_at < now,
            due_at: current.due_at,
            quote: match r.quote_amount {
                Some(amount) => Some(Quote {
                    amount: Money(amount),
                    description: r.quote_description.unwrap_or_default(),
                    decision: decision(r.quote_decision.as_deref())?,
                    approved_amount: r.approved_quote.map(Money),
                }),
                None => None,
            },
            final_cost: r.final_cost.map(Money),
            repair_summary: r.repair_summary,
            parts_cost: Money(r.parts_cost),
            bill: Money(r.bill),
            paid: Money(r.paid),
            covered: Money(r.covered),
            balance: Money(r.balance),
            warranty_claim: match r.claim_decision {
                Some(d) => Some(WarrantyClaim {
                    decision: decision(Some(&d))?,
                    reason: r.claim_reason,
                }),
                None => None,
            },
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
        })
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
                author_id: staff.then_some(r.actor_id.clone()),
                writer: r.actor_id,
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
        let events = read_full_stream(
            &**store,
            &StreamId::for_aggregate(<domain::Ticket as domain::Aggregate>::STREAM_PREFIX, id),
        )
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
        let stream =
            StreamId::for_aggregate(<domain::Ticket as domain::Aggregate>::STREAM_PREFIX, id);
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
            status: s.status.into(),
            assignee_id: s.assignee.map(|a| ID(a.to_string())),
            bill: Money(s.bill().minor_units()),
            paid: Money(s.paid.minor_units()),
            covered: Money(s.covered().minor_units()),
            balance: Money(s.balance().minor_units()),
            state: Json(serde_json::to_value(s).unwrap_or_default()),
        }
    }
}
