//! The command side over HTTP: `POST /commands/{CommandName}` and `GET /openapi.json`.

mod dto;
mod error;
mod handler;
mod openapi;
mod service;

pub use error::ApiError;
pub use service::CommandService;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use domain::priority::PriorityPolicy;
use stream_store::EventStore;

/// Largest command body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Routes of the command API.
pub fn router(store: Arc<dyn EventStore>, policy: PriorityPolicy) -> Router {
    let service = Arc::new(CommandService::new(store, policy));
    Router::new()
        .route("/commands/{name}", post(handler::execute))
        .route("/openapi.json", get(openapi::serve))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}
