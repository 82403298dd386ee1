//! Tickets at the desk: raised, assigned, noted, paid, rated, closed, cancelled, reopened.
//! The repair itself is in `repair.rs`.

use domain::access::Action;
use domain::{
    CustomerId, DeviceId, Impact, NoteId, PaymentId, TechnicianId, Ticket, TicketCommand, TicketId,
};
use stream_store::AppendOutcome;
use uuid::Uuid;

use super::fields::{
    expected, new_id, optional_text, positive_money, text, MAX_LONG_TEXT, MAX_SUBJECT,
};
use super::{command, Access, Context};
use crate::dto::{Category, PaymentMethod, Severity, Visibility};
use crate::ApiError;

/// Sends `command` to the ticket `id`.
pub(super) async fn ticket(
    cx: &Context<'_>,
    id: Uuid,
    command: TicketCommand,
    expected_version: Option<i64>,
) -> Result<AppendOutcome, ApiError> {
    cx.service
        .send::<Ticket>(id, command, expected(expected_version)?, cx.meta)
        .await
}

command!(
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
    summary: "Raise a ticket",
    access: Access::Targeted("the customer, for themselves"),
    run(self, cx) {
        let customer_id = CustomerId::from_uuid(self.customer_id);
        cx.allow(
            Action::RaiseTicketFor(customer_id),
            None,
            "raise a ticket for this customer",
        )?;
        // An id drawn here names no stream yet, so there is nothing to read before deciding.
        let drawn_id = self.ticket_id.is_none();
        let ticket_id = TicketId::from_uuid(new_id(self.ticket_id));
        let device_id = self.device_id.map(DeviceId::from_uuid);
        let subject = text("subject", &self.subject, MAX_SUBJECT)?;
        let description = text("description", &self.description, MAX_LONG_TEXT)?;
        let impact = Impact::parse("impact", self.impact)?;
        let (category, severity) = (self.category.into(), self.severity.into());
        let build = |number, customer, device, policy| domain::RaiseTicket {
            ticket_id,
            number,
            customer_id,
            customer,
            device_id,
            device,
            category,
            subject: subject.clone(),
            description: description.clone(),
            severity,
            impact,
            policy,
        };
        cx.service
            .raise_ticket(
                (ticket_id, drawn_id),
                build,
                customer_id,
                device_id,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Assigns the ticket to an active technician, or reassigns it.
    AssignTechnician { ticket_id: Uuid, technician_id: Uuid }
    summary: "Assign or reassign a ticket",
    access: Access::Admins,
    run(self, cx) {
        let technician_id = TechnicianId::from_uuid(self.technician_id);
        let command = TicketCommand::AssignTechnician {
            technician_id,
            technician: cx.service.technician_facts(technician_id).await?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Adds a note: `public` (the customer sees it) or `internal` (staff only; the default is public).
    AddNote {
        ticket_id: Uuid,
        note_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 5000)]
        text: String,
        visibility: Option<Visibility>,
    }
    summary: "Add a public or internal note",
    access: Access::Targeted("the assigned technician; the ticket's customer (public notes)"),
    run(self, cx) {
        let internal = matches!(self.visibility, Some(Visibility::Internal));
        let action = if internal {
            Action::AddInternalNote
        } else {
            Action::AddPublicNote
        };
        cx.ticket_gate(action, self.ticket_id).await?;
        let command = TicketCommand::AddNote {
            note_id: NoteId::from_uuid(new_id(self.note_id)),
            text: text("text", &self.text, MAX_LONG_TEXT)?,
            visibility: self
                .visibility
                .map_or(domain::Visibility::Public, Into::into),
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Closes a resolved ticket whose balance is settled.
    CloseTicket { ticket_id: Uuid }
    summary: "Close a resolved ticket",
    access: Access::Admins,
    run(self, cx) {
        ticket(cx, self.ticket_id, TicketCommand::Close, self.expected_version).await
    }
);

command!(
    /// Cancels an open or in-progress ticket.
    CancelTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
    summary: "Cancel a ticket",
    access: Access::Admins,
    run(self, cx) {
        let command = TicketCommand::Cancel {
            reason: text("reason", &self.reason, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Reopens a resolved or closed ticket.
    ReopenTicket {
        ticket_id: Uuid,
        #[schema(min_length = 1, max_length = 5000)]
        reason: String,
    }
    summary: "Reopen a ticket",
    access: Access::Admins,
    run(self, cx) {
        let command = TicketCommand::Reopen {
            reason: text("reason", &self.reason, MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// Records a payment (integer minor units, never more than the balance).
    RecordPayment {
        ticket_id: Uuid,
        payment_id: Option<Uuid>,
        #[schema(minimum = 1)]
        amount: i64,
        method: PaymentMethod,
    }
    summary: "Record a payment",
    access: Access::Admins,
    run(self, cx) {
        let command = TicketCommand::RecordPayment {
            payment_id: PaymentId::from_uuid(new_id(self.payment_id)),
            amount: positive_money("amount", self.amount)?,
            method: self.method.into(),
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);

command!(
    /// The customer's rating (1 to 5 stars) and comment, once, after completion.
    SubmitFeedback {
        ticket_id: Uuid,
        rating: i64,
        #[schema(max_length = 5000)]
        comment: Option<String>,
    }
    summary: "Give feedback",
    access: Access::Targeted("the ticket's customer"),
    run(self, cx) {
        cx.ticket_gate(Action::CustomerDecision, self.ticket_id)
            .await?;
        let command = TicketCommand::SubmitFeedback {
            rating: domain::Rating::parse(self.rating)?,
            comment: optional_text("comment", self.comment.as_deref(), MAX_LONG_TEXT)?,
        };
        ticket(cx, self.ticket_id, command, self.expected_version).await
    }
);
