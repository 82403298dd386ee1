//! Devices: warranty, check-in and the billing and delivery board.

use domain::DeviceEvent;
use sqlx::PgConnection;
use stream_store::RecordedEvent;
use uuid::Uuid;

use super::money;
use crate::ProjectionError;

pub(super) async fn apply_device(
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

pub(super) async fn touch_device(
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
