//! Scalars, enums and paging shared by the schema.

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{
    Enum, InputValueError, InputValueResult, OutputType, Result, Scalar, ScalarType, SimpleObject,
    Value,
};

use crate::error::{gql, QueryError};

pub const DEFAULT_PAGE: i64 = 20;
pub const MAX_PAGE: i64 = 100;

/// An amount of money as a decimal string with two fraction digits (`"150.00"`): the ledger
/// keeps integer minor units and never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Money(pub i64);

#[Scalar(name = "Money")]
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(s) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        parse_money(s).ok_or_else(|| InputValueError::custom("expected a decimal like \"150.00\""))
    }

    fn to_value(&self) -> Value {
        Value::String(format_money(self.0))
    }
}

pub fn format_money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn parse_money(s: &str) -> Option<Money> {
    let (units, cents) = s.split_once('.').unwrap_or((s, "00"));
    if cents.len() != 2 || units.is_empty() {
        return None;
    }
    let units: i64 = units.parse().ok()?;
    let cents: i64 = cents.parse().ok()?;
    units.checked_mul(100)?.checked_add(cents).map(Money)
}

#[derive(SimpleObject)]
pub struct PageInfoExtra {
    /// Number of items matching the filters, over all pages.
    pub total_count: i64,
}

pub type Page<T> = Connection<OpaqueCursor<i64>, T, PageInfoExtra>;

/// Offset and size of the requested page (`after` is the cursor of the last item seen).
pub fn window(first: Option<i32>, after: Option<String>) -> Result<(i64, i64)> {
    let limit = first.map_or(DEFAULT_PAGE, i64::from);
    if !(0..=MAX_PAGE).contains(&limit) {
        return Err(gql(QueryError::BadInput(format!(
            "first must be between 0 and {MAX_PAGE}"
        ))));
    }
    let offset = match after {
        None => 0,
        Some(c) => OpaqueCursor::<i64>::decode_cursor(&c)
            .map(|c| c.0 + 1)
            .map_err(|_| {
                gql(QueryError::BadInput(
                    "after is not a cursor of this list".into(),
                ))
            })?,
    };
    if offset < 0 {
        return Err(gql(QueryError::BadInput(
            "after is not a cursor of this list".into(),
        )));
    }
    Ok((offset, limit))
}

/// A page from rows fetched with `LIMIT limit + 1 OFFSET offset`.
pub fn page<T: OutputType>(rows: Vec<T>, offset: i64, limit: i64, total_count: i64) -> Page<T> {
    let has_next = rows.len() as i64 > limit;
    let mut page =
        Connection::with_additional_fields(offset > 0, has_next, PageInfoExtra { total_count });
    page.edges.extend(
        rows.into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .zip(offset..)
            .map(|(node, i)| Edge::new(OpaqueCursor(i), node)),
    );
    page
}

/// A value as the read models store it: the serde name of its enum (the domain's, whose
/// labels the projections write, or this schema's own). An unknown stored value is an error,
/// never a default.
pub(crate) fn from_label<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, QueryError> {
    use serde::de::{value::Error, IntoDeserializer};
    T::deserialize(IntoDeserializer::<Error>::into_deserializer(s)).map_err(|e| {
        let kind = std::any::type_name::<T>();
        QueryError::Internal(format!("a read model holds {s:?}, no {kind}: {e}").into())
    })
}

/// The stored name of an enum value (its serde name), as `from_label` reads it back.
pub(crate) fn label<T: serde::Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Where a ticket is in its workflow.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::TicketStatus")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
    Cancelled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::Category")]
pub enum TicketCategory {
    Repair,
    Warranty,
    Technical,
    Billing,
    Account,
    General,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::Severity")]
pub enum Severity {
    Critical,
    Major,
    Minor,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::Tier")]
pub enum CustomerTier {
    Free,
    Paid,
    Enterprise,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::priority::PriorityLevel")]
pub enum PriorityLevel {
    P0,
    P1,
    P2,
    P3,
}

/// A decision on a quote or a warranty claim.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::Decision")]
pub enum Decision {
    Pending,
    Approved,
    Rejected,
}

/// An enum as the read models store it: read with `from_db` (an unknown value is an error),
/// written (in filters) with `db`.
pub(crate) trait Stored: Sized {
    fn from_db(s: &str) -> Result<Self, QueryError>;
    fn db(self) -> String;
}

/// The enums stored by their domain counterpart's name.
macro_rules! stored_as_domain {
    ($($local:ident => $domain:ty),+ $(,)?) => {$(
        impl Stored for $local {
            fn from_db(s: &str) -> Result<Self, QueryError> {
                from_label::<$domain>(s).map(Self::from)
            }

            fn db(self) -> String {
                label(<$domain>::from(self))
            }
        }
    )+};
}

stored_as_domain!(
    TicketStatus => domain::TicketStatus,
    TicketCategory => domain::Category,
    Severity => domain::Severity,
    CustomerTier => domain::Tier,
    PriorityLevel => domain::priority::PriorityLevel,
    Decision => domain::Decision,
);

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum NoteVisibility {
    Public,
    Internal,
}

// Computed by the device queries' SQL, under these names.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WarrantyStatus {
    Active,
    ExpiringSoon,
    Expired,
}

/// Where a device is in the service center's flow.
// `in_repair` (checked in with a ticket in progress) is computed by the device queries' SQL;
// the rest are the domain's names.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Registered,
    CheckedIn,
    InRepair,
    ReadyForDelivery,
    Delivered,
    Closed,
}

/// The enums stored under their own serde names.
macro_rules! stored_as_named {
    ($($local:ident),+ $(,)?) => {$(
        impl Stored for $local {
            fn from_db(s: &str) -> Result<Self, QueryError> {
                from_label(s)
            }

            fn db(self) -> String {
                label(self)
            }
        }
    )+};
}

stored_as_named!(WarrantyStatus, ServiceStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_as_a_decimal_string() {
        assert_eq!(format_money(15000), "150.00");
        assert_eq!(format_money(5), "0.05");
        assert_eq!(format_money(-250), "-2.50");
        assert_eq!(parse_money("150.00"), Some(Money(15000)));
        assert_eq!(parse_money("150"), Some(Money(15000)));
        assert_eq!(parse_money("1.5"), None);
        assert_eq!(parse_money("abc"), None);
    }
}

/// An id from the API as a UUID, or a bad-input error.
pub fn parse_id(id: &async_graphql::ID) -> async_graphql::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id.as_str()).map_err(|_| {
        crate::error::gql(crate::error::QueryError::BadInput(format!(
            "{:?} is not a valid id",
            id.as_str()
        )))
    })
}

// Another record named by a ticket or a device (its customer, technician, part).
#[derive(async_graphql::SimpleObject, Clone)]
pub struct PartyRef {
    pub id: async_graphql::ID,
    pub name: String,
}

/// What a field that runs its own SQL query costs beyond its children (a list query, or a
/// list below each item of a page): aliasing one such field hundreds of times is refused.
pub(crate) const QUERY_COST: usize = 25;
/// Items a list without paging (a ticket's notes, parts, payments, history) is charged for.
pub(crate) const UNPAGED_ITEMS: usize = 10;

/// A page costs its query, and its node's complexity once per requested item.
pub(crate) fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first
        .map_or(crate::types::DEFAULT_PAGE, i64::from)
        .clamp(1, crate::types::MAX_PAGE);
    usize::try_from(items)
        .unwrap_or(1)
        .saturating_mul(child_complexity)
        .saturating_add(QUERY_COST)
}

/// An unpaged list below a ticket: its query, and its items as `UNPAGED_ITEMS`.
pub(crate) fn list_cost(child_complexity: usize) -> usize {
    child_complexity
        .saturating_mul(UNPAGED_ITEMS)
        .saturating_add(QUERY_COST)
}
