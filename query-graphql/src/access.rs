//! Who may read what, enforced in the resolvers.

use async_graphql::{Context, Result};
use domain::access::{Principal, Role, TicketParties};

use crate::error::{gql, QueryError};

/// The signed-in principal of this request.
pub fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| gql(QueryError::Unauthenticated))
}

/// Admins and auditors: reports, the audit log, projection status.
pub fn require_overview<'a>(ctx: &'a Context<'_>, what: &'static str) -> Result<&'a Principal> {
    let p = principal(ctx)?;
    match p.role {
        Role::Admin | Role::Auditor => Ok(p),
        _ => Err(gql(QueryError::Forbidden(what))),
    }
}

pub fn require_ticket<'a>(ctx: &'a Context<'_>, parties: TicketParties) -> Result<&'a Principal> {
    let p = principal(ctx)?;
    if p.may_read_ticket(parties) {
        Ok(p)
    } else {
        Err(gql(QueryError::Forbidden("read this ticket")))
    }
}
