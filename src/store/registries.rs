//! SQL for repository registries and their per-user credentials.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::{CredentialStatus, GitPlatform, Order, RepositoryRegistryStatus};
use crate::store::StoreResult;

/// A registry; serializes as the wire `RepositoryRegistryRead` once `branches` is filled in.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RepositoryRegistry {
    pub uuid: Uuid,
    pub platform: GitPlatform,
    pub repository_url: String,
    pub is_public_repository: bool,
    pub releases_data: Option<String>,
    pub local_repository_size: i64,
    pub sync_status: Option<RepositoryRegistryStatus>,
    pub sync_error: Option<String>,
    pub sync_last_datetime: Option<String>,
    pub create_datetime: String,
    pub last_update_datetime: String,
    pub creator_uuid: Option<Uuid>,
    /// Branches of the local mirror, sorted; not stored.
    pub branches: Vec<String>,
}

fn from_row(r: &AnyRow) -> StoreResult<RepositoryRegistry> {
    Ok(RepositoryRegistry {
        uuid: r.uuid("uuid")?,
        platform: r.parsed("platform")?,
        repository_url: r.text("repository_url")?,
        is_public_repository: r.boolean("is_public_repository")?,
        releases_data: r.opt_text("releases_data")?,
        local_repository_size: r.int("local_repository_size")?,
        sync_status: r.opt_parsed("sync_status")?,
        sync_error: r.opt_text("sync_error")?,
        sync_last_datetime: r.opt_text("sync_last_datetime")?,
        create_datetime: r.text("create_datetime")?,
        last_update_datetime: r.text("last_update_datetime")?,
        creator_uuid: r.opt_uuid("creator_uuid")?,
        branches: Vec::new(),
    })
}

pub async fn insert(db: &AnyPool, r: &RepositoryRegistry) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO repository_registries (uuid, platform, repository_url, is_public_repository, releases_data, local_repository_size, sync_status, sync_error, sync_last_datetime, create_datetime, last_update_datetime, creator_uuid) VALUES (");
    q.bind(r.uuid)
        .push(", ")
        .bind(r.platform.as_str())
        .push(", ")
        .bind(&r.repository_url);
    q.push(", ")
        .bind(r.is_public_repository)
        .push(", ")
        .bind(r.releases_data.clone());
    q.push(", ")
        .bind(r.local_repository_size)
        .push(", ")
        .bind(r.sync_status.map(|s| s.as_str()));
    q.push(", ")
        .bind(r.sync_error.clone())
        .push(", ")
        .bind(r.sync_last_datetime.clone());
    q.push(", ")
        .bind(&r.create_datetime)
        .push(", ")
        .bind(&r.last_update_datetime);
    q.push(", ").bind(r.creator_uuid).push(")");
    q.execute(db).await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<RepositoryRegistry>> {
    let mut q = Sql::new("SELECT * FROM repository_registries WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn url_taken(db: &AnyPool, url: &str) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM repository_registries WHERE repository_url = ");
    q.bind(url);
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn all_uuids(db: &AnyPool) -> StoreResult<Vec<Uuid>> {
    let rows = Sql::new("SELECT uuid FROM repository_registries ORDER BY create_datetime")
        .fetch_all(db)
        .await?;
    map_rows(rows, |r| r.uuid("uuid"))
}

pub async fn count(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM repository_registries")
        .fetch_i64(db)
        .await
}

/// Marks a sync as started unless one started less than `guard_after` (a timestamp) ago.
/// Returns false when another sync holds the registry.
pub async fn begin_sync(
    db: &AnyPool,
    uuid: Uuid,
    now: &str,
    guard_after: &str,
) -> StoreResult<bool> {
    let mut q = Sql::new("UPDATE repository_registries SET sync_status = 'Processing', sync_error = NULL, sync_last_datetime = ");
    q.bind(now).push(" WHERE uuid = ").bind(uuid);
    q.push(" AND NOT (COALESCE(sync_status, '') = 'Processing' AND COALESCE(sync_last_datetime, '') > ").bind(guard_after);
    q.push(")");
    Ok(q.execute(db).await? == 1)
}

/// Ends the syncs left at Processing by a process that stopped during them: Error with
/// `error`. Returns those registries. Only at start, before anything of ours syncs.
pub async fn end_interrupted_syncs(db: &AnyPool, error: &str, now: &str) -> StoreResult<Vec<Uuid>> {
    let processing = RepositoryRegistryStatus::Processing.as_str();
    let mut q = Sql::new("SELECT uuid FROM repository_registries WHERE sync_status = ");
    q.bind(processing).push(" ORDER BY create_datetime");
    let uuids = map_rows(q.fetch_all(db).await?, |r| r.uuid("uuid"))?;
    let mut q = Sql::new("UPDATE repository_registries SET sync_status = ");
    q.bind(RepositoryRegistryStatus::Error.as_str())
        .push(", sync_error = ")
        .bind(error)
        .push(", sync_last_datetime = ")
        .bind(now)
        .push(" WHERE sync_status = ")
        .bind(processing);
    q.execute(db).await?;
    Ok(uuids)
}

pub async fn finish_sync(
    db: &AnyPool,
    uuid: Uuid,
    status: RepositoryRegistryStatus,
    error: Option<String>,
    size: Option<i64>,
    now: &str,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE repository_registries SET sync_status = ");
    q.bind(status.as_str()).push(", sync_error = ").bind(error);
    q.push(", sync_last_datetime = ")
        .bind(now)
        .push(", last_update_datetime = ")
        .bind(now);
    if let Some(size) = size {
        q.push(", local_repository_size = ").bind(size);
    }
    q.push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Replaces the stored release assets (`releases_data`, API.md §3) of a registry.
pub async fn set_releases_data(
    db: &AnyPool,
    uuid: Uuid,
    releases_data: Option<&str>,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE repository_registries SET releases_data = ");
    q.bind(releases_data.map(str::to_string))
        .push(" WHERE uuid = ")
        .bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn delete(db: &AnyPool, uuid: Uuid) -> StoreResult<()> {
    let mut q = Sql::new("DELETE FROM repository_registries WHERE uuid = ");
    q.bind(uuid);
    q.execute(db).await?;
    Ok(())
}

#[derive(Default)]
pub struct RegistryFilter {
    pub uuids: Vec<Uuid>,
    pub creator_uuid: Option<Uuid>,
    pub search_string: Option<String>,
    pub is_public_repository: Option<bool>,
    pub order_by_create_date: Option<Order>,
    pub order_by_last_update: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

pub async fn list(db: &AnyPool, f: &RegistryFilter) -> StoreResult<(i64, Vec<RepositoryRegistry>)> {
    let mut cond = Sql::new(" FROM repository_registries WHERE 1=1");
    if !f.uuids.is_empty() {
        cond.push(" AND uuid IN ")
            .bind_list(f.uuids.iter().copied());
    }
    if let Some(c) = f.creator_uuid {
        cond.push(" AND creator_uuid = ").bind(c);
    }
    if let Some(p) = f.is_public_repository {
        cond.push(" AND is_public_repository = ").bind(p);
    }
    super::push_search(&mut cond, f.search_string.as_deref(), &["repository_url"]);
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY create_datetime ")
        .push(f.order_by_create_date.unwrap_or(Order::Desc).sql());
    q.push(", last_update_datetime ")
        .push(f.order_by_last_update.unwrap_or(Order::Desc).sql());
    q.page(f.offset, f.limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

/// One user's stored (encrypted) credentials for one private registry.
#[derive(Clone, Debug)]
pub struct RegistryCredentials {
    pub uuid: Uuid,
    pub user_uuid: Uuid,
    pub repository_registry_uuid: Uuid,
    pub cipher_credentials: String,
    pub status: CredentialStatus,
}

fn cred_from_row(r: &AnyRow) -> StoreResult<RegistryCredentials> {
    Ok(RegistryCredentials {
        uuid: r.uuid("uuid")?,
        user_uuid: r.uuid("user_uuid")?,
        repository_registry_uuid: r.uuid("repository_registry_uuid")?,
        cipher_credentials: r.text("cipher_credentials")?,
        status: r.parsed("status")?,
    })
}

/// Inserts or replaces the caller's credentials for a registry.
pub async fn upsert_credentials(
    db: &AnyPool,
    c: &RegistryCredentials,
    now: &str,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO registry_credentials (uuid, user_uuid, repository_registry_uuid, cipher_credentials, status, create_datetime, last_update_datetime) VALUES (");
    q.bind(c.uuid)
        .push(", ")
        .bind(c.user_uuid)
        .push(", ")
        .bind(c.repository_registry_uuid);
    q.push(", ")
        .bind(&c.cipher_credentials)
        .push(", ")
        .bind(c.status.as_str());
    q.push(", ").bind(now).push(", ").bind(now);
    q.push(") ON CONFLICT (user_uuid, repository_registry_uuid) DO UPDATE SET cipher_credentials = excluded.cipher_credentials, status = excluded.status, last_update_datetime = excluded.last_update_datetime");
    q.execute(db).await?;
    Ok(())
}

pub async fn get_credentials(
    db: &AnyPool,
    user: Uuid,
    registry: Uuid,
) -> StoreResult<Option<RegistryCredentials>> {
    let mut q = Sql::new("SELECT * FROM registry_credentials WHERE user_uuid = ");
    q.bind(user)
        .push(" AND repository_registry_uuid = ")
        .bind(registry);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(cred_from_row)
        .transpose()
}

/// The first `Valid` credentials of a registry, used by the backend's own syncs.
pub async fn first_valid_credentials(
    db: &AnyPool,
    registry: Uuid,
) -> StoreResult<Option<RegistryCredentials>> {
    let mut q = Sql::new("SELECT * FROM registry_credentials WHERE repository_registry_uuid = ");
    q.bind(registry)
        .push(" AND status = 'Valid' ORDER BY create_datetime LIMIT 1");
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(cred_from_row)
        .transpose()
}
