//! Wire shapes of the commands. Strict: unknown fields are refused. Each converts into a domain
//! command at the edge, where values are parsed.

use chrono::NaiveDate;
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

/// Declares a command body: strict (unknown fields refused), camelCase, with the optional
/// `expectedVersion` every command accepts.
macro_rules! command_body {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Version the target stream must be at (0: must not exist yet); a mismatch is a 409.
            #[schema(minimum = 0)]
            pub expected_version: Option<i64>,
        }
    };
}

command_body!(
    /// Registers a customer. `customerId` is generated when absent. The e-mail must be unique.
    RegisterCustomer {
        customer_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "Ana Souza")]
        name: String,
        #[schema(min_length = 1, example = "ana@example.com")]
        email: String,
        /// Phone or WhatsApp number.
        #[schema(example = "+55 11 91234-5678")]
        phone: Option<String>,
        #[schema(max_length = 200)]
        location: Option<String>,
        /// Defaults to `free`.
        tier: Option<Tier>,
    }
);

command_body!(
    /// Changes a customer's details; absent fields stay as they are. A new e-mail must be unique.
    UpdateCustomer {
        customer_id: Uuid,
        #[schema(max_length = 200)]
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        #[schema(max_length = 200)]
        location: Option<String>,
    }
);

command_body!(
    /// Moves a customer to another tier (it feeds the priority of new tickets).
    ChangeCustomerTier { customer_id: Uuid, tier: Tier }
);

command_body!(
    /// Onboards a technician. `technicianId` is generated when absent. The e-mail must be unique.
    OnboardTechnician {
        technician_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "Ravi Kumar")]
        name: String,
        #[schema(min_length = 1, example = "ravi@service.example")]
        email: String,
    }
);

command_body!(
    /// Deactivates a technician: no new assignments from then on.
    DeactivateTechnician {
        technician_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
);

command_body!(
    /// Registers a customer's device. The serial number must be unique; the purchase date not in
    /// the future; the warranty runs `warrantyMonths` (0 to 1200) from the purchase date.
    RegisterDevice {
        device_id: Option<Uuid>,
        customer_id: Uuid,
        #[schema(min_length = 1, max_length = 200, example = "ThinkPad X1")]
        name: String,
        #[schema(max_length = 200)]
        brand: Option<String>,
        #[schema(max_length = 200)]
        model: Option<String>,
        #[schema(min_length = 1, max_length = 64, example = "PF-2X9K3")]
        serial_number: String,
        #[schema(max_length = 200, example = "laptop")]
        category: Option<String>,
        purchase_date: NaiveDate,
        warranty_months: i64,
        #[schema(max_length = 200)]
        invoice_ref: Option<String>,
    }
);

command_body!(
    /// Extends a device's warranty by 1 to 1200 months.
    ExtendWarranty {
        device_id: Uuid,
        months: i64,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
);

command_body!(
    /// Checks a device in at the service center.
    CheckInDevice {
        device_id: Uuid,
        #[schema(min_length = 1, max_length = 5000, example = "Scratched lid")]
        condition: String,
        /// What came with the device (charger, bag, ...); at most 50.
        accessories: Option<Vec<String>>,
        #[schema(min_length = 1, max_length = 5000, example = "Does not power on")]
        reported_issue: String,
        /// Not in the past.
        expected_delivery_date: NaiveDate,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        expected_budget: Option<i64>,
        /// An active technician to take the device.
        technician_id: Option<Uuid>,
    }
);

command_body!(
    /// The repair is done: the device waits for its customer.
    MarkReadyForDelivery { device_id: Uuid }
);

command_body!(
    /// The customer took the device.
    DeliverDevice { device_id: Uuid }
);

command_body!(
    /// Closes a delivered device's service visit; its tickets' bills must be settled.
    CloseDevice { device_id: Uuid }
);

command_body!(
    /// Sets a new deadline for an overdue device, optionally with another technician.
    RescheduleDelivery {
        device_id: Uuid,
        expected_delivery_date: NaiveDate,
        technician_id: Option<Uuid>,
    }
);

command_body!(
    /// Raises a ticket for a registered customer, optionally about one of their devices.
    /// `ticketId` is generated when absent; the number `TKT-YYYYMMDD-XXXXXX` always is.
    RaiseTicket {
        ticket_id: Option<Uuid>,
        customer_id: Uuid,
        device_id: Option<Uuid>,
        category: Category,
        #[schema(min_length = 1, max_length = 200, example = "Phone does not charge")]
        subject: String,
        #[schema(min_length = 1, max_length = 5000)]
        description: String,
        severity: Severity,
        #[schema(minimum = 1, maximum = 5)]
        impact: i64,
    }
);

command_body!(
    /// Assigns the ticket to an active technician, or reassigns it.
    AssignTechnician { ticket_id: Uuid, technician_id: Uuid }
);

command_body!(
    /// Starts work on an assigned, open ticket.
    StartWork { ticket_id: Uuid }
);

command_body!(
    /// Adds a note: `public` (the customer sees it) or `internal` (staff only; the default is public).
    AddNote {
        ticket_id: Uuid,
        note_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 5000)]
        text: String,
        visibility: Option<Visibility>,
    }
);

command_body!(
    /// Quotes the repair; the customer approves or rejects it before billable work goes on.
    QuoteRepair {
        ticket_id: Uuid,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        amount: i64,
        #[schema(min_length = 1, max_length = 5000)]
        description: String,
    }
);

command_body!(
    /// The customer approves the pending quote.
    ApproveQuote { ticket_id: Uuid }
);

command_body!(
    /// The customer rejects the pending quote.
    RejectQuote {
        ticket_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
);

command_body!(
    /// Uses spare parts from the inventory on a ticket in progress (takes them from stock).
    UsePart {
        ticket_id: Uuid,
        part_id: Uuid,
        #[schema(minimum = 1, maximum = 10000)]
        quantity: i64,
    }
);

command_body!(
    /// Records the repair as done with its final cost (integer minor units).
    CompleteRepair {
        ticket_id: Uuid,
        #[schema(minimum = 0)]
        final_cost: i64,
        #[schema(min_length = 1, max_length = 5000)]
        summary: String,
    }
);

command_body!(
    /// Resolves a ticket in progress.
    ResolveTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000, example = "Replaced the charging port")]
        resolution: String,
    }
);

command_body!(
    /// Closes a resolved ticket whose balance is settled.
    CloseTicket { ticket_id: Uuid }
);

command_body!(
    /// Cancels an open or in-progress ticket.
    CancelTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
);

command_body!(
    /// Reopens a resolved or closed ticket.
    ReopenTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
);

command_body!(
    /// Records a payment (integer minor units, never more than the balance).
    RecordPayment {
        ticket_id: Uuid,
        payment_id: Option<Uuid>,
        #[schema(minimum = 1)]
        amount: i64,
        method: PaymentMethod,
    }
);

command_body!(
    /// Claims warranty for the ticket's device: possible when the warranty was active on the day
    /// the ticket was raised.
    ClaimWarranty {
        ticket_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
);

command_body!(
    /// Approves the pending warranty claim: the warranty covers what is unpaid of the bill, or
    /// at most `coveredAmount` (integer minor units) when given.
    ApproveWarrantyClaim {
        ticket_id: Uuid,
        #[schema(minimum = 0)]
        covered_amount: Option<i64>,
    }
);

command_body!(
    /// Rejects the pending warranty claim, with the reason.
    RejectWarrantyClaim {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
);

command_body!(
    /// The customer's rating (1 to 5 stars) and comment, once, after completion.
    SubmitFeedback {
        ticket_id: Uuid,
        rating: i64,
        #[schema(max_length = 5000)]
        comment: Option<String>,
    }
);

command_body!(
    /// Adds a spare part to the inventory.
    AddPart {
        part_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "USB-C charging port")]
        name: String,
        #[schema(max_length = 200)]
        sku: Option<String>,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        unit_cost: i64,
        #[schema(minimum = 0, maximum = 1000000)]
        initial_stock: Option<i64>,
    }
);

command_body!(
    /// Receives units of a part into stock.
    ReceiveStock {
        part_id: Uuid,
        #[schema(minimum = 1, maximum = 1000000)]
        quantity: i64,
        #[schema(max_length = 200)]
        reference: Option<String>,
    }
);

command_body!(
    /// Corrects a part's stock after a count; the result never goes below zero.
    AdjustStock {
        part_id: Uuid,
        #[schema(minimum = -1000000, maximum = 1000000)]
        delta: i64,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
);

command_body!(
    /// Creates a user account (admins). A customer account names its `customerId`, a
    /// technician account its `technicianId`. Passwords: 8 to 128 characters with a symbol.
    RegisterUser {
        user_id: Option<Uuid>,
        #[schema(min_length = 1, example = "ana@example.com")]
        email: String,
        #[schema(min_length = 1, max_length = 200)]
        name: String,
        role: Role,
        customer_id: Option<Uuid>,
        technician_id: Option<Uuid>,
        #[schema(min_length = 8, max_length = 128)]
        password: String,
        /// The user must change this password at the first sign-in.
        must_change_password: Option<bool>,
    }
);

command_body!(
    /// Gives a user another role (admins).
    ChangeUserRole {
        user_id: Uuid,
        role: Role,
        customer_id: Option<Uuid>,
        technician_id: Option<Uuid>,
    }
);

command_body!(
    /// Deactivates a user (admins): their tokens stop working at once.
    DeactivateUser {
        user_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
);

command_body!(
    /// Changes a password: your own (with `currentPassword`), or anyone's as an admin. All the
    /// user's earlier tokens stop working.
    ChangePassword {
        /// Default: the signed-in user.
        user_id: Option<Uuid>,
        current_password: Option<String>,
        #[schema(min_length = 8, max_length = 128)]
        new_password: String,
    }
);

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
