//! Devices: warranty status (computed against today's date when asked) and the service
//! center's billing and delivery board.

use crate::types::Stored as _;
use async_graphql::{ComplexObject, Context, InputObject, Object, Result, SimpleObject, ID};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::gql;
use crate::types::{page, window, Decision, Money, Page, ServiceStatus, WarrantyStatus};
use crate::types::{parse_id, PartyRef};
use crate::Settings;

#[derive(SimpleObject)]
pub struct Warranty {
    pub months: i32,
    /// The last day the warranty covers.
    pub expires_on: NaiveDate,
    pub status: WarrantyStatus,
    /// Days from today to the expiry date (negative once expired).
    pub days_remaining: i64,
}

/// The current service visit's money: the bills of the tickets raised for it.
#[derive(SimpleObject)]
pub struct VisitBill {
    pub bill_value: Money,
    pub amount_received: Money,
    pub balance: Money,
    pub tickets: i64,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Device {
    pub id: ID,
    pub customer: PartyRef,
    pub name: String,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub serial_number: String,
    pub category: Option<String>,
    pub purchase_date: NaiveDate,
    pub invoice_ref: Option<String>,
    pub warranty: Warranty,
    pub service_status: ServiceStatus,
    pub condition: Option<String>,
    pub accessories: Vec<String>,
    pub reported_issue: Option<String>,
    pub expected_delivery_date: Option<NaiveDate>,
    pub expected_budget: Option<Money>,
    /// Checked in or ready, and past the expected delivery date.
    pub delivery_overdue: bool,
    pub technician: Option<PartyRef>,
    pub bill: VisitBill,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub rescheduled_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    pub version: i64,
}

/// A warranty claim made on one of the device's tickets.
#[derive(SimpleObject)]
pub struct DeviceClaim {
    pub ticket_id: ID,
    pub ticket_number: String,
    pub decision: Decision,
    pub reason: Option<String>,
    pub covered: Money,
}

/// A device as it was at one version of its stream.
#[derive(SimpleObject)]
pub struct DeviceSnapshot {
    pub version: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub warranty_expires_on: NaiveDate,
    /// The whole state, as the domain holds it.
    pub state: async_graphql::Json<serde_json::Value>,
}

#[ComplexObject]
impl Device {
    /// The device as it was after `version`, or at `time`, rebuilt from its events by the
    /// domain's own code. Null before the device existed.
    async fn state_at(
        &self,
        ctx: &Context<'_>,
        version: Option<i64>,
        time: Option<DateTime<Utc>>,
    ) -> Result<Option<DeviceSnapshot>> {
        if !crate::access::principal(ctx)?.role.is_staff() {
            return Err(gql(crate::QueryError::Forbidden(
                "read a device's raw history",
            )));
        }
        let store = ctx.data::<std::sync::Arc<dyn stream_store::EventStore>>()?;
        let id = parse_id(&self.id)?;
        let stream = stream_store::StreamId::for_aggregate(
            <domain::Device as domain::Aggregate>::STREAM_PREFIX,
            id,
        );
        let events = stream_store::read_full_stream(&**store, &stream)
            .await
            .map_err(gql)?;
        let chosen = crate::history::up_to(&events, version, time)?;
        let Some(last) = chosen.last() else {
            return Ok(None);
        };
        let device: domain::Device = crate::history::fold(chosen)?;
        Ok(device.state().map(|s| DeviceSnapshot {
            version: last.version,
            position: last.position,
            recorded_at: last.recorded_at,
            warranty_expires_on: s.warranty_expires_on,
            state: async_graphql::Json(serde_json::to_value(s).unwrap_or_default()),
        }))
    }

    /// Warranty claims on this device's tickets.
    #[graphql(complexity = "crate::types::list_cost(child_complexity)")]
    async fn warranty_claims(&self, ctx: &Context<'_>) -> Result<Vec<DeviceClaim>> {
        let pool = ctx.data::<PgPool>()?;
        let id = parse_id(&self.id)?;
        let rows = sqlx::query!(
            r#"SELECT ticket_id, number, claim_decision AS "decision!", claim_reason, covered
               FROM tickets WHERE device_id = $1 AND claim_decision IS NOT NULL
               ORDER BY raised_position"#,
            id
        )
        .fetch_all(pool)
        .await
        .map_err(gql)?;
        rows.into_iter()
            .map(|r| {
                Ok(DeviceClaim {
                    ticket_id: ID(r.ticket_id.to_string()),
                    ticket_number: r.number,
                    decision: Decision::from_db(&r.decision).map_err(gql)?,
                    reason: r.claim_reason,
                    covered: Money(r.covered),
                })
            })
            .collect()
    }
}

pub(crate) struct DeviceRow {
    device_id: Uuid,
    customer_id: Uuid,
    customer_name: String,
    name: String,
    brand: Option<String>,
    model: Option<String>,
    serial_number: String,
    category: Option<String>,
    purchase_date: NaiveDate,
    invoice_ref: Option<String>,
    warranty_months: i32,
    warranty_expires_on: NaiveDate,
    warranty_status: String,
    stage: String,
    condition: Option<String>,
    accessories: serde_json::Value,
    reported_issue: Option<String>,
    expected_delivery_date: Option<NaiveDate>,
    expected_budget: Option<i64>,
    delivery_overdue: bool,
    technician_id: Option<Uuid>,
    technician_name: Option<String>,
    bill_value: i64,
    amount_received: i64,
    balance: i64,
    visit_tickets: i64,
    checked_in_at: Option<DateTime<Utc>>,
    ready_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    rescheduled_at: Option<DateTime<Utc>>,
    registered_at: DateTime<Utc>,
    version: i64,
}

impl DeviceRow {
    fn into_device(self, today: NaiveDate) -> Result<Device, crate::QueryError> {
        Ok(Device {
            id: ID(self.device_id.to_string()),
            customer: PartyRef {
                id: ID(self.customer_id.to_string()),
                name: self.customer_name,
            },
            name: self.name,
            brand: self.brand,
            model: self.model,
            serial_number: self.serial_number,
            category: self.category,
            purchase_date: self.purchase_date,
            invoice_ref: self.invoice_ref,
            warranty: Warranty {
                months: self.warranty_months,
                expires_on: self.warranty_expires_on,
                status: WarrantyStatus::from_db(&self.warranty_status)?,
                days_remaining: (self.warranty_expires_on - today).num_days(),
            },
            service_status: ServiceStatus::from_db(&self.stage)?,
            condition: self.condition,
            accessories: serde_json::from_value(self.accessories).unwrap_or_default(),
            reported_issue: self.reported_issue,
            expected_delivery_date: self.expected_delivery_date,
            expected_budget: self.expected_budget.map(Money),
            delivery_overdue: self.delivery_overdue,
            technician: self.technician_id.map(|id| PartyRef {
                id: ID(id.to_string()),
                name: self.technician_name.unwrap_or_default(),
            }),
            bill: VisitBill {
                bill_value: Money(self.bill_value),
                amount_received: Money(self.amount_received),
                balance: Money(self.balance),
                tickets: self.visit_tickets,
            },
            checked_in_at: self.checked_in_at,
            ready_at: self.ready_at,
            delivered_at: self.delivered_at,
            closed_at: self.closed_at,
            rescheduled_at: self.rescheduled_at,
            registered_at: self.registered_at,
            version: self.version,
        })
    }
}

/// Filters for device lists; all optional, combined with AND.
#[derive(InputObject, Default)]
pub struct DeviceFilter {
    pub customer_id: Option<ID>,
    pub warranty_status: Option<WarrantyStatus>,
    /// Only devices whose warranty ends within this many days from today (and has not ended).
    pub expiring_within_days: Option<i32>,
    pub service_status: Option<ServiceStatus>,
    pub delivery_overdue: Option<bool>,
    /// Case-insensitive text in the name, serial number, brand or model.
    pub search: Option<String>,
}

struct DeviceQuery {
    id: Option<Uuid>,
    customer: Option<Uuid>,
    warranty: Option<String>,
    within: Option<i32>,
    stage: Option<String>,
    overdue: Option<bool>,
    search: Option<String>,
}

async fn query_devices(
    ctx: &Context<'_>,
    mut q: DeviceQuery,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Device>, i64)> {
    let who = crate::access::principal(ctx)?;
    if who.role == domain::access::Role::Customer {
        // Customers see their own devices only.
        q.customer = Some(who.customer_id.map_or(Uuid::nil(), |c| c.as_uuid()));
    }
    let pool = ctx.data::<PgPool>()?;
    let soon = i32::try_from(ctx.data::<Settings>()?.expiring_soon_days).unwrap_or(30);
    let today = Utc::now().date_naive();
    let rows = sqlx::query_as!(
        DeviceRow,
        r#"WITH d AS (
             SELECT d.*, COALESCE(c.name, '') AS customer_name, te.name AS technician_name,
                    CASE WHEN d.warranty_expires_on < $8 THEN 'EXPIRED'
                         WHEN d.warranty_expires_on <= $8 + $9::int THEN 'EXPIRING_SOON'
                         ELSE 'ACTIVE' END AS warranty_status,
                    CASE WHEN d.service_status = 'checked_in' AND EXISTS (
                             SELECT 1 FROM device_visit_tickets v JOIN tickets t USING (ticket_id)
                             WHERE v.device_id = d.device_id AND v.visit = d.visit
                               AND t.status = 'in_progress')
                         THEN 'in_repair' ELSE d.service_status END AS stage,
                    (d.service_status IN ('checked_in', 'ready_for_delivery')
                     AND d.expected_delivery_date < $8) AS delivery_overdue,
                    CASE WHEN d.service_status = 'closed' THEN d.visit - 1 ELSE d.visit END AS bill_visit
             FROM devices d
             LEFT JOIN customers c ON c.customer_id = d.customer_id
             LEFT JOIN technicians te ON te.technician_id = d.technician_id)
           SELECT d.device_id AS "device_id!", d.customer_id AS "customer_id!",
                  d.customer_name AS "customer_name!", d.name AS "name!", d.brand, d.model,
                  d.serial_number AS "serial_number!", d.category,
                  d.purchase_date AS "purchase_date!", d.invoice_ref,
                  d.warranty_months AS "warranty_months!",
                  d.warranty_expires_on AS "warranty_expires_on!",
                  d.warranty_status AS "warranty_status!", d.stage AS "stage!", d.condition,
                  d.accessories AS "accessories!", d.reported_issue, d.expected_delivery_date,
                  d.expected_budget, d.delivery_overdue AS "delivery_overdue!", d.technician_id,
                  d.technician_name AS "technician_name?",
                  COALESCE(b.bill, 0)::bigint AS "bill_value!",
                  COALESCE(b.paid, 0)::bigint AS "amount_received!",
                  COALESCE(b.balance, 0)::bigint AS "balance!",
                  COALESCE(b.tickets, 0)::bigint AS "visit_tickets!",
                  d.checked_in_at, d.ready_at, d.delivered_at, d.closed_at, d.rescheduled_at,
                  d.registered_at AS "registered_at!", d.version AS "version!"
           FROM d
           LEFT JOIN LATERAL (
               SELECT SUM(t.bill) AS bill, SUM(t.paid) AS paid, SUM(t.balance) AS balance,
                      COUNT(*) AS tickets
               FROM device_visit_tickets v JOIN tickets t USING (ticket_id)
               WHERE v.device_id = d.device_id AND v.visit = d.bill_visit) b ON TRUE
           WHERE ($1::uuid IS NULL OR d.device_id = $1)
             AND ($2::uuid IS NULL OR d.customer_id = $2)
             AND ($3::text IS NULL OR d.warranty_status = $3)
             AND ($4::int IS NULL OR (d.warranty_expires_on >= $8 AND d.warranty_expires_on <= $8 + $4::int))
             AND ($5::text IS NULL OR d.stage = $5)
             AND ($6::bool IS NULL OR d.delivery_overdue = $6)
             AND ($7::text IS NULL OR d.name ILIKE $7 OR d.serial_number ILIKE $7
                  OR d.brand ILIKE $7 OR d.model ILIKE $7)
           ORDER BY d.warranty_expires_on, d.device_id
           LIMIT $10 OFFSET $11"#,
        q.id,
        q.customer,
        q.warranty,
        q.within,
        q.stage,
        q.overdue,
        q.search,
        today,
        soon,
        limit + 1,
        offset
    )
    .fetch_all(pool)
    .await
    .map_err(gql)?;
    let total = sqlx::query_scalar!(
        r#"WITH d AS (
             SELECT d.*,
                    CASE WHEN d.warranty_expires_on < $8 THEN 'EXPIRED'
                         WHEN d.warranty_expires_on <= $8 + $9::int THEN 'EXPIRING_SOON'
                         ELSE 'ACTIVE' END AS warranty_status,
                    CASE WHEN d.service_status = 'checked_in' AND EXISTS (
                             SELECT 1 FROM device_visit_tickets v JOIN tickets t USING (ticket_id)
                             WHERE v.device_id = d.device_id AND v.visit = d.visit
                               AND t.status = 'in_progress')
                         THEN 'in_repair' ELSE d.service_status END AS stage,
                    (d.service_status IN ('checked_in', 'ready_for_delivery')
                     AND d.expected_delivery_date < $8) AS delivery_overdue
             FROM devices d)
           SELECT COUNT(*) AS "count!" FROM d
           WHERE ($1::uuid IS NULL OR d.device_id = $1)
             AND ($2::uuid IS NULL OR d.customer_id = $2)
             AND ($3::text IS NULL OR d.warranty_status = $3)
             AND ($4::int IS NULL OR (d.warranty_expires_on >= $8 AND d.warranty_expires_on <= $8 + $4::int))
             AND ($5::text IS NULL OR d.stage = $5)
             AND ($6::bool IS NULL OR d.delivery_overdue = $6)
             AND ($7::text IS NULL OR d.name ILIKE $7 OR d.serial_number ILIKE $7
                  OR d.brand ILIKE $7 OR d.model ILIKE $7)"#,
        q.id,
        q.customer,
        q.warranty,
        q.within,
        q.stage,
        q.overdue,
        q.search,
        today,
        soon
    )
    .fetch_one(pool)
    .await
    .map_err(gql)?;
    let devices = rows
        .into_iter()
        .map(|r| r.into_device(today))
        .collect::<Result<_, _>>()
        .map_err(gql)?;
    Ok((devices, total))
}

pub async fn device_by_id(ctx: &Context<'_>, id: Uuid) -> Result<Option<Device>> {
    let q = DeviceQuery {
        id: Some(id),
        customer: None,
        warranty: None,
        within: None,
        stage: None,
        overdue: None,
        search: None,
    };
    let (devices, _) = query_devices(ctx, q, 0, 1).await?;
    Ok(devices.into_iter().next())
}

fn search_pattern(search: Option<String>) -> Option<String> {
    search.filter(|s| !s.trim().is_empty()).map(|s| {
        let escaped = s
            .trim()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    })
}

/// The billing and delivery board's counters.
#[derive(SimpleObject)]
pub struct BillingBoard {
    pub checked_in: i64,
    pub in_repair: i64,
    pub ready_for_delivery: i64,
    pub delivered: i64,
    pub closed: i64,
    pub overdue_deliveries: i64,
    /// Tickets whose balance reached zero today (UTC).
    pub bills_settled_today: i64,
    /// Sum of those tickets' bills.
    pub value_settled_today: Money,
}

#[derive(Default)]
pub struct DeviceQueries;

#[Object]
impl DeviceQueries {
    async fn device(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Device>> {
        let id = parse_id(&id)?;
        let device = device_by_id(ctx, id).await?;
        if device.is_none() && !crate::access::principal(ctx)?.role.is_staff() {
            // Not theirs (or not there): a customer learns nothing either way.
            return Err(gql(crate::QueryError::Forbidden("read this device")));
        }
        Ok(device)
    }

    /// Devices, filtered, soonest warranty expiry first.
    #[graphql(complexity = "crate::types::page_cost(first, child_complexity)")]
    async fn devices(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeviceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Device>> {
        let f = filter.unwrap_or_default();
        let (offset, limit) = window(first, after)?;
        if f.expiring_within_days
            .is_some_and(|d| !(0..=36_500).contains(&d))
        {
            return Err(gql(crate::QueryError::BadInput(
                "expiringWithinDays must be between 0 and 36500".into(),
            )));
        }
        let q = DeviceQuery {
            id: None,
            customer: f.customer_id.as_ref().map(parse_id).transpose()?,
            warranty: f.warranty_status.map(|w| w.db().to_owned()),
            within: f.expiring_within_days,
            stage: f.service_status.map(|s| s.db().to_owned()),
            overdue: f.delivery_overdue,
            search: search_pattern(f.search),
        };
        let (devices, total) = query_devices(ctx, q, offset, limit).await?;
        Ok(page(devices, offset, limit, total))
    }

    /// Devices whose warranty ends within `days` days from today.
    #[graphql(complexity = "crate::types::page_cost(first, child_complexity)")]
    async fn devices_expiring_within(
        &self,
        ctx: &Context<'_>,
        days: i32,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Device>> {
        let filter = DeviceFilter {
            expiring_within_days: Some(days),
            ..Default::default()
        };
        self.devices(ctx, Some(filter), first, after).await
    }

    /// Devices past their expected delivery date.
    #[graphql(complexity = "crate::types::page_cost(first, child_complexity)")]
    async fn overdue_deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Device>> {
        let filter = DeviceFilter {
            delivery_overdue: Some(true),
            ..Default::default()
        };
        self.devices(ctx, Some(filter), first, after).await
    }

    /// Counters of the billing and delivery board.
    async fn billing_board(&self, ctx: &Context<'_>) -> Result<BillingBoard> {
        if !crate::access::principal(ctx)?.role.is_staff() {
            return Err(gql(crate::QueryError::Forbidden("read the billing board")));
        }
        let pool = ctx.data::<PgPool>()?;
        let today = Utc::now().date_naive();
        let r = sqlx::query!(
            r#"WITH stage AS (
                 SELECT CASE WHEN d.service_status = 'checked_in' AND EXISTS (
                            SELECT 1 FROM device_visit_tickets v JOIN tickets t USING (ticket_id)
                            WHERE v.device_id = d.device_id AND v.visit = d.visit
                              AND t.status = 'in_progress')
                        THEN 'in_repair' ELSE d.service_status END AS stage,
                        (d.service_status IN ('checked_in', 'ready_for_delivery')
                         AND d.expected_delivery_date < $1) AS overdue
                 FROM devices d)
               SELECT COUNT(*) FILTER (WHERE stage = 'checked_in') AS "checked_in!",
                      COUNT(*) FILTER (WHERE stage = 'in_repair') AS "in_repair!",
                      COUNT(*) FILTER (WHERE stage = 'ready_for_delivery') AS "ready!",
                      COUNT(*) FILTER (WHERE stage = 'delivered') AS "delivered!",
                      COUNT(*) FILTER (WHERE stage = 'closed') AS "closed!",
                      COUNT(*) FILTER (WHERE overdue) AS "overdue!"
               FROM stage"#,
            today
        )
        .fetch_one(pool)
        .await
        .map_err(gql)?;
        let settled = sqlx::query!(
            r#"SELECT COUNT(*) AS "count!", COALESCE(SUM(bill), 0)::bigint AS "value!"
               FROM tickets
               WHERE settled_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
                 AND settled_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC' AND bill > 0"#,
            today
        )
        .fetch_one(pool)
        .await
        .map_err(gql)?;
        Ok(BillingBoard {
            checked_in: r.checked_in,
            in_repair: r.in_repair,
            ready_for_delivery: r.ready,
            delivered: r.delivered,
            closed: r.closed,
            overdue_deliveries: r.overdue,
            bills_settled_today: settled.count,
            value_settled_today: Money(settled.value),
        })
    }
}
