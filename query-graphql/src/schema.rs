use std::sync::Arc;

use async_graphql::{EmptyMutation, EmptySubscription, MergedObject, Schema};
use sqlx::PgPool;
use stream_store::EventStore;

use crate::audit::AuditQueries;
use crate::devices::DeviceQueries;
use crate::reports::ReportQueries;
use crate::tickets::TicketQueries;
use crate::Settings;

pub type LedgerSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

#[derive(MergedObject, Default)]
pub struct QueryRoot(TicketQueries, DeviceQueries, ReportQueries, AuditQueries);

/// Builds the schema over the read models in `pool` and the streams of `store`.
pub fn build_schema(pool: PgPool, store: Arc<dyn EventStore>, settings: Settings) -> LedgerSchema {
    Schema::build(QueryRoot::default(), EmptyMutation, EmptySubscription)
        .data(pool)
        .data(store)
        .data(settings)
        .limit_depth(12)
        .limit_complexity(5_000)
        .finish()
}

/// The schema in GraphQL SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), EmptyMutation, EmptySubscription)
        .finish()
        .sdl()
}

#[cfg(test)]
mod tests {
    /// `schema.graphql` at the workspace root must be what the code serves. Regenerate it with
    /// `cargo run -- schema > schema.graphql`.
    #[test]
    fn the_committed_schema_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::sdl(),
            "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
        );
    }
}
