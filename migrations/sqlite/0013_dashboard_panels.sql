-- Grafana dashboard panels and the nodes linked to them (issue 19, SPEC §9): upstream's
-- dashboard_panels and mtm_panels_unit_nodes. A node is linked to a panel at most once (upstream
-- checks it in code; here the database holds it too). Deleting a dashboard, a panel or a node
-- deletes its links; a link is what lets Grafana's datasource read the node's data.
CREATE TABLE dashboard_panels (
    uuid TEXT PRIMARY KEY,
    panel_type TEXT NOT NULL,
    title TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid) ON DELETE CASCADE,
    dashboard_uuid TEXT NOT NULL REFERENCES dashboards(uuid) ON DELETE CASCADE
);
CREATE INDEX dashboard_panels_dashboard ON dashboard_panels (dashboard_uuid, create_datetime);
CREATE TABLE dashboard_panel_nodes (
    uuid TEXT PRIMARY KEY,
    is_last_data INTEGER NOT NULL,
    is_forced_to_json INTEGER NOT NULL,
    create_datetime TEXT NOT NULL,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid) ON DELETE CASCADE,
    unit_node_uuid TEXT NOT NULL REFERENCES unit_nodes(uuid) ON DELETE CASCADE,
    dashboard_panel_uuid TEXT NOT NULL REFERENCES dashboard_panels(uuid) ON DELETE CASCADE,
    UNIQUE (dashboard_panel_uuid, unit_node_uuid)
);
CREATE INDEX dashboard_panel_nodes_node ON dashboard_panel_nodes (unit_node_uuid);
