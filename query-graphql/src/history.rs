//! Time travel: an aggregate as it was, folded from its events by the domain's own code.

use async_graphql::Result;
use chrono::{DateTime, Utc};
use domain::Aggregate;
use stream_store::RecordedEvent;

use crate::error::{gql, QueryError};

/// The prefix of `events` up to `version` or up to `time` (exactly one must be given).
pub fn up_to(
    events: &[RecordedEvent],
    version: Option<i64>,
    time: Option<DateTime<Utc>>,
) -> Result<&[RecordedEvent]> {
    let end = match (version, time) {
        (Some(v), None) if v >= 0 => events.iter().take_while(|e| e.version <= v).count(),
        (None, Some(t)) => events.iter().take_while(|e| e.recorded_at <= t).count(),
        (Some(_), None) => {
            return Err(gql(QueryError::BadInput(
                "version must be 0 or more".into(),
            )))
        }
        _ => {
            return Err(gql(QueryError::BadInput(
                "give exactly one of version and time".into(),
            )))
        }
    };
    Ok(&events[..end])
}

/// Folds stored events into the aggregate's state.
pub fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<A> {
    events.iter().try_fold(A::default(), |state, e| {
        state
            .evolve_stored(&e.event_type, e.schema_version, e.data.raw())
            .map_err(|err| gql(QueryError::Internal(Box::new(err))))
    })
}
