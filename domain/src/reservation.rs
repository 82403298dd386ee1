use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;

/// Claims a unique key (an e-mail address, a serial number, a ticket number) for one owner.
/// Each key has its own stream, appended with the version read: a second claim of a held key
/// conflicts on every store backend, without a multi-stream transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum ReservationEvent {
    KeyReserved {
        key: String,
        owner: String,
        reserved_at: DateTime<Utc>,
    },
    /// The owner let the key go (an e-mail address changed); it may be claimed again.
    KeyReleased {
        key: String,
        owner: String,
        released_at: DateTime<Utc>,
    },
}
event_payload!(ReservationEvent {
    KeyReserved,
    KeyReleased
});

impl ReservationEvent {
    /// Who holds the key after this event, if anyone.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::KeyReserved { owner, .. } => Some(owner),
            Self::KeyReleased { .. } => None,
        }
    }
}
