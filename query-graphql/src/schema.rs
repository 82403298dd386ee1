use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, Json, Object, Result, Schema, SimpleObject, ID,
};
use chrono::{DateTime, Utc};
use domain::priority::{PriorityInputs, PriorityPolicy};
use domain::{Impact, Severity, Tier};
use sqlx::PgPool;
use stream_store::{read_full_stream, EventStore, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::error::{gql, QueryError};

pub type LedgerSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

/// Builds the schema over the read models in `pool` and the streams of `store`.
pub fn build_schema(
    pool: PgPool,
    store: Arc<dyn EventStore>,
    policy: PriorityPolicy,
) -> LedgerSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .data(pool)
        .data(store)
        .data(policy)
        .limit_depth(12)
        .limit_complexity(2_000)
        .finish()
}

pub struct QueryRoot;

#[derive(SimpleObject)]
pub struct PageInfoExtra {
    /// Number of items matching the filters, over all pages.
    total_count: i64,
}

type Page<T> = Connection<OpaqueCursor<i64>, T, PageInfoExtra>;

fn page_size(first: Option<i32>) -> Result<i64> {
    let first = first.map_or(DEFAULT_PAGE, i64::from);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(gql(QueryError::BadInput(format!(
            "first must be between 0 and {MAX_PAGE}"
        ))));
    }
    Ok(first)
}

fn decode_cursor(after: Option<String>) -> Result<i64> {
    match after {
        None => Ok(0),
        Some(c) => OpaqueCursor::<i64>::decode_cursor(&c)
            .map(|c| c.0)
            .map_err(|_| {
                gql(QueryError::BadInput(
                    "after is not a cursor of this list".into(),
                ))
            }),
    }
}

fn parse_id(id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        gql(QueryError::BadInput(format!(
            "{:?} is not a valid id",
            id.as_str()
        )))
    })
}

#[Object]
impl QueryRoot {
    /// Tickets in the order they were raised, optionally filtered.
    async fn tickets(
        &self,
        ctx: &Context<'_>,
        status: Option<TicketStatus>,
        assignee_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Ticket>> {
        let pool = ctx.data::<PgPool>()?;
        let limit = page_size(first)?;
        let after = decode_cursor(after)?;
        let status = status.map(TicketStatus::db);
        let assignee = assignee_id.as_ref().map(parse_id).transpose()?;
        let rows = sqlx::query_as!(
            TicketRow,
            r#"SELECT ticket_id, number, raised_position, status, category, subject, severity,
                      impact, customer_id, customer_name, customer_tier, assignee_id,
                      assignee_name, version, raised_at, assigned_at, started_at, resolved_at,
                      closed_at, updated_at
               FROM ticket_queue
               WHERE ($1::text IS NULL OR status = $1)
                 AND ($2::uuid IS NULL OR assignee_id = $2)
                 AND raised_position > $3
               ORDER BY raised_position
               LIMIT $4"#,
            status,
            assignee,
            after,
            limit + 1
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        let total_count = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!" FROM ticket_queue
               WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR assignee_id = $2)"#,
            status,
            assignee
        )
        .fetch_one(pool)
        .await
        .map_err(gql)?;
        let has_next = rows.len() as i64 > limit;
        let mut page =
            Connection::with_additional_fields(after > 0, has_next, PageInfoExtra { total_count });
        page.edges.extend(
            rows.into_iter()
                .take(limit as usize)
                .map(|row| Edge::new(OpaqueCursor(row.raised_position), Ticket(row))),
        );
        Ok(page)
    }

    /// One ticket by id, or null.
    async fn ticket(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Ticket>> {
        let id = parse_id(&id)?;
        let pool = ctx.data::<PgPool>()?;
        let row = sqlx::query_as!(
            TicketRow,
            r#"SELECT ticket_id, number, raised_position, status, category, subject, severity,
                      impact, customer_id, customer_name, customer_tier, assignee_id,
                      assignee_name, version, raised_at, assigned_at, started_at, resolved_at,
                      closed_at, updated_at
               FROM ticket_queue WHERE ticket_id = $1"#,
            id
        )
        .fetch_optional(pool)
        .await
        .map_err(gql)?;
        Ok(row.map(Ticket))
    }

    /// One ticket by its number (`TKT-YYYYMMDD-XXXXXX`), or null.
    async fn ticket_by_number(&self, ctx: &Context<'_>, number: String) -> Result<Option<Ticket>> {
        let number = domain::TicketNumber::parse("number", &number)
            .map_err(|e| gql(QueryError::BadInput(e.to_string())))?;
        let pool = ctx.data::<PgPool>()?;
        let row = sqlx::query_as!(
            TicketRow,
            r#"SELECT ticket_id, number, raised_position, status, category, subject, severity,
                      impact, customer_id, customer_name, customer_tier, assignee_id,
                      assignee_name, version, raised_at, assigned_at, started_at, resolved_at,
                      closed_at, updated_at
               FROM ticket_queue WHERE number = $1"#,
            number.as_str()
        )
        .fetch_optional(pool)
        .await
        .map_err(gql)?;
        Ok(row.map(Ticket))
    }

    /// Every event of the store, oldest first.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        let pool = ctx.data::<PgPool>()?;
        let limit = page_size(first)?;
        let after = decode_cursor(after)?;
        let rows = sqlx::query_as!(
            AuditRow,
            "SELECT position, stream_id, version, event_id, event_type, schema_version,
                    actor_id, actor_role, command_id, correlation_id, causation_id,
                    recorded_at, data
             FROM audit_log WHERE position > $1 ORDER BY position LIMIT $2",
            after,
            limit + 1
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        let total_count = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "count!" FROM audit_log"#)
            .fetch_one(pool)
            .await
            .map_err(gql)?;
        let has_next = rows.len() as i64 > limit;
        let mut page =
            Connection::with_additional_fields(after > 0, has_next, PageInfoExtra { total_count });
        page.edges.extend(
            rows.into_iter()
                .take(limit as usize)
                .map(|r| Edge::new(OpaqueCursor(r.position), AuditEntry::from(r))),
        );
        Ok(page)
    }
}

/// Where a ticket is in its workflow.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
    Cancelled,
}

impl TicketStatus {
    fn db(self) -> String {
        match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
        }
        .to_owned()
    }

    fn from_db(s: &str) -> Self {
        match s {
            "in_progress" => Self::InProgress,
            "resolved" => Self::Resolved,
            "closed" => Self::Closed,
            "cancelled" => Self::Cancelled,
            _ => Self::Open,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PriorityLevel {
    P0,
    P1,
    P2,
    P3,
}

struct TicketRow {
    ticket_id: Uuid,
    number: String,
    raised_position: i64,
    status: String,
    category: String,
    subject: String,
    severity: String,
    impact: i16,
    customer_id: Uuid,
    customer_name: String,
    customer_tier: String,
    assignee_id: Option<Uuid>,
    assignee_name: Option<String>,
    version: i64,
    raised_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

pub struct Ticket(TicketRow);

#[derive(SimpleObject)]
pub struct PartyRef {
    id: ID,
    name: String,
}

/// A ticket's priority, computed now: it ages up while the ticket waits.
#[derive(SimpleObject)]
pub struct Priority {
    score: i32,
    level: PriorityLevel,
}

#[Object]
impl Ticket {
    async fn id(&self) -> ID {
        ID(self.0.ticket_id.to_string())
    }
    async fn number(&self) -> &str {
        &self.0.number
    }
    async fn status(&self) -> TicketStatus {
        TicketStatus::from_db(&self.0.status)
    }
    /// repair, warranty, technical, billing, account or general.
    async fn category(&self) -> &str {
        &self.0.category
    }
    async fn subject(&self) -> &str {
        &self.0.subject
    }
    /// critical, major or minor.
    async fn severity(&self) -> &str {
        &self.0.severity
    }
    async fn impact(&self) -> i32 {
        i32::from(self.0.impact)
    }
    async fn customer(&self) -> PartyRef {
        PartyRef {
            id: ID(self.0.customer_id.to_string()),
            name: self.0.customer_name.clone(),
        }
    }
    async fn assignee(&self) -> Option<PartyRef> {
        self.0.assignee_id.map(|id| PartyRef {
            id: ID(id.to_string()),
            name: self.0.assignee_name.clone().unwrap_or_default(),
        })
    }
    async fn priority(&self, ctx: &Context<'_>) -> Result<Priority> {
        let policy = ctx.data::<PriorityPolicy>()?;
        let severity: Severity = from_label(&self.0.severity).unwrap_or(Severity::Minor);
        let tier: Tier = from_label(&self.0.customer_tier).unwrap_or(Tier::Free);
        let impact = Impact::parse("impact", i64::from(self.0.impact))
            .map_err(|e| gql(QueryError::Internal(Box::new(e))))?;
        let inputs = PriorityInputs {
            severity,
            tier,
            impact,
            raised_at: self.0.raised_at,
        };
        let score = policy.score(inputs, Utc::now());
        let level = match policy.level(score) {
            domain::priority::PriorityLevel::P0 => PriorityLevel::P0,
            domain::priority::PriorityLevel::P1 => PriorityLevel::P1,
            domain::priority::PriorityLevel::P2 => PriorityLevel::P2,
            domain::priority::PriorityLevel::P3 => PriorityLevel::P3,
        };
        Ok(Priority {
            score: i32::try_from(score).unwrap_or(i32::MAX),
            level,
        })
    }
    /// Version of the ticket's stream that this row reflects.
    async fn version(&self) -> i64 {
        self.0.version
    }
    async fn raised_at(&self) -> DateTime<Utc> {
        self.0.raised_at
    }
    async fn assigned_at(&self) -> Option<DateTime<Utc>> {
        self.0.assigned_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn resolved_at(&self) -> Option<DateTime<Utc>> {
        self.0.resolved_at
    }
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Every event of the ticket's stream, read from the store (not from a read model).
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<HistoryEvent>> {
        let store = ctx.data::<Arc<dyn EventStore>>()?;
        let stream = StreamId::for_aggregate("ticket", self.0.ticket_id);
        let events = read_full_stream(&**store, &stream).await.map_err(gql)?;
        Ok(events.into_iter().map(HistoryEvent).collect())
    }
}

/// Reads back a value the projection stored as its serde label.
fn from_label<T: serde::de::DeserializeOwned>(label: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(label.to_owned())).ok()
}

/// Who caused an event.
#[derive(SimpleObject)]
pub struct Actor {
    id: String,
    role: String,
}

/// One event of a stream, with its metadata.
pub struct HistoryEvent(RecordedEvent);

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
        Json(self.0.data.clone())
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

struct AuditRow {
    position: i64,
    stream_id: String,
    version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    actor_id: String,
    actor_role: String,
    command_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
    recorded_at: DateTime<Utc>,
    data: serde_json::Value,
}

/// One event of the global log, as the audit log read model holds it.
#[derive(SimpleObject)]
pub struct AuditEntry {
    position: i64,
    stream_id: String,
    version: i64,
    event_id: ID,
    #[graphql(name = "type")]
    event_type: String,
    schema_version: i32,
    actor: Actor,
    command_id: ID,
    correlation_id: ID,
    causation_id: ID,
    recorded_at: DateTime<Utc>,
    data: Json<serde_json::Value>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            position: r.position,
            stream_id: r.stream_id,
            version: r.version,
            event_id: ID(r.event_id.to_string()),
            event_type: r.event_type,
            schema_version: r.schema_version,
            actor: Actor {
                id: r.actor_id,
                role: r.actor_role,
            },
            command_id: ID(r.command_id.to_string()),
            correlation_id: ID(r.correlation_id.to_string()),
            causation_id: ID(r.causation_id.to_string()),
            recorded_at: r.recorded_at,
            data: Json(r.data),
        }
    }
}
