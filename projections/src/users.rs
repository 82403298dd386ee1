//! The users: who an actor id is (name and role), and the accounts admins manage. Each user's
//! row follows the events of their own stream (`user-{id}`).

use async_trait::async_trait;
use domain::{Aggregate, EventPayload, User, UserEvent};
use sqlx::PgConnection;
use stream_store::{EventStore, RecordedEvent};
use uuid::Uuid;

use crate::{ProjectionError, Projector};

pub struct Users;

#[async_trait]
impl Projector for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
        _log: &dyn EventStore,
    ) -> Result<(), ProjectionError> {
        for e in events {
            let Some(user_id) = domain::stream_id_of(e.stream_id.as_str(), User::STREAM_PREFIX)
            else {
                continue;
            };
            let event = UserEvent::from_stored(&e.event_type, e.schema_version, e.data.raw())
                .map_err(|source| ProjectionError::Decode {
                    position: e.position,
                    source,
                })?;
            if let Some(event) = event {
                apply(tx, user_id, event).await?;
            }
        }
        Ok(())
    }
}

async fn apply(tx: &mut PgConnection, id: Uuid, event: UserEvent) -> Result<(), ProjectionError> {
    match event {
        UserEvent::UserRegistered {
            email,
            name,
            grant,
            must_change_password,
            registered_at,
            ..
        } => {
            // A stream is registered once (the write side refuses a second registration).
            sqlx::query!(
                "INSERT INTO users (user_id, email, name, role, customer_id, technician_id,
                                    active, must_change_password, registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $8, $8)
                 ON CONFLICT (user_id) DO NOTHING",
                id,
                email.as_str(),
                name.as_str(),
                grant.role.label(),
                grant.customer_id.map(|c| c.as_uuid()),
                grant.technician_id.map(|t| t.as_uuid()),
                must_change_password,
                registered_at
            )
            .execute(tx)
            .await?;
        }
        UserEvent::UserRoleChanged { grant, changed_at } => {
            sqlx::query!(
                "UPDATE users SET role = $2, customer_id = $3, technician_id = $4, updated_at = $5
                 WHERE user_id = $1",
                id,
                grant.role.label(),
                grant.customer_id.map(|c| c.as_uuid()),
                grant.technician_id.map(|t| t.as_uuid()),
                changed_at
            )
            .execute(tx)
            .await?;
        }
        UserEvent::UserDeactivated { deactivated_at, .. } => {
            sqlx::query!(
                "UPDATE users SET active = FALSE, updated_at = $2 WHERE user_id = $1",
                id,
                deactivated_at
            )
            .execute(tx)
            .await?;
        }
        UserEvent::PasswordChanged { changed_at, .. } => {
            sqlx::query!(
                "UPDATE users SET must_change_password = FALSE, updated_at = $2
                 WHERE user_id = $1",
                id,
                changed_at
            )
            .execute(tx)
            .await?;
        }
        UserEvent::UserSignedIn { signed_in_at, .. } => {
            sqlx::query!(
                "UPDATE users SET last_signed_in_at = $2 WHERE user_id = $1",
                id,
                signed_in_at
            )
            .execute(tx)
            .await?;
        }
        UserEvent::UserSignedOut { .. } => {}
    }
    Ok(())
}
