//! Projector runtime and read models.
//!
//! A projector applies a batch of events and advances its checkpoint in one PostgreSQL
//! transaction, so a crash between any two statements neither loses nor doubles an effect.

mod audit_log;
mod dead_letters;
mod runtime;
mod service_desk;
mod status;
mod users;

pub use audit_log::AuditLog;
pub use dead_letters::{
    dead_letters, retry, DeadLetter, OnPoison, PoisonPolicies, PoisonPolicy, RetryReport,
};
pub use runtime::{
    all_projectors, catch_up, catch_up_with, checkpoints, projector, rebuild, run_all,
    AppendedTable, Changes, Checkpoint, Leases, ProjectionError, Projector, Write,
};
pub use service_desk::ServiceDesk;
pub use status::{status, State, Status, STUCK_AFTER};
pub use users::Users;
