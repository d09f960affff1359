-- Load metering (issue 18): messages per Unit per hour, kept for billing (with the Unit's user
-- at the time, so the history outlives the Unit). Hours are naive UTC text like every time of
-- this store; a second write to the same hour adds to it.
CREATE TABLE unit_load_hours (
    unit_uuid TEXT NOT NULL,
    hour_start TEXT NOT NULL,
    user_uuid TEXT NOT NULL,
    messages BIGINT NOT NULL,
    PRIMARY KEY (unit_uuid, hour_start)
);
CREATE INDEX unit_load_hours_user ON unit_load_hours (user_uuid, hour_start);
