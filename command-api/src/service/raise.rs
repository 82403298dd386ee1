//! Raising a ticket: a fresh number's claim, the device's link and the ticket, in one chain.

use domain::priority::PriorityPolicy;
use domain::{
    Aggregate, CustomerFacts, CustomerId, Device, DeviceCommand, DeviceFacts, DeviceId,
    RaiseTicket, Ticket, TicketCommand, TicketId, TicketNumber, UniqueKey,
};
use stream_store::{
    AppendOutcome, AppendRequest, CommandMetadata, ExpectedVersion, StoreError, StreamId,
};
use uuid::Uuid;

use super::*;

/// Names the command id of a raise's device link (derived from the raise's).
const LINK_DEVICE: &str = "link-device";
/// How many ticket numbers are tried before giving up on a (very unlikely) collision streak.
const NUMBER_ATTEMPTS: usize = 8;
use crate::ApiError;

impl CommandService {
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
            let key = StreamId::new(UniqueKey::TicketNumber(number.as_str()).stream_name())?;
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
}
