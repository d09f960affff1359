//! Crash alerts for the admins, throttled per kind: the first occurrence of a kind is sent at
//! once; later ones within `PU_CRASH_ALERT_INTERVAL` are counted and sent as one summary when
//! the interval has passed. The clock is a parameter, so the rules are tested without waiting.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::domain::format_time;

/// Kinds remembered at once; past that the oldest window is forgotten.
const MAX_KINDS: usize = 500;

/// One alert for the admins (the Telegram bot delivers them).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminAlert {
    pub kind: String,
    pub text: String,
    /// Occurrences this alert stands for.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

struct Window {
    started: NaiveDateTime,
    /// Occurrences since the last alert of this kind, not yet sent.
    held: u64,
    held_since: NaiveDateTime,
    last_seen: NaiveDateTime,
    last_detail: String,
}

pub struct AlertThrottle {
    interval: chrono::TimeDelta,
    kinds: HashMap<String, Window>,
}

impl AlertThrottle {
    pub fn new(interval: std::time::Duration) -> Self {
        AlertThrottle {
            interval: chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::MAX),
            kinds: HashMap::new(),
        }
    }

    /// An occurrence of `kind` at `now`: the alert to send now, if any.
    pub fn record(&mut self, kind: &str, detail: &str, now: NaiveDateTime) -> Option<AdminAlert> {
        if let Some(w) = self.kinds.get_mut(kind) {
            if w.held == 0 {
                w.held_since = now;
            }
            w.held += 1;
            w.last_seen = now;
            detail.clone_into(&mut w.last_detail);
            if now - w.started < self.interval {
                return None;
            }
            // the interval has passed and nobody asked for the summary yet: send it now
            return Some(summary(kind, w, now));
        }
        if self.kinds.len() >= MAX_KINDS {
            let oldest = self
                .kinds
                .iter()
                .min_by_key(|(_, w)| w.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.kinds.remove(&k);
            }
        }
        self.kinds.insert(
            kind.to_string(),
            Window {
                started: now,
                held: 0,
                held_since: now,
                last_seen: now,
                last_detail: String::new(),
            },
        );
        Some(AdminAlert {
            kind: kind.to_string(),
            text: format!("{kind}: {detail}"),
            count: 1,
            first_seen: format_time(now),
            last_seen: format_time(now),
        })
    }

    /// Summaries whose interval has passed at `now`; quiet kinds are forgotten, so their next
    /// occurrence is sent at once again.
    pub fn due(&mut self, now: NaiveDateTime) -> Vec<AdminAlert> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.kinds.retain(|kind, w| {
            if now - w.started < interval {
                return true;
            }
            if w.held == 0 {
                return false;
            }
            out.push(summary(kind, w, now));
            true
        });
        out.sort_by(|a, b| a.kind.cmp(&b.kind));
        out
    }
}

/// The held occurrences as one alert; the window starts again at `now`.
fn summary(kind: &str, w: &mut Window, now: NaiveDateTime) -> AdminAlert {
    let alert = AdminAlert {
        kind: kind.to_string(),
        text: format!(
            "{kind}: {} more times since {}, last: {}",
            w.held,
            format_time(w.held_since),
            w.last_detail
        ),
        count: w.held,
        first_seen: format_time(w.held_since),
        last_seen: format_time(w.last_seen),
    };
    w.started = now;
    w.held = 0;
    alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn first_at_once_then_counted_then_one_summary() {
        let mut t = AlertThrottle::new(Duration::from_secs(300));
        let first = t.record("mqtt connection lost", "refused", at(0)).unwrap();
        assert_eq!(first.count, 1);
        assert_eq!(first.text, "mqtt connection lost: refused");
        assert_eq!(first.first_seen, format_time(at(0)));
        // another kind is not throttled by the first
        assert!(t.record("panic", "boom", at(1)).is_some());
        for (i, s) in [10, 20, 30].into_iter().enumerate() {
            let got = t.record("mqtt connection lost", &format!("reset {i}"), at(s));
            assert!(got.is_none(), "held within the interval");
        }
        assert!(t.due(at(299)).is_empty());
        let due = t.due(at(300));
        assert_eq!(due.len(), 1, "panic had nothing held: {due:?}");
        let s = &due[0];
        assert_eq!(s.count, 3);
        assert_eq!(
            s.text,
            format!(
                "mqtt connection lost: 3 more times since {}, last: reset 2",
                format_time(at(10))
            )
        );
        assert_eq!(s.first_seen, format_time(at(10)));
        assert_eq!(s.last_seen, format_time(at(30)));
        // the summary started a new window: held again, nothing due yet
        assert!(t.record("mqtt connection lost", "x", at(310)).is_none());
        assert!(t.due(at(599)).is_empty());
        assert_eq!(t.due(at(600))[0].count, 1);
        // a quiet window is forgotten: the next occurrence is sent at once
        assert!(t.due(at(900)).is_empty());
        assert_eq!(
            t.record("mqtt connection lost", "y", at(901))
                .unwrap()
                .count,
            1
        );
    }

    #[test]
    fn an_occurrence_after_the_interval_carries_the_summary() {
        let mut t = AlertThrottle::new(Duration::from_secs(60));
        assert!(t.record("k", "a", at(0)).is_some());
        assert!(t.record("k", "b", at(5)).is_none());
        // no `due` ran in between (the sampler was late): the occurrence flushes the window
        let s = t.record("k", "c", at(61)).unwrap();
        assert_eq!(s.count, 2);
        assert!(s.text.ends_with("last: c"), "{}", s.text);
        assert!(t.record("k", "d", at(62)).is_none());
    }
}
