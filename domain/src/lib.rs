//! The pure domain of the ticket ledger.
//!
//! Every aggregate exposes `decide(&state, command, now) -> Result<Vec<Event>, DomainError>` and an
//! infallible `evolve(state, &event) -> state`. Nothing here performs IO or reads the clock: time,
//! ids and facts about other aggregates arrive as arguments.

pub mod access;
mod aggregate;
mod customer;
mod device;
mod error;
mod event;
mod ids;
mod part;
pub mod priority;
mod reservation;
#[cfg(test)]
mod rules_tests;
mod technician;
#[cfg(test)]
mod testing;
mod ticket;
mod user;
mod values;

pub use aggregate::{replay, Aggregate};
pub use customer::{
    Customer, CustomerCommand, CustomerEvent, CustomerState, RegisterCustomer, UpdateCustomer,
};
pub use device::{
    warranty_expiry, CheckInDevice, Device, DeviceCommand, DeviceEvent, DeviceState,
    RegisterDevice, ServiceStatus,
};
pub use error::{DomainError, ValueError};
pub use event::{redact, DecodeError, EventPayload};
pub use ids::{CustomerId, DeviceId, NoteId, PartId, PaymentId, TechnicianId, TicketId, UserId};
pub use part::{AddPart, Part, PartCommand, PartEvent, PartState};
pub use reservation::{stream_id_of, ReservationEvent, UniqueKey};
pub use technician::{OnboardTechnician, Technician, TechnicianCommand, TechnicianEvent};
pub use ticket::{
    CustomerFacts, Decision, DeviceFacts, Feedback, PartFacts, PartLine, Quote, RaiseTicket,
    TechnicianFacts, Ticket, TicketCommand, TicketEvent, TicketState, TicketStatus, WarrantyClaim,
};
pub use user::{PasswordHash, RegisterUser, RoleGrant, User, UserCommand, UserEvent, UserState};
pub use values::{
    Category, Email, Impact, Money, PaymentMethod, Phone, Positive, Quantity, Rating, SerialNumber,
    Severity, Text, TicketNumber, Tier, Visibility,
};
