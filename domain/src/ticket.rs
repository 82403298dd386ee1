use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;
use crate::{
    Aggregate, Category, CustomerId, DomainError, Impact, Severity, TechnicianId, Text, TicketId,
    TicketNumber, Tier,
};

/// Facts about the ticket's customer, looked up by the caller before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerFacts {
    pub id: CustomerId,
    pub tier: Tier,
}

/// Facts about a technician, looked up by the caller before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TechnicianFacts {
    pub id: TechnicianId,
    pub active: bool,
}

#[derive(Debug, Clone)]
pub struct RaiseTicket {
    pub ticket_id: TicketId,
    pub number: TicketNumber,
    pub customer_id: CustomerId,
    /// `None` when no such customer is registered.
    pub customer: Option<CustomerFacts>,
    pub category: Category,
    pub subject: Text,
    pub description: Text,
    pub severity: Severity,
    pub impact: Impact,
}

#[derive(Debug, Clone)]
pub enum TicketCommand {
    Raise(RaiseTicket),
    /// Assigns, or reassigns when the ticket already has a technician.
    AssignTechnician {
        technician_id: TechnicianId,
        /// `None` when no such technician was onboarded.
        technician: Option<TechnicianFacts>,
    },
    StartWork,
    Resolve {
        resolution: Text,
    },
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
    Cancelled,
}

impl fmt::Display for TicketStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum TicketEvent {
    TicketRaised {
        ticket_id: TicketId,
        number: TicketNumber,
        customer_id: CustomerId,
        /// The customer's tier when the ticket was raised: the priority engine's input.
        customer_tier: Tier,
        category: Category,
        subject: Text,
        description: Text,
        severity: Severity,
        impact: Impact,
        raised_at: DateTime<Utc>,
    },
    TechnicianAssigned {
        technician_id: TechnicianId,
        previous_technician_id: Option<TechnicianId>,
        assigned_at: DateTime<Utc>,
    },
    WorkStarted {
        technician_id: TechnicianId,
        started_at: DateTime<Utc>,
    },
    TicketResolved {
        resolution: Text,
        resolved_at: DateTime<Utc>,
    },
    TicketClosed {
        closed_at: DateTime<Utc>,
    },
}
event_payload!(TicketEvent {
    TicketRaised,
    TechnicianAssigned,
    WorkStarted,
    TicketResolved,
    TicketClosed,
});

/// A ticket. `None` until raised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ticket(Option<TicketState>);

/// Everything the ticket's events say, as of its last event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketState {
    pub id: TicketId,
    pub number: TicketNumber,
    pub customer_id: CustomerId,
    pub customer_tier: Tier,
    pub category: Category,
    pub subject: Text,
    pub description: Text,
    pub severity: Severity,
    pub impact: Impact,
    pub status: TicketStatus,
    pub assignee: Option<TechnicianId>,
    pub resolution: Option<Text>,
    pub raised_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Ticket {
    pub fn state(&self) -> Option<&TicketState> {
        self.0.as_ref()
    }
}

fn transition(from: TicketStatus, action: &'static str) -> DomainError {
    DomainError::InvalidTransition { from, action }
}

impl Aggregate for Ticket {
    type Command = TicketCommand;
    type Event = TicketEvent;
    const STREAM_PREFIX: &'static str = "ticket";

    fn decide(
        &self,
        command: TicketCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<TicketEvent>, DomainError> {
        let raise = match (command, &self.0) {
            (TicketCommand::Raise(_), Some(_)) => return Err(DomainError::TicketAlreadyRaised),
            (TicketCommand::Raise(raise), None) => raise,
            (_, None) => return Err(DomainError::NotFound { kind: "ticket" }),
            (command, Some(state)) => return decide_existing(state, command, now),
        };
        let customer = raise.customer.ok_or(DomainError::UnknownCustomer)?;
        if customer.id != raise.customer_id {
            return Err(DomainError::UnknownCustomer);
        }
        Ok(vec![TicketEvent::TicketRaised {
            ticket_id: raise.ticket_id,
            number: raise.number,
            customer_id: customer.id,
            customer_tier: customer.tier,
            category: raise.category,
            subject: raise.subject,
            description: raise.description,
            severity: raise.severity,
            impact: raise.impact,
            raised_at: now,
        }])
    }

    fn evolve(self, event: &TicketEvent) -> Self {
        let TicketEvent::TicketRaised {
            ticket_id,
            number,
            customer_id,
            customer_tier,
            category,
            subject,
            description,
            severity,
            impact,
            raised_at,
        } = event
        else {
            return Ticket(self.0.map(|s| evolve_existing(s, event)));
        };
        Ticket(Some(TicketState {
            id: *ticket_id,
            number: number.clone(),
            customer_id: *customer_id,
            customer_tier: *customer_tier,
            category: *category,
            subject: subject.clone(),
            description: description.clone(),
            severity: *severity,
            impact: *impact,
            status: TicketStatus::Open,
            assignee: None,
            resolution: None,
            raised_at: *raised_at,
            assigned_at: None,
            started_at: None,
            resolved_at: None,
            closed_at: None,
        }))
    }
}

fn decide_existing(
    state: &TicketState,
    command: TicketCommand,
    now: DateTime<Utc>,
) -> Result<Vec<TicketEvent>, DomainError> {
    use TicketStatus::*;
    if state.status == Closed {
        return Err(DomainError::TicketClosed);
    }
    match command {
        TicketCommand::Raise(_) => Err(DomainError::TicketAlreadyRaised),
        TicketCommand::AssignTechnician {
            technician_id,
            technician,
        } => {
            if !matches!(state.status, Open | InProgress) {
                return Err(transition(state.status, "assign"));
            }
            let technician = technician
                .filter(|t| t.id == technician_id)
                .ok_or(DomainError::UnknownTechnician)?;
            if !technician.active {
                return Err(DomainError::TechnicianInactive);
            }
            if state.assignee == Some(technician_id) {
                return Err(DomainError::AlreadyAssigned);
            }
            Ok(vec![TicketEvent::TechnicianAssigned {
                technician_id,
                previous_technician_id: state.assignee,
                assigned_at: now,
            }])
        }
        TicketCommand::StartWork => {
            if state.status != Open {
                return Err(transition(state.status, "start work on"));
            }
            let technician_id = state.assignee.ok_or(DomainError::NotAssigned)?;
            Ok(vec![TicketEvent::WorkStarted {
                technician_id,
                started_at: now,
            }])
        }
        TicketCommand::Resolve { resolution } => {
            if state.status != InProgress {
                return Err(transition(state.status, "resolve"));
            }
            Ok(vec![TicketEvent::TicketResolved {
                resolution,
                resolved_at: now,
            }])
        }
        TicketCommand::Close => {
            if state.status != Resolved {
                return Err(transition(state.status, "close"));
            }
            Ok(vec![TicketEvent::TicketClosed { closed_at: now }])
        }
    }
}

fn evolve_existing(mut s: TicketState, event: &TicketEvent) -> TicketState {
    match event {
        TicketEvent::TicketRaised { .. } => {}
        TicketEvent::TechnicianAssigned {
            technician_id,
            assigned_at,
            ..
        } => {
            s.assignee = Some(*technician_id);
            s.assigned_at = Some(*assigned_at);
        }
        TicketEvent::WorkStarted { started_at, .. } => {
            s.status = TicketStatus::InProgress;
            s.started_at = Some(*started_at);
        }
        TicketEvent::TicketResolved {
            resolution,
            resolved_at,
        } => {
            s.status = TicketStatus::Resolved;
            s.resolution = Some(resolution.clone());
            s.resolved_at = Some(*resolved_at);
        }
        TicketEvent::TicketClosed { closed_at } => {
            s.status = TicketStatus::Closed;
            s.closed_at = Some(*closed_at);
        }
    }
    s
}

#[cfg(test)]
mod tests;
