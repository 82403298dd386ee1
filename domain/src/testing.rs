//! Given / when / then for the aggregates' tests: given what happened (events, or the commands
//! that made them, each of which must be accepted), when a command arrives at a fixed time,
//! then the events it decided, or its refusal with this code.

use chrono::{DateTime, TimeZone, Utc};

use crate::{replay, Aggregate, DomainError};

/// The tests' clock: every decision is taken at this moment unless a test says otherwise.
pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0)
        .single()
        .unwrap_or_default()
}

/// What happened to one aggregate before the command under test.
pub(crate) struct Given<A: Aggregate> {
    events: Vec<A::Event>,
}

/// Given these events.
pub(crate) fn given<A: Aggregate>(events: Vec<A::Event>) -> Given<A> {
    Given { events }
}

/// Given the events these commands made, decided in order (each must be accepted).
pub(crate) fn given_commands<A: Aggregate>(
    commands: impl IntoIterator<Item = A::Command>,
) -> Given<A> {
    let mut events: Vec<A::Event> = Vec::new();
    for command in commands {
        match replay::<A>(&events).decide(command, now()) {
            Ok(more) => events.extend(more),
            Err(e) => panic!("a given command was refused: {e}"),
        }
    }
    given(events)
}

impl<A: Aggregate> Given<A> {
    /// The aggregate these events make.
    pub(crate) fn state(&self) -> A {
        replay(&self.events)
    }

    /// When `command` arrives.
    pub(crate) fn when(&self, command: A::Command) -> Then<A> {
        Then(self.state().decide(command, now()))
    }
}

/// What the command under test decided.
pub(crate) struct Then<A: Aggregate>(pub(crate) Result<Vec<A::Event>, DomainError>);

impl<A: Aggregate> Then<A>
where
    A::Event: PartialEq + std::fmt::Debug,
{
    /// Then a refusal with this code.
    #[track_caller]
    pub(crate) fn then_refused(self, code: &str) {
        match self.0 {
            Err(e) => assert_eq!(e.code(), code, "refused, but for another reason: {e}"),
            Ok(events) => panic!("accepted, expected {code}: {events:?}"),
        }
    }

    /// The events, which must have been decided.
    #[track_caller]
    pub(crate) fn events(self) -> Vec<A::Event> {
        match self.0 {
            Ok(events) => events,
            Err(e) => panic!("refused: {e}"),
        }
    }
}
