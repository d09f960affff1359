//! SQL for units.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Executor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::unit_nodes::UnitNode;
use super::{map_rows, push_visibility, RowExt, Sql, VisibilityScope};
use crate::domain::{LogLevel, Order, UnitFirmwareUpdateStatus, VisibilityLevel};
use crate::store::StoreResult;

/// The last `state` a device reported (wire `UnitStateRead`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UnitState {
    #[serde(default)]
    pub ifconfig: Vec<serde_json::Value>,
    pub millis: Option<f64>,
    pub mem_free: Option<f64>,
    pub mem_alloc: Option<f64>,
    pub freq: Option<f64>,
    #[serde(default)]
    pub statvfs: Vec<serde_json::Value>,
    pub pu_commit_version: Option<String>,
}

/// A unit; serializes as the wire `UnitRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Unit {
    pub uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub create_datetime: String,
    pub is_auto_update_from_repo_unit: bool,
    pub target_firmware_platform: Option<String>,
    pub repo_branch: Option<String>,
    pub repo_commit: Option<String>,
    pub unit_state: Option<UnitState>,
    pub current_commit_version: Option<String>,
    pub last_update_datetime: String,
    pub creator_uuid: Uuid,
    pub repo_uuid: Uuid,
    pub firmware_update_status: Option<UnitFirmwareUpdateStatus>,
    pub firmware_update_error: Option<String>,
    pub last_firmware_update_datetime: Option<String>,
    /// From which level a log line of this unit becomes an alert (default Error).
    pub alert_log_level: LogLevel,
    /// No alerts are sent before this time; None: not muted.
    pub alerts_muted_until: Option<String>,
    /// Only filled in lists with `is_include_output_unit_nodes=true`.
    pub unit_nodes: Vec<UnitNode>,
    #[serde(skip)]
    pub cipher_env: Option<String>,
    #[serde(skip)]
    pub cipher_state_storage: Option<String>,
    /// Raised by each token rotation; only the token of this generation is accepted.
    #[serde(skip)]
    pub token_generation: i64,
}

fn from_row(r: &AnyRow) -> StoreResult<Unit> {
    Ok(Unit {
        uuid: r.uuid("uuid")?,
        visibility_level: r.parsed("visibility_level")?,
        name: r.text("name")?,
        create_datetime: r.text("create_datetime")?,
        is_auto_update_from_repo_unit: r.boolean("is_auto_update_from_repo_unit")?,
        target_firmware_platform: r.opt_text("target_firmware_platform")?,
        repo_branch: r.opt_text("repo_branch")?,
        repo_commit: r.opt_text("repo_commit")?,
        unit_state: r
            .opt_text("unit_state")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        current_commit_version: r.opt_text("current_commit_version")?,
        last_update_datetime: r.text("last_update_datetime")?,
        creator_uuid: r.uuid("creator_uuid")?,
        repo_uuid: r.uuid("repo_uuid")?,
        firmware_update_status: r.opt_parsed("firmware_update_status")?,
        firmware_update_error: r.opt_text("firmware_update_error")?,
        last_firmware_update_datetime: r.opt_text("last_firmware_update_datetime")?,
        alert_log_level: r.parsed("alert_log_level")?,
        alerts_muted_until: r.opt_text("alerts_muted_until")?,
        unit_nodes: Vec::new(),
        cipher_env: r.opt_text("cipher_env")?,
        cipher_state_storage: r.opt_text("cipher_state_storage")?,
        token_generation: r.int("token_generation")?,
    })
}

pub async fn insert<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    u: &Unit,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO units (uuid, visibility_level, name, create_datetime, last_update_datetime, is_auto_update_from_repo_unit, target_firmware_platform, repo_branch, repo_commit, unit_state, cipher_env, cipher_state_storage, current_commit_version, firmware_update_status, firmware_update_error, last_firmware_update_datetime, creator_uuid, repo_uuid, alert_log_level, alerts_muted_until, token_generation) VALUES (");
    q.bind(u.uuid)
        .push(", ")
        .bind(u.visibility_level.as_str())
        .push(", ")
        .bind(&u.name);
    q.push(", ")
        .bind(&u.create_datetime)
        .push(", ")
        .bind(&u.last_update_datetime);
    q.push(", ").bind(u.is_auto_update_from_repo_unit);
    q.push(", ").bind(u.target_firmware_platform.clone());
    q.push(", ")
        .bind(u.repo_branch.clone())
        .push(", ")
        .bind(u.repo_commit.clone());
    q.push(", ").bind(
        u.unit_state
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default()),
    );
    q.push(", ")
        .bind(u.cipher_env.clone())
        .push(", ")
        .bind(u.cipher_state_storage.clone());
    q.push(", ").bind(u.current_commit_version.clone());
    q.push(", ")
        .bind(u.firmware_update_status.map(|s| s.as_str()));
    q.push(", ").bind(u.firmware_update_error.clone());
    q.push(", ").bind(u.last_firmware_update_datetime.clone());
    q.push(", ")
        .bind(u.creator_uuid)
        .push(", ")
        .bind(u.repo_uuid);
    q.push(", ")
        .bind(u.alert_log_level.as_str())
        .push(", ")
        .bind(u.alerts_muted_until.clone())
        .push(", ")
        .bind(u.token_generation)
        .push(")");
    q.execute(db).await?;
    Ok(())
}

/// Raises a unit's token generation by one and returns the new one (None: no such unit).
pub async fn next_token_generation(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<i64>> {
    let mut q = Sql::new("UPDATE units SET token_generation = token_generation + 1 WHERE uuid = ");
    q.bind(uuid).push(" RETURNING token_generation");
    q.fetch_optional(db)
        .await?
        .map(|r| r.int("token_generation"))
        .transpose()
}

/// Saves the user-editable fields.
pub async fn update<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    u: &Unit,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET visibility_level = ");
    q.bind(u.visibility_level.as_str())
        .push(", name = ")
        .bind(&u.name);
    q.push(", last_update_datetime = ")
        .bind(&u.last_update_datetime);
    q.push(", is_auto_update_from_repo_unit = ")
        .bind(u.is_auto_update_from_repo_unit);
    q.push(", target_firmware_platform = ")
        .bind(u.target_firmware_platform.clone());
    q.push(", repo_branch = ").bind(u.repo_branch.clone());
    q.push(", repo_commit = ").bind(u.repo_commit.clone());
    q.push(" WHERE uuid = ").bind(u.uuid);
    q.execute(db).await?;
    Ok(())
}

/// The unit's alert settings (threshold level and mute).
pub async fn set_alerts(
    db: &AnyPool,
    uuid: Uuid,
    level: LogLevel,
    muted_until: Option<&str>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET alert_log_level = ");
    q.bind(level.as_str())
        .push(", alerts_muted_until = ")
        .bind(muted_until)
        .push(" WHERE uuid = ")
        .bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn set_env<'e>(
    db: impl Executor<'e, Database = Any>,
    uuid: Uuid,
    cipher_env: Option<String>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET cipher_env = ");
    q.bind(cipher_env).push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn set_state_storage(
    db: &AnyPool,
    uuid: Uuid,
    cipher: Option<String>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET cipher_state_storage = ");
    q.bind(cipher).push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn set_firmware_status(
    db: &AnyPool,
    uuid: Uuid,
    status: UnitFirmwareUpdateStatus,
    error: Option<String>,
    last_update: Option<&str>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET firmware_update_status = ");
    q.bind(status.as_str())
        .push(", firmware_update_error = ")
        .bind(error);
    q.push(", last_firmware_update_datetime = ")
        .bind(last_update);
    q.push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// What a device's `state` message changes on its unit row.
pub struct ReportedStateWrite<'a> {
    pub unit_state: &'a str,
    pub commit: &'a str,
    pub at: &'a str,
    /// A firmware status transition (status, error, last firmware update time) when one happened.
    pub firmware: Option<(UnitFirmwareUpdateStatus, Option<&'a str>, Option<&'a str>)>,
}

impl ReportedStateWrite<'_> {
    /// The same change on a row in memory (the service's row cache writes through with it).
    pub fn apply(&self, unit: &mut Unit) {
        unit.unit_state = serde_json::from_str(self.unit_state).ok();
        unit.current_commit_version = Some(self.commit.to_string());
        unit.last_update_datetime = self.at.to_string();
        if let Some((status, error, last)) = self.firmware {
            unit.firmware_update_status = Some(status);
            unit.firmware_update_error = error.map(str::to_string);
            unit.last_firmware_update_datetime = last.map(str::to_string);
        }
    }
}

pub async fn set_reported_state<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
    w: &ReportedStateWrite<'_>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET unit_state = ");
    q.bind(w.unit_state)
        .push(", current_commit_version = ")
        .bind(w.commit);
    q.push(", last_update_datetime = ").bind(w.at);
    if let Some((status, error, last)) = w.firmware {
        q.push(", firmware_update_status = ").bind(status.as_str());
        q.push(", firmware_update_error = ").bind(error);
        q.push(", last_firmware_update_datetime = ").bind(last);
    }
    q.push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Units whose `Update` was sent before `before` and never answered.
pub async fn stale_update_requests(db: &AnyPool, before: &str) -> StoreResult<Vec<Uuid>> {
    let mut q = Sql::new("SELECT uuid FROM units WHERE firmware_update_status = ");
    q.bind(UnitFirmwareUpdateStatus::RequestSent.as_str())
        .push(" AND last_firmware_update_datetime < ")
        .bind(before);
    let rows = q.fetch_all(db).await?;
    rows.iter().map(|r| r.uuid("uuid")).collect()
}

/// Marks one pending `Update` as failed, unless the unit answered in the meantime.
pub async fn fail_update_request(
    db: &AnyPool,
    uuid: Uuid,
    before: &str,
    error: &str,
) -> StoreResult<bool> {
    let mut q = Sql::new("UPDATE units SET firmware_update_status = ");
    q.bind(UnitFirmwareUpdateStatus::Error.as_str())
        .push(", firmware_update_error = ")
        .bind(error)
        .push(", last_firmware_update_datetime = NULL WHERE uuid = ")
        .bind(uuid)
        .push(" AND firmware_update_status = ")
        .bind(UnitFirmwareUpdateStatus::RequestSent.as_str())
        .push(" AND last_firmware_update_datetime < ")
        .bind(before);
    Ok(q.execute(db).await? > 0)
}

pub async fn get<'e>(
    db: impl Executor<'e, Database = Any>,
    uuid: Uuid,
) -> StoreResult<Option<Unit>> {
    let mut q = Sql::new("SELECT * FROM units WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The unit of that name (names are unique).
pub async fn by_name(db: &AnyPool, name: &str) -> StoreResult<Option<Unit>> {
    let mut q = Sql::new("SELECT * FROM units WHERE name = ");
    q.bind(name);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn name_taken(db: &AnyPool, name: &str, except: Option<Uuid>) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM units WHERE name = ");
    q.bind(name);
    if let Some(u) = except {
        q.push(" AND uuid <> ").bind(u);
    }
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn count(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM units").fetch_i64(db).await
}

/// Public units (what federation publishes), in uuid order.
pub async fn public_page(db: &AnyPool, offset: i64, limit: i64) -> StoreResult<Vec<Unit>> {
    let mut q = Sql::new("SELECT * FROM units WHERE visibility_level = ");
    q.bind(VisibilityLevel::Public.as_str())
        .push(" ORDER BY uuid");
    q.page(offset, limit);
    map_rows(q.fetch_all(db).await?, from_row)
}

pub async fn count_public(db: &AnyPool) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM units WHERE visibility_level = ");
    q.bind(VisibilityLevel::Public.as_str());
    q.fetch_i64(db).await
}

pub async fn count_by_repo(db: &AnyPool, repo: Uuid) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM units WHERE repo_uuid = ");
    q.bind(repo);
    q.fetch_i64(db).await
}

pub async fn count_by_creator(db: &AnyPool, creator: Uuid) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM units WHERE creator_uuid = ");
    q.bind(creator);
    q.fetch_i64(db).await
}

/// The units of `uuids` that exist (500 per statement), in no particular order.
pub async fn by_uuids(db: &AnyPool, uuids: &[Uuid]) -> StoreResult<Vec<Unit>> {
    let mut out = Vec::with_capacity(uuids.len());
    for chunk in uuids.chunks(500) {
        let mut q = Sql::new("SELECT * FROM units WHERE uuid IN ");
        q.bind_list(chunk.iter().copied());
        out.extend(map_rows(q.fetch_all(db).await?, from_row)?);
    }
    Ok(out)
}

pub async fn by_repo(db: &AnyPool, repo: Uuid) -> StoreResult<Vec<Unit>> {
    let mut q = Sql::new("SELECT * FROM units WHERE repo_uuid = ");
    q.bind(repo).push(" ORDER BY create_datetime");
    map_rows(q.fetch_all(db).await?, from_row)
}

/// `(current_commit_version, count)` of a repo's units, largest group first.
pub async fn versions_of_repo(db: &AnyPool, repo: Uuid) -> StoreResult<Vec<(Option<String>, i64)>> {
    let mut q =
        Sql::new("SELECT current_commit_version AS v, COUNT(*) AS n FROM units WHERE repo_uuid = ");
    q.bind(repo)
        .push(" GROUP BY current_commit_version ORDER BY n DESC, v");
    map_rows(q.fetch_all(db).await?, |r| {
        Ok((r.opt_text("v")?, r.int("n")?))
    })
}

/// Deletes a unit and keeps its uuid as a tombstone: no unit gets that uuid again (import
/// treats it as taken, see `transfer::UNITS`), so a token left on the deleted unit's device
/// never works again.
pub async fn delete(db: &mut sqlx::AnyConnection, uuid: Uuid, at: &str) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO unit_tombstones (uuid, delete_datetime) VALUES (");
    q.bind(uuid)
        .push(", ")
        .bind(at)
        .push(") ON CONFLICT (uuid) DO NOTHING");
    q.execute(&mut *db).await?;
    let mut q = Sql::new("DELETE FROM units WHERE uuid = ");
    q.bind(uuid);
    q.execute(&mut *db).await?;
    Ok(())
}

#[derive(Default, Clone)]
pub struct UnitFilter {
    pub uuids: Vec<Uuid>,
    pub creator_uuid: Option<Uuid>,
    pub repo_uuid: Option<Uuid>,
    pub repos_uuids: Vec<Uuid>,
    pub search_string: Option<String>,
    pub is_auto_update_from_repo_unit: Option<bool>,
    pub order_by_unit_name: Option<Order>,
    pub order_by_create_date: Option<Order>,
    pub order_by_last_update: Option<Order>,
    /// Only units owning a node that matches this filter in this scope (used with
    /// `is_include_output_unit_nodes`).
    pub owning_nodes: Option<(super::unit_nodes::UnitNodeFilter, VisibilityScope)>,
    pub offset: i64,
    pub limit: i64,
}

pub async fn list(
    db: &AnyPool,
    f: &UnitFilter,
    scope: &VisibilityScope,
) -> StoreResult<(i64, Vec<Unit>)> {
    let mut cond = Sql::new(" FROM units WHERE 1=1");
    if !f.uuids.is_empty() {
        cond.push(" AND uuid IN ")
            .bind_list(f.uuids.iter().copied());
    }
    if let Some(c) = f.creator_uuid {
        cond.push(" AND creator_uuid = ").bind(c);
    }
    if let Some(r) = f.repo_uuid {
        cond.push(" AND repo_uuid = ").bind(r);
    }
    if !f.repos_uuids.is_empty() {
        cond.push(" AND repo_uuid IN ")
            .bind_list(f.repos_uuids.iter().copied());
    }
    if let Some(a) = f.is_auto_update_from_repo_unit {
        cond.push(" AND is_auto_update_from_repo_unit = ").bind(a);
    }
    if let Some((nodes, node_scope)) = &f.owning_nodes {
        cond.push(" AND uuid IN (SELECT unit_uuid FROM unit_nodes WHERE 1=1");
        cond.append(&super::unit_nodes::conditions(nodes, node_scope))
            .push(")");
    }
    super::push_search(&mut cond, f.search_string.as_deref(), &["name"]);
    push_visibility(&mut cond, scope, "");
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY name ")
        .push(f.order_by_unit_name.unwrap_or(Order::Asc).sql());
    q.push(", create_datetime ")
        .push(f.order_by_create_date.unwrap_or(Order::Desc).sql());
    q.push(", last_update_datetime ")
        .push(f.order_by_last_update.unwrap_or(Order::Desc).sql());
    q.page(f.offset, f.limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}
