use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptyMutation, MergedObject, Schema};
use sqlx::PgPool;
use stream_store::EventStore;

use crate::audit::AuditQueries;
use crate::devices::DeviceQueries;
use crate::freshness::Freshness;
use crate::reports::ReportQueries;
use crate::subscriptions::SubscriptionRoot;
use crate::tickets::TicketQueries;
use crate::Settings;

/// How long a `ticket(id:)` read waits for others to share its query: short against the
/// round trip it saves under load, and the only wait when alone.
const LOOKUP_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_micros(500);

/// Most complex query accepted (each field counts 1, a connection's nodes times `first`).
/// Depth and the number of fields are bounded before this is computed (`limits`), which also
/// exempts introspection from the depth limit.
pub const MAX_COMPLEXITY: usize = 5_000;

pub type LedgerSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

#[derive(MergedObject, Default)]
pub struct QueryRoot(TicketQueries, DeviceQueries, ReportQueries, AuditQueries);

/// Builds the schema over the read models in `pool` and the streams of `store`.
/// `pool` plans each query with its values (searches take optional filters); `lookups` keeps
/// cached plans, for one-row reads by key.
pub fn build_schema(
    pool: PgPool,
    lookups: PgPool,
    store: Arc<dyn EventStore>,
    settings: Settings,
    freshness: Freshness,
    monitor: Arc<dyn crate::audit::ProjectionMonitor>,
) -> LedgerSchema {
    let lookups_for_feed = lookups.clone();
    let queue_pool = pool.clone();
    Schema::build(QueryRoot::default(), EmptyMutation, SubscriptionRoot)
        .data(pool)
        .data(crate::Lookups {
            ticket_rows: DataLoader::new(
                crate::tickets::TicketLoader(lookups.clone()),
                tokio::spawn,
            )
            .delay(LOOKUP_BATCH_WINDOW),
            users: DataLoader::new(crate::people::UserLoader(lookups.clone()), tokio::spawn),
            pool: lookups,
            tickets: crate::tickets::TicketCache::default(),
        })
        .data(crate::live::TicketFeed::start(
            lookups_for_feed,
            freshness.clone(),
        ))
        .data(crate::live::QueueFeed::start(
            queue_pool,
            settings.clone(),
            freshness.clone(),
        ))
        .data(freshness)
        .data(store)
        .data(settings)
        .data(monitor)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in GraphQL SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), EmptyMutation, SubscriptionRoot)
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
