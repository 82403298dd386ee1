use async_graphql::ErrorExtensions;

/// Errors of the query side. Each has one GraphQL error code (`extensions.code`).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// BAD_USER_INPUT
    #[error("{0}")]
    BadInput(String),
    /// UNAUTHENTICATED: no valid token.
    #[error("sign in first: POST /auth/login, then send Authorization: Bearer <token>")]
    Unauthenticated,
    /// FORBIDDEN: the role may not read this.
    #[error("your role may not {0}")]
    Forbidden(&'static str),
    /// QUERY_TOO_LARGE: the document is over a limit (length, nesting, depth, fields).
    #[error("{0}")]
    TooLarge(crate::limits::Refusal),
    /// INTERNAL: logged here with its cause, answered with a generic message.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl QueryError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadInput(_) => "BAD_USER_INPUT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::TooLarge(_) => "QUERY_TOO_LARGE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<std::sync::Arc<sqlx::Error>> for QueryError {
    fn from(e: std::sync::Arc<sqlx::Error>) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<stream_store::StoreError> for QueryError {
    fn from(e: stream_store::StoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl ErrorExtensions for QueryError {
    fn extend(&self) -> async_graphql::Error {
        if let QueryError::Internal(cause) = self {
            tracing::error!(error = %cause, "query failed");
        }
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| ext.set("code", code))
    }
}

/// Converts any error of this layer into a GraphQL error with its code.
pub(crate) fn gql(e: impl Into<QueryError>) -> async_graphql::Error {
    e.into().extend()
}
