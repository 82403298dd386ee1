//! `GET /openapi.json`: every command's body schema, answers and errors.

use axum::Json;
use utoipa::OpenApi;

use crate::dto;

/// Documentation-only operations: one dynamic route serves them all.
macro_rules! command_doc {
    ($fn:ident, $path:literal, $body:ty, $summary:literal) => {
        #[utoipa::path(
            post,
            path = $path,
            summary = $summary,
            tag = "commands",
            request_body(content = $body, content_type = "application/json"),
            params(
                ("Idempotency-Key" = Option<String>, Header,
                 description = "Command id. A repeat with the same key appends nothing and returns the first answer."),
                ("X-Correlation-Id" = Option<uuid::Uuid>, Header,
                 description = "Correlation id recorded on every event; defaults to the command id."),
            ),
            responses(
                (status = 201, description = "Accepted; the command created its stream", body = dto::CommandResponse),
                (status = 200, description = "Accepted", body = dto::CommandResponse),
                (status = 400, description = "Malformed body or invalid field (`MALFORMED_REQUEST`, `INVALID_FIELD`)", body = dto::ErrorResponse),
                (status = 404, description = "The target aggregate does not exist (`NOT_FOUND`)", body = dto::ErrorResponse),
                (status = 409, description = "`expectedVersion` is stale (`VERSION_CONFLICT`)", body = dto::ErrorResponse),
                (status = 413, description = "Body larger than 64 KiB (`PAYLOAD_TOO_LARGE`)", body = dto::ErrorResponse),
                (status = 422, description = "A domain rule refuses the command; `code` names the rule", body = dto::ErrorResponse),
                (status = 503, description = "The event store is unavailable (`STORE_UNAVAILABLE`); retry with the same key", body = dto::ErrorResponse),
            )
        )]
        #[allow(dead_code)]
        fn $fn() {}
    };
}

command_doc!(
    register_customer,
    "/commands/RegisterCustomer",
    dto::RegisterCustomer,
    "Register a customer"
);
command_doc!(
    onboard_technician,
    "/commands/OnboardTechnician",
    dto::OnboardTechnician,
    "Onboard a technician"
);
command_doc!(
    deactivate_technician,
    "/commands/DeactivateTechnician",
    dto::DeactivateTechnician,
    "Deactivate a technician"
);
command_doc!(
    raise_ticket,
    "/commands/RaiseTicket",
    dto::RaiseTicket,
    "Raise a ticket"
);
command_doc!(
    assign_technician,
    "/commands/AssignTechnician",
    dto::AssignTechnician,
    "Assign or reassign a ticket"
);
command_doc!(
    start_work,
    "/commands/StartWork",
    dto::StartWork,
    "Start work on a ticket"
);
command_doc!(
    resolve_ticket,
    "/commands/ResolveTicket",
    dto::ResolveTicket,
    "Resolve a ticket"
);
command_doc!(
    close_ticket,
    "/commands/CloseTicket",
    dto::CloseTicket,
    "Close a resolved ticket"
);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticket ledger command API",
        description = "Commands append events; read with GraphQL at /graphql."
    ),
    paths(
        register_customer,
        onboard_technician,
        deactivate_technician,
        raise_ticket,
        assign_technician,
        start_work,
        resolve_ticket,
        close_ticket
    ),
    components(schemas(
        dto::CommandResponse,
        dto::EventResponse,
        dto::ErrorResponse,
        dto::ErrorBody
    ))
)]
struct ApiDoc;

pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_is_documented() {
        let doc = super::document();
        for name in crate::handler::COMMANDS {
            assert!(
                doc.paths.paths.contains_key(&format!("/commands/{name}")),
                "{name} missing from the OpenAPI document"
            );
        }
    }
}
