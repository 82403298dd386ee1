//! A per-process cache of whole streams for the PostgreSQL backend, so that commands and
//! token checks do not re-read aggregates they have just written or read.
//!
//! **Never stale beyond the notification delay.** Every append batch is announced with a
//! NOTIFY of its last position once committed (or, should its writer die first, found by the
//! listener's re-read of the head after a quiet second); the listener asks which streams
//! changed up to it (`changed`): cached entries older than a change stop being served, and
//! the change is remembered for a while (`recent`). A stream read from the database, or
//! completed by an own append, is kept only
//! if no change the listener applied after the read began (after the append's position) is
//! newer than it, so no change can slip between a read and its invalidation, whichever of
//! the reader and the listener gets there first. While the listener is not connected
//! nothing is cached. Writes never trust the cache blindly anyway: an append at a stale
//! version is refused as a conflict, which drops the entry, and the command is re-decided on
//! what the database holds.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::{AppendOutcome, RecordedEvent};

/// Most events held in all; least recently used streams go first.
const MAX_EVENTS: usize = 20_000;
/// Longer streams are not cached (they are rare and would crowd out the rest).
pub(crate) const MAX_STREAM_EVENTS: usize = 256;
const MAX_STREAMS: usize = 20_000;
/// Changes remembered for reads and appends still under way (a few seconds at full load).
const MAX_RECENT_CHANGES: usize = 8_192;

pub(crate) struct StreamCache {
    state: Mutex<State>,
}

/// A stream's events from version 1 on. Every entry is a true prefix of its stream; it is
/// served only while `current` (no newer change has been seen), and a stale one is kept so
/// that an own append continuing it can make it whole again.
struct Entry {
    /// Shared with the entries it grew into, so an append copies no event.
    events: Vec<Arc<RecordedEvent>>,
    current: bool,
}

/// One stream's change as the listener applied it.
struct Change {
    /// The last position of the notified batch that carried it.
    to: i64,
    stream: String,
    version: i64,
}

struct State {
    streams: LruCache<String, Entry>,
    events: usize,
    /// Changes up to this position have been applied; `None` while the listener is away.
    seen: Option<i64>,
    /// The changes applied lately, oldest first: every change of a batch ending after
    /// `recent_from` is here.
    recent: VecDeque<Change>,
    recent_from: i64,
}

impl State {
    fn version(events: &[Arc<RecordedEvent>]) -> i64 {
        events.last().map_or(0, |e| e.version)
    }

    fn remove(&mut self, stream: &str) {
        if let Some(old) = self.streams.pop(stream) {
            self.events -= old.events.len();
        }
    }

    /// Might `stream` have grown beyond `version` in a change applied after position `since`?
    fn changed_since(&self, stream: &str, version: i64, since: i64) -> bool {
        since < self.recent_from
            || self
                .recent
                .iter()
                .rev()
                .take_while(|c| c.to > since)
                .any(|c| c.version > version && c.stream == stream)
    }

    /// Keeps `events` as the whole of `stream`, unless a change applied after position
    /// `since` (everything up to it is in `events`) is newer.
    fn install(&mut self, stream: &str, events: Vec<Arc<RecordedEvent>>, since: i64) {
        self.remove(stream);
        if self.seen.is_none()
            || events.len() > MAX_STREAM_EVENTS
            || self.changed_since(stream, State::version(&events), since)
        {
            return;
        }
        self.events += events.len();
        let entry = Entry {
            events,
            current: true,
        };
        if let Some((_, evicted)) = self.streams.push(stream.to_owned(), entry) {
            self.events -= evicted.events.len();
        }
        while self.events > MAX_EVENTS {
            match self.streams.pop_lru() {
                Some((_, evicted)) => self.events -= evicted.events.len(),
                None => break,
            }
        }
    }
}

impl StreamCache {
    pub(crate) fn new() -> Self {
        let capacity = NonZeroUsize::new(MAX_STREAMS).unwrap_or(NonZeroUsize::MIN);
        Self {
            state: Mutex::new(State {
                streams: LruCache::new(capacity),
                events: 0,
                seen: None,
                recent: VecDeque::new(),
                recent_from: i64::MAX,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent under every operation; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events of `stream` after `after` (at most `limit`), if the whole stream is cached.
    pub(crate) fn read(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> Option<Vec<RecordedEvent>> {
        let mut state = self.lock();
        let entry = state.streams.get(stream).filter(|e| e.current)?;
        Some(
            entry
                .events
                .iter()
                .filter(|e| e.version > after)
                .take(limit)
                .map(|e| RecordedEvent::clone(e))
                .collect(),
        )
    }

    /// Call before reading a stream from the database; pass the answer to `fill`.
    pub(crate) fn mark(&self) -> Option<i64> {
        self.lock().seen
    }

    /// Keeps a whole stream read from the database after `mark` answered `mark`.
    pub(crate) fn fill(&self, stream: &str, events: &[RecordedEvent], mark: Option<i64>) {
        let Some(mark) = mark else { return };
        // The read saw every change up to `mark`; a later one it may have missed.
        let events = events.iter().cloned().map(Arc::new).collect();
        self.lock().install(stream, events, mark);
    }

    /// Records what this process appended: a cached prefix it continues (current or not)
    /// becomes the whole stream, as does a stream the append created.
    pub(crate) fn appended(&self, outcome: &AppendOutcome) {
        let Some(first) = outcome.events.first() else {
            return;
        };
        if outcome.duplicate {
            return;
        }
        let stream = outcome.stream_id.as_str();
        let mut state = self.lock();
        let prefix = match state.streams.peek(stream) {
            Some(e) if e.current && State::version(&e.events) >= outcome.version => return,
            Some(e) if State::version(&e.events) == first.version - 1 => Some(e.events.clone()),
            None if first.version == 1 => Some(Vec::new()),
            _ => None,
        };
        let Some(prefix) = prefix else {
            state.remove(stream);
            return;
        };
        let mut events = prefix;
        events.extend(outcome.events.iter().cloned().map(Arc::new));
        // Every change before the append's first position is older than its events.
        state.install(stream, events, first.position - 1);
    }

    /// Forgets `stream` (after a conflict showed the entry was behind).
    pub(crate) fn forget(&self, stream: &str) {
        self.lock().remove(stream);
    }

    /// Applies the log's changes up to position `to`: each changed stream with its version.
    pub(crate) fn changed(&self, changes: &[(String, i64)], to: i64) {
        let mut state = self.lock();
        for (stream, version) in changes {
            if let Some(entry) = state.streams.peek_mut(stream.as_str()) {
                if State::version(&entry.events) < *version {
                    entry.current = false;
                }
            }
            state.recent.push_back(Change {
                to,
                stream: stream.clone(),
                version: *version,
            });
        }
        while state.recent.len() > MAX_RECENT_CHANGES {
            if let Some(old) = state.recent.pop_front() {
                state.recent_from = state.recent_from.max(old.to);
            }
        }
        state.seen = Some(state.seen.map_or(to, |s| s.max(to)));
    }

    /// Starts over, following the log from `seen` (`None`: not following, cache nothing).
    pub(crate) fn reset(&self, seen: Option<i64>) {
        let mut state = self.lock();
        state.streams.clear();
        state.events = 0;
        state.seen = seen;
        state.recent.clear();
        // Nothing is known of changes up to `seen`: a read that began before it is not kept.
        state.recent_from = seen.unwrap_or(i64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, StreamId};
    use uuid::Uuid;

    fn event(stream: &str, version: i64, position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_id: StreamId::trusted(stream.to_owned()),
            version,
            event_id: Uuid::nil(),
            event_type: "Happened".into(),
            schema_version: 1,
            data: crate::Payload::from_value(&serde_json::Value::Null).unwrap(),
            command_id: Uuid::nil(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            actor: Actor {
                id: "test".into(),
                role: "test".into(),
            },
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    /// `(version, position)` pairs appended to `stream`.
    fn outcome(stream: &str, events: &[(i64, i64)]) -> AppendOutcome {
        let events: Vec<_> = events.iter().map(|&(v, p)| event(stream, v, p)).collect();
        let last = events.last().expect("an append has events");
        AppendOutcome {
            stream_id: StreamId::trusted(stream.to_owned()),
            version: last.version,
            position: last.position,
            events,
            duplicate: false,
        }
    }

    fn cached_versions(cache: &StreamCache, stream: &str) -> Option<Vec<i64>> {
        let events = cache.read(stream, 0, usize::MAX)?;
        Some(events.iter().map(|e| e.version).collect())
    }

    fn following_from(seen: i64) -> StreamCache {
        let cache = StreamCache::new();
        cache.reset(Some(seen));
        cache
    }

    #[test]
    fn nothing_is_cached_while_the_listener_is_away() {
        let cache = StreamCache::new();
        cache.fill("s", &[event("s", 1, 1)], cache.mark());
        cache.appended(&outcome("t", &[(1, 2)]));
        assert_eq!(cached_versions(&cache, "s"), None);
        assert_eq!(cached_versions(&cache, "t"), None);
    }

    #[test]
    fn a_read_is_kept_when_the_listener_moved_past_other_streams_only() {
        let cache = following_from(10);
        let mark = cache.mark();
        cache.changed(&[("other".into(), 4)], 12);
        cache.fill("s", &[event("s", 1, 3), event("s", 2, 7)], mark);
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1, 2]));
    }

    #[test]
    fn a_read_that_may_have_missed_a_change_is_not_kept() {
        let cache = following_from(10);
        let mark = cache.mark();
        cache.changed(&[("s".into(), 3)], 12);
        cache.fill("s", &[event("s", 1, 3), event("s", 2, 7)], mark);
        assert_eq!(cached_versions(&cache, "s"), None);
        // The same read with the change in it is whole.
        let mark = cache.mark();
        cache.fill(
            "s",
            &[event("s", 1, 3), event("s", 2, 7), event("s", 3, 12)],
            mark,
        );
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_change_after_the_read_stops_the_entry_being_served() {
        let cache = following_from(10);
        cache.fill("s", &[event("s", 1, 3)], cache.mark());
        cache.changed(&[("s".into(), 2)], 11);
        assert_eq!(cached_versions(&cache, "s"), None);
    }

    #[test]
    fn an_own_append_completes_the_entry_whichever_comes_first() {
        // The append's answer before its notification.
        let cache = following_from(10);
        cache.fill("s", &[event("s", 1, 3)], cache.mark());
        cache.appended(&outcome("s", &[(2, 11), (3, 12)]));
        cache.changed(&[("s".into(), 3)], 12);
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1, 2, 3]));

        // The notification before the answer: the stale prefix is continued.
        let cache = following_from(10);
        cache.fill("s", &[event("s", 1, 3)], cache.mark());
        cache.changed(&[("s".into(), 3)], 12);
        assert_eq!(cached_versions(&cache, "s"), None);
        cache.appended(&outcome("s", &[(2, 11), (3, 12)]));
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1, 2, 3]));
    }

    #[test]
    fn an_own_append_overtaken_by_another_writer_is_not_kept() {
        let cache = following_from(10);
        cache.fill("s", &[event("s", 1, 3)], cache.mark());
        // Another process appended version 3 right after this one's version 2.
        cache.changed(&[("s".into(), 3)], 12);
        cache.appended(&outcome("s", &[(2, 11)]));
        assert_eq!(cached_versions(&cache, "s"), None);
    }

    #[test]
    fn a_created_stream_is_kept_even_after_its_notification() {
        let cache = following_from(10);
        cache.changed(&[("s".into(), 1)], 11);
        cache.appended(&outcome("s", &[(1, 11)]));
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1]));
        // But not when it has grown since.
        let cache = following_from(10);
        cache.changed(&[("t".into(), 2)], 12);
        cache.appended(&outcome("t", &[(1, 11)]));
        assert_eq!(cached_versions(&cache, "t"), None);
    }

    #[test]
    fn a_read_older_than_the_remembered_changes_is_not_kept() {
        let cache = following_from(0);
        let mark = cache.mark();
        for p in 1..=(MAX_RECENT_CHANGES as i64 + 1) {
            cache.changed(&[(format!("other-{p}"), 1)], p);
        }
        cache.fill("s", &[event("s", 1, 1)], mark);
        assert_eq!(cached_versions(&cache, "s"), None);
        cache.fill("s", &[event("s", 1, 1)], cache.mark());
        assert_eq!(cached_versions(&cache, "s"), Some(vec![1]));
    }

    #[test]
    fn a_read_from_before_a_reconnect_is_not_kept() {
        let cache = following_from(10);
        let mark = cache.mark();
        cache.reset(None);
        cache.reset(Some(15));
        cache.fill("s", &[event("s", 1, 3)], mark);
        assert_eq!(cached_versions(&cache, "s"), None);
    }
}
