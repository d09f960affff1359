//! Parsed documents by their text. A client sends the same few operations over and over, and
//! parsing (async-graphql's pest parser) was the largest share of a small query's server time
//! (`pepeunit load graphql`, BENCHMARKS.md). Parsing is a pure function of the text, so a parsed
//! document is reused for the same text; validation and execution still run on every request,
//! so errors and limits are unchanged. Bounded: documents up to [`MAX_TEXT`] bytes, at most
//! [`MAX_ENTRIES`] of them (the cache starts over when full), and only documents that ran
//! without any error are kept (so at most `MAX_COMPLEXITY` fields each: the cache cannot be
//! filled with documents the server refuses).

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
    /// The parsed document of `text`, if kept.
    pub fn get(&self, text: &str) -> Option<Arc<ExecutableDocument>> {
        self.lock().get(text).cloned()
    }

    /// Keeps `doc` for `text`. Call only for a document that passed every check and ran
    /// without errors, so the cache cannot be filled with documents the server refuses.
    pub fn keep(&self, text: &str, doc: Arc<ExecutableDocument>) {
        if text.len() > MAX_TEXT {
            return;
        }
        let mut parsed = self.lock();
        if parsed.len() >= MAX_ENTRIES {
            parsed.clear();
        }
        parsed.insert(text.to_string(), doc);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
