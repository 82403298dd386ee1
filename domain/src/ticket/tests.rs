//! Given / when / then tests of the ticket aggregate, with a fixed clock: one per rule, and
//! property tests over random command sequences.

use chrono::{Duration, NaiveDate};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::testing::{given_commands, now};
use crate::{replay, EventPayload};

fn tech(n: u128) -> TechnicianId {
    TechnicianId::from_uuid(Uuid::from_u128(n))
}

fn customer() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(7))
}

fn device(expires_on: NaiveDate) -> DeviceFacts {
    DeviceFacts {
        id: DeviceId::from_uuid(Uuid::from_u128(9)),
        customer_id: customer(),
        warranty_expires_on: expires_on,
    }
}

fn text(s: &str) -> Text {
    Text::parse("text", s, 5000).unwrap()
}

fn money(n: i64) -> Money {
    Money::parse("amount", n).unwrap()
}

fn raise_with(device: Option<DeviceFacts>) -> TicketCommand {
    TicketCommand::Raise(RaiseTicket {
        ticket_id: TicketId::from_uuid(Uuid::from_u128(1)),
        number: TicketNumber::generate(now().date_naive(), 42),
        customer_id: customer(),
        customer: Some(CustomerFacts {
            id: customer(),
            tier: Tier::Paid,
        }),
        device_id: device.map(|d| d.id),
        device,
        category: Category::Repair,
        subject: text("Screen flickers"),
        description: text("Since the update"),
        severity: Severity::Major,
        impact: Impact::parse("impact", 2).unwrap(),
        policy: PriorityPolicy::default(),
    })
}

fn raise() -> TicketCommand {
    raise_with(None)
}

fn assign(n: u128, active: bool) -> TicketCommand {
    TicketCommand::AssignTechnician {
        technician_id: tech(n),
        technician: Some(TechnicianFacts {
            id: tech(n),
            active,
        }),
    }
}

fn resolve() -> TicketCommand {
    TicketCommand::Resolve {
        resolution: text("Replaced the cable"),
    }
}

fn quote(n: i64) -> TicketCommand {
    TicketCommand::QuoteRepair {
        amount: money(n),
        description: text("New screen"),
    }
}

fn pay(n: i64) -> TicketCommand {
    TicketCommand::RecordPayment {
        payment_id: PaymentId::from_uuid(Uuid::new_v4()),
        amount: money(n),
        method: PaymentMethod::Cash,
    }
}

fn complete(n: i64) -> TicketCommand {
    TicketCommand::CompleteRepair {
        final_cost: money(n),
        summary: text("Done"),
    }
}

fn use_part(quantity: u32) -> TicketCommand {
    TicketCommand::UsePart {
        part: PartFacts {
            id: PartId::from_uuid(Uuid::from_u128(5)),
            unit_cost: money(250),
        },
        quantity,
    }
}

fn feedback(rating: i64) -> TicketCommand {
    TicketCommand::SubmitFeedback {
        rating,
        comment: None,
    }
}

fn claim(d: Option<DeviceFacts>) -> TicketCommand {
    TicketCommand::ClaimWarranty {
        device: d,
        reason: None,
    }
}

fn note() -> TicketCommand {
    TicketCommand::AddNote {
        note_id: NoteId::from_uuid(Uuid::new_v4()),
        text: text("Called the customer"),
        visibility: Visibility::Internal,
    }
}

fn note_with(id: u128) -> TicketCommand {
    TicketCommand::AddNote {
        note_id: NoteId::from_uuid(Uuid::from_u128(id)),
        text: text("Called the customer"),
        visibility: Visibility::Public,
    }
}

fn pay_with(id: u128, n: i64) -> TicketCommand {
    TicketCommand::RecordPayment {
        payment_id: PaymentId::from_uuid(Uuid::from_u128(id)),
        amount: money(n),
        method: PaymentMethod::Cash,
    }
}

fn started() -> Vec<TicketCommand> {
    vec![raise(), assign(1, true), TicketCommand::StartWork]
}

fn with(
    mut given: Vec<TicketCommand>,
    more: impl IntoIterator<Item = TicketCommand>,
) -> Vec<TicketCommand> {
    given.extend(more);
    given
}

fn state_after(commands: Vec<TicketCommand>) -> TicketState {
    given_commands::<Ticket>(commands)
        .state()
        .state()
        .cloned()
        .expect("raised")
}

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
        (
            "rating zero",
            resolved.clone(),
            feedback(0),
            "RATING_OUT_OF_RANGE",
        ),
        (
            "rating six",
            resolved.clone(),
            feedback(6),
            "RATING_OUT_OF_RANGE",
        ),
    ];
    for (name, given, when, code) in cases {
        match given_commands::<Ticket>(given).when(when).0 {
            Err(e) => assert_eq!(e.code(), code, "{name}: {e}"),
            Ok(events) => panic!("{name}: accepted with {events:?}"),
        }
    }
}

#[test]
fn raising_records_the_number_priority_and_customer_tier() {
    let events = given_commands::<Ticket>(vec![]).when(raise()).events();
    let [TicketEvent::TicketRaised {
        number,
        customer_tier,
        priority_score,
        priority_level,
        raised_at,
        ..
    }] = &events[..]
    else {
        panic!("unexpected {events:?}")
    };
    assert!(number.as_str().starts_with("TKT-20261121-"));
    assert_eq!(*customer_tier, Tier::Paid);
    assert_eq!(
        (*priority_score, *priority_level),
        (8, PriorityLevel::P2),
        "major 3 + paid 3 + impact 2"
    );
    assert_eq!(*raised_at, now());
}

#[test]
fn reassignment_records_the_previous_technician() {
    let events = given_commands::<Ticket>(vec![raise(), assign(1, true)])
        .when(assign(2, true))
        .events();
    assert_eq!(
        events,
        vec![TicketEvent::TechnicianAssigned {
            technician_id: tech(2),
            previous_technician_id: Some(tech(1)),
            assigned_at: now()
        }]
    );
}

#[test]
fn a_whole_paid_repair_closes_with_a_zero_balance() {
    let s = state_after(with(
        started(),
        [
            quote(1000),
            TicketCommand::ApproveQuote,
            use_part(2),
            complete(1200),
            pay(700),
            pay(500),
            resolve(),
            TicketCommand::Close,
            feedback(5),
        ],
    ));
    assert_eq!(
        (s.status, s.bill(), s.paid, s.balance()),
        (TicketStatus::Closed, money(1200), money(1200), Money::ZERO)
    );
    assert_eq!(s.parts.len(), 1);
    assert_eq!(s.feedback.map(|f| f.rating), Some(5));
    assert!(
        s.started_at.is_some()
            && s.completed_at.is_some()
            && s.resolved_at.is_some()
            && s.closed_at.is_some()
    );
}

#[test]
fn an_approved_warranty_claim_covers_the_cost() {
    let d = device(now().date_naive());
    let s = state_after(vec![
        raise_with(Some(d)),
        assign(1, true),
        TicketCommand::StartWork,
        claim(Some(d)),
        TicketCommand::ApproveWarrantyClaim {
            covered_limit: None,
        },
        use_part(1),
        complete(900),
        resolve(),
        TicketCommand::Close,
    ]);
    assert_eq!(
        (s.bill(), s.covered(), s.balance()),
        (money(900), money(900), Money::ZERO)
    );
}

#[test]
fn a_limited_warranty_claim_leaves_the_rest_to_pay() {
    let d = device(now().date_naive());
    let given = vec![
        raise_with(Some(d)),
        assign(1, true),
        TicketCommand::StartWork,
        quote(1000),
        TicketCommand::ApproveQuote,
        complete(1000),
        claim(Some(d)),
        TicketCommand::ApproveWarrantyClaim {
            covered_limit: Some(money(800)),
        },
    ];
    let s = state_after(with(given.clone(), [pay(200)]));
    assert_eq!((s.covered(), s.balance()), (money(800), Money::ZERO));
    assert_eq!(
        given_commands::<Ticket>(given)
            .when(pay(201))
            .0
            .unwrap_err()
            .code(),
        "OVERPAYMENT"
    );
}

#[test]
fn a_rejected_quote_leaves_nothing_to_pay_and_the_ticket_can_end() {
    let s = state_after(with(
        started(),
        [
            quote(500),
            TicketCommand::RejectQuote {
                reason: Some(text("Too expensive")),
            },
            complete(0),
            resolve(),
            TicketCommand::Close,
        ],
    ));
    assert_eq!((s.status, s.balance()), (TicketStatus::Closed, Money::ZERO));
}

#[test]
fn a_closed_ticket_can_be_reopened() {
    let closed = with(started(), [resolve(), TicketCommand::Close]);
    let s = state_after(with(
        closed,
        [
            TicketCommand::Reopen {
                reason: text("Fault is back"),
            },
            TicketCommand::StartWork,
        ],
    ));
    assert_eq!(s.status, TicketStatus::InProgress);
    assert!(s.reopened_at.is_some());
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let d = device(now().date_naive());
    let commands = vec![
        raise_with(Some(d)),
        assign(1, true),
        note(),
        TicketCommand::StartWork,
        quote(10),
        TicketCommand::ApproveQuote,
        claim(Some(d)),
        TicketCommand::RejectWarrantyClaim {
            reason: text("Physical damage"),
        },
        use_part(1),
        complete(10),
        pay(10),
        resolve(),
        TicketCommand::Close,
        feedback(3),
        TicketCommand::Reopen {
            reason: text("again"),
        },
    ];
    let mut events = Vec::new();
    for c in commands {
        events.extend(replay::<Ticket>(&events).decide(c, now()).unwrap());
    }
    let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).unwrap();
    for event in &events {
        let decoded = TicketEvent::from_stored(
            event.event_type(),
            event.schema_version(),
            &raw(event.to_data()),
        );
        assert_eq!(decoded.unwrap().as_ref(), Some(event));
    }
    assert!(
        TicketEvent::from_stored("CustomerRegistered", 1, &raw(serde_json::json!({})))
            .unwrap()
            .is_none()
    );
    assert!(
        TicketEvent::from_stored("TicketClosed", 1, &raw(serde_json::json!({"x": 1}))).is_err()
    );
    assert!(TicketEvent::from_stored("TicketClosed", 2, &raw(serde_json::json!({}))).is_err());
}

fn any_command() -> impl Strategy<Value = TicketCommand> {
    let d = device(now().date_naive());
    prop_oneof![
        Just(raise_with(Some(d))),
        (1u128..4, any::<bool>()).prop_map(|(n, active)| assign(n, active)),
        Just(TicketCommand::StartWork),
        Just(note()),
        (0i64..2000).prop_map(quote),
        Just(TicketCommand::ApproveQuote),
        Just(TicketCommand::RejectQuote { reason: None }),
        (1u32..4).prop_map(use_part),
        (0i64..2000).prop_map(complete),
        (1i64..2000).prop_map(pay),
        Just(claim(Some(d))),
        proptest::option::of(0i64..2000).prop_map(|limit| TicketCommand::ApproveWarrantyClaim {
            covered_limit: limit.map(money)
        }),
        Just(TicketCommand::RejectWarrantyClaim { reason: text("no") }),
        Just(resolve()),
        Just(TicketCommand::Close),
        Just(TicketCommand::Cancel {
            reason: text("no longer needed")
        }),
        Just(TicketCommand::Reopen {
            reason: text("again")
        }),
        (-1i64..7).prop_map(feedback),
    ]
}

/// The edges of the status machine.
fn allowed(from: Option<TicketStatus>, to: Option<TicketStatus>) -> bool {
    use TicketStatus::*;
    from == to
        || matches!(
            (from, to),
            (None, Some(Open))
                | (Some(Open), Some(InProgress))
                | (Some(InProgress), Some(Resolved))
                | (Some(Resolved), Some(Closed))
                | (Some(Open | InProgress), Some(Cancelled))
                | (Some(Resolved | Closed), Some(Open))
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever commands arrive: statuses move only along the machine's edges, nothing is
    /// ever paid beyond the bill, feedback is given at most once, and the accepted events
    /// replay to the very same state.
    #[test]
    fn invariants_hold_for_any_command_sequence(commands in proptest::collection::vec(any_command(), 0..40)) {
        let mut events = Vec::new();
        let mut state = Ticket::default();
        for command in commands {
            let before = state.state().map(|s| s.status);
            if let Ok(new) = state.decide(command, now()) {
                for e in &new {
                    state = state.evolve(e);
                }
                events.extend(new);
            }
            let after = state.state().map(|s| s.status);
            prop_assert!(allowed(before, after), "{:?} -> {:?}", before, after);
            if let Some(s) = state.state() {
                prop_assert!(s.paid <= s.bill(), "paid {} > bill {}", s.paid, s.bill());
                prop_assert_eq!(s.balance(), s.bill().saturating_sub(s.paid).saturating_sub(s.covered()));
                if s.status == TicketStatus::Closed {
                    prop_assert_eq!(s.balance(), Money::ZERO);
                }
            }
        }
        let feedbacks = events.iter().filter(|e| matches!(e, TicketEvent::FeedbackSubmitted { .. })).count();
        prop_assert!(feedbacks <= 1);
        prop_assert_eq!(replay::<Ticket>(&events), state);
    }
}
