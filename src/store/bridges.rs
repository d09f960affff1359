//! SQL for MQTT bridges between instances (migration 0005). Each instance keeps one row per
//! bridge under the uuid the Input side chose; `role` says which end this instance is.

use sqlx::any::AnyRow;
use sqlx::AnyPool;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::store::{StoreError, StoreResult};

pub use crate::domain::{BridgeRole, BridgeState};

/// A stored bridge. `credential` is the AES-GCM ciphertext (Output side only).
#[derive(Clone, Debug)]
pub struct Bridge {
    pub uuid: Uuid,
    pub role: BridgeRole,
    pub local_node_uuid: Uuid,
    pub peer_domain: String,
    pub output_domain: String,
    pub output_node_uuid: Uuid,
    pub topic: String,
    pub creator_uuid: Option<Uuid>,
    pub mqtt_host: Option<String>,
    pub mqtt_port: Option<i64>,
    pub credential: Option<String>,
    pub state: BridgeState,
    pub last_error: Option<String>,
    pub create_datetime: String,
    pub last_update_datetime: String,
}

fn from_row(r: &AnyRow) -> StoreResult<Bridge> {
    Ok(Bridge {
        uuid: r.uuid("uuid")?,
        role: r.parsed("role")?,
        local_node_uuid: r.uuid("local_node_uuid")?,
        peer_domain: r.text("peer_domain")?,
        output_domain: r.text("output_domain")?,
        output_node_uuid: r.uuid("output_node_uuid")?,
        topic: r.text("topic")?,
        creator_uuid: r.opt_uuid("creator_uuid")?,
        mqtt_host: r.opt_text("mqtt_host")?,
        mqtt_port: opt_int(r, "mqtt_port")?,
        credential: r.opt_text("credential")?,
        state: r.parsed("state")?,
        last_error: r.opt_text("last_error")?,
        create_datetime: r.text("create_datetime")?,
        last_update_datetime: r.text("last_update_datetime")?,
    })
}

fn opt_int(r: &AnyRow, col: &str) -> StoreResult<Option<i64>> {
    use sqlx::Row;
    r.try_get::<Option<i64>, _>(col)
        .map_err(|e| StoreError::column(col, e))
}

pub async fn insert(db: &AnyPool, b: &Bridge) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO bridges (uuid, role, local_node_uuid, peer_domain, output_domain, output_node_uuid, topic, creator_uuid, mqtt_host, mqtt_port, credential, state, last_error, create_datetime, last_update_datetime) VALUES (");
    q.bind(b.uuid)
        .push(", ")
        .bind(b.role.as_str())
        .push(", ")
        .bind(b.local_node_uuid)
        .push(", ")
        .bind(&b.peer_domain)
        .push(", ")
        .bind(&b.output_domain)
        .push(", ")
        .bind(b.output_node_uuid)
        .push(", ")
        .bind(&b.topic)
        .push(", ")
        .bind(b.creator_uuid)
        .push(", ")
        .bind(b.mqtt_host.clone());
    match b.mqtt_port {
        Some(p) => q.push(", ").bind(p),
        None => q.push(", NULL"),
    };
    q.push(", ")
        .bind(b.credential.clone())
        .push(", ")
        .bind(b.state.as_str())
        .push(", ")
        .bind(b.last_error.clone())
        .push(", ")
        .bind(&b.create_datetime)
        .push(", ")
        .bind(&b.last_update_datetime)
        .push(")");
    q.execute(db).await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<Bridge>> {
    let mut q = Sql::new("SELECT * FROM bridges WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The bridges a user sees: those they created (Input side) and those carrying one of their
/// Output nodes (Output side), newest first.
pub async fn by_user(db: &AnyPool, user: Uuid) -> StoreResult<Vec<Bridge>> {
    let mut q = Sql::new("SELECT b.* FROM bridges b JOIN unit_nodes n ON n.uuid = b.local_node_uuid WHERE (b.role = 'Input' AND (b.creator_uuid = ");
    q.bind(user)
        .push(" OR n.creator_uuid = ")
        .bind(user)
        .push(")) OR (b.role = 'Output' AND n.creator_uuid = ")
        .bind(user)
        .push(") ORDER BY b.create_datetime DESC, b.uuid");
    map_rows(q.fetch_all(db).await?, from_row)
}

/// Every bridge of one role, oldest first (the carrier reads the Output ones).
pub async fn by_role(db: &AnyPool, role: BridgeRole) -> StoreResult<Vec<Bridge>> {
    let mut q = Sql::new("SELECT * FROM bridges WHERE role = ");
    q.bind(role.as_str())
        .push(" ORDER BY create_datetime, uuid");
    map_rows(q.fetch_all(db).await?, from_row)
}

/// An Input-side bridge with this link already exists.
pub async fn link_exists(
    db: &AnyPool,
    role: BridgeRole,
    local_node: Uuid,
    peer_domain: &str,
    output_node: Uuid,
) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM bridges WHERE role = ");
    q.bind(role.as_str())
        .push(" AND local_node_uuid = ")
        .bind(local_node)
        .push(" AND peer_domain = ")
        .bind(peer_domain)
        .push(" AND output_node_uuid = ")
        .bind(output_node);
    Ok(q.fetch_i64(db).await? > 0)
}

/// Bridges ending at or starting from a local node (counted against `max_connections`).
pub async fn count_for_node(db: &AnyPool, node: Uuid) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM bridges WHERE local_node_uuid = ");
    q.bind(node);
    q.fetch_i64(db).await
}

/// `(input node uuid, bridged topic)` of the Active Input-side bridges of a unit's nodes, oldest
/// first (schema.json lists them after local links).
pub async fn active_topics_of_unit(db: &AnyPool, unit: Uuid) -> StoreResult<Vec<(Uuid, String)>> {
    let mut q = Sql::new("SELECT b.local_node_uuid, b.topic FROM bridges b JOIN unit_nodes n ON n.uuid = b.local_node_uuid WHERE b.role = 'Input' AND b.state = 'Active' AND n.unit_uuid = ");
    q.bind(unit).push(" ORDER BY b.create_datetime, b.uuid");
    q.fetch_all(db)
        .await?
        .iter()
        .map(|r| Ok((r.uuid("local_node_uuid")?, r.text("topic")?)))
        .collect()
}

/// Whether a unit has an Active Input-side bridge delivering `topic` to one of its nodes.
pub async fn unit_receives(db: &AnyPool, unit: Uuid, topic: &str) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM bridges b JOIN unit_nodes n ON n.uuid = b.local_node_uuid WHERE b.role = 'Input' AND b.state = 'Active' AND b.topic = ");
    q.bind(topic).push(" AND n.unit_uuid = ").bind(unit);
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn set_state(
    db: &AnyPool,
    uuid: Uuid,
    state: BridgeState,
    last_error: Option<&str>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE bridges SET state = ");
    q.bind(state.as_str())
        .push(", last_error = ")
        .bind(last_error)
        .push(", last_update_datetime = ")
        .bind(crate::domain::now())
        .push(" WHERE uuid = ")
        .bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Marks an Input-side bridge Active with the topic its Output side announced.
pub async fn activate(db: &AnyPool, uuid: Uuid, topic: &str) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE bridges SET state = 'Active', last_error = NULL, topic = ");
    q.bind(topic)
        .push(", last_update_datetime = ")
        .bind(crate::domain::now())
        .push(" WHERE uuid = ")
        .bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Returns whether a row was deleted.
pub async fn delete(db: &AnyPool, uuid: Uuid) -> StoreResult<bool> {
    let mut q = Sql::new("DELETE FROM bridges WHERE uuid = ");
    q.bind(uuid);
    Ok(q.execute(db).await? > 0)
}
