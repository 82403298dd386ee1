use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;

/// Claims a unique key (an e-mail address, a ticket number) for one owner. Each key has its
/// own stream, appended with "no stream expected": the second claim of a key conflicts on
/// every store backend, without a multi-stream transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum ReservationEvent {
    KeyReserved {
        key: String,
        owner: String,
        reserved_at: DateTime<Utc>,
    },
}
event_payload!(ReservationEvent { KeyReserved });

impl ReservationEvent {
    pub fn owner(&self) -> &str {
        match self {
            Self::KeyReserved { owner, .. } => owner,
        }
    }
}
