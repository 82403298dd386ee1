//! The repair on a ticket: work started, quoted and decided by the customer, parts used,
//! completed, resolved; warranty claimed and decided.

use domain::access::Action;
use domain::{PartId, TicketCommand, TicketId};
use uuid::Uuid;

use super::fields::{expected, money, optional_text, quantity, text, MAX_LONG_TEXT};
use super::ticket::ticket;
use super::{command, Access};

const TECHNICIAN: Access = Access::Targeted("the assigned technician");
const CUSTOMER: Access = Access::Targeted("the ticket's customer");

command!(
    /// Starts work on an assigned, open ticket.
    StartWork { ticket_id: Uuid }
    summary: "Start work on a ticket",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        ticket(cx, self.ticket_id, TicketCommand::StartWork, self.expected_version).await
    }
);

command!(
    /// Quotes the repair; the customer approves or rejects it before billable work goes on.
    QuoteRepair {
        ticket_id: Uuid,
        /// Integer minor units (cents).
        #[schema(minimum = 0)]
        amount: i64,
        #[schema(min_length = 1, max_length = 5000)]
        description: String,
    }
    summary: "Quote a repair",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        let command = TicketCommand::QuoteRepair {
            amount: money("amount", self.amount)?,
            description: text("description", &self.description, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// The customer approves the pending quote.
    ApproveQuote { ticket_id: Uuid }
    summary: "Approve the quote",
    access: CUSTOMER,
    run(self, cx) {
        cx.ticket_gate(Action::CustomerDecision, self.ticket_id)
            .await?;
        let command = TicketCommand::ApproveQuote;
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// The customer rejects the pending quote.
    RejectQuote {
        ticket_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
    summary: "Reject the quote",
    access: CUSTOMER,
    run(self, cx) {
        cx.ticket_gate(Action::CustomerDecision, self.ticket_id)
            .await?;
        let command = TicketCommand::RejectQuote {
            reason: optional_text("reason", self.reason.as_deref(), MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Uses spare parts from the inventory on a ticket in progress (takes them from stock).
    UsePart {
        ticket_id: Uuid,
        part_id: Uuid,
        #[schema(minimum = 1, maximum = 1000000)]
        quantity: i64,
    }
    summary: "Use spare parts",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        let quantity = quantity("quantity", self.quantity)?;
        cx.service
            .use_part(
                TicketId::from_uuid(self.ticket_id),
                PartId::from_uuid(self.part_id),
                quantity,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Records the repair as done with its final cost (integer minor units).
    CompleteRepair {
        ticket_id: Uuid,
        #[schema(minimum = 0)]
        final_cost: i64,
        #[schema(min_length = 1, max_length = 5000)]
        summary: String,
    }
    summary: "Complete the repair",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        let command = TicketCommand::CompleteRepair {
            final_cost: money("finalCost", self.final_cost)?,
            summary: text("summary", &self.summary, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Resolves a ticket in progress.
    ResolveTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000, example = "Replaced the charging port")]
        resolution: String,
    }
    summary: "Resolve a ticket",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        let command = TicketCommand::Resolve {
            resolution: text("resolution", &self.resolution, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Claims warranty for the ticket's device: possible when the warranty was active on the day
    /// the ticket was raised.
    ClaimWarranty {
        ticket_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
    summary: "Claim warranty",
    access: TECHNICIAN,
    run(self, cx) {
        cx.ticket_gate(Action::TicketWork, self.ticket_id).await?;
        let reason = optional_text("reason", self.reason.as_deref(), MAX_LONG_TEXT)?;
        cx.service
            .claim_warranty(
                TicketId::from_uuid(self.ticket_id),
                reason,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Approves the pending warranty claim: the warranty covers what is unpaid of the bill, or
    /// at most `coveredAmount` (integer minor units) when given.
    ApproveWarrantyClaim {
        ticket_id: Uuid,
        #[schema(minimum = 0)]
        covered_amount: Option<i64>,
    }
    summary: "Approve the warranty claim",
    access: Access::Admins,
    run(self, cx) {
        let command = TicketCommand::ApproveWarrantyClaim {
            covered_limit: self
                .covered_amount
                .map(|m| money("coveredAmount", m))
                .transpose()?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Rejects the pending warranty claim, with the reason.
    RejectWarrantyClaim {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
    summary: "Reject the warranty claim",
    access: Access::Admins,
    run(self, cx) {
        let command = TicketCommand::RejectWarrantyClaim {
            reason: text("reason", &self.reason, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);
