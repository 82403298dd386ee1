//! A ticket's history: its events as stored, with their actors.

use super::*;

/// Who caused an event.
#[derive(SimpleObject, Debug, PartialEq)]
#[graphql(complex)]
pub struct Actor {
    pub id: String,
    pub role: String,
}

#[ComplexObject]
impl Actor {
    /// The user's name (null when the id is not a user's).
    async fn name(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(crate::people::person(ctx, &self.id).await?.map(|p| p.name))
    }
}

/// One event of a stream, with its metadata.
pub struct HistoryEvent(pub RecordedEvent);

#[Object]
impl HistoryEvent {
    #[graphql(name = "type")]
    pub(super) async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    pub(super) async fn version(&self) -> i64 {
        self.0.version
    }
    pub(super) async fn position(&self) -> i64 {
        self.0.position
    }
    pub(super) async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    pub(super) async fn actor(&self) -> Actor {
        Actor {
            id: self.0.actor.id.clone(),
            role: self.0.actor.role.clone(),
        }
    }
    pub(super) async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.data.to_value())
    }
    pub(super) async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    pub(super) async fn schema_version(&self) -> i32 {
        self.0.schema_version
    }
    pub(super) async fn command_id(&self) -> ID {
        ID(self.0.command_id.to_string())
    }
    pub(super) async fn correlation_id(&self) -> ID {
        ID(self.0.correlation_id.to_string())
    }
    pub(super) async fn causation_id(&self) -> ID {
        ID(self.0.causation_id.to_string())
    }
}
