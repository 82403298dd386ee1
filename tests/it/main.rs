//! Integration tests: one binary, a private PostgreSQL cluster started by the harness, one
//! database per test.

mod auth;
mod e2e;
mod embedded;
mod graphql;
mod harness;
mod hostile;
mod migrate;
mod projections;
mod read_models;
mod restart;
mod store;
mod stress;
mod subscriptions;
mod workflows;
