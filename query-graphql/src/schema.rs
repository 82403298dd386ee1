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
