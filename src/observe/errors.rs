//! The error tracker: errors grouped by kind (a short stable key) with a count, first and last
//! time seen and the last detail. Bounded: past `cap` kinds, the least recently seen is dropped.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use serde::Serialize;
use utoipa::ToSchema;

/// Longest kept kind and detail, in characters.
const MAX_KIND: usize = 160;
const MAX_DETAIL: usize = 1000;

/// One kind of error as reported.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq)]
pub struct ErrorReport {
    pub kind: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub last_detail: String,
}

struct Entry {
    count: u64,
    first_seen: NaiveDateTime,
    last_seen: NaiveDateTime,
    last_detail: String,
    /// Order of the last occurrence (ties of `last_seen` are common at microsecond precision).
    seq: u64,
}

pub struct ErrorTracker {
    cap: usize,
    seq: u64,
    kinds: HashMap<String, Entry>,
}

impl ErrorTracker {
    pub fn new(cap: usize) -> Self {
        ErrorTracker {
            cap: cap.max(1),
            seq: 0,
            kinds: HashMap::new(),
        }
    }

    pub fn record(&mut self, kind: &str, detail: &str, now: NaiveDateTime) {
        self.seq += 1;
        let kind = truncate(kind, MAX_KIND);
        let detail = truncate(detail, MAX_DETAIL);
        if let Some(e) = self.kinds.get_mut(kind) {
            e.count += 1;
            e.last_seen = now;
            e.seq = self.seq;
            detail.clone_into(&mut e.last_detail);
            return;
        }
        if self.kinds.len() >= self.cap {
            let oldest = self
                .kinds
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.kinds.remove(&k);
            }
        }
        self.kinds.insert(
            kind.to_string(),
            Entry {
                count: 1,
                first_seen: now,
                last_seen: now,
                last_detail: detail.to_string(),
                seq: self.seq,
            },
        );
    }

    /// Most frequent first (ties: most recently seen first), or least frequent first with
    /// `ascending` (ties: least recently seen first); at most `limit` (0 = all).
    pub fn list(&self, ascending: bool, limit: usize) -> Vec<ErrorReport> {
        let mut all: Vec<(&String, &Entry)> = self.kinds.iter().collect();
        all.sort_by_key(|(_, e)| (e.count, e.seq));
        if !ascending {
            all.reverse();
        }
        let limit = if limit == 0 { all.len() } else { limit };
        all.into_iter()
            .take(limit)
            .map(|(kind, e)| ErrorReport {
                kind: kind.clone(),
                count: e.count,
                first_seen: crate::domain::format_time(e.first_seen),
                last_seen: crate::domain::format_time(e.last_seen),
                last_detail: e.last_detail.clone(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A stable key from a message: every word holding a digit (ids, addresses, counts, sizes)
/// becomes `#`, so "connection to 10.0.0.7:1883 refused" and "... 10.0.0.8:1883 ..." group.
pub fn normalize(message: &str) -> String {
    let words: Vec<&str> = message
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect();
    truncate(&words.join(" "), MAX_KIND).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn groups_by_kind_and_orders_by_frequency() {
        let mut t = ErrorTracker::new(10);
        t.record("db", "first", at(0));
        t.record("git", "g", at(1));
        t.record("db", "second", at(2));
        t.record("mqtt", "m", at(3));
        t.record("db", "third", at(4));
        t.record("git", "g2", at(5));
        let most = t.list(false, 0);
        let kinds: Vec<&str> = most.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["db", "git", "mqtt"]);
        assert_eq!(most[0].count, 3);
        assert_eq!(most[0].last_detail, "third");
        assert_eq!(most[0].first_seen, crate::domain::format_time(at(0)));
        assert_eq!(most[0].last_seen, crate::domain::format_time(at(4)));
        let least = t.list(true, 2);
        let kinds: Vec<&str> = least.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["mqtt", "git"]);
    }

    #[test]
    fn evicts_the_least_recently_seen_kind() {
        let mut t = ErrorTracker::new(3);
        t.record("a", "", at(0));
        t.record("b", "", at(1));
        t.record("c", "", at(2));
        t.record("a", "", at(3)); // a is now more recent than b
        t.record("d", "", at(4));
        let mut kinds: Vec<String> = t.list(false, 0).into_iter().map(|e| e.kind).collect();
        kinds.sort();
        assert_eq!(kinds, ["a", "c", "d"]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn long_texts_are_cut_and_messages_normalized() {
        let mut t = ErrorTracker::new(3);
        t.record(&"k".repeat(500), &"é".repeat(5000), at(0));
        let e = &t.list(false, 0)[0];
        assert_eq!(e.kind.chars().count(), MAX_KIND);
        assert_eq!(e.last_detail.chars().count(), MAX_DETAIL);
        assert_eq!(
            normalize("connection to 10.0.0.7:1883 refused after 3 tries"),
            "connection to # refused after # tries"
        );
    }
}
