//! Aggregate states kept warm between commands (and token checks): the state a stream's
//! events fold into, with the version it was folded to. Loading a stream then reads only the
//! events after that version — usually none, answered by the store's stream cache — instead
//! of reading, decoding and folding the whole stream again.
//!
//! A kept state can be late but never wrong: it is the pure fold of its stream's first
//! `version` events, and those never change, so continuing it with the events after
//! `version` gives exactly the fold of the whole stream. Only states of committed appends and
//! of reads are kept.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use domain::Aggregate;
use lru::LruCache;
use stream_store::{EventStore, RecordedEvent, StreamId};

use crate::ApiError;

/// Streams whose states are kept (least recently used go first): a ticket state is about a
/// kilobyte.
const CAPACITY: usize = 8_192;
/// Events read per round trip when a stream is loaded.
const PAGE: usize = 1_000;

type Kept = (i64, Box<dyn Any + Send + Sync>);

pub(crate) struct WarmStates {
    states: Mutex<LruCache<String, Kept>>,
}

impl WarmStates {
    pub(crate) fn new() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            states: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Kept>> {
        // Every operation leaves the map whole; a panic elsewhere cannot tear it.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `stream` and its version: the kept state continued with the events
    /// after it (the whole stream when nothing is kept).
    pub(crate) async fn load<A>(
        &self,
        store: &dyn EventStore,
        stream: &StreamId,
    ) -> Result<(A, i64), ApiError>
    where
        A: Aggregate + Send + Sync + 'static,
    {
        let kept = self
            .lock()
            .get(stream.as_str())
            .and_then(|(version, state)| {
                state
                    .downcast_ref::<A>()
                    .map(|state| (state.clone(), *version))
            });
        let (kept, from) = kept.unwrap_or_default();
        let (state, version) = fold_after(store, stream, kept, from).await?;
        if version != from {
            self.keep(stream, &state, version);
        }
        Ok((state, version))
    }

    /// The state of `stream` as the log itself holds it now, past the store's copies (its
    /// stream cache follows other processes' appends by a notification's delay): a refusal is
    /// confirmed on it before it is answered.
    pub(crate) async fn load_from_log<A>(
        &self,
        store: &dyn EventStore,
        stream: &StreamId,
    ) -> Result<(A, i64), ApiError>
    where
        A: Aggregate + Send + Sync + 'static,
    {
        let events = store.read_stream_through(stream, i64::MAX).await?;
        let (state, version) = fold(stream, A::default(), 0, &events)?;
        self.keep(stream, &state, version);
        Ok((state, version))
    }

    /// Keeps `state` as the fold of the first `version` events of `stream` (committed).
    pub(crate) fn keep<A>(&self, stream: &StreamId, state: &A, version: i64)
    where
        A: Aggregate + Send + Sync + 'static,
    {
        let mut states = self.lock();
        // Never replace a state with an older one (a slow load racing a newer append).
        if states
            .peek(stream.as_str())
            .is_some_and(|(kept, _)| *kept > version)
        {
            return;
        }
        states.put(
            stream.as_str().to_owned(),
            (version, Box::new(state.clone())),
        );
    }
}

/// `state`, the fold of the first `version` events of `stream`, continued with every event
/// after them.
pub(crate) async fn fold_after<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
    mut state: A,
    mut version: i64,
) -> Result<(A, i64), ApiError> {
    loop {
        let page = store.read_stream(stream, version, PAGE).await?;
        (state, version) = fold(stream, state, version, &page)?;
        if page.len() < PAGE {
            return Ok((state, version));
        }
    }
}

/// `state` at `version` continued with `events` (the ones right after it).
fn fold<A: Aggregate>(
    stream: &StreamId,
    mut state: A,
    mut version: i64,
    events: &[RecordedEvent],
) -> Result<(A, i64), ApiError> {
    for e in events {
        state = state
            .evolve_stored(&e.event_type, e.schema_version, e.data.raw())
            .map_err(|err| ApiError::Internal(format!("{stream} v{}: {err}", e.version)))?;
        version = e.version;
    }
    Ok((state, version))
}
