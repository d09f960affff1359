//! SQL for repos.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, push_visibility, RowExt, Sql, VisibilityScope};
use crate::domain::{Order, VisibilityLevel};
use crate::store::StoreResult;

/// A repo; serializes as the wire `RepoRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Repo {
    pub uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub create_datetime: String,
    pub default_branch: Option<String>,
    pub is_auto_update_repo: bool,
    pub default_commit: Option<String>,
    pub is_only_tag_update: bool,
    pub is_compilable_repo: bool,
    pub last_update_datetime: String,
    pub creator_uuid: Uuid,
    pub repository_registry_uuid: Uuid,
}

fn from_row(r: &AnyRow) -> StoreResult<Repo> {
    Ok(Repo {
        uuid: r.uuid("uuid")?,
        visibility_level: r.parsed("visibility_level")?,
        name: r.text("name")?,
        create_datetime: r.text("create_datetime")?,
        default_branch: r.opt_text("default_branch")?,
        is_auto_update_repo: r.boolean("is_auto_update_repo")?,
        default_commit: r.opt_text("default_commit")?,
        is_only_tag_update: r.boolean("is_only_tag_update")?,
        is_compilable_repo: r.boolean("is_compilable_repo")?,
        last_update_datetime: r.text("last_update_datetime")?,
        creator_uuid: r.uuid("creator_uuid")?,
        repository_registry_uuid: r.uuid("repository_registry_uuid")?,
    })
}

pub async fn insert<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    r: &Repo,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO repos (uuid, visibility_level, name, create_datetime, last_update_datetime, default_branch, is_auto_update_repo, default_commit, is_only_tag_update, is_compilable_repo, creator_uuid, repository_registry_uuid) VALUES (");
    q.bind(r.uuid)
        .push(", ")
        .bind(r.visibility_level.as_str())
        .push(", ")
        .bind(&r.name);
    q.push(", ")
        .bind(&r.create_datetime)
        .push(", ")
        .bind(&r.last_update_datetime);
    q.push(", ")
        .bind(r.default_branch.clone())
        .push(", ")
        .bind(r.is_auto_update_repo);
    q.push(", ")
        .bind(r.default_commit.clone())
        .push(", ")
        .bind(r.is_only_tag_update);
    q.push(", ")
        .bind(r.is_compilable_repo)
        .push(", ")
        .bind(r.creator_uuid);
    q.push(", ").bind(r.repository_registry_uuid).push(")");
    q.execute(db).await?;
    Ok(())
}

pub async fn update(db: &AnyPool, r: &Repo) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE repos SET visibility_level = ");
    q.bind(r.visibility_level.as_str())
        .push(", name = ")
        .bind(&r.name);
    q.push(", last_update_datetime = ")
        .bind(&r.last_update_datetime);
    q.push(", default_branch = ").bind(r.default_branch.clone());
    q.push(", is_auto_update_repo = ")
        .bind(r.is_auto_update_repo);
    q.push(", default_commit = ").bind(r.default_commit.clone());
    q.push(", is_only_tag_update = ").bind(r.is_only_tag_update);
    q.push(", is_compilable_repo = ").bind(r.is_compilable_repo);
    q.push(" WHERE uuid = ").bind(r.uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<Repo>> {
    let mut q = Sql::new("SELECT * FROM repos WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The repo of that exact name (repo names are unique on an instance).
pub async fn by_name(db: &AnyPool, name: &str) -> StoreResult<Option<Repo>> {
    let mut q = Sql::new("SELECT * FROM repos WHERE name = ");
    q.bind(name);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn name_taken(db: &AnyPool, name: &str, except: Option<Uuid>) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM repos WHERE name = ");
    q.bind(name);
    if let Some(u) = except {
        q.push(" AND uuid <> ").bind(u);
    }
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn count(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM repos").fetch_i64(db).await
}

/// Public repos (what federation publishes), in uuid order.
pub async fn public_page(db: &AnyPool, offset: i64, limit: i64) -> StoreResult<Vec<Repo>> {
    let mut q = Sql::new("SELECT * FROM repos WHERE visibility_level = ");
    q.bind(VisibilityLevel::Public.as_str())
        .push(" ORDER BY uuid");
    q.page(offset, limit);
    map_rows(q.fetch_all(db).await?, from_row)
}

pub async fn count_public(db: &AnyPool) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM repos WHERE visibility_level = ");
    q.bind(VisibilityLevel::Public.as_str());
    q.fetch_i64(db).await
}

pub async fn count_by_registry(db: &AnyPool, registry: Uuid) -> StoreResult<i64> {
    let mut q = Sql::new("SELECT COUNT(*) FROM repos WHERE repository_registry_uuid = ");
    q.bind(registry);
    q.fetch_i64(db).await
}

pub async fn all(db: &AnyPool) -> StoreResult<Vec<Repo>> {
    map_rows(
        Sql::new("SELECT * FROM repos ORDER BY create_datetime")
            .fetch_all(db)
            .await?,
        from_row,
    )
}

/// Repos whose units follow the repo's target version automatically.
pub async fn auto_updating(db: &AnyPool) -> StoreResult<Vec<Repo>> {
    let mut q = Sql::new("SELECT * FROM repos WHERE is_auto_update_repo = ");
    q.bind(true).push(" ORDER BY create_datetime");
    map_rows(q.fetch_all(db).await?, from_row)
}

pub async fn delete<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM repos WHERE uuid = ");
    q.bind(uuid);
    q.execute(db).await?;
    Ok(())
}

#[derive(Default)]
pub struct RepoFilter {
    pub repository_registry_uuid: Option<Uuid>,
    pub uuids: Vec<Uuid>,
    pub creator_uuid: Option<Uuid>,
    pub creators_uuids: Vec<Uuid>,
    pub search_string: Option<String>,
    pub is_auto_update_repo: Option<bool>,
    pub order_by_create_date: Option<Order>,
    pub order_by_last_update: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

pub async fn list(
    db: &AnyPool,
    f: &RepoFilter,
    scope: &VisibilityScope,
) -> StoreResult<(i64, Vec<Repo>)> {
    let mut cond = Sql::new(" FROM repos r JOIN repository_registries g ON g.uuid = r.repository_registry_uuid WHERE 1=1");
    if let Some(g) = f.repository_registry_uuid {
        cond.push(" AND r.repository_registry_uuid = ").bind(g);
    }
    if !f.uuids.is_empty() {
        cond.push(" AND r.uuid IN ")
            .bind_list(f.uuids.iter().copied());
    }
    if let Some(c) = f.creator_uuid {
        cond.push(" AND r.creator_uuid = ").bind(c);
    }
    if !f.creators_uuids.is_empty() {
        cond.push(" AND r.creator_uuid IN ")
            .bind_list(f.creators_uuids.iter().copied());
    }
    if let Some(a) = f.is_auto_update_repo {
        cond.push(" AND r.is_auto_update_repo = ").bind(a);
    }
    super::push_search(
        &mut cond,
        f.search_string.as_deref(),
        &["r.name", "g.repository_url", "r.default_branch"],
    );
    push_visibility(&mut cond, scope, "r.");
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT r.*");
    q.append(&cond);
    q.push(" ORDER BY r.create_datetime ")
        .push(f.order_by_create_date.unwrap_or(Order::Desc).sql());
    q.push(", r.last_update_datetime ")
        .push(f.order_by_last_update.unwrap_or(Order::Desc).sql());
    q.page(f.offset, f.limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}
