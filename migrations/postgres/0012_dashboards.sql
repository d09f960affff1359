-- Grafana dashboards (issue 19, SPEC §9): a user's dashboards, upstream's `dashboards` table.
-- grafana_uuid becomes the Grafana dashboard uid at sync; the sync_* columns record the last
-- sync. Panels and their node links come with the sync (next migration).
CREATE TABLE dashboards (
    uuid TEXT PRIMARY KEY,
    grafana_uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    dashboard_url TEXT,
    inc_last_version BIGINT,
    sync_status TEXT,
    sync_error TEXT,
    sync_last_datetime TEXT,
    create_datetime TEXT NOT NULL,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid) ON DELETE CASCADE
);
CREATE INDEX dashboards_creator ON dashboards (creator_uuid, create_datetime);
