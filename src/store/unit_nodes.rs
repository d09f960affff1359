//! SQL for unit nodes and the edges between them.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, push_visibility, RowExt, Sql, VisibilityScope};
use crate::domain::{Order, UnitNodeType, VisibilityLevel};
use crate::store::StoreResult;

/// A node; serializes as the wire `UnitNodeRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UnitNode {
    pub uuid: Uuid,
    #[serde(rename = "type")]
    pub node_type: UnitNodeType,
    pub visibility_level: VisibilityLevel,
    pub is_rewritable_input: bool,
    pub max_connections: i64,
    pub topic_name: String,
    pub last_update_datetime: String,
    pub is_data_pipe_active: bool,
    pub data_pipe_yml: Option<String>,
    pub data_pipe_status: Option<String>,
    pub data_pipe_error: Option<String>,
    pub create_datetime: String,
    pub state: Option<String>,
    pub unit_uuid: Uuid,
    pub creator_uuid: Uuid,
}

/// A link from an Output node to an Input node (wire `UnitNodeEdgeRead`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UnitNodeEdge {
    pub uuid: Uuid,
    pub node_output_uuid: Uuid,
    pub node_input_uuid: Uuid,
    #[serde(skip)]
    pub creator_uuid: Uuid,
}

pub(super) fn from_row(r: &AnyRow) -> StoreResult<UnitNode> {
    Ok(UnitNode {
        uuid: r.uuid("uuid")?,
        node_type: r.parsed("type")?,
        visibility_level: r.parsed("visibility_level")?,
        is_rewritable_input: r.boolean("is_rewritable_input")?,
        max_connections: r.int("max_connections")?,
        topic_name: r.text("topic_name")?,
        last_update_datetime: r.text("last_update_datetime")?,
        is_data_pipe_active: r.boolean("is_data_pipe_active")?,
        data_pipe_yml: r.opt_text("data_pipe_yml")?,
        data_pipe_status: r.opt_text("data_pipe_status")?,
        data_pipe_error: r.opt_text("data_pipe_error")?,
        create_datetime: r.text("create_datetime")?,
        state: r.opt_text("state")?,
        unit_uuid: r.uuid("unit_uuid")?,
        creator_uuid: r.uuid("creator_uuid")?,
    })
}

pub async fn insert<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    n: &UnitNode,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO unit_nodes (uuid, type, visibility_level, is_rewritable_input, max_connections, topic_name, last_update_datetime, is_data_pipe_active, data_pipe_yml, data_pipe_status, data_pipe_error, create_datetime, state, unit_uuid, creator_uuid) VALUES (");
    q.bind(n.uuid)
        .push(", ")
        .bind(n.node_type.as_str())
        .push(", ")
        .bind(n.visibility_level.as_str());
    q.push(", ")
        .bind(n.is_rewritable_input)
        .push(", ")
        .bind(n.max_connections);
    q.push(", ")
        .bind(&n.topic_name)
        .push(", ")
        .bind(&n.last_update_datetime);
    q.push(", ")
        .bind(n.is_data_pipe_active)
        .push(", ")
        .bind(n.data_pipe_yml.clone());
    q.push(", ")
        .bind(n.data_pipe_status.clone())
        .push(", ")
        .bind(n.data_pipe_error.clone());
    q.push(", ")
        .bind(&n.create_datetime)
        .push(", ")
        .bind(n.state.clone());
    q.push(", ")
        .bind(n.unit_uuid)
        .push(", ")
        .bind(n.creator_uuid)
        .push(")");
    q.execute(db).await?;
    Ok(())
}

/// Saves the user-editable settings of a node.
pub async fn update_settings(db: &AnyPool, n: &UnitNode) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE unit_nodes SET visibility_level = ");
    q.bind(n.visibility_level.as_str());
    q.push(", is_rewritable_input = ")
        .bind(n.is_rewritable_input);
    q.push(", is_data_pipe_active = ")
        .bind(n.is_data_pipe_active);
    q.push(", max_connections = ").bind(n.max_connections);
    q.push(", last_update_datetime = ")
        .bind(&n.last_update_datetime);
    q.push(" WHERE uuid = ").bind(n.uuid);
    q.execute(db).await?;
    Ok(())
}

/// Saves a node's data pipe config (the stored JSON text), status and error.
pub async fn set_data_pipe(
    db: &AnyPool,
    uuid: Uuid,
    yml: Option<&str>,
    status: Option<&str>,
    error: Option<&str>,
    now: &str,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE unit_nodes SET data_pipe_yml = ");
    q.bind(yml)
        .push(", data_pipe_status = ")
        .bind(status)
        .push(", data_pipe_error = ")
        .bind(error)
        .push(", last_update_datetime = ")
        .bind(now);
    q.push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Changes only the state (upstream reset other fields here; we deliberately do not).
pub async fn set_state<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
    state: Option<&str>,
    now: &str,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE unit_nodes SET state = ");
    q.bind(state).push(", last_update_datetime = ").bind(now);
    q.push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Nodes per statement of [`set_states`] (3 binds each, under SQLite's 999).
const STATES_PER_STATEMENT: usize = 128;

/// [`set_state`] for many nodes, a statement per 128 of them: the MQTT core writes a batch's
/// node values this way (one statement per node cost a round trip each).
pub async fn set_states(
    conn: &mut sqlx::AnyConnection,
    values: &[(Uuid, &str)],
    now: &str,
) -> StoreResult<()> {
    for chunk in values.chunks(STATES_PER_STATEMENT) {
        let mut q = Sql::new("WITH v (uuid, state) AS (VALUES ");
        for (i, (uuid, state)) in chunk.iter().enumerate() {
            q.push(if i > 0 { ", (" } else { "(" })
                .bind(*uuid)
                .push(", ")
                .bind(*state)
                .push(")");
        }
        q.push(") UPDATE unit_nodes SET state = v.state, last_update_datetime = ")
            .bind(now)
            .push(" FROM v WHERE unit_nodes.uuid = v.uuid");
        if chunk.len() < STATES_PER_STATEMENT {
            q.one_off();
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Raises the visibility of a unit's nodes that are less strict than `level`.
pub async fn raise_visibility<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    unit: Uuid,
    level: VisibilityLevel,
) -> StoreResult<()> {
    let weaker: Vec<&str> = VisibilityLevel::ALL
        .iter()
        .filter(|l| l.strictness() < level.strictness())
        .map(|l| l.as_str())
        .collect();
    if weaker.is_empty() {
        return Ok(());
    }
    let mut q = Sql::new("UPDATE unit_nodes SET visibility_level = ");
    q.bind(level.as_str())
        .push(" WHERE unit_uuid = ")
        .bind(unit);
    q.push(" AND visibility_level IN ").bind_list(weaker);
    q.execute(db).await?;
    Ok(())
}

pub async fn delete<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM unit_nodes WHERE uuid = ");
    q.bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<UnitNode>> {
    let mut q = Sql::new("SELECT * FROM unit_nodes WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn by_unit<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    unit: Uuid,
) -> StoreResult<Vec<UnitNode>> {
    let mut q = Sql::new("SELECT * FROM unit_nodes WHERE unit_uuid = ");
    q.bind(unit).push(" ORDER BY create_datetime, topic_name");
    map_rows(q.fetch_all(db).await?, from_row)
}

pub async fn count(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM unit_nodes")
        .fetch_i64(db)
        .await
}

/// A unit's nodes, each with the `(uuid, topic_name)` of the Output nodes linked to it (for
/// Input nodes), in one query: what schema.json needs on every device request.
pub async fn by_unit_with_links(
    db: &AnyPool,
    unit: Uuid,
) -> StoreResult<Vec<(UnitNode, Vec<(Uuid, String)>)>> {
    let mut q = Sql::new("SELECT n.*, o.uuid AS linked_output_uuid, o.topic_name AS linked_output_topic FROM unit_nodes n LEFT JOIN unit_node_edges e ON e.node_input_uuid = n.uuid LEFT JOIN unit_nodes o ON o.uuid = e.node_output_uuid WHERE n.unit_uuid = ");
    q.bind(unit)
        .push(" ORDER BY n.create_datetime, n.topic_name, n.uuid, e.create_datetime, o.uuid");
    let mut out: Vec<(UnitNode, Vec<(Uuid, String)>)> = Vec::new();
    for r in q.fetch_all(db).await? {
        let node = from_row(&r)?;
        let link = match r.opt_uuid("linked_output_uuid")? {
            Some(o) => Some((o, r.text("linked_output_topic")?)),
            None => None,
        };
        match out.last_mut() {
            Some((last, links)) if last.uuid == node.uuid => links.extend(link),
            _ => out.push((node, link.into_iter().collect())),
        }
    }
    Ok(out)
}

#[derive(Default, Clone)]
pub struct UnitNodeFilter {
    pub uuids: Vec<Uuid>,
    pub unit_uuid: Option<Uuid>,
    pub search_string: Option<String>,
    pub node_type: Vec<UnitNodeType>,
    pub order_by_create_date: Option<Order>,
    /// Input nodes linked from this Output node.
    pub output_uuid: Option<Uuid>,
    /// Output nodes linked to this Input node.
    pub linked_to_input: Option<Uuid>,
    pub unit_uuids: Vec<Uuid>,
    pub offset: i64,
    pub limit: i64,
}

/// `WHERE` conditions (after ` FROM unit_nodes WHERE 1=1`) of a node filter and scope; also
/// used as a subquery by unit lists.
pub(crate) fn conditions(f: &UnitNodeFilter, scope: &VisibilityScope) -> Sql {
    let mut cond = Sql::new("");
    if !f.uuids.is_empty() {
        cond.push(" AND uuid IN ")
            .bind_list(f.uuids.iter().copied());
    }
    if let Some(u) = f.unit_uuid {
        cond.push(" AND unit_uuid = ").bind(u);
    }
    if !f.unit_uuids.is_empty() {
        cond.push(" AND unit_uuid IN ")
            .bind_list(f.unit_uuids.iter().copied());
    }
    if !f.node_type.is_empty() {
        cond.push(" AND type IN ")
            .bind_list(f.node_type.iter().map(|t| t.as_str()));
    }
    if let Some(o) = f.output_uuid {
        cond.push(
            " AND uuid IN (SELECT node_input_uuid FROM unit_node_edges WHERE node_output_uuid = ",
        );
        cond.bind(o).push(")");
    }
    if let Some(i) = f.linked_to_input {
        cond.push(
            " AND uuid IN (SELECT node_output_uuid FROM unit_node_edges WHERE node_input_uuid = ",
        );
        cond.bind(i).push(")");
    }
    super::push_search(&mut cond, f.search_string.as_deref(), &["topic_name"]);
    push_visibility(&mut cond, scope, "");
    cond
}

pub async fn list(
    db: &AnyPool,
    f: &UnitNodeFilter,
    scope: &VisibilityScope,
) -> StoreResult<(i64, Vec<UnitNode>)> {
    let mut cond = Sql::new(" FROM unit_nodes WHERE 1=1");
    cond.append(&conditions(f, scope));
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY create_datetime ")
        .push(f.order_by_create_date.unwrap_or(Order::Desc).sql());
    q.push(", uuid");
    q.page(f.offset, f.limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

fn edge_from_row(r: &AnyRow) -> StoreResult<UnitNodeEdge> {
    Ok(UnitNodeEdge {
        uuid: r.uuid("uuid")?,
        node_output_uuid: r.uuid("node_output_uuid")?,
        node_input_uuid: r.uuid("node_input_uuid")?,
        creator_uuid: r.uuid("creator_uuid")?,
    })
}

pub async fn insert_edge<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    e: &UnitNodeEdge,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO unit_node_edges (uuid, node_output_uuid, node_input_uuid, creator_uuid, create_datetime) VALUES (");
    q.bind(e.uuid)
        .push(", ")
        .bind(e.node_output_uuid)
        .push(", ")
        .bind(e.node_input_uuid);
    q.push(", ")
        .bind(e.creator_uuid)
        .push(", ")
        .bind(crate::domain::now())
        .push(")");
    q.execute(db).await?;
    Ok(())
}

pub async fn get_edge(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<UnitNodeEdge>> {
    let mut q = Sql::new("SELECT * FROM unit_node_edges WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(edge_from_row)
        .transpose()
}

/// The edge from `output` to `input`, if any.
pub async fn find_edge(
    db: &AnyPool,
    output: Uuid,
    input: Uuid,
) -> StoreResult<Option<UnitNodeEdge>> {
    let mut q = Sql::new("SELECT * FROM unit_node_edges WHERE node_output_uuid = ");
    q.bind(output).push(" AND node_input_uuid = ").bind(input);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(edge_from_row)
        .transpose()
}

pub async fn edge_exists(db: &AnyPool, output: Uuid, input: Uuid) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM unit_node_edges WHERE node_output_uuid = ");
    q.bind(output).push(" AND node_input_uuid = ").bind(input);
    Ok(q.fetch_i64(db).await? > 0)
}

/// Edges touching a node as output or as input.
pub async fn count_edges(db: &AnyPool, node: Uuid, as_output: bool) -> StoreResult<i64> {
    let col = if as_output {
        "node_output_uuid"
    } else {
        "node_input_uuid"
    };
    let mut q = Sql::new("SELECT COUNT(*) FROM unit_node_edges WHERE ");
    q.push(col).push(" = ").bind(node);
    q.fetch_i64(db).await
}

pub async fn count_all_edges(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM unit_node_edges")
        .fetch_i64(db)
        .await
}

pub async fn delete_edge<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM unit_node_edges WHERE uuid = ");
    q.bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// One end of a link, for counting the links that justify a permission grant.
#[derive(Clone, Copy, Debug)]
pub enum LinkEnd {
    Node(Uuid),
    /// Any node of this unit.
    Unit(Uuid),
}

/// Edges from `output` to `input` (each a node or any node of a unit).
pub async fn count_links<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    output: LinkEnd,
    input: LinkEnd,
) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM unit_node_edges e JOIN unit_nodes o ON o.uuid = e.node_output_uuid JOIN unit_nodes i ON i.uuid = e.node_input_uuid WHERE ");
    match output {
        LinkEnd::Node(n) => q.push("o.uuid = ").bind(n),
        LinkEnd::Unit(u) => q.push("o.unit_uuid = ").bind(u),
    };
    match input {
        LinkEnd::Node(n) => q.push(" AND i.uuid = ").bind(n),
        LinkEnd::Unit(u) => q.push(" AND i.unit_uuid = ").bind(u),
    };
    q.fetch_i64(db).await
}
