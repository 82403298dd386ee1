//! Loads aggregates, asks the domain to decide, and appends the result, retrying on a
//! concurrent write when the client did not pin a version.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::{
    Aggregate, Customer, CustomerCommand, CustomerFacts, CustomerId, DomainError, Email,
    EventPayload, OnboardTechnician, RaiseTicket, RegisterCustomer, ReservationEvent, Technician,
    TechnicianCommand, TechnicianFacts, TechnicianId, Ticket, TicketCommand, TicketId,
    TicketNumber,
};
use stream_store::{
    read_full_stream, AppendOutcome, CommandMetadata, EventStore, ExpectedVersion, NewEvent,
    StoreError, StreamId,
};
use uuid::Uuid;

use crate::ApiError;

/// How often a command is re-decided after losing a race for its stream.
const MAX_ATTEMPTS: usize = 5;
/// How many ticket numbers are tried before giving up on a (very unlikely) collision streak.
const NUMBER_ATTEMPTS: usize = 8;

pub struct CommandService {
    store: Arc<dyn EventStore>,
}

impl CommandService {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    pub(crate) fn store(&self) -> &dyn EventStore {
        &*self.store
    }

    pub async fn register_customer(
        &self,
        command: RegisterCustomer,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = StreamId::for_aggregate(Customer::STREAM_PREFIX, command.customer_id);
        // Refuse a second registration before claiming the e-mail for it.
        let (existing, _) = self.load::<Customer>(&stream).await?;
        if existing.state().is_some() {
            return Err(DomainError::CustomerAlreadyRegistered.into());
        }
        self.reserve_email("customer", &command.email, &stream, meta)
            .await?;
        let cmd = CustomerCommand::Register(command);
        self.execute::<Customer>(&stream, expected, meta, || cmd.clone())
            .await
    }

    pub async fn onboard_technician(
        &self,
        command: OnboardTechnician,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = StreamId::for_aggregate(Technician::STREAM_PREFIX, command.technician_id);
        let (existing, _) = self.load::<Technician>(&stream).await?;
        if existing.state().is_some() {
            return Err(DomainError::TechnicianAlreadyOnboarded.into());
        }
        self.reserve_email("technician", &command.email, &stream, meta)
            .await?;
        let cmd = TechnicianCommand::Onboard(command);
        self.execute::<Technician>(&stream, expected, meta, || cmd.clone())
            .await
    }

    pub async fn technician_command(
        &self,
        technician_id: TechnicianId,
        command: TechnicianCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = StreamId::for_aggregate(Technician::STREAM_PREFIX, technician_id);
        self.execute::<Technician>(&stream, expected, meta, || command.clone())
            .await
    }

    /// Raises a ticket: looks up the customer, claims a fresh ticket number, appends.
    #[allow(clippy::too_many_arguments)]
    pub async fn raise_ticket(
        &self,
        ticket_id: TicketId,
        customer_id: CustomerId,
        build: impl Fn(TicketNumber, Option<CustomerFacts>) -> RaiseTicket,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = StreamId::for_aggregate(Ticket::STREAM_PREFIX, ticket_id);
        let (customer, _) = self
            .load::<Customer>(&StreamId::for_aggregate(
                Customer::STREAM_PREFIX,
                customer_id,
            ))
            .await?;
        let facts = customer.state().map(|c| CustomerFacts {
            id: c.id,
            tier: c.tier,
        });
        // Decide once without a number so that a refused command claims none.
        let probe = build(
            TicketNumber::generate(meta.recorded_at.date_naive(), 0),
            facts,
        );
        let (existing, _) = self.load::<Ticket>(&stream).await?;
        existing.decide(TicketCommand::Raise(probe), meta.recorded_at)?;

        for _ in 0..NUMBER_ATTEMPTS {
            let number = TicketNumber::generate(meta.recorded_at.date_naive(), rand::random());
            let key = StreamId::for_aggregate("ticket-number", number.as_str());
            if self.reserve(&key, number.as_str(), &stream, meta).await? {
                let raise = build(number, facts);
                return self
                    .execute::<Ticket>(&stream, expected, meta, || {
                        TicketCommand::Raise(raise.clone())
                    })
                    .await;
            }
        }
        Err(ApiError::Internal(
            "could not find a free ticket number".into(),
        ))
    }

    pub async fn ticket_command(
        &self,
        ticket_id: TicketId,
        command: TicketCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = StreamId::for_aggregate(Ticket::STREAM_PREFIX, ticket_id);
        self.execute::<Ticket>(&stream, expected, meta, || command.clone())
            .await
    }

    /// Facts about a technician for a decision about another aggregate.
    pub async fn technician_facts(
        &self,
        id: TechnicianId,
    ) -> Result<Option<TechnicianFacts>, ApiError> {
        let (technician, _) = self
            .load::<Technician>(&StreamId::for_aggregate(Technician::STREAM_PREFIX, id))
            .await?;
        Ok(technician.state().map(|t| TechnicianFacts {
            id: t.id,
            active: t.active,
        }))
    }

    /// Loads the aggregate, decides, appends; on a lost race re-loads and re-decides, unless
    /// the client pinned `expected`, in which case the conflict is the answer.
    async fn execute<A: Aggregate>(
        &self,
        stream: &StreamId,
        expected: Option<i64>,
        meta: &CommandMetadata,
        command: impl Fn() -> A::Command,
    ) -> Result<AppendOutcome, ApiError> {
        for _ in 0..MAX_ATTEMPTS {
            let (state, version) = self.load::<A>(stream).await?;
            if let Some(expected) = expected {
                if expected != version {
                    return Err(ApiError::Conflict {
                        expected: ExpectedVersion::Exact(expected),
                        actual: version,
                    });
                }
            }
            let events = state.decide(command(), meta.recorded_at)?;
            let events = encode(&events, meta.command_id);
            match self
                .store
                .append(stream, ExpectedVersion::Exact(version), events, meta)
                .await
            {
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                result => return result.map_err(ApiError::from),
            }
        }
        Err(ApiError::Unavailable(StoreError::Unavailable(
            "the stream kept changing; retry".into(),
        )))
    }

    async fn load<A: Aggregate>(&self, stream: &StreamId) -> Result<(A, i64), ApiError> {
        let events = read_full_stream(&*self.store, stream).await?;
        let version = events.last().map_or(0, |e| e.version);
        let mut state = A::default();
        for e in &events {
            let decoded = A::Event::from_stored(&e.event_type, e.schema_version, &e.data)
                .map_err(|err| ApiError::Internal(format!("{stream} v{}: {err}", e.version)))?;
            if let Some(event) = decoded {
                state = state.evolve(&event);
            }
        }
        Ok((state, version))
    }

    async fn reserve_email(
        &self,
        kind: &str,
        email: &Email,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        let key = StreamId::new(format!("{kind}-email-{}", email.as_str()))?;
        if self.reserve(&key, email.as_str(), owner, meta).await? {
            Ok(())
        } else {
            Err(DomainError::EmailTaken.into())
        }
    }

    /// Claims `key` for `owner` by creating the key's own stream. True when the key is (now or
    /// already) the owner's; false when someone else holds it.
    async fn reserve(
        &self,
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<bool, ApiError> {
        let event = ReservationEvent::KeyReserved {
            key: key.to_owned(),
            owner: owner.to_string(),
            reserved_at: meta.recorded_at,
        };
        // The claim is its own append, so it gets its own command id, derived from the
        // command's: a retried command re-claims idempotently.
        let claim = CommandMetadata {
            command_id: Uuid::new_v5(&meta.command_id, key_stream.as_str().as_bytes()),
            causation_id: meta.command_id,
            ..meta.clone()
        };
        let events = encode(std::slice::from_ref(&event), claim.command_id);
        match self
            .store
            .append(key_stream, ExpectedVersion::NoStream, events, &claim)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => {
                let held = self.store.read_stream(key_stream, 0, 1).await?;
                let holder = held.first().and_then(|e| {
                    ReservationEvent::from_stored(&e.event_type, e.schema_version, &e.data)
                        .ok()
                        .flatten()
                });
                Ok(holder.is_some_and(|h| h.owner() == owner.as_str()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Turns domain events into store events. Event ids derive from the command id, so a retried
/// command produces the same ids.
fn encode<E: EventPayload>(events: &[E], command_id: Uuid) -> Vec<NewEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent {
            event_id: Uuid::new_v5(&command_id, i.to_string().as_bytes()),
            event_type: e.event_type().to_owned(),
            schema_version: e.schema_version(),
            data: e.to_data(),
        })
        .collect()
}

/// The time a command is stamped with, taken once at the edge.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}
