//! A node's pipeline config (upstream's `DataPipeConfig`, DATAPIPE.md "Config"): the types.
//! Parsing from YAML, validation with upstream's stages and messages, the stored JSON form and
//! the YAML given back live here too.

use chrono::NaiveDateTime;

use super::{AggregationFunction, ProcessingPolicyType, TypeInputValue};

wire_enum!(ActivePeriodType {
    Permanent,
    FromDate,
    ToDate,
    DateRange
});
wire_enum!(FilterTypeValueFiltering {
    WhiteList,
    BlackList
});
wire_enum!(FilterTypeValueThreshold { Min, Max, Range });

/// A validated config: every rule of `DATAPIPE.md` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPipeConfig {
    pub active_period: ActivePeriod,
    pub filters: Filters,
    pub transformations: Option<Transformations>,
    pub processing_policy: ProcessingPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActivePeriod {
    pub kind: ActivePeriodType,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
}

/// A white/black list entry: numbers for Number input, strings for Text input.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Number(f64),
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Filters {
    pub type_input_value: TypeInputValue,
    pub type_value_filtering: Option<FilterTypeValueFiltering>,
    pub filtering_values: Option<Vec<FilterValue>>,
    pub type_value_threshold: Option<FilterTypeValueThreshold>,
    pub threshold_min: Option<i64>,
    pub threshold_max: Option<i64>,
    /// Seconds since the last accepted value, 0..=86400.
    pub max_rate: u32,
    pub last_unique_check: bool,
    /// Bytes, 0..=the broker's payload limit.
    pub max_size: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transformations {
    pub multiplication_ratio: Option<f64>,
    /// 0..=7.
    pub round_decimal_point: Option<u8>,
    pub slice_start: Option<i64>,
    pub slice_end: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessingPolicy {
    pub policy_type: ProcessingPolicyType,
    /// NRecords: 1..=1024.
    pub n_records_count: Option<u32>,
    /// TimeWindow and Aggregation: one of [`super::WINDOW_SIZES`].
    pub time_window_size: Option<u32>,
    /// Aggregation.
    pub aggregation_functions: Option<AggregationFunction>,
    /// Aggregation, beyond upstream: a sliding window emits the aggregate of the last
    /// `time_window_size` seconds every `time_window_step` seconds (dividing the size);
    /// `None` is upstream's tumbling window (step = size).
    pub time_window_step: Option<u32>,
}
