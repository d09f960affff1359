//! A config written out: the stored JSON (Python's `json.dumps` of upstream's model, byte for
//! byte) and the YAML `GET /unit_nodes/get_data_pipe_config/{uuid}` answers (PyYAML's
//! `safe_dump(..., allow_unicode=True, default_flow_style=False, sort_keys=False)` of the stored
//! JSON with nulls removed).

use chrono::NaiveDateTime;

use super::load::{resolve_plain, Value};
use super::{DataPipeConfig, FilterValue};
use crate::domain::push_py_json_string;

/// Python's `repr(float)` (shortest round-trip digits; exponent form below 1e-4 and from
/// 1e16 on, e.g. `1e-05`, `1e+16`; `5.0`, `-0.0`). Finite values only.
pub fn py_float_repr(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let a = f.abs();
    let sci = format!("{a:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if let Some(even) = tie_to_even(a, &digits, exp) {
        digits = even;
    }
    if !(-4..16).contains(&exp) {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{exp_sign}{:02}", exp.abs())
    } else if exp < 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let point = exp as usize + 1;
        if point >= digits.len() {
            format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

/// When the value lies exactly halfway between two shortest digit strings (e.g.
/// `1363803842504314.25` between `…314.2` and `…314.3`), Python picks the even one; Rust's
/// shortest formatting may pick the other. `None` when there is no tie.
fn tie_to_even(a: f64, digits: &str, exp: i32) -> Option<String> {
    // an f64's exact decimal expansion has at most 767 significant digits
    let exact = format!("{a:.780e}");
    let (m, e) = exact.split_once('e')?;
    if e.parse::<i32>().ok()? != exp {
        return None;
    }
    let exact: String = m.chars().filter(|c| *c != '.').collect();
    let exact = exact.trim_end_matches('0');
    let n = digits.len();
    if exact.len() != n + 1 || !exact.ends_with('5') {
        return None;
    }
    let mut even: Vec<u8> = exact.as_bytes()[..n].to_vec();
    if even[n - 1] % 2 == 1 {
        // round up; an odd last digit is at most 9, a carry may run left
        let mut i = n;
        loop {
            i = i.checked_sub(1)?;
            if even[i] == b'9' {
                even[i] = b'0';
            } else {
                even[i] += 1;
                break;
            }
        }
    }
    let even = String::from_utf8(even).ok()?;
    let back: f64 = format!("0.{even}e{}", exp + 1).parse().ok()?;
    (back == a)
        .then_some(even.trim_end_matches('0').to_string())
        .filter(|s| !s.is_empty())
}

/// Python's `datetime.isoformat()` of a naive value: microseconds only when not zero.
pub fn py_isoformat(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// One stored field: a JSON value or `null`.
enum J<'a> {
    Null,
    Str(&'a str),
    Owned(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Values(&'a [FilterValue]),
}

fn push_json(out: &mut String, v: &J<'_>) {
    match v {
        J::Null => out.push_str("null"),
        J::Str(s) => push_py_json_string(out, s),
        J::Owned(s) => push_py_json_string(out, s),
        J::Int(i) => out.push_str(&i.to_string()),
        J::Float(f) => out.push_str(&py_float_repr(*f)),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Values(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_json(out, &filter_value(item));
            }
            out.push(']');
        }
    }
}

fn filter_value(v: &FilterValue) -> J<'_> {
    match v {
        FilterValue::Number(f) => J::Float(*f),
        FilterValue::Integer(i) => J::Int(*i),
        FilterValue::Text(s) => J::Str(s),
    }
}

fn opt<T, F: FnOnce(T) -> J<'static>>(v: Option<T>, f: F) -> J<'static> {
    v.map_or(J::Null, f)
}

/// The sections and their fields in upstream's model order, values as Python holds them
/// after `model_dump()` (datetimes as their `isoformat()`).
/// A section's fields, `None` for a null section.
type Fields<'a> = Option<Vec<(&'static str, J<'a>)>>;

fn sections(c: &DataPipeConfig) -> Vec<(&'static str, Fields<'_>)> {
    let a = &c.active_period;
    let f = &c.filters;
    let p = &c.processing_policy;
    let mut policy = vec![
        ("policy_type", J::Str(p.policy_type.as_str())),
        (
            "n_records_count",
            opt(p.n_records_count, |n| J::Int(n.into())),
        ),
        (
            "time_window_size",
            opt(p.time_window_size, |n| J::Int(n.into())),
        ),
        (
            "aggregation_functions",
            opt(p.aggregation_functions, |x| J::Str(x.as_str())),
        ),
    ];
    // ours, written only when set so configs without it stay byte-identical to upstream's
    if let Some(step) = p.time_window_step {
        policy.push(("time_window_step", J::Int(step.into())));
    }
    vec![
        (
            "active_period",
            Some(vec![
                ("type", J::Str(a.kind.as_str())),
                ("start", opt(a.start, |t| J::Owned(py_isoformat(t)))),
                ("end", opt(a.end, |t| J::Owned(py_isoformat(t)))),
            ]),
        ),
        (
            "filters",
            Some(vec![
                ("type_input_value", J::Str(f.type_input_value.as_str())),
                (
                    "type_value_filtering",
                    opt(f.type_value_filtering, |x| J::Str(x.as_str())),
                ),
                (
                    "filtering_values",
                    f.filtering_values.as_deref().map_or(J::Null, J::Values),
                ),
                (
                    "type_value_threshold",
                    opt(f.type_value_threshold, |x| J::Str(x.as_str())),
                ),
                ("threshold_min", opt(f.threshold_min, J::Int)),
                ("threshold_max", opt(f.threshold_max, J::Int)),
                ("max_rate", J::Int(f.max_rate.into())),
                ("last_unique_check", J::Bool(f.last_unique_check)),
                ("max_size", J::Int(f.max_size.into())),
            ]),
        ),
        (
            "transformations",
            c.transformations.as_ref().map(|t| {
                vec![
                    (
                        "multiplication_ratio",
                        opt(t.multiplication_ratio, J::Float),
                    ),
                    (
                        "round_decimal_point",
                        opt(t.round_decimal_point, |n| J::Int(n.into())),
                    ),
                    ("slice_start", opt(t.slice_start, J::Int)),
                    ("slice_end", opt(t.slice_end, J::Int)),
                ]
            }),
        ),
        ("processing_policy", Some(policy)),
    ]
}

/// `json.dumps(model.dict(), default=obj_serializer)`: `", "` and `": "` separators,
/// `ensure_ascii`, Python float reprs, every field (nulls too).
pub(super) fn stored_json(c: &DataPipeConfig) -> String {
    let mut out = String::with_capacity(512);
    out.push('{');
    for (i, (name, fields)) in sections(c).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_json_string(&mut out, name);
        out.push_str(": ");
        match fields {
            None => out.push_str("null"),
            Some(fields) => {
                out.push('{');
                for (j, (key, value)) in fields.iter().enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    push_py_json_string(&mut out, key);
                    out.push_str(": ");
                    push_json(&mut out, value);
                }
                out.push('}');
            }
        }
    }
    out.push('}');
    out
}

/// PyYAML's block-style dump of the stored form without its nulls. Two simplifications, both
/// read back to the same values: a string with a line break is written double-quoted (PyYAML
/// folds it into a single-quoted block), and long strings are not folded at 80 columns.
pub(super) fn yaml(c: &DataPipeConfig) -> String {
    let mut out = String::with_capacity(512);
    for (name, fields) in sections(c) {
        let Some(fields) = fields else { continue };
        let present: Vec<_> = fields
            .into_iter()
            .filter(|(_, v)| !matches!(v, J::Null))
            .collect();
        if present.is_empty() {
            out.push_str(&format!("{name}: {{}}\n"));
            continue;
        }
        out.push_str(&format!("{name}:\n"));
        for (key, value) in present {
            match value {
                J::Values([]) => out.push_str(&format!("  {key}: []\n")),
                J::Values(items) => {
                    out.push_str(&format!("  {key}:\n"));
                    for item in items {
                        out.push_str(&format!("  - {}\n", yaml_scalar(&filter_value(item))));
                    }
                }
                v => out.push_str(&format!("  {key}: {}\n", yaml_scalar(&v))),
            }
        }
    }
    out
}

fn yaml_scalar(v: &J<'_>) -> String {
    match v {
        J::Null => "null".into(),
        J::Str(s) => yaml_str(s),
        J::Owned(s) => yaml_str(s),
        J::Int(i) => i.to_string(),
        J::Float(f) => {
            // PyYAML's represent_float: repr, lower case, `1e+16` -> `1.0e+16`
            let r = py_float_repr(*f);
            if !r.contains('.') && r.contains('e') {
                r.replacen('e', ".0e", 1)
            } else {
                r
            }
        }
        J::Bool(b) => if *b { "true" } else { "false" }.into(),
        J::Values(_) => String::new(),
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank_or_end(c: Option<char>) -> bool {
    c.is_none_or(|c| matches!(c, '\0' | ' ' | '\t' | '\r') || is_break(c))
}

/// A character PyYAML writes as it is with `allow_unicode`.
fn is_printable(c: char) -> bool {
    matches!(c, '\n' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
        && c != '\u{FEFF}'
}

/// A string the way PyYAML's emitter picks its style (`analyze_scalar`, `choose_scalar_style`
/// in block context): plain when it reads back as the same string, else single-quoted, else
/// double-quoted.
fn yaml_str(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let mut special = false;
    let mut line_breaks = false;
    let (mut leading_space, mut trailing_space) = (false, false);
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_blank = is_blank_or_end(chars.get(i + 1).copied());
        let preceded_by_blank = i == 0 || is_blank_or_end(chars.get(i - 1).copied());
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                block_indicators = true;
            }
            if (c == '?' || c == ':' || c == '-') && followed_by_blank {
                block_indicators = true;
            }
        } else {
            if c == ':' && followed_by_blank {
                block_indicators = true;
            }
            if c == '#' && preceded_by_blank {
                block_indicators = true;
            }
        }
        if is_break(c) {
            line_breaks = true;
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' || is_break(c) {
            if i == 0 {
                leading_space = true;
            }
            if i + 1 == chars.len() {
                trailing_space = true;
            }
        }
    }
    let plain_ok = !s.is_empty()
        && !block_indicators
        && !special
        && !line_breaks
        && !leading_space
        && !trailing_space
        && matches!(resolve_plain(s), Value::Str(_))
        // PyYAML resolves these to its merge and value tags, so it quotes them
        && s != "<<"
        && s != "=";
    if plain_ok {
        return s.to_string();
    }
    if !special && !line_breaks {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in chars {
        let raw = matches!(c, ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            && !matches!(c, '"' | '\\' | '\u{2028}' | '\u{2029}' | '\u{FEFF}');
        if raw {
            out.push(c);
            continue;
        }
        let short = match c {
            '\0' => Some('0'),
            '\u{7}' => Some('a'),
            '\u{8}' => Some('b'),
            '\t' => Some('t'),
            '\n' => Some('n'),
            '\u{b}' => Some('v'),
            '\u{c}' => Some('f'),
            '\r' => Some('r'),
            '\u{1b}' => Some('e'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            '\u{85}' => Some('N'),
            '\u{A0}' => Some('_'),
            '\u{2028}' => Some('L'),
            '\u{2029}' => Some('P'),
            _ => None,
        };
        match short {
            Some(e) => {
                out.push('\\');
                out.push(e);
            }
            None if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            None if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            None => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}
