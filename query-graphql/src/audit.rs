//! The audit log, and the projections' progress.

use std::sync::Arc;

use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::gql;
use crate::tickets::Actor;
use crate::types::{page, window, Page};

/// Filters for the audit log; all optional, combined with AND.
#[derive(InputObject, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub stream_id: Option<String>,
    #[graphql(name = "type")]
    pub event_type: Option<String>,
    pub correlation_id: Option<ID>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// The correlation id asked for, checked.
    fn correlation(&self) -> Result<Option<Uuid>> {
        self.correlation_id
            .as_ref()
            .map(crate::types::parse_id)
            .transpose()
    }
}

/// One event of the global log, as the audit log read model holds it.
#[derive(SimpleObject, Debug, PartialEq)]
pub struct AuditEntry {
    pub position: i64,
    pub stream_id: String,
    pub version: i64,
    pub event_id: ID,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub actor: Actor,
    pub command_id: ID,
    pub correlation_id: ID,
    pub causation_id: ID,
    pub recorded_at: DateTime<Utc>,
    pub data: Json<serde_json::Value>,
}

/// The audit log's entries matching `f`, oldest first (`limit` of them after skipping
/// `offset`). Rows the projection copied in SQL hold only the columns filtered on; the rest is
/// read from the log's table by position. Payloads are redacted (`domain::redact`) whichever
/// way they were stored.
pub async fn audit_entries(
    conn: &mut PgConnection,
    f: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditEntry>> {
    let correlation = f.correlation()?;
    // The page is cut from the read model first, so that only its rows meet the log (joined
    // before the OFFSET, every skipped row would be looked up too). A row with its payload was
    // written by the projector's Rust code (the log is elsewhere, and `events` may hold other
    // events at the same positions): it is complete as it is.
    let rows = sqlx::query!(
        r#"SELECT a.position, a.stream_id, a.event_type, a.actor_id, a.correlation_id,
                  a.recorded_at,
                  COALESCE(a.version, e.version) AS "version!",
                  COALESCE(a.event_id, e.event_id) AS "event_id!",
                  COALESCE(a.schema_version, e.schema_version) AS "schema_version!",
                  COALESCE(a.actor_role, e.actor_role) AS "actor_role!",
                  COALESCE(a.command_id, e.command_id) AS "command_id!",
                  COALESCE(a.causation_id, e.causation_id) AS "causation_id!",
                  COALESCE(a.data, e.data::jsonb) AS "data!"
           FROM (SELECT * FROM audit_log
                 WHERE ($1::text IS NULL OR actor_id = $1) AND ($2::text IS NULL OR stream_id = $2)
                   AND ($3::text IS NULL OR event_type = $3)
                   AND ($4::uuid IS NULL OR correlation_id = $4)
                   AND ($5::timestamptz IS NULL OR recorded_at >= $5)
                   AND ($6::timestamptz IS NULL OR recorded_at < $6)
                 ORDER BY position LIMIT $7 OFFSET $8) a
           LEFT JOIN events e ON a.data IS NULL AND e.position = a.position
           ORDER BY a.position"#,
        f.actor_id,
        f.stream_id,
        f.event_type,
        correlation,
        f.from,
        f.to,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
    .map_err(gql)?;
    let id = |u: Uuid| ID(u.to_string());
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut data = r.data;
            domain::redact(&mut data);
            AuditEntry {
                position: r.position,
                stream_id: r.stream_id,
                version: r.version,
                event_id: id(r.event_id),
                event_type: r.event_type,
                schema_version: r.schema_version,
                actor: Actor {
                    id: r.actor_id,
                    role: r.actor_role,
                },
                command_id: id(r.command_id),
                correlation_id: id(r.correlation_id),
                causation_id: id(r.causation_id),
                recorded_at: r.recorded_at,
                data: Json(data),
            }
        })
        .collect())
}

/// How far a projection has got.
#[derive(SimpleObject, Clone)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: i64,
    /// Position of the last event in the store.
    pub head: i64,
    /// Events not yet applied.
    pub lag: i64,
    pub updated_at: DateTime<Utc>,
    /// Events the projection could not apply and set aside (`ledger projections retry`).
    pub dead_letters: i64,
    pub state: ProjectionState,
}

/// Whether a projection follows the log.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProjectionState {
    /// Following the log, nothing set aside.
    Ok,
    /// Following the log, with events set aside as dead letters.
    Degraded,
    /// Behind the head and not moving.
    Stuck,
}

/// Where `projectionStatus` comes from (the binary wires in the projections' own rule).
pub trait ProjectionMonitor: Send + Sync {
    fn status(&self) -> futures::future::BoxFuture<'_, Result<Vec<ProjectionStatus>, String>>;
}

#[derive(Default)]
pub struct AuditQueries;

#[Object]
impl AuditQueries {
    /// Every event of the store, oldest first, filtered.
    #[graphql(complexity = "crate::types::page_cost(first, child_complexity)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<AuditEntry>> {
        crate::access::require_overview(ctx, "read the audit log")?;
        let pool = ctx.data::<PgPool>()?;
        let f = filter.unwrap_or_default();
        let (offset, limit) = window(first, after)?;
        let mut conn = pool.acquire().await.map_err(gql)?;
        let entries = audit_entries(&mut conn, &f, limit + 1, offset).await?;
        let correlation = f.correlation()?;
        let total = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!" FROM audit_log
               WHERE ($1::text IS NULL OR actor_id = $1) AND ($2::text IS NULL OR stream_id = $2)
                 AND ($3::text IS NULL OR event_type = $3) AND ($4::uuid IS NULL OR correlation_id = $4)
                 AND ($5::timestamptz IS NULL OR recorded_at >= $5)
                 AND ($6::timestamptz IS NULL OR recorded_at < $6)"#,
            f.actor_id,
            f.stream_id,
            f.event_type,
            correlation,
            f.from,
            f.to
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(gql)?;
        Ok(page(entries, offset, limit, total))
    }

    /// Each projection's checkpoint, the store's head, the lag between them, the events it
    /// set aside and its state.
    async fn projection_status(&self, ctx: &Context<'_>) -> Result<Vec<ProjectionStatus>> {
        crate::access::require_overview(ctx, "read projection status")?;
        let monitor = ctx.data::<Arc<dyn ProjectionMonitor>>()?;
        monitor.status().await.map_err(async_graphql::Error::new)
    }
}
