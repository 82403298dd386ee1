//! Projector runtime and read models.
//!
//! A projector applies a batch of events and advances its checkpoint in one PostgreSQL
//! transaction, so a crash between any two statements neither loses nor doubles an effect.

mod audit_log;
mod runtime;
mod ticket_queue;

pub use audit_log::AuditLog;
pub use runtime::{
    all_projectors, catch_up, checkpoints, run_all, Checkpoint, ProjectionError, Projector,
};
pub use ticket_queue::TicketQueue;
