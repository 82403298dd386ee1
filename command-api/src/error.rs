use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{DomainError, ValueError};
use serde_json::{json, Value};
use stream_store::{ExpectedVersion, StoreError};

/// Every way a command can fail, each with one HTTP status and one error code. The body is
/// always `{"error": {"code", "message", "details"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is not well-formed JSON of the command's shape.
    #[error("{message}")]
    Malformed { message: String, details: Value },
    /// 400: a field does not hold an acceptable value.
    #[error("invalid {}: {}", .0.field, .0.reason)]
    InvalidField(ValueError),
    /// 401: no valid bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// 401: the e-mail and password do not match an active account.
    #[error("wrong e-mail or password")]
    InvalidCredentials,
    /// 403: the signed-in user's role may not do this.
    #[error("your role may not {0}")]
    Forbidden(String),
    /// 403: a first (generated) password must be changed before anything else.
    #[error("change your one-time password first (ChangePassword)")]
    PasswordChangeRequired,
    /// 429: too many failed sign-ins for this account or address.
    #[error("too many failed sign-ins; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    /// 404: no command of that name.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// 404: the command targets an aggregate that does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: the stream is not at the version the client expected.
    #[error("stream is at version {actual}, expected {expected}")]
    Conflict {
        expected: ExpectedVersion,
        actual: i64,
    },
    /// 413: the body is larger than the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 422: a domain rule refuses the command.
    #[error(transparent)]
    Rule(DomainError),
    /// 422: the `Idempotency-Key` was already used by this user for another command or body.
    #[error("this Idempotency-Key was already used for another command or body; use a new key")]
    IdempotencyKeyReused,
    /// 503: the store cannot be reached; the command may be retried with the same key.
    #[error("the event store is unavailable; retry with the same Idempotency-Key")]
    Unavailable(#[source] StoreError),
    /// 500: a bug or a corrupt event; logged with its cause, answered with a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed {
            message: message.into(),
            details: Value::Null,
        }
    }

    /// Whether the command was refused for what it asked (a rule, a pinned version, a missing
    /// target), as opposed to failing on the way: what it claimed beforehand is given back.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Rule(_) | Self::Conflict { .. } | Self::NotFound(_)
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed { .. } | Self::InvalidField(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::PasswordChangeRequired => StatusCode::FORBIDDEN,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnknownCommand(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Rule(_) | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "MALFORMED_REQUEST",
            Self::InvalidField(_) => "INVALID_FIELD",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::PasswordChangeRequired => "PASSWORD_CHANGE_REQUIRED",
            Self::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            Self::UnknownCommand(_) => "UNKNOWN_COMMAND",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict { .. } => "VERSION_CONFLICT",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::Rule(rule) => rule.code(),
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::Unavailable(_) => "STORE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Malformed { details, .. } => details.clone(),
            Self::InvalidField(e) => json!({ "field": e.field, "reason": e.reason }),
            Self::TooManyAttempts { retry_after } => json!({ "retryAfterSeconds": retry_after }),
            Self::Conflict { expected, actual } => {
                json!({ "expectedVersion": expected.to_string(), "actualVersion": actual })
            }
            _ => Value::Null,
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound { kind } => Self::NotFound(kind),
            rule => Self::Rule(rule),
        }
    }
}

impl From<ValueError> for ApiError {
    fn from(e: ValueError) -> Self {
        Self::InvalidField(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict {
                expected, actual, ..
            } => Self::Conflict { expected, actual },
            StoreError::Invalid(message) => Self::malformed(message),
            StoreError::CommandReused { .. } => Self::IdempotencyKeyReused,
            unavailable @ StoreError::Unavailable(_) => Self::Unavailable(unavailable),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "command failed"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "store unavailable"),
            _ => {}
        }
        let body = json!({
            "error": { "code": self.code(), "message": self.to_string(), "details": self.details() }
        });
        let retry_after = match &self {
            Self::TooManyAttempts { retry_after } => Some(*retry_after),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
