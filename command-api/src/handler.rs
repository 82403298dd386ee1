use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use domain::{
    CustomerId, Email, Impact, OnboardTechnician, Phone, RaiseTicket, RegisterCustomer,
    TechnicianCommand, TechnicianId, Text, TicketCommand, TicketId,
};
use serde::de::DeserializeOwned;
use stream_store::{Actor, AppendOutcome, CommandMetadata};
use uuid::Uuid;

use crate::dto::{self, CommandResponse, EventResponse, MAX_LONG_TEXT, MAX_NAME, MAX_SUBJECT};
use crate::service::now;
use crate::{ApiError, CommandService, MAX_BODY_BYTES};

/// Every command this API accepts, by name.
pub(crate) const COMMANDS: &[&str] = &[
    "RegisterCustomer",
    "OnboardTechnician",
    "DeactivateTechnician",
    "RaiseTicket",
    "AssignTechnician",
    "StartWork",
    "ResolveTicket",
    "CloseTicket",
];

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// `POST /commands/{name}`.
#[tracing::instrument(skip_all, fields(command = %name))]
pub(crate) async fn execute(
    State(service): State<Arc<CommandService>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommandResponse>), ApiError> {
    if !COMMANDS.contains(&name.as_str()) {
        return Err(ApiError::UnknownCommand(name));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
        _ => ApiError::malformed(rejection.body_text()),
    })?;
    let meta = metadata(&headers)?;

    // A repeated command answers what the first one did, before anything is decided again.
    if headers.contains_key(IDEMPOTENCY_KEY) {
        if let Some(previous) = service.store().find_command(meta.command_id).await? {
            return Ok(respond(previous, meta.command_id));
        }
    }
    let outcome = dispatch(&service, &name, &body, &meta).await?;
    Ok(respond(outcome, meta.command_id))
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const CORRELATION_ID: &str = "x-correlation-id";

fn metadata(headers: &HeaderMap) -> Result<CommandMetadata, ApiError> {
    let command_id = match headers.get(IDEMPOTENCY_KEY) {
        None => Uuid::new_v4(),
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
            // A UUID key is the command id itself; any other key names one.
            Uuid::parse_str(key)
                .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()))
        }
    };
    let correlation_id = match headers.get(CORRELATION_ID) {
        None => command_id,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v).ok())
            .ok_or_else(|| ApiError::malformed("X-Correlation-Id must be a UUID"))?,
    };
    Ok(CommandMetadata {
        command_id,
        correlation_id,
        causation_id: command_id,
        // Until sign-in exists every caller is anonymous; the actor is still recorded.
        actor: Actor {
            id: "anonymous".into(),
            role: "anonymous".into(),
        },
        recorded_at: now(),
    })
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
            .map(|e| EventResponse {
                event_type: e.event_type,
                event_id: e.event_id,
                version: e.version,
                position: e.position,
                data: e.data,
            })
            .collect(),
    };
    (status, Json(body))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Malformed {
        message: format!("body is not a valid command: {e}"),
        details: serde_json::json!({ "line": e.line(), "column": e.column() }),
    })
}

fn expected(v: Option<i64>) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n < 0 => Err(ApiError::malformed("expectedVersion must be 0 or more")),
        other => Ok(other),
    }
}

fn text(field: &'static str, raw: &str, max: usize) -> Result<Text, ApiError> {
    Ok(Text::parse(field, raw, max)?)
}

fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<Text>, ApiError> {
    raw.map(|r| text(field, r, max)).transpose()
}

async fn dispatch(
    service: &CommandService,
    name: &str,
    body: &[u8],
    meta: &CommandMetadata,
) -> Result<AppendOutcome, ApiError> {
    match name {
        "RegisterCustomer" => {
            let b: dto::RegisterCustomer = parse(body)?;
            let command = RegisterCustomer {
                customer_id: CustomerId::from_uuid(b.customer_id.unwrap_or_else(Uuid::new_v4)),
                name: text("name", &b.name, MAX_NAME)?,
                email: Email::parse("email", &b.email)?,
                phone: b
                    .phone
                    .as_deref()
                    .map(|p| Phone::parse("phone", p))
                    .transpose()?,
                location: optional_text("location", b.location.as_deref(), MAX_NAME)?,
                tier: b.tier.map_or(domain::Tier::Free, Into::into),
            };
            service
                .register_customer(command, expected(b.expected_version)?, meta)
                .await
        }
        "OnboardTechnician" => {
            let b: dto::OnboardTechnician = parse(body)?;
            let command = OnboardTechnician {
                technician_id: TechnicianId::from_uuid(
                    b.technician_id.unwrap_or_else(Uuid::new_v4),
                ),
                name: text("name", &b.name, MAX_NAME)?,
                email: Email::parse("email", &b.email)?,
            };
            service
                .onboard_technician(command, expected(b.expected_version)?, meta)
                .await
        }
        "DeactivateTechnician" => {
            let b: dto::DeactivateTechnician = parse(body)?;
            let command = TechnicianCommand::Deactivate {
                reason: optional_text("reason", b.reason.as_deref(), MAX_LONG_TEXT)?,
            };
            let id = TechnicianId::from_uuid(b.technician_id);
            service
                .technician_command(id, command, expected(b.expected_version)?, meta)
                .await
        }
        "RaiseTicket" => {
            let b: dto::RaiseTicket = parse(body)?;
            let ticket_id = TicketId::from_uuid(b.ticket_id.unwrap_or_else(Uuid::new_v4));
            let customer_id = CustomerId::from_uuid(b.customer_id);
            let subject = text("subject", &b.subject, MAX_SUBJECT)?;
            let description = text("description", &b.description, MAX_LONG_TEXT)?;
            let impact = Impact::parse("impact", b.impact)?;
            let (category, severity) = (b.category.into(), b.severity.into());
            let build = |number, customer| RaiseTicket {
                ticket_id,
                number,
                customer_id,
                customer,
                category,
                subject: subject.clone(),
                description: description.clone(),
                severity,
                impact,
            };
            service
                .raise_ticket(
                    ticket_id,
                    customer_id,
                    build,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "AssignTechnician" => {
            let b: dto::AssignTechnician = parse(body)?;
            let technician_id = TechnicianId::from_uuid(b.technician_id);
            let technician = service.technician_facts(technician_id).await?;
            let command = TicketCommand::AssignTechnician {
                technician_id,
                technician,
            };
            let id = TicketId::from_uuid(b.ticket_id);
            service
                .ticket_command(id, command, expected(b.expected_version)?, meta)
                .await
        }
        "StartWork" => {
            let b: dto::StartWork = parse(body)?;
            let id = TicketId::from_uuid(b.ticket_id);
            service
                .ticket_command(
                    id,
                    TicketCommand::StartWork,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "ResolveTicket" => {
            let b: dto::ResolveTicket = parse(body)?;
            let command = TicketCommand::Resolve {
                resolution: text("resolution", &b.resolution, MAX_LONG_TEXT)?,
            };
            let id = TicketId::from_uuid(b.ticket_id);
            service
                .ticket_command(id, command, expected(b.expected_version)?, meta)
                .await
        }
        "CloseTicket" => {
            let b: dto::CloseTicket = parse(body)?;
            let id = TicketId::from_uuid(b.ticket_id);
            service
                .ticket_command(
                    id,
                    TicketCommand::Close,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        other => Err(ApiError::UnknownCommand(other.to_owned())),
    }
}
