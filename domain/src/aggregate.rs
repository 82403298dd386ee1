use chrono::{DateTime, Utc};

use crate::{DomainError, EventPayload};

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
}

/// Folds a sequence of events into the state they produce.
pub fn replay<'a, A: Aggregate + 'a>(events: impl IntoIterator<Item = &'a A::Event>) -> A {
    events
        .into_iter()
        .fold(A::default(), |state, e| state.evolve(e))
}
