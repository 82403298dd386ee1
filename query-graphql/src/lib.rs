//! The read side: GraphQL over the read models (histories straight from the store), live
//! updates over WebSocket, and the reports as CSV files. Never writes.

mod access;
mod audit;
mod devices;
mod error;
mod freshness;
mod graphiql;
mod history;
pub mod limits;
mod live;
mod parse_cache;
mod people;
mod reports;
mod schema;
mod subscriptions;
mod tickets;
mod types;
mod websocket;

pub use audit::{
    audit_entries, AuditEntry, AuditFilter, ProjectionMonitor, ProjectionState, ProjectionStatus,
};
pub use error::QueryError;
pub use freshness::Freshness;

/// One-row reads by key: their pool (cached plans; see `build_schema`) and cache.
pub(crate) struct Lookups {
    pub(crate) pool: sqlx::PgPool,
    pub(crate) tickets: tickets::TicketCache,
    pub(crate) ticket_rows: async_graphql::dataloader::DataLoader<tickets::TicketLoader>,
    pub(crate) users: async_graphql::dataloader::DataLoader<people::UserLoader>,
}
pub use limits::MAX_DEPTH;
pub use schema::{build_schema, sdl, LedgerSchema, MAX_COMPLEXITY};
pub use types::MAX_PAGE;
pub use websocket::{
    MAX_CONNECTIONS_PER_USER, MAX_SUBSCRIPTIONS_PER_CONNECTION, MAX_WS_MESSAGE_BYTES,
};

use std::time::Duration;

use std::sync::Arc;

use async_graphql::{ErrorExtensions, ServerError};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use domain::access::Principal;
use domain::priority::PriorityPolicy;
use futures::future::BoxFuture;
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
/// Largest `POST /graphql` body (query and variables).
pub const MAX_GRAPHQL_BODY_BYTES: usize = 256 * 1024;
/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a bearer token for WebSocket connections (whose token arrives in `connection_init`).
pub trait Authenticator: Send + Sync + 'static {
    /// The principal of an `Authorization` value (`Bearer <token>`), as every door reads it.
    fn authenticate<'a>(&'a self, authorization: &'a str) -> BoxFuture<'a, Option<Principal>>;
}

#[derive(Clone)]
struct GraphqlState {
    schema: LedgerSchema,
    freshness: Freshness,
    authenticator: Arc<dyn Authenticator>,
    documents: parse_cache::ParsedDocuments,
    connections: websocket::Connections,
}

/// `GET /graphql` serves GraphiQL; `POST /graphql` answers queries; `/graphql/ws` serves
/// subscriptions (graphql-ws); `GET /reports/{name}.csv`.
pub fn router(
    schema: LedgerSchema,
    pool: PgPool,
    settings: Settings,
    freshness: Freshness,
    authenticator: Arc<dyn Authenticator>,
) -> Router {
    let state = GraphqlState {
        schema,
        freshness,
        authenticator,
        documents: parse_cache::ParsedDocuments::default(),
        connections: websocket::Connections::default(),
    };
    Router::new()
        .route(
            "/graphql",
            get(graphiql::page)
                .post(graphql)
                .with_state(state.clone())
                .layer(tower_http::limit::RequestBodyLimitLayer::new(
                    MAX_GRAPHQL_BODY_BYTES,
                )),
        )
        .route("/graphql/ws", get(websocket::websocket).with_state(state))
        .route("/graphiql/{file}", get(graphiql::file))
        .route(
            "/reports/{file}",
            get(reports::csv_report).with_state((pool, settings)),
        )
}

/// The answer to a document over the limits.
pub(crate) fn refused(refusal: limits::Refusal) -> async_graphql::Response {
    let error = QueryError::TooLarge(refusal)
        .extend()
        .into_server_error(async_graphql::Pos::default());
    async_graphql::Response::from_errors(vec![error])
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
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let mut request = request.into_inner();
    if let Err(refusal) = state.documents.prepare(&mut request) {
        return refused(refusal).into();
    }
    if let Some(Extension(principal)) = principal {
        request = request.data(principal);
    }
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
        if !state
            .freshness
            .wait_for(position, READ_YOUR_WRITES_WAIT)
            .await
        {
            return error_response(
                &format!("the read models have not reached position {position} within {READ_YOUR_WRITES_WAIT:?}; retry"),
                "NOT_CAUGHT_UP",
            );
        }
    }
    match tokio::time::timeout(QUERY_TIMEOUT, state.schema.execute(request)).await {
        Ok(response) => response.into(),
        Err(_) => error_response(
            &format!("the query ran longer than {QUERY_TIMEOUT:?}"),
            "TIMEOUT",
        ),
    }
}
