//! Customers and technicians.

use domain::{CustomerEvent, TechnicianEvent};
use sqlx::PgConnection;
use stream_store::RecordedEvent;

use super::label;
use crate::ProjectionError;

pub(super) async fn apply_customer(
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

pub(super) async fn apply_technician(
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
