//! The `ledger` binary's wiring: configuration, the embedded PostgreSQL, and `serve`.

mod config;
mod embedded;
mod listener;
mod migrate;
mod replay;
mod seed;
mod serve;

pub use config::Config;
pub use embedded::{EmbeddedError, EmbeddedPostgres};
pub use listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES, WRITE_STALL_TIMEOUT};
pub use migrate::{migrate, open_store};
pub use replay::replay;
pub use seed::seed_demo;
pub use serve::{connect_and_migrate, serve, Database, ServeOptions};

/// The workspace's migrations (stream store and read models), embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
