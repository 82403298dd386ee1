//! `POST /auth/login`, `/auth/refresh`, `/auth/logout`, `GET /auth/me`, and the middleware that
//! turns a bearer token into the request's `Authenticated` extension.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use domain::{Aggregate, Email, User, UserCommand};
use serde::{Deserialize, Serialize};
use stream_store::{Actor, CommandMetadata, ExpectedVersion, StreamId};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{
    load_user, principal_of, user_by_email, verify_password, AuthError, Authenticated,
    TokenService, TOKEN_TTL,
};
use crate::throttle::Key;
use crate::ApiError;

/// Reads `Authorization: Bearer …`; a valid token adds `Authenticated` to the request, an
/// invalid one is refused with 401 here; without a header the request goes on anonymous and
/// each endpoint decides.
pub async fn authenticate(
    State(tokens): State<Arc<TokenService>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(value) = request.headers().get(AUTHORIZATION) {
        let token = value.to_str().ok().and_then(bearer_token);
        let Some(token) = token else {
            return ApiError::Unauthenticated("Authorization must be `Bearer <token>`".into())
                .into_response();
        };
        match tokens.authenticate(token).await {
            Ok(auth) => {
                request.extensions_mut().insert(auth.principal.clone());
                request.extensions_mut().insert(auth);
            }
            Err(AuthError::Unavailable) => {
                return ApiError::Unavailable(stream_store::StoreError::Unavailable(
                    "cannot check the token while the store is down".into(),
                ))
                .into_response()
            }
            Err(e) => return ApiError::Unauthenticated(e.to_string()).into_response(),
        }
    }
    next.run(request).await
}

/// The token in `headers`, checked (for endpoints outside the middleware).
pub async fn bearer(
    tokens: &TokenService,
    headers: &HeaderMap,
) -> Result<Authenticated, AuthError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(AuthError::Missing)?;
    tokens.authenticate(token).await
}

/// The token of an `Authorization` value: `Bearer <token>`, the scheme in any case (RFC 7235).
/// The one reader of that header for every door (commands, GraphQL, WebSockets, CSV).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_read_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    #[schema(example = "admin@ledger.local")]
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires; renew before with `POST /auth/refresh`.
    pub expires_in: u64,
    pub user_id: Uuid,
    pub role: &'static str,
    pub customer_id: Option<Uuid>,
    pub technician_id: Option<Uuid>,
    /// A one-time password must be changed (ChangePassword) before anything else.
    pub must_change_password: bool,
}

fn meta_for(user: &domain::UserState, command_id: Uuid) -> CommandMetadata {
    CommandMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor: Actor {
            id: user.id.to_string(),
            role: user.grant.role.label().to_owned(),
        },
        recorded_at: Utc::now(),
    }
}

async fn record(
    tokens: &TokenService,
    user: &domain::UserState,
    command: UserCommand,
) -> Result<(), ApiError> {
    let stream = StreamId::for_aggregate(User::STREAM_PREFIX, user.id);
    let meta = meta_for(user, Uuid::new_v4());
    let state = load_state(tokens, user.id).await?;
    let events = state.decide(command, meta.recorded_at)?;
    let new: Vec<_> = crate::service::encode(&events, meta.command_id);
    // Any version: sessions never conflict with each other or with account changes.
    tokens
        .store()
        .append(&stream, ExpectedVersion::Any, new, &meta)
        .await?;
    Ok(())
}

async fn load_state(tokens: &TokenService, id: domain::UserId) -> Result<User, ApiError> {
    let stream = StreamId::for_aggregate(User::STREAM_PREFIX, id);
    let (user, _) = crate::warm::fold_after(tokens.store(), &stream, User::default(), 0).await?;
    Ok(user)
}

/// A token for `session`, issued as of `as_of`: a sign-in's token is dated when its password
/// check began, so that a password changed while it ran voids it (a token older than the
/// account's last credential change is refused).
fn token_response(
    tokens: &TokenService,
    user: &domain::UserState,
    session: Uuid,
    as_of: chrono::DateTime<Utc>,
) -> Result<Json<TokenResponse>, ApiError> {
    let access_token = tokens.issue(user, session, as_of)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_TTL.as_secs(),
        user_id: user.id.as_uuid(),
        role: user.grant.role.label(),
        customer_id: user.grant.customer_id.map(|c| c.as_uuid()),
        technician_id: user.grant.technician_id.map(|t| t.as_uuid()),
        must_change_password: user.must_change_password,
    }))
}

/// `POST /auth/login`: e-mail and password for a token. Failures slow further attempts
/// (`throttle.rs`): 429 with `Retry-After` while a delay runs.
pub async fn login(
    State(tokens): State<Arc<TokenService>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let request: LoginRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("body is not a login request: {e}")))?;
    let email = Email::parse("email", &request.email)?;
    if request.password.len() > 1024 {
        return Err(ApiError::InvalidCredentials);
    }
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let address = tokens.client_address(peer.map(|Extension(ConnectInfo(a))| a.ip()), forwarded);
    let pair = Key::pair(email.as_str(), &address);
    let others = [Key::account(email.as_str()), Key::address(&address)];
    let mut all = others.to_vec();
    all.push(pair.clone());
    tokens.throttle().reserve(&all).await?;
    let checked_at = Utc::now();
    let user = user_by_email(tokens.store(), &email).await?;
    let verified = match &user {
        Some(u) if u.active => verify_password(request.password, u.password_hash.clone()).await?,
        _ => {
            // Spend the same effort as a real check, so timing does not tell accounts apart.
            let _ = crate::auth::hash_password(request.password).await?;
            false
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        return Err(ApiError::InvalidCredentials);
    };
    tokens.throttle().succeeded(&[pair], &others).await?;
    let session = Uuid::new_v4();
    record(
        &tokens,
        &user,
        UserCommand::SignIn {
            session_id: session,
        },
    )
    .await?;
    token_response(&tokens, &user, session, checked_at)
}

/// The caller's valid token and the account it belongs to.
async fn signed_in(
    tokens: &TokenService,
    headers: &HeaderMap,
) -> Result<(Authenticated, domain::UserState), ApiError> {
    let auth = bearer(tokens, headers)
        .await
        .map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
    let user = load_user(tokens.store(), auth.principal.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("no such account".into()))?;
    Ok((auth, user))
}

/// `POST /auth/refresh`: a fresh token for the same session, while the current one is valid.
pub async fn refresh(
    State(tokens): State<Arc<TokenService>>,
    headers: HeaderMap,
) -> Result<Json<TokenResponse>, ApiError> {
    let (auth, user) = signed_in(&tokens, &headers).await?;
    token_response(&tokens, &user, auth.session_id, Utc::now())
}

/// `POST /auth/logout`: ends the session; its tokens are refused from then on.
pub async fn logout(
    State(tokens): State<Arc<TokenService>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (auth, user) = signed_in(&tokens, &headers).await?;
    record(
        &tokens,
        &user,
        UserCommand::SignOut {
            session_id: auth.session_id,
        },
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /auth/me`: who the token speaks for.
pub async fn me(
    State(tokens): State<Arc<TokenService>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, user) = signed_in(&tokens, &headers).await?;
    let p = principal_of(&user);
    Ok(Json(serde_json::json!({
        "userId": p.user_id, "email": user.email.as_str(), "name": user.name.as_str(), "role": p.role.label(),
        "customerId": p.customer_id, "technicianId": p.technician_id, "mustChangePassword": user.must_change_password,
    })))
}
