//! The GraphQL endpoint: read models for lists and details, the stream store for history.

mod error;
mod schema;

pub use error::QueryError;
pub use schema::{build_schema, LedgerSchema};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQL;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

/// `GET /graphql` serves GraphiQL; `POST /graphql` answers queries.
pub fn router(schema: LedgerSchema) -> Router {
    Router::new().route("/graphql", get(graphiql).post_service(GraphQL::new(schema)))
}

async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
