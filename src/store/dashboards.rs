//! SQL for Grafana dashboards (migration 0012).

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::{map_rows, RowExt, Sql, StoreError};
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
