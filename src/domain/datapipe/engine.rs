//! The data pipe engine: one node's pipeline, turning the node's values into the rows a policy
//! keeps (DATAPIPE.md "Run-time semantics" and "Beyond upstream"). Pure: no I/O, no clock, no
//! async; time comes in as `now` (UTC). The MQTT core's shards own one [`Pipeline`] per node
//! with an active config, and drive it:
//!
//! - [`Pipeline::offer`] for every value of the node (the raw MQTT payload), which answers a
//!   [`Verdict`] and pushes the rows to keep onto `out`;
//! - [`Pipeline::tick`] when [`Pipeline::next_deadline`] has come (ask again after every call:
//!   a value can bring the deadline forward; `None` means none until a value comes);
//! - [`Pipeline::reconfigure`] when the node's config changes (the open state is kept, see
//!   "Resizing");
//! - [`Pipeline::snapshot`] at a clean stop and [`Pipeline::restore`] at start.
//!
//! Time never goes backward inside a pipeline: a `now` earlier than one already seen is taken
//! as that one (rows stay in order, which upstream's CSV import demands, and a clock stepped
//! back cannot reopen a closed window).
//!
//! # The order a value goes through (upstream `pepeunit_data_pipe`, `processor.go`)
//!
//! 1. The config can run (a policy missing its numbers: [`DropReason::Config`]) and the active
//!    period holds: strictly after `start`, strictly before `end` ([`DropReason::Inactive`]).
//! 2. Filters, all of which must pass (so their order only decides which reason a value
//!    failing several is dropped for; the byte-level ones come first, so a huge payload is
//!    refused before anything reads it): `max_rate` (seconds since the last *accepted* value;
//!    exactly `max_rate` passes; 0 is off), `max_size` (bytes of the raw payload; 0 is off),
//!    UTF-8 ([`DropReason::NotText`]), for Number input a finite number
//!    ([`DropReason::NotNumber`], [`DropReason::NotFinite`]), the white/black list (a Text entry
//!    compares strings, a Number entry compares the value parsed as a number), the threshold
//!    (bounds inclusive; a value that is not a number passes, as upstream).
//! 3. Transformations. Number: multiplied by `multiplication_ratio`, then rounded to
//!    `round_decimal_point` decimals; Text: sliced. A Number's slice and a Text's ratio and
//!    rounding are ignored, as upstream.
//! 4. `last_unique_check` ([`DropReason::Repeat`]), then the policy.
//!
//! Only an accepted value updates the last accepted time (`max_rate`) and the last value
//! (`last_unique_check`), as upstream, whose node state is written after the policy succeeds.
//!
//! # Where we differ from upstream, on purpose
//!
//! - **Number input keeps numbers only.** Upstream lets a value that does not parse through a
//!   Number pipeline untransformed (and stores it as a Number row) except under Aggregation;
//!   its own CSV import then refuses such rows ("state is not a valid python float"). Here it
//!   is dropped, counted. `NaN`, `inf`, `1e400` parse but are not finite: dropped, counted.
//! - **`last_unique_check` compares what is kept with what was last kept** (the transformed
//!   value; for Number input, as numbers, so `5` repeats `5.0`). Upstream compares the raw
//!   payload with the last *transformed* value, so with a ratio or rounding it never sees a
//!   repeat, and two raw values that round alike are both stored; upstream's CSV import, which
//!   compares stored rows (as floats for Number), would then refuse its own export. Without
//!   transformations both rules agree.
//! - **Text is sliced by characters, never splitting UTF-8** (upstream slices bytes), with
//!   Python's rules: negative indices count from the end, out-of-range ones are clamped,
//!   `start >= end` gives `""`. NUL characters of a Text value become U+FFFD (PostgreSQL TEXT
//!   cannot hold them; the MQTT core does the same for node state).
//! - **TimeWindow rows carry the input type** (upstream writes `Text` always).
//! - **An aggregate's `create_datetime` is its window's end** (upstream: the flush, up to a
//!   few seconds later), so results do not depend on when the shard's timer fired, and a
//!   restored pipeline writes exactly the rows an uninterrupted one would.
//!
//! Number formatting is upstream's Go: a ratio gives `%f` (six decimals: `3 * 1` is
//! `"3.000000"`), rounding gives `%.Nf` (`2.5` to 2 decimals is `"2.50"`; ties to even on the
//! exact binary value, like Go and Rust); a value neither multiplied nor rounded is kept as the
//! device sent it (`"5.50"` stays `"5.50"`). With both, the rounding reads the six-decimal text,
//! as upstream. A product that is not finite is dropped ([`DropReason::Overflow`]).
//!
//! # Policies
//!
//! LastValue: [`Output::LastValue`] (the node's state and `last_update_datetime`). NRecords:
//! one [`NRecordsEntry`] per value with `max_count` (the store keeps the last N), and every
//! [`trim_every`] of them an [`Output::TrimNRecords`] telling the store to cut the node back
//! to its newest N (readers take the newest N anyway). TimeWindow:
//! one [`WindowEntry`] per value expiring `time_window_size` seconds after it came. These keep
//! nothing in memory but the last accepted time and value.
//!
//! Aggregation: windows aligned to the step since the Unix epoch (upstream's Go truncates
//! since year 1, which is the same for every size dividing a day, i.e. every allowed size). A
//! value at `t` belongs to `[start, end)` when `start <= t < end`: a value exactly at a window's
//! end is in the next one. Every `step` seconds (`time_window_step`; `None` is upstream's
//! tumbling window, step = size) the window `[b - size, b)` ending at boundary `b` is emitted
//! once `now >= b`, as an [`AggregationEntry`] with `start = b - size`, `end = b`,
//! `time_window_size = size`. A window without values emits nothing (upstream makes windows
//! only for values). A value that is not a number (after transformations) is dropped, as
//! upstream's aggregation buffer refuses it. A Sum past `f64::MAX` is never written as `inf`:
//! the window is not emitted and [`Counters::windows_suppressed`] counts it; an Avg is computed
//! so that it cannot overflow.
//!
//! The open state is a list of per-step partial aggregates (`window.rs`): `{first, last,
//! count, sum, min, max}` per step slot holding values, never the raw values. Exact for Min,
//! Max and the count; the sum is compensated (Neumaier), so a Sum or Avg is within about one
//! rounding of the exact value whatever the grouping.
//!
//! # Resizing (`reconfigure` with a new size, step, function or policy)
//!
//! Windows due under the old config are emitted first. Then, with what was kept:
//!
//! - **A value counts in a window when it is known to be inside it.** Buckets made under the
//!   current step are exactly their slot; a bucket from an older step counts in a window when
//!   its first and last values both lie inside.
//! - **Grow the size:** kept values still count; values already dropped (older than the old
//!   size) are not brought back, so the first windows after a grow hold less than the full
//!   size.
//! - **Shrink the size:** values older than the new size no longer count; the rest do.
//! - **Step to a multiple of the old step** (e.g. 60 s to 300 s, or tumbling 1 h to 2 h):
//!   buckets merge exactly, every window is as if the pipeline had always run the new step over
//!   the kept values.
//! - **Step to a finer or unrelated step** (e.g. tumbling 1 h to 15 min): a bucket whose values
//!   all fall in one new slot becomes that slot's; one that straddles new slots counts only in
//!   windows that hold both its ends (a tumbling window never does: its values are lost, since
//!   they cannot be attributed). Windows of the new step ending after the last boundary dealt
//!   with, up to `now`, are emitted at once when they hold values.
//! - **Function change** (Avg, Min, Max, Sum): every bucket holds all four, so the open windows
//!   emit the new function over all their values.
//! - **NRecords count, TimeWindow size:** nothing is held in memory; rows already written keep
//!   the `max_count` and expiry they were written with.
//! - **Policy change:** leaving Aggregation discards the open windows
//!   ([`Counters::values_discarded`] counts their values: emitting a partial window as a result
//!   would be wrong); entering it starts empty (nothing to recompute from). The last accepted
//!   time carries over (`max_rate` keeps holding); the last value carries over while
//!   `last_unique_check` stays on and the input type is the same.
//!
//! # Memory
//!
//! Bounded per pipeline whatever the traffic: the config, the last value for
//! `last_unique_check` (inline up to [`INLINE_LAST_VALUE`] bytes, else its length and SHA-256),
//! and for Aggregation at most `size / step` buckets of 56 bytes (1,440 for 24 h at 60 s) plus
//! what a resize leaves, never more than [`MAX_BUCKETS`]; past it, values that need a new bucket
//! are dropped ([`DropReason::Capacity`]), counted. [`Pipeline::memory_bytes`] is the estimate
//! (`memory_is_bounded_under_a_flood`, x86-64: 488 bytes idle or with any last value, 81,128
//! with a full 24 h window at a 60 s step under a flood with `max_rate` 0).
//!
//! # Snapshots
//!
//! [`Snapshot`] is the open state as versioned JSON: the clock, the last accepted time and
//! value, and for Aggregation the size, step, function, last boundary dealt with and the
//! buckets. [`Pipeline::restore`] refuses (with a reason, never a panic) a snapshot of another
//! version or node, or one that is malformed or inconsistent. A snapshot taken under another
//! config is adapted to the given one as [`Pipeline::reconfigure`] would, except that windows
//! that came due meanwhile are emitted by the next `tick` under the new config. Windows that
//! came due while stopped are emitted by the first `tick` after restore, with the same rows an
//! uninterrupted pipeline would have written.

mod window;

use std::borrow::Cow;

use chrono::{DateTime, Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use self::window::{Bucket, Refusal, Windows};
use super::config::{
    ActivePeriod, ActivePeriodType, DataPipeConfig, FilterTypeValueFiltering,
    FilterTypeValueThreshold, FilterValue, Filters, ProcessingPolicy, Transformations,
};
use super::{
    AggregationEntry, AggregationFunction, NRecordsEntry, ProcessingPolicyType, TypeInputValue,
    WindowEntry,
};
use crate::domain::payload::without_nul;

pub use self::window::MAX_BUCKETS;

/// A last value longer than this (bytes) is kept as its length and SHA-256.
pub const INLINE_LAST_VALUE: usize = 256;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A row a pipeline produces.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// LastValue: the node's new state and `last_update_datetime`.
    LastValue {
        state: String,
        at: NaiveDateTime,
    },
    NRecords(NRecordsEntry),
    /// NRecords: time to cut the node's stored rows back to its newest `keep` (sent every
    /// [`trim_every`] rows, so the store trims a busy node now and then, not per batch).
    TrimNRecords {
        keep: u32,
    },
    Window(WindowEntry),
    Aggregation(AggregationEntry),
}

/// NRecords rows written between two [`Output::TrimNRecords`]: a quarter of the count,
/// between 8 and 256. Readers take the newest `max_count` rows, so the rows in between are
/// never seen; a node holds at most `max_count + trim_every(max_count)` rows and one batch.
pub fn trim_every(max_count: u32) -> u32 {
    (max_count / 4).clamp(8, 256)
}

/// Why a value was not kept. Named on the wire (metrics, logs) as written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DropReason {
    /// The config cannot run (a policy without its numbers; validation prevents it).
    Config,
    /// Outside the active period.
    Inactive,
    /// Sooner than `max_rate` seconds after the last accepted value.
    Rate,
    /// Longer than `max_size` bytes.
    Size,
    /// Not UTF-8.
    NotText,
    /// Not a number where one is needed (Number input, Aggregation).
    NotNumber,
    /// A number that is NaN or infinite (`NaN`, `inf`, `1e400`).
    NotFinite,
    /// Refused by the white or black list.
    List,
    /// Outside the threshold.
    Threshold,
    /// Same as the last accepted value (`last_unique_check`).
    Repeat,
    /// A product or a window's sum would not be finite.
    Overflow,
    /// The pipeline holds [`MAX_BUCKETS`] buckets already.
    Capacity,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::Config,
        DropReason::Inactive,
        DropReason::Rate,
        DropReason::Size,
        DropReason::NotText,
        DropReason::NotNumber,
        DropReason::NotFinite,
        DropReason::List,
        DropReason::Threshold,
        DropReason::Repeat,
        DropReason::Overflow,
        DropReason::Capacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Config => "Config",
            DropReason::Inactive => "Inactive",
            DropReason::Rate => "Rate",
            DropReason::Size => "Size",
            DropReason::NotText => "NotText",
            DropReason::NotNumber => "NotNumber",
            DropReason::NotFinite => "NotFinite",
            DropReason::List => "List",
            DropReason::Threshold => "Threshold",
            DropReason::Repeat => "Repeat",
            DropReason::Overflow => "Overflow",
            DropReason::Capacity => "Capacity",
        }
    }
}

/// What became of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Dropped(DropReason),
}

/// What a pipeline did since it was made (not part of a snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    /// Indexed by `DropReason as usize`; see [`Counters::dropped`].
    pub dropped: [u64; DropReason::ALL.len()],
    pub windows_emitted: u64,
    /// Windows not emitted because their aggregate is not finite.
    pub windows_suppressed: u64,
    /// Values of open windows discarded by a policy change.
    pub values_discarded: u64,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// The policy with its numbers, checked.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    LastValue,
    NRecords(u32),
    TimeWindow(u32),
    Aggregation {
        window: u32,
        step: u32,
        function: AggregationFunction,
    },
    /// Numbers missing or inconsistent: every value is dropped.
    Invalid(&'static str),
}

impl Policy {
    fn of(p: &ProcessingPolicy) -> Policy {
        match p.policy_type {
            ProcessingPolicyType::LastValue => Policy::LastValue,
            ProcessingPolicyType::NRecords => match p.n_records_count {
                Some(n) if n > 0 => Policy::NRecords(n),
                _ => Policy::Invalid("NRecords needs n_records_count"),
            },
            ProcessingPolicyType::TimeWindow => match p.time_window_size {
                Some(w) if w > 0 => Policy::TimeWindow(w),
                _ => Policy::Invalid("TimeWindow needs time_window_size"),
            },
            ProcessingPolicyType::Aggregation => {
                let (Some(window), Some(function)) = (p.time_window_size, p.aggregation_functions)
                else {
                    return Policy::Invalid(
                        "Aggregation needs time_window_size and aggregation_functions",
                    );
                };
                let step = p.time_window_step.unwrap_or(window);
                if window == 0 || step == 0 || !window.is_multiple_of(step) {
                    return Policy::Invalid(
                        "Aggregation needs a positive time_window_step dividing time_window_size",
                    );
                }
                Policy::Aggregation {
                    window,
                    step,
                    function,
                }
            }
        }
    }
}

/// The last accepted value, for `last_unique_check`.
#[derive(Clone, Debug, PartialEq)]
enum LastValue {
    Number(f64),
    Text(String),
    Digest { len: usize, sha256: [u8; 32] },
}

impl LastValue {
    fn of_text(s: &str) -> LastValue {
        if s.len() <= INLINE_LAST_VALUE {
            LastValue::Text(s.to_owned())
        } else {
            LastValue::Digest {
                len: s.len(),
                sha256: Sha256::digest(s.as_bytes()).into(),
            }
        }
    }

    fn repeats(&self, state: &str, number: Option<f64>) -> bool {
        match (self, number) {
            (LastValue::Number(last), Some(x)) => *last == x,
            (LastValue::Text(last), None) => last == state,
            (LastValue::Digest { len, sha256 }, None) => {
                *len == state.len() && *sha256 == <[u8; 32]>::from(Sha256::digest(state))
            }
            _ => false,
        }
    }

    fn fits(&self, input: TypeInputValue) -> bool {
        matches!(
            (self, input),
            (LastValue::Number(_), TypeInputValue::Number)
                | (
                    LastValue::Text(_) | LastValue::Digest { .. },
                    TypeInputValue::Text
                )
        )
    }
}

/// One node's pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    node: Uuid,
    config: DataPipeConfig,
    policy: Policy,
    clock: NaiveDateTime,
    last_accepted: Option<NaiveDateTime>,
    last_value: Option<LastValue>,
    windows: Option<Windows>,
    counters: Counters,
    /// NRecords rows written since the last [`Output::TrimNRecords`].
    untrimmed: u32,
}

fn seconds(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp()
}

fn datetime(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|d| d.naive_utc())
}

impl Pipeline {
    pub fn new(node: Uuid, config: DataPipeConfig, now: NaiveDateTime) -> Pipeline {
        let policy = Policy::of(&config.processing_policy);
        Pipeline {
            node,
            windows: new_windows(policy, seconds(now)),
            config,
            policy,
            clock: now,
            last_accepted: None,
            last_value: None,
            counters: Counters::default(),
            untrimmed: 0,
        }
    }

    pub fn node(&self) -> Uuid {
        self.node
    }

    pub fn config(&self) -> &DataPipeConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Why the config cannot run, when it cannot (every value is then dropped as
    /// [`DropReason::Config`]).
    pub fn problem(&self) -> Option<&'static str> {
        match self.policy {
            Policy::Invalid(why) => Some(why),
            _ => None,
        }
    }

    /// Moves the clock to `now` (never back) and answers it.
    fn observe(&mut self, now: NaiveDateTime) -> NaiveDateTime {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// A value of the node arrived at `now` (the raw MQTT payload). Windows that came due are
    /// emitted first, then the value's row if it is kept.
    pub fn offer(&mut self, now: NaiveDateTime, payload: &[u8], out: &mut Vec<Output>) -> Verdict {
        let now = self.observe(now);
        self.emit_due(out);
        match self.judge(now, payload, out) {
            Ok(()) => {
                self.counters.accepted += 1;
                Verdict::Accepted
            }
            Err(reason) => {
                self.counters.dropped[reason as usize] += 1;
                Verdict::Dropped(reason)
            }
        }
    }

    /// Time passed: emits the windows ending at or before `now`.
    pub fn tick(&mut self, now: NaiveDateTime, out: &mut Vec<Output>) {
        self.observe(now);
        self.emit_due(out);
    }

    /// When [`Pipeline::tick`] is next needed (`None`: never, unless a value comes). May be in
    /// the past right after [`Pipeline::restore`].
    pub fn next_deadline(&self) -> Option<NaiveDateTime> {
        self.windows
            .as_ref()
            .and_then(Windows::next_boundary)
            .and_then(datetime)
    }

    /// The config changed: windows due under the old one are emitted, the open state is kept
    /// as the module doc says ("Resizing"), and windows of the new geometry that are due are
    /// emitted.
    pub fn reconfigure(
        &mut self,
        config: DataPipeConfig,
        now: NaiveDateTime,
        out: &mut Vec<Output>,
    ) {
        self.observe(now);
        self.emit_due(out);
        self.adopt(config);
        self.emit_due(out);
    }

    /// Switches to `config`, keeping what can be kept, without emitting.
    fn adopt(&mut self, config: DataPipeConfig) {
        self.policy = Policy::of(&config.processing_policy);
        self.config = config;
        self.fit_state();
    }

    /// Fits the open state to the config: the windows resized, made or discarded, the last
    /// value kept only where it can still be compared.
    fn fit_state(&mut self) {
        match (self.windows.as_mut(), self.policy) {
            (
                Some(w),
                Policy::Aggregation {
                    window,
                    step,
                    function,
                },
            ) => w.resize(window.into(), step.into(), function),
            (Some(w), _) => {
                self.counters.values_discarded += w.value_count();
                self.windows = None;
            }
            (None, policy) => self.windows = new_windows(policy, seconds(self.clock)),
        }
        let filters = &self.config.filters;
        if !filters.last_unique_check
            || !self
                .last_value
                .as_ref()
                .is_some_and(|v| v.fits(filters.type_input_value))
        {
            self.last_value = None;
        }
    }

    fn emit_due(&mut self, out: &mut Vec<Output>) {
        let Some(windows) = self.windows.as_mut() else {
            return;
        };
        let (node, counters) = (self.node, &mut self.counters);
        let (size, function) = (windows.window, windows.function);
        windows.advance(seconds(self.clock), |end, value| {
            let row = value.zip(datetime(end)).zip(datetime(end - size));
            match row {
                Some(((state, end_at), start_at)) => {
                    counters.windows_emitted += 1;
                    out.push(Output::Aggregation(AggregationEntry {
                        unit_node_uuid: node,
                        state,
                        aggregation_type: function,
                        time_window_size: size as u32,
                        create_datetime: end_at,
                        start_window_datetime: start_at,
                        end_window_datetime: end_at,
                    }));
                }
                None => counters.windows_suppressed += 1,
            }
        });
    }

    /// Everything between a value and its row. `Ok` when it is kept.
    fn judge(
        &mut self,
        now: NaiveDateTime,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DropReason> {
        if let Policy::Invalid(_) = self.policy {
            return Err(DropReason::Config);
        }
        if !is_active(&self.config.active_period, now) {
            return Err(DropReason::Inactive);
        }
        let filters = &self.config.filters;
        if filters.max_rate > 0 {
            if let Some(last) = self.last_accepted {
                if now - last < Duration::seconds(filters.max_rate.into()) {
                    return Err(DropReason::Rate);
                }
            }
        }
        if filters.max_size > 0 && payload.len() > filters.max_size as usize {
            return Err(DropReason::Size);
        }
        let text = std::str::from_utf8(payload).map_err(|_| DropReason::NotText)?;
        let number = match filters.type_input_value {
            TypeInputValue::Number => Some(finite_number(text)?),
            TypeInputValue::Text => None,
        };
        check_list(filters, text, number)?;
        check_threshold(filters, text, number)?;
        let (state, number) = transform(self.config.transformations.as_ref(), text, number)?;
        if filters.last_unique_check
            && self
                .last_value
                .as_ref()
                .is_some_and(|last| last.repeats(&state, number))
        {
            return Err(DropReason::Repeat);
        }

        // what can still refuse the value, before anything changes
        let expiration = match self.policy {
            Policy::TimeWindow(window) => Some(
                now.checked_add_signed(Duration::seconds(window.into()))
                    .ok_or(DropReason::Overflow)?,
            ),
            Policy::Aggregation { .. } => {
                let x = match number {
                    Some(x) => x,
                    None => finite_number(&state)?,
                };
                let Some(windows) = self.windows.as_mut() else {
                    return Err(DropReason::Config);
                };
                windows.add(seconds(now), x).map_err(|r| match r {
                    Refusal::Overflow => DropReason::Overflow,
                    Refusal::Capacity => DropReason::Capacity,
                })?;
                None
            }
            _ => None,
        };

        self.last_accepted = Some(now);
        if filters.last_unique_check {
            match (self.last_value.as_mut(), number) {
                (_, Some(x)) => self.last_value = Some(LastValue::Number(x)),
                // reuse the buffer: most values are short
                (Some(LastValue::Text(buf)), None) if state.len() <= INLINE_LAST_VALUE => {
                    buf.clear();
                    buf.push_str(&state);
                }
                (_, None) => self.last_value = Some(LastValue::of_text(&state)),
            }
        }

        let input = filters.type_input_value;
        let size = state.len() as u32;
        let state = state.into_owned();
        match self.policy {
            Policy::LastValue => out.push(Output::LastValue { state, at: now }),
            Policy::NRecords(max_count) => {
                out.push(Output::NRecords(NRecordsEntry {
                    unit_node_uuid: self.node,
                    state,
                    state_type: input,
                    create_datetime: now,
                    max_count,
                    size,
                }));
                self.untrimmed += 1;
                if self.untrimmed >= trim_every(max_count) {
                    self.untrimmed = 0;
                    out.push(Output::TrimNRecords { keep: max_count });
                }
            }
            Policy::TimeWindow(_) => {
                if let Some(expiration_datetime) = expiration {
                    out.push(Output::Window(WindowEntry {
                        unit_node_uuid: self.node,
                        state,
                        state_type: input,
                        create_datetime: now,
                        expiration_datetime,
                        size,
                    }))
                }
            }
            Policy::Aggregation { .. } | Policy::Invalid(_) => {}
        }
        Ok(())
    }

    /// The open state, for a clean stop.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            node: self.node,
            clock: self.clock,
            last_accepted: self.last_accepted,
            last_value: self.last_value.as_ref().map(|v| match v {
                LastValue::Number(x) => SnapshotValue::Number(*x),
                LastValue::Text(s) => SnapshotValue::Text(s.clone()),
                LastValue::Digest { len, sha256 } => SnapshotValue::Digest {
                    len: *len as u64,
                    sha256: hex(sha256),
                },
            }),
            aggregation: self.windows.as_ref().map(|w| SnapshotWindows {
                window: w.window as u32,
                step: w.step as u32,
                function: w.function,
                emitted_through: w.emitted_through,
                buckets: w
                    .buckets
                    .iter()
                    .map(|b| SnapshotBucket(b.first, b.last, b.count, b.sum, b.comp, b.min, b.max))
                    .collect(),
            }),
        }
    }

    /// A pipeline from a snapshot taken at a clean stop, under `config` (see the module doc,
    /// "Snapshots"). Windows that came due meanwhile are emitted by the next `tick`.
    pub fn restore(
        node: Uuid,
        config: DataPipeConfig,
        snapshot: Snapshot,
        now: NaiveDateTime,
    ) -> Result<Pipeline, String> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {} cannot be read (this build reads {SNAPSHOT_VERSION})",
                snapshot.version
            ));
        }
        if snapshot.node != node {
            return Err(format!("snapshot is of node {}, not {node}", snapshot.node));
        }
        if snapshot.last_accepted.is_some_and(|t| t > snapshot.clock) {
            return Err("snapshot's last accepted value is after its clock".into());
        }
        let last_value = snapshot.last_value.map(restore_value).transpose()?;
        let clock_secs = seconds(snapshot.clock);
        let windows = snapshot
            .aggregation
            .map(|w| restore_windows(w, clock_secs))
            .transpose()?;

        // as the snapshot's pipeline was, then fitted to `config`
        let mut pipeline = Pipeline {
            node,
            policy: Policy::of(&config.processing_policy),
            config,
            clock: snapshot.clock.max(now),
            last_accepted: snapshot.last_accepted,
            last_value,
            windows,
            counters: Counters::default(),
            untrimmed: 0,
        };
        pipeline.fit_state();
        Ok(pipeline)
    }

    /// An honest estimate of the bytes this pipeline holds (itself, its config's lists, its
    /// last value, its buckets), for the memory bound and the benchmark.
    pub fn memory_bytes(&self) -> usize {
        let config = config_heap(&self.config);
        let last = match &self.last_value {
            Some(LastValue::Text(s)) => s.capacity(),
            _ => 0,
        };
        let buckets = self
            .windows
            .as_ref()
            .map_or(0, |w| w.buckets.capacity() * std::mem::size_of::<Bucket>());
        std::mem::size_of::<Self>() + config + last + buckets
    }

    /// Buckets held (Aggregation), for tests and the benchmark.
    pub fn bucket_count(&self) -> usize {
        self.windows.as_ref().map_or(0, |w| w.buckets.len())
    }
}

fn new_windows(policy: Policy, now: i64) -> Option<Windows> {
    match policy {
        Policy::Aggregation {
            window,
            step,
            function,
        } => Some(Windows::new(window.into(), step.into(), function, now)),
        _ => None,
    }
}

fn config_heap(config: &DataPipeConfig) -> usize {
    config
        .filters
        .filtering_values
        .as_ref()
        .map_or(0, |values| {
            values.capacity() * std::mem::size_of::<FilterValue>()
                + values
                    .iter()
                    .map(|v| match v {
                        FilterValue::Text(s) => s.capacity(),
                        FilterValue::Number(_) | FilterValue::Integer(_) => 0,
                    })
                    .sum::<usize>()
        })
}

/// Upstream's `active_period.IsActive`: bounds are strict, a missing bound is never active.
fn is_active(period: &ActivePeriod, now: NaiveDateTime) -> bool {
    let after_start = || period.start.is_some_and(|s| now > s);
    let before_end = || period.end.is_some_and(|e| now < e);
    match period.kind {
        ActivePeriodType::Permanent => true,
        ActivePeriodType::FromDate => after_start(),
        ActivePeriodType::ToDate => before_end(),
        ActivePeriodType::DateRange => after_start() && before_end(),
    }
}

/// A Number value: Rust's decimal float grammar (no spaces, no `_`, no hex), finite.
fn finite_number(text: &str) -> Result<f64, DropReason> {
    let x: f64 = text.parse().map_err(|_| DropReason::NotNumber)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(DropReason::NotFinite)
    }
}

/// The value as a number, for list entries and thresholds: the parsed Number input, or the
/// Text parsed on the spot (upstream's `strconv.ParseFloat` on every value).
fn as_number(text: &str, number: Option<f64>) -> Option<f64> {
    number.or_else(|| text.parse().ok())
}

fn check_list(filters: &Filters, text: &str, number: Option<f64>) -> Result<(), DropReason> {
    let Some(kind) = filters.type_value_filtering else {
        return Ok(());
    };
    let values = filters.filtering_values.as_deref().unwrap_or_default();
    let listed = values.iter().any(|v| match v {
        FilterValue::Text(s) => s == text,
        FilterValue::Number(_) | FilterValue::Integer(_) => as_number(text, number) == v.as_f64(),
    });
    match kind {
        FilterTypeValueFiltering::WhiteList if !listed => Err(DropReason::List),
        FilterTypeValueFiltering::BlackList if listed => Err(DropReason::List),
        _ => Ok(()),
    }
}

fn check_threshold(filters: &Filters, text: &str, number: Option<f64>) -> Result<(), DropReason> {
    let (Some(kind), Some(x)) = (filters.type_value_threshold, as_number(text, number)) else {
        return Ok(());
    };
    let below = || filters.threshold_min.is_some_and(|m| x < m as f64);
    let above = || filters.threshold_max.is_some_and(|m| x > m as f64);
    let out = match kind {
        FilterTypeValueThreshold::Min => below(),
        FilterTypeValueThreshold::Max => above(),
        FilterTypeValueThreshold::Range => below() || above(),
    };
    if out {
        Err(DropReason::Threshold)
    } else {
        Ok(())
    }
}

/// The transformed value, and for Number input its number (what Aggregation adds and
/// `last_unique_check` compares).
fn transform<'a>(
    t: Option<&Transformations>,
    text: &'a str,
    number: Option<f64>,
) -> Result<(Cow<'a, str>, Option<f64>), DropReason> {
    let Some(x) = number else {
        let mut state = match t {
            Some(t) if t.slice_start.is_some() || t.slice_end.is_some() => {
                Cow::Borrowed(slice_chars(text, t.slice_start, t.slice_end))
            }
            _ => Cow::Borrowed(text),
        };
        if state.contains('\0') {
            let mut owned = state.into_owned();
            without_nul(&mut owned);
            state = Cow::Owned(owned);
        }
        return Ok((state, None));
    };
    let Some(t) = t else {
        return Ok((Cow::Borrowed(text), Some(x)));
    };
    let (mut state, mut x) = (Cow::Borrowed(text), x);
    if let Some(ratio) = t.multiplication_ratio {
        let product = x * ratio;
        if !product.is_finite() {
            return Err(DropReason::Overflow);
        }
        state = Cow::Owned(format!("{product:.6}"));
        x = state.parse().map_err(|_| DropReason::NotNumber)?;
    }
    if let Some(decimals) = t.round_decimal_point {
        state = Cow::Owned(format!("{x:.*}", usize::from(decimals)));
        x = state.parse().map_err(|_| DropReason::NotNumber)?;
    }
    Ok((state, Some(x)))
}

/// Python's `text[start:end]` over characters: negative indices count from the end, indices
/// out of range are clamped, and `start >= end` gives `""`.
pub fn slice_chars(text: &str, start: Option<i64>, end: Option<i64>) -> &str {
    let len = text.chars().count() as i64;
    let index = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    let from = start.map_or(0, index);
    let to = end.map_or(len, index);
    if from >= to {
        return "";
    }
    let mut offsets = text
        .char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()));
    // 0 <= from < to <= len, and there are len + 1 offsets
    let from_byte = offsets.nth(from as usize).unwrap_or(text.len());
    let to_byte = offsets.nth((to - from - 1) as usize).unwrap_or(text.len());
    &text[from_byte..to_byte]
}

/// The open state of a pipeline as JSON (see the module doc, "Snapshots").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub node: Uuid,
    pub clock: NaiveDateTime,
    pub last_accepted: Option<NaiveDateTime>,
    pub last_value: Option<SnapshotValue>,
    pub aggregation: Option<SnapshotWindows>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SnapshotValue {
    Number(f64),
    Text(String),
    Digest { len: u64, sha256: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotWindows {
    pub window: u32,
    pub step: u32,
    pub function: AggregationFunction,
    /// Every boundary at or before this second (Unix time) has been dealt with.
    pub emitted_through: i64,
    /// `[first, last, count, sum, compensation, min, max]`, seconds in Unix time.
    pub buckets: Vec<SnapshotBucket>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBucket(
    pub i64,
    pub i64,
    pub u64,
    pub f64,
    pub f64,
    pub f64,
    pub f64,
);

impl Snapshot {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot is plain data")
    }

    /// Reads a snapshot; a version this build does not know is refused before its fields are
    /// read.
    pub fn from_json(json: &str) -> Result<Snapshot, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let Version { version } =
            serde_json::from_str(json).map_err(|e| format!("snapshot is not readable: {e}"))?;
        if version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {version} cannot be read (this build reads {SNAPSHOT_VERSION})"
            ));
        }
        serde_json::from_str(json).map_err(|e| format!("snapshot is not readable: {e}"))
    }
}

fn restore_value(v: SnapshotValue) -> Result<LastValue, String> {
    match v {
        SnapshotValue::Number(x) if x.is_finite() => Ok(LastValue::Number(x)),
        SnapshotValue::Number(_) => Err("snapshot's last value is not finite".into()),
        SnapshotValue::Text(s) => Ok(LastValue::of_text(&s)),
        SnapshotValue::Digest { len, sha256 } => {
            let bytes = unhex(&sha256)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or("snapshot's last value digest is not 64 hex digits")?;
            Ok(LastValue::Digest {
                len: usize::try_from(len).map_err(|_| "snapshot's last value is too long")?,
                sha256: bytes,
            })
        }
    }
}

fn restore_windows(w: SnapshotWindows, clock: i64) -> Result<Windows, String> {
    if w.window == 0 || w.step == 0 || !w.window.is_multiple_of(w.step) {
        return Err(format!(
            "snapshot's window ({} s) is not a positive multiple of its step ({} s)",
            w.window, w.step
        ));
    }
    if w.buckets.len() > MAX_BUCKETS {
        return Err(format!(
            "snapshot holds {} buckets, more than {MAX_BUCKETS}",
            w.buckets.len()
        ));
    }
    if w.emitted_through > clock {
        return Err("snapshot's last boundary is after its clock".into());
    }
    let mut windows = Windows::new(
        w.window.into(),
        w.step.into(),
        w.function,
        w.emitted_through,
    );
    let mut previous: Option<Bucket> = None;
    for (i, SnapshotBucket(first, last, count, sum, comp, min, max)) in
        w.buckets.into_iter().enumerate()
    {
        let b = Bucket {
            first,
            last,
            count,
            sum,
            comp,
            min,
            max,
        };
        if !b.is_valid() || last > clock {
            return Err(format!("snapshot's bucket {i} is malformed"));
        }
        if previous.is_some_and(|p| p.last > b.first) {
            return Err(format!("snapshot's bucket {i} is out of order"));
        }
        previous = Some(b);
        windows.buckets.push_back(b);
    }
    Ok(windows)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
