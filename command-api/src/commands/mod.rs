//! Every command of the API, each declared once, in the module of its aggregate: its body (the
//! wire shape, strict), who may send it, a summary, and how it runs. The list at the bottom
//! (`commands!`) makes from these declarations what the rest of the crate needs: the names
//! `POST /commands/{name}` accepts, the dispatch, the role gate and the OpenAPI paths.

mod customer;
mod device;
mod fields;
mod part;
mod repair;
mod technician;
mod ticket;
mod user;

use async_trait::async_trait;
use domain::access::{Action, Principal, Role, TicketParties};
use domain::TicketId;
use serde::de::DeserializeOwned;
use stream_store::{AppendOutcome, CommandMetadata};
use uuid::Uuid;

use crate::{ApiError, CommandService};

/// One command of the API. The implementing type is the command's body as it comes over the
/// wire (declared with `command_body!`).
#[async_trait]
pub(crate) trait Command: DeserializeOwned + utoipa::ToSchema + Send + 'static {
    /// `POST /commands/{NAME}`.
    const NAME: &'static str;
    /// One line for the OpenAPI document.
    const SUMMARY: &'static str;
    /// Who may send it at all, checked before anything else (a repeat's stored answer
    /// included). For `Access::Targeted`, `run` checks the target with `Context::allow` or
    /// `Context::ticket_gate`.
    const ACCESS: Access;

    /// Parses the body's values and runs the command as `cx.principal`.
    async fn run(self, cx: &Context<'_>) -> Result<AppendOutcome, ApiError>;
}

/// Who may send a command, before its target is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Admins alone.
    Admins,
    /// Admins, and those `domain::access::Principal::may` allows for the body's target
    /// (described here for the OpenAPI document).
    Targeted(&'static str),
}

/// What a command runs with.
pub(crate) struct Context<'a> {
    pub(crate) service: &'a CommandService,
    pub(crate) principal: &'a Principal,
    pub(crate) meta: &'a CommandMetadata,
    pub(crate) name: &'static str,
}

impl Context<'_> {
    /// Refuses with 403 unless the principal may do `action` (`what`: the refusal's words).
    pub(crate) fn allow(
        &self,
        action: Action,
        ticket: Option<TicketParties>,
        what: &str,
    ) -> Result<(), ApiError> {
        if self.principal.may(action, ticket) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(what.to_owned()))
        }
    }

    /// For ticket commands: whose ticket it is decides who may act on it.
    pub(crate) async fn ticket_gate(&self, action: Action, ticket: Uuid) -> Result<(), ApiError> {
        // Admins may act on any ticket: no need to look it up.
        if self.principal.role == Role::Admin {
            return Ok(());
        }
        let what = format!("send {} for this ticket", self.name);
        match self
            .service
            .ticket_parties(TicketId::from_uuid(ticket))
            .await?
        {
            Some(parties) => self.allow(action, Some(parties), &what),
            // Missing ticket: the command answers 404 by itself; only say so to who may know.
            None if self.principal.role.is_staff() => Ok(()),
            None => Err(ApiError::Forbidden(what)),
        }
    }
}

/// Declares a command: its body (strict: unknown fields refused; camelCase; with the optional
/// `expectedVersion` every command accepts), named after the command, and its `Command`
/// implementation: summary, access and what `run` does.
macro_rules! command {
    (
        $(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }
        summary: $summary:literal,
        access: $access:expr,
        run($this:ident, $cx:ident) $run:block
    ) => {
        $(#[$doc])*
        #[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub(crate) struct $name {
            $($(#[$fdoc])* pub(crate) $field: $ty,)*
            /// Version the target stream must be at (0: must not exist yet); a mismatch is a 409.
            #[schema(minimum = 0)]
            pub(crate) expected_version: Option<i64>,
        }

        #[async_trait::async_trait]
        impl $crate::commands::Command for $name {
            const NAME: &'static str = stringify!($name);
            const SUMMARY: &'static str = $summary;
            const ACCESS: $crate::commands::Access = $access;

            async fn run(
                $this,
                $cx: &$crate::commands::Context<'_>,
            ) -> Result<stream_store::AppendOutcome, $crate::ApiError> $run
        }
    };
}
use command;

/// Named schemas, as an OpenAPI document's components hold them.
pub(crate) type Schemas = Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>;

/// A command's entry in the generated lists.
pub(crate) struct Declared {
    pub(crate) name: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) access: Access,
    /// Adds the body's schema (and the schemas it uses) to `schemas`; answers its name.
    pub(crate) schema: fn(&mut Schemas) -> String,
}

fn declared<C: Command>() -> Declared {
    Declared {
        name: C::NAME,
        summary: C::SUMMARY,
        access: C::ACCESS,
        schema: |schemas| {
            let name = C::name().into_owned();
            C::schemas(schemas);
            schemas.push((name.clone(), C::schema()));
            name
        },
    }
}

async fn run<C: Command>(body: &[u8], cx: &Context<'_>) -> Result<AppendOutcome, ApiError> {
    let command: C = fields::parse(body)?;
    command.run(cx).await
}

macro_rules! commands {
    ($($module:ident :: $command:ident),+ $(,)?) => {
        /// Every command, in the order of the documentation.
        pub(crate) fn all() -> Vec<Declared> {
            vec![$(declared::<$module::$command>()),+]
        }

        /// The command called `name`, if there is one.
        pub(crate) fn find(name: &str) -> Option<Declared> {
            $(
                if name == <$module::$command as Command>::NAME {
                    return Some(declared::<$module::$command>());
                }
            )+
            None
        }

        /// Parses `body` as the command `name` and runs it.
        pub(crate) async fn dispatch(
            name: &str,
            body: &[u8],
            service: &CommandService,
            principal: &Principal,
            meta: &CommandMetadata,
        ) -> Result<AppendOutcome, ApiError> {
            $(
                if name == <$module::$command as Command>::NAME {
                    let cx = Context {
                        service,
                        principal,
                        meta,
                        name: <$module::$command as Command>::NAME,
                    };
                    return run::<$module::$command>(body, &cx).await;
                }
            )+
            Err(ApiError::UnknownCommand(name.to_owned()))
        }
    };
}

commands!(
    customer::RegisterCustomer,
    customer::UpdateCustomer,
    customer::ChangeCustomerTier,
    technician::OnboardTechnician,
    technician::DeactivateTechnician,
    device::RegisterDevice,
    device::ExtendWarranty,
    device::CheckInDevice,
    device::MarkReadyForDelivery,
    device::DeliverDevice,
    device::CloseDevice,
    device::RescheduleDelivery,
    ticket::RaiseTicket,
    ticket::AssignTechnician,
    repair::StartWork,
    ticket::AddNote,
    repair::QuoteRepair,
    repair::ApproveQuote,
    repair::RejectQuote,
    repair::UsePart,
    repair::CompleteRepair,
    repair::ResolveTicket,
    ticket::CloseTicket,
    ticket::CancelTicket,
    ticket::ReopenTicket,
    ticket::RecordPayment,
    repair::ClaimWarranty,
    repair::ApproveWarrantyClaim,
    repair::RejectWarrantyClaim,
    ticket::SubmitFeedback,
    part::AddPart,
    part::ReceiveStock,
    part::AdjustStock,
    user::RegisterUser,
    user::ChangeUserRole,
    user::DeactivateUser,
    user::ChangePassword,
);
