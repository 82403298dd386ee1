//! The command side over HTTP: `POST /commands/{CommandName}` and `GET /openapi.json`.

mod auth;
mod commands;
mod dto;
mod error;
mod handler;
mod openapi;
mod service;
mod session;
mod throttle;
mod warm;

pub use auth::{bootstrap_admin, generate_password, hash_password, Authenticated, TokenService};
pub use error::ApiError;
pub use handler::run_command;
pub use service::CommandService;
pub use session::{authenticate, bearer_token};
pub use throttle::Throttle;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use domain::priority::PriorityPolicy;
use stream_store::EventStore;

/// Largest command body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Routes of the command API.
pub fn router(
    store: Arc<dyn EventStore>,
    policy: PriorityPolicy,
    tokens: Arc<TokenService>,
) -> Router {
    let service = Arc::new(
        CommandService::new(store, policy)
            .with_throttle(tokens.throttle().clone())
            .with_request_key(tokens.request_key()),
    );
    let auth = Router::new()
        .route("/auth/login", post(session::login))
        .route("/auth/refresh", post(session::refresh))
        .route("/auth/logout", post(session::logout))
        .route("/auth/me", get(session::me))
        .with_state(tokens);
    Router::new()
        .route("/commands/{name}", post(handler::execute))
        .route("/openapi.json", get(openapi::serve))
        .with_state(service)
        .merge(auth)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
