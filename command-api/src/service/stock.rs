//! Using parts on a ticket: stock taken first, given back if the ticket refuses.

use domain::{
    DomainError, EventPayload, Part, PartCommand, PartEvent, PartFacts, PartId, Quantity, Ticket,
    TicketCommand, TicketId,
};
use stream_store::{AppendOutcome, CommandMetadata, StoreError};

use super::*;

/// Attempts of one `UsePart` (one command id) whose stock was given back, before it must be sent
/// with a new key.
const MAX_STOCK_ATTEMPTS: u32 = 100;
use crate::ApiError;

impl CommandService {
    /// Uses parts on a ticket. Stock is taken from the part first (so it can never go
    /// negative, on any store backend), then recorded on the ticket; if the ticket refuses,
    /// the stock is given back.
    pub async fn use_part(
        &self,
        ticket_id: TicketId,
        part_id: PartId,
        quantity: Quantity,
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
}
