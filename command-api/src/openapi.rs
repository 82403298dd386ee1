//! `GET /openapi.json`: every command's body schema, answers and errors.

use axum::Json;
use utoipa::OpenApi;

use crate::commands::{self, Access};
use crate::dto;

/// The operation every command shares (headers, answers, errors); `document` makes one per
/// command from it, with the command's body, summary and who may send it.
#[utoipa::path(
    post,
    path = "/commands/{name}",
    tag = "commands",
    security(("bearer" = [])),
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
fn command() {}

/// The template's path in the derived document, replaced by one path per command.
const TEMPLATE: &str = "/commands/{name}";

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
        command,
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
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, Required};

    let mut doc = ApiDoc::openapi();
    let Some(template) = doc.paths.paths.remove(TEMPLATE) else {
        return doc;
    };
    let mut schemas = Vec::new();
    for command in commands::all() {
        let body = (command.schema)(&mut schemas);
        let mut item = template.clone();
        if let Some(operation) = item.post.as_mut() {
            operation.summary = Some(command.summary.to_owned());
            operation.description = Some(match command.access {
                Access::Admins => "Who may send it: admins.".to_owned(),
                Access::Targeted(who) => format!("Who may send it: admins; {who}."),
            });
            operation.operation_id = Some(snake_case(command.name));
            operation.request_body = Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(body)))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            );
        }
        doc.paths
            .paths
            .insert(format!("/commands/{}", command.name), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
    doc
}

/// `RegisterCustomer` → `register_customer`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_is_documented() {
        let doc = super::document();
        let paths = &doc.paths.paths;
        for command in crate::commands::all() {
            let name = command.name;
            let path = paths.get(&format!("/commands/{name}"));
            let body = path
                .and_then(|p| p.post.as_ref())
                .and_then(|o| o.request_body.as_ref());
            assert!(body.is_some(), "{name} missing from the OpenAPI document");
        }
        assert!(!paths.contains_key(super::TEMPLATE));
        let schemas = &doc.components.as_ref().map(|c| &c.schemas);
        assert!(schemas.is_some_and(|s| s.contains_key("RaiseTicket") && s.contains_key("Tier")));
    }
}
