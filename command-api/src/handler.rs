use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use domain::access::{check_password_policy, Action, Principal, TicketParties};
use domain::{
    AddPart, CheckInDevice, CustomerCommand, CustomerId, DeviceCommand, DeviceId, Email, Impact,
    Money, NoteId, OnboardTechnician, PartCommand, PartId, PaymentId, Phone, RaiseTicket,
    RegisterCustomer, RegisterDevice, RegisterUser, RoleGrant, SerialNumber, TechnicianCommand,
    TechnicianFacts, TechnicianId, Text, TicketCommand, TicketId, UpdateCustomer, UserCommand,
    UserId, ValueError,
};

use crate::auth::{hash_password, load_user, verify_password, Authenticated};
use serde::de::DeserializeOwned;
use stream_store::{Actor, AppendOutcome, CommandMetadata};
use uuid::Uuid;

use crate::dto::{self, CommandResponse, EventResponse, MAX_LONG_TEXT, MAX_NAME, MAX_SUBJECT};
use crate::service::now;
use crate::throttle::Key;
use crate::{ApiError, CommandService, MAX_BODY_BYTES};

// Ids the server mints (command ids without an Idempotency-Key, new aggregates' ids) are
// UUIDv7: time-ordered, so each insert into the btree indexes keyed by them (the command
// log's, the read models' primary keys) lands at the right edge of the index instead of on
// a random leaf, as Marten's sequential GUIDs do. Random v4 keys made every write touch a
// cold page and cost ~10% of the throughput at 32 clients (BENCHMARKS.md, seventeenth
// round). The time inside them is an ordering aid, never read back as a fact.

/// Every command this API accepts, by name.
pub(crate) const COMMANDS: &[&str] = &[
    "RegisterCustomer",
    "UpdateCustomer",
    "ChangeCustomerTier",
    "OnboardTechnician",
    "DeactivateTechnician",
    "RegisterDevice",
    "ExtendWarranty",
    "CheckInDevice",
    "MarkReadyForDelivery",
    "DeliverDevice",
    "CloseDevice",
    "RescheduleDelivery",
    "RaiseTicket",
    "AssignTechnician",
    "StartWork",
    "AddNote",
    "QuoteRepair",
    "ApproveQuote",
    "RejectQuote",
    "UsePart",
    "CompleteRepair",
    "ResolveTicket",
    "CloseTicket",
    "CancelTicket",
    "ReopenTicket",
    "RecordPayment",
    "ClaimWarranty",
    "ApproveWarrantyClaim",
    "RejectWarrantyClaim",
    "SubmitFeedback",
    "AddPart",
    "ReceiveStock",
    "AdjustStock",
    "RegisterUser",
    "ChangeUserRole",
    "DeactivateUser",
    "ChangePassword",
];

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
    if !COMMANDS.contains(&name.as_str()) {
        return Err(ApiError::UnknownCommand(name));
    }
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
    role_gate(&auth.principal, &name)?;

    // A repeated command answers what the first one did, before anything is decided again:
    // only to the user who sent it (the command id derives from the user and the key), and
    // only for the same command and body (the events' causation id names the request).
    if headers.get(IDEMPOTENCY_KEY).is_some_and(|v| !v.is_empty()) {
        if let Some(previous) = service.store().find_command(meta.command_id).await? {
            return Ok(respond(same_request(previous, &meta)?, meta.command_id));
        }
    }
    let outcome = dispatch(&service, &auth.principal, &name, &body, &meta).await?;
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

/// An optional text; an empty or blank one counts as absent.
fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<Text>, ApiError> {
    raw.filter(|r| !r.trim().is_empty())
        .map(|r| text(field, r, max))
        .transpose()
}

fn money(field: &'static str, minor_units: i64) -> Result<Money, ApiError> {
    Ok(Money::parse(field, minor_units)?)
}

/// A count of units from 1 to `max`.
fn quantity(field: &'static str, raw: i64, max: u32) -> Result<u32, ApiError> {
    u32::try_from(raw)
        .ok()
        .filter(|q| (1..=max).contains(q))
        .ok_or_else(|| {
            ApiError::InvalidField(ValueError {
                field,
                reason: format!("must be a whole number from 1 to {max}"),
            })
        })
}

fn technician_id(id: Option<Uuid>) -> Option<TechnicianId> {
    id.map(TechnicianId::from_uuid)
}

/// Facts about an optional technician, looked up only when one is named.
async fn technician_facts(
    service: &CommandService,
    id: Option<TechnicianId>,
) -> Result<Option<TechnicianFacts>, ApiError> {
    match id {
        Some(id) => service.technician_facts(id).await,
        None => Ok(None),
    }
}

/// Largest quantity of parts in one use or delivery.
const MAX_QUANTITY: u32 = 1_000_000;
/// Most accessories recorded at one check-in.
const MAX_ACCESSORIES: usize = 50;

/// Refuses with 403 unless `principal` may do `action`.
fn allow(
    principal: &Principal,
    action: Action,
    ticket: Option<TicketParties>,
    what: &str,
) -> Result<(), ApiError> {
    if principal.may(action, ticket) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(what.to_owned()))
    }
}

/// Most commands are the admins' alone; `dispatch` says who else may send the others (and
/// for which target). Checked before a stored outcome is replayed.
fn role_gate(principal: &Principal, name: &str) -> Result<(), ApiError> {
    const OPEN_TO_OTHERS: &[&str] = &[
        "UpdateCustomer",
        "RegisterDevice",
        "RaiseTicket",
        "StartWork",
        "AddNote",
        "QuoteRepair",
        "ApproveQuote",
        "RejectQuote",
        "UsePart",
        "CompleteRepair",
        "ResolveTicket",
        "ClaimWarranty",
        "SubmitFeedback",
        "ChangePassword",
    ];
    if !OPEN_TO_OTHERS.contains(&name) {
        allow(principal, Action::Administer, None, &format!("send {name}"))?;
    }
    Ok(())
}

async fn dispatch(
    service: &CommandService,
    principal: &Principal,
    name: &str,
    body: &[u8],
    meta: &CommandMetadata,
) -> Result<AppendOutcome, ApiError> {
    role_gate(principal, name)?;
    // For ticket commands: whose ticket it is decides who may act on it.
    let ticket_gate = |action: Action, ticket: Uuid| async move {
        // Admins may act on any ticket: no need to look it up.
        if principal.role == domain::access::Role::Admin {
            return Ok(());
        }
        let parties = service.ticket_parties(TicketId::from_uuid(ticket)).await?;
        match parties {
            Some(p) => allow(
                principal,
                action,
                Some(p),
                &format!("send {name} for this ticket"),
            ),
            // Missing ticket: the command answers 404 by itself; only say so to who may know.
            None if principal.role.is_staff() => Ok(()),
            None => Err(ApiError::Forbidden(format!("send {name} for this ticket"))),
        }
    };
    match name {
        "RegisterCustomer" => {
            let b: dto::RegisterCustomer = parse(body)?;
            let command = RegisterCustomer {
                customer_id: CustomerId::from_uuid(b.customer_id.unwrap_or_else(Uuid::now_v7)),
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
        "UpdateCustomer" => {
            let b: dto::UpdateCustomer = parse(body)?;
            allow(
                principal,
                Action::UpdateCustomer(CustomerId::from_uuid(b.customer_id)),
                None,
                "change this customer",
            )?;
            let update = UpdateCustomer {
                name: optional_text("name", b.name.as_deref(), MAX_NAME)?,
                email: b
                    .email
                    .as_deref()
                    .map(|e| Email::parse("email", e))
                    .transpose()?,
                phone: b
                    .phone
                    .as_deref()
                    .map(|p| Phone::parse("phone", p))
                    .transpose()?,
                location: optional_text("location", b.location.as_deref(), MAX_NAME)?,
            };
            let id = CustomerId::from_uuid(b.customer_id);
            service
                .update_customer(id, update, expected(b.expected_version)?, meta)
                .await
        }
        "ChangeCustomerTier" => {
            let b: dto::ChangeCustomerTier = parse(body)?;
            let command = CustomerCommand::ChangeTier {
                tier: b.tier.into(),
            };
            let id = CustomerId::from_uuid(b.customer_id);
            service
                .customer_command(id, command, expected(b.expected_version)?, meta)
                .await
        }
        "OnboardTechnician" => {
            let b: dto::OnboardTechnician = parse(body)?;
            let command = OnboardTechnician {
                technician_id: TechnicianId::from_uuid(
                    b.technician_id.unwrap_or_else(Uuid::now_v7),
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
        "RegisterDevice" => {
            let b: dto::RegisterDevice = parse(body)?;
            allow(
                principal,
                Action::RegisterDeviceFor(CustomerId::from_uuid(b.customer_id)),
                None,
                "register a device for this customer",
            )?;
            let command = RegisterDevice {
                device_id: DeviceId::from_uuid(b.device_id.unwrap_or_else(Uuid::now_v7)),
                customer_id: CustomerId::from_uuid(b.customer_id),
                customer: None,
                name: text("name", &b.name, MAX_NAME)?,
                brand: optional_text("brand", b.brand.as_deref(), MAX_NAME)?,
                model: optional_text("model", b.model.as_deref(), MAX_NAME)?,
                serial_number: SerialNumber::parse("serialNumber", &b.serial_number)?,
                category: optional_text("category", b.category.as_deref(), MAX_NAME)?,
                purchase_date: b.purchase_date,
                warranty_months: b.warranty_months,
                invoice_ref: optional_text("invoiceRef", b.invoice_ref.as_deref(), MAX_NAME)?,
            };
            service
                .register_device(command, expected(b.expected_version)?, meta)
                .await
        }
        "ExtendWarranty" => {
            let b: dto::ExtendWarranty = parse(body)?;
            let command = DeviceCommand::ExtendWarranty {
                months: b.months,
                reason: optional_text("reason", b.reason.as_deref(), MAX_LONG_TEXT)?,
            };
            service
                .device_command(
                    DeviceId::from_uuid(b.device_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "CheckInDevice" => {
            let b: dto::CheckInDevice = parse(body)?;
            let accessories = b.accessories.unwrap_or_default();
            if accessories.len() > MAX_ACCESSORIES {
                return Err(ApiError::InvalidField(ValueError {
                    field: "accessories",
                    reason: format!("at most {MAX_ACCESSORIES}"),
                }));
            }
            let technician_id = technician_id(b.technician_id);
            let command = DeviceCommand::CheckIn(CheckInDevice {
                condition: text("condition", &b.condition, MAX_LONG_TEXT)?,
                accessories: accessories
                    .iter()
                    .map(|a| text("accessories", a, MAX_NAME))
                    .collect::<Result<_, _>>()?,
                reported_issue: text("reportedIssue", &b.reported_issue, MAX_LONG_TEXT)?,
                expected_delivery_date: b.expected_delivery_date,
                expected_budget: b
                    .expected_budget
                    .map(|m| money("expectedBudget", m))
                    .transpose()?,
                technician_id,
                technician: technician_facts(service, technician_id).await?,
            });
            service
                .device_command(
                    DeviceId::from_uuid(b.device_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "MarkReadyForDelivery" => {
            let b: dto::MarkReadyForDelivery = parse(body)?;
            service
                .device_command(
                    DeviceId::from_uuid(b.device_id),
                    DeviceCommand::MarkReadyForDelivery,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "DeliverDevice" => {
            let b: dto::DeliverDevice = parse(body)?;
            service
                .device_command(
                    DeviceId::from_uuid(b.device_id),
                    DeviceCommand::Deliver,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "CloseDevice" => {
            let b: dto::CloseDevice = parse(body)?;
            service
                .close_device(
                    DeviceId::from_uuid(b.device_id),
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "RescheduleDelivery" => {
            let b: dto::RescheduleDelivery = parse(body)?;
            let technician_id = technician_id(b.technician_id);
            let command = DeviceCommand::RescheduleDelivery {
                expected_delivery_date: b.expected_delivery_date,
                technician_id,
                technician: technician_facts(service, technician_id).await?,
            };
            service
                .device_command(
                    DeviceId::from_uuid(b.device_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "RaiseTicket" => {
            let b: dto::RaiseTicket = parse(body)?;
            allow(
                principal,
                Action::RaiseTicketFor(CustomerId::from_uuid(b.customer_id)),
                None,
                "raise a ticket for this customer",
            )?;
            // An id drawn here names no stream yet, so there is nothing to read before deciding.
            let drawn_id = b.ticket_id.is_none();
            let ticket_id = TicketId::from_uuid(b.ticket_id.unwrap_or_else(Uuid::now_v7));
            let customer_id = CustomerId::from_uuid(b.customer_id);
            let device_id = b.device_id.map(DeviceId::from_uuid);
            let subject = text("subject", &b.subject, MAX_SUBJECT)?;
            let description = text("description", &b.description, MAX_LONG_TEXT)?;
            let impact = Impact::parse("impact", b.impact)?;
            let (category, severity) = (b.category.into(), b.severity.into());
            let build = |number, customer, device, policy| RaiseTicket {
                ticket_id,
                number,
                customer_id,
                customer,
                device_id,
                device,
                category,
                subject: subject.clone(),
                description: description.clone(),
                severity,
                impact,
                policy,
            };
            service
                .raise_ticket(
                    (ticket_id, drawn_id),
                    build,
                    customer_id,
                    device_id,
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
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "StartWork" => {
            let b: dto::StartWork = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            ticket(
                service,
                b.ticket_id,
                TicketCommand::StartWork,
                b.expected_version,
                meta,
            )
            .await
        }
        "AddNote" => {
            let b: dto::AddNote = parse(body)?;
            let internal = matches!(b.visibility, Some(dto::Visibility::Internal));
            ticket_gate(
                if internal {
                    Action::AddInternalNote
                } else {
                    Action::AddPublicNote
                },
                b.ticket_id,
            )
            .await?;
            let command = TicketCommand::AddNote {
                note_id: NoteId::from_uuid(b.note_id.unwrap_or_else(Uuid::now_v7)),
                text: text("text", &b.text, MAX_LONG_TEXT)?,
                visibility: b.visibility.map_or(domain::Visibility::Public, Into::into),
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "QuoteRepair" => {
            let b: dto::QuoteRepair = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            let command = TicketCommand::QuoteRepair {
                amount: money("amount", b.amount)?,
                description: text("description", &b.description, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "ApproveQuote" => {
            let b: dto::ApproveQuote = parse(body)?;
            ticket_gate(Action::CustomerDecision, b.ticket_id).await?;
            ticket(
                service,
                b.ticket_id,
                TicketCommand::ApproveQuote,
                b.expected_version,
                meta,
            )
            .await
        }
        "RejectQuote" => {
            let b: dto::RejectQuote = parse(body)?;
            ticket_gate(Action::CustomerDecision, b.ticket_id).await?;
            let command = TicketCommand::RejectQuote {
                reason: optional_text("reason", b.reason.as_deref(), MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "UsePart" => {
            let b: dto::UsePart = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            let quantity = quantity("quantity", b.quantity, MAX_QUANTITY)?;
            service
                .use_part(
                    TicketId::from_uuid(b.ticket_id),
                    PartId::from_uuid(b.part_id),
                    quantity,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "CompleteRepair" => {
            let b: dto::CompleteRepair = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            let command = TicketCommand::CompleteRepair {
                final_cost: money("finalCost", b.final_cost)?,
                summary: text("summary", &b.summary, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "ResolveTicket" => {
            let b: dto::ResolveTicket = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            let command = TicketCommand::Resolve {
                resolution: text("resolution", &b.resolution, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "CloseTicket" => {
            let b: dto::CloseTicket = parse(body)?;
            ticket(
                service,
                b.ticket_id,
                TicketCommand::Close,
                b.expected_version,
                meta,
            )
            .await
        }
        "CancelTicket" => {
            let b: dto::CancelTicket = parse(body)?;
            let command = TicketCommand::Cancel {
                reason: text("reason", &b.reason, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "ReopenTicket" => {
            let b: dto::ReopenTicket = parse(body)?;
            let command = TicketCommand::Reopen {
                reason: text("reason", &b.reason, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "RecordPayment" => {
            let b: dto::RecordPayment = parse(body)?;
            if b.amount < 1 {
                return Err(ApiError::InvalidField(ValueError {
                    field: "amount",
                    reason: "must be at least 1 minor unit".into(),
                }));
            }
            let command = TicketCommand::RecordPayment {
                payment_id: PaymentId::from_uuid(b.payment_id.unwrap_or_else(Uuid::now_v7)),
                amount: money("amount", b.amount)?,
                method: b.method.into(),
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "ClaimWarranty" => {
            let b: dto::ClaimWarranty = parse(body)?;
            ticket_gate(Action::TicketWork, b.ticket_id).await?;
            let reason = optional_text("reason", b.reason.as_deref(), MAX_LONG_TEXT)?;
            service
                .claim_warranty(
                    TicketId::from_uuid(b.ticket_id),
                    reason,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "ApproveWarrantyClaim" => {
            let b: dto::ApproveWarrantyClaim = parse(body)?;
            let command = TicketCommand::ApproveWarrantyClaim {
                covered_limit: b
                    .covered_amount
                    .map(|m| money("coveredAmount", m))
                    .transpose()?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "RejectWarrantyClaim" => {
            let b: dto::RejectWarrantyClaim = parse(body)?;
            let command = TicketCommand::RejectWarrantyClaim {
                reason: text("reason", &b.reason, MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "SubmitFeedback" => {
            let b: dto::SubmitFeedback = parse(body)?;
            ticket_gate(Action::CustomerDecision, b.ticket_id).await?;
            let command = TicketCommand::SubmitFeedback {
                rating: b.rating,
                comment: optional_text("comment", b.comment.as_deref(), MAX_LONG_TEXT)?,
            };
            ticket(service, b.ticket_id, command, b.expected_version, meta).await
        }
        "RegisterUser" => {
            let b: dto::RegisterUser = parse(body)?;
            check_password_policy(&b.password)?;
            let grant = RoleGrant {
                role: b.role.into(),
                customer_id: b.customer_id.map(CustomerId::from_uuid),
                technician_id: b.technician_id.map(TechnicianId::from_uuid),
            };
            let command = RegisterUser {
                user_id: UserId::from_uuid(b.user_id.unwrap_or_else(Uuid::now_v7)),
                email: Email::parse("email", &b.email)?,
                name: text("name", &b.name, MAX_NAME)?,
                grant,
                password_hash: hash_password(b.password).await?,
                must_change_password: b.must_change_password.unwrap_or(false),
            };
            service
                .register_user(command, expected(b.expected_version)?, meta)
                .await
        }
        "ChangeUserRole" => {
            let b: dto::ChangeUserRole = parse(body)?;
            if b.user_id == principal.user_id.as_uuid() {
                return Err(ApiError::Forbidden("change your own role".into()));
            }
            let grant = RoleGrant {
                role: b.role.into(),
                customer_id: b.customer_id.map(CustomerId::from_uuid),
                technician_id: b.technician_id.map(TechnicianId::from_uuid),
            };
            service
                .change_user_role(
                    UserId::from_uuid(b.user_id),
                    grant,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "DeactivateUser" => {
            let b: dto::DeactivateUser = parse(body)?;
            if b.user_id == principal.user_id.as_uuid() {
                return Err(ApiError::Forbidden("deactivate your own account".into()));
            }
            let command = UserCommand::Deactivate {
                reason: optional_text("reason", b.reason.as_deref(), MAX_LONG_TEXT)?,
            };
            service
                .user_command(
                    UserId::from_uuid(b.user_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "ChangePassword" => {
            let b: dto::ChangePassword = parse(body)?;
            let user_id =
                UserId::from_uuid(b.user_id.unwrap_or_else(|| principal.user_id.as_uuid()));
            allow(
                principal,
                Action::ChangePasswordOf(user_id),
                None,
                "change another user's password",
            )?;
            check_password_policy(&b.new_password)?;
            if user_id == principal.user_id {
                // Your own password: prove you know the current one, with guesses slowed as
                // at sign-in (a stolen token must not become a password oracle).
                let current = load_user(service.store(), user_id)
                    .await?
                    .ok_or(ApiError::NotFound("user"))?;
                let key = [Key::password_change(&user_id.to_string())];
                if let Some(throttle) = service.throttle() {
                    throttle.reserve(&key).await?;
                }
                let given = b.current_password.unwrap_or_default();
                if !verify_password(given, current.password_hash).await? {
                    return Err(ApiError::InvalidCredentials);
                }
                if let Some(throttle) = service.throttle() {
                    throttle.succeeded(&key, &[]).await?;
                }
            }
            let command = UserCommand::ChangePassword {
                password_hash: hash_password(b.new_password).await?,
            };
            service
                .user_command(user_id, command, expected(b.expected_version)?, meta)
                .await
        }
        "AddPart" => {
            let b: dto::AddPart = parse(body)?;
            let initial_stock = match b.initial_stock {
                None | Some(0) => 0,
                Some(n) => quantity("initialStock", n, MAX_QUANTITY)?,
            };
            let part_id = PartId::from_uuid(b.part_id.unwrap_or_else(Uuid::now_v7));
            let command = PartCommand::Add(AddPart {
                part_id,
                name: text("name", &b.name, MAX_NAME)?,
                sku: optional_text("sku", b.sku.as_deref(), MAX_NAME)?,
                unit_cost: money("unitCost", b.unit_cost)?,
                initial_stock,
            });
            service
                .part_command(part_id, command, expected(b.expected_version)?, meta)
                .await
        }
        "ReceiveStock" => {
            let b: dto::ReceiveStock = parse(body)?;
            let command = PartCommand::ReceiveStock {
                quantity: quantity("quantity", b.quantity, MAX_QUANTITY)?,
                reference: optional_text("reference", b.reference.as_deref(), MAX_NAME)?,
            };
            service
                .part_command(
                    PartId::from_uuid(b.part_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        "AdjustStock" => {
            let b: dto::AdjustStock = parse(body)?;
            if b.delta.unsigned_abs() > u64::from(MAX_QUANTITY) {
                return Err(ApiError::InvalidField(ValueError {
                    field: "delta",
                    reason: format!("must be within ±{MAX_QUANTITY}"),
                }));
            }
            let command = PartCommand::AdjustStock {
                delta: b.delta,
                reason: text("reason", &b.reason, MAX_LONG_TEXT)?,
            };
            service
                .part_command(
                    PartId::from_uuid(b.part_id),
                    command,
                    expected(b.expected_version)?,
                    meta,
                )
                .await
        }
        other => Err(ApiError::UnknownCommand(other.to_owned())),
    }
}

async fn ticket(
    service: &CommandService,
    id: Uuid,
    command: TicketCommand,
    expected_version: Option<i64>,
    meta: &CommandMetadata,
) -> Result<AppendOutcome, ApiError> {
    service
        .ticket_command(
            TicketId::from_uuid(id),
            command,
            expected(expected_version)?,
            meta,
        )
        .await
}

/// Runs one command as `principal` from a JSON body, with the same parsing, rules and access
/// checks as `POST /commands/{name}` (for `ledger seed` and other in-process callers).
pub async fn run_command(
    service: &CommandService,
    principal: &Principal,
    name: &str,
    body: &serde_json::Value,
) -> Result<AppendOutcome, ApiError> {
    if !COMMANDS.contains(&name) {
        return Err(ApiError::UnknownCommand(name.to_owned()));
    }
    let body = serde_json::to_vec(body).map_err(|e| ApiError::malformed(e.to_string()))?;
    let meta = metadata(
        &HeaderMap::new(),
        principal,
        (name, &body),
        service.request_key(),
    )?;
    dispatch(service, principal, name, &body, &meta).await
}
