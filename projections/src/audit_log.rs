use async_trait::async_trait;
use sqlx::PgConnection;
use stream_store::{EventStore, RecordedEvent};

use crate::{ProjectionError, Projector};

/// Every event of the store as auditors read it. Where the log is the `events` table of the
/// same database, only the columns auditors filter and sort on are kept (the rest is read from
/// the log by position); where it is elsewhere, every column, the payload redacted.
pub struct AuditLog;

#[async_trait]
impl Projector for AuditLog {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    /// One row per event, inserted once: a rebuild builds the key by position after the
    /// load (0.27 s for a million rows, against 0.46 s more for the load that maintains it).
    fn inserts_each_key_once(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
        _log: &dyn EventStore,
    ) -> Result<(), ProjectionError> {
        let mut rows = Rows::default();
        for e in events {
            rows.push(e);
        }
        if rows.position.is_empty() {
            return Ok(());
        }
        // One statement per batch: the rows travel as one array per column.
        sqlx::query!(
            "INSERT INTO audit_log (position, stream_id, version, event_id, event_type,
                                    schema_version, actor_id, actor_role, command_id,
                                    correlation_id, causation_id, recorded_at, data)
             SELECT unnest($1::bigint[]), unnest($2::text[]), unnest($3::bigint[]),
                    unnest($4::uuid[]), unnest($5::text[]), unnest($6::int[]),
                    unnest($7::text[]), unnest($8::text[]), unnest($9::uuid[]),
                    unnest($10::uuid[]), unnest($11::uuid[]), unnest($12::timestamptz[]),
                    unnest($13::jsonb[])",
            &rows.position,
            &rows.stream_id as &[&str],
            &rows.version,
            &rows.event_id,
            &rows.event_type as &[&str],
            &rows.schema_version,
            &rows.actor_id as &[&str],
            &rows.actor_role as &[&str],
            &rows.command_id,
            &rows.correlation_id,
            &rows.causation_id,
            &rows.recorded_at,
            &rows.data
        )
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The rows of `apply` reduced to the columns auditors filter and sort on, copied inside
    /// the database: no event travels to this process and back, and no payload is written a
    /// second time. The other columns stay NULL: readers complete them from the log's table,
    /// which this path is only taken next to (`query_graphql::audit_entries`).
    async fn apply_from_log(
        &self,
        tx: &mut PgConnection,
        after: i64,
        up_to: i64,
        skip: &[i64],
    ) -> Result<bool, ProjectionError> {
        sqlx::query!(
            "INSERT INTO audit_log (position, stream_id, event_type, actor_id, correlation_id,
                                    recorded_at)
             SELECT position, stream_id, event_type, actor_id, correlation_id, recorded_at
             FROM public.events
             WHERE position > $1 AND position <= $2 AND position <> ALL($3)",
            after,
            up_to,
            skip
        )
        .execute(tx)
        .await?;
        Ok(true)
    }
}

/// The batch's rows, column by column.
#[derive(Default)]
struct Rows<'a> {
    position: Vec<i64>,
    stream_id: Vec<&'a str>,
    version: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    actor_id: Vec<&'a str>,
    actor_role: Vec<&'a str>,
    command_id: Vec<uuid::Uuid>,
    correlation_id: Vec<uuid::Uuid>,
    causation_id: Vec<uuid::Uuid>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    data: Vec<serde_json::Value>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, e: &'a RecordedEvent) {
        self.position.push(e.position);
        self.stream_id.push(e.stream_id.as_str());
        self.version.push(e.version);
        self.event_id.push(e.event_id);
        self.event_type.push(&e.event_type);
        self.schema_version.push(e.schema_version);
        self.actor_id.push(&e.actor.id);
        self.actor_role.push(&e.actor.role);
        self.command_id.push(e.command_id);
        self.correlation_id.push(e.correlation_id);
        self.causation_id.push(e.causation_id);
        self.recorded_at.push(e.recorded_at);
        // Auditors read everything but secrets (password hashes).
        let mut data = e.data.to_value();
        domain::redact(&mut data);
        self.data.push(data);
    }
}
