use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Role;
use crate::event::event_payload;
use crate::{Aggregate, CustomerId, DomainError, Email, TechnicianId, Text, UserId};

/// A password hash in PHC string format (argon2). Hashing happens at the edge; a plain
/// password never reaches an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(phc: String) -> Self {
        Self(phc)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The link a role needs: a customer account acts for one customer record, a technician
/// account for one technician record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleGrant {
    pub role: Role,
    pub customer_id: Option<CustomerId>,
    pub technician_id: Option<TechnicianId>,
}

impl RoleGrant {
    /// Keeps only the link the role uses: an admin or auditor acts for no record.
    pub fn normalized(self) -> Self {
        RoleGrant {
            role: self.role,
            customer_id: self.customer_id.filter(|_| self.role == Role::Customer),
            technician_id: self.technician_id.filter(|_| self.role == Role::Technician),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegisterUser {
    pub user_id: UserId,
    pub email: Email,
    pub name: Text,
    pub grant: RoleGrant,
    pub password_hash: PasswordHash,
    /// A generated first password must be replaced at the first sign-in.
    pub must_change_password: bool,
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Register(RegisterUser),
    ChangeRole(RoleGrant),
    Deactivate { reason: Option<Text> },
    ChangePassword { password_hash: PasswordHash },
    SignIn { session_id: Uuid },
    SignOut { session_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum UserEvent {
    UserRegistered {
        user_id: UserId,
        email: Email,
        name: Text,
        grant: RoleGrant,
        password_hash: PasswordHash,
        must_change_password: bool,
        registered_at: DateTime<Utc>,
    },
    UserRoleChanged {
        grant: RoleGrant,
        changed_at: DateTime<Utc>,
    },
    UserDeactivated {
        reason: Option<Text>,
        deactivated_at: DateTime<Utc>,
    },
    PasswordChanged {
        password_hash: PasswordHash,
        changed_at: DateTime<Utc>,
    },
    UserSignedIn {
        session_id: Uuid,
        signed_in_at: DateTime<Utc>,
    },
    UserSignedOut {
        session_id: Uuid,
        signed_out_at: DateTime<Utc>,
    },
}
event_payload!(UserEvent {
    UserRegistered,
    UserRoleChanged,
    UserDeactivated,
    PasswordChanged,
    UserSignedIn,
    UserSignedOut,
});

/// A user account. `None` until registered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User(Option<UserState>);

#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    pub id: UserId,
    pub email: Email,
    pub name: Text,
    pub grant: RoleGrant,
    pub password_hash: PasswordHash,
    pub must_change_password: bool,
    pub active: bool,
    /// Tokens issued before this moment are no longer honoured.
    pub credentials_changed_at: DateTime<Utc>,
    pub ended_sessions: BTreeSet<Uuid>,
}

impl User {
    pub fn state(&self) -> Option<&UserState> {
        self.0.as_ref()
    }
}

fn check_grant(grant: &RoleGrant) -> Result<(), DomainError> {
    match grant.role {
        Role::Customer if grant.customer_id.is_none() => Err(DomainError::RoleNeedsCustomer),
        Role::Technician if grant.technician_id.is_none() => Err(DomainError::RoleNeedsTechnician),
        _ => Ok(()),
    }
}

impl Aggregate for User {
    type Command = UserCommand;
    type Event = UserEvent;
    const STREAM_PREFIX: &'static str = "user";

    fn decide(
        &self,
        command: UserCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserEvent>, DomainError> {
        let u = match (command, &self.0) {
            (UserCommand::Register(_), Some(_)) => return Err(DomainError::UserAlreadyRegistered),
            (UserCommand::Register(r), None) => {
                let grant = r.grant.normalized();
                check_grant(&grant)?;
                return Ok(vec![UserEvent::UserRegistered {
                    user_id: r.user_id,
                    email: r.email,
                    name: r.name,
                    grant,
                    password_hash: r.password_hash,
                    must_change_password: r.must_change_password,
                    registered_at: now,
                }]);
            }
            (_, None) => return Err(DomainError::NotFound { kind: "user" }),
            (command, Some(u)) => (command, u),
        };
        let (command, u) = u;
        if !u.active && !matches!(command, UserCommand::SignOut { .. }) {
            return Err(DomainError::UserInactive);
        }
        let event = match command {
            UserCommand::Register(_) => return Err(DomainError::UserAlreadyRegistered),
            UserCommand::ChangeRole(grant) => {
                let grant = grant.normalized();
                check_grant(&grant)?;
                if grant == u.grant {
                    return Err(DomainError::NothingToChange);
                }
                UserEvent::UserRoleChanged {
                    grant,
                    changed_at: now,
                }
            }
            UserCommand::Deactivate { reason } => UserEvent::UserDeactivated {
                reason,
                deactivated_at: now,
            },
            UserCommand::ChangePassword { password_hash } => UserEvent::PasswordChanged {
                password_hash,
                changed_at: now,
            },
            UserCommand::SignIn { session_id } => UserEvent::UserSignedIn {
                session_id,
                signed_in_at: now,
            },
            UserCommand::SignOut { session_id } => UserEvent::UserSignedOut {
                session_id,
                signed_out_at: now,
            },
        };
        Ok(vec![event])
    }

    fn evolve(self, event: &UserEvent) -> Self {
        match (event.clone(), self.0) {
            (
                UserEvent::UserRegistered {
                    user_id,
                    email,
                    name,
                    grant,
                    password_hash,
                    must_change_password,
                    registered_at,
                },
                _,
            ) => User(Some(UserState {
                id: user_id,
                email,
                name,
                grant,
                password_hash,
                must_change_password,
                active: true,
                credentials_changed_at: registered_at,
                ended_sessions: BTreeSet::new(),
            })),
            (_, None) => User(None),
            (event, Some(mut u)) => {
                match event {
                    UserEvent::UserRegistered { .. } => {}
                    UserEvent::UserRoleChanged { grant, changed_at } => {
                        u.grant = grant;
                        u.credentials_changed_at = changed_at;
                    }
                    UserEvent::UserDeactivated { deactivated_at, .. } => {
                        u.active = false;
                        u.credentials_changed_at = deactivated_at;
                    }
                    UserEvent::PasswordChanged {
                        password_hash,
                        changed_at,
                    } => {
                        u.password_hash = password_hash;
                        u.must_change_password = false;
                        u.credentials_changed_at = changed_at;
                    }
                    UserEvent::UserSignedIn { .. } => {}
                    UserEvent::UserSignedOut { session_id, .. } => {
                        u.ended_sessions.insert(session_id);
                    }
                }
                User(Some(u))
            }
        }
    }
}
