//! Loads aggregates, asks the domain to decide, and appends the result, retrying on a
//! concurrent write when the client did not pin a version. Commands that touch a second
//! aggregate (unique keys, ticket links, stock) write it first with a command id derived from
//! the command's, so a retried command never writes anything twice.

mod ids;
mod keys;
mod raise;
mod stock;

pub(crate) use ids::{derive_id, encode, keyed, now};
use ids::{derived, derived_for_request};

use std::sync::Arc;

use domain::access::TicketParties;
use domain::priority::PriorityPolicy;
use domain::{
    Aggregate, Customer, CustomerFacts, CustomerId, Device, DeviceCommand, DeviceFacts, DeviceId,
    DomainError, Money, RoleGrant, Technician, TechnicianFacts, TechnicianId, Ticket,
    TicketCommand, TicketId,
};
use stream_store::{
    AppendOutcome, CommandMetadata, EventStore, ExpectedVersion, StoreError, StreamId,
};

use crate::warm::WarmStates;
use crate::ApiError;

/// How often a command is re-decided after losing a race for its stream. Generous: ten
/// clients racing for the last units of one part each need a round.
const MAX_ATTEMPTS: usize = 64;

pub struct CommandService {
    store: Arc<dyn EventStore>,
    policy: PriorityPolicy,
    warm: WarmStates,
    /// Slows password guesses (`ChangePassword`'s current password); none in-process callers.
    throttle: Option<crate::throttle::Throttle>,
    /// Keys the passwords in request ids (`TokenService::request_key`).
    request_key: [u8; 32],
}

fn stream_of<A: Aggregate>(id: impl std::fmt::Display) -> StreamId {
    StreamId::for_aggregate(A::STREAM_PREFIX, id)
}

impl CommandService {
    pub fn new(store: Arc<dyn EventStore>, policy: PriorityPolicy) -> Self {
        Self {
            store,
            policy,
            warm: WarmStates::new(),
            throttle: None,
            request_key: rand::random(),
        }
    }

    /// The same service, keying the passwords in request ids with `key`.
    pub fn with_request_key(mut self, key: [u8; 32]) -> Self {
        self.request_key = key;
        self
    }

    pub(crate) fn request_key(&self) -> &[u8; 32] {
        &self.request_key
    }

    /// The same service, with password checks slowed through `throttle`.
    pub fn with_throttle(mut self, throttle: crate::throttle::Throttle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    pub(crate) fn throttle(&self) -> Option<&crate::throttle::Throttle> {
        self.throttle.as_ref()
    }

    pub(crate) fn store(&self) -> &dyn EventStore {
        &*self.store
    }

    /// Sends `command` to the aggregate `id` of kind `A`: decided on its state, appended,
    /// re-decided after a lost race unless `expected` pins the version.
    pub(crate) async fn send<A: Aggregate + Send + Sync + 'static>(
        &self,
        id: impl std::fmt::Display,
        command: A::Command,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError>
    where
        A::Command: Clone,
    {
        self.execute::<A>(&stream_of::<A>(id), expected, meta, || command.clone())
            .await
    }

    /// Closes a device once the tickets of its visit owe nothing.
    pub async fn close_device(
        &self,
        id: DeviceId,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Device>(id);
        let (device, _) = self.load::<Device>(&stream).await?;
        let mut outstanding = Money::ZERO;
        for ticket_id in device
            .state()
            .map(|d| d.open_tickets.clone())
            .unwrap_or_default()
        {
            let (ticket, _) = self.load::<Ticket>(&stream_of::<Ticket>(ticket_id)).await?;
            if let Some(t) = ticket.state() {
                outstanding = outstanding.saturating_add(t.balance());
            }
        }
        self.execute::<Device>(&stream, expected, meta, || DeviceCommand::Close {
            outstanding,
        })
        .await
    }

    /// Claims warranty with the facts of the ticket's device as they are now.
    pub async fn claim_warranty(
        &self,
        id: TicketId,
        reason: Option<domain::Text>,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Ticket>(id);
        let (ticket, _) = self.load::<Ticket>(&stream).await?;
        let device = match ticket.state().and_then(|t| t.device_id) {
            Some(device_id) => self.device_facts(device_id).await?,
            None => None,
        };
        self.execute::<Ticket>(&stream, expected, meta, || TicketCommand::ClaimWarranty {
            device,
            reason: reason.clone(),
        })
        .await
    }

    /// Uses parts on a ticket. Stock is taken from the part first (so it can never go
    /// negative, on any store backend), then recorded on the ticket; if the ticket refuses,
    /// the stock is given back.
    /// The records a role names must exist.
    async fn check_grant(&self, grant: &RoleGrant) -> Result<(), ApiError> {
        if let Some(c) = grant.customer_id {
            if self.customer_facts(c).await?.is_none() {
                return Err(DomainError::UnknownCustomer.into());
            }
        }
        if let Some(t) = grant.technician_id {
            if self.technician_facts(t).await?.is_none() {
                return Err(DomainError::UnknownTechnician.into());
            }
        }
        Ok(())
    }

    /// Whose ticket it is, for access decisions; `None` when there is no such ticket.
    pub async fn ticket_parties(&self, id: TicketId) -> Result<Option<TicketParties>, ApiError> {
        let (ticket, _) = self.load::<Ticket>(&stream_of::<Ticket>(id)).await?;
        Ok(ticket.state().map(|t| TicketParties {
            customer_id: t.customer_id,
            assignee: t.assignee,
        }))
    }

    // ---- facts about other aggregates ------------------------------------------------

    pub async fn technician_facts(
        &self,
        id: TechnicianId,
    ) -> Result<Option<TechnicianFacts>, ApiError> {
        let (technician, _) = self
            .load::<Technician>(&stream_of::<Technician>(id))
            .await?;
        Ok(technician.state().map(|t| TechnicianFacts {
            id: t.id,
            active: t.active,
        }))
    }

    async fn customer_facts(&self, id: CustomerId) -> Result<Option<CustomerFacts>, ApiError> {
        let (customer, _) = self.load::<Customer>(&stream_of::<Customer>(id)).await?;
        Ok(customer.state().map(|c| CustomerFacts {
            id: c.id,
            tier: c.tier,
        }))
    }

    async fn device_facts(&self, id: DeviceId) -> Result<Option<DeviceFacts>, ApiError> {
        let (device, _) = self.load::<Device>(&stream_of::<Device>(id)).await?;
        Ok(device.facts())
    }

    /// Decides `command` against the current state without appending, a pinned `expected`
    /// version included: refuses early, before a secondary write (a key's claim, a stock
    /// take), what the final append would refuse. A refusal is confirmed on the stream as the
    /// log holds it (the kept state may trail it).
    async fn probe<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
        command: A::Command,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<(A, i64), ApiError>
    where
        A::Command: Clone,
    {
        let refusal = |state: &A, version: i64| match expected.filter(|e| *e != version) {
            Some(pinned) => Err(ApiError::Conflict {
                expected: ExpectedVersion::Exact(pinned),
                actual: version,
            }),
            None => state
                .decide(command.clone(), meta.recorded_at)
                .map(|_| ())
                .map_err(ApiError::from),
        };
        let (state, version) = self.load::<A>(stream).await?;
        if refusal(&state, version).is_ok() {
            return Ok((state, version));
        }
        let (state, version) = self.warm.load_from_log::<A>(&*self.store, stream).await?;
        refusal(&state, version)?;
        Ok((state, version))
    }

    /// Loads the aggregate, decides, appends; on a lost race re-loads and re-decides, unless
    /// the client pinned `expected`, in which case the conflict is the answer.
    async fn execute<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
        expected: Option<i64>,
        meta: &CommandMetadata,
        command: impl Fn() -> A::Command,
    ) -> Result<AppendOutcome, ApiError> {
        // The state confirmed on the log after a refusal, decided on once more.
        let mut known: Option<(A, i64)> = None;
        let mut confirmed = false;
        for _ in 0..MAX_ATTEMPTS {
            let (state, version) = match known.take() {
                Some(known) => known,
                None => self.load::<A>(stream).await?,
            };
            let refusal = match expected.filter(|expected| *expected != version) {
                Some(expected) => Err(ApiError::Conflict {
                    expected: ExpectedVersion::Exact(expected),
                    actual: version,
                }),
                None => state
                    .decide(command(), meta.recorded_at)
                    .map_err(ApiError::from),
            };
            let decided = match refusal {
                Ok(events) => events,
                Err(refused) => {
                    // A secondary append retried after a crash finds its own write already there.
                    if let Some(done) = self.store.find_command(meta.command_id).await? {
                        if done.stream_id == *stream {
                            return Ok(done);
                        }
                    }
                    // The state may trail the log (another process's append not yet seen by
                    // this one's stream cache): refuse only what the stream as the log holds
                    // it refuses.
                    if !confirmed {
                        confirmed = true;
                        let current = self.warm.load_from_log::<A>(&*self.store, stream).await?;
                        if current.1 != version {
                            known = Some(current);
                            continue;
                        }
                    }
                    return Err(refused);
                }
            };
            let events = encode(&decided, meta.command_id);
            match self
                .store
                .append(stream, ExpectedVersion::Exact(version), events, meta)
                .await
            {
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Ok(outcome) => {
                    self.remember(stream, state, version, &decided, &outcome);
                    return Ok(outcome);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Unavailable(StoreError::Unavailable(
            "the stream kept changing; retry".into(),
        )))
    }

    /// Keeps the state an append led to warm, if what was appended is what was decided on
    /// `state` at `version` (not an earlier delivery's events).
    fn remember<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
        state: A,
        version: i64,
        decided: &[A::Event],
        outcome: &AppendOutcome,
    ) {
        if !outcome.duplicate && outcome.version == version + decided.len() as i64 {
            let next = decided.iter().fold(state, |s, e| s.evolve(e));
            self.warm.keep(stream, &next, outcome.version);
        }
    }

    async fn load<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
    ) -> Result<(A, i64), ApiError> {
        self.warm.load::<A>(&*self.store, stream).await
    }

    /// Whether `stream` exists on the log: a registration refused because another command
    /// registered the same aggregate meanwhile leaves that aggregate's keys held.
    async fn exists<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
    ) -> Result<bool, ApiError> {
        Ok(self.warm.load_from_log::<A>(&*self.store, stream).await?.1 > 0)
    }
}
