//! A node's pipeline config (upstream's `DataPipeConfig`, DATAPIPE.md "Config"): the types,
//! and the config's four forms.
//!
//! - **YAML in** ([`DataPipeConfig::parse_yaml`]): what `POST /unit_nodes/check_data_pipe_config`
//!   and `set_data_pipe_config` receive. Read as upstream reads it (`yaml.safe_load`, then
//!   pydantic's `DataPipeConfig.model_validate`), every failure collected as `{stage, message}`
//!   with pydantic's and upstream's own texts (module `validate`).
//! - **Stored JSON** ([`DataPipeConfig::to_stored_json`], [`DataPipeConfig::from_stored_json`]):
//!   `units_nodes.data_pipe_yml`, byte-identical to what upstream stores (Python `json.dumps` of
//!   the model), except that datetimes are stored as naive UTC (upstream keeps the offset the
//!   user wrote).
//! - **YAML out** ([`DataPipeConfig::to_yaml`]): what `GET /unit_nodes/get_data_pipe_config/{uuid}`
//!   answers: the stored form without its nulls, keys in model order.
//! - **Default** ([`DataPipeConfig::default_last_value`]): upstream's config for new `/pepeunit`
//!   nodes when `PU_FF_DATAPIPE_DEFAULT_LAST_VALUE_ENABLE` is on.
//!
//! Where we differ from upstream, on purpose (each is also said where it is done):
//! - unknown keys are refused (upstream silently drops them, so a typo like `max_rat` left the
//!   field at its default or missing); a key inside a section is reported under that section,
//!   an unknown top-level key under the section it most resembles ([`stage_for_key`]);
//! - a text that is not YAML, not a mapping, empty, or has duplicate keys is a `{stage,
//!   message}` answer (upstream answers 500 or silently keeps the last duplicate). The stage is
//!   the section being read when the problem was found, else `ActivePeriod` (the first one);
//! - aliases, more than [`MAX_NODES`] values or nesting deeper than [`MAX_DEPTH`] are refused,
//!   so parsing stays bounded whatever the text (the caller refuses oversized texts first);
//! - NaN and infinities are refused in `filtering_values` and `multiplication_ratio`
//!   (`Input should be a finite number`), and integers must fit the Rust field;
//! - `processing_policy.time_window_step` (sliding windows, DATAPIPE.md "Beyond upstream"):
//!   optional, Aggregation only, 1..=86400 s, dividing `time_window_size`, and at most
//!   [`MAX_STEPS_PER_WINDOW`] steps per window;
//! - datetimes are converted to naive UTC (`2024-01-01T10:00:00+03:00` is stored as
//!   `2024-01-01T07:00:00`); a naive datetime is taken as UTC.

mod emit;
mod load;
#[cfg(test)]
mod tests;
mod validate;

use chrono::NaiveDateTime;

use super::{
    AggregationFunction, DataPipeStage, ProcessingPolicyType, TypeInputValue, ValidationError,
};

pub use emit::{py_float_repr, py_isoformat};
pub use load::{MAX_DEPTH, MAX_NODES};
pub use validate::MAX_STEPS_PER_WINDOW;

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
    /// Naive UTC.
    pub start: Option<NaiveDateTime>,
    /// Naive UTC.
    pub end: Option<NaiveDateTime>,
}

/// A white/black list entry as the user wrote it (upstream's `Union[str, int, float]`):
/// Number input accepts only numbers, Text input only strings (checked when a filtering type is
/// set). A YAML `true`/`false` is the integer 1/0, as pydantic reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    /// A float as written (`2.5`, `5.0`), finite.
    Number(f64),
    Text(String),
    /// An integer as written (`5`): compares as a number, stored and shown without a decimal
    /// point, like upstream's Python `int`.
    Integer(i64),
}

impl FilterValue {
    /// The value as a number, what a Number pipeline compares (upstream: `float(value)`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FilterValue::Number(f) => Some(*f),
            FilterValue::Integer(i) => Some(*i as f64),
            FilterValue::Text(_) => None,
        }
    }

    /// The value as text, what a Text pipeline compares (upstream: `str(value)`, so `5` is
    /// `"5"` and `5.0` is `"5.0"`).
    pub fn as_text(&self) -> String {
        match self {
            FilterValue::Number(f) => py_float_repr(*f),
            FilterValue::Integer(i) => i.to_string(),
            FilterValue::Text(s) => s.clone(),
        }
    }
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
    /// Finite.
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
    /// `time_window_size` seconds every `time_window_step` seconds (dividing the size, at most
    /// [`MAX_STEPS_PER_WINDOW`] steps per window); `None` is upstream's tumbling window
    /// (step = size).
    pub time_window_step: Option<u32>,
}

/// The top-level keys, in model order.
pub const SECTIONS: &[&str] = &[
    "active_period",
    "filters",
    "transformations",
    "processing_policy",
];

/// The stage of a section (upstream's `snake_to_camel` of the key).
pub fn section_stage(key: &str) -> Option<DataPipeStage> {
    Some(match key {
        "active_period" => DataPipeStage::ActivePeriod,
        "filters" => DataPipeStage::Filters,
        "transformations" => DataPipeStage::Transformations,
        "processing_policy" => DataPipeStage::ProcessingPolicy,
        _ => return None,
    })
}

/// The stage a top-level key is reported under (ours; upstream ignores unknown keys): its own
/// section; the section having a field of that name (`max_rate` written at the top level is
/// about Filters); the section whose name is closest (`filter`, `processingpolicy`); else
/// `ActivePeriod`, the first section.
pub fn stage_for_key(key: &str) -> DataPipeStage {
    if let Some(stage) = section_stage(key) {
        return stage;
    }
    let fields = [
        (validate::ACTIVE_PERIOD_FIELDS, DataPipeStage::ActivePeriod),
        (validate::FILTERS_FIELDS, DataPipeStage::Filters),
        (
            validate::TRANSFORMATIONS_FIELDS,
            DataPipeStage::Transformations,
        ),
        (
            validate::PROCESSING_POLICY_FIELDS,
            DataPipeStage::ProcessingPolicy,
        ),
    ];
    if let Some((_, stage)) = fields.iter().find(|(names, _)| names.contains(&key)) {
        return *stage;
    }
    let lower = key.to_ascii_lowercase();
    SECTIONS
        .iter()
        .map(|s| (edit_distance(&lower, s), *s))
        .filter(|(d, s)| *d <= s.len() / 3)
        .min()
        .and_then(|(_, s)| section_stage(s))
        .unwrap_or(DataPipeStage::ActivePeriod)
}

/// Levenshtein distance over chars (keys are short; bounded by the YAML node limit).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl DataPipeConfig {
    /// A config from an uploaded YAML text, checked like upstream's `check_data_pipe_config`
    /// (with our additions, see the module doc). `max_payload_bytes` is the broker's payload
    /// limit: `filters.max_size` may not exceed it (upstream:
    /// `max_size must be <= {mqtt_max_payload_size * 1024}`).
    ///
    /// The caller refuses oversized texts; parsing is bounded anyway ([`MAX_NODES`],
    /// [`MAX_DEPTH`], no aliases).
    pub fn parse_yaml(text: &str, max_payload_bytes: u32) -> Result<Self, Vec<ValidationError>> {
        let value = load::load_yaml(text).map_err(|e| {
            vec![ValidationError {
                stage: e
                    .section
                    .as_deref()
                    .map_or(DataPipeStage::ActivePeriod, stage_for_key),
                message: e.message,
            }]
        })?;
        validate::validate(
            &value,
            &validate::Rules {
                max_size: Some(max_payload_bytes),
                refuse_unknown_keys: true,
            },
        )
    }

    /// A config from `units_nodes.data_pipe_yml`: what [`Self::to_stored_json`] writes and what
    /// upstream stores (rows come from upstream imports): datetimes with or without offsets,
    /// integers written as floats, fields of a newer upstream (ignored, as upstream does). The
    /// payload limit is not checked again (the broker's may have changed since).
    pub fn from_stored_json(text: &str) -> Result<Self, Vec<ValidationError>> {
        let value = load::load_json(text).map_err(|message| {
            vec![ValidationError {
                stage: DataPipeStage::ActivePeriod,
                message,
            }]
        })?;
        validate::validate(
            &value,
            &validate::Rules {
                max_size: None,
                refuse_unknown_keys: false,
            },
        )
    }

    /// The stored form: Python's `json.dumps` of upstream's model (`", "`/`": "` separators,
    /// non-ASCII escaped, every field with its nulls, floats as Python writes them: `5.0`,
    /// `1e-05`), datetimes as naive UTC `isoformat()`. `time_window_step` is written only when
    /// set, so every config upstream can express is stored exactly as upstream stores it.
    pub fn to_stored_json(&self) -> String {
        emit::stored_json(self)
    }

    /// The YAML `get_data_pipe_config` answers: PyYAML's block style of the stored form, nulls
    /// removed, keys in model order (`transformations: {}` when it has no field set).
    /// [`Self::parse_yaml`] reads it back to the same config.
    pub fn to_yaml(&self) -> String {
        emit::yaml(self)
    }

    /// Upstream's default for new `/pepeunit` nodes (`unit_node_service.bulk_create`):
    /// Permanent, Text, `max_rate` 5 s, `max_size` 100 bytes, LastValue.
    pub fn default_last_value() -> Self {
        DataPipeConfig {
            active_period: ActivePeriod {
                kind: ActivePeriodType::Permanent,
                start: None,
                end: None,
            },
            filters: Filters {
                type_input_value: TypeInputValue::Text,
                type_value_filtering: None,
                filtering_values: None,
                type_value_threshold: None,
                threshold_min: None,
                threshold_max: None,
                max_rate: 5,
                last_unique_check: false,
                max_size: 100,
            },
            transformations: None,
            processing_policy: ProcessingPolicy {
                policy_type: ProcessingPolicyType::LastValue,
                n_records_count: None,
                time_window_size: None,
                aggregation_functions: None,
                time_window_step: None,
            },
        }
    }
}
