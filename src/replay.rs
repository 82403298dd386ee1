//! `ledger replay`: a ticket's full history with the state after each event, for auditors.

use anyhow::{bail, Context as _};
use domain::{Aggregate, EventPayload, ReservationEvent, Ticket, TicketNumber};
use stream_store::{read_full_stream, EventStore, StreamId};

/// The history of the ticket named by number or id, as text or JSON.
pub async fn replay(store: &dyn EventStore, ticket: &str, json: bool) -> anyhow::Result<String> {
    let stream = ticket_stream(store, ticket).await?;
    let events = read_full_stream(store, &stream).await?;
    if events.is_empty() {
        bail!("no ticket {ticket}");
    }
    let mut state = Ticket::default();
    let mut steps = Vec::new();
    let mut text = String::new();
    for e in &events {
        state = state
            .evolve_stored(&e.event_type, e.schema_version, e.data.raw())
            .with_context(|| format!("event at position {}", e.position))?;
        let after = state.state();
        if json {
            steps.push(serde_json::json!({
                "version": e.version, "position": e.position, "type": e.event_type,
                "schemaVersion": e.schema_version, "eventId": e.event_id,
                "recordedAt": e.recorded_at, "actor": e.actor, "commandId": e.command_id,
                "correlationId": e.correlation_id, "causationId": e.causation_id,
                "data": e.data.to_value(), "stateAfter": after,
            }));
        } else {
            text.push_str(&format!(
                "v{} @{} {} {} by {} ({})\n  data:  {}\n",
                e.version,
                e.position,
                e.recorded_at.to_rfc3339(),
                e.event_type,
                e.actor.id,
                e.actor.role,
                e.data.to_value()
            ));
            if let Some(s) = after {
                text.push_str(&format!(
                    "  state: status={} assignee={} bill={} paid={} balance={}\n",
                    s.status,
                    s.assignee.map_or("-".to_owned(), |a| a.to_string()),
                    s.bill(),
                    s.paid,
                    s.balance()
                ));
            }
        }
    }
    if json {
        let doc = serde_json::json!({ "stream": stream, "events": steps });
        Ok(serde_json::to_string_pretty(&doc)? + "\n")
    } else {
        Ok(format!("{stream}: {} events\n{text}", events.len()))
    }
}

/// `ticket-{id}` for a ticket id, or the owner of the number's reservation stream.
async fn ticket_stream(store: &dyn EventStore, ticket: &str) -> anyhow::Result<StreamId> {
    if let Ok(id) = uuid::Uuid::parse_str(ticket) {
        return Ok(StreamId::for_aggregate(Ticket::STREAM_PREFIX, id));
    }
    let number = TicketNumber::parse("ticket", ticket)
        .map_err(|e| anyhow::anyhow!("{e} (or give the ticket id)"))?;
    let key = StreamId::new(domain::UniqueKey::TicketNumber(number.as_str()).stream_name())?;
    let claims = read_full_stream(store, &key).await?;
    let owner = claims.iter().rev().find_map(|e| {
        ReservationEvent::from_stored(&e.event_type, e.schema_version, e.data.raw())
            .ok()
            .flatten()
            .and_then(|r| r.holder().map(str::to_owned))
    });
    match owner {
        Some(owner) => Ok(StreamId::new(owner)?),
        None => bail!("no ticket numbered {}", number.as_str()),
    }
}
