//! Wire shapes of the commands. Strict: unknown fields are refused. Each converts into a domain
//! command at the edge, where values are parsed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest subject, in characters.
pub const MAX_SUBJECT: usize = 200;
/// Longest description, resolution or note, in characters.
pub const MAX_LONG_TEXT: usize = 5_000;
/// Longest name or location, in characters.
pub const MAX_NAME: usize = 200;

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

/// Registers a customer. `customerId` is generated when absent. The e-mail must be unique.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterCustomer {
    pub customer_id: Option<Uuid>,
    #[schema(max_length = 200, example = "Ana Souza")]
    pub name: String,
    #[schema(example = "ana@example.com")]
    pub email: String,
    #[schema(example = "+55 11 91234-5678")]
    pub phone: Option<String>,
    #[schema(max_length = 200)]
    pub location: Option<String>,
    /// Defaults to `free`.
    pub tier: Option<Tier>,
    /// Version the customer's stream must be at (0: must not exist yet).
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Onboards a technician. `technicianId` is generated when absent. The e-mail must be unique.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnboardTechnician {
    pub technician_id: Option<Uuid>,
    #[schema(max_length = 200, example = "Ravi Kumar")]
    pub name: String,
    #[schema(example = "ravi@service.example")]
    pub email: String,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Deactivates a technician: no new assignments from then on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeactivateTechnician {
    pub technician_id: Uuid,
    #[schema(max_length = 5000)]
    pub reason: Option<String>,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Raises a ticket for a registered customer. `ticketId` is generated when absent; the
/// number `TKT-YYYYMMDD-XXXXXX` is always generated.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RaiseTicket {
    pub ticket_id: Option<Uuid>,
    pub customer_id: Uuid,
    pub category: Category,
    #[schema(max_length = 200, example = "Phone does not charge")]
    pub subject: String,
    #[schema(max_length = 5000)]
    pub description: String,
    pub severity: Severity,
    #[schema(minimum = 1, maximum = 5)]
    pub impact: i64,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Assigns the ticket to an active technician, or reassigns it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssignTechnician {
    pub ticket_id: Uuid,
    pub technician_id: Uuid,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Starts work on an assigned, open ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartWork {
    pub ticket_id: Uuid,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Resolves a ticket in progress.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResolveTicket {
    pub ticket_id: Uuid,
    #[schema(max_length = 5000, example = "Replaced the charging port")]
    pub resolution: String,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
}

/// Closes a resolved ticket. A closed ticket never changes again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloseTicket {
    pub ticket_id: Uuid,
    #[schema(minimum = 0)]
    pub expected_version: Option<i64>,
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
