-- Unit logs (SPEC §4): the `log` messages of devices, each kept until expiration_datetime
-- (PU_UNIT_LOG_EXPIRATION after it arrived). Timestamps are TEXT in the sortable format of
-- 0001, so `expiration_datetime > now` and ORDER BY create_datetime are plain text compares.
-- No foreign key to units: telemetry rows are removed explicitly when their unit is deleted,
-- and the same rows may later live in ClickHouse, which has no foreign keys either.

CREATE TABLE unit_logs (
    uuid TEXT PRIMARY KEY,
    unit_uuid TEXT NOT NULL,
    level TEXT NOT NULL,
    text TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    expiration_datetime TEXT NOT NULL
);
CREATE INDEX unit_logs_unit_create ON unit_logs (unit_uuid, create_datetime);
CREATE INDEX unit_logs_expiration ON unit_logs (expiration_datetime);
