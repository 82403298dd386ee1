//! Who may read which queue.

use super::*;

/// Queues are staff views; a technician sees their own and the unassigned one.
pub(crate) fn queue_access(ctx: &Context<'_>, technician_id: Option<&ID>) -> Result<()> {
    let who = principal(ctx)?;
    let technician = technician_id.map(parse_id).transpose()?;
    match who.role {
        Role::Admin | Role::Auditor => Ok(()),
        Role::Technician
            if technician.is_none() || technician == who.technician_id.map(|t| t.as_uuid()) =>
        {
            Ok(())
        }
        _ => Err(gql(QueryError::Forbidden("read this queue"))),
    }
}

/// The raw history holds staff-only facts (internal notes): staff only.
pub(super) fn staff_only(ctx: &Context<'_>) -> Result<()> {
    if principal(ctx)?.role.is_staff() {
        Ok(())
    } else {
        Err(gql(QueryError::Forbidden("read a ticket's raw history")))
    }
}
