-- Core domain (SPEC §1). Identifiers and timestamps are TEXT (lowercase UUIDs; naive UTC
-- `YYYY-MM-DDTHH:MM:SS.ffffff`, which sorts chronologically) so that one query text runs on
-- SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE users (
    uuid TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    login TEXT NOT NULL UNIQUE,
    hashed_password TEXT NOT NULL,
    cipher_dynamic_salt TEXT NOT NULL,
    telegram_chat_id TEXT UNIQUE,
    grafana_org_name TEXT NOT NULL,
    grafana_org_id TEXT,
    create_datetime TEXT NOT NULL
);

CREATE TABLE repository_registries (
    uuid TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    repository_url TEXT NOT NULL UNIQUE,
    is_public_repository BOOLEAN NOT NULL,
    releases_data TEXT,
    local_repository_size BIGINT NOT NULL DEFAULT 0,
    sync_status TEXT,
    sync_error TEXT,
    sync_last_datetime TEXT,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL,
    creator_uuid TEXT REFERENCES users(uuid) ON DELETE SET NULL
);

CREATE TABLE registry_credentials (
    uuid TEXT PRIMARY KEY,
    user_uuid TEXT NOT NULL REFERENCES users(uuid) ON DELETE CASCADE,
    repository_registry_uuid TEXT NOT NULL REFERENCES repository_registries(uuid) ON DELETE CASCADE,
    cipher_credentials TEXT NOT NULL,
    status TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL,
    UNIQUE (user_uuid, repository_registry_uuid)
);

CREATE TABLE repos (
    uuid TEXT PRIMARY KEY,
    visibility_level TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL,
    default_branch TEXT,
    is_auto_update_repo BOOLEAN NOT NULL,
    default_commit TEXT,
    is_only_tag_update BOOLEAN NOT NULL,
    is_compilable_repo BOOLEAN NOT NULL,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid),
    repository_registry_uuid TEXT NOT NULL REFERENCES repository_registries(uuid)
);
CREATE INDEX repos_registry ON repos (repository_registry_uuid);

CREATE TABLE units (
    uuid TEXT PRIMARY KEY,
    visibility_level TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL,
    is_auto_update_from_repo_unit BOOLEAN NOT NULL,
    target_firmware_platform TEXT,
    repo_branch TEXT,
    repo_commit TEXT,
    unit_state TEXT,
    cipher_env TEXT,
    cipher_state_storage TEXT,
    current_commit_version TEXT,
    firmware_update_status TEXT,
    firmware_update_error TEXT,
    last_firmware_update_datetime TEXT,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid),
    repo_uuid TEXT NOT NULL REFERENCES repos(uuid)
);
CREATE INDEX units_repo ON units (repo_uuid);

CREATE TABLE unit_nodes (
    uuid TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    visibility_level TEXT NOT NULL,
    is_rewritable_input BOOLEAN NOT NULL,
    max_connections BIGINT NOT NULL,
    topic_name TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL,
    is_data_pipe_active BOOLEAN NOT NULL,
    data_pipe_yml TEXT,
    data_pipe_status TEXT,
    data_pipe_error TEXT,
    create_datetime TEXT NOT NULL,
    state TEXT,
    unit_uuid TEXT NOT NULL REFERENCES units(uuid) ON DELETE CASCADE,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid),
    UNIQUE (unit_uuid, type, topic_name)
);

CREATE TABLE unit_node_edges (
    uuid TEXT PRIMARY KEY,
    node_output_uuid TEXT NOT NULL REFERENCES unit_nodes(uuid) ON DELETE CASCADE,
    node_input_uuid TEXT NOT NULL REFERENCES unit_nodes(uuid) ON DELETE CASCADE,
    creator_uuid TEXT NOT NULL REFERENCES users(uuid),
    create_datetime TEXT NOT NULL,
    UNIQUE (node_output_uuid, node_input_uuid)
);
CREATE INDEX unit_node_edges_input ON unit_node_edges (node_input_uuid);

-- Polymorphic grants: no foreign keys; the service layer removes rows with their resource.
CREATE TABLE permissions (
    uuid TEXT PRIMARY KEY,
    agent_uuid TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    resource_uuid TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    UNIQUE (agent_uuid, resource_uuid)
);
CREATE INDEX permissions_resource ON permissions (resource_uuid);
