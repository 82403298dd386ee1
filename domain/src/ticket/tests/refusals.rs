//! Every ticket rule refuses with its own code.

use super::*;

#[test]
fn every_ticket_rule_refuses_with_its_code() {
    let valid = device(now().date_naive() + Duration::days(100));
    let expired = device(now().date_naive() - Duration::days(1));
    let other_owner = DeviceFacts {
        customer_id: CustomerId::from_uuid(Uuid::from_u128(8)),
        ..valid
    };
    let TicketCommand::Raise(mut no_customer) = raise() else {
        unreachable!()
    };
    no_customer.customer = None;
    let TicketCommand::Raise(mut unknown_device) = raise_with(Some(valid)) else {
        unreachable!()
    };
    unknown_device.device = None;
    let resolved = with(started(), [resolve()]);
    let closed = with(resolved.clone(), [TicketCommand::Close]);
    let cases: Vec<(&str, Vec<TicketCommand>, TicketCommand, &str)> = vec![
        (
            "raise twice",
            vec![raise()],
            raise(),
            "TICKET_ALREADY_RAISED",
        ),
        (
            "a missing ticket",
            vec![],
            TicketCommand::StartWork,
            "NOT_FOUND",
        ),
        (
            "unknown customer",
            vec![],
            TicketCommand::Raise(no_customer),
            "UNKNOWN_CUSTOMER",
        ),
        (
            "unknown device",
            vec![],
            TicketCommand::Raise(unknown_device),
            "UNKNOWN_DEVICE",
        ),
        (
            "another's device",
            vec![],
            raise_with(Some(other_owner)),
            "DEVICE_NOT_OWNED",
        ),
        (
            "unknown technician",
            vec![raise()],
            TicketCommand::AssignTechnician {
                technician_id: tech(1),
                technician: None,
            },
            "UNKNOWN_TECHNICIAN",
        ),
        (
            "inactive technician",
            vec![raise()],
            assign(1, false),
            "TECHNICIAN_INACTIVE",
        ),
        (
            "same technician",
            vec![raise(), assign(1, true)],
            assign(1, true),
            "ALREADY_ASSIGNED",
        ),
        (
            "start unassigned",
            vec![raise()],
            TicketCommand::StartWork,
            "NOT_ASSIGNED",
        ),
        (
            "close an open ticket",
            vec![raise()],
            TicketCommand::Close,
            "INVALID_TRANSITION",
        ),
        (
            "resolve an open ticket",
            vec![raise()],
            resolve(),
            "INVALID_TRANSITION",
        ),
        (
            "cancel a resolved ticket",
            resolved.clone(),
            TicketCommand::Cancel { reason: text("x") },
            "INVALID_TRANSITION",
        ),
        (
            "reopen an open ticket",
            vec![raise()],
            TicketCommand::Reopen { reason: text("x") },
            "INVALID_TRANSITION",
        ),
        (
            "use parts before work starts",
            vec![raise(), quote(100), TicketCommand::ApproveQuote],
            use_part(1),
            "INVALID_TRANSITION",
        ),
        (
            "change a closed ticket",
            closed.clone(),
            note(),
            "TICKET_CLOSED",
        ),
        (
            "assign a closed ticket",
            closed.clone(),
            assign(2, true),
            "TICKET_CLOSED",
        ),
        (
            "a note id used twice on one ticket",
            vec![raise(), note_with(11)],
            note_with(11),
            "NOTE_ID_TAKEN",
        ),
        (
            "a payment id used twice on one ticket",
            vec![
                raise(),
                quote(100),
                TicketCommand::ApproveQuote,
                pay_with(12, 10),
            ],
            pay_with(12, 10),
            "PAYMENT_ID_TAKEN",
        ),
        (
            "approve without a quote",
            vec![raise()],
            TicketCommand::ApproveQuote,
            "NO_PENDING_QUOTE",
        ),
        (
            "reject a decided quote",
            vec![raise(), quote(100), TicketCommand::ApproveQuote],
            TicketCommand::RejectQuote { reason: None },
            "NO_PENDING_QUOTE",
        ),
        (
            "parts before approval",
            with(started(), [quote(100)]),
            use_part(1),
            "QUOTE_NOT_APPROVED",
        ),
        (
            "billable completion before approval",
            started(),
            complete(100),
            "QUOTE_NOT_APPROVED",
        ),
        (
            "parts after a rejected quote",
            with(
                started(),
                [quote(100), TicketCommand::RejectQuote { reason: None }],
            ),
            use_part(1),
            "QUOTE_NOT_APPROVED",
        ),
        (
            "complete twice",
            with(started(), [complete(0)]),
            complete(0),
            "REPAIR_ALREADY_COMPLETED",
        ),
        (
            "final cost below paid",
            with(
                started(),
                [quote(100), TicketCommand::ApproveQuote, pay(100)],
            ),
            complete(50),
            "AMOUNT_BELOW_PAID",
        ),
        (
            "a revised quote below paid",
            with(
                started(),
                [quote(100), TicketCommand::ApproveQuote, pay(100)],
            ),
            quote(50),
            "AMOUNT_BELOW_PAID",
        ),
        (
            "approving a revised quote below what was paid meanwhile",
            with(
                started(),
                [quote(100), TicketCommand::ApproveQuote, quote(0), pay(1)],
            ),
            TicketCommand::ApproveQuote,
            "AMOUNT_BELOW_PAID",
        ),
        (
            "pay more than the balance",
            with(started(), [quote(100), TicketCommand::ApproveQuote]),
            pay(101),
            "OVERPAYMENT",
        ),
        (
            "pay with nothing billed",
            vec![raise()],
            pay(1),
            "OVERPAYMENT",
        ),
        (
            "close with a balance",
            with(
                started(),
                [
                    quote(100),
                    TicketCommand::ApproveQuote,
                    complete(100),
                    resolve(),
                ],
            ),
            TicketCommand::Close,
            "BALANCE_OUTSTANDING",
        ),
        (
            "claim without a device",
            vec![raise()],
            claim(Some(valid)),
            "NO_DEVICE",
        ),
        (
            "claim on an expired warranty",
            vec![raise_with(Some(expired))],
            claim(Some(expired)),
            "WARRANTY_EXPIRED",
        ),
        (
            "claim twice",
            vec![raise_with(Some(valid)), claim(Some(valid))],
            claim(Some(valid)),
            "WARRANTY_ALREADY_CLAIMED",
        ),
        (
            "approve without a claim",
            vec![raise()],
            TicketCommand::ApproveWarrantyClaim {
                covered_limit: None,
            },
            "NO_PENDING_CLAIM",
        ),
        (
            "feedback before completion",
            started(),
            feedback(5),
            "TICKET_NOT_COMPLETED",
        ),
        (
            "feedback twice",
            with(resolved.clone(), [feedback(4)]),
            feedback(5),
            "FEEDBACK_ALREADY_GIVEN",
        ),
    ];
    for (name, given, when, code) in cases {
        match given_commands::<Ticket>(given).when(when).0 {
            Err(e) => assert_eq!(e.code(), code, "{name}: {e}"),
            Ok(events) => panic!("{name}: accepted with {events:?}"),
        }
    }
}
