use chrono::{DateTime, Utc};

use crate::{DecodeError, DomainError, EventPayload};

/// An event-sourced aggregate: one stream per instance.
pub trait Aggregate: Default + Clone {
    type Command;
    type Event: EventPayload;

    /// Prefix of the stream name; the stream of an instance is `{prefix}-{id}`.
    const STREAM_PREFIX: &'static str;

    /// All rules live here. Returns the events the command causes, or the rule it breaks.
    fn decide(
        &self,
        command: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// Applies one event. Never fails: an event is a fact that already happened.
    fn evolve(self, event: &Self::Event) -> Self;

    /// Applies one event as the log stores it (type, schema version, payload), decoded through
    /// its upcasters: the one fold of stored events, for commands, history and replay. An event
    /// of another aggregate's type leaves the state as it is.
    fn evolve_stored(
        self,
        event_type: &str,
        schema_version: i32,
        data: &serde_json::value::RawValue,
    ) -> Result<Self, DecodeError> {
        Ok(
            match Self::Event::from_stored(event_type, schema_version, data)? {
                Some(event) => self.evolve(&event),
                None => self,
            },
        )
    }
}

/// Folds a sequence of events into the state they produce.
pub fn replay<'a, A: Aggregate + 'a>(events: impl IntoIterator<Item = &'a A::Event>) -> A {
    events
        .into_iter()
        .fold(A::default(), |state, e| state.evolve(e))
}
