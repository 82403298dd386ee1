//! Wire shapes the commands share: the enums their bodies use (each converts into the domain's),
//! the answer to an accepted command and the error body. The bodies themselves are declared
//! with their commands (`commands/`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    Paid,
    Enterprise,
}

impl From<Tier> for domain::Tier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Free => Self::Free,
            Tier::Paid => Self::Paid,
            Tier::Enterprise => Self::Enterprise,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Technician,
    Customer,
    Auditor,
}

impl From<Role> for domain::access::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => Self::Admin,
            Role::Technician => Self::Technician,
            Role::Customer => Self::Customer,
            Role::Auditor => Self::Auditor,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Internal,
}

impl From<Visibility> for domain::Visibility {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Public => Self::Public,
            Visibility::Internal => Self::Internal,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Card,
    BankTransfer,
    Upi,
    Other,
}

impl From<PaymentMethod> for domain::PaymentMethod {
    fn from(m: PaymentMethod) -> Self {
        match m {
            PaymentMethod::Cash => Self::Cash,
            PaymentMethod::Card => Self::Card,
            PaymentMethod::BankTransfer => Self::BankTransfer,
            PaymentMethod::Upi => Self::Upi,
            PaymentMethod::Other => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
}

impl From<Severity> for domain::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Critical => Self::Critical,
            Severity::Major => Self::Major,
            Severity::Minor => Self::Minor,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Repair,
    Warranty,
    Technical,
    Billing,
    Account,
    General,
}

impl From<Category> for domain::Category {
    fn from(c: Category) -> Self {
        match c {
            Category::Repair => Self::Repair,
            Category::Warranty => Self::Warranty,
            Category::Technical => Self::Technical,
            Category::Billing => Self::Billing,
            Category::Account => Self::Account,
            Category::General => Self::General,
        }
    }
}

/// The answer to an accepted command (and to its repeats with the same `Idempotency-Key`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    pub stream_id: String,
    /// Version of the stream after the command.
    pub version: i64,
    /// Global position of the command's last event.
    pub position: i64,
    pub command_id: Uuid,
    pub events: Vec<EventResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventResponse {
    #[serde(rename = "type")]
    pub event_type: String,
    pub event_id: Uuid,
    pub version: i64,
    pub position: i64,
    /// The event's payload; secret fields (password hashes) read `"[redacted]"`.
    pub data: serde_json::Value,
}

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `VERSION_CONFLICT`, `TECHNICIAN_INACTIVE`.
    pub code: String,
    pub message: String,
    pub details: serde_json::Value,
}
