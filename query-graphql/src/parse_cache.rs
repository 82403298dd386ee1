//! Parsed queries by their text. Clients send the same few query documents over and over with
//! different variables; parsing one (a PEG parser) cost as much as serving a cached ticket.
//! Validation still runs on every request: only the parse is reused.
//!
//! The cache sits in the HTTP handler, which hands the schema a parsed request, rather than in
//! a schema extension: with any extension installed, async-graphql sends every field's
//! resolution through the extension chain (a registry lookup of the field's type and a boxed
//! future per field), which cost more per request than the parse it saved.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::parser::{parse_query, types::ExecutableDocument};

use crate::limits::{self, Refusal};
use lru::LruCache;

/// Distinct documents kept.
const DOCUMENTS: usize = 256;
/// Longer documents are parsed every time (they are rare, and would crowd the cache).
const LONGEST_CACHED: usize = 4_096;

/// One cache shared by every request.
#[derive(Clone)]
pub(crate) struct ParsedDocuments(Arc<Mutex<LruCache<String, ExecutableDocument>>>);

impl Default for ParsedDocuments {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(DOCUMENTS).unwrap_or(NonZeroUsize::MIN);
        ParsedDocuments(Arc::new(Mutex::new(LruCache::new(capacity))))
    }
}

impl ParsedDocuments {
    /// Gives `request` its parsed document, from the cache or parsed now and kept, once the
    /// text and the document are within `limits` (refused otherwise, before any validation).
    /// A query that does not parse is left as it is: the schema parses it again and answers
    /// its error as it answers any other.
    pub(crate) fn prepare(&self, request: &mut async_graphql::Request) -> Result<(), Refusal> {
        let query = &request.query;
        limits::check_text(query)?;
        let cacheable = query.len() <= LONGEST_CACHED;
        let cached = if cacheable {
            self.0
                .lock()
                .ok()
                .and_then(|mut c| c.get(query.as_str()).cloned())
        } else {
            None
        };
        let document = match cached {
            Some(document) => document,
            None => {
                let Ok(document) = parse_query(query) else {
                    return Ok(());
                };
                limits::check_document(&document)?;
                if cacheable {
                    if let Ok(mut cache) = self.0.lock() {
                        cache.put(query.clone(), document.clone());
                    }
                }
                document
            }
        };
        request.set_parsed_query(document);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ParsedDocuments;

    #[test]
    fn a_document_is_parsed_once_and_a_bad_one_is_left_to_the_schema() {
        let documents = ParsedDocuments::default();
        let mut first = async_graphql::Request::new("{ __typename }");
        assert!(documents.prepare(&mut first).is_ok());
        assert!(first.parsed_query().is_ok());
        assert_eq!(documents.0.lock().map(|c| c.len()).unwrap_or(0), 1);
        let mut again = async_graphql::Request::new("{ __typename }");
        assert!(documents.prepare(&mut again).is_ok());
        assert_eq!(documents.0.lock().map(|c| c.len()).unwrap_or(0), 1);

        let mut bad = async_graphql::Request::new("{ ticket(");
        assert!(documents.prepare(&mut bad).is_ok());
        assert_eq!(documents.0.lock().map(|c| c.len()).unwrap_or(0), 1);
        assert!(bad.parsed_query().is_err());
    }
}
