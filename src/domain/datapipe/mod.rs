//! Data pipes (SPEC §9, DATAPIPE.md): per-node pipelines that filter, transform and keep node
//! values. This module is the pure part: the vocabulary, the rows a pipeline produces (what the
//! telemetry store keeps), the config and its validation (`config`), and the run-time engine
//! (`engine`) that turns node values into rows. No I/O here: the MQTT core's shards drive the
//! engine, the service validates and stores configs, the telemetry store keeps the rows.

pub mod config;
pub mod csv;
pub mod engine;

use chrono::NaiveDateTime;
use uuid::Uuid;

wire_enum!(
    /// How a pipeline reads a value: as text, or as a number (`f64`).
    TypeInputValue { Text, Number }
);
wire_enum!(
    /// What a pipeline keeps.
    ProcessingPolicyType { LastValue, NRecords, TimeWindow, Aggregation }
);
wire_enum!(AggregationFunction { Avg, Min, Max, Sum });
wire_enum!(
    /// The config section a validation message is about.
    DataPipeStage { ActivePeriod, Filters, Transformations, ProcessingPolicy }
);
wire_enum!(
    /// A node's `data_pipe_status`.
    DataPipeStatus { Active, Inactive, Error }
);

/// The window sizes (seconds) upstream accepts for TimeWindow and Aggregation.
pub const WINDOW_SIZES: &[u32] = &[
    60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400,
];

/// One validation message: which section, what is wrong (upstream's `{stage, message}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub stage: DataPipeStage,
    pub message: String,
}

/// A value an NRecords pipeline keeps (upstream's `n_last_entry`): the node's last
/// `max_count` values.
#[derive(Clone, Debug, PartialEq)]
pub struct NRecordsEntry {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub state_type: TypeInputValue,
    pub create_datetime: NaiveDateTime,
    pub max_count: u32,
    /// Bytes of `state`.
    pub size: u32,
}

/// A value a TimeWindow pipeline keeps until `expiration_datetime` (upstream's
/// `window_entry`).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowEntry {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub state_type: TypeInputValue,
    pub create_datetime: NaiveDateTime,
    pub expiration_datetime: NaiveDateTime,
    pub size: u32,
}

/// A computed aggregate of one window (upstream's `aggregation_entry`).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregationEntry {
    pub unit_node_uuid: Uuid,
    pub state: f64,
    pub aggregation_type: AggregationFunction,
    /// The window's length in seconds.
    pub time_window_size: u32,
    pub create_datetime: NaiveDateTime,
    pub start_window_datetime: NaiveDateTime,
    pub end_window_datetime: NaiveDateTime,
}

/// One row a pipeline keeps, by policy.
#[derive(Clone, Debug, PartialEq)]
pub enum PipeRow {
    NRecords(NRecordsEntry),
    Window(WindowEntry),
    Aggregation(AggregationEntry),
}

impl PipeRow {
    pub fn node(&self) -> Uuid {
        match self {
            PipeRow::NRecords(r) => r.unit_node_uuid,
            PipeRow::Window(r) => r.unit_node_uuid,
            PipeRow::Aggregation(r) => r.unit_node_uuid,
        }
    }

    pub fn policy(&self) -> ProcessingPolicyType {
        match self {
            PipeRow::NRecords(_) => ProcessingPolicyType::NRecords,
            PipeRow::Window(_) => ProcessingPolicyType::TimeWindow,
            PipeRow::Aggregation(_) => ProcessingPolicyType::Aggregation,
        }
    }
}
