//! `/repository_registry`: external git repositories mirrored by the instance.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::Order;
use crate::error::AppResult;
use crate::git::CommitInfo;
use crate::service::registries::{Credentials, CredentialsRead, RegistryCreate};
use crate::service::registries::{RegistryFilter, RepositoryRegistry};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_registry, list_registries))
        .routes(routes!(backend_sync_registry))
        .routes(routes!(get_registry, delete_registry))
        .routes(routes!(branch_commits))
        .routes(routes!(set_credentials))
        .routes(routes!(get_credentials))
        .routes(routes!(update_local_repository))
}

#[derive(Serialize, ToSchema)]
pub struct RegistriesResult {
    count: i64,
    repositories_registry: Vec<RepositoryRegistry>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegistryListQuery {
    #[serde(default)]
    uuids: Vec<Uuid>,
    creator_uuid: Option<Uuid>,
    search_string: Option<String>,
    is_public_repository: Option<bool>,
    order_by_create_date: Option<Order>,
    order_by_last_update: Option<Order>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BranchCommitsQuery {
    repo_branch: String,
    #[serde(default)]
    only_tag: bool,
    /// Commits skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Commits returned at most, default 10, up to 500; 0: all.
    #[param(minimum = 0, maximum = 500, default = 10)]
    limit: Option<i64>,
}

/// Register a git repository (http/https URL ending in `.git`); it is cloned at once and the
/// result is in `sync_status`.
#[utoipa::path(post, path = "/repository_registry", tag = "repository_registry", request_body = RegistryCreate, responses((status = 201, body = RepositoryRegistry)))]
async fn create_registry(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<RegistryCreate>,
) -> AppResult<(StatusCode, axum::Json<RepositoryRegistry>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_registry(&agent, body).await?),
    ))
}

#[utoipa::path(get, path = "/repository_registry/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path)), responses((status = 200, body = RepositoryRegistry)))]
async fn get_registry(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<RepositoryRegistry>> {
    Ok(axum::Json(state.get_registry(&agent, uuid).await?))
}

/// Commits of a branch, newest first.
#[utoipa::path(get, path = "/repository_registry/branch_commits/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path), BranchCommitsQuery), responses((status = 200, body = Vec<Object>)))]
async fn branch_commits(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Query(q): Query<BranchCommitsQuery>,
) -> AppResult<axum::Json<Vec<CommitInfo>>> {
    let (offset, limit) = check_page(q.offset, Some(q.limit.unwrap_or(10)), Some(500))?;
    Ok(axum::Json(
        state
            .branch_commits(&agent, uuid, &q.repo_branch, q.only_tag, offset, limit)
            .await?,
    ))
}

#[utoipa::path(patch, path = "/repository_registry/set_credentials/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path)), request_body = Credentials, responses((status = 204)))]
async fn set_credentials(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<Credentials>,
) -> AppResult<StatusCode> {
    state.set_registry_credentials(&agent, uuid, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/repository_registry/get_credentials/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path)), responses((status = 200, body = Option<CredentialsRead>)))]
async fn get_credentials(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<Option<CredentialsRead>>> {
    Ok(axum::Json(
        state.get_registry_credentials(&agent, uuid).await?,
    ))
}

/// Fetch the remote again now.
#[utoipa::path(patch, path = "/repository_registry/update_local_repository/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn update_local_repository(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.update_local_repository(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Backend token: clone every registry missing on disk.
#[utoipa::path(patch, path = "/repository_registry/backend_sync_registry", tag = "repository_registry", responses((status = 204)))]
async fn backend_sync_registry(
    state: State<Instance>,
    Caller(agent): Caller,
) -> AppResult<StatusCode> {
    state.backend_sync_registries(&agent).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/repository_registry", tag = "repository_registry", params(RegistryListQuery), responses((status = 200, body = RegistriesResult)))]
async fn list_registries(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<RegistryListQuery>,
) -> AppResult<axum::Json<RegistriesResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = RegistryFilter {
        uuids: q.uuids,
        creator_uuid: q.creator_uuid,
        search_string: q.search_string,
        is_public_repository: q.is_public_repository,
        order_by_create_date: q.order_by_create_date,
        order_by_last_update: q.order_by_last_update,
        offset,
        limit,
    };
    let (count, repositories_registry) = state.list_registries(&agent, filter).await?;
    Ok(axum::Json(RegistriesResult {
        count,
        repositories_registry,
    }))
}

#[utoipa::path(delete, path = "/repository_registry/{uuid}", tag = "repository_registry", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_registry(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.delete_registry(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
