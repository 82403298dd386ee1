//! Projector runtime and read models.
//!
//! A projector applies a batch of events and advances its checkpoint in one PostgreSQL
//! transaction, so a crash between any two statements neither loses nor doubles an effect.

mod audit_log;
mod runtime;
mod service_desk;

pub use audit_log::AuditLog;
pub use runtime::{
    all_projectors, catch_up, checkpoints, projector, rebuild, run_all, AppendedTable, Changes,
    Checkpoint, Leases, ProjectionError, Projector, Write,
};
pub use service_desk::ServiceDesk;
