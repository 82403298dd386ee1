//! A per-process cache of whole streams for the PostgreSQL backend, so that commands and
//! token checks do not re-read aggregates they have just written or read.
//!
//! **Never stale beyond the notification delay.** Every append batch NOTIFYs its last
//! position; the listener asks which streams changed up to it and drops entries older than
//! that (`changed`). An entry read from the database is only kept if the listener did not
//! move while it was read (`mark` / `fill`), so no change can slip between the read and the
//! invalidation. Own appends extend an entry only when they continue it exactly. While the
//! listener is not connected nothing is cached. Writes never trust the cache blindly anyway:
//! an append at a stale version is refused as a conflict, which drops the entry, and the
//! command is re-decided on what the database holds.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::{AppendOutcome, RecordedEvent};

/// Most events held in all; least recently used streams go first.
const MAX_EVENTS: usize = 20_000;
/// Longer streams are not cached (they are rare and would crowd out the rest).
pub(crate) const MAX_STREAM_EVENTS: usize = 256;
const MAX_STREAMS: usize = 20_000;

pub(crate) struct StreamCache {
    state: Mutex<State>,
}

struct State {
    streams: LruCache<String, Arc<Vec<RecordedEvent>>>,
    events: usize,
    /// Changes up to this position have been applied; `None` while the listener is away.
    seen: Option<i64>,
}

impl State {
    fn version(events: &[RecordedEvent]) -> i64 {
        events.last().map_or(0, |e| e.version)
    }

    fn remove(&mut self, stream: &str) {
        if let Some(old) = self.streams.pop(stream) {
            self.events -= old.len();
        }
    }

    fn put(&mut self, stream: &str, events: Arc<Vec<RecordedEvent>>) {
        self.remove(stream);
        self.events += events.len();
        if let Some((_, evicted)) = self.streams.push(stream.to_owned(), events) {
            self.events -= evicted.len();
        }
        while self.events > MAX_EVENTS {
            match self.streams.pop_lru() {
                Some((_, evicted)) => self.events -= evicted.len(),
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
        let events = state.streams.get(stream)?;
        Some(
            events
                .iter()
                .filter(|e| e.version > after)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Call before reading a stream from the database; pass the answer to `fill`.
    pub(crate) fn mark(&self) -> Option<i64> {
        self.lock().seen
    }

    /// Keeps a whole stream read from the database after `mark` answered `mark`.
    pub(crate) fn fill(&self, stream: &str, events: &[RecordedEvent], mark: Option<i64>) {
        if mark.is_none() || events.len() > MAX_STREAM_EVENTS {
            return;
        }
        let mut state = self.lock();
        // If the listener moved meanwhile, a change it applied may be newer than this read.
        if state.seen == mark {
            state.put(stream, Arc::new(events.to_vec()));
        }
    }

    /// Records what this process appended.
    pub(crate) fn appended(&self, outcome: &AppendOutcome) {
        let Some(first) = outcome.events.first() else {
            return;
        };
        if outcome.duplicate {
            return;
        }
        let stream = outcome.stream_id.as_str();
        let mut state = self.lock();
        let Some(seen) = state.seen else { return };
        let continued = match state.streams.peek(stream) {
            Some(cached) if State::version(cached) == first.version - 1 => {
                let mut events = Vec::with_capacity(cached.len() + outcome.events.len());
                events.extend(cached.iter().cloned());
                events.extend(outcome.events.iter().cloned());
                Some(events)
            }
            Some(_) => {
                state.remove(stream);
                None
            }
            // A stream this append created is known whole, if the listener has yet to pass it
            // (every later change then still reaches `changed`).
            None if first.version == 1 && seen < first.position => Some(outcome.events.clone()),
            None => None,
        };
        if let Some(events) = continued {
            if events.len() <= MAX_STREAM_EVENTS {
                state.put(stream, Arc::new(events));
            } else {
                state.remove(stream);
            }
        }
    }

    /// Forgets `stream` (after a conflict showed the entry was behind).
    pub(crate) fn forget(&self, stream: &str) {
        self.lock().remove(stream);
    }

    /// Applies the log's changes up to position `to`: each changed stream with its version.
    pub(crate) fn changed(&self, changes: &[(String, i64)], to: i64) {
        let mut state = self.lock();
        for (stream, version) in changes {
            let behind = state
                .streams
                .peek(stream.as_str())
                .is_some_and(|cached| State::version(cached) < *version);
            if behind {
                state.remove(stream);
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
    }
}
