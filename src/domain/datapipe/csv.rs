//! A node's pipeline rows as CSV: upstream's export (`GET /unit_nodes/get_data_pipe_data_csv`,
//! `DataPipeRepository.models_to_csv`) and import (`POST /unit_nodes/set_data_pipe_data_csv`,
//! `StreamingCSVValidator`), pure: the service zips, stores and deletes.
//!
//! **Export** ([`encode_n_records`], [`encode_windows`], [`encode_aggregations`]): Python's
//! `csv.writer` (comma, `\r\n`, quotes only around fields holding `,` `"` `\r` `\n`), a header
//! row of the item's field names in upstream's order (API.md "pipe_data items"), datetimes as
//! Python's `str(datetime)` (`2024-01-31 12:00:00`, `.ffffff` when not whole), floats as
//! Python's `repr`. No rows gives the header alone (upstream answers `No data found`: the
//! caller decides).
//!
//! **Import** ([`decode`]): all or nothing; every row re-validated against the node's config in
//! upstream's order, with upstream's messages (`Row 3: state not in whitelist`). Rows are
//! numbered from 1 after the header (upstream's `current_row`); an error about the header or
//! the whole file has row 0. The columns used are upstream's (`create_datetime`, `state`, and
//! for Aggregation `start_window_datetime`, `end_window_datetime`); the node, state type, size,
//! count and expiry of a row are recomputed from the node and its config, so an export of
//! another node imports here. Other columns are ignored, as upstream ignores them (newer
//! upstream exports carry `id` and `uuid`).
//!
//! Where we differ from upstream, on purpose:
//! - what upstream answers with a 500 is a row error here: a missing column, a short or long
//!   row, a datetime that does not parse, text that is not UTF-8, a quoted field left open;
//! - bounded: at most [`CsvLimits::max_bytes`] bytes and [`CsvLimits::max_rows`] rows;
//! - a leading UTF-8 BOM is skipped; quoted fields may hold commas, quotes and line breaks;
//!   empty lines are skipped (as Python's `DictReader` does);
//! - a Number state is kept as written (trimmed) instead of Python's `str(float(state))`
//!   (`5` stays `5`, not `5.0`), so export then import gives the same rows; it must be a
//!   finite number (`NaN`, `inf` refused) as Rust reads one (`1_000` is refused);
//! - sizes (`max_size`, `size`) count bytes, as the run-time filter does (upstream's import
//!   counts characters; the same for ASCII);
//! - `NRecords`: the row-limit message names its row like every other message;
//! - Aggregation: an `aggregation_type` or `time_window_size` column, when present, must match
//!   the config (upstream silently relabels the values); the window end must be aligned to the
//!   step since 1970-01-01 (the engine's windows are); with a sliding `time_window_step`,
//!   consecutive windows are a multiple of the step apart (upstream: of the size) and the
//!   whole-minute check applies only to steps that are whole minutes.

use std::fmt;

use chrono::{NaiveDateTime, Timelike};
use uuid::Uuid;

use super::config::{
    py_float_repr, ActivePeriodType, DataPipeConfig, FilterTypeValueFiltering,
    FilterTypeValueThreshold,
};
use super::{
    AggregationEntry, NRecordsEntry, PipeRow, ProcessingPolicyType, TypeInputValue, WindowEntry,
    WINDOW_SIZES,
};

/// The columns of an NRecords export.
pub const N_RECORDS_HEADER: &[&str] = &[
    "unit_node_uuid",
    "state",
    "state_type",
    "create_datetime",
    "max_count",
    "size",
];
/// The columns of a TimeWindow export.
pub const WINDOW_HEADER: &[&str] = &[
    "unit_node_uuid",
    "state",
    "state_type",
    "create_datetime",
    "expiration_datetime",
    "size",
];
/// The columns of an Aggregation export.
pub const AGGREGATION_HEADER: &[&str] = &[
    "unit_node_uuid",
    "state",
    "aggregation_type",
    "time_window_size",
    "create_datetime",
    "start_window_datetime",
    "end_window_datetime",
];

/// Python's `str(datetime)`: `2024-01-31 12:00:00`, with `.ffffff` when not a whole second.
pub fn format_datetime(t: NaiveDateTime) -> String {
    if t.nanosecond() / 1000 == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

/// One CSV field as Python's `csv.writer` (QUOTE_MINIMAL) writes it.
fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

fn push_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, f);
    }
    out.push_str("\r\n");
}

fn encode<T>(header: &[&str], rows: &[T], fields: impl Fn(&T) -> Vec<String>) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    push_row(&mut out, header);
    for row in rows {
        let f = fields(row);
        let refs: Vec<&str> = f.iter().map(String::as_str).collect();
        push_row(&mut out, &refs);
    }
    out
}

/// The rows of one node's table, of the policy of the first row (rows of another policy are
/// not its table's and are left out); no rows: an empty text.
pub fn encode_rows(rows: &[PipeRow]) -> String {
    match rows.first() {
        None => String::new(),
        Some(PipeRow::NRecords(_)) => encode_n_records(&of(rows, |r| match r {
            PipeRow::NRecords(r) => Some(r),
            _ => None,
        })),
        Some(PipeRow::Window(_)) => encode_windows(&of(rows, |r| match r {
            PipeRow::Window(r) => Some(r),
            _ => None,
        })),
        Some(PipeRow::Aggregation(_)) => encode_aggregations(&of(rows, |r| match r {
            PipeRow::Aggregation(r) => Some(r),
            _ => None,
        })),
    }
}

fn of<T: Clone>(rows: &[PipeRow], pick: impl Fn(&PipeRow) -> Option<&T>) -> Vec<T> {
    rows.iter().filter_map(pick).cloned().collect()
}

pub fn encode_n_records(rows: &[NRecordsEntry]) -> String {
    encode(N_RECORDS_HEADER, rows, |r| {
        vec![
            r.unit_node_uuid.to_string(),
            r.state.clone(),
            r.state_type.to_string(),
            format_datetime(r.create_datetime),
            r.max_count.to_string(),
            r.size.to_string(),
        ]
    })
}

pub fn encode_windows(rows: &[WindowEntry]) -> String {
    encode(WINDOW_HEADER, rows, |r| {
        vec![
            r.unit_node_uuid.to_string(),
            r.state.clone(),
            r.state_type.to_string(),
            format_datetime(r.create_datetime),
            format_datetime(r.expiration_datetime),
            r.size.to_string(),
        ]
    })
}

pub fn encode_aggregations(rows: &[AggregationEntry]) -> String {
    encode(AGGREGATION_HEADER, rows, |r| {
        vec![
            r.unit_node_uuid.to_string(),
            py_float_repr(r.state),
            r.aggregation_type.to_string(),
            r.time_window_size.to_string(),
            format_datetime(r.create_datetime),
            format_datetime(r.start_window_datetime),
            format_datetime(r.end_window_datetime),
        ]
    })
}

/// How much an import may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvLimits {
    /// The file's size in bytes.
    pub max_bytes: usize,
    /// Data rows (the header not counted).
    pub max_rows: usize,
}

/// Why an import was refused: `row` is the data row (1 = the first after the header), 0 for
/// the header or the whole file; `message` names the row too (`Row 3: ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvError {
    pub row: usize,
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CsvError {}

/// The rows of an import, of the config's policy.
#[derive(Clone, Debug, PartialEq)]
pub enum CsvRows {
    NRecords(Vec<NRecordsEntry>),
    TimeWindow(Vec<WindowEntry>),
    Aggregation(Vec<AggregationEntry>),
}

impl CsvRows {
    /// The rows as the telemetry store takes them.
    pub fn into_pipe_rows(self) -> Vec<PipeRow> {
        match self {
            CsvRows::NRecords(r) => r.into_iter().map(PipeRow::NRecords).collect(),
            CsvRows::TimeWindow(r) => r.into_iter().map(PipeRow::Window).collect(),
            CsvRows::Aggregation(r) => r.into_iter().map(PipeRow::Aggregation).collect(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CsvRows::NRecords(r) => r.len(),
            CsvRows::TimeWindow(r) => r.len(),
            CsvRows::Aggregation(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Records of a CSV text the way Python's `csv.reader` (excel dialect) splits them, over
/// bytes (UTF-8 is checked per field afterwards, so the error can name its row).
struct Records<'a> {
    data: &'a [u8],
    pos: usize,
}

enum Field {
    Start,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl Records<'_> {
    /// The next record; empty lines are skipped. `\r\n`, `\n` and `\r` end a record outside
    /// quotes.
    fn next_record(&mut self) -> Option<Result<Vec<Vec<u8>>, &'static str>> {
        let d = self.data;
        while matches!(d.get(self.pos), Some(b'\r' | b'\n')) {
            self.pos += 1;
        }
        if self.pos >= d.len() {
            return None;
        }
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut state = Field::Start;
        loop {
            let Some(&c) = d.get(self.pos) else {
                if matches!(state, Field::Quoted) {
                    return Some(Err(
                        "a quoted field is not closed before the end of the file",
                    ));
                }
                fields.push(field);
                return Some(Ok(fields));
            };
            self.pos += 1;
            let end_of_line = c == b'\r' || c == b'\n';
            if end_of_line && !matches!(state, Field::Quoted) {
                if c == b'\r' && d.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
                fields.push(field);
                return Some(Ok(fields));
            }
            match (&state, c) {
                (Field::Quoted, b'"') => state = Field::QuoteInQuoted,
                (Field::Quoted, _) => field.push(c),
                (Field::Start, b'"') => state = Field::Quoted,
                (Field::QuoteInQuoted, b'"') => {
                    field.push(b'"');
                    state = Field::Quoted;
                }
                (_, b',') => {
                    fields.push(std::mem::take(&mut field));
                    state = Field::Start;
                }
                // after a closing quote, Python's reader keeps what follows (`"ab"c` is `abc`)
                _ => {
                    field.push(c);
                    state = Field::Unquoted;
                }
            }
        }
    }
}

fn error(row: usize, message: impl Into<String>) -> CsvError {
    CsvError {
        row,
        message: message.into(),
    }
}

/// Python's `strptime` with `%Y-%m-%d %H:%M:%S` (or `.%f` when the text has a dot): a
/// four-digit year, one or two digits for the other parts, 1 to 6 fraction digits; `T` is
/// taken for the space too.
pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let (date, time) = s.split_once([' ', 'T'])?;
    let time = time.trim_start_matches(' ');
    let mut d = date.split('-');
    let year = d.next().filter(|y| y.len() == 4)?;
    let (month, day) = (d.next()?, d.next()?);
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (hour, minute, second) = (t.next()?, t.next()?, t.next()?);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    let part = |p: &str, max_len: usize| -> Option<u32> {
        (!p.is_empty() && p.len() <= max_len && p.bytes().all(|c| c.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let micro = match fraction {
        None => 0,
        Some(f) => part(f, 6)? * 10u32.pow(6 - f.len() as u32),
    };
    chrono::NaiveDate::from_ymd_opt(part(year, 4)? as i32, part(month, 2)?, part(day, 2)?)?
        .and_hms_micro_opt(part(hour, 2)?, part(minute, 2)?, part(second, 2)?, micro)
}

/// A state as a row holds it: its text, and its number for Number input and Aggregation.
struct State {
    text: String,
    number: Option<f64>,
}

impl PartialEq for State {
    /// Upstream compares floats for Number input (`5` equals `5.0`), strings for Text.
    fn eq(&self, other: &Self) -> bool {
        match (self.number, other.number) {
            (Some(a), Some(b)) => a == b,
            _ => self.text == other.text,
        }
    }
}

struct Columns {
    create: usize,
    state: usize,
    start: Option<usize>,
    end: Option<usize>,
    aggregation_type: Option<usize>,
    time_window_size: Option<usize>,
    count: usize,
}

fn columns(header: &[Vec<u8>], policy: ProcessingPolicyType) -> Result<Columns, CsvError> {
    let mut names: Vec<&str> = Vec::with_capacity(header.len());
    for field in header {
        let name = std::str::from_utf8(field)
            .map_err(|_| error(0, "Header: the header row is not valid UTF-8"))?;
        if names.contains(&name) {
            return Err(error(
                0,
                format!("Header: the column '{name}' appears twice"),
            ));
        }
        names.push(name);
    }
    let find = |n: &str| names.iter().position(|c| *c == n);
    let need = |n: &str| {
        find(n).ok_or_else(|| {
            error(
                0,
                format!(
                    "Header: the column '{n}' is missing (found: {})",
                    names.join(", ")
                ),
            )
        })
    };
    let aggregation = policy == ProcessingPolicyType::Aggregation;
    Ok(Columns {
        create: need("create_datetime")?,
        state: need("state")?,
        start: if aggregation {
            Some(need("start_window_datetime")?)
        } else {
            None
        },
        end: if aggregation {
            Some(need("end_window_datetime")?)
        } else {
            None
        },
        aggregation_type: find("aggregation_type").filter(|_| aggregation),
        time_window_size: find("time_window_size").filter(|_| aggregation),
        count: names.len(),
    })
}

/// Seconds between two datetimes as Python's `timedelta.total_seconds()`.
fn seconds(later: NaiveDateTime, earlier: NaiveDateTime) -> f64 {
    let d = later - earlier;
    d.num_microseconds()
        .map_or(d.num_seconds() as f64, |us| us as f64 / 1e6)
}

/// Re-validates an exported CSV against the node's `config`, as upstream's
/// `set_data_pipe_data_csv` does, and gives the rows to store for `node` (all or nothing).
/// `now` is the import's time (TimeWindow rows must lie in the last window). LastValue keeps
/// no rows: refused with upstream's message.
pub fn decode(
    text: &[u8],
    config: &DataPipeConfig,
    node: Uuid,
    now: NaiveDateTime,
    limits: CsvLimits,
) -> Result<CsvRows, CsvError> {
    let pp = &config.processing_policy;
    let policy = pp.policy_type;
    if policy == ProcessingPolicyType::LastValue {
        return Err(error(0, "LastValue type is not supported on this function"));
    }
    if text.len() > limits.max_bytes {
        return Err(error(
            0,
            format!("The file is larger than {} bytes", limits.max_bytes),
        ));
    }
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut records = Records { data: text, pos: 0 };
    let header = match records.next_record() {
        None => {
            return Err(error(
                0,
                "The file is empty: expected a header row and data rows",
            ))
        }
        Some(Err(e)) => return Err(error(0, format!("Header: {e}"))),
        Some(Ok(h)) => h,
    };
    let cols = columns(&header, policy)?;
    let window = pp.time_window_size.unwrap_or(0);
    let step = pp.time_window_step.unwrap_or(window);
    let f = &config.filters;
    let ap = &config.active_period;
    let number_input = f.type_input_value == TypeInputValue::Number;
    let keeps_values = matches!(
        policy,
        ProcessingPolicyType::NRecords | ProcessingPolicyType::TimeWindow
    );

    let mut out = match policy {
        ProcessingPolicyType::NRecords => CsvRows::NRecords(Vec::new()),
        ProcessingPolicyType::TimeWindow => CsvRows::TimeWindow(Vec::new()),
        _ => CsvRows::Aggregation(Vec::new()),
    };
    let mut previous_create: Option<NaiveDateTime> = None;
    let mut previous_state: Option<State> = None;
    let mut previous_end: Option<NaiveDateTime> = None;
    let mut n = 0;
    while let Some(record) = records.next_record() {
        n += 1;
        let fail = |m: &str| Err(error(n, format!("Row {n}: {m}")));
        if n > limits.max_rows {
            return fail(&format!("the file has more than {} rows", limits.max_rows));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if record.len() != cols.count {
            return fail(&format!(
                "{} fields, but the header has {}",
                record.len(),
                cols.count
            ));
        }
        let mut row: Vec<&str> = Vec::with_capacity(record.len());
        for field in &record {
            match std::str::from_utf8(field) {
                Ok(s) => row.push(s),
                Err(_) => return fail("the row is not valid UTF-8"),
            }
        }
        let datetime = |col: usize, name: &str| {
            parse_datetime(row[col]).ok_or_else(|| {
                error(
                    n,
                    format!("Row {n}: {name} is not a datetime like 2024-01-31 12:00:00[.ffffff]"),
                )
            })
        };

        let create = datetime(cols.create, "create_datetime")?;
        if previous_create.is_some_and(|p| create < p) {
            return fail("create_datetime < previous_create_datetime");
        }

        let raw = row[cols.state];
        let state = if number_input || policy == ProcessingPolicyType::Aggregation {
            let trimmed = raw.trim();
            match trimmed.parse::<f64>() {
                Ok(v) if v.is_finite() => State {
                    text: trimmed.to_string(),
                    number: Some(v),
                },
                Ok(_) => return fail("state is not a finite number"),
                Err(_) => return fail("state is not a valid python float"),
            }
        } else {
            State {
                text: raw.to_string(),
                number: None,
            }
        };

        let end = match cols.end {
            Some(c) => Some(datetime(c, "end_window_datetime")?),
            None => None,
        };

        match ap.kind {
            ActivePeriodType::Permanent => {}
            ActivePeriodType::FromDate => {
                if ap.start.is_some_and(|s| s > create) {
                    return fail("create_datetime is outside the start of the active period");
                }
            }
            ActivePeriodType::ToDate => {
                if ap.end.is_some_and(|e| e < create) {
                    return fail("create_datetime is outside the end of the active period");
                }
            }
            ActivePeriodType::DateRange => {
                if ap.start.is_some_and(|s| s > create) || ap.end.is_some_and(|e| e < create) {
                    return fail(
                        "create_datetime is outside the start or end of the active period",
                    );
                }
            }
        }

        if let Some(kind) = f.type_value_filtering {
            let listed = f.filtering_values.iter().flatten().any(|v| {
                if number_input {
                    v.as_f64().is_some() && v.as_f64() == state.number
                } else {
                    v.as_text() == state.text
                }
            });
            match kind {
                FilterTypeValueFiltering::WhiteList if !listed => {
                    return fail("state not in whitelist")
                }
                FilterTypeValueFiltering::BlackList if listed => return fail("state in blacklist"),
                _ => {}
            }
        }

        if let (true, Some(kind), Some(v)) = (number_input, f.type_value_threshold, state.number) {
            let below = f.threshold_min.is_some_and(|m| v < m as f64);
            let above = f.threshold_max.is_some_and(|m| v > m as f64);
            match kind {
                FilterTypeValueThreshold::Min if below => return fail("state < threshold_min"),
                FilterTypeValueThreshold::Max if above => return fail("state > threshold_max"),
                FilterTypeValueThreshold::Range if below || above => {
                    return fail("state < threshold_min or state > threshold_max")
                }
                _ => {}
            }
        }

        if keeps_values {
            if let Some(p) = previous_create {
                if f.max_rate > 0 && p + chrono::Duration::seconds(f.max_rate.into()) > create {
                    return fail("the time difference between the previous entry and the current one, less than max_rate");
                }
            }
            if f.last_unique_check && previous_state.as_ref() == Some(&state) {
                return fail("previous_state is identical current state");
            }
        }

        let size_text = match (policy, state.number) {
            (ProcessingPolicyType::Aggregation, Some(v)) => py_float_repr(v),
            _ => state.text.clone(),
        };
        let size = size_text.len();
        if f.max_size > 0 && size > f.max_size as usize {
            return fail("length state > max_size");
        }

        let label = policy.as_str();
        match &mut out {
            CsvRows::TimeWindow(rows) => {
                let length = chrono::Duration::seconds(window.into());
                if create > now || create < now - length {
                    return fail(&format!("For {label}: create_datetime is outside the range of valid values from time_window_size"));
                }
                rows.push(WindowEntry {
                    unit_node_uuid: node,
                    state: state.text.clone(),
                    state_type: f.type_input_value,
                    create_datetime: create,
                    expiration_datetime: create + length,
                    size: size as u32,
                });
            }
            CsvRows::NRecords(rows) => {
                let max = pp.n_records_count.unwrap_or(0);
                if n > max as usize {
                    return fail(&format!(
                        "For {label}: number of records exceeds limit n_records_count"
                    ));
                }
                rows.push(NRecordsEntry {
                    unit_node_uuid: node,
                    state: state.text.clone(),
                    state_type: f.type_input_value,
                    create_datetime: create,
                    max_count: max,
                    size: size as u32,
                });
            }
            CsvRows::Aggregation(rows) => {
                let start = datetime(cols.start.unwrap_or(0), "start_window_datetime")?;
                let end = end.unwrap_or(start);
                let whole_minutes = step.is_multiple_of(60);
                if whole_minutes && (start.second() != 0 || end.second() != 0) {
                    return fail(&format!(
                        "For {label}: start_window_datetime or end_window_datetime have seconds"
                    ));
                }
                if end < start {
                    return fail(&format!(
                        "For {label}: end_window_datetime < start_window_datetime"
                    ));
                }
                if seconds(create, end).abs() >= WINDOW_SIZES[0] as f64 {
                    return fail(&format!("For {label}: The difference between create_datetime and end_window_datetime is greater than the minimum time_window_sizes"));
                }
                let length = seconds(end, start);
                if length != window as f64 {
                    return fail(&format!("For {label}: config time_window_size is not {} end_window_datetime - start_window_datetime", py_float_repr(length)));
                }
                if let Some(p) = previous_end {
                    let apart = seconds(end, p);
                    if apart.rem_euclid(step as f64) != 0.0 {
                        return fail(&if pp.time_window_step.is_some() {
                            format!("For {label}: {} seconds between end_window_datetime and the previous end_window_datetime is not a multiple of time_window_step", py_float_repr(apart))
                        } else {
                            format!("For {label}: config time_window_size is not {} end_window_datetime - previous_end_window_datetime", py_float_repr(apart))
                        });
                    }
                }
                let epoch = end.and_utc();
                if epoch.timestamp_subsec_micros() != 0
                    || epoch.timestamp().rem_euclid(step.max(1) as i64) != 0
                {
                    let what = if pp.time_window_step.is_some() {
                        "time_window_step"
                    } else {
                        "time_window_size"
                    };
                    return fail(&format!("For {label}: end_window_datetime is not aligned to {what} (windows end at its multiples since 1970-01-01)"));
                }
                let function = pp.aggregation_functions;
                if let (Some(c), Some(function)) = (cols.aggregation_type, function) {
                    if row[c] != function.as_str() {
                        return fail(&format!(
                            "For {label}: aggregation_type is {}, the config's aggregation_functions is {function}",
                            row[c]
                        ));
                    }
                }
                if let Some(c) = cols.time_window_size {
                    if row[c].trim() != window.to_string() {
                        return fail(&format!(
                            "For {label}: time_window_size is {}, the config's is {window}",
                            row[c]
                        ));
                    }
                }
                let Some(function) = function else {
                    return fail("the config has no aggregation_functions");
                };
                rows.push(AggregationEntry {
                    unit_node_uuid: node,
                    state: state.number.unwrap_or(0.0),
                    aggregation_type: function,
                    time_window_size: window,
                    create_datetime: create,
                    start_window_datetime: start,
                    end_window_datetime: end,
                });
                previous_end = Some(end);
            }
        }
        previous_create = Some(create);
        previous_state = Some(state);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::datapipe::AggregationFunction;

    const LIMITS: CsvLimits = CsvLimits {
        max_bytes: 1 << 20,
        max_rows: 10_000,
    };

    fn node() -> Uuid {
        Uuid::from_u128(0x1234)
    }

    fn t(s: &str) -> NaiveDateTime {
        parse_datetime(s).unwrap()
    }

    /// A config from its sections' YAML (Permanent unless `ap` says otherwise).
    fn config(ap: &str, filters: &str, policy: &str) -> DataPipeConfig {
        let ap = if ap.is_empty() {
            "  type: Permanent\n"
        } else {
            ap
        };
        let mut f = filters.to_string();
        for default in ["max_rate", "max_size"] {
            if !f.contains(default) {
                f.push_str(&format!("  {default}: 0\n"));
            }
        }
        let text = format!("active_period:\n{ap}filters:\n{f}processing_policy:\n{policy}");
        DataPipeConfig::parse_yaml(&text, 262_144).unwrap_or_else(|e| panic!("{text}\n{e:?}"))
    }

    const TEXT: &str = "  type_input_value: Text\n";
    const NUMBER: &str = "  type_input_value: Number\n";
    const NREC: &str = "  policy_type: NRecords\n  n_records_count: 1024\n";
    const WINDOW: &str = "  policy_type: TimeWindow\n  time_window_size: 3600\n";
    const AGG: &str =
        "  policy_type: Aggregation\n  time_window_size: 3600\n  aggregation_functions: Avg\n";

    fn decode_at(text: &str, c: &DataPipeConfig, now: &str) -> Result<CsvRows, CsvError> {
        decode(text.as_bytes(), c, node(), t(now), LIMITS)
    }

    fn dec(text: &str, c: &DataPipeConfig) -> Result<CsvRows, CsvError> {
        decode_at(text, c, "2024-01-01 12:00:00")
    }

    #[test]
    fn exports_like_python_csv_writer() {
        let rows = vec![
            NRecordsEntry {
                unit_node_uuid: node(),
                state: "a,b".into(),
                state_type: TypeInputValue::Text,
                create_datetime: t("2024-01-01 10:00:00"),
                max_count: 3,
                size: 3,
            },
            NRecordsEntry {
                unit_node_uuid: node(),
                state: "x\"y\nz".into(),
                state_type: TypeInputValue::Text,
                create_datetime: t("2024-01-01 10:00:01.5"),
                max_count: 3,
                size: 5,
            },
        ];
        assert_eq!(
            encode_n_records(&rows),
            "unit_node_uuid,state,state_type,create_datetime,max_count,size\r\n\
             00000000-0000-0000-0000-000000001234,\"a,b\",Text,2024-01-01 10:00:00,3,3\r\n\
             00000000-0000-0000-0000-000000001234,\"x\"\"y\nz\",Text,2024-01-01 10:00:01.500000,3,5\r\n"
        );
        let windows = vec![WindowEntry {
            unit_node_uuid: node(),
            state: "21.5".into(),
            state_type: TypeInputValue::Number,
            create_datetime: t("2024-01-01 10:00:00"),
            expiration_datetime: t("2024-01-01 11:00:00"),
            size: 4,
        }];
        assert_eq!(
            encode_windows(&windows),
            "unit_node_uuid,state,state_type,create_datetime,expiration_datetime,size\r\n\
             00000000-0000-0000-0000-000000001234,21.5,Number,2024-01-01 10:00:00,2024-01-01 11:00:00,4\r\n"
        );
        let aggregates = vec![AggregationEntry {
            unit_node_uuid: node(),
            state: 5.0,
            aggregation_type: AggregationFunction::Sum,
            time_window_size: 3600,
            create_datetime: t("2024-01-01 11:00:01"),
            start_window_datetime: t("2024-01-01 10:00:00"),
            end_window_datetime: t("2024-01-01 11:00:00"),
        }];
        assert_eq!(
            encode_aggregations(&aggregates),
            "unit_node_uuid,state,aggregation_type,time_window_size,create_datetime,start_window_datetime,end_window_datetime\r\n\
             00000000-0000-0000-0000-000000001234,5.0,Sum,3600,2024-01-01 11:00:01,2024-01-01 10:00:00,2024-01-01 11:00:00\r\n"
        );
        assert_eq!(
            encode_aggregations(&[]),
            format!("{}\r\n", AGGREGATION_HEADER.join(","))
        );
    }

    #[test]
    fn round_trips_every_policy() {
        let other = Uuid::from_u128(0x99);
        let n = vec![
            NRecordsEntry {
                unit_node_uuid: other,
                state: "line\nbreak, \"quoted\" é".into(),
                state_type: TypeInputValue::Text,
                create_datetime: t("2024-01-01 10:00:00"),
                max_count: 1024,
                size: 23,
            },
            NRecordsEntry {
                unit_node_uuid: other,
                state: "".into(),
                state_type: TypeInputValue::Text,
                create_datetime: t("2024-01-01 10:00:00.25"),
                max_count: 1024,
                size: 0,
            },
        ];
        let got = dec(&encode_n_records(&n), &config("", TEXT, NREC)).unwrap();
        let want: Vec<_> = n
            .iter()
            .cloned()
            .map(|mut r| {
                r.unit_node_uuid = node();
                r
            })
            .collect();
        assert_eq!(got, CsvRows::NRecords(want));

        let w = vec![WindowEntry {
            unit_node_uuid: node(),
            state: "5".into(),
            state_type: TypeInputValue::Number,
            create_datetime: t("2024-01-01 11:30:00"),
            expiration_datetime: t("2024-01-01 12:30:00"),
            size: 1,
        }];
        let got = dec(&encode_windows(&w), &config("", NUMBER, WINDOW)).unwrap();
        assert_eq!(got, CsvRows::TimeWindow(w));

        let window = |end: &str, state: f64| AggregationEntry {
            unit_node_uuid: node(),
            state,
            aggregation_type: AggregationFunction::Avg,
            time_window_size: 3600,
            create_datetime: t(end) + chrono::Duration::seconds(1),
            start_window_datetime: t(end) - chrono::Duration::seconds(3600),
            end_window_datetime: t(end),
        };
        let a = vec![
            window("2024-01-01 10:00:00", 21.5),
            window("2024-01-01 11:00:00", -0.1),
            window("2024-01-01 14:00:00", 1e-7),
        ];
        let got = dec(&encode_aggregations(&a), &config("", NUMBER, AGG)).unwrap();
        assert_eq!(got, CsvRows::Aggregation(a));

        // sliding: windows a step apart
        let sliding = format!("{AGG}  time_window_step: 600\n");
        let s: Vec<_> = [
            "2024-01-01 10:00:00",
            "2024-01-01 10:10:00",
            "2024-01-01 10:30:00",
        ]
        .iter()
        .map(|e| window(e, 1.0))
        .collect();
        let got = dec(&encode_aggregations(&s), &config("", NUMBER, &sliding)).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn reads_what_people_and_upstream_write() {
        // BOM, CRLF and LF mixed, empty lines, a quoted line break, newer upstream columns,
        // `T` between date and time, 1-digit parts and a 3-digit fraction as strptime takes
        let text =
            "\u{feff}id,uuid,unit_node_uuid,state,state_type,create_datetime,max_count,size\r\n\
                    1,u,x,\"a\r\nb\",Text,2024-01-01T10:00:00,3,4\n\
                    \r\n\
                    2,u,x,c,Text,2024-1-1 10:0:1.250,3,1\n";
        let got = dec(text, &config("", TEXT, NREC)).unwrap();
        let CsvRows::NRecords(rows) = got else {
            panic!()
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, "a\r\nb");
        assert_eq!(rows[0].size, 4);
        assert_eq!(rows[0].max_count, 1024);
        assert_eq!(rows[1].create_datetime, t("2024-01-01 10:00:01.25"));
        // a BOM before the first column's name
        let got = dec(
            "\u{feff}create_datetime,state\r\n2024-01-01 10:00:00,a\r\n",
            &config("", TEXT, NREC),
        );
        assert_eq!(got.unwrap().len(), 1);
        // `"ab"c` is `abc`, as Python's reader has it; a trailing comma is an empty field
        let got = dec(
            "create_datetime,state,x\n2024-01-01 10:00:00,\"ab\"c,\n",
            &config("", TEXT, NREC),
        )
        .unwrap();
        let CsvRows::NRecords(rows) = got else {
            panic!()
        };
        assert_eq!(rows[0].state, "abc");
        // Number states are kept as written (trimmed), compared as numbers
        let got = dec(
            "create_datetime,state\n2024-01-01 10:00:00, 5 \n2024-01-01 10:00:01,1e3\n",
            &config("", NUMBER, NREC),
        )
        .unwrap();
        let CsvRows::NRecords(rows) = got else {
            panic!()
        };
        assert_eq!(
            (rows[0].state.as_str(), rows[1].state.as_str()),
            ("5", "1e3")
        );
        // an exactly-at-the-limit max_rate passes, an exact active-period bound too
        let c = config(
            "  type: DateRange\n  start: 2024-01-01 10:00:00\n  end: 2024-01-01 10:00:10\n",
            "  type_input_value: Text\n  max_rate: 10\n",
            NREC,
        );
        assert!(dec(
            "create_datetime,state\n2024-01-01 10:00:00,a\n2024-01-01 10:00:10,b\n",
            &c
        )
        .is_ok());
        // equal timestamps are not decreasing
        assert!(dec(
            "create_datetime,state\n2024-01-01 10:00:00,a\n2024-01-01 10:00:00,b\n",
            &config("", TEXT, NREC)
        )
        .is_ok());
        // a sliding step below a minute: window ends may have seconds
        let c = config("", NUMBER, "  policy_type: Aggregation\n  time_window_size: 60\n  time_window_step: 30\n  aggregation_functions: Max\n");
        let text = "create_datetime,state,start_window_datetime,end_window_datetime\n\
                    2024-01-01 10:00:31,1,2024-01-01 09:59:30,2024-01-01 10:00:30\n\
                    2024-01-01 10:01:01,2,2024-01-01 10:00:00,2024-01-01 10:01:00\n";
        assert_eq!(dec(text, &c).unwrap().len(), 2);
    }

    /// Every refusal, with its row.
    #[test]
    fn refusals() {
        let h = "create_datetime,state\n";
        let agg_h = "create_datetime,state,start_window_datetime,end_window_datetime\n";
        let num_nrec = config("", NUMBER, NREC);
        let text_nrec = config("", TEXT, NREC);
        let agg = config("", NUMBER, AGG);
        let cases: Vec<(&str, DataPipeConfig, String, usize, &str)> = vec![
            ("LastValue", config("", TEXT, "  policy_type: LastValue\n"), format!("{h}2024-01-01 10:00:00,a\n"), 0, "LastValue type is not supported on this function"),
            ("empty", text_nrec.clone(), String::new(), 0, "The file is empty: expected a header row and data rows"),
            ("only a BOM and blank lines", text_nrec.clone(), "\u{feff}\r\n\n".into(), 0, "The file is empty: expected a header row and data rows"),
            ("missing column", text_nrec.clone(), "create_datetime\n2024-01-01 10:00:00\n".into(), 0, "Header: the column 'state' is missing (found: create_datetime)"),
            ("missing window column", agg.clone(), format!("{h}2024-01-01 10:00:00,1\n"), 0, "Header: the column 'start_window_datetime' is missing (found: create_datetime, state)"),
            ("duplicate column", text_nrec.clone(), "state,create_datetime,state\n".into(), 0, "Header: the column 'state' appears twice"),
            ("header not closed", text_nrec.clone(), "\"state,create_datetime\n".into(), 0, "Header: a quoted field is not closed before the end of the file"),
            ("short row", text_nrec.clone(), format!("{h}2024-01-01 10:00:00\n"), 1, "Row 1: 1 fields, but the header has 2"),
            ("long row", text_nrec.clone(), format!("{h}2024-01-01 10:00:00,a\n2024-01-01 10:00:00,a,b\n"), 2, "Row 2: 3 fields, but the header has 2"),
            ("quote not closed", text_nrec.clone(), format!("{h}2024-01-01 10:00:00,\"a\n"), 1, "Row 1: a quoted field is not closed before the end of the file"),
            ("bad datetime", text_nrec.clone(), format!("{h}2024-01-01,a\n"), 1, "Row 1: create_datetime is not a datetime like 2024-01-31 12:00:00[.ffffff]"),
            ("bad datetime month", text_nrec.clone(), format!("{h}2024-13-01 10:00:00,a\n"), 1, "Row 1: create_datetime is not a datetime like 2024-01-31 12:00:00[.ffffff]"),
            ("seven fraction digits", text_nrec.clone(), format!("{h}2024-01-01 10:00:00.1234567,a\n"), 1, "Row 1: create_datetime is not a datetime like 2024-01-31 12:00:00[.ffffff]"),
            ("decreasing", text_nrec.clone(), format!("{h}2024-01-01 10:00:01,a\n2024-01-01 10:00:00,b\n"), 2, "Row 2: create_datetime < previous_create_datetime"),
            ("not a float", num_nrec.clone(), format!("{h}2024-01-01 10:00:00,abc\n"), 1, "Row 1: state is not a valid python float"),
            ("underscores", num_nrec.clone(), format!("{h}2024-01-01 10:00:00,1_000\n"), 1, "Row 1: state is not a valid python float"),
            ("NaN", num_nrec.clone(), format!("{h}2024-01-01 10:00:00,nan\n"), 1, "Row 1: state is not a finite number"),
            ("inf", num_nrec.clone(), format!("{h}2024-01-01 10:00:00,-inf\n"), 1, "Row 1: state is not a finite number"),
            ("1e400", num_nrec.clone(), format!("{h}2024-01-01 10:00:00,1e400\n"), 1, "Row 1: state is not a finite number"),
            ("before FromDate", config("  type: FromDate\n  start: 2024-01-01 10:00:00\n", TEXT, NREC), format!("{h}2024-01-01 09:59:59.999999,a\n"), 1, "Row 1: create_datetime is outside the start of the active period"),
            ("after ToDate", config("  type: ToDate\n  end: 2024-01-01 10:00:00\n", TEXT, NREC), format!("{h}2024-01-01 10:00:00,a\n2024-01-01 10:00:01,b\n"), 2, "Row 2: create_datetime is outside the end of the active period"),
            ("outside DateRange", config("  type: DateRange\n  start: 2024-01-01 10:00:00\n  end: 2024-01-01 11:00:00\n", TEXT, NREC), format!("{h}2024-01-01 11:00:01,a\n"), 1, "Row 1: create_datetime is outside the start or end of the active period"),
            ("not in whitelist", config("", "  type_input_value: Text\n  type_value_filtering: WhiteList\n  filtering_values: ['5']\n", NREC), format!("{h}2024-01-01 10:00:00,5\n2024-01-01 10:00:01,5.0\n"), 2, "Row 2: state not in whitelist"),
            ("empty whitelist", config("", "  type_input_value: Text\n  type_value_filtering: WhiteList\n", NREC), format!("{h}2024-01-01 10:00:00,a\n"), 1, "Row 1: state not in whitelist"),
            ("in blacklist", config("", "  type_input_value: Number\n  type_value_filtering: BlackList\n  filtering_values: [5, 7.5]\n", NREC), format!("{h}2024-01-01 10:00:00,6\n2024-01-01 10:00:01,7.50\n"), 2, "Row 2: state in blacklist"),
            ("number whitelist compares numbers", config("", "  type_input_value: Number\n  type_value_filtering: WhiteList\n  filtering_values: [5]\n", NREC), format!("{h}2024-01-01 10:00:00,5.0\n2024-01-01 10:00:01,5.1\n"), 2, "Row 2: state not in whitelist"),
            ("below min", config("", "  type_input_value: Number\n  type_value_threshold: Min\n  threshold_min: 0\n", NREC), format!("{h}2024-01-01 10:00:00,0\n2024-01-01 10:00:01,-0.5\n"), 2, "Row 2: state < threshold_min"),
            ("above max", config("", "  type_input_value: Number\n  type_value_threshold: Max\n  threshold_max: 10\n", NREC), format!("{h}2024-01-01 10:00:00,10\n2024-01-01 10:00:01,10.01\n"), 2, "Row 2: state > threshold_max"),
            ("outside range", config("", "  type_input_value: Number\n  type_value_threshold: Range\n  threshold_min: 0\n  threshold_max: 10\n", NREC), format!("{h}2024-01-01 10:00:00,-1\n"), 1, "Row 1: state < threshold_min or state > threshold_max"),
            ("too fast", config("", "  type_input_value: Text\n  max_rate: 10\n", NREC), format!("{h}2024-01-01 10:00:00,a\n2024-01-01 10:00:09.999999,b\n"), 2, "Row 2: the time difference between the previous entry and the current one, less than max_rate"),
            ("repeated", config("", "  type_input_value: Text\n  last_unique_check: true\n", NREC), format!("{h}2024-01-01 10:00:00,a\n2024-01-01 10:00:01,b\n2024-01-01 10:00:02,b\n"), 3, "Row 3: previous_state is identical current state"),
            ("repeated number", config("", "  type_input_value: Number\n  last_unique_check: true\n", config_window()), format!("{h}2024-01-01 11:00:00,5\n2024-01-01 11:00:01,5.0\n"), 2, "Row 2: previous_state is identical current state"),
            ("too long", config("", "  type_input_value: Text\n  max_size: 2\n", NREC), format!("{h}2024-01-01 10:00:00,ab\n2024-01-01 10:00:01,é.\n"), 2, "Row 2: length state > max_size"),
            ("too many records", config("", TEXT, "  policy_type: NRecords\n  n_records_count: 2\n"), format!("{h}2024-01-01 10:00:00,a\n2024-01-01 10:00:01,b\n2024-01-01 10:00:02,c\n"), 3, "Row 3: For NRecords: number of records exceeds limit n_records_count"),
            ("window in the future", config("", TEXT, WINDOW), format!("{h}2024-01-01 12:00:00.000001,a\n"), 1, "Row 1: For TimeWindow: create_datetime is outside the range of valid values from time_window_size"),
            ("window expired", config("", TEXT, WINDOW), format!("{h}2024-01-01 11:00:00,a\n2024-01-01 10:59:59,b\n"), 2, "Row 2: create_datetime < previous_create_datetime"),
            ("window expired first row", config("", TEXT, WINDOW), format!("{h}2024-01-01 10:59:59,a\n"), 1, "Row 1: For TimeWindow: create_datetime is outside the range of valid values from time_window_size"),
            ("aggregate not a float", config("", TEXT, AGG), format!("{agg_h}2024-01-01 11:00:00,abc,2024-01-01 10:00:00,2024-01-01 11:00:00\n"), 1, "Row 1: state is not a valid python float"),
            ("window seconds", agg.clone(), format!("{agg_h}2024-01-01 11:00:00,1,2024-01-01 10:00:01,2024-01-01 11:00:01\n"), 1, "Row 1: For Aggregation: start_window_datetime or end_window_datetime have seconds"),
            ("window reversed", agg.clone(), format!("{agg_h}2024-01-01 10:00:00,1,2024-01-01 11:00:00,2024-01-01 10:00:00\n"), 1, "Row 1: For Aggregation: end_window_datetime < start_window_datetime"),
            ("created late", agg.clone(), format!("{agg_h}2024-01-01 11:01:00,1,2024-01-01 10:00:00,2024-01-01 11:00:00\n"), 1, "Row 1: For Aggregation: The difference between create_datetime and end_window_datetime is greater than the minimum time_window_sizes"),
            ("window size", agg.clone(), format!("{agg_h}2024-01-01 11:00:00,1,2024-01-01 10:30:00,2024-01-01 11:00:00\n"), 1, "Row 1: For Aggregation: config time_window_size is not 1800.0 end_window_datetime - start_window_datetime"),
            ("windows apart", agg.clone(), format!("{agg_h}2024-01-01 11:00:00,1,2024-01-01 10:00:00,2024-01-01 11:00:00\n2024-01-01 12:30:00,1,2024-01-01 11:30:00,2024-01-01 12:30:00\n"), 2, "Row 2: For Aggregation: config time_window_size is not 5400.0 end_window_datetime - previous_end_window_datetime"),
            ("window not aligned", agg.clone(), format!("{agg_h}2024-01-01 11:30:00,1,2024-01-01 10:30:00,2024-01-01 11:30:00\n"), 1, "Row 1: For Aggregation: end_window_datetime is not aligned to time_window_size (windows end at its multiples since 1970-01-01)"),
            ("sliding windows apart", config("", NUMBER, &format!("{AGG}  time_window_step: 600\n")), format!("{agg_h}2024-01-01 11:00:00,1,2024-01-01 10:00:00,2024-01-01 11:00:00\n2024-01-01 11:05:00,1,2024-01-01 10:05:00,2024-01-01 11:05:00\n"), 2, "Row 2: For Aggregation: 300.0 seconds between end_window_datetime and the previous end_window_datetime is not a multiple of time_window_step"),
            ("another function", agg.clone(), "create_datetime,state,aggregation_type,start_window_datetime,end_window_datetime\n2024-01-01 11:00:00,1,Sum,2024-01-01 10:00:00,2024-01-01 11:00:00\n".into(), 1, "Row 1: For Aggregation: aggregation_type is Sum, the config's aggregation_functions is Avg"),
            ("another size", agg.clone(), "create_datetime,state,time_window_size,start_window_datetime,end_window_datetime\n2024-01-01 11:00:00,1,60,2024-01-01 10:00:00,2024-01-01 11:00:00\n".into(), 1, "Row 1: For Aggregation: time_window_size is 60, the config's is 3600"),
            ("bad end", agg.clone(), format!("{agg_h}2024-01-01 11:00:00,1,2024-01-01 10:00:00,soon\n"), 1, "Row 1: end_window_datetime is not a datetime like 2024-01-31 12:00:00[.ffffff]"),
        ];
        let mut failed = Vec::new();
        for (name, c, text, row, message) in cases {
            let got = dec(&text, &c);
            let want = Err(CsvError {
                row,
                message: message.to_string(),
            });
            if got != want {
                failed.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    fn config_window() -> &'static str {
        WINDOW
    }

    #[test]
    fn bounded_and_byte_safe() {
        let c = config("", TEXT, NREC);
        let small = CsvLimits {
            max_bytes: 10,
            max_rows: 2,
        };
        let err = decode(
            b"create_datetime,state\n",
            &c,
            node(),
            t("2024-01-01 12:00:00"),
            small,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CsvError {
                row: 0,
                message: "The file is larger than 10 bytes".into()
            }
        );
        let rows = CsvLimits {
            max_bytes: 1 << 20,
            max_rows: 2,
        };
        let text = "create_datetime,state\n2024-01-01 10:00:00,a\n2024-01-01 10:00:01,b\n2024-01-01 10:00:02,c\n";
        let err = decode(text.as_bytes(), &c, node(), t("2024-01-01 12:00:00"), rows).unwrap_err();
        assert_eq!(
            err,
            CsvError {
                row: 3,
                message: "Row 3: the file has more than 2 rows".into()
            }
        );
        let mut bad =
            b"create_datetime,state\n2024-01-01 10:00:00,a\n2024-01-01 10:00:01,".to_vec();
        bad.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let err = decode(&bad, &c, node(), t("2024-01-01 12:00:00"), LIMITS).unwrap_err();
        assert_eq!(
            err,
            CsvError {
                row: 2,
                message: "Row 2: the row is not valid UTF-8".into()
            }
        );
        let err = decode(
            &[0xc3, b',', b's', b'\n'],
            &c,
            node(),
            t("2024-01-01 12:00:00"),
            LIMITS,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CsvError {
                row: 0,
                message: "Header: the header row is not valid UTF-8".into()
            }
        );
    }

    proptest! {
        /// Arbitrary bytes: an answer, never a panic.
        #[test]
        fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let c = config("", TEXT, NREC);
            let _ = decode(&bytes, &c, node(), t("2024-01-01 12:00:00"), LIMITS);
            let a = config("", NUMBER, AGG);
            let _ = decode(&bytes, &a, node(), t("2024-01-01 12:00:00"), LIMITS);
        }

        /// Any states and increasing times survive export and import.
        #[test]
        fn n_records_round_trip(
            rows in prop::collection::vec((any::<String>(), 0i64..1_000_000, 0u32..1_000_000), 0..20)
        ) {
            let mut at = t("2024-01-01 00:00:00");
            let entries: Vec<NRecordsEntry> = rows
                .into_iter()
                .map(|(state, step, micro)| {
                    at += chrono::Duration::seconds(step) + chrono::Duration::microseconds(micro.into());
                    NRecordsEntry {
                        unit_node_uuid: node(),
                        size: state.len() as u32,
                        state,
                        state_type: TypeInputValue::Text,
                        create_datetime: at,
                        max_count: 1024,
                    }
                })
                .collect();
            let got = dec(&encode_n_records(&entries), &config("", TEXT, NREC));
            prop_assert_eq!(got, Ok(CsvRows::NRecords(entries)));
        }
    }
}
