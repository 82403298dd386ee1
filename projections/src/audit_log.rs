use async_trait::async_trait;
use sqlx::PgConnection;
use stream_store::RecordedEvent;

use crate::{ProjectionError, Projector};

/// Every event of the store as auditors read it.
pub struct AuditLog;

#[async_trait]
impl Projector for AuditLog {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
        // Auditors read everything but password hashes.
        let data = redact(&e.data);
        sqlx::query!(
            "INSERT INTO audit_log (position, stream_id, version, event_id, event_type,
                                    schema_version, actor_id, actor_role, command_id,
                                    correlation_id, causation_id, recorded_at, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            e.position,
            e.stream_id.as_str(),
            e.version,
            e.event_id,
            e.event_type,
            e.schema_version,
            e.actor.id,
            e.actor.role,
            e.command_id,
            e.correlation_id,
            e.causation_id,
            e.recorded_at,
            data
        )
        .execute(tx)
        .await?;
        Ok(())
    }
}

fn redact(data: &serde_json::Value) -> serde_json::Value {
    match data {
        serde_json::Value::Object(map) if map.contains_key("passwordHash") => {
            let mut map = map.clone();
            map.insert(
                "passwordHash".into(),
                serde_json::Value::String("[redacted]".into()),
            );
            serde_json::Value::Object(map)
        }
        other => other.clone(),
    }
}
