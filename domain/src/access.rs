//! Who may do what: roles, the signed-in principal, and the rules of access. Pure: the caller
//! supplies the facts (whose ticket, whose customer record).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CustomerId, TechnicianId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Technician,
    Customer,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Technician => "technician",
            Self::Customer => "customer",
            Self::Auditor => "auditor",
        }
    }

    /// Staff read everything about tickets they may see, internal notes included.
    pub fn is_staff(self) -> bool {
        !matches!(self, Self::Customer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The signed-in user a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
    /// The customer record of a customer account.
    pub customer_id: Option<CustomerId>,
    /// The technician record of a technician account.
    pub technician_id: Option<TechnicianId>,
}

/// The parties of a ticket, for access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketParties {
    pub customer_id: CustomerId,
    pub assignee: Option<TechnicianId>,
}

/// What a command asks to do, in access terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Anything only the service center's admins do: staff, inventory, assignment, devices at
    /// the desk, payments, warranty decisions, closing, users.
    Administer,
    RaiseTicketFor(CustomerId),
    RegisterDeviceFor(CustomerId),
    UpdateCustomer(CustomerId),
    /// Approve or reject the quote, give feedback: the ticket's customer.
    CustomerDecision,
    /// A note the customer may read.
    AddPublicNote,
    /// A staff-only note.
    AddInternalNote,
    /// Start, quote, use parts, complete, resolve, claim warranty: the assigned technician.
    TicketWork,
    ChangePasswordOf(UserId),
}

impl Principal {
    /// Whether this principal may do `action` (on a ticket with `ticket` parties).
    pub fn may(&self, action: Action, ticket: Option<TicketParties>) -> bool {
        let own_ticket_as_customer =
            || self.customer_id.is_some() && ticket.map(|t| t.customer_id) == self.customer_id;
        let own_ticket_as_technician = || {
            self.technician_id.is_some() && ticket.and_then(|t| t.assignee) == self.technician_id
        };
        if let Action::ChangePasswordOf(user) = action {
            return user == self.user_id || self.role == Role::Admin;
        }
        match self.role {
            Role::Admin => true,
            Role::Auditor => false,
            Role::Customer => match action {
                Action::RaiseTicketFor(c)
                | Action::RegisterDeviceFor(c)
                | Action::UpdateCustomer(c) => self.customer_id == Some(c),
                Action::CustomerDecision | Action::AddPublicNote => own_ticket_as_customer(),
                _ => false,
            },
            Role::Technician => match action {
                Action::TicketWork | Action::AddPublicNote | Action::AddInternalNote => {
                    own_ticket_as_technician()
                }
                _ => false,
            },
        }
    }

    /// Whether this principal may read the ticket at all.
    pub fn may_read_ticket(&self, ticket: TicketParties) -> bool {
        match self.role {
            Role::Admin | Role::Auditor => true,
            Role::Customer => self.customer_id == Some(ticket.customer_id),
            // Their own tickets and the unassigned queue they pick from.
            Role::Technician => ticket.assignee.is_none() || ticket.assignee == self.technician_id,
        }
    }
}

/// The password policy: 8 to 128 characters with at least one symbol (neither a letter nor a
/// digit).
pub fn check_password_policy(password: &str) -> Result<(), crate::DomainError> {
    let length = password.chars().count();
    let has_symbol = password
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace());
    if !(8..=128).contains(&length) || !has_symbol {
        return Err(crate::DomainError::WeakPassword);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn principal(role: Role, customer: u128, technician: u128) -> Principal {
        Principal {
            user_id: UserId::from_uuid(Uuid::from_u128(99)),
            role,
            customer_id: (customer > 0).then(|| CustomerId::from_uuid(Uuid::from_u128(customer))),
            technician_id: (technician > 0)
                .then(|| TechnicianId::from_uuid(Uuid::from_u128(technician))),
        }
    }

    fn ticket(customer: u128, technician: u128) -> Option<TicketParties> {
        Some(TicketParties {
            customer_id: CustomerId::from_uuid(Uuid::from_u128(customer)),
            assignee: (technician > 0)
                .then(|| TechnicianId::from_uuid(Uuid::from_u128(technician))),
        })
    }

    #[test]
    fn each_role_acts_only_within_its_reach() {
        let admin = principal(Role::Admin, 0, 0);
        let auditor = principal(Role::Auditor, 0, 0);
        let ana = principal(Role::Customer, 1, 0);
        let ravi = principal(Role::Technician, 0, 2);
        let anas = ticket(1, 2);
        let bos = ticket(3, 4);
        let c = |n| CustomerId::from_uuid(Uuid::from_u128(n));
        assert!(admin.may(Action::Administer, None));
        assert!(!auditor.may(Action::Administer, None) && !auditor.may(Action::TicketWork, anas));
        assert!(
            ana.may(Action::RaiseTicketFor(c(1)), None)
                && !ana.may(Action::RaiseTicketFor(c(3)), None)
        );
        assert!(ana.may(Action::CustomerDecision, anas) && !ana.may(Action::CustomerDecision, bos));
        assert!(!ana.may(Action::AddInternalNote, anas) && !ana.may(Action::TicketWork, anas));
        assert!(ravi.may(Action::TicketWork, anas) && !ravi.may(Action::TicketWork, bos));
        assert!(!ravi.may(Action::Administer, None) && !ravi.may(Action::CustomerDecision, anas));
        assert!(ana.may(Action::ChangePasswordOf(ana.user_id), None));
        assert!(!ana.may(
            Action::ChangePasswordOf(UserId::from_uuid(Uuid::from_u128(7))),
            None
        ));
        assert!(ana.may_read_ticket(anas.unwrap()) && !ana.may_read_ticket(bos.unwrap()));
        assert!(ravi.may_read_ticket(anas.unwrap()) && !ravi.may_read_ticket(bos.unwrap()));
        assert!(
            ravi.may_read_ticket(ticket(3, 0).unwrap()),
            "the unassigned queue"
        );
    }
}
