use crate::{ExpectedVersion, StreamId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version: nothing was written.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// The command id was already appended by another request (another causation id): one
    /// `Idempotency-Key` used for two requests. Nothing was written.
    #[error("command {command_id} was already appended for another request")]
    CommandReused { command_id: uuid::Uuid },
    /// The request itself is unusable (no events, bad stream name, ...): nothing was written.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The backend failed or could not be reached; the append may be retried with the same
    /// command id without risk of writing twice.
    #[error("stream store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}
