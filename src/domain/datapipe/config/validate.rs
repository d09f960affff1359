//! Upstream's `DataPipeConfig.model_validate` (pydantic v2, lax mode) over the values
//! [`super::load`] reads, with pydantic's own message texts:
//!
//! - every field is checked and every failure collected, in field order, section after
//!   section (`active_period`, `filters`, `transformations`, `processing_policy`);
//! - a section's rule checks (upstream's `model_validator(mode="after")`) run only when all of
//!   its fields are valid, stop at the first failure and read `Value error, <text>`;
//! - conversions are pydantic's: `"5"` and `5.0` are integers, `true` is the integer 1, `"yes"`
//!   and `1` are booleans, `2024-01-01` and `1700000000` are datetimes, and so on.
//!
//! Beyond upstream (each says so where it is written): unknown keys are refused, NaN and
//! infinities are refused, integers must fit the field's Rust type, `time_window_step`.

use chrono::NaiveDateTime;

use super::load::{python_float, yaml_timestamp, Value};
use super::{
    ActivePeriod, ActivePeriodType, DataPipeConfig, FilterTypeValueFiltering,
    FilterTypeValueThreshold, FilterValue, Filters, ProcessingPolicy, Transformations, SECTIONS,
};
use crate::domain::datapipe::{
    AggregationFunction, DataPipeStage, ProcessingPolicyType, TypeInputValue, ValidationError,
    WINDOW_SIZES,
};

/// What a validation may use beyond the document.
pub(super) struct Rules {
    /// Upstream's `max_size <= mqtt_max_payload_size * 1024`; `None` skips it (stored
    /// configs: the broker's limit may have changed since they were checked).
    pub max_size: Option<u32>,
    /// Refuse keys the model does not have (upstream ignores them). Off for stored configs,
    /// which may come from a newer upstream.
    pub refuse_unknown_keys: bool,
}

pub(super) const ACTIVE_PERIOD_FIELDS: &[&str] = &["type", "start", "end"];
pub(super) const FILTERS_FIELDS: &[&str] = &[
    "type_input_value",
    "type_value_filtering",
    "filtering_values",
    "type_value_threshold",
    "threshold_min",
    "threshold_max",
    "max_rate",
    "last_unique_check",
    "max_size",
];
pub(super) const TRANSFORMATIONS_FIELDS: &[&str] = &[
    "multiplication_ratio",
    "round_decimal_point",
    "slice_start",
    "slice_end",
];
pub(super) const PROCESSING_POLICY_FIELDS: &[&str] = &[
    "policy_type",
    "n_records_count",
    "time_window_size",
    "aggregation_functions",
    "time_window_step",
];

pub(super) fn validate(
    root: &Value,
    rules: &Rules,
) -> Result<DataPipeConfig, Vec<ValidationError>> {
    let Value::Map(top) = root else {
        return Err(vec![ValidationError {
            stage: DataPipeStage::ActivePeriod,
            message: "Input should be a valid dictionary or instance of DataPipeConfig".into(),
        }]);
    };
    let mut errors = Vec::new();
    let active_period = section(
        top,
        "active_period",
        "ActivePeriod",
        true,
        rules,
        &mut errors,
        active_period,
    );
    let filters = section(
        top,
        "filters",
        "FiltersConfig",
        true,
        rules,
        &mut errors,
        filters,
    );
    let transformations = section(
        top,
        "transformations",
        "TransformationConfig",
        false,
        rules,
        &mut errors,
        transformations,
    );
    let processing_policy = section(
        top,
        "processing_policy",
        "ProcessingPolicyConfig",
        true,
        rules,
        &mut errors,
        processing_policy,
    );
    if rules.refuse_unknown_keys {
        for (key, _) in top {
            let name = key.key_text();
            if !matches!(key, Value::Str(_)) || !SECTIONS.contains(&name.as_str()) {
                errors.push(ValidationError {
                    stage: super::stage_for_key(&name),
                    message: format!(
                        "Unknown section '{name}': a data pipe config has the sections {}",
                        SECTIONS.join(", ")
                    ),
                });
            }
        }
    }
    match (active_period, filters, transformations, processing_policy) {
        (
            Some(Some(active_period)),
            Some(Some(filters)),
            Some(transformations),
            Some(Some(processing_policy)),
        ) if errors.is_empty() => Ok(DataPipeConfig {
            active_period,
            filters,
            transformations,
            processing_policy,
        }),
        _ => Err(errors),
    }
}

/// One section: `Some(None)` when an optional section is absent or null, `None` on errors.
fn section<T>(
    top: &[(Value, Value)],
    name: &'static str,
    model: &str,
    required: bool,
    rules: &Rules,
    errors: &mut Vec<ValidationError>,
    parse: fn(&mut Fields<'_>) -> Option<T>,
) -> Option<Option<T>> {
    let stage = super::section_stage(name).unwrap_or(DataPipeStage::ActivePeriod);
    let value = lookup(top, name);
    match value {
        None if required => {
            errors.push(ValidationError {
                stage,
                message: "Field required".into(),
            });
            None
        }
        None | Some(Value::Null) if !required => Some(None),
        Some(Value::Map(entries)) => {
            let mut fields = Fields {
                stage,
                section: name,
                entries,
                errors,
                failed: false,
                rules,
            };
            let parsed = parse(&mut fields);
            parsed.map(Some)
        }
        _ => {
            errors.push(ValidationError {
                stage,
                message: format!("Input should be a valid dictionary or instance of {model}"),
            });
            None
        }
    }
}

fn lookup<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries.iter().find_map(|(k, v)| match k {
        Value::Str(s) if s == key => Some(v),
        _ => None,
    })
}

/// The fields of one section being validated.
struct Fields<'a> {
    stage: DataPipeStage,
    section: &'static str,
    entries: &'a [(Value, Value)],
    errors: &'a mut Vec<ValidationError>,
    /// A field failed: the section's rules do not run.
    failed: bool,
    rules: &'a Rules,
}

impl Fields<'_> {
    fn error(&mut self, message: impl Into<String>) {
        self.failed = true;
        self.errors.push(ValidationError {
            stage: self.stage,
            message: message.into(),
        });
    }

    /// A failed rule check: `Value error, <text>` like pydantic wraps a `ValueError`.
    fn rule(&mut self, text: &str) -> Option<()> {
        self.error(format!("Value error, {text}"));
        None
    }

    /// A field's value: `Ok(None)` when absent or null and `optional`, `Err(())` after an error.
    fn get<T>(
        &mut self,
        name: &str,
        optional: bool,
        convert: impl FnOnce(&Value) -> Result<T, Vec<String>>,
    ) -> Result<Option<T>, ()> {
        match lookup(self.entries, name) {
            None if optional => Ok(None),
            None => {
                self.error("Field required");
                Err(())
            }
            Some(Value::Null) if optional => Ok(None),
            Some(v) => match convert(v) {
                Ok(t) => Ok(Some(t)),
                Err(messages) => {
                    for m in messages {
                        self.error(m);
                    }
                    Err(())
                }
            },
        }
    }

    fn required<T>(
        &mut self,
        name: &str,
        convert: impl FnOnce(&Value) -> Result<T, Vec<String>>,
    ) -> Option<T> {
        self.get(name, false, convert).ok().flatten()
    }

    fn optional<T>(
        &mut self,
        name: &str,
        convert: impl FnOnce(&Value) -> Result<T, Vec<String>>,
    ) -> Option<T> {
        self.get(name, true, convert).ok().flatten()
    }

    /// Keys the section does not have (our addition; pydantic ignores them): refused after
    /// the fields, in document order.
    fn unknown_keys(&mut self, known: &[&str]) {
        if !self.rules.refuse_unknown_keys {
            return;
        }
        let unknown: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| !matches!(k, Value::Str(s) if known.contains(&s.as_str())))
            .map(|(k, _)| k.key_text())
            .collect();
        for key in unknown {
            self.error(format!(
                "Unknown key '{key}' in {}: its keys are {}",
                self.section,
                known.join(", ")
            ));
        }
    }

    /// After the fields: `Some(())` when the section's rules may run.
    fn fields_ok(&self) -> Option<()> {
        (!self.failed).then_some(())
    }
}

fn one(message: impl Into<String>) -> Vec<String> {
    vec![message.into()]
}

/// pydantic's enum message: `Input should be 'A', 'B' or 'C'`.
fn enum_message(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("Input should be {} or {last}", rest.join(", "))
        }
        _ => format!("Input should be {}", quoted.join("")),
    }
}

/// A `str` enum: the exact value, as pydantic compares it.
fn enumeration<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
) -> impl Fn(&Value) -> Result<T, Vec<String>> + '_ {
    move |v| {
        if let Value::Str(s) = v {
            if let Some(t) = all.iter().copied().find(|t| name(*t) == s) {
                return Ok(t);
            }
        }
        let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
        Err(one(enum_message(&names)))
    }
}

const INT_TYPE: &str = "Input should be a valid integer";
const INT_PARSING: &str = "Input should be a valid integer, unable to parse string as an integer";
const FLOAT_TYPE: &str = "Input should be a valid number";
const FLOAT_PARSING: &str = "Input should be a valid number, unable to parse string as a number";
const FINITE: &str = "Input should be a finite number";
const BOOL_TYPE: &str = "Input should be a valid boolean";
const BOOL_PARSING: &str = "Input should be a valid boolean, unable to interpret input";
const STR_TYPE: &str = "Input should be a valid string";

/// Python's `str.strip()` whitespace.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// pydantic's lax `int`: bools, integral floats, strings of digits (with `_` between digits
/// and an optional `.000` tail).
fn int(v: &Value) -> Result<i128, Vec<String>> {
    match v {
        Value::Bool(b) => Ok(*b as i128),
        Value::Int(i) => Ok(*i),
        Value::Float(f) if !f.is_finite() => Err(one(FINITE)),
        Value::Float(f) if f.fract() != 0.0 => Err(one(
            "Input should be a valid integer, got a number with a fractional part",
        )),
        Value::Float(f) if f.abs() >= 9_223_372_036_854_775_808.0 => Err(one(
            "Unable to parse input string as an integer, exceeded maximum size",
        )),
        Value::Float(f) => Ok(*f as i128),
        Value::Str(s) => int_from_str(py_strip(s)).ok_or_else(|| one(INT_PARSING)),
        _ => Err(one(INT_TYPE)),
    }
}

/// Digits with single `_` between them.
fn digit_run(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_digit() || *c == b'_')
        && !s.contains("__")
}

fn int_from_str(s: &str) -> Option<i128> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = match body.split_once('.') {
        Some((d, zeros)) if !zeros.is_empty() && zeros.bytes().all(|c| c == b'0') => d,
        Some(_) => return None,
        None => body,
    };
    if !digit_run(digits) {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.bytes().filter(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add((c - b'0') as i128);
    }
    Some(if negative { -v } else { v })
}

/// pydantic's lax `float` (which accepts NaN and infinities; refusing them is ours).
fn float(v: &Value) -> Result<f64, Vec<String>> {
    let f = match v {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Str(s) => float_from_str(s).ok_or_else(|| one(FLOAT_PARSING))?,
        _ => return Err(one(FLOAT_TYPE)),
    };
    if f.is_finite() {
        Ok(f)
    } else {
        Err(one(FINITE))
    }
}

/// pydantic's float text: surrounding whitespace is allowed only without underscores, and
/// underscores only between two other characters.
fn float_from_str(raw: &str) -> Option<f64> {
    let cleaned;
    let s = if raw.contains('_') {
        let b = raw.as_bytes();
        let lone = |i: usize| i > 0 && i + 1 < b.len() && b[i - 1] != b'_' && b[i + 1] != b'_';
        if py_strip(raw) != raw || (0..b.len()).any(|i| b[i] == b'_' && !lone(i)) {
            return None;
        }
        cleaned = raw.replace('_', "");
        cleaned.as_str()
    } else {
        py_strip(raw)
    };
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let sign = if negative { -1.0 } else { 1.0 };
    match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    python_float(body).map(|f| sign * f)
}

/// pydantic's lax `bool`.
fn boolean(v: &Value) -> Result<bool, Vec<String>> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Int(0) => Ok(false),
        Value::Int(1) => Ok(true),
        Value::Int(_) => Err(one(BOOL_PARSING)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => match *f as i64 {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(one(BOOL_PARSING)),
        },
        Value::Str(s) => match s.to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(true),
            _ => Err(one(BOOL_PARSING)),
        },
        _ => Err(one(BOOL_TYPE)),
    }
}

/// An `int` with pydantic's `ge`/`le` constraints, then (our addition) the range of the Rust
/// field, worded the same way.
fn bounded(lo: i128, hi: i128) -> impl Fn(&Value) -> Result<i128, Vec<String>> {
    move |v| {
        let i = int(v)?;
        if i < lo {
            Err(one(format!(
                "Input should be greater than or equal to {lo}"
            )))
        } else if i > hi {
            Err(one(format!("Input should be less than or equal to {hi}")))
        } else {
            Ok(i)
        }
    }
}

const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
const U32: (i128, i128) = (0, u32::MAX as i128);

/// `list[Union[str, int, float]]` in pydantic's smart mode: strings stay strings, ints and
/// bools become integers, floats stay floats; anything else fails all three members.
fn filtering_values(v: &Value) -> Result<Vec<FilterValue>, Vec<String>> {
    let Value::List(items) = v else {
        return Err(one("Input should be a valid list"));
    };
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for item in items {
        match item {
            Value::Str(s) => out.push(FilterValue::Text(s.clone())),
            Value::Bool(b) => out.push(FilterValue::Integer(*b as i64)),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => out.push(FilterValue::Integer(i)),
                Err(_) if *i < 0 => errors.push(format!(
                    "Input should be greater than or equal to {}",
                    i64::MIN
                )),
                Err(_) => errors.push(format!(
                    "Input should be less than or equal to {}",
                    i64::MAX
                )),
            },
            Value::Float(f) if f.is_finite() => out.push(FilterValue::Number(*f)),
            Value::Float(_) => errors.push(FINITE.into()),
            _ => errors.extend([STR_TYPE, INT_TYPE, FLOAT_TYPE].map(String::from)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// pydantic's lax `datetime`, normalised to naive UTC (an offset is applied, a naive value is
/// taken as UTC): ISO 8601 text (`T`, `t`, `_` or a space between date and time, seconds and
/// fraction optional, `Z` or `±HH[:]MM`), a date alone (midnight), a unix timestamp (a number,
/// or digits in a string; beyond 2e10 it counts milliseconds), or what PyYAML reads as a
/// timestamp.
fn datetime(v: &Value) -> Result<NaiveDateTime, Vec<String>> {
    let (local, offset) = match v {
        Value::Str(s) => parse_datetime_text(s).map_err(one)?,
        Value::Timestamp(s) => {
            yaml_timestamp(s).map_err(|e| one(format!("Input should be a valid datetime, {e}")))?
        }
        Value::Int(i) => (from_unix(*i as f64).map_err(one)?, Some(0)),
        Value::Float(f) => (from_unix(*f).map_err(one)?, Some(0)),
        _ => return Err(one("Input should be a valid datetime")),
    };
    let utc = local - chrono::Duration::seconds(offset.unwrap_or(0) as i64);
    Ok(utc)
}

const DATETIME_OR_DATE: &str = "Input should be a valid datetime or date";
const YEAR_ZERO: &str = "year 0 is out of range";

/// The datetime text forms pydantic (speedate) accepts, with its messages for the rest.
pub(super) fn parse_datetime_text(s: &str) -> Result<(NaiveDateTime, Option<i32>), String> {
    use chrono::NaiveTime;
    let b = s.as_bytes();
    let date = parse_date_prefix(b).map_err(|e| format!("{DATETIME_OR_DATE}, {e}"));
    if let Ok(date) = date {
        if b.len() == 10 {
            return Ok((date.and_time(NaiveTime::MIN), None));
        }
        if let Some(t) = parse_time_suffix(&b[10..]) {
            return Ok((date.and_time(t.0), t.1));
        }
    }
    // not an ISO datetime: a number is a unix timestamp
    if let Some(f) = unix_number(s) {
        return Ok((from_unix(f)?, Some(0)));
    }
    match date {
        // speedate reads year 0, Python's datetime refuses it
        Err(e) if e.ends_with(YEAR_ZERO) => {
            Err(format!("Input should be a valid datetime, {YEAR_ZERO}"))
        }
        Err(e) => Err(e),
        Ok(_) => Err(format!(
            "{DATETIME_OR_DATE}, unexpected extra characters at the end of the input"
        )),
    }
}

/// `YYYY-MM-DD` at the start of the text, with speedate's error texts.
fn parse_date_prefix(b: &[u8]) -> Result<chrono::NaiveDate, &'static str> {
    if b.len() < 10 {
        return Err("input is too short");
    }
    let digits = |range: std::ops::Range<usize>, err: &'static str| -> Result<u32, &'static str> {
        let mut v = 0;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return Err(err);
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Ok(v)
    };
    let year = digits(0..4, "invalid character in year")?;
    if b[4] != b'-' {
        return Err("invalid date separator, expected `-`");
    }
    let month = digits(5..7, "invalid character in month")?;
    if b[7] != b'-' {
        return Err("invalid date separator, expected `-`");
    }
    let day = digits(8..10, "invalid character in day")?;
    if !(1..=12).contains(&month) {
        return Err("month value is outside expected range of 1-12");
    }
    if year == 0 {
        return Err(YEAR_ZERO);
    }
    chrono::NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or("day value is outside expected range")
}

/// `<sep>HH:MM[:SS[(.|,)fraction]][Z|z|±HH[:]MM]` after a date; `None` when it is not one.
fn parse_time_suffix(b: &[u8]) -> Option<(chrono::NaiveTime, Option<i32>)> {
    if !matches!(b.first(), Some(b'T' | b't' | b' ' | b'_')) {
        return None;
    }
    let b = &b[1..];
    let two = |i: usize| -> Option<u32> {
        let (x, y) = (*b.get(i)?, *b.get(i + 1)?);
        (x.is_ascii_digit() && y.is_ascii_digit()).then(|| ((x - b'0') * 10 + (y - b'0')) as u32)
    };
    let hour = two(0)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let minute = two(3)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 5;
    let (mut second, mut micro) = (0, 0);
    if b.get(i) == Some(&b':') {
        second = two(i + 1)?;
        if second > 59 {
            return None;
        }
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            // more than 6 digits are truncated (pydantic's default)
            for k in 0..6 {
                micro = micro * 10
                    + b.get(i + k)
                        .filter(|_| k < n)
                        .map_or(0, |c| (c - b'0') as u32);
            }
            i += n;
        }
    }
    let offset = match &b[i..] {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let d = |c: u8| c.is_ascii_digit().then(|| (c - b'0') as i32);
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (d(*h1)? * 10 + d(*h2)?, d(*m1)? * 10 + d(*m2)?)
                }
                _ => return None,
            };
            if m > 59 || h * 3600 + m * 60 >= 86_400 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    Some((
        chrono::NaiveTime::from_hms_micro_opt(hour, minute, second, micro)?,
        offset,
    ))
}

/// A number as speedate reads one in a datetime string (digits, optional sign, optional
/// fraction).
fn unix_number(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int_part, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let ok = !int_part.is_empty()
        && int_part.bytes().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| f.bytes().all(|c| c.is_ascii_digit()));
    if !ok {
        return None;
    }
    s.parse().ok()
}

/// A unix timestamp as pydantic reads one: beyond ±2e10 it counts milliseconds; up to
/// 9999-12-31 (and from year 1, Python's first).
fn from_unix(t: f64) -> Result<NaiveDateTime, String> {
    const MS_WATERSHED: f64 = 20_000_000_000.0;
    let seconds = if t.abs() > MS_WATERSHED {
        t / 1000.0
    } else {
        t
    };
    if seconds.is_nan() || seconds < -62_135_596_800.0 {
        return Err("Input should be a valid datetime, dates before 0000 are not supported as unix timestamps".into());
    }
    if seconds > 253_402_300_799.0 {
        return Err("Input should be a valid datetime, dates after 9999 are not supported as unix timestamps".into());
    }
    let whole = seconds.floor();
    let micro = ((seconds - whole) * 1_000_000.0).round() as i64;
    let base = chrono::DateTime::from_timestamp(whole as i64, 0)
        .ok_or_else(|| "Input should be a valid datetime".to_string())?
        .naive_utc();
    Ok(base + chrono::Duration::microseconds(micro))
}

fn active_period(f: &mut Fields<'_>) -> Option<ActivePeriod> {
    let kind = f.required(
        "type",
        enumeration(ActivePeriodType::ALL, ActivePeriodType::as_str),
    );
    let start = f.optional("start", datetime);
    let end = f.optional("end", datetime);
    f.unknown_keys(ACTIVE_PERIOD_FIELDS);
    f.fields_ok()?;
    let kind = kind?;
    match kind {
        ActivePeriodType::FromDate if start.is_none() => {
            f.rule("start must be provided for FROM_DATE")?
        }
        ActivePeriodType::ToDate if end.is_none() => f.rule("end must be provided for TO_DATE")?,
        ActivePeriodType::DateRange => match (start, end) {
            (Some(s), Some(e)) if s >= e => f.rule("start must be before end for DATE_RANGE")?,
            (Some(_), Some(_)) => {}
            _ => f.rule("start and end must be provided for DATE_RANGE")?,
        },
        _ => {}
    }
    Some(ActivePeriod { kind, start, end })
}

fn filters(f: &mut Fields<'_>) -> Option<Filters> {
    let type_input_value = f.required(
        "type_input_value",
        enumeration(TypeInputValue::ALL, TypeInputValue::as_str),
    );
    let type_value_filtering = f.optional(
        "type_value_filtering",
        enumeration(
            FilterTypeValueFiltering::ALL,
            FilterTypeValueFiltering::as_str,
        ),
    );
    let filtering_values = f.optional("filtering_values", filtering_values);
    let type_value_threshold = f.optional(
        "type_value_threshold",
        enumeration(
            FilterTypeValueThreshold::ALL,
            FilterTypeValueThreshold::as_str,
        ),
    );
    let threshold_min = f.optional("threshold_min", bounded(I64.0, I64.1));
    let threshold_max = f.optional("threshold_max", bounded(I64.0, I64.1));
    let max_rate = f.required("max_rate", bounded(0, 86_400));
    let last_unique_check = match lookup(f.entries, "last_unique_check") {
        None => Some(false),
        Some(_) => f.required("last_unique_check", boolean),
    };
    let max_size = f.required("max_size", bounded(0, i128::MAX));
    f.unknown_keys(FILTERS_FIELDS);
    f.fields_ok()?;
    let type_input_value = type_input_value?;
    let values = filtering_values.as_deref().unwrap_or_default();
    if type_value_filtering.is_some() && !values.is_empty() {
        let numeric = |v: &FilterValue| !matches!(v, FilterValue::Text(_));
        if type_input_value == TypeInputValue::Number && !values.iter().all(numeric) {
            f.rule("filtering_values must be numeric for NUMBER input")?;
        }
        if type_input_value == TypeInputValue::Text && values.iter().any(numeric) {
            f.rule("filtering_values must be strings for TEXT input")?;
        }
    }
    if type_input_value == TypeInputValue::Number {
        match type_value_threshold {
            Some(FilterTypeValueThreshold::Min) if threshold_min.is_none() => {
                f.rule("threshold_min is required for MIN threshold")?
            }
            Some(FilterTypeValueThreshold::Max) if threshold_max.is_none() => {
                f.rule("threshold_max is required for MAX threshold")?
            }
            Some(FilterTypeValueThreshold::Range) => match (threshold_min, threshold_max) {
                (Some(lo), Some(hi)) if lo >= hi => {
                    f.rule("threshold_min must be less than threshold_max")?
                }
                (Some(_), Some(_)) => {}
                _ => {
                    f.rule("Both threshold_min and threshold_max are required for RANGE threshold")?
                }
            },
            _ => {}
        }
    }
    let max_size = max_size?;
    if let Some(limit) = f.rules.max_size {
        if max_size > limit as i128 {
            f.rule(&format!("max_size must be <= {limit}"))?;
        }
    }
    let Ok(max_size) = u32::try_from(max_size) else {
        f.error(format!(
            "Input should be less than or equal to {}",
            u32::MAX
        ));
        return None;
    };
    Some(Filters {
        type_input_value,
        type_value_filtering,
        filtering_values,
        type_value_threshold,
        threshold_min: threshold_min.map(|v| v as i64),
        threshold_max: threshold_max.map(|v| v as i64),
        max_rate: max_rate? as u32,
        last_unique_check: last_unique_check?,
        max_size,
    })
}

fn transformations(f: &mut Fields<'_>) -> Option<Transformations> {
    let multiplication_ratio = f.optional("multiplication_ratio", float);
    let round_decimal_point = f.optional("round_decimal_point", bounded(0, 7));
    let slice_start = f.optional("slice_start", bounded(I64.0, I64.1));
    let slice_end = f.optional("slice_end", bounded(I64.0, I64.1));
    f.unknown_keys(TRANSFORMATIONS_FIELDS);
    f.fields_ok()?;
    Some(Transformations {
        multiplication_ratio,
        round_decimal_point: round_decimal_point.map(|v| v as u8),
        slice_start: slice_start.map(|v| v as i64),
        slice_end: slice_end.map(|v| v as i64),
    })
}

fn processing_policy(f: &mut Fields<'_>) -> Option<ProcessingPolicy> {
    let policy_type = f.required(
        "policy_type",
        enumeration(ProcessingPolicyType::ALL, ProcessingPolicyType::as_str),
    );
    // unbounded ints upstream; the rules below bound them, and (ours) any value must fit u32
    let n_records_count = f.optional("n_records_count", int);
    let time_window_size = f.optional("time_window_size", int);
    let aggregation_functions = f.optional(
        "aggregation_functions",
        enumeration(AggregationFunction::ALL, AggregationFunction::as_str),
    );
    // ours: the step of a sliding window
    let time_window_step = f.optional("time_window_step", bounded(1, 86_400));
    f.unknown_keys(PROCESSING_POLICY_FIELDS);
    f.fields_ok()?;
    let policy_type = policy_type?;
    if policy_type == ProcessingPolicyType::NRecords {
        match n_records_count {
            None => f.rule("n_records_count is required for N_RECORDS")?,
            Some(n) if !(1..=1024).contains(&n) => {
                f.rule("n_records_count must be between 1 and 1024")?
            }
            Some(_) => {}
        }
    }
    let windowed = matches!(
        policy_type,
        ProcessingPolicyType::TimeWindow | ProcessingPolicyType::Aggregation
    );
    if windowed {
        match time_window_size {
            None => f.rule("time_window_size is required")?,
            Some(s) if !WINDOW_SIZES.iter().any(|w| *w as i128 == s) => {
                let sizes: Vec<String> = WINDOW_SIZES.iter().map(u32::to_string).collect();
                f.rule(&format!(
                    "Invalid time_window_size. Must be one of: [{}]",
                    sizes.join(", ")
                ))?
            }
            Some(_) => {}
        }
    }
    if policy_type == ProcessingPolicyType::Aggregation && aggregation_functions.is_none() {
        f.rule("aggregation_functions is required for AGGREGATION")?;
    }
    if let Some(step) = time_window_step {
        if policy_type != ProcessingPolicyType::Aggregation {
            f.rule("time_window_step is only allowed for AGGREGATION")?;
        }
        let size = time_window_size.unwrap_or(0);
        if size % step != 0 {
            f.rule("time_window_step must divide time_window_size")?;
        }
        if size / step > MAX_STEPS_PER_WINDOW as i128 {
            f.rule(&format!(
                "time_window_size / time_window_step must be at most {MAX_STEPS_PER_WINDOW}"
            ))?;
        }
    }
    let n_records_count = fit_u32(n_records_count, f)?;
    let time_window_size = fit_u32(time_window_size, f)?;
    Some(ProcessingPolicy {
        policy_type,
        n_records_count,
        time_window_size,
        aggregation_functions,
        time_window_step: time_window_step.map(|v| v as u32),
    })
}

/// Ours: the Rust fields are u32 (only reachable for a policy that ignores the value).
fn fit_u32(v: Option<i128>, f: &mut Fields<'_>) -> Option<Option<u32>> {
    let Some(v) = v else { return Some(None) };
    match u32::try_from(v) {
        Ok(v) => Some(Some(v)),
        Err(_) => {
            let (lo, hi) = U32;
            f.error(if v < lo {
                format!("Input should be greater than or equal to {lo}")
            } else {
                format!("Input should be less than or equal to {hi}")
            });
            None
        }
    }
}

/// Most steps in one sliding window (86400 s / 60 s): bounds the partial aggregates a
/// pipeline keeps.
pub const MAX_STEPS_PER_WINDOW: u32 = 1440;
