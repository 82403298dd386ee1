//! User accounts: registered, given another role, deactivated, their password changed.

use domain::access::{check_password_policy, Action};
use domain::{CustomerId, Email, RoleGrant, TechnicianId, User, UserCommand, UserId};
use uuid::Uuid;

use super::fields::{expected, new_id, optional_text, text, MAX_LONG_TEXT, MAX_NAME};
use super::{command, Access};
use crate::auth::{hash_password, load_user, verify_password};
use crate::dto::Role;
use crate::throttle::Key;
use crate::ApiError;

fn grant(role: Role, customer_id: Option<Uuid>, technician_id: Option<Uuid>) -> RoleGrant {
    RoleGrant {
        role: role.into(),
        customer_id: customer_id.map(CustomerId::from_uuid),
        technician_id: technician_id.map(TechnicianId::from_uuid),
    }
}

command!(
    /// Creates a user account (admins). A customer account names its `customerId`, a
    /// technician account its `technicianId`. Passwords: 8 to 128 characters with a symbol.
    RegisterUser {
        user_id: Option<Uuid>,
        #[schema(min_length = 1, example = "ana@example.com")]
        email: String,
        #[schema(min_length = 1, max_length = 200)]
        name: String,
        role: Role,
        customer_id: Option<Uuid>,
        technician_id: Option<Uuid>,
        #[schema(min_length = 8, max_length = 128)]
        password: String,
        /// The user must change this password at the first sign-in.
        must_change_password: Option<bool>,
    }
    summary: "Create a user account (admins)",
    access: Access::Admins,
    run(self, cx) {
        check_password_policy(&self.password)?;
        let command = domain::RegisterUser {
            user_id: UserId::from_uuid(new_id(self.user_id)),
            email: Email::parse("email", &self.email)?,
            name: text("name", &self.name, MAX_NAME)?,
            grant: grant(self.role, self.customer_id, self.technician_id),
            password_hash: hash_password(self.password).await?,
            must_change_password: self.must_change_password.unwrap_or(false),
        };
        cx.service
            .register_user(command, expected(self.expected_version)?, cx.meta)
            .await
    }
);

command!(
    /// Gives a user another role (admins).
    ChangeUserRole {
        user_id: Uuid,
        role: Role,
        customer_id: Option<Uuid>,
        technician_id: Option<Uuid>,
    }
    summary: "Change a user's role (admins)",
    access: Access::Admins,
    run(self, cx) {
        if self.user_id == cx.principal.user_id.as_uuid() {
            return Err(ApiError::Forbidden("change your own role".into()));
        }
        cx.service
            .change_user_role(
                UserId::from_uuid(self.user_id),
                grant(self.role, self.customer_id, self.technician_id),
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Deactivates a user (admins): their tokens stop working at once.
    DeactivateUser {
        user_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
    summary: "Deactivate a user (admins)",
    access: Access::Admins,
    run(self, cx) {
        if self.user_id == cx.principal.user_id.as_uuid() {
            return Err(ApiError::Forbidden("deactivate your own account".into()));
        }
        let command = UserCommand::Deactivate {
            reason: optional_text("reason", self.reason.as_deref(), MAX_LONG_TEXT)?,
        };
        cx.service
            .send::<User>(
                self.user_id,
                command,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Changes a password: your own (with `currentPassword`), or anyone's as an admin. All the
    /// user's earlier tokens stop working.
    ChangePassword {
        /// Default: the signed-in user.
        user_id: Option<Uuid>,
        current_password: Option<String>,
        #[schema(min_length = 8, max_length = 128)]
        new_password: String,
    }
    summary: "Change a password",
    access: Access::Targeted("everyone, for themselves"),
    run(self, cx) {
        let me = cx.principal.user_id;
        let user_id = self.user_id.map_or(me, UserId::from_uuid);
        cx.allow(
            Action::ChangePasswordOf(user_id),
            None,
            "change another user's password",
        )?;
        check_password_policy(&self.new_password)?;
        if user_id == me {
            // Your own password: prove you know the current one, with guesses slowed as at
            // sign-in (a stolen token must not become a password oracle).
            let current = load_user(cx.service.store(), user_id)
                .await?
                .ok_or(ApiError::NotFound("user"))?;
            let key = [Key::password_change(&user_id.to_string())];
            if let Some(throttle) = cx.service.throttle() {
                throttle.reserve(&key).await?;
            }
            let given = self.current_password.unwrap_or_default();
            if !verify_password(given, current.password_hash).await? {
                return Err(ApiError::InvalidCredentials);
            }
            if let Some(throttle) = cx.service.throttle() {
                throttle.succeeded(&key, &[]).await?;
            }
        }
        let command = UserCommand::ChangePassword {
            password_hash: hash_password(self.new_password).await?,
        };
        cx.service
            .send::<User>(user_id, command, expected(self.expected_version)?, cx.meta)
            .await
    }
);
