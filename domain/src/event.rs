use serde::{de::DeserializeOwned, Serialize};

/// How a domain event crosses into the store: a stable type name, a schema version and a JSON
/// payload. A changed payload shape gets a new schema version and an upcaster in `from_stored`;
/// a released type name is never renamed.
pub trait EventPayload: Sized + Serialize + DeserializeOwned {
    /// Every type name this enum can decode.
    const TYPES: &'static [&'static str];

    fn event_type(&self) -> &'static str;

    fn schema_version(&self) -> i32 {
        1
    }

    /// The payload without the type tag.
    fn to_data(&self) -> serde_json::Value {
        // Events are `#[serde(tag = "type", content = "data")]`; the tag is stored apart.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("data").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Decodes a stored event from its JSON text. `Ok(None)` when the type belongs to another
    /// aggregate.
    fn from_stored(
        event_type: &str,
        schema_version: i32,
        data: &serde_json::value::RawValue,
    ) -> Result<Option<Self>, DecodeError> {
        if !Self::TYPES.contains(&event_type) {
            return Ok(None);
        }
        if schema_version != 1 {
            return Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        let payload = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        };
        // The tag first, then the payload's text: serde then parses the payload straight into
        // its variant (a tag after the payload makes it buffer the payload).
        let tag = serde_json::to_string(event_type)
            .and_then(serde_json::value::RawValue::from_string)
            .map_err(payload)?;
        let tagged = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
            [("type", &*tag), ("data", data)].into_iter(),
        );
        Self::deserialize(tagged).map(Some).map_err(payload)
    }
}

/// Payload fields no reader outside the domain gets to see: the audit log's reads and every
/// command answer carry `"[redacted]"` in their place.
const SECRET_FIELDS: &[&str] = &["passwordHash"];

/// Replaces the secret fields of an event's payload, in place.
pub fn redact(data: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = data {
        for field in SECRET_FIELDS {
            if let Some(value) = map.get_mut(*field) {
                *value = serde_json::Value::String("[redacted]".into());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event_type} has unknown schema version {schema_version}")]
    UnknownVersion {
        event_type: String,
        schema_version: i32,
    },
    #[error("event {event_type} has a payload that does not decode: {source}")]
    Payload {
        event_type: String,
        source: serde_json::Error,
    },
}

/// Implements `TYPES` and `event_type` for an event enum whose variants are its type names.
macro_rules! event_payload {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl $crate::event::EventPayload for $ty {
            const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];
            fn event_type(&self) -> &'static str {
                match self {
                    $($ty::$variant { .. } => stringify!($variant),)+
                }
            }
        }
    };
}
pub(crate) use event_payload;
