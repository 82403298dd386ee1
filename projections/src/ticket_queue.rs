use async_trait::async_trait;
use domain::{CustomerEvent, EventPayload, TechnicianEvent, TicketEvent};
use serde_json::Value;
use sqlx::PgConnection;
use stream_store::RecordedEvent;
use uuid::Uuid;

use crate::{ProjectionError, Projector};

/// One row per ticket: status, subject, customer, assignee, priority inputs and timestamps.
pub struct TicketQueue;

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

/// The ticket id of a `ticket-{uuid}` stream.
fn ticket_id(e: &RecordedEvent) -> Option<Uuid> {
    e.stream_id
        .as_str()
        .strip_prefix("ticket-")
        .and_then(|id| Uuid::parse_str(id).ok())
}

#[async_trait]
impl Projector for TicketQueue {
    fn name(&self) -> &'static str {
        "ticket_queue"
    }

    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
        if let Some(event) = decode::<CustomerEvent>(e)? {
            return apply_customer(tx, event).await;
        }
        if let Some(event) = decode::<TechnicianEvent>(e)? {
            return apply_technician(tx, event).await;
        }
        if let (Some(event), Some(id)) = (decode::<TicketEvent>(e)?, ticket_id(e)) {
            return apply_ticket(tx, e, id, event).await;
        }
        Ok(())
    }
}

async fn apply_customer(
    tx: &mut PgConnection,
    event: CustomerEvent,
) -> Result<(), ProjectionError> {
    match event {
        CustomerEvent::CustomerUpdated {
            customer_id,
            name: Some(name),
            ..
        } => {
            sqlx::query!(
                "UPDATE ticket_queue_customers SET name = $2 WHERE customer_id = $1",
                customer_id.as_uuid(),
                name.as_str()
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE ticket_queue SET customer_name = $2 WHERE customer_id = $1",
                customer_id.as_uuid(),
                name.as_str()
            )
            .execute(tx)
            .await?;
        }
        CustomerEvent::CustomerUpdated { .. } => {}
        CustomerEvent::CustomerTierChanged {
            customer_id, to, ..
        } => {
            sqlx::query!(
                "UPDATE ticket_queue_customers SET tier = $2 WHERE customer_id = $1",
                customer_id.as_uuid(),
                label(&to)
            )
            .execute(tx)
            .await?;
        }
        CustomerEvent::CustomerRegistered {
            customer_id,
            name,
            tier,
            ..
        } => {
            sqlx::query!(
                "INSERT INTO ticket_queue_customers (customer_id, name, tier) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id) DO UPDATE SET name = $2, tier = $3",
                customer_id.as_uuid(),
                name.as_str(),
                label(&tier)
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
            ..
        } => {
            sqlx::query!(
                "INSERT INTO ticket_queue_technicians (technician_id, name, active)
                 VALUES ($1, $2, TRUE)
                 ON CONFLICT (technician_id) DO UPDATE SET name = $2, active = TRUE",
                technician_id.as_uuid(),
                name.as_str()
            )
            .execute(tx)
            .await?;
        }
        TechnicianEvent::TechnicianDeactivated { technician_id, .. } => {
            sqlx::query!(
                "UPDATE ticket_queue_technicians SET active = FALSE WHERE technician_id = $1",
                technician_id.as_uuid()
            )
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

async fn apply_ticket(
    tx: &mut PgConnection,
    e: &RecordedEvent,
    id: Uuid,
    event: TicketEvent,
) -> Result<(), ProjectionError> {
    let at = e.recorded_at;
    match event {
        TicketEvent::TicketRaised {
            number,
            customer_id,
            customer_tier,
            category,
            subject,
            severity,
            impact,
            raised_at,
            ..
        } => {
            sqlx::query!(
                "INSERT INTO ticket_queue (ticket_id, number, raised_position, status, category,
                     subject, severity, impact, customer_id, customer_name, customer_tier,
                     version, raised_at, updated_at)
                 SELECT $1, $2, $3, 'open', $4, $5, $6, $7, $8,
                        COALESCE((SELECT name FROM ticket_queue_customers WHERE customer_id = $8), ''),
                        $9, $10, $11, $11",
                id,
                number.as_str(),
                e.position,
                label(&category),
                subject.as_str(),
                label(&severity),
                i16::from(impact.get()),
                customer_id.as_uuid(),
                label(&customer_tier),
                e.version,
                raised_at
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::TechnicianAssigned {
            technician_id,
            assigned_at,
            ..
        } => {
            sqlx::query!(
                "UPDATE ticket_queue SET assignee_id = $2, assigned_at = $3, version = $4,
                     updated_at = $3,
                     assignee_name = (SELECT name FROM ticket_queue_technicians
                                      WHERE technician_id = $2)
                 WHERE ticket_id = $1",
                id,
                technician_id.as_uuid(),
                assigned_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::WorkStarted { started_at, .. } => {
            sqlx::query!(
                "UPDATE ticket_queue SET status = 'in_progress', started_at = $2, version = $3,
                     updated_at = $2
                 WHERE ticket_id = $1",
                id,
                started_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::TicketResolved { resolved_at, .. } => {
            sqlx::query!(
                "UPDATE ticket_queue SET status = 'resolved', resolved_at = $2, version = $3,
                     updated_at = $2
                 WHERE ticket_id = $1",
                id,
                resolved_at,
                e.version
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::TicketCancelled { cancelled_at, .. } => {
            sqlx::query!(
                "UPDATE ticket_queue SET status = 'cancelled', version = $2, updated_at = $3
                 WHERE ticket_id = $1",
                id,
                e.version,
                cancelled_at
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::TicketReopened { reopened_at, .. } => {
            sqlx::query!(
                "UPDATE ticket_queue SET status = 'open', resolved_at = NULL, closed_at = NULL,
                     version = $2, updated_at = $3
                 WHERE ticket_id = $1",
                id,
                e.version,
                reopened_at
            )
            .execute(tx)
            .await?;
        }
        // Events that do not change what the queue shows still move its version.
        TicketEvent::NoteAdded { .. }
        | TicketEvent::RepairQuoted { .. }
        | TicketEvent::QuoteApproved { .. }
        | TicketEvent::QuoteRejected { .. }
        | TicketEvent::PartUsed { .. }
        | TicketEvent::RepairCompleted { .. }
        | TicketEvent::PaymentRecorded { .. }
        | TicketEvent::WarrantyClaimed { .. }
        | TicketEvent::WarrantyClaimApproved { .. }
        | TicketEvent::WarrantyClaimRejected { .. }
        | TicketEvent::FeedbackSubmitted { .. } => {
            sqlx::query!(
                "UPDATE ticket_queue SET version = $2, updated_at = $3 WHERE ticket_id = $1",
                id,
                e.version,
                at
            )
            .execute(tx)
            .await?;
        }
        TicketEvent::TicketClosed { closed_at } => {
            sqlx::query!(
                "UPDATE ticket_queue SET status = 'closed', closed_at = $2, version = $3,
                     updated_at = $4
                 WHERE ticket_id = $1",
                id,
                closed_at,
                e.version,
                at
            )
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}
