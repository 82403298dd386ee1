//! EventStoreDB backend, through the official `eventstore` gRPC client.
//!
//! Mapping: a stream's version is the EventStoreDB revision + 1 (our first event is version 1,
//! revision 0); the global position is the event's commit position in `$all` (monotonic, not
//! dense). Our metadata (command id, correlation and causation ids, actor, recorded-at, schema
//! version) travels as the event's custom metadata (JSON).
//!
//! Idempotency by command id: EventStoreDB deduplicates by event id only, so each command id
//! gets a small index stream `ledger-command-{id}`: the first writer claims it (append with
//! "no stream" / the version read), appends the events, then records the outcome there; a
//! repeat finds the outcome and writes nothing; a failed append releases the claim. These
//! index streams, and system streams, are hidden from `read_all` and subscriptions.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::{
    AppendToStreamOptions, Client, CurrentRevision, EventData, ExpectedRevision, Position,
    ReadAllOptions, ReadStreamOptions, ResolvedEvent, StreamPosition, SubscribeToAllOptions,
    SubscriptionEvent, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    Actor, AppendOutcome, CommandMetadata, EventStore, EventStream, ExpectedVersion, NewEvent,
    RecordedEvent, StoreError, StreamId,
};

const COMMAND_PREFIX: &str = "ledger-command-";
const CLAIMED: &str = "CommandClaimed";
const APPENDED: &str = "CommandAppended";
const RELEASED: &str = "CommandReleased";
/// How long a repeat waits for a concurrent first attempt of the same command to finish.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The EventStoreDB store. Cheap to clone (the client is).
#[derive(Clone)]
pub struct EsdbEventStore {
    client: Client,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    command_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
    actor: Actor,
    recorded_at: DateTime<Utc>,
    schema_version: i32,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

fn ours(e: &eventstore::RecordedEvent) -> bool {
    !e.stream_id.starts_with('$')
        && !e.event_type.starts_with('$')
        && !e.stream_id.starts_with(COMMAND_PREFIX)
}

fn position_of(e: &eventstore::RecordedEvent) -> i64 {
    i64::try_from(e.position.commit).unwrap_or(i64::MAX)
}

fn convert(e: &eventstore::RecordedEvent) -> Result<RecordedEvent, StoreError> {
    let meta: Meta = serde_json::from_slice(&e.custom_metadata)
        .map_err(|err| unavailable(format!("event {} has no ledger metadata: {err}", e.id)))?;
    let data = serde_json::from_slice(&e.data)
        .map_err(|err| unavailable(format!("event {} is not JSON: {err}", e.id)))?;
    Ok(RecordedEvent {
        position: position_of(e),
        stream_id: StreamId::trusted(e.stream_id.clone()),
        version: i64::try_from(e.revision).unwrap_or(i64::MAX - 1) + 1,
        event_id: e.id,
        event_type: e.event_type.clone(),
        schema_version: meta.schema_version,
        data,
        command_id: meta.command_id,
        correlation_id: meta.correlation_id,
        causation_id: meta.causation_id,
        actor: meta.actor,
        recorded_at: meta.recorded_at,
    })
}

fn expected_revision(expected: ExpectedVersion) -> ExpectedRevision {
    match expected {
        ExpectedVersion::Any => ExpectedRevision::Any,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => ExpectedRevision::NoStream,
        ExpectedVersion::Exact(v) => ExpectedRevision::Exact(u64::try_from(v - 1).unwrap_or(0)),
    }
}

fn actual_version(current: &CurrentRevision) -> i64 {
    match current {
        CurrentRevision::Current(r) => i64::try_from(*r).unwrap_or(i64::MAX - 1) + 1,
        CurrentRevision::NoStream => 0,
    }
}

/// The recorded outcome of a command, as its index stream keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    stream: String,
    event_ids: Vec<Uuid>,
    first_version: i64,
}

impl EsdbEventStore {
    /// Connects to `esdb://…` (the client connects lazily and reconnects by itself).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let settings = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad EventStoreDB connection string: {e}")))?;
        let client = Client::new(settings).map_err(unavailable)?;
        Ok(Self { client })
    }

    async fn raw_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<eventstore::RecordedEvent>, StoreError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from_revision))
            .max_count(limit);
        let mut read = match self.client.read_stream(stream.to_owned(), &options).await {
            Ok(read) => read,
            Err(eventstore::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(e)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(ResolvedEvent { event: Some(e), .. })) => out.push(e),
                Ok(Some(_)) => {}
                Ok(None) | Err(eventstore::Error::ResourceNotFound) => return Ok(out),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The last event of the command's index stream and that stream's revision.
    async fn command_state(
        &self,
        command_id: Uuid,
    ) -> Result<(Option<eventstore::RecordedEvent>, Option<u64>), StoreError> {
        let events = self
            .raw_stream(&format!("{COMMAND_PREFIX}{command_id}"), 0, usize::MAX)
            .await?;
        let revision = events.last().map(|e| e.revision);
        Ok((events.into_iter().last(), revision))
    }

    async fn mark(
        &self,
        command_id: Uuid,
        kind: &str,
        expected: ExpectedRevision,
        body: serde_json::Value,
    ) -> Result<bool, StoreError> {
        let event = EventData::json(kind, &body)
            .map_err(unavailable)?
            .id(Uuid::new_v4());
        let options = AppendToStreamOptions::default().expected_revision(expected);
        match self
            .client
            .append_to_stream(format!("{COMMAND_PREFIX}{command_id}"), &options, event)
            .await
        {
            Ok(_) => Ok(true),
            Err(eventstore::Error::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The outcome a finished command recorded.
    async fn outcome(
        &self,
        marker: &eventstore::RecordedEvent,
    ) -> Result<AppendOutcome, StoreError> {
        let recorded: Outcome = serde_json::from_slice(&marker.data).map_err(unavailable)?;
        let from = u64::try_from(recorded.first_version - 1).unwrap_or(0);
        let events = self
            .raw_stream(&recorded.stream, from, recorded.event_ids.len())
            .await?;
        let events = events.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
        let last = events
            .last()
            .ok_or_else(|| unavailable("a recorded command's events are gone"))?;
        Ok(AppendOutcome {
            stream_id: last.stream_id.clone(),
            version: last.version,
            position: last.position,
            duplicate: true,
            events,
        })
    }

    /// Settles a claim whose writer stopped between its append and its record.
    async fn repair(
        &self,
        command_id: Uuid,
        marker: &eventstore::RecordedEvent,
    ) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Claim {
            stream: String,
            event_ids: Vec<Uuid>,
        }
        let claim: Claim = serde_json::from_slice(&marker.data).map_err(unavailable)?;
        let written = self.raw_stream(&claim.stream, 0, usize::MAX).await?;
        let found: Vec<_> = written
            .iter()
            .filter(|e| claim.event_ids.contains(&e.id))
            .collect();
        let at = ExpectedRevision::Exact(marker.revision);
        match found.first() {
            Some(first) if found.len() == claim.event_ids.len() => {
                let outcome = Outcome {
                    stream: claim.stream.clone(),
                    event_ids: claim.event_ids.clone(),
                    first_version: i64::try_from(first.revision).unwrap_or(0) + 1,
                };
                let body = serde_json::to_value(&outcome).map_err(unavailable)?;
                self.mark(command_id, APPENDED, at, body).await?;
            }
            _ => {
                self.mark(command_id, RELEASED, at, serde_json::json!({}))
                    .await?;
            }
        }
        Ok(())
    }

    /// Claims the command id for an append to `stream` of `event_ids`; `Err(outcome)` when it
    /// already finished. A claim left by a writer that died is repaired: if its events reached
    /// their stream, the outcome is recorded; if not, the claim is released.
    async fn claim(
        &self,
        command_id: Uuid,
        stream: &str,
        event_ids: &[Uuid],
    ) -> Result<Result<u64, AppendOutcome>, StoreError> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            let (last, revision) = self.command_state(command_id).await?;
            match last.as_ref().map(|e| e.event_type.as_str()) {
                Some(APPENDED) => {
                    let marker = last.ok_or_else(|| unavailable("index vanished"))?;
                    return Ok(Err(self.outcome(&marker).await?));
                }
                Some(CLAIMED) => {
                    // A first attempt is in flight: wait for it, then settle a stale claim.
                    if tokio::time::Instant::now() > deadline {
                        let marker = last.ok_or_else(|| unavailable("index vanished"))?;
                        self.repair(command_id, &marker).await?;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    let expected = match revision {
                        None => ExpectedRevision::NoStream,
                        Some(r) => ExpectedRevision::Exact(r),
                    };
                    let body = serde_json::json!({ "stream": stream, "eventIds": event_ids });
                    if self.mark(command_id, CLAIMED, expected, body).await? {
                        return Ok(Ok(revision.map_or(0, |r| r + 1)));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for EsdbEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        meta: &CommandMetadata,
    ) -> Result<AppendOutcome, StoreError> {
        if events.is_empty() {
            return Err(StoreError::Invalid(
                "an append needs at least one event".into(),
            ));
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let claim_revision = match self.claim(meta.command_id, stream.as_str(), &ids).await? {
            Ok(r) => r,
            Err(done) => {
                return match done.events.first() {
                    Some(first) if first.causation_id != meta.causation_id => {
                        Err(StoreError::CommandReused {
                            command_id: meta.command_id,
                        })
                    }
                    _ => Ok(done),
                }
            }
        };
        let mut data = Vec::with_capacity(events.len());
        for e in &events {
            let custom = Meta {
                command_id: meta.command_id,
                correlation_id: meta.correlation_id,
                causation_id: meta.causation_id,
                actor: meta.actor.clone(),
                recorded_at: meta.recorded_at,
                schema_version: e.schema_version,
            };
            data.push(
                EventData::json(e.event_type.clone(), &e.data)
                    .and_then(|d| d.metadata_as_json(&custom))
                    .map_err(|err| StoreError::Invalid(err.to_string()))?
                    .id(e.event_id),
            );
        }
        let options =
            AppendToStreamOptions::default().expected_revision(expected_revision(expected));
        let written = match self
            .client
            .append_to_stream(stream.as_str().to_owned(), &options, data)
            .await
        {
            Ok(w) => w,
            Err(e) => {
                self.mark(
                    meta.command_id,
                    RELEASED,
                    ExpectedRevision::Exact(claim_revision),
                    serde_json::json!({}),
                )
                .await?;
                return Err(match e {
                    eventstore::Error::WrongExpectedVersion { current, .. } => {
                        StoreError::Conflict {
                            stream: stream.clone(),
                            expected,
                            actual: actual_version(&current),
                        }
                    }
                    other => unavailable(other),
                });
            }
        };
        let count = events.len() as u64;
        let first_revision = written.next_expected_version + 1 - count;
        let stored = self
            .raw_stream(stream.as_str(), first_revision, events.len())
            .await?;
        let recorded = stored.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
        let outcome = Outcome {
            stream: stream.as_str().to_owned(),
            event_ids: recorded.iter().map(|e| e.event_id).collect(),
            first_version: i64::try_from(first_revision).unwrap_or(0) + 1,
        };
        let body = serde_json::to_value(&outcome).map_err(unavailable)?;
        self.mark(
            meta.command_id,
            APPENDED,
            ExpectedRevision::Exact(claim_revision),
            body,
        )
        .await?;
        let last = recorded
            .last()
            .ok_or_else(|| unavailable("appended events not found"))?;
        Ok(AppendOutcome {
            stream_id: stream.clone(),
            version: last.version,
            position: last.position,
            duplicate: false,
            events: recorded,
        })
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Option<AppendOutcome>, StoreError> {
        match self.command_state(command_id).await? {
            (Some(marker), _) if marker.event_type == APPENDED => {
                Ok(Some(self.outcome(&marker).await?))
            }
            _ => Ok(None),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = u64::try_from(after_version).unwrap_or(0);
        let events = self.raw_stream(stream.as_str(), from, limit).await?;
        events.iter().map(convert).collect()
    }

    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        let mut from = if after <= 0 {
            StreamPosition::Start
        } else {
            let p = u64::try_from(after).unwrap_or(0);
            StreamPosition::Position(Position {
                commit: p,
                prepare: p,
            })
        };
        // Our events are interleaved with system ones: page until enough of ours.
        loop {
            let page_size = limit.max(64);
            let options = ReadAllOptions::default()
                .forwards()
                .position(from)
                .max_count(page_size);
            let mut read = self.client.read_all(&options).await.map_err(unavailable)?;
            let mut seen = 0;
            let mut last = None;
            while let Some(resolved) = read.next().await.map_err(unavailable)? {
                let Some(e) = resolved.event else { continue };
                seen += 1;
                last = Some(e.position);
                if position_of(&e) > after && ours(&e) && out.len() < limit {
                    out.push(convert(&e)?);
                }
            }
            match last {
                Some(p) if seen == page_size && out.len() < limit => {
                    from = StreamPosition::Position(p)
                }
                _ => return Ok(out),
            }
        }
    }

    async fn head(&self) -> Result<i64, StoreError> {
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(4096);
        let mut read = self.client.read_all(&options).await.map_err(unavailable)?;
        while let Some(resolved) = read.next().await.map_err(unavailable)? {
            if let Some(e) = resolved.event.filter(ours) {
                return Ok(position_of(&e));
            }
        }
        Ok(0)
    }

    fn subscribe_all(&self, after: i64) -> EventStream {
        let (tx, rx) = mpsc::channel(1024);
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut last = after;
            // Resubscribe from the last delivered position after any disconnect.
            while !tx.is_closed() {
                let from = if last <= 0 {
                    StreamPosition::Start
                } else {
                    let p = u64::try_from(last).unwrap_or(0);
                    StreamPosition::Position(Position {
                        commit: p,
                        prepare: p,
                    })
                };
                let options = SubscribeToAllOptions::default()
                    .position(from)
                    .filter(SubscriptionFilter::on_event_type().exclude_system_events());
                let mut subscription = client.subscribe_to_all(&options).await;
                loop {
                    match subscription.next_subscription_event().await {
                        Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                            let Some(e) = resolved.event else { continue };
                            if position_of(&e) <= last || !ours(&e) {
                                continue;
                            }
                            last = position_of(&e);
                            if tx.send(convert(&e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "EventStoreDB subscription dropped; resubscribing");
                            break;
                        }
                    }
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        }))
    }
}
