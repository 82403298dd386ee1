//! How a ticket's state follows its events.

use super::*;

pub(super) fn raised_state(event: &TicketEvent) -> TicketState {
    let TicketEvent::TicketRaised {
        ticket_id,
        number,
        customer_id,
        customer_tier,
        device_id,
        category,
        subject,
        description,
        severity,
        impact,
        priority_score,
        priority_level,
        raised_at,
    } = event.clone()
    else {
        unreachable!("called with TicketRaised only")
    };
    TicketState {
        id: ticket_id,
        number,
        customer_id,
        customer_tier,
        device_id,
        category,
        subject,
        description,
        severity,
        impact,
        priority_score,
        priority_level,
        status: TicketStatus::Open,
        assignee: None,
        notes: 0,
        note_ids: Vec::new(),
        payment_ids: Vec::new(),
        quote: None,
        approved_quote: None,
        parts: Vec::new(),
        final_cost: None,
        repair_summary: None,
        paid: Money::ZERO,
        warranty_claim: None,
        feedback: None,
        resolution: None,
        raised_at,
        assigned_at: None,
        started_at: None,
        completed_at: None,
        resolved_at: None,
        closed_at: None,
        cancelled_at: None,
        reopened_at: None,
    }
}

pub(super) fn evolve_existing(mut s: TicketState, event: &TicketEvent) -> TicketState {
    match event.clone() {
        TicketEvent::TicketRaised { .. } => {}
        TicketEvent::TechnicianAssigned {
            technician_id,
            assigned_at,
            ..
        } => {
            s.assignee = Some(technician_id);
            s.assigned_at = Some(assigned_at);
        }
        TicketEvent::WorkStarted { started_at, .. } => {
            s.status = TicketStatus::InProgress;
            s.started_at = Some(started_at);
        }
        TicketEvent::NoteAdded { note_id, .. } => {
            s.notes += 1;
            s.note_ids.push(note_id);
        }
        TicketEvent::RepairQuoted {
            amount,
            description,
            ..
        } => {
            s.quote = Some(Quote {
                amount,
                description,
                decision: Decision::Pending,
            });
        }
        TicketEvent::QuoteApproved { amount, .. } => {
            s.approved_quote = Some(amount);
            if let Some(q) = s.quote.as_mut() {
                q.decision = Decision::Approved;
            }
        }
        TicketEvent::QuoteRejected { .. } => {
            if let Some(q) = s.quote.as_mut() {
                q.decision = Decision::Rejected;
            }
        }
        TicketEvent::PartUsed {
            part_id,
            quantity,
            unit_cost,
            ..
        } => s.parts.push(PartLine {
            part_id,
            quantity,
            unit_cost,
        }),
        TicketEvent::RepairCompleted {
            final_cost,
            summary,
            completed_at,
        } => {
            s.final_cost = Some(final_cost);
            s.repair_summary = Some(summary);
            s.completed_at = Some(completed_at);
        }
        TicketEvent::TicketResolved {
            resolution,
            resolved_at,
        } => {
            s.status = TicketStatus::Resolved;
            s.resolution = Some(resolution);
            s.resolved_at = Some(resolved_at);
        }
        TicketEvent::TicketClosed { closed_at } => {
            s.status = TicketStatus::Closed;
            s.closed_at = Some(closed_at);
        }
        TicketEvent::TicketCancelled { cancelled_at, .. } => {
            s.status = TicketStatus::Cancelled;
            s.cancelled_at = Some(cancelled_at);
        }
        TicketEvent::TicketReopened { reopened_at, .. } => {
            s.status = TicketStatus::Open;
            s.reopened_at = Some(reopened_at);
        }
        TicketEvent::PaymentRecorded {
            payment_id, amount, ..
        } => {
            s.paid = s.paid.saturating_add(amount);
            s.payment_ids.push(payment_id);
        }
        TicketEvent::WarrantyClaimed {
            device_id, reason, ..
        } => {
            s.warranty_claim = Some(WarrantyClaim {
                device_id,
                decision: Decision::Pending,
                reason,
                covered_limit: None,
            });
        }
        TicketEvent::WarrantyClaimApproved { covered_limit, .. } => {
            if let Some(c) = s.warranty_claim.as_mut() {
                c.decision = Decision::Approved;
                c.covered_limit = covered_limit;
            }
        }
        TicketEvent::WarrantyClaimRejected { reason, .. } => {
            if let Some(c) = s.warranty_claim.as_mut() {
                c.decision = Decision::Rejected;
                c.reason = Some(reason);
            }
        }
        TicketEvent::FeedbackSubmitted {
            rating, comment, ..
        } => s.feedback = Some(Feedback { rating, comment }),
    }
    s
}
