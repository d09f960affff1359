-- Data pipes (SPEC §9, issue 17): what node pipelines keep, in the embedded telemetry store
-- (with PU_CLICKHOUSE_URL the three row tables live in ClickHouse instead). Timestamps are
-- TEXT in the sortable format of 0001. No foreign keys (telemetry rows, as unit_logs): a
-- node's rows are removed explicitly when it is deleted or its data cleared.

-- NRecords: the node's last max_count values (older rows are removed as new ones come).
CREATE TABLE pipe_n_records (
    unit_node_uuid TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    state TEXT NOT NULL,
    state_type TEXT NOT NULL,
    max_count BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (unit_node_uuid, create_datetime)
);
-- TimeWindow: values kept until expiration_datetime.
CREATE TABLE pipe_window_entries (
    unit_node_uuid TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    state TEXT NOT NULL,
    state_type TEXT NOT NULL,
    expiration_datetime TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (unit_node_uuid, create_datetime)
);
CREATE INDEX pipe_window_entries_expiration ON pipe_window_entries (expiration_datetime);
-- Aggregation: one row per closed window and function (a window emitted again is one row).
CREATE TABLE pipe_aggregations (
    unit_node_uuid TEXT NOT NULL,
    aggregation_type TEXT NOT NULL,
    time_window_size BIGINT NOT NULL,
    start_window_datetime TEXT NOT NULL,
    end_window_datetime TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    state REAL NOT NULL,
    PRIMARY KEY (unit_node_uuid, aggregation_type, time_window_size, start_window_datetime)
);
-- The open state of running pipelines (raw values of open windows, last accepted value),
-- saved at a clean stop and read back at start; a row is removed once read.
CREATE TABLE pipe_snapshots (
    unit_node_uuid TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    save_datetime TEXT NOT NULL
);
