//! Property tests: random command sequences keep the ticket's invariants.

use proptest::prelude::*;

use super::*;

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
        (1i64..=5).prop_map(feedback),
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
