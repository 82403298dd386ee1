//! Given / when / then tests of the ticket aggregate, with a fixed clock.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::{replay, EventPayload};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0).unwrap()
}

fn tech(n: u128) -> TechnicianId {
    TechnicianId::from_uuid(Uuid::from_u128(n))
}

fn customer() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(7))
}

fn raise_command() -> TicketCommand {
    TicketCommand::Raise(RaiseTicket {
        ticket_id: TicketId::from_uuid(Uuid::from_u128(1)),
        number: TicketNumber::generate(now().date_naive(), 42),
        customer_id: customer(),
        customer: Some(CustomerFacts {
            id: customer(),
            tier: Tier::Paid,
        }),
        category: Category::Repair,
        subject: Text::parse("subject", "Screen flickers", 200).unwrap(),
        description: Text::parse("description", "Since the update", 2000).unwrap(),
        severity: Severity::Major,
        impact: Impact::parse("impact", 2).unwrap(),
    })
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
        resolution: Text::parse("resolution", "Replaced the cable", 2000).unwrap(),
    }
}

/// Given the events of `commands` applied in order, when `command`, then the result.
fn given_when(
    commands: Vec<TicketCommand>,
    command: TicketCommand,
) -> Result<Vec<TicketEvent>, DomainError> {
    let mut events = Vec::new();
    for c in commands {
        let state: Ticket = replay(&events);
        events.extend(state.decide(c, now()).expect("given command is accepted"));
    }
    let state: Ticket = replay(&events);
    state.decide(command, now())
}

#[test]
fn raising_records_the_number_and_the_customer_tier() {
    let events = given_when(vec![], raise_command()).unwrap();
    match &events[..] {
        [TicketEvent::TicketRaised {
            number,
            customer_tier,
            raised_at,
            ..
        }] => {
            assert!(number.as_str().starts_with("TKT-20261121-"));
            assert_eq!(*customer_tier, Tier::Paid);
            assert_eq!(*raised_at, now());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn raising_for_an_unknown_customer_is_refused() {
    let TicketCommand::Raise(mut raise) = raise_command() else {
        unreachable!()
    };
    raise.customer = None;
    assert_eq!(
        given_when(vec![], TicketCommand::Raise(raise)),
        Err(DomainError::UnknownCustomer)
    );
}

#[test]
fn raising_twice_is_refused() {
    assert_eq!(
        given_when(vec![raise_command()], raise_command()),
        Err(DomainError::TicketAlreadyRaised)
    );
}

#[test]
fn commands_on_a_ticket_that_does_not_exist_are_not_found() {
    for command in [
        assign(1, true),
        TicketCommand::StartWork,
        resolve(),
        TicketCommand::Close,
    ] {
        assert_eq!(
            given_when(vec![], command),
            Err(DomainError::NotFound { kind: "ticket" })
        );
    }
}

#[test]
fn assignment_needs_a_known_active_technician() {
    let unknown = TicketCommand::AssignTechnician {
        technician_id: tech(1),
        technician: None,
    };
    assert_eq!(
        given_when(vec![raise_command()], unknown),
        Err(DomainError::UnknownTechnician)
    );
    assert_eq!(
        given_when(vec![raise_command()], assign(1, false)),
        Err(DomainError::TechnicianInactive)
    );
}

#[test]
fn facts_about_another_technician_do_not_count() {
    let mismatched = TicketCommand::AssignTechnician {
        technician_id: tech(1),
        technician: Some(TechnicianFacts {
            id: tech(2),
            active: true,
        }),
    };
    assert_eq!(
        given_when(vec![raise_command()], mismatched),
        Err(DomainError::UnknownTechnician)
    );
}

#[test]
fn reassignment_records_the_previous_technician() {
    let events = given_when(vec![raise_command(), assign(1, true)], assign(2, true)).unwrap();
    assert_eq!(
        events,
        vec![TicketEvent::TechnicianAssigned {
            technician_id: tech(2),
            previous_technician_id: Some(tech(1)),
            assigned_at: now(),
        }]
    );
    assert_eq!(
        given_when(vec![raise_command(), assign(1, true)], assign(1, true)),
        Err(DomainError::AlreadyAssigned)
    );
}

#[test]
fn work_starts_only_on_an_assigned_open_ticket() {
    assert_eq!(
        given_when(vec![raise_command()], TicketCommand::StartWork),
        Err(DomainError::NotAssigned)
    );
    let events = given_when(
        vec![raise_command(), assign(1, true)],
        TicketCommand::StartWork,
    )
    .unwrap();
    assert_eq!(
        events,
        vec![TicketEvent::WorkStarted {
            technician_id: tech(1),
            started_at: now()
        }]
    );
}

#[test]
fn a_ticket_is_closed_only_after_it_was_resolved() {
    assert!(matches!(
        given_when(
            vec![raise_command(), assign(1, true), TicketCommand::StartWork],
            TicketCommand::Close
        ),
        Err(DomainError::InvalidTransition {
            from: TicketStatus::InProgress,
            action: "close"
        })
    ));
    assert!(matches!(
        given_when(vec![raise_command()], resolve()),
        Err(DomainError::InvalidTransition {
            from: TicketStatus::Open,
            ..
        })
    ));
    let done = vec![
        raise_command(),
        assign(1, true),
        TicketCommand::StartWork,
        resolve(),
    ];
    assert_eq!(
        given_when(done, TicketCommand::Close),
        Ok(vec![TicketEvent::TicketClosed { closed_at: now() }])
    );
}

#[test]
fn a_closed_ticket_never_changes() {
    let closed = vec![
        raise_command(),
        assign(1, true),
        TicketCommand::StartWork,
        resolve(),
        TicketCommand::Close,
    ];
    for command in [
        assign(2, true),
        TicketCommand::StartWork,
        resolve(),
        TicketCommand::Close,
    ] {
        assert_eq!(
            given_when(closed.clone(), command),
            Err(DomainError::TicketClosed)
        );
    }
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let closed = vec![
        raise_command(),
        assign(1, true),
        assign(2, true),
        TicketCommand::StartWork,
        resolve(),
    ];
    let mut events = given_when(closed, TicketCommand::Close).unwrap();
    events.insert(0, TicketEvent::TicketClosed { closed_at: now() });
    for event in events {
        let decoded =
            TicketEvent::from_stored(event.event_type(), event.schema_version(), &event.to_data());
        assert_eq!(decoded.unwrap(), Some(event));
    }
    assert!(
        TicketEvent::from_stored("CustomerRegistered", 1, &serde_json::json!({}))
            .unwrap()
            .is_none()
    );
    assert!(TicketEvent::from_stored("TicketClosed", 1, &serde_json::json!({"x": 1})).is_err());
}

fn any_command() -> impl Strategy<Value = TicketCommand> {
    prop_oneof![
        Just(raise_command()),
        (1u128..4, any::<bool>()).prop_map(|(n, active)| assign(n, active)),
        Just(TicketCommand::StartWork),
        Just(resolve()),
        Just(TicketCommand::Close),
    ]
}

proptest! {
    /// Whatever sequence of commands arrives, the accepted events replay to the same state, a
    /// closed ticket stays closed, and a status never moves backwards along the workflow.
    #[test]
    fn replay_is_deterministic_and_workflow_moves_forward(commands in proptest::collection::vec(any_command(), 0..25)) {
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
            if before == Some(TicketStatus::Closed) {
                prop_assert_eq!(after, Some(TicketStatus::Closed));
            }
            let rank = |s: Option<TicketStatus>| match s {
                None => 0, Some(TicketStatus::Open) => 1, Some(TicketStatus::InProgress) => 2,
                Some(TicketStatus::Resolved) => 3, Some(TicketStatus::Closed) => 4, Some(TicketStatus::Cancelled) => 5,
            };
            prop_assert!(rank(after) >= rank(before));
        }
        prop_assert_eq!(replay::<Ticket>(&events), state.clone());
        prop_assert_eq!(replay::<Ticket>(&events), replay::<Ticket>(&events));
    }
}
