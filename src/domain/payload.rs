//! Parsing of what devices send on their output base topics: `state` and `log` payloads
//! (SPEC §0). Pure functions below the service layer: the MQTT core and the EMQX alert webhook
//! parse with them, and the service layer decides the effects.

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};

use super::LogLevel;

/// The keys of a `state` message the platform keeps (wire `ReservedStateKey`).
pub const RESERVED_STATE_KEYS: [&str; 7] = [
    "ifconfig",
    "millis",
    "mem_free",
    "mem_alloc",
    "freq",
    "statvfs",
    "pu_commit_version",
];

/// A validated `state` payload: the reserved keys only, and the firmware version it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedState {
    pub state: Map<String, Value>,
    pub commit: String,
}

/// Longest `pu_commit_version` accepted (a sha is 40 or 64 characters; tags may be longer).
const MAX_COMMIT_LEN: usize = 255;

pub fn parse_state(payload: &[u8]) -> Result<ReportedState, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("state is not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("state must be a JSON object".into());
    };
    let state: Map<String, Value> = object
        .into_iter()
        .filter(|(k, _)| RESERVED_STATE_KEYS.contains(&k.as_str()))
        .collect();
    let commit = match state.get("pu_commit_version") {
        // NUL: PostgreSQL's TEXT cannot hold it, and one bad row would fail a whole batch
        Some(Value::String(c)) if c.contains('\0') => {
            return Err("pu_commit_version contains a NUL character".into())
        }
        Some(Value::String(c)) if !c.is_empty() && c.len() <= MAX_COMMIT_LEN => c.clone(),
        Some(Value::String(_)) => return Err("pu_commit_version is empty or too long".into()),
        _ => return Err("State dict has no pu_commit_version key".into()),
    };
    Ok(ReportedState { state, commit })
}

/// One log line as a device sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedLog {
    pub level: LogLevel,
    pub text: String,
    /// The device's own timestamp when it sent a readable one.
    pub create_datetime: Option<NaiveDateTime>,
}

impl ReportedLog {
    /// The line's idempotency key: the same unit, device time, level, text and place in its
    /// message give the same uuid, so a message the broker delivers again stores nothing
    /// new. `None` without a device time (the server's receive time differs on every
    /// delivery, so such a line has no stable identity).
    ///
    /// Laid out like a UUIDv7 (version 8): the device time's Unix milliseconds first, so keys
    /// of current lines grow at the end of the primary key index; then 74 bits of a SHA-256
    /// of the rest.
    pub fn key(&self, unit: uuid::Uuid, index: usize) -> Option<uuid::Uuid> {
        use sha2::{Digest, Sha256};
        let at = self.create_datetime?;
        let mut h = Sha256::new();
        h.update(unit.as_bytes());
        h.update(at.and_utc().timestamp_micros().to_be_bytes());
        h.update([self.level.rank() as u8]);
        h.update((index as u64).to_be_bytes());
        h.update(self.text.as_bytes());
        let digest = h.finalize();
        let ms = at.and_utc().timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&digest[..10]);
        b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        Some(uuid::Uuid::from_bytes(b))
    }
}

/// Longest log text kept; longer lines are cut (on a character boundary).
pub const MAX_LOG_TEXT: usize = 8192;

/// A `log` payload is one object or a list of objects `{level, text, create_datetime?}`.
/// Returns the readable lines and how many items were refused.
pub fn parse_log(payload: &[u8]) -> Result<(Vec<ReportedLog>, usize), String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("log is not JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("log must be an object or a list of objects".into()),
    };
    let mut lines = Vec::with_capacity(items.len());
    let mut refused = 0;
    for item in items {
        match parse_log_item(item) {
            Some(line) => lines.push(line),
            None => refused += 1,
        }
    }
    Ok((lines, refused))
}

fn parse_log_item(item: Value) -> Option<ReportedLog> {
    let Value::Object(mut o) = item else {
        return None;
    };
    let level = match o.get("level") {
        Some(Value::String(l)) => capitalized(l).parse::<LogLevel>().ok()?,
        _ => return None,
    };
    let mut text = match o.remove("text") {
        Some(Value::String(t)) => t,
        Some(Value::Null) | None => return None,
        Some(other) => other.to_string(),
    };
    without_nul(&mut text);
    if text.len() > MAX_LOG_TEXT {
        let mut cut = MAX_LOG_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let create_datetime = match o.get("create_datetime") {
        Some(Value::String(s)) => parse_device_time(s),
        _ => None,
    };
    Some(ReportedLog {
        level,
        text,
        create_datetime,
    })
}

/// Replaces NUL characters with U+FFFD: PostgreSQL's TEXT cannot store them, and one such
/// row would fail the whole batch it is written in (other units' lines included).
pub fn without_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

fn capitalized(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// Accepts RFC 3339 (with offset, converted to UTC) and naive ISO 8601 (taken as UTC).
fn parse_device_time(s: &str) -> Option<NaiveDateTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_utc());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keeps_reserved_keys_only() {
        let s = parse_state(br#"{"pu_commit_version":"abc","millis":5,"secret":1,"ifconfig":[]}"#)
            .unwrap();
        assert_eq!(s.commit, "abc");
        assert_eq!(
            s.state.keys().collect::<Vec<_>>(),
            ["pu_commit_version", "millis", "ifconfig"]
        );
    }

    #[test]
    fn nul_characters_never_reach_the_database() {
        let (lines, refused) =
            parse_log(br#"[{"level":"Error","text":"a\u0000b"},{"level":"Info","text":"ok"}]"#)
                .unwrap();
        assert_eq!(refused, 0);
        assert_eq!(lines[0].text, "a\u{FFFD}b");
        assert_eq!(lines[1].text, "ok");
        let mut v = String::from("x\0y\0");
        without_nul(&mut v);
        assert_eq!(v, "x\u{FFFD}y\u{FFFD}");
    }

    #[test]
    fn state_refuses_garbage() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"pu_commit_version":5}"#,
            br#"{"pu_commit_version":""}"#,
            br#"{"pu_commit_version":"a\u0000b"}"#,
            b"\xff\xfe",
        ] {
            assert!(parse_state(bad).is_err(), "{bad:?}");
        }
        let long = format!(r#"{{"pu_commit_version":"{}"}}"#, "a".repeat(300));
        assert!(parse_state(long.as_bytes()).is_err());
    }

    #[test]
    fn log_accepts_object_and_list() {
        let (one, bad) = parse_log(br#"{"level":"error","text":"boom"}"#).unwrap();
        assert_eq!((one.len(), bad), (1, 0));
        assert_eq!(one[0].level, LogLevel::Error);
        let (many, bad) = parse_log(
            br#"[{"level":"Info","text":"a","create_datetime":"2026-01-02T03:04:05.5+01:00"},
                {"level":"nope","text":"b"},{"text":"no level"},5,
                {"level":"WARNING","text":"c","create_datetime":"garbage"}]"#,
        )
        .unwrap();
        assert_eq!(bad, 3);
        assert_eq!(many.len(), 2);
        assert_eq!(
            many[0].create_datetime.unwrap().to_string(),
            "2026-01-02 02:04:05.500"
        );
        assert_eq!(many[1].level, LogLevel::Warning);
        assert_eq!(many[1].create_datetime, None);
        assert!(parse_log(b"42").is_err());
        assert!(parse_log(b"{").is_err());
    }

    #[test]
    fn long_log_text_is_cut_on_a_char_boundary() {
        let text = "\u{e9}".repeat(MAX_LOG_TEXT);
        let payload = serde_json::json!({"level": "Info", "text": text}).to_string();
        let (lines, _) = parse_log(payload.as_bytes()).unwrap();
        assert!(lines[0].text.len() <= MAX_LOG_TEXT);
        assert!(lines[0].text.chars().all(|c| c == '\u{e9}'));
    }
}
