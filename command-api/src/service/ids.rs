//! Ids derived from a command's (so a retried command writes the same ones), and the time a
//! command is stamped with.

use chrono::{DateTime, Utc};
use domain::EventPayload;
use stream_store::{CommandMetadata, NewEvent};
use uuid::Uuid;

/// Metadata for a secondary append of a command: its own command id, derived from the
/// command's and `purpose`, with the request's causation id. One `Idempotency-Key` sent at the
/// same time with two bodies makes the same id for both: the store answers the second one
/// `CommandReused` and stops its chain there (a ticket number's claim, before the device link).
pub(super) fn derived(meta: &CommandMetadata, purpose: &str) -> CommandMetadata {
    CommandMetadata {
        command_id: derive_id(meta.command_id, purpose.as_bytes()),
        ..meta.clone()
    }
}

/// Like `derived`, but the id derives from the request (its causation id: command id, name and
/// body): one key sent at the same time with two bodies (say, two part counts) makes two such
/// appends, each undone when its request loses (`use_part`), not one that both take for theirs.
pub(super) fn derived_for_request(meta: &CommandMetadata, purpose: &str) -> CommandMetadata {
    CommandMetadata {
        command_id: derive_id(meta.causation_id, purpose.as_bytes()),
        ..meta.clone()
    }
}

/// Turns domain events into store events. Event ids derive from the command id, so a retried
/// command produces the same ids.
pub(crate) fn encode<E: EventPayload>(events: &[E], command_id: Uuid) -> Vec<NewEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent {
            event_id: event_id(command_id, i),
            event_type: e.event_type().to_owned(),
            schema_version: e.schema_version(),
            data: e.to_data(),
        })
        .collect()
}

/// The id of a command's `i`th event, derived from the command id so that a retried command
/// produces the same ids.
fn event_id(command_id: Uuid, i: usize) -> Uuid {
    derive_id(command_id, i.to_string().as_bytes())
}

/// HMAC-SHA256 of `message` under `key`.
pub(crate) fn keyed(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// An id derived from `base` and `name`: their v5 hash (the same inputs give the same id)
/// under `base`'s first 48 bits, which in a UUIDv7 are its millisecond timestamp. The log's
/// unique index on event ids and its index on command ids then grow at their right edge, as
/// for the server's v7 ids, instead of taking each derived id at a random leaf (BENCHMARKS.md,
/// seventeenth round). A UUIDv8 ("custom"): 74 bits of hash stay, as many random bits as a v7
/// has, so two ids of one millisecond collide no more often than two v7s would.
pub(crate) fn derive_id(base: Uuid, name: &[u8]) -> Uuid {
    let mut bytes = *Uuid::new_v5(&base, name).as_bytes();
    bytes[..6].copy_from_slice(&base.as_bytes()[..6]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The time a command is stamped with, taken once at the edge.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_distinct_and_ordered_like_their_commands() {
        let first = Uuid::now_v7();
        let ids: Vec<Uuid> = (0..3).map(|i| event_id(first, i)).collect();
        // A retried command produces the same ids.
        assert_eq!(ids, (0..3).map(|i| event_id(first, i)).collect::<Vec<_>>());
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        for id in &ids {
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(id.as_bytes()[..6], first.as_bytes()[..6]);
        }
        // A later command's events sort after an earlier one's (a different millisecond).
        let later = Uuid::from_u128(first.as_u128() + (1u128 << 80));
        assert!(event_id(later, 0) > event_id(first, 2));
        assert_ne!(event_id(later, 0), ids[0]);
        // A secondary append's command id keeps the order too, and so do its events.
        let meta = CommandMetadata {
            command_id: first,
            correlation_id: first,
            causation_id: first,
            actor: stream_store::Actor {
                id: "user-1".into(),
                role: "admin".into(),
            },
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        };
        let claim = derived(&meta, "ticket-number-0");
        assert_eq!(claim.causation_id, first);
        assert_eq!(claim.command_id.as_bytes()[..6], first.as_bytes()[..6]);
        assert_eq!(
            event_id(claim.command_id, 0).as_bytes()[..6],
            first.as_bytes()[..6]
        );
    }
}
