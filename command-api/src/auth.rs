//! Sign-in: argon2 password hashes, short-lived signed tokens (JWT, HS256), sessions recorded as
//! events on the user's stream (so sign-in and sign-out are in the audit trail), and a brake on
//! repeated failures.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use domain::access::Principal;
use domain::{
    stream_id_of, Aggregate, Email, EventPayload, PasswordHash, ReservationEvent, UniqueKey, User,
    UserId, UserState,
};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use stream_store::{read_full_stream, EventStore, StreamId};
use uuid::Uuid;

use crate::throttle::{hashing, Throttle};
use crate::warm::{fold_after, WarmStates};
use crate::ApiError;

/// How long an access token lives.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    sid: Uuid,
    role: String,
    iat: i64,
    exp: i64,
    /// Issue time in milliseconds: credentials changed after it invalidate the token.
    iat_ms: i64,
}

/// Who a valid token speaks for, and what they must do first.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub session_id: Uuid,
    pub must_change_password: bool,
}

/// Why a token is refused (all answer 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("the session has ended; sign in again")]
    Ended,
    /// The account could not be checked because the store is down (503, not 401).
    #[error("the event store is unavailable")]
    Unavailable,
}

/// Issues and checks tokens; verifies passwords.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    store: Arc<dyn EventStore>,
    /// Accounts as last checked: a token check reads only what happened to one since.
    users: WarmStates,
    throttle: Throttle,
    /// Proxies whose `X-Forwarded-For` names the client (others' is ignored).
    trusted_proxies: Vec<IpAddr>,
    /// Keys what a request id says of the request's passwords (see `request_key`).
    request_key: [u8; 32],
}

impl TokenService {
    pub fn new(
        secret: &[u8],
        store: Arc<dyn EventStore>,
        throttle: Throttle,
        trusted_proxies: Vec<IpAddr>,
    ) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            store,
            users: WarmStates::new(),
            throttle,
            trusted_proxies,
            request_key: crate::service::keyed(secret, b"ledger request ids"),
        }
    }

    /// A key derived from the secret: the passwords a request carries enter its id (stored as
    /// its events' causation id) only through it, so that a request id tells another password
    /// from the same one without letting anyone who reads the log test guesses against it.
    pub fn request_key(&self) -> [u8; 32] {
        self.request_key
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not one of the trusted proxies.
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> String {
        let Some(peer) = peer else {
            return "unknown".into();
        };
        if !self.trusted_proxies.contains(&peer) {
            return peer.to_string();
        }
        forwarded_for
            .into_iter()
            .flat_map(|v| v.rsplit(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .find(|a| !self.trusted_proxies.contains(a))
            .unwrap_or(peer)
            .to_string()
    }

    pub fn store(&self) -> &dyn EventStore {
        &*self.store
    }

    /// A signed token for a session of `user`.
    pub fn issue(
        &self,
        user: &UserState,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user.id.as_uuid(),
            sid: session_id,
            role: user.grant.role.label().to_owned(),
            iat: now.timestamp(),
            exp: now.timestamp() + i64::try_from(TOKEN_TTL.as_secs()).unwrap_or(900),
            iat_ms: now.timestamp_millis(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))
    }

    /// Checks the token's signature and expiry, then the account as it is now: active, the
    /// session not ended, credentials unchanged since the token was issued.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;
        let stream = StreamId::for_aggregate(User::STREAM_PREFIX, UserId::from_uuid(claims.sub));
        let (user, _) = self
            .users
            .load::<User>(&*self.store, &stream)
            .await
            .map_err(|e| match e {
                ApiError::Unavailable(_) => AuthError::Unavailable,
                _ => AuthError::Invalid,
            })?;
        let user = user.state().ok_or(AuthError::Invalid)?;
        if !user.active || user.ended_sessions.contains(&claims.sid) {
            return Err(AuthError::Ended);
        }
        if claims.iat_ms < user.credentials_changed_at.timestamp_millis() {
            return Err(AuthError::Ended);
        }
        Ok(Authenticated {
            principal: principal_of(user),
            session_id: claims.sid,
            must_change_password: user.must_change_password,
        })
    }
}

pub fn principal_of(user: &UserState) -> Principal {
    Principal {
        user_id: user.id,
        role: user.grant.role,
        customer_id: user.grant.customer_id,
        technician_id: user.grant.technician_id,
    }
}

/// The user account, if registered.
pub async fn load_user(store: &dyn EventStore, id: UserId) -> Result<Option<UserState>, ApiError> {
    let stream = StreamId::for_aggregate(User::STREAM_PREFIX, id);
    let (user, _) = fold_after(store, &stream, User::default(), 0).await?;
    Ok(user.state().cloned())
}

/// The account registered with `email`, through the e-mail's reservation stream.
pub async fn user_by_email(
    store: &dyn EventStore,
    email: &Email,
) -> Result<Option<UserState>, ApiError> {
    let key = StreamId::new(
        UniqueKey::Email {
            owner: User::STREAM_PREFIX,
            email: email.as_str(),
        }
        .stream_name(),
    )?;
    let claims = read_full_stream(store, &key).await?;
    let holder = claims.last().and_then(|e| {
        ReservationEvent::from_stored(&e.event_type, e.schema_version, e.data.raw())
            .ok()
            .flatten()
            .and_then(|r| r.holder().map(str::to_owned))
    });
    let Some(id) = holder
        .as_deref()
        .and_then(|h| stream_id_of(h, User::STREAM_PREFIX))
    else {
        return Ok(None);
    };
    load_user(store, UserId::from_uuid(id)).await
}

/// Hashes a password with argon2id and a random salt (CPU-heavy: runs off the async threads).
pub async fn hash_password(password: String) -> Result<PasswordHash, ApiError> {
    hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| PasswordHash::new(h.to_string()))
            .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
    })
    .await?
}

/// Whether `password` matches `hash` (constant-time inside argon2); 503 when too many checks
/// wait for their turn.
pub async fn verify_password(password: String, hash: PasswordHash) -> Result<bool, ApiError> {
    hashing(move || {
        argon2::password_hash::PasswordHash::new(hash.as_str())
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
}

/// A random password that meets the policy, for first accounts and demo data.
pub fn generate_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "{}-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 10),
        Alphanumeric.sample_string(&mut rand::thread_rng(), 6)
    )
}

/// Creates the first admin account, once per database: returns its e-mail and password (and
/// whether the password was generated, so must be changed) when this call created it.
pub async fn bootstrap_admin(
    service: &crate::CommandService,
    email: &str,
    password: Option<String>,
) -> Result<Option<(String, String, bool)>, ApiError> {
    use domain::access::Role;
    use domain::{RegisterUser, RoleGrant, Text};
    use stream_store::{Actor, CommandMetadata, ExpectedVersion, NewEvent, StoreError};

    let marker = StreamId::new("ledger-bootstrap")?;
    let claimed = read_full_stream(service.store(), &marker).await?;
    // A start that claimed the first admin and died before registering it left the claim:
    // the next start registers that admin (with a new password), else no one could sign in.
    let unfinished = claimed.first().and_then(|e| {
        match ReservationEvent::from_stored(&e.event_type, e.schema_version, e.data.raw()) {
            Ok(Some(ReservationEvent::KeyReserved { owner, .. })) => {
                stream_id_of(&owner, User::STREAM_PREFIX)
            }
            _ => None,
        }
    });
    let user_id = match (claimed.is_empty(), unfinished) {
        (true, _) => None,
        (false, Some(id)) => {
            let user = StreamId::for_aggregate(User::STREAM_PREFIX, id);
            if !read_full_stream(service.store(), &user).await?.is_empty() {
                return Ok(None);
            }
            tracing::warn!("completing a first start that stopped before the admin was registered");
            Some(id)
        }
        (false, None) => return Ok(None),
    };
    let email = Email::parse("email", email)?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(generate_password);
    domain::access::check_password_policy(&password)?;
    let resumed = user_id.is_some();
    let user_id = UserId::from_uuid(user_id.unwrap_or_else(Uuid::new_v4));
    let command_id = Uuid::new_v4();
    let meta = CommandMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor: Actor {
            id: "system".into(),
            role: "system".into(),
        },
        recorded_at: Utc::now(),
    };
    let claim = ReservationEvent::KeyReserved {
        key: "first-admin".into(),
        owner: StreamId::for_aggregate(User::STREAM_PREFIX, user_id).to_string(),
        reserved_at: meta.recorded_at,
    };
    let event = NewEvent {
        event_id: Uuid::new_v5(&command_id, b"bootstrap"),
        event_type: claim.event_type().to_owned(),
        schema_version: claim.schema_version(),
        data: claim.to_data(),
    };
    let bootstrap_meta = CommandMetadata {
        command_id: Uuid::new_v5(&command_id, b"bootstrap"),
        ..meta.clone()
    };
    let claim = if resumed {
        Ok(())
    } else {
        service
            .store()
            .append(
                &marker,
                ExpectedVersion::NoStream,
                vec![event],
                &bootstrap_meta,
            )
            .await
            .map(|_| ())
    };
    match claim {
        Ok(()) => {}
        // Another process bootstrapped first.
        Err(StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let register = RegisterUser {
        user_id,
        email: email.clone(),
        name: Text::parse("name", "Administrator", 200)?,
        grant: RoleGrant {
            role: Role::Admin,
            customer_id: None,
            technician_id: None,
        },
        password_hash: hash_password(password.clone()).await?,
        must_change_password: generated,
    };
    match service.register_user(register, None, &meta).await {
        Ok(_) => Ok(Some((email.as_str().to_owned(), password, generated))),
        // Another process completing the same unfinished start won.
        Err(ApiError::Rule(
            domain::DomainError::UserAlreadyRegistered | domain::DomainError::EmailTaken,
        )) if resumed => Ok(None),
        Err(e) => Err(e),
    }
}
