//! `POST /commands/{name}`: authentication, the command's metadata (ids, idempotency), the
//! role gate, a repeat's stored answer, then the command itself (`commands`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use domain::access::{Action, Principal};
use stream_store::{Actor, AppendOutcome, CommandMetadata};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::commands::{self, Access, Declared};
use crate::dto::{CommandResponse, EventResponse};
use crate::service::now;
use crate::{ApiError, CommandService, MAX_BODY_BYTES};

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// `POST /commands/{name}`.
#[tracing::instrument(skip_all, fields(command = %name))]
pub(crate) async fn execute(
    State(service): State<Arc<CommandService>>,
    Path(name): Path<String>,
    auth: Option<Extension<Authenticated>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    let Some(Extension(auth)) = auth else {
        return Err(ApiError::Unauthenticated(
            "sign in first: POST /auth/login, then send Authorization: Bearer <token>".into(),
        ));
    };
    let Some(command) = commands::find(&name) else {
        return Err(ApiError::UnknownCommand(name));
    };
    if auth.must_change_password && name != "ChangePassword" {
        return Err(ApiError::PasswordChangeRequired);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
        _ => ApiError::malformed(rejection.body_text()),
    })?;
    let meta = metadata(
        &headers,
        &auth.principal,
        (&name, &body),
        service.request_key(),
    )?;
    role_gate(&auth.principal, &command)?;

    // A repeated command answers what the first one did, before anything is decided again:
    // only to the user who sent it (the command id derives from the user and the key), and
    // only for the same command and body (the events' causation id names the request).
    if headers.get(IDEMPOTENCY_KEY).is_some_and(|v| !v.is_empty()) {
        if let Some(previous) = service.store().find_command(meta.command_id).await? {
            return Ok(respond(same_request(previous, &meta)?, meta.command_id));
        }
    }
    let outcome = commands::dispatch(command.name, &body, &service, &auth.principal, &meta).await?;
    // A concurrent first use of the key with another body may have won the append.
    let outcome = if outcome.duplicate {
        same_request(outcome, &meta)?
    } else {
        outcome
    };
    Ok(respond(outcome, meta.command_id))
}

/// `outcome`, stored for this command id, if it answered the very request `meta` describes.
fn same_request(outcome: AppendOutcome, meta: &CommandMetadata) -> Result<AppendOutcome, ApiError> {
    match outcome.events.first() {
        Some(first) if first.causation_id != meta.causation_id => {
            Err(ApiError::IdempotencyKeyReused)
        }
        _ => Ok(outcome),
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const CORRELATION_ID: &str = "x-correlation-id";

/// The command's metadata. With an `Idempotency-Key` the command id derives from the signed-in
/// user and the key (another user's same key is another command); the causation id names the
/// request (command id, command name and body), so that a key's reuse for another request is
/// told apart from its repetition. A client's `X-Correlation-Id` is likewise taken within the
/// user's own namespace: no one can put their events into another user's correlation.
fn metadata(
    headers: &HeaderMap,
    principal: &Principal,
    (name, body): (&str, &[u8]),
    request_key: &[u8; 32],
) -> Result<CommandMetadata, ApiError> {
    // An empty header counts as absent.
    let present = |name: &str| headers.get(name).filter(|v| !v.is_empty());
    let user = principal.user_id.to_string();
    let command_id = match present(IDEMPOTENCY_KEY) {
        None => Uuid::now_v7(),
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
                .ok_or_else(|| {
                    ApiError::malformed(format!(
                        "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                    ))
                })?;
            Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{user}\0{key}").as_bytes())
        }
    };
    let correlation_id = match present(CORRELATION_ID) {
        None => command_id,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v).ok())
            .map(|given| Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{user}\0{given}").as_bytes()))
            .ok_or_else(|| ApiError::malformed("X-Correlation-Id must be a UUID"))?,
    };
    Ok(CommandMetadata {
        command_id,
        correlation_id,
        causation_id: request_id(command_id, (name, body), request_key),
        actor: Actor {
            id: principal.user_id.to_string(),
            role: principal.role.label().to_owned(),
        },
        recorded_at: now(),
    })
}

/// The id of one request: its command id, command name and body (as JSON, so that spacing and
/// key order do not make another request of the same content). A password enters only as its
/// HMAC under the server's `request_key`: the id is stored (as the events' causation id) and
/// must not let anyone who reads it test guesses against it, yet another password is another
/// request.
fn request_id(command_id: Uuid, (name, body): (&str, &[u8]), request_key: &[u8; 32]) -> Uuid {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            if let serde_json::Value::Object(fields) = &mut value {
                for (k, v) in fields.iter_mut() {
                    if k.to_ascii_lowercase().contains("password") {
                        let mac = crate::service::keyed(request_key, v.to_string().as_bytes());
                        *v = serde_json::Value::String(
                            mac.iter().map(|b| format!("{b:02x}")).collect(),
                        );
                    }
                }
            }
            value.to_string().into_bytes()
        }
        Err(_) => body.to_vec(),
    };
    let mut request = Vec::with_capacity(name.len() + 1 + canonical.len());
    request.extend_from_slice(name.as_bytes());
    request.push(0);
    request.extend_from_slice(&canonical);
    crate::service::derive_id(command_id, &request)
}

fn respond(outcome: AppendOutcome, command_id: Uuid) -> (StatusCode, Json<CommandResponse>) {
    let status = if outcome.created_stream() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let command_id = outcome.events.first().map_or(command_id, |e| e.command_id);
    let body = CommandResponse {
        stream_id: outcome.stream_id.to_string(),
        version: outcome.version,
        position: outcome.position,
        command_id,
        events: outcome
            .events
            .into_iter()
            .map(|e| {
                // The answer may be logged or cached on its way: no password hash in it.
                let mut data = e.data.to_value();
                domain::redact(&mut data);
                EventResponse {
                    event_type: e.event_type,
                    event_id: e.event_id,
                    version: e.version,
                    position: e.position,
                    data,
                }
            })
            .collect(),
    };
    (status, Json(body))
}

/// Refuses with 403 a command only admins may send, to anyone else. Checked before a stored
/// outcome is replayed; a command open to others checks its target when it runs.
fn role_gate(principal: &Principal, command: &Declared) -> Result<(), ApiError> {
    if command.access == Access::Admins && !principal.may(Action::Administer, None) {
        return Err(ApiError::Forbidden(format!("send {}", command.name)));
    }
    Ok(())
}

/// Runs one command as `principal` from a JSON body, with the same parsing, rules and access
/// checks as `POST /commands/{name}` (for `ledger seed` and other in-process callers).
pub async fn run_command(
    service: &CommandService,
    principal: &Principal,
    name: &str,
    body: &serde_json::Value,
) -> Result<AppendOutcome, ApiError> {
    let Some(command) = commands::find(name) else {
        return Err(ApiError::UnknownCommand(name.to_owned()));
    };
    role_gate(principal, &command)?;
    let body = serde_json::to_vec(body).map_err(|e| ApiError::malformed(e.to_string()))?;
    let meta = metadata(
        &HeaderMap::new(),
        principal,
        (name, &body),
        service.request_key(),
    )?;
    commands::dispatch(command.name, &body, service, principal, &meta).await
}
