//! What a ticket decides: the events a command makes on a ticket, or why it is refused.

use super::*;

pub(super) fn decide_raise(
    raise: RaiseTicket,
    now: DateTime<Utc>,
) -> Result<Vec<TicketEvent>, DomainError> {
    let customer = raise
        .customer
        .filter(|c| c.id == raise.customer_id)
        .ok_or(DomainError::UnknownCustomer)?;
    if let Some(device_id) = raise.device_id {
        let device = raise
            .device
            .filter(|d| d.id == device_id)
            .ok_or(DomainError::UnknownDevice)?;
        if device.customer_id != customer.id {
            return Err(DomainError::DeviceNotOwned);
        }
    }
    let priority_score = raise
        .policy
        .base_score(raise.severity, customer.tier, raise.impact);
    Ok(vec![TicketEvent::TicketRaised {
        ticket_id: raise.ticket_id,
        number: raise.number,
        customer_id: customer.id,
        customer_tier: customer.tier,
        device_id: raise.device_id,
        category: raise.category,
        subject: raise.subject,
        description: raise.description,
        severity: raise.severity,
        impact: raise.impact,
        priority_score,
        priority_level: raise.policy.level(priority_score),
        raised_at: now,
    }])
}

pub(super) fn decide_existing(
    state: &TicketState,
    command: TicketCommand,
    now: DateTime<Utc>,
) -> Result<TicketEvent, DomainError> {
    use TicketStatus::*;
    let action = command.name();
    let refuse = || DomainError::InvalidTransition {
        from: state.status.label(),
        action,
    };
    // A closed ticket only takes a reopening or the customer's feedback.
    if state.status == Closed
        && !matches!(
            command,
            TicketCommand::Reopen { .. } | TicketCommand::SubmitFeedback { .. }
        )
    {
        return Err(DomainError::TicketClosed);
    }
    let active = matches!(state.status, Open | InProgress);
    match command {
        TicketCommand::Raise(_) => Err(DomainError::TicketAlreadyRaised),
        TicketCommand::AssignTechnician {
            technician_id,
            technician,
        } => {
            if !active {
                return Err(refuse());
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
            Ok(TicketEvent::TechnicianAssigned {
                technician_id,
                previous_technician_id: state.assignee,
                assigned_at: now,
            })
        }
        TicketCommand::StartWork => {
            if state.status != Open {
                return Err(refuse());
            }
            let technician_id = state.assignee.ok_or(DomainError::NotAssigned)?;
            Ok(TicketEvent::WorkStarted {
                technician_id,
                started_at: now,
            })
        }
        TicketCommand::AddNote {
            note_id,
            text,
            visibility,
        } => {
            if state.status == Cancelled {
                return Err(refuse());
            }
            if state.note_ids.contains(&note_id) {
                return Err(DomainError::NoteIdTaken);
            }
            Ok(TicketEvent::NoteAdded {
                note_id,
                text,
                visibility,
                added_at: now,
            })
        }
        TicketCommand::QuoteRepair {
            amount,
            description,
        } => {
            if !active {
                return Err(refuse());
            }
            if state.final_cost.is_some() {
                return Err(DomainError::RepairAlreadyCompleted);
            }
            if amount < state.paid {
                return Err(DomainError::AmountBelowPaid {
                    paid: state.paid.to_string(),
                });
            }
            Ok(TicketEvent::RepairQuoted {
                amount,
                description,
                quoted_at: now,
            })
        }
        TicketCommand::ApproveQuote | TicketCommand::RejectQuote { .. } if !active => Err(refuse()),
        TicketCommand::ApproveQuote => match &state.quote {
            // A revision quoted before a payment must not make the bill less than what is paid.
            Some(q) if q.decision == Decision::Pending && q.amount < state.paid => {
                Err(DomainError::AmountBelowPaid {
                    paid: state.paid.to_string(),
                })
            }
            Some(q) if q.decision == Decision::Pending => Ok(TicketEvent::QuoteApproved {
                amount: q.amount,
                approved_at: now,
            }),
            _ => Err(DomainError::NoPendingQuote),
        },
        TicketCommand::RejectQuote { reason } => match &state.quote {
            Some(q) if q.decision == Decision::Pending => Ok(TicketEvent::QuoteRejected {
                reason,
                rejected_at: now,
            }),
            _ => Err(DomainError::NoPendingQuote),
        },
        TicketCommand::UsePart { part, quantity } => {
            if state.status != InProgress {
                return Err(refuse());
            }
            if state.final_cost.is_some() {
                return Err(DomainError::RepairAlreadyCompleted);
            }
            if !state.billable_work_allowed() {
                return Err(DomainError::QuoteNotApproved);
            }
            Ok(TicketEvent::PartUsed {
                part_id: part.id,
                quantity: quantity.get(),
                unit_cost: part.unit_cost,
                used_at: now,
            })
        }
        TicketCommand::CompleteRepair {
            final_cost,
            summary,
        } => {
            if state.status != InProgress {
                return Err(refuse());
            }
            if state.final_cost.is_some() {
                return Err(DomainError::RepairAlreadyCompleted);
            }
            if final_cost > Money::ZERO && !state.billable_work_allowed() {
                return Err(DomainError::QuoteNotApproved);
            }
            if final_cost < state.paid {
                return Err(DomainError::AmountBelowPaid {
                    paid: state.paid.to_string(),
                });
            }
            Ok(TicketEvent::RepairCompleted {
                final_cost,
                summary,
                completed_at: now,
            })
        }
        TicketCommand::Resolve { resolution } => {
            if state.status != InProgress {
                return Err(refuse());
            }
            Ok(TicketEvent::TicketResolved {
                resolution,
                resolved_at: now,
            })
        }
        TicketCommand::Close => {
            if state.status != Resolved {
                return Err(refuse());
            }
            let balance = state.balance();
            if balance > Money::ZERO {
                return Err(DomainError::BalanceOutstanding {
                    balance: balance.to_string(),
                });
            }
            Ok(TicketEvent::TicketClosed { closed_at: now })
        }
        TicketCommand::Cancel { reason } => {
            if !active {
                return Err(refuse());
            }
            Ok(TicketEvent::TicketCancelled {
                reason,
                cancelled_at: now,
            })
        }
        TicketCommand::Reopen { reason } => {
            if !matches!(state.status, Resolved | Closed) {
                return Err(refuse());
            }
            Ok(TicketEvent::TicketReopened {
                reason,
                reopened_at: now,
            })
        }
        TicketCommand::RecordPayment {
            payment_id,
            amount,
            method,
        } => {
            if !matches!(state.status, Open | InProgress | Resolved) {
                return Err(refuse());
            }
            if state.payment_ids.contains(&payment_id) {
                return Err(DomainError::PaymentIdTaken);
            }
            let amount = amount.get();
            let balance = state.balance();
            if amount > balance {
                return Err(DomainError::Overpayment {
                    balance: balance.to_string(),
                });
            }
            Ok(TicketEvent::PaymentRecorded {
                payment_id,
                amount,
                method,
                paid_at: now,
            })
        }
        TicketCommand::ClaimWarranty { device, reason } => {
            if !matches!(state.status, Open | InProgress | Resolved) {
                return Err(refuse());
            }
            let device_id = state.device_id.ok_or(DomainError::NoDevice)?;
            if state.warranty_claim.is_some() {
                return Err(DomainError::WarrantyAlreadyClaimed);
            }
            let device = device
                .filter(|d| d.id == device_id)
                .ok_or(DomainError::UnknownDevice)?;
            if state.raised_at.date_naive() > device.warranty_expires_on {
                return Err(DomainError::WarrantyExpired);
            }
            Ok(TicketEvent::WarrantyClaimed {
                device_id,
                reason,
                claimed_at: now,
            })
        }
        TicketCommand::ApproveWarrantyClaim { .. } | TicketCommand::RejectWarrantyClaim { .. }
            if !state
                .warranty_claim
                .as_ref()
                .is_some_and(|c| c.decision == Decision::Pending) =>
        {
            Err(DomainError::NoPendingClaim)
        }
        TicketCommand::ApproveWarrantyClaim { covered_limit } => {
            Ok(TicketEvent::WarrantyClaimApproved {
                covered_limit,
                approved_at: now,
            })
        }
        TicketCommand::RejectWarrantyClaim { reason } => Ok(TicketEvent::WarrantyClaimRejected {
            reason,
            rejected_at: now,
        }),
        TicketCommand::SubmitFeedback { rating, comment } => {
            if !matches!(state.status, Resolved | Closed) {
                return Err(DomainError::TicketNotCompleted);
            }
            if state.feedback.is_some() {
                return Err(DomainError::FeedbackAlreadyGiven);
            }
            Ok(TicketEvent::FeedbackSubmitted {
                rating: rating.get(),
                comment,
                submitted_at: now,
            })
        }
    }
}
