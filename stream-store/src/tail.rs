//! The last events this process's writer committed, for the PostgreSQL backend.
//!
//! Every append batch is read back right after its commit: by each subscription (the
//! projections follow the log) and by the listener, which asks which streams changed for the
//! stream cache. When this process wrote the batch, it already holds those events exactly as
//! a read returns them, so they are answered from here instead of the database.
//!
//! **No skips.** The tail holds a run of positions without gaps: a batch that does not start
//! right after the tail's last position (another process appended in between, or a commit's
//! outcome was lost) replaces it. A read is answered only when the tail holds the position
//! right after the reader's and reaches the newest head this process knows of; any other read
//! goes to the database. Positions are dense and committed in order (see `postgres.rs`), so a
//! run of positions held here is exactly what the log holds at those positions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::RecordedEvent;

/// Events kept: a few batches' worth, enough for subscribers that are a little behind.
const TAIL_EVENTS: usize = 2_048;

#[derive(Default)]
pub(crate) struct Tail {
    events: Mutex<VecDeque<Arc<RecordedEvent>>>,
}

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<RecordedEvent>>> {
        // Every operation leaves the run without gaps; a panic elsewhere cannot tear it.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a committed batch: its events in position order, without gaps.
    pub(crate) fn committed(&self, batch: Vec<Arc<RecordedEvent>>) {
        let Some(first) = batch.first().map(|e| e.position) else {
            return;
        };
        let contiguous = batch.windows(2).all(|w| w[1].position == w[0].position + 1);
        let mut events = self.lock();
        if !contiguous || events.back().is_some_and(|e| e.position + 1 != first) {
            events.clear();
        }
        if !contiguous {
            return;
        }
        events.extend(batch);
        while events.len() > TAIL_EVENTS {
            events.pop_front();
        }
    }

    /// Forgets everything (the writer's outcome of a batch is unknown).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// The held events from position `from` up to `to` (both inclusive), if the tail holds
    /// every one of them.
    fn range(
        events: &VecDeque<Arc<RecordedEvent>>,
        from: i64,
        to: i64,
    ) -> Option<impl Iterator<Item = &Arc<RecordedEvent>>> {
        let front = events.front()?.position;
        let back = events.back()?.position;
        if from < front || to > back || from > to {
            return None;
        }
        let skip = usize::try_from(from - front).ok()?;
        let take = usize::try_from(to - from + 1).ok()?;
        Some(events.iter().skip(skip).take(take))
    }

    /// The events after `after`, at most `limit`, if the tail holds all of them up to `head`.
    /// Never an empty answer: a reader with nothing new may have been woken by the fallback
    /// poll, which exists for what this process might not know of, so it asks the database.
    pub(crate) fn read_all(
        &self,
        after: i64,
        limit: usize,
        head: i64,
    ) -> Option<Vec<RecordedEvent>> {
        let events = self.lock();
        if events.back().is_none_or(|e| e.position < head) {
            return None;
        }
        let to = events.back()?.position;
        let read = Self::range(&events, after + 1, to)?
            .take(limit)
            .map(|e| RecordedEvent::clone(e))
            .collect();
        Some(read)
    }

    /// Each stream written at positions `after < p <= to`, with its last version there, if
    /// the tail holds all of them.
    pub(crate) fn changes(&self, after: i64, to: i64) -> Option<Vec<(String, i64)>> {
        let events = self.lock();
        let mut changes: Vec<(String, i64)> = Vec::new();
        for e in Self::range(&events, after + 1, to)? {
            match changes.iter_mut().find(|(s, _)| s == e.stream_id.as_str()) {
                Some((_, version)) => *version = (*version).max(e.version),
                None => changes.push((e.stream_id.as_str().to_owned(), e.version)),
            }
        }
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, StreamId};

    fn event(position: i64, stream: &str, version: i64) -> Arc<RecordedEvent> {
        Arc::new(RecordedEvent {
            position,
            stream_id: StreamId::new(stream).unwrap(),
            version,
            event_id: uuid::Uuid::new_v4(),
            event_type: "Happened".into(),
            schema_version: 1,
            data: crate::Payload::from_value(&serde_json::json!({ "n": position })).unwrap(),
            command_id: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: uuid::Uuid::new_v4(),
            actor: Actor {
                id: "tester".into(),
                role: "admin".into(),
            },
            recorded_at: chrono::Utc::now(),
        })
    }

    fn positions(events: Option<Vec<RecordedEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.position).collect())
    }

    #[test]
    fn a_read_is_answered_only_from_the_position_after_the_readers_to_the_head() {
        let tail = Tail::default();
        tail.committed(vec![
            event(11, "a", 1),
            event(12, "b", 1),
            event(13, "a", 2),
        ]);
        assert_eq!(
            positions(tail.read_all(10, 100, 13)),
            Some(vec![11, 12, 13])
        );
        assert_eq!(positions(tail.read_all(11, 1, 13)), Some(vec![12]));
        // Nothing new, before what it holds, or short of a head another process moved: the
        // database.
        assert_eq!(positions(tail.read_all(13, 100, 13)), None);
        assert_eq!(positions(tail.read_all(9, 100, 13)), None);
        assert_eq!(positions(tail.read_all(11, 100, 14)), None);
    }

    #[test]
    fn a_batch_after_a_gap_replaces_the_tail() {
        let tail = Tail::default();
        tail.committed(vec![event(1, "a", 1), event(2, "a", 2)]);
        tail.committed(vec![event(5, "b", 1)]);
        assert_eq!(positions(tail.read_all(2, 100, 5)), None);
        assert_eq!(positions(tail.read_all(4, 100, 5)), Some(vec![5]));
        tail.committed(vec![event(6, "b", 2), event(8, "b", 3)]);
        assert_eq!(positions(tail.read_all(5, 100, 6)), None);
    }

    #[test]
    fn changes_name_each_stream_once_with_its_last_version() {
        let tail = Tail::default();
        tail.committed(vec![event(1, "a", 1), event(2, "b", 1), event(3, "a", 2)]);
        assert_eq!(
            tail.changes(0, 3),
            Some(vec![("a".to_owned(), 2), ("b".to_owned(), 1)])
        );
        assert_eq!(tail.changes(1, 2), Some(vec![("b".to_owned(), 1)]));
        assert_eq!(tail.changes(0, 4), None);
        tail.clear();
        assert_eq!(tail.changes(0, 3), None);
    }
}
