//! SQL for permission rows (agent -> resource grants).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::PermissionEntities;
use crate::store::StoreResult;

/// A grant; serializes as the wire `PermissionRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Permission {
    pub uuid: Uuid,
    pub agent_uuid: Uuid,
    pub agent_type: PermissionEntities,
    pub resource_uuid: Uuid,
    pub resource_type: PermissionEntities,
}

fn from_row(r: &AnyRow) -> StoreResult<Permission> {
    Ok(Permission {
        uuid: r.uuid("uuid")?,
        agent_uuid: r.uuid("agent_uuid")?,
        agent_type: r.parsed("agent_type")?,
        resource_uuid: r.uuid("resource_uuid")?,
        resource_type: r.parsed("resource_type")?,
    })
}

/// Inserts a grant unless the same agent already has one on the resource.
pub async fn grant<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    agent: (Uuid, PermissionEntities),
    resource: (Uuid, PermissionEntities),
) -> StoreResult<()> {
    insert_grant(db, agent, resource).await.map(|_| ())
}

/// As [`grant`]; false when the agent already had a grant on the resource.
pub async fn insert_grant<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    agent: (Uuid, PermissionEntities),
    resource: (Uuid, PermissionEntities),
) -> StoreResult<bool> {
    let mut q = Sql::new("INSERT INTO permissions (uuid, agent_uuid, agent_type, resource_uuid, resource_type) VALUES (");
    q.bind(Uuid::new_v4())
        .push(", ")
        .bind(agent.0)
        .push(", ")
        .bind(agent.1.as_str());
    q.push(", ")
        .bind(resource.0)
        .push(", ")
        .bind(resource.1.as_str());
    q.push(") ON CONFLICT (agent_uuid, resource_uuid) DO NOTHING");
    Ok(q.execute(db).await? == 1)
}

pub async fn get(db: &AnyPool, agent: Uuid, resource: Uuid) -> StoreResult<Option<Permission>> {
    let mut q = Sql::new("SELECT * FROM permissions WHERE agent_uuid = ");
    q.bind(agent).push(" AND resource_uuid = ").bind(resource);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn exists(db: &AnyPool, agent: Uuid, resource: Uuid) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM permissions WHERE agent_uuid = ");
    q.bind(agent).push(" AND resource_uuid = ").bind(resource);
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn list_for_resource(
    db: &AnyPool,
    resource: Uuid,
    agent_type: Option<PermissionEntities>,
    offset: i64,
    limit: i64,
) -> StoreResult<(i64, Vec<Permission>)> {
    let mut cond = Sql::new(" FROM permissions WHERE resource_uuid = ");
    cond.bind(resource);
    if let Some(t) = agent_type {
        cond.push(" AND agent_type = ").bind(t.as_str());
    }
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY agent_type, agent_uuid");
    q.page(offset, limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

pub async fn revoke<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    agent: Uuid,
    resource: Uuid,
) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM permissions WHERE agent_uuid = ");
    q.bind(agent).push(" AND resource_uuid = ").bind(resource);
    q.execute(db).await
}

/// Removes every grant held by or given on `uuid` (when it is deleted).
pub async fn purge<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM permissions WHERE agent_uuid = ");
    q.bind(uuid).push(" OR resource_uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Removes every grant held by or given on any node of `unit`, in one statement (so a node
/// added concurrently cannot be missed).
pub async fn purge_unit_nodes<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    unit: Uuid,
) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM permissions WHERE resource_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ");
    q.bind(unit);
    q.push(") OR agent_uuid IN (SELECT uuid FROM unit_nodes WHERE unit_uuid = ");
    q.bind(unit).push(")");
    q.execute(db).await?;
    Ok(())
}
