//! What the hostile-input properties share: the proptest configuration (cases from
//! `PROPTEST_CASES`, no failure files) and strategies for hostile text and JSON. Random bytes
//! rarely get past a parser's first line, so most strategies build near-valid input: valid
//! JSON of the wrong types, deep nesting, huge numbers, long and multi-byte strings, NUL,
//! escaped lone surrogates, and valid documents with one random edit.

pub mod archives;
pub mod federation;
pub mod graphql;
pub mod pure;
pub mod units;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

/// `cases` cases (or `PROPTEST_CASES` when set), shrinking bounded, no persistence files.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

/// Runs `test` on `cases` values of `strategy`, panicking with the minimal failing input.
pub fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// How often each branch of a property was taken: a property whose interesting branch is
/// never reached proves nothing, so each test names the branches it must see.
#[derive(Default)]
pub struct Tally(std::sync::Mutex<std::collections::BTreeMap<&'static str, usize>>);

impl Tally {
    pub fn saw(&self, branch: &'static str) {
        *self.0.lock().unwrap().entry(branch).or_default() += 1;
    }

    /// Panics unless every branch was seen (when there were enough cases to expect it).
    pub fn expect(&self, branches: &[&'static str]) {
        let seen = self.0.lock().unwrap();
        if config(256).cases < 64 {
            return;
        }
        for b in branches {
            assert!(
                seen.get(b).copied().unwrap_or(0) > 0,
                "no case reached {b:?}: {seen:?}"
            );
        }
    }
}

/// Strings a parser should survive: anything, control characters and NUL, multi-byte and
/// astral characters, bidi overrides, long runs, and the usual path and quoting tricks.
pub fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[\\x00-\\x1f\"\\\\/{}\\[\\]#.:a-z0-9 ]{0,40}",
        2 => prop::collection::vec(
            prop::sample::select(vec![
                "\0", "\u{FFFD}", "\u{202E}", "\u{FEFF}", "é", "日本", "🦀", "\u{10FFFF}", "\r\n",
                "../", "%00", "\\", "\"", "'", "${x}", "{{", "]]", "pepeunit", "/", "+", "#",
                "a", "0",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat()),
        1 => (prop::sample::select(vec!["a", "é", "日", "🦀", "\0", "["]), 1usize..20_000)
            .prop_map(|(c, n)| c.repeat(n)),
        1 => Just(String::new()),
    ]
}

/// Numbers at and past the edges of i64, u64 and f64.
pub fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!(1e308),
        ]),
    ]
}

/// Any JSON value, a few levels deep, with hostile leaves.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An object with the given keys (each present or not) mapped to hostile values, plus a few
/// hostile keys.
pub fn object_with(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::vec(prop::option::of(json_value()), keys.len()),
        prop::collection::vec((hostile_string(), json_value()), 0..3),
    )
        .prop_map(move |(values, extra)| {
            let mut m = Map::new();
            for (k, v) in keys.iter().zip(values) {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            m.extend(extra);
            m
        })
}

/// JSON text that serde_json's own writer would never produce: nesting past its recursion
/// limit, numbers past every range, escaped lone surrogates, a BOM, trailing garbage.
pub fn raw_json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..3000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..3000).prop_map(|n| "{\"a\":".repeat(n) + "1" + &"}".repeat(n)),
        (1usize..3000).prop_map(|n| "[".repeat(n)),
        prop::sample::select(vec![
            r#""\ud800""#,
            r#"{"text":"\udc00\ud800","level":"Info"}"#,
            r#"{"pu_commit_version":"\ud83e"}"#,
            r#"{"pu_commit_version":"\u0000"}"#,
            "1e999999",
            "-1e999999",
            "123456789012345678901234567890123456789",
            "0.0000000000000000000000000000000000000000000001e-400",
            "\u{FEFF}{}",
            "{}garbage",
            "{\"a\":1,\"a\":2}",
            "[1,]",
            "{,}",
            "nul\0l",
            "\"\\u00",
            "",
        ])
        .prop_map(str::to_string),
    ]
}

/// `text` with one random edit: a byte inserted, a range deleted, cut short, or a range
/// repeated.
pub fn mutated(text: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        text,
        any::<u8>(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0u8..4,
    )
        .prop_map(|(mut t, byte, a, b, op)| {
            if t.is_empty() {
                return vec![byte];
            }
            let (i, j) = {
                let (x, y) = (a.index(t.len()), b.index(t.len()));
                (x.min(y), x.max(y))
            };
            match op {
                0 => t.insert(i, byte),
                1 => {
                    t.drain(i..j);
                }
                2 => t.truncate(i),
                _ => {
                    let part = t[i..j].to_vec();
                    t.splice(i..i, part);
                }
            }
            t
        })
}

/// Bytes for a JSON parser: random bytes, raw hostile JSON text, serialized values, and
/// serialized values of `shape` (near-valid objects) with or without one random edit.
pub fn json_bytes(shape: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Vec<u8>> {
    let shape = shape.boxed();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => raw_json_text().prop_map(String::into_bytes),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => shape.clone().prop_map(|v| v.to_string().into_bytes()),
        2 => mutated(shape.prop_map(|v| v.to_string().into_bytes())),
    ]
}
