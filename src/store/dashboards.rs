//! SQL for Grafana dashboards (migration 0012), their panels and the nodes linked to panels
//! (migration 0013).

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::{map_rows, Backend, Db, RowExt, Sql, StoreError};
use crate::domain::Order;
use crate::store::StoreResult;

#[derive(Clone, Debug, PartialEq)]
pub struct DashboardRow {
    pub uuid: Uuid,
    pub grafana_uuid: Uuid,
    pub name: String,
    pub dashboard_url: Option<String>,
    pub inc_last_version: Option<i64>,
    pub sync_status: Option<String>,
    pub sync_error: Option<String>,
    pub sync_last_datetime: Option<String>,
    pub create_datetime: String,
    pub creator_uuid: Uuid,
}

fn from_row(r: &AnyRow) -> StoreResult<DashboardRow> {
    Ok(DashboardRow {
        uuid: r.uuid("uuid")?,
        grafana_uuid: r.uuid("grafana_uuid")?,
        name: r.text("name")?,
        dashboard_url: r.opt_text("dashboard_url")?,
        inc_last_version: r
            .try_get::<Option<i64>, _>("inc_last_version")
            .map_err(|e| StoreError::column("inc_last_version", e))?,
        sync_status: r.opt_text("sync_status")?,
        sync_error: r.opt_text("sync_error")?,
        sync_last_datetime: r.opt_text("sync_last_datetime")?,
        create_datetime: r.text("create_datetime")?,
        creator_uuid: r.uuid("creator_uuid")?,
    })
}

pub async fn insert(db: &AnyPool, d: &DashboardRow) -> StoreResult<()> {
    Sql::new(
        "INSERT INTO dashboards (uuid, grafana_uuid, name, create_datetime, creator_uuid) VALUES (",
    )
    .bind(d.uuid)
    .push(", ")
    .bind(d.grafana_uuid)
    .push(", ")
    .bind(d.name.as_str())
    .push(", ")
    .bind(d.create_datetime.as_str())
    .push(", ")
    .bind(d.creator_uuid)
    .push(")")
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<DashboardRow>> {
    Sql::new("SELECT * FROM dashboards WHERE uuid = ")
        .bind(uuid)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A user's dashboards: (how many match, the page).
pub async fn list(
    db: &AnyPool,
    creator: Uuid,
    search: Option<&str>,
    order: Order,
    offset: i64,
    limit: i64,
) -> StoreResult<(i64, Vec<DashboardRow>)> {
    let mut cond = Sql::new(" FROM dashboards WHERE creator_uuid = ");
    cond.bind(creator);
    super::push_search(&mut cond, search, &["name"]);
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY create_datetime ")
        .push(order.sql())
        .push(", uuid");
    q.page(offset, limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

pub async fn delete(db: &AnyPool, uuid: Uuid) -> StoreResult<u64> {
    Sql::new("DELETE FROM dashboards WHERE uuid = ")
        .bind(uuid)
        .execute(db)
        .await
}

/// A dashboard's panel (upstream's `dashboard_panels`); `panel_type` is the plugin id.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelRow {
    pub uuid: Uuid,
    pub panel_type: String,
    pub title: String,
    pub create_datetime: String,
    pub creator_uuid: Uuid,
    pub dashboard_uuid: Uuid,
}

fn panel_from_row(r: &AnyRow) -> StoreResult<PanelRow> {
    Ok(PanelRow {
        uuid: r.uuid("uuid")?,
        panel_type: r.text("panel_type")?,
        title: r.text("title")?,
        create_datetime: r.text("create_datetime")?,
        creator_uuid: r.uuid("creator_uuid")?,
        dashboard_uuid: r.uuid("dashboard_uuid")?,
    })
}

/// Takes the write lock of one row for the rest of the transaction, so that a count checked
/// after it sees every concurrent writer's insert: `FOR UPDATE` on PostgreSQL (each statement
/// of a READ COMMITTED transaction reads anew once the lock is granted); on SQLite the write
/// transaction (`Db::begin_write`, `BEGIN IMMEDIATE`) already holds the database's only write
/// lock.
async fn lock_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    table: &str,
    uuid: Uuid,
) -> StoreResult<()> {
    if backend == Backend::Postgres {
        Sql::new(&format!("SELECT uuid FROM {table} WHERE uuid = "))
            .bind(uuid)
            .push(" FOR UPDATE")
            .fetch_optional(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Adds a panel unless the dashboard already holds `limit`; two concurrent adds cannot both
/// take the last place (the dashboard's row is locked first). Returns false when it is full.
pub async fn insert_panel(db: &Db, p: &PanelRow, limit: i64) -> StoreResult<bool> {
    let mut tx = db.begin_write().await?;
    lock_row(&mut tx, db.backend, "dashboards", p.dashboard_uuid).await?;
    let n = Sql::new("INSERT INTO dashboard_panels (uuid, panel_type, title, create_datetime, creator_uuid, dashboard_uuid) SELECT ")
        .bind(p.uuid)
        .push(", ")
        .bind(p.panel_type.as_str())
        .push(", ")
        .bind(p.title.as_str())
        .push(", ")
        .bind(p.create_datetime.as_str())
        .push(", ")
        .bind(p.creator_uuid)
        .push(", ")
        .bind(p.dashboard_uuid)
        .push(" WHERE (SELECT COUNT(*) FROM dashboard_panels WHERE dashboard_uuid = ")
        .bind(p.dashboard_uuid)
        .push(") < ")
        .bind(limit)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn get_panel(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<PanelRow>> {
    Sql::new("SELECT * FROM dashboard_panels WHERE uuid = ")
        .bind(uuid)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(panel_from_row)
        .transpose()
}

/// A dashboard's panels, oldest first.
pub async fn panels(db: &AnyPool, dashboard: Uuid) -> StoreResult<Vec<PanelRow>> {
    let rows = Sql::new("SELECT * FROM dashboard_panels WHERE dashboard_uuid = ")
        .bind(dashboard)
        .push(" ORDER BY create_datetime, uuid")
        .fetch_all(db)
        .await?;
    map_rows(rows, panel_from_row)
}

pub async fn delete_panel(db: &AnyPool, uuid: Uuid) -> StoreResult<u64> {
    Sql::new("DELETE FROM dashboard_panels WHERE uuid = ")
        .bind(uuid)
        .execute(db)
        .await
}

/// A node linked to a panel (upstream's `mtm_panels_unit_nodes`), with its unit's name.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelNodeRow {
    pub uuid: Uuid,
    pub is_last_data: bool,
    pub is_forced_to_json: bool,
    pub create_datetime: String,
    pub creator_uuid: Uuid,
    pub unit_node_uuid: Uuid,
    pub dashboard_panel_uuid: Uuid,
}

fn link_from_row(r: &AnyRow) -> StoreResult<PanelNodeRow> {
    Ok(PanelNodeRow {
        uuid: r.uuid("uuid")?,
        is_last_data: r.boolean("is_last_data")?,
        is_forced_to_json: r.boolean("is_forced_to_json")?,
        create_datetime: r.text("create_datetime")?,
        creator_uuid: r.uuid("creator_uuid")?,
        unit_node_uuid: r.uuid("unit_node_uuid")?,
        dashboard_panel_uuid: r.uuid("dashboard_panel_uuid")?,
    })
}

/// Links a node to a panel unless the panel already holds `limit` nodes; two concurrent links
/// cannot both take the last place (the panel's row is locked first: a lone INSERT ... SELECT
/// whose count reads a snapshot let two PostgreSQL writers both pass). Returns false when the
/// panel is full; a node linked twice is `AlreadyExists`.
pub async fn insert_link(db: &Db, l: &PanelNodeRow, limit: i64) -> StoreResult<bool> {
    let mut tx = db.begin_write().await?;
    lock_row(
        &mut tx,
        db.backend,
        "dashboard_panels",
        l.dashboard_panel_uuid,
    )
    .await?;
    let mut q = Sql::new("INSERT INTO dashboard_panel_nodes (uuid, is_last_data, is_forced_to_json, create_datetime, creator_uuid, unit_node_uuid, dashboard_panel_uuid) SELECT ");
    q.bind(l.uuid)
        .push(", ")
        .bind(l.is_last_data)
        .push(", ")
        .bind(l.is_forced_to_json)
        .push(", ")
        .bind(l.create_datetime.as_str())
        .push(", ")
        .bind(l.creator_uuid)
        .push(", ")
        .bind(l.unit_node_uuid)
        .push(", ")
        .bind(l.dashboard_panel_uuid)
        .push(" WHERE (SELECT COUNT(*) FROM dashboard_panel_nodes WHERE dashboard_panel_uuid = ")
        .bind(l.dashboard_panel_uuid)
        .push(") < ")
        .bind(limit);
    let n = q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(n == 1)
}

pub async fn get_link(db: &AnyPool, panel: Uuid, node: Uuid) -> StoreResult<Option<PanelNodeRow>> {
    Sql::new("SELECT * FROM dashboard_panel_nodes WHERE dashboard_panel_uuid = ")
        .bind(panel)
        .push(" AND unit_node_uuid = ")
        .bind(node)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(link_from_row)
        .transpose()
}

/// The links of a dashboard's panels, oldest first.
pub async fn links_of_dashboard(db: &AnyPool, dashboard: Uuid) -> StoreResult<Vec<PanelNodeRow>> {
    let rows = Sql::new("SELECT l.* FROM dashboard_panel_nodes l JOIN dashboard_panels p ON p.uuid = l.dashboard_panel_uuid WHERE p.dashboard_uuid = ")
        .bind(dashboard)
        .push(" ORDER BY l.create_datetime, l.uuid")
        .fetch_all(db)
        .await?;
    map_rows(rows, link_from_row)
}

/// The nodes linked to a dashboard's panels, each once, in one query.
pub async fn linked_nodes(
    db: &AnyPool,
    dashboard: Uuid,
) -> StoreResult<Vec<super::unit_nodes::UnitNode>> {
    let rows = Sql::new("SELECT * FROM unit_nodes WHERE uuid IN (SELECT l.unit_node_uuid FROM dashboard_panel_nodes l JOIN dashboard_panels p ON p.uuid = l.dashboard_panel_uuid WHERE p.dashboard_uuid = ")
        .bind(dashboard)
        .push(")")
        .fetch_all(db)
        .await?;
    map_rows(rows, super::unit_nodes::from_row)
}

pub async fn delete_link(db: &AnyPool, panel: Uuid, node: Uuid) -> StoreResult<u64> {
    Sql::new("DELETE FROM dashboard_panel_nodes WHERE dashboard_panel_uuid = ")
        .bind(panel)
        .push(" AND unit_node_uuid = ")
        .bind(node)
        .execute(db)
        .await
}

/// Records a sync's outcome.
pub async fn set_sync(db: &AnyPool, d: &DashboardRow) -> StoreResult<()> {
    Sql::new("UPDATE dashboards SET dashboard_url = ")
        .bind(d.dashboard_url.clone())
        .push(", inc_last_version = ")
        .bind(d.inc_last_version)
        .push(", sync_status = ")
        .bind(d.sync_status.clone())
        .push(", sync_error = ")
        .bind(d.sync_error.clone())
        .push(", sync_last_datetime = ")
        .bind(d.sync_last_datetime.clone())
        .push(" WHERE uuid = ")
        .bind(d.uuid)
        .execute(db)
        .await?;
    Ok(())
}
