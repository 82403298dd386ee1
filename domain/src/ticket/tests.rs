//! Given / when / then tests of the ticket aggregate, with a fixed clock: one per rule, and
//! property tests over random command sequences.

use chrono::{Duration, NaiveDate};
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
        amount: Money::parse_positive("amount", n).unwrap(),
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
        quantity: crate::Quantity::parse("quantity", i64::from(quantity)).unwrap(),
    }
}

fn feedback(rating: i64) -> TicketCommand {
    TicketCommand::SubmitFeedback {
        rating: crate::Rating::parse(rating).unwrap(),
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
        amount: Money::parse_positive("amount", n).unwrap(),
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

mod properties;
mod refusals;
