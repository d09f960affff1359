//! Table-level access for account export and import: each exported table is described once
//! (columns and their kinds), read into JSON records and written back from them. The kinds
//! are what makes an archive portable between SQLite and PostgreSQL (booleans are JSON
//! booleans, never 0/1) and what import validates every field against. Also the SQL of the
//! service's export and import: which rows a scope holds, and the lookups import makes
//! (registries by URL, credentials and permissions already present).

use serde_json::{Map, Value as Json};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use uuid::Uuid;

use super::{RowExt, Sql};
use crate::domain;
use crate::store::StoreResult;

/// What a column holds; `Opt*` columns accept JSON null.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Text,
    OptText,
    Uuid,
    OptUuid,
    Time,
    OptTime,
    Int,
    /// An integer column with a default: absent or null in older archives.
    OptInt,
    Bool,
    /// One of the values a wire enum accepts.
    Enum(fn(&str) -> bool),
    OptEnum(fn(&str) -> bool),
}

/// One exported table.
pub struct Table {
    pub name: &'static str,
    /// The member holding its records (`{file}.jsonl`, or numbered chunks for logs).
    pub file: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// Columns naming rows of exported tables (rewritten when uuids are remapped).
    pub references: &'static [&'static str],
    /// Unique name column renamed on conflict.
    pub unique_name: Option<&'static str>,
    /// A table of uuids this table had and gave up for good (deleted units): an imported row
    /// with one of them gets a new uuid, as if it were taken.
    pub tombstones: Option<&'static str>,
}

fn is<T: std::str::FromStr>(s: &str) -> bool {
    s.parse::<T>().is_ok()
}

use crate::domain::{
    CredentialStatus, GitPlatform, LogLevel, PermissionEntities, UnitFirmwareUpdateStatus,
    UnitNodeType, UserRole, UserStatus, VisibilityLevel,
};

pub const USERS: Table = Table {
    name: "users",
    file: "user",
    columns: &[
        ("uuid", Kind::Uuid),
        ("role", Kind::Enum(is::<UserRole>)),
        ("status", Kind::Enum(is::<UserStatus>)),
        ("login", Kind::Text),
        ("create_datetime", Kind::Time),
    ],
    references: &[],
    unique_name: None,
    tombstones: None,
};

pub const REGISTRIES: Table = Table {
    name: "repository_registries",
    file: "repository_registries",
    columns: &[
        ("uuid", Kind::Uuid),
        ("platform", Kind::Enum(is::<GitPlatform>)),
        ("repository_url", Kind::Text),
        ("is_public_repository", Kind::Bool),
        ("create_datetime", Kind::Time),
        ("last_update_datetime", Kind::Time),
        ("creator_uuid", Kind::OptUuid),
    ],
    references: &["creator_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const CREDENTIALS: Table = Table {
    name: "registry_credentials",
    file: "registry_credentials",
    columns: &[
        ("uuid", Kind::Uuid),
        ("user_uuid", Kind::Uuid),
        ("repository_registry_uuid", Kind::Uuid),
        ("cipher_credentials", Kind::Text),
        ("status", Kind::Enum(is::<CredentialStatus>)),
        ("create_datetime", Kind::Time),
        ("last_update_datetime", Kind::Time),
    ],
    references: &["user_uuid", "repository_registry_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const REPOS: Table = Table {
    name: "repos",
    file: "repos",
    columns: &[
        ("uuid", Kind::Uuid),
        ("visibility_level", Kind::Enum(is::<VisibilityLevel>)),
        ("name", Kind::Text),
        ("create_datetime", Kind::Time),
        ("last_update_datetime", Kind::Time),
        ("default_branch", Kind::OptText),
        ("is_auto_update_repo", Kind::Bool),
        ("default_commit", Kind::OptText),
        ("is_only_tag_update", Kind::Bool),
        ("is_compilable_repo", Kind::Bool),
        ("creator_uuid", Kind::Uuid),
        ("repository_registry_uuid", Kind::Uuid),
    ],
    references: &["creator_uuid", "repository_registry_uuid"],
    unique_name: Some("name"),
    tombstones: None,
};

pub const UNITS: Table = Table {
    name: "units",
    file: "units",
    columns: &[
        ("uuid", Kind::Uuid),
        ("visibility_level", Kind::Enum(is::<VisibilityLevel>)),
        ("name", Kind::Text),
        ("create_datetime", Kind::Time),
        ("last_update_datetime", Kind::Time),
        ("is_auto_update_from_repo_unit", Kind::Bool),
        ("target_firmware_platform", Kind::OptText),
        ("repo_branch", Kind::OptText),
        ("repo_commit", Kind::OptText),
        ("unit_state", Kind::OptText),
        ("cipher_env", Kind::OptText),
        ("cipher_state_storage", Kind::OptText),
        ("current_commit_version", Kind::OptText),
        (
            "firmware_update_status",
            Kind::OptEnum(is::<UnitFirmwareUpdateStatus>),
        ),
        ("firmware_update_error", Kind::OptText),
        ("last_firmware_update_datetime", Kind::OptTime),
        ("creator_uuid", Kind::Uuid),
        ("repo_uuid", Kind::Uuid),
        // alert settings (migration 0006); absent in older archives
        ("alert_log_level", Kind::OptEnum(is::<LogLevel>)),
        ("alerts_muted_until", Kind::OptTime),
        // token rotations (migration 0007); absent in older archives (0: never rotated)
        ("token_generation", Kind::OptInt),
    ],
    references: &["creator_uuid", "repo_uuid"],
    unique_name: Some("name"),
    tombstones: Some("unit_tombstones"),
};

pub const NODES: Table = Table {
    name: "unit_nodes",
    file: "unit_nodes",
    columns: &[
        ("uuid", Kind::Uuid),
        ("type", Kind::Enum(is::<UnitNodeType>)),
        ("visibility_level", Kind::Enum(is::<VisibilityLevel>)),
        ("is_rewritable_input", Kind::Bool),
        ("max_connections", Kind::Int),
        ("topic_name", Kind::Text),
        ("last_update_datetime", Kind::Time),
        ("is_data_pipe_active", Kind::Bool),
        ("data_pipe_yml", Kind::OptText),
        ("data_pipe_status", Kind::OptText),
        ("data_pipe_error", Kind::OptText),
        ("create_datetime", Kind::Time),
        ("state", Kind::OptText),
        ("unit_uuid", Kind::Uuid),
        ("creator_uuid", Kind::Uuid),
    ],
    references: &["unit_uuid", "creator_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const EDGES: Table = Table {
    name: "unit_node_edges",
    file: "unit_node_edges",
    columns: &[
        ("uuid", Kind::Uuid),
        ("node_output_uuid", Kind::Uuid),
        ("node_input_uuid", Kind::Uuid),
        ("creator_uuid", Kind::Uuid),
        ("create_datetime", Kind::Time),
    ],
    references: &["node_output_uuid", "node_input_uuid", "creator_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const PERMISSIONS: Table = Table {
    name: "permissions",
    file: "permissions",
    columns: &[
        ("uuid", Kind::Uuid),
        ("agent_uuid", Kind::Uuid),
        ("agent_type", Kind::Enum(is::<PermissionEntities>)),
        ("resource_uuid", Kind::Uuid),
        ("resource_type", Kind::Enum(is::<PermissionEntities>)),
    ],
    references: &["agent_uuid", "resource_uuid"],
    unique_name: None,
    tombstones: None,
};

fn is_panel_type(s: &str) -> bool {
    domain::dashboard::PanelType::parse(s).is_some()
}

/// Dashboards travel without their sync state, which describes the source's Grafana.
pub const DASHBOARDS: Table = Table {
    name: "dashboards",
    file: "dashboards",
    columns: &[
        ("uuid", Kind::Uuid),
        ("grafana_uuid", Kind::Uuid),
        ("name", Kind::Text),
        ("create_datetime", Kind::Time),
        ("creator_uuid", Kind::Uuid),
    ],
    references: &["creator_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const PANELS: Table = Table {
    name: "dashboard_panels",
    file: "dashboard_panels",
    columns: &[
        ("uuid", Kind::Uuid),
        ("panel_type", Kind::Enum(is_panel_type)),
        ("title", Kind::Text),
        ("create_datetime", Kind::Time),
        ("creator_uuid", Kind::Uuid),
        ("dashboard_uuid", Kind::Uuid),
    ],
    references: &["creator_uuid", "dashboard_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const PANEL_NODES: Table = Table {
    name: "dashboard_panel_nodes",
    file: "dashboard_panel_nodes",
    columns: &[
        ("uuid", Kind::Uuid),
        ("is_last_data", Kind::Bool),
        ("is_forced_to_json", Kind::Bool),
        ("create_datetime", Kind::Time),
        ("creator_uuid", Kind::Uuid),
        ("unit_node_uuid", Kind::Uuid),
        ("dashboard_panel_uuid", Kind::Uuid),
    ],
    references: &["creator_uuid", "unit_node_uuid", "dashboard_panel_uuid"],
    unique_name: None,
    tombstones: None,
};

pub const LOGS: Table = Table {
    name: "unit_logs",
    file: "unit_logs",
    columns: &[
        ("uuid", Kind::Uuid),
        ("unit_uuid", Kind::Uuid),
        ("level", Kind::Enum(is::<LogLevel>)),
        ("text", Kind::Text),
        ("create_datetime", Kind::Time),
        ("expiration_datetime", Kind::Time),
    ],
    references: &["unit_uuid"],
    unique_name: None,
    tombstones: None,
};

/// Every table in archive order: a table only references tables before it.
pub const TABLES: &[&Table] = &[
    &USERS,
    &REGISTRIES,
    &CREDENTIALS,
    &REPOS,
    &UNITS,
    &NODES,
    &EDGES,
    &PERMISSIONS,
    &DASHBOARDS,
    &PANELS,
    &PANEL_NODES,
    &LOGS,
];

impl Table {
    /// `SELECT <columns> FROM <table> WHERE ` (the caller appends the condition).
    pub fn select(&self) -> Sql {
        let cols: Vec<&str> = self.columns.iter().map(|(c, _)| *c).collect();
        Sql::new(&format!(
            "SELECT {} FROM {} WHERE ",
            cols.join(", "),
            self.name
        ))
    }

    /// The export's query: [`Table::select`] with `condition`, in a stable order (creation
    /// time then uuid where the table has one, else uuid).
    pub fn export_query(&self, condition: &Sql) -> Sql {
        let mut q = self.select();
        q.append(condition);
        if self.columns.iter().any(|(c, _)| *c == "create_datetime") {
            q.push(" ORDER BY create_datetime, uuid");
        } else {
            q.push(" ORDER BY uuid");
        }
        q
    }

    /// One row as a JSON record.
    pub fn record(&self, row: &AnyRow) -> StoreResult<Map<String, Json>> {
        let mut out = Map::new();
        for (col, kind) in self.columns {
            let v = match kind {
                Kind::Int | Kind::OptInt => Json::from(row.int(col)?),
                Kind::Bool => Json::Bool(row.boolean(col)?),
                Kind::Text | Kind::Uuid | Kind::Time | Kind::Enum(_) => {
                    Json::String(row.text(col)?)
                }
                Kind::OptText | Kind::OptUuid | Kind::OptTime | Kind::OptEnum(_) => {
                    row.opt_text(col)?.map(Json::String).unwrap_or(Json::Null)
                }
            };
            out.insert(col.to_string(), v);
        }
        Ok(out)
    }

    /// Checks a record from an archive: exactly our columns, each of its kind.
    pub fn check(&self, rec: &Map<String, Json>) -> Result<(), String> {
        for key in rec.keys() {
            if !self.columns.iter().any(|(c, _)| c == key) {
                return Err(format!("unknown field {key:?}"));
            }
        }
        for (col, kind) in self.columns {
            let v = rec.get(*col).unwrap_or(&Json::Null);
            let ok = match (kind, v) {
                (
                    Kind::OptText | Kind::OptUuid | Kind::OptTime | Kind::OptEnum(_) | Kind::OptInt,
                    Json::Null,
                ) => true,
                (Kind::Int, v) => v.as_i64().is_some(),
                (Kind::OptInt, v) => v.as_i64().is_some_and(|n| n >= 0),
                (Kind::Bool, v) => v.is_boolean(),
                (Kind::Text | Kind::OptText, Json::String(_)) => true,
                (Kind::Uuid | Kind::OptUuid, Json::String(s)) => Uuid::parse_str(s).is_ok(),
                (Kind::Time | Kind::OptTime, Json::String(s)) => domain::parse_time(s).is_some(),
                (Kind::Enum(f) | Kind::OptEnum(f), Json::String(s)) => f(s),
                _ => false,
            };
            if !ok {
                return Err(format!("field {col:?} has an invalid value {v}"));
            }
        }
        // the rules the REST API applies to the same fields
        if let Some(col) = self.unique_name {
            let name = rec.get(col).and_then(Json::as_str).unwrap_or_default();
            if !domain::is_valid_name(name) {
                return Err(format!(
                    "field {col:?}: {name:?} is not a valid name (4 to 20 of A-Z a-z 0-9 _ . -)"
                ));
            }
        }
        if matches!(self.name, "dashboards" | "dashboard_panels") {
            let col = if self.name == "dashboards" {
                "name"
            } else {
                "title"
            };
            let title = rec.get(col).and_then(Json::as_str).unwrap_or_default();
            if !domain::dashboard::is_valid_title(title) {
                return Err(format!(
                    "field {col:?}: {title:?} is not a valid title (4 to 100 characters, no control characters)"
                ));
            }
        }
        if let Some(topic) = rec.get("topic_name").and_then(Json::as_str) {
            if !domain::is_valid_topic_name(topic) {
                return Err(format!(
                    "field \"topic_name\": {topic:?} is not a valid topic name"
                ));
            }
        }
        Ok(())
    }

    /// `INSERT` of a checked record. Optional columns the record leaves out or null are left
    /// out of the statement, so the column's default applies (an archive from before a column
    /// existed imports with today's default).
    pub fn insert(&self, rec: &Map<String, Json>) -> Sql {
        let present: Vec<&(&str, Kind)> = self
            .columns
            .iter()
            .filter(|(c, _)| !rec.get(*c).unwrap_or(&Json::Null).is_null())
            .collect();
        let cols: Vec<&str> = present.iter().map(|(c, _)| *c).collect();
        let mut q = Sql::new(&format!(
            "INSERT INTO {} ({}) VALUES (",
            self.name,
            cols.join(", ")
        ));
        for (i, (col, kind)) in present.into_iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            let v = &rec[*col];
            match kind {
                Kind::Int | Kind::OptInt => q.bind(v.as_i64().unwrap_or_default()),
                Kind::Bool => q.bind(v.as_bool().unwrap_or_default()),
                _ => q.bind(v.as_str().map(str::to_string)),
            };
        }
        q.push(")");
        q
    }

    /// Whether a row with this uuid exists, or existed and may not come back (tombstones).
    pub fn uuid_taken(&self, uuid: &str) -> Sql {
        let mut q = Sql::new(&format!(
            "SELECT (SELECT COUNT(*) FROM {} WHERE uuid = ",
            self.name
        ));
        q.bind(uuid).push(")");
        if let Some(tombstones) = self.tombstones {
            q.push(&format!(
                " + (SELECT COUNT(*) FROM {tombstones} WHERE uuid = "
            ))
            .bind(uuid)
            .push(")");
        }
        q
    }

    /// Whether the unique name is taken.
    pub fn name_taken(&self, name: &str) -> Option<Sql> {
        let col = self.unique_name?;
        let mut q = Sql::new(&format!(
            "SELECT COUNT(*) FROM {} WHERE {col} = ",
            self.name
        ));
        q.bind(name);
        Some(q)
    }
}

/// The uuid of an existing registry with this URL.
pub async fn registry_by_url<'e, E: Executor<'e, Database = Any>>(
    e: E,
    url: &str,
) -> StoreResult<Option<String>> {
    let mut q = Sql::new("SELECT uuid FROM repository_registries WHERE repository_url = ");
    q.bind(url);
    match q.fetch_optional(e).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// `WHERE` condition selecting the rows of `table` in the account export of user `u`
/// (`credentials`: with registry credentials); `None`: not exported. `unit_logs` answers an
/// empty condition: its rows are read unit by unit through the telemetry store.
pub fn account_condition(table: &Table, u: Uuid, credentials: bool) -> Option<Sql> {
    let mut q = Sql::new("");
    let units = |q: &mut Sql| {
        q.push("(SELECT uuid FROM units WHERE creator_uuid = ")
            .bind(u)
            .push(")");
    };
    let nodes = |q: &mut Sql| {
        q.push("(SELECT n.uuid FROM unit_nodes n JOIN units x ON x.uuid = n.unit_uuid WHERE x.creator_uuid = ")
            .bind(u)
            .push(")");
    };
    match table.name {
        "users" => {
            q.push("uuid = ").bind(u);
        }
        "repository_registries" => {
            q.push("uuid IN (SELECT repository_registry_uuid FROM repos WHERE creator_uuid = ")
                .bind(u)
                .push(") OR uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.creator_uuid = ")
                .bind(u)
                .push(") OR creator_uuid = ")
                .bind(u);
        }
        "registry_credentials" if credentials => {
            q.push("user_uuid = ").bind(u);
        }
        "registry_credentials" => return None,
        "repos" => {
            q.push("creator_uuid = ")
                .bind(u)
                .push(" OR uuid IN (SELECT repo_uuid FROM units WHERE creator_uuid = ")
                .bind(u)
                .push(")");
        }
        "units" => {
            q.push("creator_uuid = ").bind(u);
        }
        "unit_nodes" => {
            q.push("unit_uuid IN ");
            units(&mut q);
        }
        "unit_node_edges" => {
            q.push("node_output_uuid IN ");
            nodes(&mut q);
            q.push(" OR node_input_uuid IN ");
            nodes(&mut q);
        }
        "permissions" => {
            q.push("agent_uuid = ").bind(u).push(" OR agent_uuid IN ");
            units(&mut q);
            q.push(" OR resource_uuid IN ");
            units(&mut q);
            q.push(" OR resource_uuid IN ");
            nodes(&mut q);
            q.push(" OR resource_uuid IN (SELECT uuid FROM repos WHERE creator_uuid = ")
                .bind(u)
                .push(")");
        }
        "dashboards" => {
            q.push("creator_uuid = ").bind(u);
        }
        "dashboard_panels" => {
            q.push("dashboard_uuid IN (SELECT uuid FROM dashboards WHERE creator_uuid = ")
                .bind(u)
                .push(")");
        }
        "dashboard_panel_nodes" => {
            q.push("dashboard_panel_uuid IN (SELECT p.uuid FROM dashboard_panels p JOIN dashboards d ON d.uuid = p.dashboard_uuid WHERE d.creator_uuid = ")
                .bind(u)
                .push(")");
        }
        // read unit by unit through the telemetry store, not with this condition
        "unit_logs" => {}
        _ => return None,
    }
    Some(q)
}

/// `WHERE` condition selecting the rows of `table` a move of unit `x` (created by `owner`)
/// carries; `None`: not carried.
pub fn unit_condition(table: &Table, x: Uuid, owner: Uuid, credentials: bool) -> Option<Sql> {
    let mut q = Sql::new("");
    match table.name {
        "users" => {
            q.push("uuid = ").bind(owner);
        }
        "repository_registries" => {
            q.push("uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.uuid = ")
            .bind(x)
            .push(")");
        }
        "registry_credentials" if credentials => {
            q.push("user_uuid = ")
            .bind(owner)
            .push(" AND repository_registry_uuid IN (SELECT p.repository_registry_uuid FROM repos p JOIN units x ON x.repo_uuid = p.uuid WHERE x.uuid = ")
            .bind(x)
            .push(")");
        }
        "registry_credentials" => return None,
        "repos" => {
            q.push("uuid IN (SELECT repo_uuid FROM units WHERE uuid = ")
                .bind(x)
                .push(")");
        }
        "units" => {
            q.push("uuid = ").bind(x);
        }
        "unit_nodes" => {
            q.push("unit_uuid = ").bind(x);
        }
        "unit_node_edges" => {
            q.push("node_output_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ")
                .bind(x)
                .push(") AND node_input_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ")
                .bind(x)
                .push(")");
        }
        "permissions" => {
            q.push("(agent_uuid = ")
                .bind(owner)
                .push(" OR agent_uuid = ")
                .bind(x)
                .push(") AND (resource_uuid = ")
                .bind(x)
                .push(" OR resource_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ")
                .bind(x)
                .push(") OR resource_uuid IN (SELECT repo_uuid FROM units WHERE uuid = ")
                .bind(x)
                .push("))");
        }
        // a move carries the device, not its history: the logs stay until they expire
        _ => return None,
    }
    Some(q)
}

/// Whether `user` already has credentials for `registry` here.
pub fn credentials_present(user: &str, registry: &str) -> Sql {
    let mut q = Sql::new("SELECT COUNT(*) FROM registry_credentials WHERE user_uuid = ");
    q.bind(user.to_string())
        .push(" AND repository_registry_uuid = ")
        .bind(registry.to_string());
    q
}

/// Whether `agent` already has a permission on `resource` here.
pub fn permission_present(agent: &str, resource: &str) -> Sql {
    let mut q = Sql::new("SELECT COUNT(*) FROM permissions WHERE agent_uuid = ");
    q.bind(agent.to_string())
        .push(" AND resource_uuid = ")
        .bind(resource.to_string());
    q
}
