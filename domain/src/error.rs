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
    EmailAlreadyRegistered,
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
            Self::NotFound { .. } => "not_found",
            Self::CustomerAlreadyRegistered => "customer_already_registered",
            Self::TechnicianAlreadyOnboarded => "technician_already_onboarded",
            Self::TechnicianAlreadyInactive => "technician_already_inactive",
            Self::TicketAlreadyRaised => "ticket_already_raised",
            Self::EmailAlreadyRegistered => "email_already_registered",
            Self::UnknownCustomer => "unknown_customer",
            Self::UnknownTechnician => "unknown_technician",
            Self::TechnicianInactive => "technician_inactive",
            Self::AlreadyAssigned => "already_assigned",
            Self::NotAssigned => "not_assigned",
            Self::TicketClosed => "ticket_closed",
            Self::InvalidTransition { .. } => "invalid_status_transition",
        }
    }
}
