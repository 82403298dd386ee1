//! The service desk read models: customers, technicians, parts, devices (warranty and the
//! billing and delivery board) and tickets (queues and details). One projection, so that the
//! queries joining them always see one consistent position of the log.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_trait::async_trait;
use domain::{
    CustomerEvent, DeviceEvent, EventPayload, Money, PartEvent, TechnicianEvent, TicketEvent,
};
use lru::LruCache;
use serde_json::Value;
use sqlx::PgConnection;
use stream_store::{EventStore, RecordedEvent};
use uuid::Uuid;

use crate::{AppendedTable, Changes, ProjectionError, Projector, Write};

mod devices;
mod parts;
mod people;
mod tickets;

use devices::apply_device;
use parts::apply_part;
use people::{apply_customer, apply_technician};
use tickets::{Children, Evolving, TicketBatch, TicketRows};

pub struct ServiceDesk {
    /// Tickets as the last batches that touched them left them (`last` holds the version),
    /// remembered when a batch is computed, before it is written. The fold
    /// is a pure function of the log, so an entry is exactly the ticket a batch continues
    /// right after that version, whoever wrote the row and even if the batch that computed
    /// the entry rolled back; any other entry is ignored.
    recent: Mutex<LruCache<Uuid, Evolving>>,
}

/// Tickets kept in memory between batches (a few MiB).
const RECENT_TICKETS: usize = 8_192;

impl Default for ServiceDesk {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(RECENT_TICKETS).unwrap_or(NonZeroUsize::MIN);
        Self {
            recent: Mutex::new(LruCache::new(capacity)),
        }
    }
}

fn decode<E: EventPayload>(e: &RecordedEvent) -> Result<Option<E>, ProjectionError> {
    E::from_stored(&e.event_type, e.schema_version, e.data.raw()).map_err(|source| {
        ProjectionError::Decode {
            position: e.position,
            source,
        }
    })
}

/// The snake_case name serde gives a unit enum value (`in_progress`, `enterprise`, ...).
fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The id of an `{prefix}-{uuid}` stream.
fn stream_uuid(e: &RecordedEvent, prefix: &str) -> Option<Uuid> {
    domain::stream_id_of(e.stream_id.as_str(), prefix)
}

fn money(m: Money) -> i64 {
    m.minor_units()
}

#[async_trait]
impl Projector for ServiceDesk {
    fn name(&self) -> &'static str {
        "service_desk"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "customers",
            "technicians",
            "parts",
            "devices",
            "device_visit_tickets",
            "tickets",
            "ticket_notes",
            "ticket_parts",
            "ticket_payments",
        ]
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
        log: &dyn EventStore,
    ) -> Result<(), ProjectionError> {
        Box::new(self.changes(events, log).await?)
            .write(tx, Write::InPlace)
            .await
    }

    async fn prepare(
        &self,
        events: &[RecordedEvent],
        log: &dyn EventStore,
    ) -> Result<Option<Box<dyn Changes>>, ProjectionError> {
        Ok(Some(Box::new(self.changes(events, log).await?)))
    }

    /// A ticket's row is written whole at each change, with the stream's version.
    fn appended_in_rebuild(&self) -> &'static [AppendedTable] {
        &[AppendedTable {
            table: "tickets",
            key: "ticket_id",
            version: "version",
        }]
    }
}

impl ServiceDesk {
    /// What a batch writes, computed before any of it is written. Ticket rows are written once
    /// per batch (they are most of the log); the other tables, which no ticket write reads,
    /// event by event in log order.
    async fn changes(
        &self,
        events: &[RecordedEvent],
        log: &dyn EventStore,
    ) -> Result<BatchChanges, ProjectionError> {
        let mut tickets = TicketBatch {
            events: Vec::with_capacity(events.len()),
        };
        let mut others = Vec::new();
        for e in events {
            if let Some(event) = decode::<TicketEvent>(e)? {
                if let Some(id) =
                    stream_uuid(e, <domain::Ticket as domain::Aggregate>::STREAM_PREFIX)
                {
                    tickets.push(e, id, event);
                }
            } else if let Some(event) = decode::<DeviceEvent>(e)? {
                if let Some(id) =
                    stream_uuid(e, <domain::Device as domain::Aggregate>::STREAM_PREFIX)
                {
                    others.push(Other::Device(e.clone(), id, event));
                }
            } else if let Some(event) = decode::<CustomerEvent>(e)? {
                others.push(Other::Customer(e.clone(), event));
            } else if let Some(event) = decode::<TechnicianEvent>(e)? {
                others.push(Other::Technician(event));
            } else if let Some(event) = decode::<PartEvent>(e)? {
                if let Some(id) = stream_uuid(e, <domain::Part as domain::Aggregate>::STREAM_PREFIX)
                {
                    others.push(Other::Part(e.clone(), id, event));
                }
            }
        }
        let (children, rows) = tickets.rows(log, &self.recent).await?;
        Ok(BatchChanges {
            others,
            children,
            rows,
        })
    }
}

/// An event of the tables other than the tickets', decoded.
enum Other {
    Device(RecordedEvent, Uuid, DeviceEvent),
    Customer(RecordedEvent, CustomerEvent),
    Technician(TechnicianEvent),
    Part(RecordedEvent, Uuid, PartEvent),
}

/// Everything one batch writes.
struct BatchChanges {
    others: Vec<Other>,
    children: Children,
    rows: TicketRows,
}

#[async_trait]
impl Changes for BatchChanges {
    async fn write(
        self: Box<Self>,
        tx: &mut PgConnection,
        how: Write,
    ) -> Result<(), ProjectionError> {
        for other in self.others {
            match other {
                Other::Device(e, id, event) => apply_device(tx, &e, id, event).await?,
                Other::Customer(e, event) => apply_customer(tx, &e, event).await?,
                Other::Technician(event) => apply_technician(tx, event).await?,
                Other::Part(e, id, event) => apply_part(tx, &e, id, event).await?,
            }
        }
        self.children.insert(tx).await?;
        self.rows.write(tx, how).await
    }

    fn appended_keys(&self) -> Option<Vec<&[Uuid]>> {
        Some(vec![&self.rows.ticket_id])
    }
}
