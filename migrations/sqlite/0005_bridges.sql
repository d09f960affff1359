-- MQTT bridges between instances (SPEC §11, issue 5 part 4): a link from an Output node on one
-- instance (A) to an Input node on another (B). Both instances keep a row under the same uuid:
-- - role 'Input' (B): the local node is the Input node; B issued the credential (a Bridge JWT,
--   not stored: it is recomputed from the uuid) and lets it publish to `topic` only;
--   creator_uuid is the local user who made the bridge.
-- - role 'Output' (A): the local node is the Output node; A carries `topic` to B's broker at
--   mqtt_host:mqtt_port with `credential` (AES-GCM encrypted like unit envs).
-- topic is `{A's domain}/{output_node_uuid}[/pepeunit]` on both sides. state is Pending, Active
-- or Error (last_error says why). Deleting the local node deletes the row.

CREATE TABLE bridges (
    uuid TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    local_node_uuid TEXT NOT NULL REFERENCES unit_nodes(uuid) ON DELETE CASCADE,
    peer_domain TEXT NOT NULL,
    output_domain TEXT NOT NULL,
    output_node_uuid TEXT NOT NULL,
    topic TEXT NOT NULL,
    creator_uuid TEXT,
    mqtt_host TEXT,
    mqtt_port BIGINT,
    credential TEXT,
    state TEXT NOT NULL,
    last_error TEXT,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL
);
CREATE INDEX bridges_local_node ON bridges (local_node_uuid);
CREATE INDEX bridges_creator ON bridges (creator_uuid);
-- not unique: on A, bridges from one Output node to several Input nodes of the same peer
-- share the node (and one carrier); B refuses a second bridge for the same link itself
CREATE INDEX bridges_link ON bridges (peer_domain, output_node_uuid);
