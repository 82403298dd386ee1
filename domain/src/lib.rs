//! The pure domain of the ticket ledger.
//!
//! Every aggregate exposes `decide(&state, command, now) -> Result<Vec<Event>, DomainError>` and an
//! infallible `evolve(state, &event) -> state`. Nothing here performs IO or reads the clock: time,
//! ids and facts about other aggregates arrive as arguments.

mod aggregate;
mod customer;
mod error;
mod event;
mod ids;
pub mod priority;
mod reservation;
mod technician;
mod ticket;
mod values;

pub use aggregate::{replay, Aggregate};
pub use customer::{Customer, CustomerCommand, CustomerEvent, RegisterCustomer};
pub use error::{DomainError, ValueError};
pub use event::{DecodeError, EventPayload};
pub use ids::{CustomerId, TechnicianId, TicketId};
pub use reservation::ReservationEvent;
pub use technician::{OnboardTechnician, Technician, TechnicianCommand, TechnicianEvent};
pub use ticket::{
    CustomerFacts, RaiseTicket, TechnicianFacts, Ticket, TicketCommand, TicketEvent, TicketState,
    TicketStatus,
};
pub use values::{Category, Email, Impact, Phone, Severity, Text, TicketNumber, Tier};
