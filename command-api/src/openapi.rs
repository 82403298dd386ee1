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
            security(("bearer" = [])),
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
                (status = 401, description = "No valid bearer token (`UNAUTHENTICATED`)", body = dto::ErrorResponse),
                (status = 403, description = "The role may not send this command for this target (`FORBIDDEN`), or a one-time password must be changed first (`PASSWORD_CHANGE_REQUIRED`)", body = dto::ErrorResponse),
                (status = 404, description = "The target aggregate does not exist, or no such command (`NOT_FOUND`, `UNKNOWN_COMMAND`)", body = dto::ErrorResponse),
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
    update_customer,
    "/commands/UpdateCustomer",
    dto::UpdateCustomer,
    "Change a customer's details"
);
command_doc!(
    change_customer_tier,
    "/commands/ChangeCustomerTier",
    dto::ChangeCustomerTier,
    "Change a customer's tier"
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
    register_device,
    "/commands/RegisterDevice",
    dto::RegisterDevice,
    "Register a device and its warranty"
);
command_doc!(
    extend_warranty,
    "/commands/ExtendWarranty",
    dto::ExtendWarranty,
    "Extend a device's warranty"
);
command_doc!(
    check_in_device,
    "/commands/CheckInDevice",
    dto::CheckInDevice,
    "Check a device in"
);
command_doc!(
    mark_ready_for_delivery,
    "/commands/MarkReadyForDelivery",
    dto::MarkReadyForDelivery,
    "Mark a device ready for delivery"
);
command_doc!(
    deliver_device,
    "/commands/DeliverDevice",
    dto::DeliverDevice,
    "Deliver a device"
);
command_doc!(
    close_device,
    "/commands/CloseDevice",
    dto::CloseDevice,
    "Close a device's service visit"
);
command_doc!(
    reschedule_delivery,
    "/commands/RescheduleDelivery",
    dto::RescheduleDelivery,
    "Reschedule an overdue delivery"
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
    add_note,
    "/commands/AddNote",
    dto::AddNote,
    "Add a public or internal note"
);
command_doc!(
    quote_repair,
    "/commands/QuoteRepair",
    dto::QuoteRepair,
    "Quote a repair"
);
command_doc!(
    approve_quote,
    "/commands/ApproveQuote",
    dto::ApproveQuote,
    "Approve the quote"
);
command_doc!(
    reject_quote,
    "/commands/RejectQuote",
    dto::RejectQuote,
    "Reject the quote"
);
command_doc!(
    use_part,
    "/commands/UsePart",
    dto::UsePart,
    "Use spare parts"
);
command_doc!(
    complete_repair,
    "/commands/CompleteRepair",
    dto::CompleteRepair,
    "Complete the repair"
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
command_doc!(
    cancel_ticket,
    "/commands/CancelTicket",
    dto::CancelTicket,
    "Cancel a ticket"
);
command_doc!(
    reopen_ticket,
    "/commands/ReopenTicket",
    dto::ReopenTicket,
    "Reopen a ticket"
);
command_doc!(
    record_payment,
    "/commands/RecordPayment",
    dto::RecordPayment,
    "Record a payment"
);
command_doc!(
    claim_warranty,
    "/commands/ClaimWarranty",
    dto::ClaimWarranty,
    "Claim warranty"
);
command_doc!(
    approve_warranty_claim,
    "/commands/ApproveWarrantyClaim",
    dto::ApproveWarrantyClaim,
    "Approve the warranty claim"
);
command_doc!(
    reject_warranty_claim,
    "/commands/RejectWarrantyClaim",
    dto::RejectWarrantyClaim,
    "Reject the warranty claim"
);
command_doc!(
    submit_feedback,
    "/commands/SubmitFeedback",
    dto::SubmitFeedback,
    "Give feedback"
);
command_doc!(
    add_part,
    "/commands/AddPart",
    dto::AddPart,
    "Add a spare part"
);
command_doc!(
    receive_stock,
    "/commands/ReceiveStock",
    dto::ReceiveStock,
    "Receive stock"
);
command_doc!(
    adjust_stock,
    "/commands/AdjustStock",
    dto::AdjustStock,
    "Adjust stock"
);
command_doc!(
    register_user,
    "/commands/RegisterUser",
    dto::RegisterUser,
    "Create a user account (admins)"
);
command_doc!(
    change_user_role,
    "/commands/ChangeUserRole",
    dto::ChangeUserRole,
    "Change a user's role (admins)"
);
command_doc!(
    deactivate_user,
    "/commands/DeactivateUser",
    dto::DeactivateUser,
    "Deactivate a user (admins)"
);
command_doc!(
    change_password,
    "/commands/ChangePassword",
    dto::ChangePassword,
    "Change a password"
);

/// Sign in.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body(content = crate::session::LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = crate::session::TokenResponse),
        (status = 400, description = "Malformed body or e-mail (`MALFORMED_REQUEST`, `INVALID_FIELD`)", body = dto::ErrorResponse),
        (status = 401, description = "Wrong e-mail or password (`INVALID_CREDENTIALS`)", body = dto::ErrorResponse),
        (status = 429, description = "Too many failed sign-ins for this account or address (`TOO_MANY_ATTEMPTS`)", body = dto::ErrorResponse),
    )
)]
#[allow(dead_code)]
fn login() {}

/// A fresh token for the same session.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Renewed", body = crate::session::TokenResponse),
              (status = 401, description = "No valid bearer token (`UNAUTHENTICATED`)", body = dto::ErrorResponse)))]
#[allow(dead_code)]
fn refresh() {}

/// End the session: its tokens are refused from then on.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Signed out"),
              (status = 401, description = "No valid bearer token (`UNAUTHENTICATED`)", body = dto::ErrorResponse)))]
#[allow(dead_code)]
fn logout() {}

/// Who the token speaks for.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The signed-in user"),
              (status = 401, description = "No valid bearer token (`UNAUTHENTICATED`)", body = dto::ErrorResponse)))]
#[allow(dead_code)]
fn me() {}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "Ticket ledger command API",
        description = "Commands append events; read with GraphQL at /graphql."
    ),
    paths(
        register_customer,
        update_customer,
        change_customer_tier,
        onboard_technician,
        deactivate_technician,
        register_device,
        extend_warranty,
        check_in_device,
        mark_ready_for_delivery,
        deliver_device,
        close_device,
        reschedule_delivery,
        raise_ticket,
        assign_technician,
        start_work,
        add_note,
        quote_repair,
        approve_quote,
        reject_quote,
        use_part,
        complete_repair,
        resolve_ticket,
        close_ticket,
        cancel_ticket,
        reopen_ticket,
        record_payment,
        claim_warranty,
        approve_warranty_claim,
        reject_warranty_claim,
        submit_feedback,
        add_part,
        receive_stock,
        adjust_stock,
        register_user,
        change_user_role,
        deactivate_user,
        change_password,
        login,
        refresh,
        logout,
        me
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
