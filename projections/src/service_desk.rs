//! The service desk read models: customers, technicians, parts, devices (warranty and the
//! billing and delivery board) and tickets (queues and details). One projection, so that the
//! queries joining them always see one consistent position of the log.

use async_trait::async_trait;
use domain::{
    Aggregate, CustomerEvent, DeviceEvent, EventPayload, Money, PartEvent, TechnicianEvent, Ticket,
    TicketEvent, TicketState,
};
use serde_json::Value;
use sqlx::PgConnection;
use stream_store::RecordedEvent;
use uuid::Uuid;

use crate::{ProjectionError, Projector};

pub struct ServiceDesk;

fn decode<E: EventPayload>(e: &RecordedEvent) -> Result<Option<E>, ProjectionError> {
    E::from_stored(&e.event_type, e.schema_version, &e.data).map_err(|source| {
        ProjectionError::Decode {
            position: e.position,
            source,
        }
    })
}

/// The snake_case name serde gives a unit enum value (`in_progress`, `enterprise`, ...).
fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The id of an `{prefix}-{uuid}` stream.
fn stream_uuid(e: &RecordedEvent, prefix: &str) -> Option<Uuid> {
    e.stream_id
        .as_str()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn money(m: Money) -> i64 {
    m.minor_units()
}

#[async_trait]
impl Projector for ServiceDesk {
    fn name(&self) -> &'static str {
        "service_desk"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "customers",
            "technicians",
            "parts",
            "devices",
            "device_visit_tickets",
            "tickets",
            "ticket_notes",
            "ticket_parts",
            "ticket_payments",
        ]
    }

    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
        if let Some(event) = decode::<TicketEvent>(e)? {
            if let Some(id) = stream_uuid(e, "ticket") {
                apply_ticket(tx, e, id, event).await?;
            }
        } else if let Some(event) = decode::<DeviceEvent>(e)? {
            if let Some(id) = stream_uuid(e, "device") {
                apply_device(tx, e, id, event).await?;
            }
        } else if let Some(event) = decode::<CustomerEvent>(e)? {
            apply_customer(tx, e, event).await?;
        } else if let Some(event) = decode::<TechnicianEvent>(e)? {
            apply_technician(tx, event).await?;
        } else if let Some(event) = decode::<PartEvent>(e)? {
            if let Some(id) = stream_uuid(e, "part") {
                apply_part(tx, e, id, event).await?;
            }
        }
        Ok(())
    }
}

async fn apply_customer(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    event: CustomerEvent,
) -> Result<(), ProjectionError> {
    match event {
        CustomerEvent::CustomerRegistered {
            customer_id,
            name,
            email,
            phone,
            location,
            tier,
            registered_at,
        } => {
            sqlx::query!(
                "INSERT INTO customers (customer_id, name, email, phone, location, tier,
                                        registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                customer_id.as_uuid(),
                name.as_str(),
                email.as_str(),
                phone.as_ref().map(|p| p.as_str()),
                location.as_ref().map(|l| l.as_str()),
                label(&tier),
                registered_at
            )
            .execute(tx)
            .await?;
        }
        CustomerEvent::CustomerUpdated {
            customer_id,
            name,
            email,
            phone,
            location,
            updated_at,
        } => {
            sqlx::query!(
                "UPDATE customers SET name = COALESCE($2, name), email = COALESCE($3, email),
                        phone = COALESCE($4, phone), location = COALESCE($5, location),
                        updated_at = $6
                 WHERE customer_id = $1",
                customer_id.as_uuid(),
                name.as_ref().map(|n| n.as_str()),
                email.as_ref().map(|m| m.as_str()),
                phone.as_ref().map(|p| p.as_str()),
                location.as_ref().map(|l| l.as_str()),
                updated_at
            )
            .execute(tx)
            .await?;
        }
        CustomerEvent::CustomerTierChanged {
            customer_id, to, ..
        } => {
            sqlx::query!(
                "UPDATE customers SET tier = $2, updated_at = $3 WHERE customer_id = $1",
                customer_id.as_uuid(),
                label(&to),
                e.recorded_at
            )
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

async fn apply_technician(
    tx: &mut PgConnection,
    event: TechnicianEvent,
) -> Result<(), ProjectionError> {
    match event {
        TechnicianEvent::TechnicianOnboarded {
            technician_id,
            name,
            email,
            onboarded_at,
        } => {
            sqlx::query!(
                "INSERT INTO technicians (technician_id, name, email, active, onboarded_at)
                 VALUES ($1, $2, $3, TRUE, $4)",
                technician_id.as_uuid(),
                name.as_str(),
                email.as_str(),
                onboarded_at
            )
            .execute(tx)
            .await?;
        }
        TechnicianEvent::TechnicianDeactivated {
            technician_id,
            deactivated_at,
            ..
        } => {
            sqlx::query!(
                "UPDATE technicians SET active = FALSE, deactivated_at = $2
                 WHERE technician_id = $1",
                technician_id.as_uuid(),
                deactivated_at
            )
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

async fn apply_part(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    id: Uuid,
    event: PartEvent,
) -> Result<(), ProjectionError> {
    let delta: i64 = match event {
        PartEvent::PartAdded {
            name,
            sku,
            unit_cost,
            initial_stock,
            added_at,
            ..
        } => {
            sqlx::query!(
                "INSERT INTO parts (part_id, name, sku, unit_cost, stock, added_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                id,
                name.as_str(),
                sku.as_ref().map(|s| s.as_str()),
                money(unit_cost),
                i64::from(initial_stock),
                added_at
            )
            .execute(tx)
            .await?;
            return Ok(());
        }
        PartEvent::StockReceived { quantity, .. } | PartEvent::StockReturned { quantity, .. } => {
            i64::from(quantity)
        }
        PartEvent::StockAdjusted { delta, .. } => delta,
        PartEvent::StockUsed { quantity, .. } => -i64::from(quantity),
    };
    sqlx::query!(
        "UPDATE parts SET stock = stock + $2, updated_at = $3 WHERE part_id = $1",
        id,
        delta,
        e.recorded_at
    )
    .execute(tx)
    .await?;
    Ok(())
}

async fn apply_device(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    id: Uuid,
    event: DeviceEvent,
) -> Result<(), ProjectionError> {
    let at = e.recorded_at;
    match event {
        DeviceEvent::DeviceRegistered {
            customer_id,
            name,
            brand,
            model,
            serial_number,
            category,
            purchase_date,
            warranty_months,
            warranty_expires_on,
            invoice_ref,
            registered_at,
            ..
        } => {
            sqlx::query!(
                "INSERT INTO devices (device_id, customer_id, name, brand, model, serial_number,
                     category, purchase_date, warranty_months, warranty_expires_on, invoice_ref,
                     service_status, registered_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'registered', $12, $12, $13)",
                id,
                customer_id.as_uuid(),
                name.as_str(),
                brand.as_ref().map(|b| b.as_str()),
                model.as_ref().map(|m| m.as_str()),
                serial_number.as_str(),
                category.as_ref().map(|c| c.as_str()),
                purchase_date,
                i32::try_from(warranty_months).unwrap_or(i32::MAX),
                warranty_expires_on,
                invoice_ref.as_ref().map(|i| i.as_str()),
                registered_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::WarrantyExtended {
            months,
            warranty_expires_on,
            ..
        } => {
            sqlx::query!(
                "UPDATE devices SET warranty_months = warranty_months + $2,
                        warranty_expires_on = $3, updated_at = $4, version = $5
                 WHERE device_id = $1",
                id,
                i32::try_from(months).unwrap_or(i32::MAX),
                warranty_expires_on,
                at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::DeviceCheckedIn {
            condition,
            accessories,
            reported_issue,
            expected_delivery_date,
            expected_budget,
            technician_id,
            checked_in_at,
        } => {
            let accessories: Vec<&str> = accessories.iter().map(|a| a.as_str()).collect();
            sqlx::query!(
                "UPDATE devices SET service_status = 'checked_in', condition = $2,
                        accessories = $3, reported_issue = $4, expected_delivery_date = $5,
                        expected_budget = $6, technician_id = $7, checked_in_at = $8,
                        ready_at = NULL, delivered_at = NULL, closed_at = NULL,
                        rescheduled_at = NULL, updated_at = $8, version = $9
                 WHERE device_id = $1",
                id,
                condition.as_str(),
                serde_json::json!(accessories),
                reported_issue.as_str(),
                expected_delivery_date,
                expected_budget.map(money),
                technician_id.map(|t| t.as_uuid()),
                checked_in_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::TicketLinked { ticket_id, .. } => {
            sqlx::query!(
                "INSERT INTO device_visit_tickets (device_id, visit, ticket_id)
                 SELECT device_id, visit, $2 FROM devices WHERE device_id = $1
                 ON CONFLICT DO NOTHING",
                id,
                ticket_id.as_uuid()
            )
            .execute(&mut *tx)
            .await?;
            touch_device(tx, id, at, e.version).await?;
        }
        DeviceEvent::DeviceReadyForDelivery { ready_at } => {
            sqlx::query!(
                "UPDATE devices SET service_status = 'ready_for_delivery', ready_at = $2,
                        updated_at = $2, version = $3
                 WHERE device_id = $1",
                id,
                ready_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::DeviceDelivered { delivered_at } => {
            sqlx::query!(
                "UPDATE devices SET service_status = 'delivered', delivered_at = $2,
                        updated_at = $2, version = $3
                 WHERE device_id = $1",
                id,
                delivered_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::DeviceClosed { closed_at } => {
            sqlx::query!(
                "UPDATE devices SET service_status = 'closed', closed_at = $2, visit = visit + 1,
                        updated_at = $2, version = $3
                 WHERE device_id = $1",
                id,
                closed_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        DeviceEvent::DeliveryRescheduled {
            expected_delivery_date,
            technician_id,
            rescheduled_at,
            ..
        } => {
            sqlx::query!(
                "UPDATE devices SET expected_delivery_date = $2, technician_id = $3,
                        rescheduled_at = $4, updated_at = $4, version = $5
                 WHERE device_id = $1",
                id,
                expected_delivery_date,
                technician_id.map(|t| t.as_uuid()),
                rescheduled_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

async fn touch_device(
    tx: &mut PgConnection,
    id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
    version: i64,
) -> Result<(), ProjectionError> {
    sqlx::query!(
        "UPDATE devices SET updated_at = $2, version = $3 WHERE device_id = $1",
        id,
        at,
        version
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Evolves the ticket with the domain's own code (so bill, coverage and balance are exactly the
/// domain's), then writes every column from the new state.
async fn apply_ticket(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    id: Uuid,
    event: TicketEvent,
) -> Result<(), ProjectionError> {
    let previous = match event {
        TicketEvent::TicketRaised { .. } => None,
        _ => {
            let row = sqlx::query!(
                r#"SELECT state, settled_at FROM tickets WHERE ticket_id = $1"#,
                id
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(()) };
            let state: TicketState =
                serde_json::from_value(row.state).map_err(|source| ProjectionError::Corrupt {
                    position: e.position,
                    reason: source.to_string(),
                })?;
            Some((state, row.settled_at))
        }
    };
    let (before, settled_before) = match previous {
        Some((state, settled)) => (Some(state), settled),
        None => (None, None),
    };
    let ticket = match &before {
        Some(state) => Ticket::from_state(state.clone()),
        None => Ticket::default(),
    }
    .evolve(&event);
    let Some(s) = ticket.state() else {
        return Ok(());
    };

    // Child rows.
    match &event {
        TicketEvent::NoteAdded {
            note_id,
            text,
            visibility,
            added_at,
        } => {
            sqlx::query!(
                "INSERT INTO ticket_notes (note_id, ticket_id, position, text, visibility,
                                           actor_id, added_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                note_id.as_uuid(),
                id,
                e.position,
                text.as_str(),
                label(visibility),
                e.actor.id,
                added_at
            )
            .execute(&mut *tx)
            .await?;
        }
        TicketEvent::PartUsed {
            part_id,
            quantity,
            unit_cost,
            used_at,
        } => {
            sqlx::query!(
                "INSERT INTO ticket_parts (ticket_id, position, part_id, quantity, unit_cost, used_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                id,
                e.position,
                part_id.as_uuid(),
                i32::try_from(*quantity).unwrap_or(i32::MAX),
                money(*unit_cost),
                used_at
            )
            .execute(&mut *tx)
            .await?;
        }
        TicketEvent::PaymentRecorded {
            payment_id,
            amount,
            method,
            paid_at,
        } => {
            sqlx::query!(
                "INSERT INTO ticket_payments (payment_id, ticket_id, position, amount, method, paid_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                payment_id.as_uuid(),
                id,
                e.position,
                money(*amount),
                label(method),
                paid_at
            )
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }

    let owed_before = before.as_ref().is_some_and(|b| b.balance() > Money::ZERO);
    let settled_at = if s.balance() > Money::ZERO {
        None
    } else if owed_before {
        Some(e.recorded_at)
    } else {
        settled_before
    };
    upsert_ticket(tx, e, s, settled_at).await
}

async fn upsert_ticket(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    s: &TicketState,
    settled_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), ProjectionError> {
    let state = serde_json::to_value(s).map_err(|source| ProjectionError::Corrupt {
        position: e.position,
        reason: source.to_string(),
    })?;
    let parts_cost: i64 = s
        .parts
        .iter()
        .map(|p| money(p.unit_cost.times(p.quantity)))
        .sum();
    let (rating, comment) = match &s.feedback {
        Some(f) => (
            Some(i16::from(f.rating)),
            f.comment.as_ref().map(|c| c.as_str()),
        ),
        None => (None, None),
    };
    let claim = s.warranty_claim.as_ref();
    sqlx::query!(
        "INSERT INTO tickets (ticket_id, number, raised_position, status, category, subject,
             description, severity, impact, customer_id, customer_tier, device_id, assignee_id,
             priority_score_at_raise, priority_level_at_raise, notes, quote_amount,
             quote_description, quote_decision, approved_quote, final_cost, repair_summary,
             parts_cost, paid, bill, covered, balance, claim_decision, claim_reason, rating,
             feedback_comment, resolution, raised_at, assigned_at, started_at, completed_at,
             resolved_at, closed_at, cancelled_at, reopened_at, settled_at, updated_at, version,
             state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34,
                 $35, $36, $37, $38, $39, $40, $41, $42, $43, $44)
         ON CONFLICT (ticket_id) DO UPDATE SET
             status = $4, assignee_id = $13, notes = $16, quote_amount = $17,
             quote_description = $18, quote_decision = $19, approved_quote = $20,
             final_cost = $21, repair_summary = $22, parts_cost = $23, paid = $24, bill = $25,
             covered = $26, balance = $27, claim_decision = $28, claim_reason = $29,
             rating = $30, feedback_comment = $31, resolution = $32, assigned_at = $34,
             started_at = $35, completed_at = $36, resolved_at = $37, closed_at = $38,
             cancelled_at = $39, reopened_at = $40, settled_at = $41, updated_at = $42,
             version = $43, state = $44",
        s.id.as_uuid(),
        s.number.as_str(),
        e.position,
        s.status.label(),
        label(&s.category),
        s.subject.as_str(),
        s.description.as_str(),
        label(&s.severity),
        i16::from(s.impact.get()),
        s.customer_id.as_uuid(),
        label(&s.customer_tier),
        s.device_id.map(|d| d.as_uuid()),
        s.assignee.map(|a| a.as_uuid()),
        i32::try_from(s.priority_score).unwrap_or(i32::MAX),
        label(&s.priority_level),
        i32::try_from(s.notes).unwrap_or(i32::MAX),
        s.quote.as_ref().map(|q| money(q.amount)),
        s.quote.as_ref().map(|q| q.description.as_str()),
        s.quote.as_ref().map(|q| label(&q.decision)),
        s.approved_quote.map(money),
        s.final_cost.map(money),
        s.repair_summary.as_ref().map(|r| r.as_str()),
        parts_cost,
        money(s.paid),
        money(s.bill()),
        money(s.covered()),
        money(s.balance()),
        claim.map(|c| label(&c.decision)),
        claim.and_then(|c| c.reason.as_ref()).map(|r| r.as_str()),
        rating,
        comment,
        s.resolution.as_ref().map(|r| r.as_str()),
        s.raised_at,
        s.assigned_at,
        s.started_at,
        s.completed_at,
        s.resolved_at,
        s.closed_at,
        s.cancelled_at,
        s.reopened_at,
        settled_at,
        e.recorded_at,
        e.version,
        state
    )
    .execute(tx)
    .await?;
    Ok(())
}
