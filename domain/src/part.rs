use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;
use crate::{Aggregate, DomainError, Money, PartId, Quantity, Text, TicketId};

#[derive(Debug, Clone)]
pub struct AddPart {
    pub part_id: PartId,
    pub name: Text,
    pub sku: Option<Text>,
    pub unit_cost: Money,
    pub initial_stock: u32,
}

#[derive(Debug, Clone)]
pub enum PartCommand {
    Add(AddPart),
    ReceiveStock {
        quantity: Quantity,
        reference: Option<Text>,
    },
    /// Corrects the count after a stock-take; the result never goes below zero.
    AdjustStock {
        delta: i64,
        reason: Text,
    },
    /// Takes units for a ticket.
    Use {
        ticket_id: TicketId,
        quantity: Quantity,
    },
    /// Gives back units taken for a ticket that could not record them.
    Return {
        ticket_id: TicketId,
        quantity: Quantity,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum PartEvent {
    PartAdded {
        part_id: PartId,
        name: Text,
        sku: Option<Text>,
        unit_cost: Money,
        initial_stock: u32,
        added_at: DateTime<Utc>,
    },
    StockReceived {
        quantity: u32,
        reference: Option<Text>,
        received_at: DateTime<Utc>,
    },
    StockAdjusted {
        delta: i64,
        reason: Text,
        adjusted_at: DateTime<Utc>,
    },
    StockUsed {
        ticket_id: TicketId,
        quantity: u32,
        unit_cost: Money,
        used_at: DateTime<Utc>,
    },
    StockReturned {
        ticket_id: TicketId,
        quantity: u32,
        returned_at: DateTime<Utc>,
    },
}
event_payload!(PartEvent {
    PartAdded,
    StockReceived,
    StockAdjusted,
    StockUsed,
    StockReturned,
});

/// A spare part in the inventory. `None` until added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part(Option<PartState>);

#[derive(Debug, Clone, PartialEq)]
pub struct PartState {
    pub id: PartId,
    pub name: Text,
    pub unit_cost: Money,
    pub stock: u32,
}

impl Part {
    pub fn state(&self) -> Option<&PartState> {
        self.0.as_ref()
    }
}

impl Aggregate for Part {
    type Command = PartCommand;
    type Event = PartEvent;
    const STREAM_PREFIX: &'static str = "part";

    fn decide(
        &self,
        command: PartCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<PartEvent>, DomainError> {
        let p = match (command, &self.0) {
            (PartCommand::Add(_), Some(_)) => return Err(DomainError::PartAlreadyAdded),
            (PartCommand::Add(a), None) => {
                return Ok(vec![PartEvent::PartAdded {
                    part_id: a.part_id,
                    name: a.name,
                    sku: a.sku,
                    unit_cost: a.unit_cost,
                    initial_stock: a.initial_stock,
                    added_at: now,
                }])
            }
            (_, None) => return Err(DomainError::NotFound { kind: "part" }),
            (command, Some(p)) => (command, p),
        };
        let (command, p) = p;
        let event = match command {
            PartCommand::Add(_) => return Err(DomainError::PartAlreadyAdded),
            PartCommand::ReceiveStock {
                quantity,
                reference,
            } => PartEvent::StockReceived {
                quantity: quantity.get(),
                reference,
                received_at: now,
            },
            PartCommand::AdjustStock { delta, reason } => {
                if delta == 0 {
                    return Err(DomainError::NothingToChange);
                }
                if i64::from(p.stock) + delta < 0 {
                    return Err(DomainError::InsufficientStock {
                        available: p.stock,
                        requested: u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX),
                    });
                }
                PartEvent::StockAdjusted {
                    delta,
                    reason,
                    adjusted_at: now,
                }
            }
            PartCommand::Use {
                ticket_id,
                quantity,
            } => {
                let quantity = quantity.get();
                if quantity > p.stock {
                    return Err(DomainError::InsufficientStock {
                        available: p.stock,
                        requested: quantity,
                    });
                }
                PartEvent::StockUsed {
                    ticket_id,
                    quantity,
                    unit_cost: p.unit_cost,
                    used_at: now,
                }
            }
            PartCommand::Return {
                ticket_id,
                quantity,
            } => PartEvent::StockReturned {
                ticket_id,
                quantity: quantity.get(),
                returned_at: now,
            },
        };
        Ok(vec![event])
    }

    fn evolve(self, event: &PartEvent) -> Self {
        match (event.clone(), self.0) {
            (
                PartEvent::PartAdded {
                    part_id,
                    name,
                    unit_cost,
                    initial_stock,
                    ..
                },
                _,
            ) => Part(Some(PartState {
                id: part_id,
                name,
                unit_cost,
                stock: initial_stock,
            })),
            (_, None) => Part(None),
            (event, Some(mut p)) => {
                match event {
                    PartEvent::PartAdded { .. } => {}
                    PartEvent::StockReceived { quantity, .. }
                    | PartEvent::StockReturned { quantity, .. } => {
                        p.stock = p.stock.saturating_add(quantity)
                    }
                    PartEvent::StockAdjusted { delta, .. } => {
                        let stock = (i64::from(p.stock) + delta).clamp(0, i64::from(u32::MAX));
                        p.stock = u32::try_from(stock).unwrap_or(0);
                    }
                    PartEvent::StockUsed { quantity, .. } => {
                        p.stock = p.stock.saturating_sub(quantity)
                    }
                }
                Part(Some(p))
            }
        }
    }
}
