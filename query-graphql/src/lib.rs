//! The read side: GraphQL over the read models (histories straight from the store), and the
//! reports as CSV files. Never writes.

mod audit;
mod devices;
mod error;
mod history;
mod reports;
mod schema;
mod tickets;
mod types;

pub use error::QueryError;
pub use schema::{build_schema, sdl, LedgerSchema};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQL;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use domain::priority::PriorityPolicy;
use sqlx::PgPool;

/// What queries need to know of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: PriorityPolicy,
    /// A warranty is `EXPIRING_SOON` within this many days of its expiry.
    pub expiring_soon_days: i64,
}

/// `GET /graphql` serves GraphiQL; `POST /graphql` answers queries; `GET /reports/{name}.csv`.
pub fn router(schema: LedgerSchema, pool: PgPool, settings: Settings) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post_service(GraphQL::new(schema)))
        .route(
            "/reports/{file}",
            get(reports::csv_report).with_state((pool, settings)),
        )
}

async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
