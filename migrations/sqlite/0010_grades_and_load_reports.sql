-- Instance grades and load reports (issue 18, parts 3 and 4; SPEC §7).
-- instance_grade: one row (id 1) of the admin's grade settings. Absent until the admin first
-- changes them; the service layer answers its documented defaults until then.
CREATE TABLE instance_grade (
    id INTEGER PRIMARY KEY,
    free_mps_per_user DOUBLE PRECISION NOT NULL,
    price_per_mps DOUBLE PRECISION NOT NULL,
    free_aggregated_topics BIGINT NOT NULL,
    price_per_aggregated_topic DOUBLE PRECISION NOT NULL,
    currency TEXT NOT NULL,
    update_datetime TEXT NOT NULL
);
-- load_reports: reports of `pepeunit load ramp --publish`, one row per channel and run; the
-- newest per channel is the instance's published capacity (`GET /load_limit`).
CREATE TABLE load_reports (
    uuid TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    report TEXT NOT NULL,
    publisher_uuid TEXT,
    create_datetime TEXT NOT NULL
);
CREATE INDEX load_reports_channel_time ON load_reports (channel, create_datetime);
