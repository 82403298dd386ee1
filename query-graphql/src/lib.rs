//! The read side: GraphQL over the read models (histories straight from the store), live
//! updates over WebSocket, and the reports as CSV files. Never writes.

mod audit;
mod devices;
mod error;
mod freshness;
mod history;
mod reports;
mod schema;
mod subscriptions;
mod tickets;
mod types;

pub use error::QueryError;
pub use freshness::Freshness;
pub use schema::{build_schema, sdl, LedgerSchema, MAX_COMPLEXITY, MAX_DEPTH};
pub use types::MAX_PAGE;

use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql::{ErrorExtensions, ServerError};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse, GraphQLSubscription};
use axum::extract::State;
use axum::http::HeaderMap;
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

/// Header naming the log position a query must see (a command's `position`).
pub const POSITION_HEADER: &str = "x-ledger-position";
/// Longest a query waits for the read models to reach that position.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);
/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct GraphqlState {
    schema: LedgerSchema,
    freshness: Freshness,
}

/// `GET /graphql` serves GraphiQL; `POST /graphql` answers queries; `/graphql/ws` serves
/// subscriptions (graphql-ws); `GET /reports/{name}.csv`.
pub fn router(
    schema: LedgerSchema,
    pool: PgPool,
    settings: Settings,
    freshness: Freshness,
) -> Router {
    let state = GraphqlState {
        schema: schema.clone(),
        freshness,
    };
    Router::new()
        .route("/graphql", get(graphiql).post(graphql).with_state(state))
        .route_service("/graphql/ws", GraphQLSubscription::new(schema))
        .route(
            "/reports/{file}",
            get(reports::csv_report).with_state((pool, settings)),
        )
}

fn error_response(message: &str, code: &'static str) -> GraphQLResponse {
    let error: ServerError = async_graphql::Error::new(message)
        .extend_with(|_, e| e.set("code", code))
        .into_server_error(async_graphql::Pos::default());
    async_graphql::Response::from_errors(vec![error]).into()
}

/// Answers a query, first waiting (bounded) until the read models have applied the position
/// in `X-Ledger-Position`, and within the query timeout.
async fn graphql(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    if let Some(value) = headers.get(POSITION_HEADER) {
        let Some(position) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|p| *p >= 0)
        else {
            return error_response(
                "X-Ledger-Position must be a log position (a whole number, 0 or more)",
                "BAD_USER_INPUT",
            );
        };
        match state.freshness.wait_for(position, READ_YOUR_WRITES_WAIT).await {
            Ok(true) => {}
            Ok(false) => {
                return error_response(
                    &format!("the read models have not reached position {position} within {READ_YOUR_WRITES_WAIT:?}; retry"),
                    "NOT_CAUGHT_UP",
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "read-your-writes wait failed");
                return error_response("internal error", "INTERNAL");
            }
        }
    }
    match tokio::time::timeout(QUERY_TIMEOUT, state.schema.execute(request.into_inner())).await {
        Ok(response) => response.into(),
        Err(_) => error_response(
            &format!("the query ran longer than {QUERY_TIMEOUT:?}"),
            "TIMEOUT",
        ),
    }
}

async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}
