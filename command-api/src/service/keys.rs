//! Unique keys (e-mail addresses, serial numbers, ticket numbers): claimed on a stream of
//! their own before the aggregate that uses them is appended, released when it is refused,
//! and the registrations that need them.

use domain::{
    Aggregate, Customer, CustomerCommand, CustomerId, Device, DeviceCommand, DomainError, Email,
    EventPayload, RegisterDevice, RegisterUser, ReservationEvent, RoleGrant, UniqueKey,
    UpdateCustomer, User, UserCommand, UserId,
};
use stream_store::{
    read_full_stream, AppendOutcome, AppendRequest, CommandMetadata, ExpectedVersion, StoreError,
    StreamId,
};
use uuid::Uuid;

use super::*;
use crate::ApiError;

impl CommandService {
    pub async fn update_customer(
        &self,
        id: CustomerId,
        update: UpdateCustomer,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Customer>(id);
        let cmd = CustomerCommand::Update(update.clone());
        let (current, _) = self
            .probe::<Customer>(&stream, cmd.clone(), expected, meta)
            .await?;
        let old_email = current.state().map(|c| c.email.clone());
        let new_email = update.email.filter(|e| Some(e) != old_email.as_ref());
        if let Some(email) = &new_email {
            self.reserve_email(Customer::STREAM_PREFIX, email, &stream, meta)
                .await?;
        }
        let outcome = self
            .execute::<Customer>(&stream, expected, meta, || cmd.clone())
            .await;
        match (&outcome, new_email, old_email) {
            // Refused after all (the customer changed meanwhile): the new address is not
            // theirs to keep.
            (Err(e), Some(new), _) if e.is_refusal() && !self.uses_email(&stream, &new).await? => {
                self.release_own_claim(
                    &Self::email_key(Customer::STREAM_PREFIX, &new)?,
                    new.as_str(),
                    &stream,
                    meta,
                )
                .await?;
            }
            (Ok(_), Some(_), Some(old)) => {
                self.release_key(
                    &Self::email_key(Customer::STREAM_PREFIX, &old)?,
                    old.as_str(),
                    &stream,
                    meta,
                )
                .await?;
            }
            _ => {}
        }
        outcome
    }

    // ---- devices ---------------------------------------------------------------------

    pub async fn register_device(
        &self,
        mut command: RegisterDevice,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        let stream = stream_of::<Device>(command.device_id);
        command.customer = self.customer_facts(command.customer_id).await?;
        let cmd = DeviceCommand::Register(command.clone());
        self.probe::<Device>(&stream, cmd.clone(), expected, meta)
            .await?;
        let serial = command.serial_number.as_str();
        let key = StreamId::new(UniqueKey::Serial(serial).stream_name())?;
        if !self.reserve(&key, serial, &stream, meta).await? {
            return Err(DomainError::SerialTaken.into());
        }
        let outcome = self
            .execute::<Device>(&stream, expected, meta, || cmd.clone())
            .await;
        if outcome.as_ref().is_err_and(ApiError::is_refusal)
            && !self.exists::<Device>(&stream).await?
        {
            self.release_own_claim(&key, serial, &stream, meta).await?;
        }
        outcome
    }

    pub async fn register_user(
        &self,
        command: RegisterUser,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.check_grant(&command.grant).await?;
        let cmd = UserCommand::Register(command.clone());
        self.register_with_email::<User>(command.user_id, cmd, &command.email, expected, meta)
            .await
    }

    pub async fn change_user_role(
        &self,
        id: UserId,
        grant: RoleGrant,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError> {
        self.check_grant(&grant).await?;
        self.send::<User>(id, UserCommand::ChangeRole(grant), expected, meta)
            .await
    }

    /// Registers an aggregate whose e-mail must be unique among its kind: refuse early what the
    /// domain refuses, claim the e-mail, then append.
    pub(crate) async fn register_with_email<A: Aggregate + Send + Sync + 'static>(
        &self,
        id: impl std::fmt::Display,
        command: A::Command,
        email: &Email,
        expected: Option<i64>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, ApiError>
    where
        A::Command: Clone,
    {
        let stream = &stream_of::<A>(id);
        self.probe::<A>(stream, command.clone(), expected, meta)
            .await?;
        self.reserve_email(A::STREAM_PREFIX, email, stream, meta)
            .await?;
        let outcome = self
            .execute::<A>(stream, expected, meta, || command.clone())
            .await;
        // Refused, or the key's first use was another request, whose e-mail this one is not.
        let reused = matches!(outcome, Err(ApiError::IdempotencyKeyReused));
        if reused
            || outcome.as_ref().is_err_and(ApiError::is_refusal)
                && !self.exists::<A>(stream).await?
        {
            self.release_own_claim(
                &Self::email_key(A::STREAM_PREFIX, email)?,
                email.as_str(),
                stream,
                meta,
            )
            .await?;
        }
        outcome
    }

    /// Whether the customer's e-mail, as the log has it, is `email` (a concurrent identical
    /// update won: the address is theirs).
    async fn uses_email(&self, stream: &StreamId, email: &Email) -> Result<bool, ApiError> {
        let (customer, _) = self
            .warm
            .load_from_log::<Customer>(&*self.store, stream)
            .await?;
        Ok(customer.state().is_some_and(|c| c.email == *email))
    }

    /// The stream of `email`'s claims among the aggregates whose streams are `among`-….
    fn email_key(among: &'static str, email: &Email) -> Result<StreamId, ApiError> {
        let (owner, email) = (among, email.as_str());
        Ok(StreamId::new(
            UniqueKey::Email { owner, email }.stream_name(),
        )?)
    }

    async fn reserve_email(
        &self,
        among: &'static str,
        email: &Email,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        let key = Self::email_key(among, email)?;
        if self.reserve(&key, email.as_str(), owner, meta).await? {
            Ok(())
        } else {
            Err(DomainError::EmailTaken.into())
        }
    }

    /// Gives `key` up if `owner` holds it (a changed e-mail's old address, or what a refused
    /// command claimed).
    async fn release_key(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        self.release(key_stream, key_value, owner, meta, false)
            .await
    }

    /// Gives `key` up after this command was refused, only if this command's own claim holds
    /// it: a key its owner held already (an earlier command that succeeded) stays held.
    async fn release_own_claim(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<(), ApiError> {
        self.release(key_stream, key_value, owner, meta, true).await
    }

    async fn release(
        &self,
        key_stream: &StreamId,
        key_value: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
        own_claim_only: bool,
    ) -> Result<(), ApiError> {
        let key = key_stream.clone();
        let (holder, version, claimed_by) = self.key_holder(&key).await?;
        if holder.as_deref() != Some(owner.as_str()) {
            return Ok(());
        }
        if own_claim_only {
            let before = version - 1;
            let own = Self::claim(key_stream, key_value, owner, meta, before)
                .meta
                .command_id;
            if claimed_by != Some(own) {
                return Ok(());
            }
        }
        let event = ReservationEvent::KeyReleased {
            key: key_value.to_owned(),
            owner: owner.to_string(),
            released_at: meta.recorded_at,
        };
        let release = derived(meta, &format!("release {key}@{version}"));
        let events = encode(std::slice::from_ref(&event), release.command_id);
        match self
            .store
            .append(&key, ExpectedVersion::Exact(version), events, &release)
            .await
        {
            // Someone else moved the key meanwhile: it is no longer ours to release.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Who holds a key now, the version of its stream, and the command id of its last event.
    async fn key_holder(
        &self,
        key: &StreamId,
    ) -> Result<(Option<String>, i64, Option<Uuid>), ApiError> {
        let events = read_full_stream(&*self.store, key).await?;
        let version = events.last().map_or(0, |e| e.version);
        let holder = events.last().and_then(|e| {
            ReservationEvent::from_stored(&e.event_type, e.schema_version, e.data.raw())
                .ok()
                .flatten()
                .and_then(|r| r.holder().map(str::to_owned))
        });
        Ok((holder, version, events.last().map(|e| e.command_id)))
    }

    /// Claims `key` for `owner` by appending to the key's own stream at the version read.
    /// True when the key is (now or already) the owner's; false when someone else holds it.
    pub(super) async fn reserve(
        &self,
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<bool, ApiError> {
        // Keys are nearly always new (a freshly drawn ticket number, a new e-mail address):
        // claim first and look only when the stream turns out to exist. A retried command
        // finds its own claim (a duplicate command id), which is the owner's.
        let first = Self::claim(key_stream, key, owner, meta, 0);
        match self
            .store
            .append(&first.stream, first.expected, first.events, &first.meta)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => {
                self.reserve_held(key_stream, key, owner, meta).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The append that claims `key` for `owner` on the key's stream, at `version` (0: new).
    pub(super) fn claim(
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
        version: i64,
    ) -> AppendRequest {
        // Each claim of the key by this command has its own id: one made after the key was
        // released (a refusal of this very command gave it back) must be written, not taken
        // for a repeat of the first.
        let claim = if version == 0 {
            derived(meta, key_stream.as_str())
        } else {
            derived(meta, &format!("{}@{version}", key_stream.as_str()))
        };
        let event = ReservationEvent::KeyReserved {
            key: key.to_owned(),
            owner: owner.to_string(),
            reserved_at: meta.recorded_at,
        };
        AppendRequest {
            stream: key_stream.clone(),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: encode(std::slice::from_ref(&event), claim.command_id),
            meta: claim,
        }
    }

    /// `reserve`, once the key's stream turned out to exist: the key is the owner's if it
    /// holds it already (an earlier delivery of the command) or it was released since.
    pub(super) async fn reserve_held(
        &self,
        key_stream: &StreamId,
        key: &str,
        owner: &StreamId,
        meta: &CommandMetadata,
    ) -> Result<bool, ApiError> {
        for _ in 0..MAX_ATTEMPTS {
            let (holder, version, _) = self.key_holder(key_stream).await?;
            match holder {
                Some(h) => return Ok(h == owner.as_str()),
                None => {
                    let next = Self::claim(key_stream, key, owner, meta, version);
                    match self
                        .store
                        .append(key_stream, next.expected, next.events, &next.meta)
                        .await
                    {
                        Ok(_) => return Ok(true),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ApiError::Unavailable(StoreError::Unavailable(
            "the key kept changing; retry".into(),
        )))
    }
}
