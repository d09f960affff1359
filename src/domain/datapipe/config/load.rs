//! Reading a config's text into the values upstream validates: YAML the way PyYAML's
//! `yaml.safe_load` reads it (YAML 1.1 implicit types: `yes`/`on` are booleans, `0x1F` and
//! `017` integers, `1e5` a string because PyYAML floats need a dot, `2024-01-01` a date), and
//! the stored JSON.
//!
//! Not PyYAML: merge keys (`<<: {...}`) are not merged (the key is refused as unknown), and
//! raw U+0085, U+2028 and U+2029 are content (YAML 1.2) where PyYAML takes them for line
//! breaks (PyYAML's own dump of U+0085 does not read back either).
//!
//! Bounded whatever the text: YAML aliases are refused (no "billion laughs"), nesting deeper
//! than [`MAX_DEPTH`] and documents of more than [`MAX_NODES`] values are refused, the parser is
//! pulled one event at a time and stops at the first refusal.

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

/// Deepest nesting accepted (the config needs 3: document, section, list of values).
pub const MAX_DEPTH: usize = 16;
/// Most values (scalars, lists, mappings) in one document.
pub const MAX_NODES: usize = 10_000;

/// A value as Python holds it after `yaml.safe_load` or `json.loads`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    /// Python ints are unbounded; beyond `i128` the value saturates, which every rule here
    /// treats the same as the true value (all bounds are far inside `i128`).
    Int(i128),
    Float(f64),
    Str(String),
    /// A plain YAML scalar PyYAML turns into a `date` or `datetime` (its text, parsed by
    /// [`yaml_timestamp`] when a datetime is wanted).
    Timestamp(String),
    List(Vec<Value>),
    /// Keys in document order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// How a key is named in messages.
    pub(super) fn key_text(&self) -> String {
        match self {
            Value::Str(s) | Value::Timestamp(s) => s.clone(),
            Value::Null => "null".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::List(_) | Value::Map(_) => "<complex key>".into(),
        }
    }
}

/// Why a text could not be read; `section` is the top-level key being read when it failed
/// (the caller turns it into a stage).
#[derive(Debug, PartialEq)]
pub(super) struct LoadError {
    pub section: Option<String>,
    pub message: String,
}

enum Frame {
    Seq(Vec<Value>),
    Map {
        entries: Vec<(Value, Value)>,
        key: Option<Value>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    nodes: usize,
    /// The top-level key whose value is being read.
    section: Option<String>,
}

impl Builder {
    fn count(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "The document has more than {MAX_NODES} values; a data pipe config needs a few dozen"
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        self.count()?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!(
                "The document nests deeper than {MAX_DEPTH} levels; a data pipe config needs 3"
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn add(&mut self, value: Value, line: usize) -> Result<(), String> {
        let top_level = self.stack.len() == 1;
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map { entries, key }) => match key.take() {
                Some(k) => entries.push((k, value)),
                None => {
                    if top_level {
                        self.section = Some(value.key_text());
                    }
                    if matches!(value, Value::List(_) | Value::Map(_)) {
                        return Err(format!(
                            "A mapping key must be a plain value, not a list or mapping (line {line})"
                        ));
                    }
                    if entries.iter().any(|(k, _)| *k == value) {
                        return Err(format!(
                            "Duplicate key '{}' (line {line})",
                            value.key_text()
                        ));
                    }
                    *key = Some(value);
                }
            },
        }
        Ok(())
    }
}

/// Reads one YAML document. An empty document (nothing, or only comments, or `null`) is an
/// error here: there is nothing to validate.
pub(super) fn load_yaml(text: &str) -> Result<Value, LoadError> {
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        nodes: 0,
        section: None,
    };
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text);
    let fail = |b: &Builder, message: String| LoadError {
        section: b.section.clone(),
        message,
    };
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(e) => e,
            Err(e) => {
                let m = e.marker();
                return Err(fail(
                    &b,
                    format!(
                        "The file is not valid YAML: {} (line {}, column {})",
                        e.info(),
                        m.line(),
                        m.col() + 1
                    ),
                ));
            }
        };
        let line = span.start.line();
        let step = match event {
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    Err(format!(
                        "The file holds more than one YAML document (line {line}); a data pipe config is one"
                    ))
                } else {
                    Ok(())
                }
            }
            Event::Alias(_) => Err(format!(
                "YAML aliases (*name) are not supported in a data pipe config (line {line})"
            )),
            Event::Scalar(raw, style, _anchor, tag) => b
                .count()
                .and_then(|()| resolve_scalar(&raw, style, tag.as_deref()))
                .map_err(|m| format!("{m} (line {line})"))
                .and_then(|v| b.add(v, line)),
            Event::SequenceStart(_anchor, tag) => collection_tag(tag.as_deref(), "seq")
                .and_then(|()| b.open(Frame::Seq(Vec::new())))
                .map_err(|m| format!("{m} (line {line})")),
            Event::MappingStart(_anchor, tag) => collection_tag(tag.as_deref(), "map")
                .and_then(|()| {
                    b.open(Frame::Map {
                        entries: Vec::new(),
                        key: None,
                    })
                })
                .map_err(|m| format!("{m} (line {line})")),
            Event::SequenceEnd | Event::MappingEnd => match b.stack.pop() {
                Some(Frame::Seq(items)) => b.add(Value::List(items), line),
                Some(Frame::Map { entries, .. }) => b.add(Value::Map(entries), line),
                None => Ok(()),
            },
        };
        step.map_err(|m| fail(&b, m))?;
    }
    match b.root {
        None | Some(Value::Null) => Err(LoadError {
            section: None,
            message: "The file is empty: a data pipe config is a YAML mapping with the sections \
                      active_period, filters, transformations (optional) and processing_policy"
                .into(),
        }),
        Some(v) => Ok(v),
    }
}

fn collection_tag(tag: Option<&Tag>, kind: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == kind => Ok(()),
        Some(t) if t.handle.is_empty() && t.suffix == "!" => Ok(()),
        Some(t) => Err(format!("The YAML tag '{t}' is not supported")),
    }
}

/// A scalar as PyYAML's SafeLoader constructs it: quoted and block scalars are strings, plain
/// ones go through the YAML 1.1 implicit resolvers, explicit core tags convert.
fn resolve_scalar(raw: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    match tag {
        None if style == ScalarStyle::Plain => Ok(resolve_plain(raw)),
        None => Ok(Value::Str(raw.to_string())),
        Some(t) if t.handle.is_empty() && t.suffix == "!" => Ok(Value::Str(raw.to_string())),
        Some(t) if t.is_yaml_core_schema() => {
            let bad = || format!("'{raw}' is not a valid !!{}", t.suffix);
            match t.suffix.as_str() {
                "str" => Ok(Value::Str(raw.to_string())),
                "null" => Ok(Value::Null),
                "bool" => yaml_bool(raw).map(Value::Bool).ok_or_else(bad),
                "int" => yaml_int(raw).map(Value::Int).ok_or_else(bad),
                "float" => yaml_float(raw, true).map(Value::Float).ok_or_else(bad),
                "timestamp" if is_yaml_timestamp(raw) => Ok(Value::Timestamp(raw.to_string())),
                _ => Err(format!("The YAML tag '{t}' is not supported")),
            }
        }
        Some(t) => Err(format!("The YAML tag '{t}' is not supported")),
    }
}

/// PyYAML's implicit resolvers for plain scalars (null, bool, int, float, timestamp; anything
/// else is a string).
pub(super) fn resolve_plain(raw: &str) -> Value {
    if matches!(raw, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = yaml_bool(raw).filter(|_| is_yaml_bool_spelling(raw)) {
        return Value::Bool(b);
    }
    if is_yaml_int(raw) {
        if let Some(i) = yaml_int(raw) {
            return Value::Int(i);
        }
    }
    if is_yaml_float(raw) {
        if let Some(f) = yaml_float(raw, false) {
            return Value::Float(f);
        }
    }
    if is_yaml_timestamp(raw) {
        return Value::Timestamp(raw.to_string());
    }
    Value::Str(raw.to_string())
}

fn is_yaml_bool_spelling(s: &str) -> bool {
    matches!(
        s,
        "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// `!!bool` as PyYAML constructs it (lower-cased lookup).
fn yaml_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Some(true),
        "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

fn all(s: &str, f: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(f)
}

/// PyYAML's int pattern: `0b…`, `0…` octal, decimal, `0x…`, sexagesimal `1:30`.
fn is_yaml_int(s: &str) -> bool {
    let (_, body) = split_sign(s);
    let b = body.as_bytes();
    if b.is_empty() {
        return false;
    }
    if let Some(rest) = body.strip_prefix("0b") {
        return !rest.is_empty() && all(rest, |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(rest) = body.strip_prefix("0x") {
        return !rest.is_empty() && all(rest, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if body == "0" {
        return true;
    }
    if b[0] == b'0' {
        return b.len() > 1 && all(&body[1..], |c| matches!(c, b'0'..=b'7' | b'_'));
    }
    if !b[0].is_ascii_digit() {
        return false;
    }
    match body.split_once(':') {
        None => all(body, |c| c.is_ascii_digit() || c == b'_'),
        Some((head, tail)) => {
            all(head, |c| c.is_ascii_digit() || c == b'_') && is_sexagesimal_tail(tail, false)
        }
    }
}

/// `(:[0-5]?[0-9])+`, the last part optionally followed by `.[0-9_]*` for floats.
fn is_sexagesimal_tail(tail: &str, float: bool) -> bool {
    let mut parts: Vec<&str> = tail.split(':').collect();
    let last = parts.pop().unwrap_or("");
    let (last, fraction) = match (float, last.split_once('.')) {
        (true, Some((l, f))) => (l, Some(f)),
        (true, None) => return false,
        (false, _) => (last, None),
    };
    parts.push(last);
    let ok_part = |p: &str| {
        let b = p.as_bytes();
        match b.len() {
            1 => b[0].is_ascii_digit(),
            2 => matches!(b[0], b'0'..=b'5') && b[1].is_ascii_digit(),
            _ => false,
        }
    };
    parts.iter().all(|p| ok_part(p))
        && fraction.is_none_or(|f| all(f, |c| c.is_ascii_digit() || c == b'_'))
}

/// PyYAML's `construct_yaml_int`; `None` when Python would raise (e.g. `0b_`).
fn yaml_int(s: &str) -> Option<i128> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let (negative, body) = split_sign(&cleaned);
    let magnitude = if body == "0" {
        0
    } else if let Some(bin) = body.strip_prefix("0b") {
        parse_radix(bin, 2)?
    } else if let Some(hex) = body.strip_prefix("0x") {
        parse_radix(hex, 16)?
    } else if body.contains(':') {
        let mut total: i128 = 0;
        for part in body.split(':') {
            total = total
                .saturating_mul(60)
                .saturating_add(parse_radix(part, 10)?);
        }
        total
    } else if body.starts_with('0') {
        parse_radix(body, 8)?
    } else {
        parse_radix(body, 10)?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Digits in a radix, saturating at `i128::MAX` (Python ints do not overflow; nothing here
/// tells values that large apart).
fn parse_radix(digits: &str, radix: u32) -> Option<i128> {
    if digits.is_empty() {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        v = v.saturating_mul(radix as i128).saturating_add(d as i128);
    }
    Some(v)
}

/// PyYAML's float pattern: a dot is required (`1.5`, `1.`, `.5`, `1.0e+5` — the exponent needs
/// a sign), or `.inf`/`.nan`, or sexagesimal `1:30.5`.
fn is_yaml_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, body) = split_sign(s);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let b = body.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b[0] == b'.' {
        // `\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?`, unsigned only
        if s.len() != body.len() {
            return false;
        }
        let (mantissa, exp) = split_exponent(&body[1..]);
        return mantissa.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && all(mantissa, |c| c.is_ascii_digit() || c == b'_')
            && exp.is_none_or(valid_exponent);
    }
    if !b[0].is_ascii_digit() {
        return false;
    }
    if let Some((head, tail)) = body.split_once(':') {
        return all(head, |c| c.is_ascii_digit() || c == b'_') && is_sexagesimal_tail(tail, true);
    }
    let Some((int_part, rest)) = body.split_once('.') else {
        return false;
    };
    let (fraction, exp) = split_exponent(rest);
    all(int_part, |c| c.is_ascii_digit() || c == b'_')
        && all(fraction, |c| c.is_ascii_digit() || c == b'_')
        && exp.is_none_or(valid_exponent)
}

fn split_exponent(s: &str) -> (&str, Option<&str>) {
    match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `[-+][0-9]+`
fn valid_exponent(e: &str) -> bool {
    let b = e.as_bytes();
    b.len() >= 2 && matches!(b[0], b'-' | b'+') && all(&e[1..], |c| c.is_ascii_digit())
}

/// PyYAML's `construct_yaml_float`. `lenient` (an explicit `!!float`) also takes what
/// Python's `float()` takes after the clean-up, e.g. `1` or `1e5`.
fn yaml_float(s: &str, lenient: bool) -> Option<f64> {
    let cleaned: String = s
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (negative, body) = split_sign(&cleaned);
    let sign = if negative { -1.0 } else { 1.0 };
    if body == ".inf" {
        return Some(sign * f64::INFINITY);
    }
    if body == ".nan" {
        return Some(f64::NAN);
    }
    if body.contains(':') {
        let mut total = 0.0;
        for part in body.split(':') {
            total = total * 60.0 + python_float(part)?;
        }
        return Some(sign * total);
    }
    if !lenient && !body.contains('.') {
        return None;
    }
    python_float(body).map(|f| sign * f)
}

/// Python's `float()` of a plain decimal (digits, one dot, optional exponent); Rust's parser
/// agrees on these once `1.` and `.5` are spelled out.
pub(super) fn python_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let (mantissa, exp) = split_exponent(s);
    let digits_ok = !mantissa.is_empty()
        && mantissa.bytes().filter(|&c| c == b'.').count() <= 1
        && mantissa.bytes().any(|c| c.is_ascii_digit())
        && all(mantissa, |c| c.is_ascii_digit() || c == b'.');
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all(e, |c| c.is_ascii_digit())
    });
    if b.is_empty() || !digits_ok || !exp_ok {
        return None;
    }
    let mut normal = String::with_capacity(s.len() + 2);
    if mantissa.starts_with('.') {
        normal.push('0');
    }
    normal.push_str(mantissa);
    if mantissa.ends_with('.') {
        normal.push('0');
    }
    if let Some(e) = exp {
        normal.push('e');
        normal.push_str(e);
    }
    normal.parse().ok()
}

/// PyYAML's timestamp pattern: `YYYY-MM-DD`, or `YYYY-M-D` + `T`/`t`/blanks +
/// `H:MM:SS[.fraction]` + optional blanks and `Z` or `±H[H][:MM]`.
pub(super) fn is_yaml_timestamp(s: &str) -> bool {
    yaml_timestamp_parts(s).is_some()
}

/// The parts of a PyYAML timestamp: date, and the time with its fraction and zone if any.
struct TimestampParts<'a> {
    year: &'a str,
    month: &'a str,
    day: &'a str,
    time: Option<TimeParts<'a>>,
}

struct TimeParts<'a> {
    hour: &'a str,
    minute: &'a str,
    second: &'a str,
    fraction: &'a str,
    /// `Some((negative, hours, minutes))`; `Z` is `Some((false, "0", ""))`.
    zone: Option<(bool, &'a str, &'a str)>,
}

/// Splits off 1..=max ASCII digits.
fn take_digits(s: &str, min: usize, max: usize) -> Option<(&str, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count().min(max);
    (n >= min).then(|| s.split_at(n))
}

fn yaml_timestamp_parts(s: &str) -> Option<TimestampParts<'_>> {
    let (year, rest) = take_digits(s, 4, 4)?;
    let rest = rest.strip_prefix('-')?;
    if rest.len() == 5 {
        // the date-only form wants exactly two digits each
        let (month, rest) = take_digits(rest, 2, 2)?;
        let rest = rest.strip_prefix('-')?;
        let (day, rest) = take_digits(rest, 2, 2)?;
        return rest.is_empty().then_some(TimestampParts {
            year,
            month,
            day,
            time: None,
        });
    }
    let (month, rest) = take_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (day, rest) = take_digits(rest, 1, 2)?;
    let rest = if let Some(r) = rest.strip_prefix(['T', 't']) {
        r
    } else {
        let r = rest.trim_start_matches([' ', '\t']);
        if r.len() == rest.len() {
            return None;
        }
        r
    };
    let (hour, rest) = take_digits(rest, 1, 2)?;
    let (minute, rest) = take_digits(rest.strip_prefix(':')?, 2, 2)?;
    let (second, rest) = take_digits(rest.strip_prefix(':')?, 2, 2)?;
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            r.split_at(n)
        }
        None => ("", rest),
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let zone = if rest.is_empty() {
        None
    } else if rest == "Z" {
        Some((false, "0", ""))
    } else {
        let negative = rest.starts_with('-');
        let r = rest.strip_prefix(['-', '+'])?;
        let (h, r) = take_digits(r, 1, 2)?;
        let (m, r) = match r.strip_prefix(':') {
            Some(r) => take_digits(r, 2, 2)?,
            None => ("", r),
        };
        if !r.is_empty() {
            return None;
        }
        Some((negative, h, m))
    };
    if zone.is_none() && !rest.is_empty() {
        return None;
    }
    Some(TimestampParts {
        year,
        month,
        day,
        time: Some(TimeParts {
            hour,
            minute,
            second,
            fraction,
            zone,
        }),
    })
}

/// A PyYAML timestamp as PyYAML constructs it: the local date and time and the offset east of
/// UTC in seconds (`None` for a naive value). The errors are Python's `datetime` ones, which
/// upstream never shows (it answers 500).
pub(super) fn yaml_timestamp(s: &str) -> Result<(chrono::NaiveDateTime, Option<i32>), String> {
    use chrono::{NaiveDate, NaiveTime};
    let p = yaml_timestamp_parts(s).ok_or_else(|| "not a timestamp".to_string())?;
    let num = |d: &str| d.parse::<u32>().unwrap_or(0);
    let (year, month, day) = (num(p.year), num(p.month), num(p.day));
    if year == 0 {
        return Err(format!("year {year} is out of range"));
    }
    if !(1..=12).contains(&month) {
        return Err("month must be in 1..12".into());
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| "day is out of range for month".to_string())?;
    let Some(t) = p.time else {
        return Ok((date.and_time(NaiveTime::MIN), None));
    };
    let (hour, minute, second) = (num(t.hour), num(t.minute), num(t.second));
    if hour > 23 {
        return Err("hour must be in 0..23".into());
    }
    if minute > 59 {
        return Err("minute must be in 0..59".into());
    }
    if second > 59 {
        return Err("second must be in 0..59".into());
    }
    let mut fraction: String = t.fraction.chars().take(6).collect();
    while fraction.len() < 6 {
        fraction.push('0');
    }
    let micro = num(&fraction);
    let time = NaiveTime::from_hms_micro_opt(hour, minute, second, micro)
        .ok_or_else(|| "time is out of range".to_string())?;
    let offset = match t.zone {
        None => None,
        Some((negative, h, m)) => {
            let secs = (num(h) * 3600 + num(m) * 60) as i32;
            if secs >= 86_400 {
                return Err(
                    "offset must be a timedelta strictly between -timedelta(hours=24) \
                            and timedelta(hours=24)"
                        .into(),
                );
            }
            Some(if negative { -secs } else { secs })
        }
    };
    Ok((date.and_time(time), offset))
}

/// Reads stored JSON (`units_nodes.data_pipe_yml`) into the same values.
pub(super) fn load_json(text: &str) -> Result<Value, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("The stored config is not JSON: {e}"))?;
    Ok(from_json(json))
}

fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i as i128),
            (None, Some(u)) => Value::Int(u as i128),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (Value::Str(k), from_json(v)))
                .collect(),
        ),
    }
}
