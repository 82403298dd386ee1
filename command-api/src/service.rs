//! Loads aggregates, asks the domain to decide, and appends the result, retrying on a
//! concurrent write when the client did not pin a version. Commands that touch a second
//! aggregate (unique keys, ticket links, stock) write it first with a command id derived from
//! the command's, so a retried command never writes anything twice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::access::TicketParties;
use domain::priority::PriorityPolicy;
use domain::{
    Aggregate, Customer, CustomerCommand, CustomerFacts, CustomerId, Device, DeviceCommand,
    DeviceFacts, DeviceId, DomainError, Email, EventPayload, Money, OnboardTechnician, Part,
    PartCommand, PartEvent, PartFacts, PartId, RaiseTicket, RegisterCustomer, RegisterDevice,
    RegisterUser, ReservationEvent, RoleGrant, Technician, TechnicianCommand, TechnicianFacts,
    TechnicianId, Ticket, TicketCommand, TicketId, TicketNumber, UpdateCustomer, User, UserCommand,
    UserId,
};
use stream_store::{
    read_full_stream, AppendOutcome, AppendRequest, CommandMetadata, EventStore, ExpectedVersion,
    NewEvent, StoreError, StreamId,
};
use uuid::Uuid;

use crate::warm::WarmStates;
use crate::ApiError;

/// How often a command is re-decided after losing a race for its stream. Generous: ten
/// clients racing for the last units of one part each need a round.
const MAX_ATTEMPTS: usize = 64;
/// Names the command id of a raise's device link (derived from the raise's).
const LINK_DEVICE: &str = "link-device";
/// How many ticket numbers are tried before giving up on a (very unlikely) collision streak.
const NUMBER_ATTEMPTS: usize = 8;

/// Attempts of one `UsePart` (one command id) whose stock was given back, before it must be sent
/// with a new key.
const MAX_STOCK_ATTEMPTS: u32 = 100;

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

/// Metadata for a secondary append of a command: its own command id, derived from the
/// command's and `purpose`, with the request's causation id. One `Idempotency-Key` sent at the
/// same time with two bodies makes the same id for both: the store answers the second one
/// `CommandReused` and stops its chain there (a ticket number's claim, before the device link).
fn derived(meta: &CommandMetadata, purpose: &str) -> CommandMetadata {
    CommandMetadata {
        command_id: derive_id(meta.command_id, purpose.as_bytes()),
        ..meta.clone()
    }
}

/// Like `derived`, but the id derives from the request (its causation id: command id, name and
/// body): one key sent at the same time with two bodies (say, two part counts) makes two such
/// appends, each undone when its request loses (`use_part`), not one that both take for theirs.
fn derived_for_request(meta: &CommandMetadata, purpose: &str) -> CommandMetadata {
    CommandMetadata {
        command_id: derive_id(meta.causation_id, purpose.as_bytes()),
        ..meta.clone()
    }
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

    // ---- customers -------------------------------------------------------------------

    pub async fn register_customer(
        &self,
        command: RegisterCustomer,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Customer>(command.customer_id);
        let cmd = CustomerCommand::Register(command.clone());
        self.register_with_email::<Customer>(
            &stream,
            cmd,
            "customer",
            &command.email,
            expected,
            meta,
        )
        .await
    }

    pub async fn update_customer(
        &self,
        id: CustomerId,
        update: UpdateCustomer,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Customer>(id);
        let cmd = CustomerCommand::Update(update.clone());
        let (current, _) = self
            .probe::<Customer>(&stream, cmd.clone(), expected, meta)
            .await?;
        let old_email = current.state().map(|c| c.email.clone());
        let new_email = update.email.filter(|e| Some(e) != old_email.as_ref());
        if let Some(email) = &new_email {
            self.reserve_email("customer", email, &stream, meta).await?;
        }
        let outcome = self
            .execute::<Customer>(&stream, expected, meta, || cmd.clone())
            .await;
        match (&outcome, new_email, old_email) {
            // Refused after all (the customer changed meanwhile): the new address is not
            // theirs to keep.
            (Err(e), Some(new), _) if e.is_refusal() && !self.uses_email(&stream, &new).await? => {
                self.release_own_claim(
                    &Self::email_key("customer", &new)?,
                    new.as_str(),
                    &stream,
                    meta,
                )
                .await?;
            }
            (Ok(_), Some(_), Some(old)) => {
                self.release_key(
                    &Self::email_key("customer", &old)?,
                    old.as_str(),
                    &stream,
                    meta,
                )
                .await?;
            }
            _ => {}
        }
        outcome
    }

    pub async fn customer_command(
        &self,
        id: CustomerId,
        command: CustomerCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<Customer>(&stream_of::<Customer>(id), expected, meta, || {
            command.clone()
        })
        .await
    }

    // ---- technicians -----------------------------------------------------------------

    pub async fn onboard_technician(
        &self,
        command: OnboardTechnician,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Technician>(command.technician_id);
        let cmd = TechnicianCommand::Onboard(command.clone());
        self.register_with_email::<Technician>(
            &stream,
            cmd,
            "technician",
            &command.email,
            expected,
            meta,
        )
        .await
    }

    pub async fn technician_command(
        &self,
        id: TechnicianId,
        command: TechnicianCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<Technician>(&stream_of::<Technician>(id), expected, meta, || {
            command.clone()
        })
        .await
    }

    // ---- devices ---------------------------------------------------------------------

    pub async fn register_device(
        &self,
        mut command: RegisterDevice,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Device>(command.device_id);
        command.customer = self.customer_facts(command.customer_id).await?;
        let cmd = DeviceCommand::Register(command.clone());
        self.probe::<Device>(&stream, cmd.clone(), expected, meta)
            .await?;
        let serial = command.serial_number.as_str();
        let key = StreamId::new(format!("device-serial-{serial}"))?;
        if !self.reserve(&key, serial, &stream, meta).await? {
            return Err(DomainError::SerialTaken.into());
        }
        let outcome = self
            .execute::<Device>(&stream, expected, meta, || cmd.clone())
            .await;
        if outcome.as_ref().is_err_and(ApiError::is_refusal)
            && !self.exists::<Device>(&stream).await?
        {
            self.release_own_claim(&key, serial, &stream, meta).await?;
        }
        outcome
    }

    pub async fn device_command(
        &self,
        id: DeviceId,
        command: DeviceCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<Device>(&stream_of::<Device>(id), expected, meta, || command.clone())
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

    // ---- tickets ---------------------------------------------------------------------

    /// Raises a ticket: looks up the customer (and device), claims a fresh ticket number,
    /// links the ticket to its device, appends. `drawn_id`: the id was drawn for this command,
    /// so the ticket is decided as new without reading its stream (were it taken after all,
    /// the append would conflict and the command be decided again on what is there); the
    /// number's claim, the device's link and the ticket are then appended as one chain.
    pub async fn raise_ticket(
        &self,
        (ticket_id, drawn_id): (TicketId, bool),
        build: impl Fn(
            TicketNumber,
            Option<CustomerFacts>,
            Option<DeviceFacts>,
            PriorityPolicy,
        ) -> RaiseTicket,
        customer_id: CustomerId,
        device_id: Option<DeviceId>,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Ticket>(ticket_id);
        let customer = self.customer_facts(customer_id).await?;
        let device = match device_id {
            Some(id) => self.device_facts(id).await?,
            None => None,
        };
        let policy = self.policy.clone();
        // Decide once with a placeholder number so that a refused command claims none.
        let placeholder = TicketNumber::generate(meta.recorded_at.date_naive(), 0);
        let probe = TicketCommand::Raise(build(placeholder, customer, device, policy.clone()));
        let new = Ticket::default();
        let version = if drawn_id {
            new.decide(probe, meta.recorded_at)?;
            0
        } else {
            self.probe::<Ticket>(&stream, probe, None, meta).await?.1
        };
        // A pinned version the stream is not at is refused before the claim and the link too.
        if let Some(pinned) = expected.filter(|pinned| *pinned != version) {
            return Err(ApiError::Conflict {
                expected: ExpectedVersion::Exact(pinned),
                actual: version,
            });
        }

        for attempt in 0..NUMBER_ATTEMPTS {
            // Drawn from the command id, so a retried command asks for the same number again.
            let draw = Uuid::new_v5(
                &meta.command_id,
                format!("ticket-number-{attempt}").as_bytes(),
            );
            let entropy = u64::from_le_bytes(draw.as_bytes()[..8].try_into().unwrap_or([0; 8]));
            let number = TicketNumber::generate(meta.recorded_at.date_naive(), entropy);
            let key = StreamId::for_aggregate("ticket-number", number.as_str());
            let claim = derived(meta, &format!("ticket-number-{attempt}"));
            if drawn_id && expected.unwrap_or(0) == 0 {
                let raise = build(number.clone(), customer, device, policy.clone());
                let raised = self
                    .claim_and_raise(
                        (&key, number.as_str(), &claim),
                        device_id.map(|id| (id, ticket_id)),
                        (&stream, expected),
                        &new,
                        meta,
                        || TicketCommand::Raise(raise.clone()),
                    )
                    .await?;
                match raised {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            if !self.reserve(&key, number.as_str(), &stream, &claim).await? {
                continue;
            }
            let link = device_id.map(|id| {
                let link = DeviceCommand::LinkTicket { ticket_id };
                (stream_of::<Device>(id), link)
            });
            let raise = build(number, customer, device, policy);
            return self
                .link_and_raise(
                    link,
                    &derived_for_request(meta, LINK_DEVICE),
                    (&stream, expected),
                    meta,
                    || TicketCommand::Raise(raise.clone()),
                )
                .await;
        }
        Err(ApiError::Internal(
            "could not find a free ticket number".into(),
        ))
    }

    /// Claims a ticket number (`key`: its stream, the number, the claim's metadata), links the
    /// ticket to its device (`link`: the device and the ticket) and appends a new ticket's
    /// first events in one chain: each only if the one before it holds, all with one commit.
    /// None when the number is someone else's. A step that cannot be chained (the device
    /// refuses the link as the stream cache has it, or a stream moved meanwhile) is made on
    /// its own, with the usual retries, as are the steps after it.
    async fn claim_and_raise(
        &self,
        (key, number, claim): (&StreamId, &str, &CommandMetadata),
        link: Option<(DeviceId, TicketId)>,
        (stream, expected): (&StreamId, Option<i64>),
        new: &Ticket,
        meta: &CommandMetadata,
        command: impl Fn() -> TicketCommand,
    ) -> Result<Option<AppendOutcome>, ApiError> {
        let decided = new.decide(command(), meta.recorded_at)?;
        let link_meta = derived_for_request(meta, LINK_DEVICE);
        let link = match link {
            Some((device_id, ticket_id)) => {
                let device_stream = stream_of::<Device>(device_id);
                let (device, version) = self.load::<Device>(&device_stream).await?;
                let link = DeviceCommand::LinkTicket { ticket_id };
                let events = device.decide(link.clone(), meta.recorded_at).ok();
                Some((
                    device_stream,
                    link,
                    (device, version),
                    events.filter(|e| !e.is_empty()),
                ))
            }
            None => None,
        };
        let mut chain = vec![Self::claim(key, number, stream, claim, 0)];
        if let Some((device_stream, _, (_, version), Some(events))) = &link {
            chain.push(AppendRequest {
                stream: device_stream.clone(),
                expected: ExpectedVersion::Exact(*version),
                events: encode(events, link_meta.command_id),
                meta: link_meta.clone(),
            });
        }
        // The ticket follows in the chain unless the link had to be left out of it.
        if link
            .as_ref()
            .is_none_or(|(_, _, _, events)| events.is_some())
        {
            chain.push(AppendRequest {
                stream: stream.clone(),
                expected: ExpectedVersion::NoStream,
                events: encode(&decided, meta.command_id),
                meta: meta.clone(),
            });
        }
        let mut results = self.store.append_chain(chain).await.into_iter();
        let nothing = || ApiError::Internal("an append chain answered nothing".into());
        match results.next().ok_or_else(nothing)? {
            Ok(_) => {}
            // The number's stream exists: the number is ours only if an earlier delivery of
            // this command claimed it (then the rest is made, or found, as usual).
            Err(StoreError::Conflict { .. }) => {
                if !self.reserve_held(key, number, stream, claim).await? {
                    return Ok(None);
                }
                let link = link.map(|(device_stream, link, _, _)| (device_stream, link));
                return self
                    .link_and_raise(link, &link_meta, (stream, expected), meta, command)
                    .await
                    .map(Some);
            }
            Err(e) => return Err(e.into()),
        }
        if let Some((device_stream, link, (device, version), events)) = link {
            let linked = match events {
                Some(events) => match results.next().ok_or_else(nothing)? {
                    Ok(outcome) => {
                        self.remember(&device_stream, device, version, &events, &outcome);
                        true
                    }
                    Err(StoreError::Conflict { .. }) => false,
                    Err(e) => return Err(e.into()),
                },
                None => false,
            };
            if !linked {
                return self
                    .link_and_raise(
                        Some((device_stream, link)),
                        &link_meta,
                        (stream, expected),
                        meta,
                        command,
                    )
                    .await
                    .map(Some);
            }
        }
        match results.next().ok_or_else(nothing)? {
            Ok(outcome) => {
                self.remember(stream, new.clone(), 0, &decided, &outcome);
                Ok(Some(outcome))
            }
            // The drawn id's stream exists after all: decide again on what is there.
            Err(StoreError::Conflict { .. }) => self
                .execute::<Ticket>(stream, expected, meta, command)
                .await
                .map(Some),
            Err(e) => Err(e.into()),
        }
    }

    /// The steps of a raise after its number's claim, one append each (with the usual
    /// retries): the device's link, if any, then the ticket.
    async fn link_and_raise(
        &self,
        link: Option<(StreamId, DeviceCommand)>,
        link_meta: &CommandMetadata,
        (stream, expected): (&StreamId, Option<i64>),
        meta: &CommandMetadata,
        command: impl Fn() -> TicketCommand,
    ) -> Result<AppendOutcome, ApiError> {
        if let Some((device_stream, link)) = link {
            self.execute::<Device>(&device_stream, None, link_meta, || link.clone())
                .await?;
        }
        self.execute::<Ticket>(stream, expected, meta, command)
            .await
    }

    pub async fn ticket_command(
        &self,
        id: TicketId,
        command: TicketCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<Ticket>(&stream_of::<Ticket>(id), expected, meta, || command.clone())
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
    pub async fn use_part(
        &self,
        ticket_id: TicketId,
        part_id: PartId,
        quantity: u32,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let ticket_stream = stream_of::<Ticket>(ticket_id);
        let part_stream = stream_of::<Part>(part_id);
        let (part, _) = self.load::<Part>(&part_stream).await?;
        let part_facts = part
            .state()
            .map(|p| PartFacts {
                id: p.id,
                unit_cost: p.unit_cost,
            })
            .ok_or(DomainError::UnknownPart)?;
        // Refuse before touching stock when the ticket would refuse anyway.
        let probe = TicketCommand::UsePart {
            part: part_facts,
            quantity,
        };
        self.probe::<Ticket>(&ticket_stream, probe, expected, meta)
            .await?;

        // Each attempt of the request takes stock under ids of its own: once an attempt's take
        // was given back (the ticket refused it), a retry must take again, not find that take
        // and count it as done. An attempt whose take was not given back (a crash between the
        // two appends) is the one a retry continues.
        let mut attempt = 0u32;
        let (take_meta, return_meta) = loop {
            let suffix = if attempt == 0 {
                String::new()
            } else {
                format!("#{attempt}")
            };
            let returned = derived_for_request(meta, &format!("return-stock{suffix}"));
            if self
                .store
                .find_command(returned.command_id)
                .await?
                .is_none()
            {
                break (
                    derived_for_request(meta, &format!("take-stock{suffix}")),
                    returned,
                );
            }
            attempt += 1;
            if attempt > MAX_STOCK_ATTEMPTS {
                return Err(ApiError::Unavailable(StoreError::Unavailable(
                    "this command was refused too often; send it with a new key".into(),
                )));
            }
        };
        let take = PartCommand::Use {
            ticket_id,
            quantity,
        };
        let taken = self
            .execute::<Part>(&part_stream, None, &take_meta, || take.clone())
            .await?;
        let unit_cost = taken
            .events
            .iter()
            .find_map(|e| {
                match PartEvent::from_stored(&e.event_type, e.schema_version, e.data.raw()) {
                    Ok(Some(PartEvent::StockUsed { unit_cost, .. })) => Some(unit_cost),
                    _ => None,
                }
            })
            .unwrap_or(part_facts.unit_cost);
        let record = TicketCommand::UsePart {
            part: PartFacts {
                id: part_id,
                unit_cost,
            },
            quantity,
        };
        let recorded = self
            .execute::<Ticket>(&ticket_stream, expected, meta, || record.clone())
            .await;
        // Refused, or the key's first use was another request.
        let not_recorded = matches!(
            recorded,
            Err(ApiError::Rule(_)
                | ApiError::Conflict { .. }
                | ApiError::NotFound(_)
                | ApiError::IdempotencyKeyReused)
        );
        if not_recorded {
            let give_back = PartCommand::Return {
                ticket_id,
                quantity,
            };
            self.execute::<Part>(&part_stream, None, &return_meta, || give_back.clone())
                .await?;
        }
        recorded
    }

    pub async fn part_command(
        &self,
        id: PartId,
        command: PartCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<Part>(&stream_of::<Part>(id), expected, meta, || command.clone())
            .await
    }

    // ---- users ----------------------------------------------------------------------

    pub async fn register_user(
        &self,
        command: RegisterUser,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.check_grant(&command.grant).await?;
        let stream = stream_of::<User>(command.user_id);
        let cmd = UserCommand::Register(command.clone());
        self.register_with_email::<User>(&stream, cmd, "user", &command.email, expected, meta)
            .await
    }

    pub async fn change_user_role(
        &self,
        id: UserId,
        grant: RoleGrant,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.check_grant(&grant).await?;
        self.user_command(id, UserCommand::ChangeRole(grant), expected, meta)
            .await
    }

    pub async fn user_command(
        &self,
        id: UserId,
        command: UserCommand,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.execute::<User>(&stream_of::<User>(id), expected, meta, || command.clone())
            .await
    }

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

    // ---- the machinery ---------------------------------------------------------------

    /// Registers an aggregate whose e-mail must be unique among its `kind`: refuse early what
    /// the domain refuses, claim the e-mail, then append.
    async fn register_with_email<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: &StreamId,
        command: A::Command,
        kind: &str,
        email: &Email,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError>
    where
        A::Command: Clone,
    {
        self.probe::<A>(stream, command.clone(), expected, meta)
            .await?;
        self.reserve_email(kind, email, stream, meta).await?;
        let outcome = self
            .execute::<A>(stream, expected, meta, || command.clone())
            .await;
        // Refused, or the key's first use was another request, whose e-mail this one is not.
        let reused = matches!(outcome, Err(ApiError::IdempotencyKeyReused));
        if reused
            || outcome.as_ref().is_err_and(ApiError::is_refusal)
                && !self.exists::<A>(stream).await?
        {
            self.release_own_claim(&Self::email_key(kind, email)?, email.as_str(), stream, meta)
                .await?;
        }
        outcome
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

    /// Whether the customer's e-mail, as the log has it, is `email` (a concurrent identical
    /// update won: the address is theirs).
    async fn uses_email(&self, stream: &StreamId, email: &Email) -> Result<bool, ApiError> {
        let (customer, _) = self
            .warm
            .load_from_log::<Customer>(&*self.store, stream)
            .await?;
        Ok(customer.state().is_some_and(|c| c.email == *email))
    }

    fn email_key(kind: &str, email: &Email) -> Result<StreamId, ApiError> {
        Ok(StreamId::new(format!("{kind}-email-{}", email.as_str()))?)
    }

    async fn reserve_email(
        &self,
        kind: &str,
        email: &Email,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        let key = Self::email_key(kind, email)?;
        if self.reserve(&key, email.as_str(), owner, meta).await? {
            Ok(())
        } else {
            Err(DomainError::EmailTaken.into())
        }
    }

    /// Gives `key` up if `owner` holds it (a changed e-mail's old address, or what a refused
    /// command claimed).
    async fn release_key(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        self.release(key_stream, key_value, owner, meta, false)
            .await
    }

    /// Gives `key` up after this command was refused, only if this command's own claim holds
    /// it: a key its owner held already (an earlier command that succeeded) stays held.
    async fn release_own_claim(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        self.release(key_stream, key_value, owner, meta, true).await
    }

    async fn release(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
        own_claim_only: bool,
    ) -> Result<(), ApiError> {
        let key = key_stream.clone();
        let (holder, version, claimed_by) = self.key_holder(&key).await?;
        if holder.as_deref() != Some(owner.as_str()) {
            return Ok(());
        }
        if own_claim_only {
            let before = version - 1;
            let own = Self::claim(key_stream, key_value, owner, meta, before)
                .meta
                .command_id;
            if claimed_by != Some(own) {
                return Ok(());
            }
        }
        let event = ReservationEvent::KeyReleased {
            key: key_value.to_owned(),
            owner: owner.to_string(),
            released_at: meta.recorded_at,
        };
        let release = derived(meta, &format!("release {key}@{version}"));
        let events = encode(std::slice::from_ref(&event), release.command_id);
        match self
            .store
            .append(&key, ExpectedVersion::Exact(version), events, &release)
            .await
        {
            // Someone else moved the key meanwhile: it is no longer ours to release.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Who holds a key now, the version of its stream, and the command id of its last event.
    async fn key_holder(
        &self,
        key: &StreamId,
    ) -> Result<(Option<String>, i64, Option<Uuid>), ApiError> {
        let events = read_full_stream(&*self.store, key).await?;
        let version = events.last().map_or(0, |e| e.version);
        let holder = events.last().and_then(|e| {
            ReservationEvent::from_stored(&e.event_type, e.schema_version, e.data.raw())
                .ok()
                .flatten()
                .and_then(|r| r.holder().map(str::to_owned))
        });
        Ok((holder, version, events.last().map(|e| e.command_id)))
    }

    /// Claims `key` for `owner` by appending to the key's own stream at the version read.
    /// True when the key is (now or already) the owner's; false when someone else holds it.
    async fn reserve(
        &self,
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<bool, ApiError> {
        // Keys are nearly always new (a freshly drawn ticket number, a new e-mail address):
        // claim first and look only when the stream turns out to exist. A retried command
        // finds its own claim (a duplicate command id), which is the owner's.
        let first = Self::claim(key_stream, key, owner, meta, 0);
        match self
            .store
            .append(&first.stream, first.expected, first.events, &first.meta)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => {
                self.reserve_held(key_stream, key, owner, meta).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The append that claims `key` for `owner` on the key's stream, at `version` (0: new).
    fn claim(
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
        version: i64,
    ) -> AppendRequest {
        // Each claim of the key by this command has its own id: one made after the key was
        // released (a refusal of this very command gave it back) must be written, not taken
        // for a repeat of the first.
        let claim = if version == 0 {
            derived(meta, key_stream.as_str())
        } else {
            derived(meta, &format!("{}@{version}", key_stream.as_str()))
        };
        let event = ReservationEvent::KeyReserved {
            key: key.to_owned(),
            owner: owner.to_string(),
            reserved_at: meta.recorded_at,
        };
        AppendRequest {
            stream: key_stream.clone(),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: encode(std::slice::from_ref(&event), claim.command_id),
            meta: claim,
        }
    }

    /// `reserve`, once the key's stream turned out to exist: the key is the owner's if it
    /// holds it already (an earlier delivery of the command) or it was released since.
    async fn reserve_held(
        &self,
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<bool, ApiError> {
        for _ in 0..MAX_ATTEMPTS {
            let (holder, version, _) = self.key_holder(key_stream).await?;
            match holder {
                Some(h) => return Ok(h == owner.as_str()),
                None => {
                    let next = Self::claim(key_stream, key, owner, meta, version);
                    match self
                        .store
                        .append(key_stream, next.expected, next.events, &next.meta)
                        .await
                    {
                        Ok(_) => return Ok(true),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ApiError::Unavailable(StoreError::Unavailable(
            "the key kept changing; retry".into(),
        )))
    }
}

/// Turns domain events into store events. Event ids derive from the command id, so a retried
/// command produces the same ids.
pub(crate) fn encode<E: EventPayload>(events: &[E], command_id: Uuid) -> Vec<NewEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent {
            event_id: event_id(command_id, i),
            event_type: e.event_type().to_owned(),
            schema_version: e.schema_version(),
            data: e.to_data(),
        })
        .collect()
}

/// The id of a command's `i`th event, derived from the command id so that a retried command
/// produces the same ids.
fn event_id(command_id: Uuid, i: usize) -> Uuid {
    derive_id(command_id, i.to_string().as_bytes())
}

/// HMAC-SHA256 of `message` under `key`.
pub(crate) fn keyed(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// An id derived from `base` and `name`: their v5 hash (the same inputs give the same id)
/// under `base`'s first 48 bits, which in a UUIDv7 are its millisecond timestamp. The log's
/// unique index on event ids and its index on command ids then grow at their right edge, as
/// for the server's v7 ids, instead of taking each derived id at a random leaf (BENCHMARKS.md,
/// seventeenth round). A UUIDv8 ("custom"): 74 bits of hash stay, as many random bits as a v7
/// has, so two ids of one millisecond collide no more often than two v7s would.
pub(crate) fn derive_id(base: Uuid, name: &[u8]) -> Uuid {
    let mut bytes = *Uuid::new_v5(&base, name).as_bytes();
    bytes[..6].copy_from_slice(&base.as_bytes()[..6]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The time a command is stamped with, taken once at the edge.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_distinct_and_ordered_like_their_commands() {
        let first = Uuid::now_v7();
        let ids: Vec<Uuid> = (0..3).map(|i| event_id(first, i)).collect();
        // A retried command produces the same ids.
        assert_eq!(ids, (0..3).map(|i| event_id(first, i)).collect::<Vec<_>>());
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        for id in &ids {
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(id.as_bytes()[..6], first.as_bytes()[..6]);
        }
        // A later command's events sort after an earlier one's (a different millisecond).
        let later = Uuid::from_u128(first.as_u128() + (1u128 << 80));
        assert!(event_id(later, 0) > event_id(first, 2));
        assert_ne!(event_id(later, 0), ids[0]);
        // A secondary append's command id keeps the order too, and so do its events.
        let meta = CommandMetadata {
            command_id: first,
            correlation_id: first,
            causation_id: first,
            actor: stream_store::Actor {
                id: "user-1".into(),
                role: "admin".into(),
            },
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        };
        let claim = derived(&meta, "ticket-number-0");
        assert_eq!(claim.causation_id, first);
        assert_eq!(claim.command_id.as_bytes()[..6], first.as_bytes()[..6]);
        assert_eq!(
            event_id(claim.command_id, 0).as_bytes()[..6],
            first.as_bytes()[..6]
        );
    }
}
