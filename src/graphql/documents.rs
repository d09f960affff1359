//! Parsed documents by their text. A client sends the same few operations over and over, and
//! parsing (async-graphql's pest parser) was the largest share of a small query's server time
//! (`pepeunit load graphql`, BENCHMARKS.md). Parsing is a pure function of the text, so a parsed
//! document is reused for the same text; validation and execution still run on every request,
//! so errors and limits are unchanged. Bounded: documents up to [`MAX_TEXT`] bytes, at most
//! [`MAX_ENTRIES`] of them (the cache starts over when full). Texts that do not parse are not
//! kept: async-graphql parses them again and reports the error as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Longest document text kept.
pub const MAX_TEXT: usize = 16 * 1024;
/// Most documents kept.
pub const MAX_ENTRIES: usize = 256;

#[derive(Default)]
pub struct Documents {
    parsed: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
}

impl Documents {
    /// Gives `request` its parsed document when its text is known or parses now. Call only on
    /// text that passed `limits::check` (the parser must not see deeper nesting).
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_TEXT {
            return;
        }
        let known = self.lock().get(&request.query).cloned();
        let doc = match known {
            Some(doc) => doc,
            None => {
                let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
                    return;
                };
                let doc = Arc::new(doc);
                let mut parsed = self.lock();
                if parsed.len() >= MAX_ENTRIES {
                    parsed.clear();
                }
                parsed.insert(request.query.clone(), doc.clone());
                doc
            }
        };
        request.set_parsed_query(ExecutableDocument::clone(&doc));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
