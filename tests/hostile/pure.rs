//! Device payloads (`state`, `log`, node values), MQTT topics and the repo files a unit's env
//! and schema are built from: pure parsers, driven directly.

use pepeunit::domain::payload::{self, MAX_LOG_TEXT, RESERVED_STATE_KEYS};
use pepeunit::domain::topic::{self, Base, Shape, Topic};
use pepeunit::domain::LogLevel;
use pepeunit::service::unit_files::{parse_env_example, parse_schema_example};
use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{check, hostile_string, json_bytes, json_value, object_with, Tally};

/// Re-serialized JSON may be longer than its text (`1e5` is written `100000.0`), but only by a
/// constant factor: what a parser keeps is bounded by what it was sent.
fn bounded_by(input: usize, output: usize) -> bool {
    output <= 8 * input + 64
}

fn state_shape() -> impl Strategy<Value = Value> {
    (
        object_with(&RESERVED_STATE_KEYS),
        prop_oneof![
            hostile_string().prop_map(Value::String),
            "[0-9a-f]{40}".prop_map(Value::String),
            json_value(),
        ],
    )
        .prop_map(|(mut m, commit)| {
            m.insert("pu_commit_version".into(), commit);
            Value::Object(m)
        })
}

#[test]
fn state_payloads() {
    let tally = Tally::default();
    check(512, json_bytes(state_shape()), |bytes| {
        match payload::parse_state(&bytes) {
            Err(e) => {
                tally.saw("refused");
                prop_assert!(!e.is_empty())
            }
            Ok(s) => {
                tally.saw("kept");
                prop_assert!(!s.commit.is_empty() && s.commit.len() <= 255);
                prop_assert!(!s.commit.contains('\0'));
                prop_assert_eq!(s.state["pu_commit_version"].as_str(), Some(&*s.commit));
                prop_assert!(s
                    .state
                    .keys()
                    .all(|k| RESERVED_STATE_KEYS.contains(&k.as_str())));
                let stored = Value::Object(s.state).to_string();
                prop_assert!(bounded_by(bytes.len(), stored.len()));
            }
        }
        Ok(())
    });
    tally.expect(&["refused", "kept"]);
}

fn level_spelling() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(LogLevel::ALL.to_vec()), any::<u64>()).prop_map(|(l, mask)| {
            // the level in a random mix of cases, which devices may send
            l.as_str()
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
        hostile_string(),
    ]
}

fn device_time() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..253_402_300_799, -1439i32..1440).prop_map(|(secs, offset)| {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            let zone = chrono::FixedOffset::east_opt(offset * 60).unwrap();
            Value::String(t.with_timezone(&zone).to_rfc3339())
        }),
        json_value(),
    ]
}

fn log_item() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (
            level_spelling(),
            prop_oneof![3 => hostile_string().prop_map(Value::String), 1 => json_value()],
            prop::option::of(device_time()),
        )
            .prop_map(|(level, text, time)| {
                let mut item = json!({"level": level, "text": text});
                if let Some(t) = time {
                    item["create_datetime"] = t;
                }
                item
            }),
        1 => object_with(&["level", "text", "create_datetime"]).prop_map(Value::Object),
        1 => json_value(),
    ]
}

fn log_shape() -> impl Strategy<Value = Value> {
    prop_oneof![
        log_item(),
        prop::collection::vec(log_item(), 0..20).prop_map(Value::Array),
    ]
}

#[test]
fn log_payloads() {
    let tally = Tally::default();
    check(512, json_bytes(log_shape()), |bytes| {
        let parsed = payload::parse_log(&bytes);
        let Ok((lines, refused)) = parsed else {
            tally.saw("refused");
            prop_assert!(!parsed.unwrap_err().is_empty());
            return Ok(());
        };
        tally.saw(if lines.is_empty() { "no line" } else { "lines" });
        if refused > 0 {
            tally.saw("items refused");
        }
        if lines
            .iter()
            .any(|l| l.text.len() == MAX_LOG_TEXT || l.create_datetime.is_some())
        {
            tally.saw("long or dated");
        }
        // one item per line or refusal: an object is one item, a list its items
        let items = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(a)) => a.len(),
            _ => 1,
        };
        prop_assert_eq!(lines.len() + refused, items);
        for l in &lines {
            prop_assert!(l.text.len() <= MAX_LOG_TEXT);
            prop_assert!(!l.text.contains('\0'));
        }
        let kept: usize = lines.iter().map(|l| l.text.len()).sum();
        prop_assert!(bounded_by(bytes.len(), kept));
        Ok(())
    });
    tally.expect(&[
        "refused",
        "no line",
        "lines",
        "items refused",
        "long or dated",
    ]);
}

/// A well-formed line keeps its level (any case), its text (NUL replaced, cut at the limit on
/// a character boundary) and its device time converted to UTC.
#[test]
fn log_lines_keep_what_was_sent() {
    let line = (
        prop::sample::select(LogLevel::ALL.to_vec()),
        hostile_string(),
        prop::option::of((0i64..253_402_300_799, -1439i32..1440)),
    );
    check(256, line, |(level, text, time)| {
        let mut item = json!({"level": level.as_str().to_uppercase(), "text": text});
        if let Some((secs, offset)) = time {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            let zone = chrono::FixedOffset::east_opt(offset * 60).unwrap();
            item["create_datetime"] = json!(t.with_timezone(&zone).to_rfc3339());
        }
        let (lines, refused) = payload::parse_log(item.to_string().as_bytes()).unwrap();
        prop_assert_eq!((lines.len(), refused), (1, 0));
        prop_assert_eq!(lines[0].level, level);
        let clean = text.replace('\0', "\u{FFFD}");
        if clean.len() <= MAX_LOG_TEXT {
            prop_assert_eq!(&lines[0].text, &clean);
        } else {
            // cut at most three bytes before the limit, at a character boundary
            prop_assert!(clean.starts_with(&lines[0].text));
            prop_assert!(lines[0].text.len() > MAX_LOG_TEXT - 4);
        }
        let expected = time.map(|(secs, _)| {
            chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .naive_utc()
        });
        prop_assert_eq!(lines[0].create_datetime, expected);
        Ok(())
    });
}

/// Node values are stored as sent but for NUL (the MQTT core checks UTF-8 first).
#[test]
fn node_values() {
    check(256, hostile_string(), |value| {
        let mut stored = value.clone();
        payload::without_nul(&mut stored);
        prop_assert!(!stored.contains('\0'));
        prop_assert!(stored.len() <= 3 * value.len());
        prop_assert_eq!(stored.chars().count(), value.chars().count());
        for (a, b) in value.chars().zip(stored.chars()) {
            prop_assert!(
                a == b || (a == '\0' && b == '\u{FFFD}'),
                "{a:?} became {b:?}"
            );
        }
        Ok(())
    });
}

fn level_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._-]{1,12}",
        1 => "[^/]{0,12}",
        1 => prop::sample::select(vec!["+", "#", "", "pepeunit", "input_base_topic", "output_base_topic"])
            .prop_map(str::to_string),
    ]
}

/// A uuid as topics spell it, or in one of the spellings `Uuid::parse_str` also takes.
fn uuid_spelling() -> impl Strategy<Value = (String, bool)> {
    (any::<u128>(), 0u8..6).prop_map(|(n, how)| {
        let u = Uuid::from_u128(n);
        match how {
            0 | 1 => (u.hyphenated().to_string(), true),
            2 => (u.hyphenated().to_string().to_uppercase(), false),
            3 => (u.simple().to_string(), false),
            4 => (u.braced().to_string(), false),
            _ => (u.urn().to_string(), false),
        }
    })
}

fn topic_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        3 => prop::collection::vec(
            prop_oneof![level_text(), uuid_spelling().prop_map(|(u, _)| u)],
            0..8,
        )
        .prop_map(|levels| levels.join("/")),
        3 => (level_text(), prop::sample::select(vec![Base::Input, Base::Output]), uuid_spelling(), level_text())
            .prop_map(|(d, b, (u, _), n)| format!("{d}/{}/{u}/{n}/pepeunit", b.as_str())),
        1 => (level_text(), level_text(), uuid_spelling(), level_text())
            .prop_map(|(d, b, (u, _), n)| format!("{d}/{b}/{u}/{n}/pepeunit")),
        2 => (level_text(), uuid_spelling(), any::<bool>()).prop_map(|(d, (u, _), p)| {
            if p { format!("{d}/{u}/pepeunit") } else { format!("{d}/{u}") }
        }),
    ]
}

/// Any text either parses into a topic that displays as exactly that text, or is refused
/// with a reason; the shape agrees with the parse.
#[test]
fn topics_round_trip_or_are_refused() {
    let tally = Tally::default();
    check(1024, topic_text(), |text| {
        let shape = Shape::of(&text);
        match Topic::parse(&text) {
            Ok(t) => {
                tally.saw(if matches!(t, Topic::Node { .. }) {
                    "node"
                } else {
                    "unit base"
                });
                prop_assert_eq!(t.to_string(), text.clone());
                prop_assert_eq!(Some(t.domain()), shape.domain());
            }
            Err(e) => {
                tally.saw(match e {
                    topic::TopicError::Shape => "shape",
                    topic::TopicError::Base => "base",
                    topic::TopicError::Uuid => "uuid",
                });
                prop_assert!(!e.to_string().is_empty())
            }
        }
        if topic::is_valid_topic_name(&text) {
            prop_assert!(!text.is_empty() && !topic::is_filter(&text));
        }
        Ok(())
    });
    tally.expect(&["node", "unit base", "shape", "base", "uuid"]);
}

/// Topics built by the product parse back into what built them; other uuid spellings are
/// refused.
#[test]
fn built_topics_parse_back() {
    let parts = (
        "[a-z0-9._-]{1,20}",
        prop::sample::select(vec![Base::Input, Base::Output]),
        uuid_spelling(),
        "[a-z0-9_-]{1,20}",
        any::<bool>(),
    );
    let tally = Tally::default();
    check(
        256,
        parts,
        |(domain, base, (uuid, canonical), name, unit)| {
            tally.saw(if canonical {
                "canonical"
            } else {
                "other spelling"
            });
            let text = if unit {
                format!("{domain}/{}/{uuid}/{name}/pepeunit", base.as_str())
            } else {
                format!("{domain}/{uuid}/pepeunit")
            };
            match Topic::parse(&text) {
                Ok(t) => {
                    prop_assert!(canonical);
                    let u = Uuid::parse_str(&uuid).unwrap();
                    let built = if unit {
                        Topic::unit_base(&domain, base, u, &name)
                    } else {
                        Topic::node(&domain, u, "x/pepeunit")
                    };
                    prop_assert_eq!(t, built);
                    prop_assert_eq!(built.to_string(), text);
                }
                Err(e) => {
                    prop_assert!(!canonical);
                    prop_assert_eq!(e, topic::TopicError::Uuid);
                }
            }
            Ok(())
        },
    );
    tally.expect(&["canonical", "other spelling"]);
}

const SCHEMA_KEYS: [&str; 4] = [
    "input_base_topic",
    "output_base_topic",
    "input_topic",
    "output_topic",
];

fn schema_shape() -> impl Strategy<Value = Value> {
    let list = prop_oneof![
        3 => prop::collection::vec("[A-Za-z0-9/_-]{1,30}".prop_map(Value::String), 0..6)
            .prop_map(Value::Array),
        1 => prop::collection::vec(
            prop_oneof![
                "[A-Za-z0-9/_-]{1,30}".prop_map(Value::String),
                hostile_string().prop_map(Value::String),
                json_value(),
            ],
            0..6,
        )
        .prop_map(Value::Array),
        1 => json_value(),
    ];
    let extra = prop_oneof![3 => Just(Default::default()), 1 => object_with(&[])];
    (
        prop::collection::vec(prop::option::weighted(0.95, list), 4),
        extra,
    )
        .prop_map(|(lists, mut m)| {
            for (k, l) in SCHEMA_KEYS.iter().zip(lists) {
                if let Some(l) = l {
                    m.insert(k.to_string(), l);
                }
            }
            Value::Object(m)
        })
}

/// `schema_example.json` from a repo: accepted only with the four lists of valid, distinct
/// topic names, otherwise refused with a message naming the file.
#[test]
fn schema_example_files() {
    let tally = Tally::default();
    check(512, json_bytes(schema_shape()), |bytes| {
        match parse_schema_example(&bytes) {
            Err(e) => {
                tally.saw("refused");
                prop_assert!(e.detail().contains("schema_example.json is invalid"))
            }
            Ok(s) => {
                tally.saw("kept");
                for list in [
                    &s.input_base_topic,
                    &s.output_base_topic,
                    &s.input_topic,
                    &s.output_topic,
                ] {
                    prop_assert!(list.iter().all(|t| topic::is_valid_topic_name(t)));
                }
            }
        }
        Ok(())
    });
    tally.expect(&["refused", "kept"]);
}

fn env_shape() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            prop_oneof!["[A-Z_]{1,12}", hostile_string()],
            prop_oneof![
                3 => hostile_string().prop_map(Value::String),
                1 => super::hostile_number(),
                1 => any::<bool>().prop_map(Value::Bool),
                1 => json_value(),
            ],
        ),
        0..10,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// `env_example.json` from a repo: a flat object, or refused with a message naming the file.
#[test]
fn env_example_files() {
    let tally = Tally::default();
    check(512, json_bytes(env_shape()), |bytes| {
        match parse_env_example(&bytes) {
            Err(e) => {
                tally.saw("refused");
                prop_assert!(e.detail().contains("env_example.json is invalid"))
            }
            Ok(m) => {
                tally.saw("kept");
                prop_assert!(m.values().all(|v| !v.is_array() && !v.is_object()));
                let kept = Value::Object(m).to_string();
                prop_assert!(bounded_by(bytes.len(), kept.len()));
            }
        }
        Ok(())
    });
    tally.expect(&["refused", "kept"]);
}

/// Regression: serde_json's default float parsing is off by one ulp for some 17-digit
/// numbers, so a device's state (and a unit's saved env) changed in the last digit each time
/// it was read and written again (found by `hostile::units`). `float_roundtrip` parses exactly.
#[test]
fn floats_survive_a_round_trip() {
    for n in [
        "-1.3826932030320836e60",
        "2.2250738585072014e-308",
        "0.30000000000000004",
    ] {
        let payload = format!(r#"{{"pu_commit_version":"a","millis":{n}}}"#);
        let s = payload::parse_state(payload.as_bytes()).unwrap();
        let again: f64 = s.state["millis"].to_string().parse().unwrap();
        assert_eq!(again, n.parse::<f64>().unwrap(), "{n}");
    }
}

/// Throttling rules (`PU_THROTTLE_RULES`, and `PUT /throttle` through the same builder): any
/// text either parses into rules whose text form parses back to the same rules, each within
/// the bounds, or is refused with a reason; matching a parsed pattern never panics.
#[test]
fn throttle_rules_round_trip_or_are_refused() {
    use pepeunit::domain::throttle::{Rules, MAX_BURST, MAX_RULES};
    let tally = Tally::default();
    let entry = (
        prop_oneof![
            "\\{domain\\}(/[+#a-z0-9_.-]{1,8}){0,5}",
            "[+#a-z/{}$ ]{0,20}",
            any::<String>()
        ],
        prop_oneof!["[0-9]{1,8}(\\.[0-9]{0,4})?", any::<String>()],
        prop::option::of(prop_oneof!["[0-9]{1,8}", any::<String>()]),
    )
        .prop_map(|(p, r, b)| match b {
            Some(b) => format!("{p}={r}:{b}"),
            None => format!("{p}={r}"),
        });
    let text = prop_oneof![
        3 => prop::collection::vec(entry, 0..6).prop_map(|e| e.join(",")),
        1 => any::<String>(),
    ];
    check(1024, (text, topic_text()), |(text, topic)| {
        match Rules::parse(&text) {
            Err(e) => {
                tally.saw("refused");
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(rules) => {
                tally.saw(if rules.0.is_empty() { "empty" } else { "kept" });
                prop_assert!(rules.0.len() <= MAX_RULES);
                for r in &rules.0 {
                    prop_assert!((1..=MAX_BURST).contains(&r.limit.burst));
                    prop_assert!(r.limit.rate_milli <= 1_000_000_000);
                }
                prop_assert_eq!(Rules::parse(&rules.to_text()).unwrap(), rules.clone());
                prop_assert_eq!(Rules::from_specs(&rules.specs()).unwrap(), rules.clone());
                let _ = rules.find("example.com", &topic);
            }
        }
        Ok(())
    });
    tally.expect(&["refused", "kept", "empty"]);
}
