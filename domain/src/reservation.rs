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

/// A unique value the ledger keeps, and the name of the stream its claims go to.
#[derive(Debug, Clone, Copy)]
pub enum UniqueKey<'a> {
    /// An e-mail address among the aggregates of one kind (`owner`: their stream prefix).
    Email { owner: &'static str, email: &'a str },
    /// A device's serial number.
    Serial(&'a str),
    /// A ticket's number (`TKT-…`).
    TicketNumber(&'a str),
}

impl UniqueKey<'_> {
    /// `{owner}-email-{address}`, `device-serial-{serial}`, `ticket-number-{number}`.
    pub fn stream_name(&self) -> String {
        match self {
            Self::Email { owner, email } => format!("{owner}-email-{email}"),
            Self::Serial(serial) => format!("device-serial-{serial}"),
            Self::TicketNumber(number) => format!("ticket-number-{number}"),
        }
    }
}

/// The id in an `{prefix}-{id}` stream name (a key's owner), when it is one.
pub fn stream_id_of(stream: &str, prefix: &str) -> Option<uuid::Uuid> {
    stream
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
}
