//! `ledger migrate-store`: copies every event from one store to another, preserving ids, order,
//! metadata and stream versions, then verifies the copy.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use stream_store::{
    CommandMetadata, EsdbEventStore, EventStore, ExpectedVersion, NewEvent, PgEventStore,
    RecordedEvent,
};

const PAGE: usize = 1000;

/// A store named by URL: `postgres://…` or `esdb://…` (`esdb+discover://…`).
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn EventStore>> {
    if url.starts_with("esdb") {
        Ok(Arc::new(EsdbEventStore::connect(url)?))
    } else if url.starts_with("postgres") {
        let pool = crate::connect_and_migrate(url).await?;
        Ok(Arc::new(PgEventStore::new(pool)))
    } else {
        bail!("unknown store URL {url:?}: use postgres://… or esdb://…")
    }
}

/// Copies `from` into the empty `to`; returns how many events were copied.
pub async fn migrate(
    from: &dyn EventStore,
    to: &dyn EventStore,
    progress: &dyn Fn(usize),
) -> anyhow::Result<usize> {
    if to.head().await? != 0 {
        bail!("the target store is not empty");
    }
    let mut copied = 0;
    let mut after = 0;
    loop {
        let page = from.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        // One append per run of events of one command in one stream, as they were written.
        let mut start = 0;
        while start < page.len() {
            let first = &page[start];
            let end = page[start..]
                .iter()
                .position(|e| e.command_id != first.command_id || e.stream_id != first.stream_id)
                .map_or(page.len(), |n| start + n);
            append_group(to, &page[start..end]).await?;
            copied += end - start;
            start = end;
        }
        progress(copied);
    }
    verify(from, to).await?;
    Ok(copied)
}

async fn append_group(to: &dyn EventStore, group: &[RecordedEvent]) -> anyhow::Result<()> {
    let first = &group[0];
    let meta = CommandMetadata {
        command_id: first.command_id,
        correlation_id: first.correlation_id,
        causation_id: first.causation_id,
        actor: first.actor.clone(),
        recorded_at: first.recorded_at,
    };
    let events = group
        .iter()
        .map(|e| NewEvent {
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            data: e.data.to_value(),
        })
        .collect();
    let outcome = to
        .append(
            &first.stream_id,
            ExpectedVersion::Exact(first.version - 1),
            events,
            &meta,
        )
        .await
        .with_context(|| format!("copying {} v{}", first.stream_id, first.version))?;
    if outcome.duplicate {
        bail!(
            "command {} appears twice in the source log (at {} v{})",
            first.command_id,
            first.stream_id,
            first.version
        );
    }
    Ok(())
}

/// Both logs hold the same events in the same order, with the same streams, versions and metadata.
async fn verify(from: &dyn EventStore, to: &dyn EventStore) -> anyhow::Result<()> {
    let (mut a, mut b) = (0, 0);
    let mut index = 0usize;
    loop {
        let left = from.read_all(a, PAGE).await?;
        let right = to.read_all(b, left.len().max(1)).await?;
        if left.len() != right.len() {
            bail!("verification failed: the copy has a different number of events after #{index}");
        }
        if left.is_empty() {
            return Ok(());
        }
        for (x, y) in left.iter().zip(&right) {
            let same = x.event_id == y.event_id
                && x.stream_id == y.stream_id
                && x.version == y.version
                && x.event_type == y.event_type
                && x.schema_version == y.schema_version
                && x.data == y.data
                && x.command_id == y.command_id
                && x.correlation_id == y.correlation_id
                && x.causation_id == y.causation_id
                && x.actor == y.actor
                && x.recorded_at == y.recorded_at;
            if !same {
                bail!(
                    "verification failed at event #{index} ({} v{})",
                    x.stream_id,
                    x.version
                );
            }
            index += 1;
        }
        a = left.last().map_or(a, |e| e.position);
        b = right.last().map_or(b, |e| e.position);
    }
}
