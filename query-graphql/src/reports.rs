//! Reports for admins, over a date range of when tickets were raised: KPIs, status
//! distribution, warranty statistics, technician performance. Each is a GraphQL field and a
//! CSV file (`GET /reports/{name}.csv?from=…&to=…`).

use crate::types::Stored as _;
use async_graphql::{Context, Object, Result, SimpleObject, ID};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::priority::PriorityPolicy;
use sqlx::PgPool;

use crate::error::{gql, QueryError};
use crate::types::{page, window, Money, Page, TicketStatus};
use crate::Settings;

#[derive(SimpleObject, Clone, Copy, Default)]
pub struct Kpis {
    pub tickets_raised: i64,
    pub open_tickets: i64,
    pub assigned_tickets: i64,
    pub unassigned_tickets: i64,
    pub overdue_tickets: i64,
    /// Devices ready and waiting for their customer (not date-filtered).
    pub pending_deliveries: i64,
    /// Tickets whose balance reached zero today, UTC (not date-filtered).
    pub bills_settled_today: i64,
    /// Payments received for the tickets in range.
    pub revenue: Money,
}

#[derive(SimpleObject, Clone, Copy)]
pub struct StatusCount {
    pub status: TicketStatus,
    pub count: i64,
}

#[derive(SimpleObject, Clone, Copy, Default)]
pub struct WarrantyStatistics {
    /// Devices by warranty status today (not date-filtered).
    pub active: i64,
    pub expiring_soon: i64,
    pub expired: i64,
    /// Claims on tickets raised in range.
    pub claims_pending: i64,
    pub claims_approved: i64,
    pub claims_rejected: i64,
    pub covered_value: Money,
}

#[derive(SimpleObject, Clone)]
pub struct TechnicianPerformance {
    pub technician_id: ID,
    pub name: String,
    pub active: bool,
    /// Tickets currently assigned to the technician.
    pub assigned: i64,
    /// Of those, open or in progress.
    pub open: i64,
    /// Of those, resolved or closed.
    pub completed: i64,
    /// completed / assigned (0 when nothing is assigned).
    pub completion_rate: f64,
    pub average_rating: Option<f64>,
    pub rating_count: i64,
    /// Sum of final costs of the technician's tickets.
    pub total_repair_value: Money,
    /// Mean hours from raise to resolution over completed tickets.
    pub mean_time_to_resolve_hours: Option<f64>,
    /// Open or in progress past the SLA due time.
    pub overdue: i64,
}

/// A raise-time range; either end may be open.
#[derive(Clone, Copy, Default, serde::Deserialize)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn policy_json(policy: &PriorityPolicy) -> Result<serde_json::Value, QueryError> {
    serde_json::to_value(policy).map_err(|e| QueryError::Internal(Box::new(e)))
}

pub async fn kpis(pool: &PgPool, policy: &PriorityPolicy, r: Range) -> Result<Kpis, QueryError> {
    let now = Utc::now();
    let row = sqlx::query!(
        r#"SELECT COUNT(*) AS "raised!",
                  COUNT(*) FILTER (WHERE status IN ('open', 'in_progress')) AS "open!",
                  COUNT(*) FILTER (WHERE status IN ('open', 'in_progress') AND assignee_id IS NOT NULL) AS "assigned!",
                  COUNT(*) FILTER (WHERE status IN ('open', 'in_progress') AND assignee_id IS NULL) AS "unassigned!",
                  COUNT(*) FILTER (WHERE status IN ('open', 'in_progress')
                                   AND ticket_due_at(severity, customer_tier, impact, raised_at, $3) < $4) AS "overdue!",
                  COALESCE(SUM(paid), 0)::bigint AS "revenue!"
           FROM tickets
           WHERE ($1::timestamptz IS NULL OR raised_at >= $1) AND ($2::timestamptz IS NULL OR raised_at < $2)"#,
        r.from,
        r.to,
        policy_json(policy)?,
        now
    )
    .fetch_one(pool)
    .await?;
    let today = now.date_naive();
    let other = sqlx::query!(
        r#"SELECT (SELECT COUNT(*) FROM devices WHERE service_status = 'ready_for_delivery') AS "pending!",
                  (SELECT COUNT(*) FROM tickets
                   WHERE settled_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
                     AND settled_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC' AND bill > 0) AS "settled!""#,
        today
    )
    .fetch_one(pool)
    .await?;
    Ok(Kpis {
        tickets_raised: row.raised,
        open_tickets: row.open,
        assigned_tickets: row.assigned,
        unassigned_tickets: row.unassigned,
        overdue_tickets: row.overdue,
        pending_deliveries: other.pending,
        bills_settled_today: other.settled,
        revenue: Money(row.revenue),
    })
}

pub async fn status_distribution(pool: &PgPool, r: Range) -> Result<Vec<StatusCount>, QueryError> {
    let rows = sqlx::query!(
        r#"SELECT status, COUNT(*) AS "count!" FROM tickets
           WHERE ($1::timestamptz IS NULL OR raised_at >= $1) AND ($2::timestamptz IS NULL OR raised_at < $2)
           GROUP BY status"#,
        r.from,
        r.to
    )
    .fetch_all(pool)
    .await?;
    let all = [
        TicketStatus::Open,
        TicketStatus::InProgress,
        TicketStatus::Resolved,
        TicketStatus::Closed,
        TicketStatus::Cancelled,
    ];
    Ok(all
        .into_iter()
        .map(|status| StatusCount {
            status,
            count: rows
                .iter()
                .find(|row| row.status == status.db())
                .map_or(0, |row| row.count),
        })
        .collect())
}

pub async fn warranty_statistics(
    pool: &PgPool,
    expiring_soon_days: i64,
    r: Range,
) -> Result<WarrantyStatistics, QueryError> {
    let today = Utc::now().date_naive();
    let soon = i32::try_from(expiring_soon_days).unwrap_or(30);
    let devices = sqlx::query!(
        r#"SELECT COUNT(*) FILTER (WHERE warranty_expires_on < $1) AS "expired!",
                  COUNT(*) FILTER (WHERE warranty_expires_on >= $1 AND warranty_expires_on <= $1 + $2::int) AS "soon!",
                  COUNT(*) FILTER (WHERE warranty_expires_on > $1 + $2::int) AS "active!"
           FROM devices"#,
        today,
        soon
    )
    .fetch_one(pool)
    .await?;
    let claims = sqlx::query!(
        r#"SELECT COUNT(*) FILTER (WHERE claim_decision = 'pending') AS "pending!",
                  COUNT(*) FILTER (WHERE claim_decision = 'approved') AS "approved!",
                  COUNT(*) FILTER (WHERE claim_decision = 'rejected') AS "rejected!",
                  COALESCE(SUM(covered), 0)::bigint AS "covered!"
           FROM tickets
           WHERE ($1::timestamptz IS NULL OR raised_at >= $1) AND ($2::timestamptz IS NULL OR raised_at < $2)"#,
        r.from,
        r.to
    )
    .fetch_one(pool)
    .await?;
    Ok(WarrantyStatistics {
        active: devices.active,
        expiring_soon: devices.soon,
        expired: devices.expired,
        claims_pending: claims.pending,
        claims_approved: claims.approved,
        claims_rejected: claims.rejected,
        covered_value: Money(claims.covered),
    })
}

pub async fn technician_performance(
    pool: &PgPool,
    policy: &PriorityPolicy,
    technician: Option<uuid::Uuid>,
    r: Range,
) -> Result<Vec<TechnicianPerformance>, QueryError> {
    let rows = sqlx::query!(
        r#"SELECT te.technician_id, te.name, te.active,
                  COUNT(t.ticket_id) AS "assigned!",
                  COUNT(t.ticket_id) FILTER (WHERE t.status IN ('open', 'in_progress')) AS "open!",
                  COUNT(t.ticket_id) FILTER (WHERE t.status IN ('resolved', 'closed')) AS "completed!",
                  AVG(t.rating)::float8 AS "average_rating?",
                  COUNT(t.rating) AS "rating_count!",
                  COALESCE(SUM(t.final_cost), 0)::bigint AS "total_repair_value!",
                  (AVG(EXTRACT(EPOCH FROM (t.resolved_at - t.raised_at)))
                      FILTER (WHERE t.status IN ('resolved', 'closed')) / 3600)::float8 AS "mttr_hours?",
                  COUNT(t.ticket_id) FILTER (WHERE t.status IN ('open', 'in_progress')
                       AND ticket_due_at(t.severity, t.customer_tier, t.impact, t.raised_at, $4) < $5) AS "overdue!"
           FROM technicians te
           LEFT JOIN tickets t ON t.assignee_id = te.technician_id
                AND ($2::timestamptz IS NULL OR t.raised_at >= $2)
                AND ($3::timestamptz IS NULL OR t.raised_at < $3)
           WHERE ($1::uuid IS NULL OR te.technician_id = $1)
           GROUP BY te.technician_id, te.name, te.active
           ORDER BY te.name, te.technician_id"#,
        technician,
        r.from,
        r.to,
        policy_json(policy)?,
        Utc::now()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TechnicianPerformance {
            technician_id: ID(r.technician_id.to_string()),
            name: r.name,
            active: r.active,
            assigned: r.assigned,
            open: r.open,
            completed: r.completed,
            completion_rate: if r.assigned == 0 {
                0.0
            } else {
                r.completed as f64 / r.assigned as f64
            },
            average_rating: r.average_rating,
            rating_count: r.rating_count,
            total_repair_value: Money(r.total_repair_value),
            mean_time_to_resolve_hours: r.mttr_hours,
            overdue: r.overdue,
        })
        .collect())
}

#[derive(Default)]
pub struct ReportQueries;

#[Object]
impl ReportQueries {
    /// Headline numbers for tickets raised in the range (open-ended when omitted).
    async fn kpis(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Kpis> {
        crate::access::require_overview(ctx, "read reports")?;
        let settings = ctx.data::<Settings>()?;
        kpis(ctx.data::<PgPool>()?, &settings.policy, Range { from, to })
            .await
            .map_err(gql)
    }

    /// How many tickets raised in the range are in each status.
    async fn status_distribution(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<StatusCount>> {
        crate::access::require_overview(ctx, "read reports")?;
        status_distribution(ctx.data::<PgPool>()?, Range { from, to })
            .await
            .map_err(gql)
    }

    async fn warranty_statistics(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<WarrantyStatistics> {
        crate::access::require_overview(ctx, "read reports")?;
        let settings = ctx.data::<Settings>()?;
        warranty_statistics(
            ctx.data::<PgPool>()?,
            settings.expiring_soon_days,
            Range { from, to },
        )
        .await
        .map_err(gql)
    }

    /// Metrics of every technician (by name) over the tickets raised in the range.
    #[graphql(complexity = "crate::types::page_cost(first, child_complexity)")]
    async fn technician_performance(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<TechnicianPerformance>> {
        crate::access::require_overview(ctx, "read reports")?;
        let settings = ctx.data::<Settings>()?;
        let (offset, limit) = window(first, after)?;
        let all = technician_performance(
            ctx.data::<PgPool>()?,
            &settings.policy,
            None,
            Range { from, to },
        )
        .await
        .map_err(gql)?;
        let total = all.len() as i64;
        let rows = all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit + 1).unwrap_or(0))
            .collect();
        Ok(page(rows, offset, limit, total))
    }

    /// One technician with their metrics over all their tickets.
    async fn technician(&self, ctx: &Context<'_>, id: ID) -> Result<Option<TechnicianPerformance>> {
        let id = crate::types::parse_id(&id)?;
        let who = crate::access::principal(ctx)?;
        let own = who.technician_id.map(|t| t.as_uuid()) == Some(id);
        if !own {
            crate::access::require_overview(ctx, "read another technician's metrics")?;
        }
        let settings = ctx.data::<Settings>()?;
        let rows = technician_performance(
            ctx.data::<PgPool>()?,
            &settings.policy,
            Some(id),
            Range::default(),
        )
        .await
        .map_err(gql)?;
        Ok(rows.into_iter().next())
    }
}

/// `GET /reports/{name}.csv?from=&to=`
pub(crate) async fn csv_report(
    State((pool, settings)): State<(PgPool, Settings)>,
    principal: Option<axum::Extension<domain::access::Principal>>,
    Path(file): Path<String>,
    Query(range): Query<Range>,
) -> Response {
    match principal.map(|p| p.0.role) {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "sign in first: POST /auth/login, then send Authorization: Bearer <token>",
            )
        }
        Some(domain::access::Role::Admin | domain::access::Role::Auditor) => {}
        Some(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "your role may not read reports",
            )
        }
    }
    match render_csv(&pool, &settings, &file, range).await {
        Ok(Some(body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}\"")),
            ],
            body,
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "UNKNOWN_REPORT", &format!("no report {file:?}; try kpis.csv, status-distribution.csv, warranty-statistics.csv or technician-performance.csv")),
        Err(e) => {
            tracing::error!(error = %e, "report failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        serde_json::json!({ "error": { "code": code, "message": message, "details": null } });
    (status, axum::Json(body)).into_response()
}

async fn render_csv(
    pool: &PgPool,
    settings: &Settings,
    file: &str,
    r: Range,
) -> Result<Option<String>, QueryError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let w = |e: csv::Error| QueryError::Internal(Box::new(e));
    match file {
        "kpis.csv" => {
            let k = kpis(pool, &settings.policy, r).await?;
            out.write_record([
                "tickets_raised",
                "open_tickets",
                "assigned_tickets",
                "unassigned_tickets",
                "overdue_tickets",
                "pending_deliveries",
                "bills_settled_today",
                "revenue",
            ])
            .map_err(w)?;
            out.write_record([
                k.tickets_raised.to_string(),
                k.open_tickets.to_string(),
                k.assigned_tickets.to_string(),
                k.unassigned_tickets.to_string(),
                k.overdue_tickets.to_string(),
                k.pending_deliveries.to_string(),
                k.bills_settled_today.to_string(),
                crate::types::format_money(k.revenue.0),
            ])
            .map_err(w)?;
        }
        "status-distribution.csv" => {
            out.write_record(["status", "count"]).map_err(w)?;
            for s in status_distribution(pool, r).await? {
                out.write_record([s.status.db().to_owned(), s.count.to_string()])
                    .map_err(w)?;
            }
        }
        "warranty-statistics.csv" => {
            let s = warranty_statistics(pool, settings.expiring_soon_days, r).await?;
            out.write_record([
                "active",
                "expiring_soon",
                "expired",
                "claims_pending",
                "claims_approved",
                "claims_rejected",
                "covered_value",
            ])
            .map_err(w)?;
            out.write_record([
                s.active.to_string(),
                s.expiring_soon.to_string(),
                s.expired.to_string(),
                s.claims_pending.to_string(),
                s.claims_approved.to_string(),
                s.claims_rejected.to_string(),
                crate::types::format_money(s.covered_value.0),
            ])
            .map_err(w)?;
        }
        "technician-performance.csv" => {
            out.write_record([
                "technician_id",
                "name",
                "active",
                "assigned",
                "open",
                "completed",
                "completion_rate",
                "average_rating",
                "rating_count",
                "total_repair_value",
                "mean_time_to_resolve_hours",
                "overdue",
            ])
            .map_err(w)?;
            for t in technician_performance(pool, &settings.policy, None, r).await? {
                out.write_record([
                    t.technician_id.to_string(),
                    t.name,
                    t.active.to_string(),
                    t.assigned.to_string(),
                    t.open.to_string(),
                    t.completed.to_string(),
                    format!("{:.4}", t.completion_rate),
                    t.average_rating
                        .map(|a| format!("{a:.2}"))
                        .unwrap_or_default(),
                    t.rating_count.to_string(),
                    crate::types::format_money(t.total_repair_value.0),
                    t.mean_time_to_resolve_hours
                        .map(|h| format!("{h:.2}"))
                        .unwrap_or_default(),
                    t.overdue.to_string(),
                ])
                .map_err(w)?;
            }
        }
        _ => return Ok(None),
    }
    let bytes = out
        .into_inner()
        .map_err(|e| QueryError::Internal(e.to_string().into()))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}
