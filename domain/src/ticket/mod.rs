use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

mod decide;
mod evolve;

use decide::{decide_existing, decide_raise};
use evolve::{evolve_existing, raised_state};

use crate::event::event_payload;
use crate::priority::{PriorityLevel, PriorityPolicy};
use crate::{
    Aggregate, Category, CustomerId, DeviceId, DomainError, Impact, Money, NoteId, PartId,
    PaymentId, PaymentMethod, Positive, Quantity, Rating, Severity, TechnicianId, Text, TicketId,
    TicketNumber, Tier, Visibility,
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

/// Facts about a device, looked up by the caller before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    pub id: DeviceId,
    pub customer_id: CustomerId,
    /// Last day the warranty covers.
    pub warranty_expires_on: NaiveDate,
}

/// Facts about a spare part whose stock was already taken for this ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartFacts {
    pub id: PartId,
    pub unit_cost: Money,
}

#[derive(Debug, Clone)]
pub struct RaiseTicket {
    pub ticket_id: TicketId,
    pub number: TicketNumber,
    pub customer_id: CustomerId,
    /// `None` when no such customer is registered.
    pub customer: Option<CustomerFacts>,
    pub device_id: Option<DeviceId>,
    /// `None` when `device_id` is absent or names no registered device.
    pub device: Option<DeviceFacts>,
    pub category: Category,
    pub subject: Text,
    pub description: Text,
    pub severity: Severity,
    pub impact: Impact,
    pub policy: PriorityPolicy,
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
    AddNote {
        note_id: NoteId,
        text: Text,
        visibility: Visibility,
    },
    QuoteRepair {
        amount: Money,
        description: Text,
    },
    ApproveQuote,
    RejectQuote {
        reason: Option<Text>,
    },
    UsePart {
        part: PartFacts,
        quantity: Quantity,
    },
    CompleteRepair {
        final_cost: Money,
        summary: Text,
    },
    Resolve {
        resolution: Text,
    },
    Close,
    Cancel {
        reason: Text,
    },
    Reopen {
        reason: Text,
    },
    RecordPayment {
        payment_id: PaymentId,
        amount: Positive,
        method: PaymentMethod,
    },
    ClaimWarranty {
        /// The ticket's device as it is now; `None` when the ticket has none.
        device: Option<DeviceFacts>,
        reason: Option<Text>,
    },
    /// Approves the pending claim. The warranty covers what is unpaid of the bill, up to
    /// `covered_limit` when given (charges the warranty does not cover stay billable).
    ApproveWarrantyClaim {
        covered_limit: Option<Money>,
    },
    RejectWarrantyClaim {
        reason: Text,
    },
    SubmitFeedback {
        rating: Rating,
        comment: Option<Text>,
    },
}

impl TicketCommand {
    /// What the command does, as words for an error message.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Raise(_) => "raise",
            Self::AssignTechnician { .. } => "assign",
            Self::StartWork => "start work on",
            Self::AddNote { .. } => "add a note to",
            Self::QuoteRepair { .. } => "quote",
            Self::ApproveQuote => "approve the quote of",
            Self::RejectQuote { .. } => "reject the quote of",
            Self::UsePart { .. } => "use parts on",
            Self::CompleteRepair { .. } => "complete the repair of",
            Self::Resolve { .. } => "resolve",
            Self::Close => "close",
            Self::Cancel { .. } => "cancel",
            Self::Reopen { .. } => "reopen",
            Self::RecordPayment { .. } => "take a payment for",
            Self::ClaimWarranty { .. } => "claim warranty for",
            Self::ApproveWarrantyClaim { .. } => "approve the warranty claim of",
            Self::RejectWarrantyClaim { .. } => "reject the warranty claim of",
            Self::SubmitFeedback { .. } => "give feedback on",
        }
    }
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

impl TicketStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TicketStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Pending,
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum TicketEvent {
    TicketRaised {
        ticket_id: TicketId,
        number: TicketNumber,
        customer_id: CustomerId,
        /// The customer's tier when the ticket was raised: the priority engine's input.
        customer_tier: Tier,
        #[serde(default)]
        device_id: Option<DeviceId>,
        category: Category,
        subject: Text,
        description: Text,
        severity: Severity,
        impact: Impact,
        /// The priority engine's assessment at raise time (it ages up later).
        #[serde(default)]
        priority_score: u32,
        #[serde(default = "default_level")]
        priority_level: PriorityLevel,
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
    NoteAdded {
        note_id: NoteId,
        text: Text,
        visibility: Visibility,
        added_at: DateTime<Utc>,
    },
    RepairQuoted {
        amount: Money,
        description: Text,
        quoted_at: DateTime<Utc>,
    },
    QuoteApproved {
        amount: Money,
        approved_at: DateTime<Utc>,
    },
    QuoteRejected {
        reason: Option<Text>,
        rejected_at: DateTime<Utc>,
    },
    PartUsed {
        part_id: PartId,
        quantity: u32,
        unit_cost: Money,
        used_at: DateTime<Utc>,
    },
    RepairCompleted {
        final_cost: Money,
        summary: Text,
        completed_at: DateTime<Utc>,
    },
    TicketResolved {
        resolution: Text,
        resolved_at: DateTime<Utc>,
    },
    TicketClosed {
        closed_at: DateTime<Utc>,
    },
    TicketCancelled {
        reason: Text,
        cancelled_at: DateTime<Utc>,
    },
    TicketReopened {
        reason: Text,
        reopened_at: DateTime<Utc>,
    },
    PaymentRecorded {
        payment_id: PaymentId,
        amount: Money,
        method: PaymentMethod,
        paid_at: DateTime<Utc>,
    },
    WarrantyClaimed {
        device_id: DeviceId,
        reason: Option<Text>,
        claimed_at: DateTime<Utc>,
    },
    WarrantyClaimApproved {
        /// `None`: the warranty covers everything unpaid.
        #[serde(default)]
        covered_limit: Option<Money>,
        approved_at: DateTime<Utc>,
    },
    WarrantyClaimRejected {
        reason: Text,
        rejected_at: DateTime<Utc>,
    },
    FeedbackSubmitted {
        rating: u8,
        comment: Option<Text>,
        submitted_at: DateTime<Utc>,
    },
}
event_payload!(TicketEvent {
    TicketRaised,
    TechnicianAssigned,
    WorkStarted,
    NoteAdded,
    RepairQuoted,
    QuoteApproved,
    QuoteRejected,
    PartUsed,
    RepairCompleted,
    TicketResolved,
    TicketClosed,
    TicketCancelled,
    TicketReopened,
    PaymentRecorded,
    WarrantyClaimed,
    WarrantyClaimApproved,
    WarrantyClaimRejected,
    FeedbackSubmitted,
});

fn default_level() -> PriorityLevel {
    PriorityLevel::P3
}

/// A ticket. `None` until raised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ticket(Option<TicketState>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub amount: Money,
    pub description: Text,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartLine {
    pub part_id: PartId,
    pub quantity: u32,
    pub unit_cost: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarrantyClaim {
    pub device_id: DeviceId,
    pub decision: Decision,
    pub reason: Option<Text>,
    pub covered_limit: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    pub rating: u8,
    pub comment: Option<Text>,
}

/// Everything the ticket's events say, as of its last event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketState {
    pub id: TicketId,
    pub number: TicketNumber,
    pub customer_id: CustomerId,
    pub customer_tier: Tier,
    pub device_id: Option<DeviceId>,
    pub category: Category,
    pub subject: Text,
    pub description: Text,
    pub severity: Severity,
    pub impact: Impact,
    pub priority_score: u32,
    pub priority_level: PriorityLevel,
    pub status: TicketStatus,
    pub assignee: Option<TechnicianId>,
    pub notes: u32,
    /// The ids of the ticket's notes and payments: each names one child of this ticket only.
    #[serde(default)]
    pub note_ids: Vec<NoteId>,
    #[serde(default)]
    pub payment_ids: Vec<PaymentId>,
    /// The latest quote, whatever its decision.
    pub quote: Option<Quote>,
    /// The amount of the latest approved quote: it stays the bill while a revision is pending.
    pub approved_quote: Option<Money>,
    pub parts: Vec<PartLine>,
    pub final_cost: Option<Money>,
    pub repair_summary: Option<Text>,
    pub paid: Money,
    pub warranty_claim: Option<WarrantyClaim>,
    pub feedback: Option<Feedback>,
    pub resolution: Option<Text>,
    pub raised_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub reopened_at: Option<DateTime<Utc>>,
}

impl TicketState {
    /// What the customer is billed: the final cost once the repair is complete, else the
    /// latest approved quote, else nothing.
    pub fn bill(&self) -> Money {
        self.final_cost
            .or(self.approved_quote)
            .unwrap_or(Money::ZERO)
    }

    /// The part of the bill an approved warranty claim covers: what was not yet paid, up to
    /// the claim's limit.
    pub fn covered(&self) -> Money {
        match &self.warranty_claim {
            Some(c) if c.decision == Decision::Approved => {
                let unpaid = self.bill().saturating_sub(self.paid);
                c.covered_limit.map_or(unpaid, |limit| limit.min(unpaid))
            }
            _ => Money::ZERO,
        }
    }

    /// What is still owed; never negative.
    pub fn balance(&self) -> Money {
        self.bill()
            .saturating_sub(self.paid)
            .saturating_sub(self.covered())
    }

    /// Billable work may go on once the customer approved a quote or the warranty covers it.
    pub fn billable_work_allowed(&self) -> bool {
        let quote_ok = self.approved_quote.is_some();
        let claim_ok = self
            .warranty_claim
            .as_ref()
            .is_some_and(|c| c.decision == Decision::Approved);
        quote_ok || claim_ok
    }
}

impl Ticket {
    pub fn state(&self) -> Option<&TicketState> {
        self.0.as_ref()
    }

    /// The ticket whose events so far produced `state` (read models keep it to evolve it).
    pub fn from_state(state: TicketState) -> Self {
        Ticket(Some(state))
    }
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
        match (command, &self.0) {
            (TicketCommand::Raise(_), Some(_)) => Err(DomainError::TicketAlreadyRaised),
            (TicketCommand::Raise(raise), None) => decide_raise(raise, now),
            (_, None) => Err(DomainError::NotFound { kind: "ticket" }),
            (command, Some(state)) => decide_existing(state, command, now).map(|e| vec![e]),
        }
    }

    fn evolve(self, event: &TicketEvent) -> Self {
        match (event, self.0) {
            (raised @ TicketEvent::TicketRaised { .. }, _) => Ticket(Some(raised_state(raised))),
            (event, state) => Ticket(state.map(|s| evolve_existing(s, event))),
        }
    }
}

#[cfg(test)]
mod tests;
