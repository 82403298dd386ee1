//! Field values parsed at the edge: each refusal names its field (400 `INVALID_FIELD`).

use domain::{Money, Quantity, TechnicianFacts, TechnicianId, Text};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{ApiError, CommandService};

/// Longest subject, in characters.
pub(crate) const MAX_SUBJECT: usize = 200;
/// Longest description, resolution or note, in characters.
pub(crate) const MAX_LONG_TEXT: usize = 5_000;
/// Longest name or location, in characters.
pub(crate) const MAX_NAME: usize = 200;
/// Largest quantity of parts in one use, delivery or correction.
pub(crate) const MAX_QUANTITY: u32 = Quantity::MAX;
/// Most accessories recorded at one check-in.
pub(crate) const MAX_ACCESSORIES: usize = 50;

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Malformed {
        message: format!("body is not a valid command: {e}"),
        details: serde_json::json!({ "line": e.line(), "column": e.column() }),
    })
}

pub(crate) fn expected(v: Option<i64>) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n < 0 => Err(ApiError::malformed("expectedVersion must be 0 or more")),
        other => Ok(other),
    }
}

pub(crate) fn text(field: &'static str, raw: &str, max: usize) -> Result<Text, ApiError> {
    Ok(Text::parse(field, raw, max)?)
}

/// An optional text; an empty or blank one counts as absent.
pub(crate) fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<Text>, ApiError> {
    raw.filter(|r| !r.trim().is_empty())
        .map(|r| text(field, r, max))
        .transpose()
}

pub(crate) fn money(field: &'static str, minor_units: i64) -> Result<Money, ApiError> {
    Ok(Money::parse(field, minor_units)?)
}

/// An amount of at least one minor unit.
pub(crate) fn positive_money(
    field: &'static str,
    minor_units: i64,
) -> Result<domain::Positive, ApiError> {
    Ok(Money::parse_positive(field, minor_units)?)
}

/// A count of units from 1 to `MAX_QUANTITY`.
pub(crate) fn quantity(field: &'static str, raw: i64) -> Result<Quantity, ApiError> {
    Ok(Quantity::parse(field, raw)?)
}

/// A new aggregate's id: the one given, or a fresh time-ordered one.
///
/// Ids the server mints (command ids without an Idempotency-Key, new aggregates' ids) are
/// UUIDv7: time-ordered, so each insert into the btree indexes keyed by them (the command
/// log's, the read models' primary keys) lands at the right edge of the index instead of on
/// a random leaf, as Marten's sequential GUIDs do. Random v4 keys made every write touch a
/// cold page and cost ~10% of the throughput at 32 clients (BENCHMARKS.md, seventeenth
/// round). The time inside them is an ordering aid, never read back as a fact.
pub(crate) fn new_id(given: Option<Uuid>) -> Uuid {
    given.unwrap_or_else(Uuid::now_v7)
}

/// Facts about an optional technician, looked up only when one is named.
pub(crate) async fn technician_facts(
    service: &CommandService,
    id: Option<TechnicianId>,
) -> Result<Option<TechnicianFacts>, ApiError> {
    match id {
        Some(id) => service.technician_facts(id).await,
        None => Ok(None),
    }
}
