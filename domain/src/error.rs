/// A value that does not parse: bad input, refused before any decision (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValueError {
    pub field: &'static str,
    pub reason: String,
}

impl ValueError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A command refused by a domain rule (HTTP 422, except `NotFound`). One variant per rule;
/// `code` is the stable machine name, the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command targets an aggregate that does not exist (HTTP 404).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("cannot {action} when it is {from}")]
    InvalidTransition {
        from: &'static str,
        action: &'static str,
    },
    #[error("this customer is already registered")]
    CustomerAlreadyRegistered,
    #[error("this e-mail address is already registered")]
    EmailTaken,
    #[error("nothing to change: the values given are the current ones")]
    NothingToChange,
    #[error("this technician is already onboarded")]
    TechnicianAlreadyOnboarded,
    #[error("this technician is already inactive")]
    TechnicianAlreadyInactive,
    #[error("no technician with this id")]
    UnknownTechnician,
    #[error("the technician is inactive and cannot take new work")]
    TechnicianInactive,
    #[error("no customer with this id")]
    UnknownCustomer,
    #[error("this device is already registered")]
    DeviceAlreadyRegistered,
    #[error("a device with this serial number is already registered")]
    SerialTaken,
    #[error("the purchase date is in the future")]
    PurchaseDateInFuture,
    #[error("warranty months must be from 0 to 1200")]
    InvalidWarrantyMonths,
    #[error("a warranty extension must add 1 to 1200 months")]
    InvalidWarrantyExtension,
    #[error("no device with this id")]
    UnknownDevice,
    #[error("the device belongs to another customer")]
    DeviceNotOwned,
    #[error("the expected delivery date is in the past")]
    DeliveryDateInPast,
    #[error("the device is not overdue: its expected delivery date has not passed")]
    DeliveryNotOverdue,
    #[error("the device's bill is not settled: {outstanding} outstanding")]
    BillNotSettled { outstanding: String },
    #[error("this ticket already exists")]
    TicketAlreadyRaised,
    #[error("the ticket is already assigned to this technician")]
    AlreadyAssigned,
    #[error("the ticket has no assigned technician")]
    NotAssigned,
    #[error("the ticket is closed and cannot change")]
    TicketClosed,
    #[error("the ticket has no pending quote")]
    NoPendingQuote,
    #[error("this ticket already has a note with this id")]
    NoteIdTaken,
    #[error("this ticket already has a payment with this id")]
    PaymentIdTaken,
    #[error("billable work needs an approved quote (or an approved warranty claim)")]
    QuoteNotApproved,
    #[error("the repair is already completed")]
    RepairAlreadyCompleted,
    #[error("the amount cannot be below the {paid} already paid")]
    AmountBelowPaid { paid: String },
    #[error("the payment exceeds the balance of {balance}")]
    Overpayment { balance: String },
    #[error("the ticket cannot be closed with {balance} outstanding")]
    BalanceOutstanding { balance: String },
    #[error("the ticket concerns no device, so there is no warranty to claim")]
    NoDevice,
    #[error("the device's warranty had expired when the ticket was raised")]
    WarrantyExpired,
    #[error("a warranty claim was already made for this ticket")]
    WarrantyAlreadyClaimed,
    #[error("the ticket has no pending warranty claim")]
    NoPendingClaim,
    #[error("feedback is possible only once the ticket is resolved or closed")]
    TicketNotCompleted,
    #[error("feedback was already given for this ticket")]
    FeedbackAlreadyGiven,
    #[error("the rating must be from 1 to 5 stars")]
    RatingOutOfRange,
    #[error("this part is already in the inventory")]
    PartAlreadyAdded,
    #[error("no spare part with this id")]
    UnknownPart,
    #[error("the password must be 8 to 128 characters and contain at least one symbol")]
    WeakPassword,
    #[error("this user account already exists")]
    UserAlreadyRegistered,
    #[error("this user account is deactivated")]
    UserInactive,
    #[error("a customer account must name its customer record (customerId)")]
    RoleNeedsCustomer,
    #[error("a technician account must name its technician record (technicianId)")]
    RoleNeedsTechnician,
    #[error("not enough stock: {available} available, {requested} requested")]
    InsufficientStock { available: u32, requested: u32 },
}

impl DomainError {
    /// Stable machine-readable code, used by HTTP and GraphQL errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NOT_FOUND",
            Self::InvalidTransition { .. } => "INVALID_TRANSITION",
            Self::CustomerAlreadyRegistered => "CUSTOMER_ALREADY_REGISTERED",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::NothingToChange => "NOTHING_TO_CHANGE",
            Self::TechnicianAlreadyOnboarded => "TECHNICIAN_ALREADY_ONBOARDED",
            Self::TechnicianAlreadyInactive => "TECHNICIAN_ALREADY_INACTIVE",
            Self::UnknownTechnician => "UNKNOWN_TECHNICIAN",
            Self::TechnicianInactive => "TECHNICIAN_INACTIVE",
            Self::UnknownCustomer => "UNKNOWN_CUSTOMER",
            Self::DeviceAlreadyRegistered => "DEVICE_ALREADY_REGISTERED",
            Self::SerialTaken => "SERIAL_TAKEN",
            Self::PurchaseDateInFuture => "PURCHASE_DATE_IN_FUTURE",
            Self::InvalidWarrantyMonths => "INVALID_WARRANTY_MONTHS",
            Self::InvalidWarrantyExtension => "INVALID_WARRANTY_EXTENSION",
            Self::UnknownDevice => "UNKNOWN_DEVICE",
            Self::DeviceNotOwned => "DEVICE_NOT_OWNED",
            Self::DeliveryDateInPast => "DELIVERY_DATE_IN_PAST",
            Self::DeliveryNotOverdue => "DELIVERY_NOT_OVERDUE",
            Self::BillNotSettled { .. } => "BILL_NOT_SETTLED",
            Self::TicketAlreadyRaised => "TICKET_ALREADY_RAISED",
            Self::AlreadyAssigned => "ALREADY_ASSIGNED",
            Self::NotAssigned => "NOT_ASSIGNED",
            Self::TicketClosed => "TICKET_CLOSED",
            Self::NoPendingQuote => "NO_PENDING_QUOTE",
            Self::NoteIdTaken => "NOTE_ID_TAKEN",
            Self::PaymentIdTaken => "PAYMENT_ID_TAKEN",
            Self::QuoteNotApproved => "QUOTE_NOT_APPROVED",
            Self::RepairAlreadyCompleted => "REPAIR_ALREADY_COMPLETED",
            Self::AmountBelowPaid { .. } => "AMOUNT_BELOW_PAID",
            Self::Overpayment { .. } => "OVERPAYMENT",
            Self::BalanceOutstanding { .. } => "BALANCE_OUTSTANDING",
            Self::NoDevice => "NO_DEVICE",
            Self::WarrantyExpired => "WARRANTY_EXPIRED",
            Self::WarrantyAlreadyClaimed => "WARRANTY_ALREADY_CLAIMED",
            Self::NoPendingClaim => "NO_PENDING_CLAIM",
            Self::TicketNotCompleted => "TICKET_NOT_COMPLETED",
            Self::FeedbackAlreadyGiven => "FEEDBACK_ALREADY_GIVEN",
            Self::RatingOutOfRange => "RATING_OUT_OF_RANGE",
            Self::PartAlreadyAdded => "PART_ALREADY_ADDED",
            Self::UnknownPart => "UNKNOWN_PART",
            Self::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            Self::WeakPassword => "WEAK_PASSWORD",
            Self::UserAlreadyRegistered => "USER_ALREADY_REGISTERED",
            Self::UserInactive => "USER_INACTIVE",
            Self::RoleNeedsCustomer => "ROLE_NEEDS_CUSTOMER",
            Self::RoleNeedsTechnician => "ROLE_NEEDS_TECHNICIAN",
        }
    }
}
