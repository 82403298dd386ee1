//! Parsed queries by their text. Clients send the same few query documents over and over with
//! different variables; parsing one (a PEG parser) cost as much as serving a cached ticket.
//! Validation still runs on every request: only the parse is reused.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// Distinct documents kept.
const DOCUMENTS: usize = 256;
/// Longer documents are parsed every time (they are rare, and would crowd the cache).
const LONGEST_CACHED: usize = 4_096;

/// The extension; one cache shared by every request.
#[derive(Clone)]
pub struct ParseCache(Arc<Mutex<lru::LruCache<String, ExecutableDocument>>>);

impl Default for ParseCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(DOCUMENTS).unwrap_or(NonZeroUsize::MIN);
        ParseCache(Arc::new(Mutex::new(lru::LruCache::new(capacity))))
    }
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for ParseCache {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if query.len() > LONGEST_CACHED {
            return next.run(ctx, query, variables).await;
        }
        if let Some(document) = self.0.lock().ok().and_then(|mut c| c.get(query).cloned()) {
            return Ok(document);
        }
        // Only documents that parse are kept.
        let document = next.run(ctx, query, variables).await?;
        if let Ok(mut cache) = self.0.lock() {
            cache.put(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}
