//! Subscriptions over WebSocket (graphql-ws, and the older subscriptions-transport-ws), with
//! the same doors as queries: a token is required in `connection_init` (or the upgrade
//! request's `Authorization` header), documents pass the same limits, each subscription is
//! authorised by its resolver as the matching query is, and the socket is closed within
//! seconds of its session ending (logout, password or role change, deactivation, expiry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, ErrorExtensions};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::UserId;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::error::QueryError;
use crate::{parse_cache, refused, Authenticator, GraphqlState, LedgerSchema};

/// Largest WebSocket message (and frame) a subscriber may send.
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;
/// Operations (subscriptions) open at once on one socket.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 32;
/// Sockets one user may hold open at once (in this process).
pub const MAX_CONNECTIONS_PER_USER: usize = 8;
/// How often an open socket's token is checked again.
const SESSION_CHECK: Duration = Duration::from_secs(2);
/// How long a socket may stay open without a successful `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open sockets per user.
#[derive(Clone, Default)]
pub(crate) struct Connections(Arc<Mutex<HashMap<UserId, usize>>>);

/// One socket's place in `Connections`, given back when dropped.
struct Slot {
    connections: Connections,
    user: UserId,
}

impl Connections {
    fn take(&self, user: UserId) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(user).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_USER {
            return None;
        }
        *count += 1;
        Some(Slot {
            connections: self.clone(),
            user,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.connections.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// The schema behind one socket: documents are checked against the limits (and parsed through
/// the cache) as over HTTP, and at most `MAX_SUBSCRIPTIONS_PER_CONNECTION` run at once.
#[derive(Clone)]
struct Guarded {
    schema: LedgerSchema,
    documents: parse_cache::ParsedDocuments,
    open: Arc<AtomicUsize>,
}

/// Counts an operation open on its socket while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn error(message: &str, code: &'static str) -> async_graphql::Response {
    let error = async_graphql::Error::new(message)
        .extend_with(|_, e| e.set("code", code))
        .into_server_error(async_graphql::Pos::default());
    async_graphql::Response::from_errors(vec![error])
}

impl async_graphql::Executor for Guarded {
    async fn execute(&self, mut request: async_graphql::Request) -> async_graphql::Response {
        if let Err(refusal) = self.documents.prepare(&mut request) {
            return refused(refusal);
        }
        // The same bound as over HTTP.
        match tokio::time::timeout(crate::QUERY_TIMEOUT, self.schema.execute(request)).await {
            Ok(response) => response,
            Err(_) => error(
                &format!("the query ran longer than {:?}", crate::QUERY_TIMEOUT),
                "TIMEOUT",
            ),
        }
    }

    fn execute_stream(
        &self,
        mut request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        if let Err(refusal) = self.documents.prepare(&mut request) {
            return futures::stream::once(async move { refused(refusal) }).boxed();
        }
        if self.open.fetch_add(1, Ordering::SeqCst) >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            self.open.fetch_sub(1, Ordering::SeqCst);
            let message =
                format!("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection");
            return futures::stream::once(async move { error(&message, "TOO_MANY_SUBSCRIPTIONS") })
                .boxed();
        }
        let open = Open(self.open.clone());
        self.schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(move |response| {
                let _counted = &open;
                response
            })
            .boxed()
    }
}

/// `GET /graphql/ws`.
pub(crate) async fn websocket(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let GraphqlState {
        schema,
        authenticator,
        documents,
        connections,
        ..
    } = state;
    let executor = Guarded {
        schema,
        documents,
        open: Arc::default(),
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |stream| async move {
            let session: Arc<Mutex<Option<(String, Slot)>>> = Arc::default();
            let (init_session, init_auth) = (session.clone(), authenticator.clone());
            let socket = GraphQLWebSocket::new(stream, executor, protocol)
                .on_connection_init(move |payload: serde_json::Value| async move {
                    let token = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
                        .map(str::to_owned)
                        .or(header_token);
                    let Some(token) = token else {
                        return Err(QueryError::Unauthenticated.extend());
                    };
                    let Some(principal) = init_auth.authenticate(&token).await else {
                        return Err("the token is invalid or expired".into());
                    };
                    let Some(slot) = connections.take(principal.user_id) else {
                        return Err(format!(
                            "at most {MAX_CONNECTIONS_PER_USER} open connections per user"
                        )
                        .into());
                    };
                    *init_session.lock().unwrap_or_else(|p| p.into_inner()) = Some((token, slot));
                    let mut data = Data::default();
                    data.insert(principal);
                    Ok(data)
                })
                .serve();
            tokio::select! {
                () = socket => {}
                () = session_ends(&session, &*authenticator) => {}
            }
        })
}

/// Returns when the socket's session has ended (its token no longer authenticates), or when
/// no session began within `INIT_TIMEOUT`.
async fn session_ends(session: &Mutex<Option<(String, Slot)>>, authenticator: &dyn Authenticator) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(SESSION_CHECK);
    loop {
        tick.tick().await;
        let token = session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(token, _)| token.clone());
        let ended = match token {
            None => started.elapsed() > INIT_TIMEOUT,
            Some(token) => authenticator.authenticate(&token).await.is_none(),
        };
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_a_bounded_number_of_connections() {
        let connections = Connections::default();
        let user = UserId::from_uuid(uuid::Uuid::from_u128(1));
        let slots: Vec<Slot> = (0..MAX_CONNECTIONS_PER_USER)
            .map(|_| connections.take(user).expect("under the cap"))
            .collect();
        assert!(connections.take(user).is_none());
        drop(slots);
        assert!(connections.take(user).is_some());
    }
}
