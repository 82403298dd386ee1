use crate::TicketStatus;

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

/// A command refused by a domain rule. One variant per rule; `code` is the stable machine name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command targets an aggregate that does not exist (HTTP 404).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("customer is already registered")]
    CustomerAlreadyRegistered,
    #[error("technician is already onboarded")]
    TechnicianAlreadyOnboarded,
    #[error("technician is already inactive")]
    TechnicianAlreadyInactive,
    #[error("ticket already exists")]
    TicketAlreadyRaised,
    #[error("this e-mail address is already registered")]
    EmailTaken,
    #[error("unknown customer")]
    UnknownCustomer,
    #[error("unknown technician")]
    UnknownTechnician,
    #[error("technician is inactive and cannot take new assignments")]
    TechnicianInactive,
    #[error("ticket is already assigned to this technician")]
    AlreadyAssigned,
    #[error("ticket has no assigned technician")]
    NotAssigned,
    #[error("ticket is closed and cannot change")]
    TicketClosed,
    #[error("cannot {action} a ticket that is {from}")]
    InvalidTransition {
        from: TicketStatus,
        action: &'static str,
    },
}

impl DomainError {
    /// Stable machine-readable code, used by HTTP and GraphQL errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NOT_FOUND",
            Self::CustomerAlreadyRegistered => "CUSTOMER_ALREADY_REGISTERED",
            Self::TechnicianAlreadyOnboarded => "TECHNICIAN_ALREADY_ONBOARDED",
            Self::TechnicianAlreadyInactive => "TECHNICIAN_ALREADY_INACTIVE",
            Self::TicketAlreadyRaised => "TICKET_ALREADY_RAISED",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::UnknownCustomer => "UNKNOWN_CUSTOMER",
            Self::UnknownTechnician => "UNKNOWN_TECHNICIAN",
            Self::TechnicianInactive => "TECHNICIAN_INACTIVE",
            Self::AlreadyAssigned => "ALREADY_ASSIGNED",
            Self::NotAssigned => "NOT_ASSIGNED",
            Self::TicketClosed => "TICKET_CLOSED",
            Self::InvalidTransition { .. } => "INVALID_TRANSITION",
        }
    }
}
