use std::fmt;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StoreError;

/// The name of a stream, e.g. `ticket-0b6f…`. Non-empty, at most 256 bytes, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!("bad stream name {name:?}")));
        }
        Ok(Self(name))
    }

    /// `{prefix}-{id}`; always valid for a short prefix.
    pub fn for_aggregate(prefix: &str, id: impl fmt::Display) -> Self {
        Self(format!("{prefix}-{id}"))
    }

    /// For names read back from a backend, which were validated when appended.
    pub(crate) fn trusted(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The version a stream must be at for an append to go through. Versions count events: an
/// empty stream is at 0, its first event has version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    Any,
    NoStream,
    Exact(i64),
}

impl ExpectedVersion {
    pub fn admits(self, actual: i64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub role: String,
}

/// Metadata shared by every event one command appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    /// Idempotency key: a second append with the same id writes nothing.
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Actor,
    pub recorded_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
}

/// An event's payload as stored: its JSON text. Readers decode it straight into their own
/// types (`domain::DomainEvent::from_stored`); a `serde_json::Value` tree in between cost a
/// third of a rebuild's CPU. Equal when the JSON values are equal (stored text is normalised by
/// the database: spacing and key order may differ from what was appended).
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Payload(Box<serde_json::value::RawValue>);

impl Payload {
    /// The payload of `value`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, StoreError> {
        serde_json::value::to_raw_value(value)
            .map(Self)
            .map_err(|e| StoreError::Invalid(format!("payload: {e}")))
    }

    /// The payload whose JSON text is `text` (checked to be JSON).
    pub(crate) fn from_text(text: String) -> Result<Self, StoreError> {
        serde_json::value::RawValue::from_string(text)
            .map(Self)
            .map_err(|e| StoreError::Invalid(format!("payload: {e}")))
    }

    /// The JSON text, e.g. for a deserializer.
    pub fn raw(&self) -> &serde_json::value::RawValue {
        &self.0
    }

    /// The payload as a JSON value tree (parses the text).
    pub fn to_value(&self) -> serde_json::Value {
        // Valid JSON by construction (checked when made or decoded), so it parses.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(Self)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// An event as stored, with its place in its stream and in the global log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub stream_id: StreamId,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Payload,
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Actor,
    pub recorded_at: DateTime<Utc>,
}

/// One append of a chain (`EventStore::append_chain`): what `EventStore::append` takes.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub meta: CommandMetadata,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    pub stream_id: StreamId,
    /// Version of the stream after the append.
    pub version: i64,
    /// Global position of the last appended event.
    pub position: i64,
    pub events: Vec<RecordedEvent>,
    /// True when the command id had already been appended and nothing new was written.
    pub duplicate: bool,
}

impl AppendOutcome {
    /// True when the append created the stream.
    pub fn created_stream(&self) -> bool {
        self.events.first().is_some_and(|e| e.version == 1)
    }
}

/// A live feed of the global log.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RecordedEvent, StoreError>> + Send>>;

#[cfg(test)]
mod tests {
    use super::Payload;

    /// The database hands payloads back normalised (key order, spacing): equality is the JSON
    /// value's, not the text's.
    #[test]
    fn payloads_are_equal_as_json_values() {
        let appended = Payload::from_value(&serde_json::json!({ "bb": [1, 2], "a": "x" })).unwrap();
        let stored: Payload = serde_json::from_str(r#"{"a": "x", "bb": [1,  2]}"#).unwrap();
        assert_eq!(appended, stored);
        let other: Payload = serde_json::from_str(r#"{"a": "y", "bb": [1, 2]}"#).unwrap();
        assert_ne!(appended, other);
        assert_eq!(stored.to_value()["bb"][1], 2);
        assert!(serde_json::from_str::<Payload>("{not json").is_err());
    }
}
