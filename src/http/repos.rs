//! `/repos`: named views on registries, with their target versions.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::{Order, VisibilityLevel};
use crate::error::AppResult;
use crate::service::repos::{PlatformRead, RepoCreate, RepoUpdate, RepoVersions};
use crate::service::repos::{Repo, RepoFilter};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_repo, list_repos))
        .routes(routes!(bulk_update))
        .routes(routes!(get_repo, update_repo, delete_repo))
        .routes(routes!(available_platforms))
        .routes(routes!(versions))
        .routes(routes!(update_units_firmware))
}

#[derive(Serialize, ToSchema)]
pub struct ReposResult {
    count: i64,
    repos: Vec<Repo>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepoListQuery {
    repository_registry_uuid: Option<Uuid>,
    #[serde(default)]
    uuids: Vec<Uuid>,
    creator_uuid: Option<Uuid>,
    #[serde(default)]
    creators_uuids: Vec<Uuid>,
    search_string: Option<String>,
    is_auto_update_repo: Option<bool>,
    #[serde(default)]
    visibility_level: Vec<VisibilityLevel>,
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
pub struct PlatformsQuery {
    target_commit: Option<String>,
    target_tag: Option<String>,
}

#[utoipa::path(post, path = "/repos", tag = "repos", request_body = RepoCreate, responses((status = 201, body = Repo)))]
async fn create_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<RepoCreate>,
) -> AppResult<(StatusCode, axum::Json<Repo>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_repo(&agent, body).await?),
    ))
}

#[utoipa::path(get, path = "/repos/{uuid}", tag = "repos", params(("uuid" = Uuid, Path)), responses((status = 200, body = Repo)))]
async fn get_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<Repo>> {
    Ok(axum::Json(state.get_repo(&agent, uuid).await?))
}

#[utoipa::path(get, path = "/repos", tag = "repos", params(RepoListQuery), responses((status = 200, body = ReposResult)))]
async fn list_repos(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<RepoListQuery>,
) -> AppResult<axum::Json<ReposResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = RepoFilter {
        repository_registry_uuid: q.repository_registry_uuid,
        uuids: q.uuids,
        creator_uuid: q.creator_uuid,
        creators_uuids: q.creators_uuids,
        search_string: q.search_string,
        is_auto_update_repo: q.is_auto_update_repo,
        order_by_create_date: q.order_by_create_date,
        order_by_last_update: q.order_by_last_update,
        offset,
        limit,
    };
    let (count, repos) = state
        .list_repos(&agent, filter, &q.visibility_level)
        .await?;
    Ok(axum::Json(ReposResult { count, repos }))
}

#[utoipa::path(get, path = "/repos/available_platforms/{uuid}", tag = "repos", params(("uuid" = Uuid, Path), PlatformsQuery), responses((status = 200, body = Vec<PlatformRead>)))]
async fn available_platforms(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Query(q): Query<PlatformsQuery>,
) -> AppResult<axum::Json<Vec<PlatformRead>>> {
    Ok(axum::Json(
        state
            .available_platforms(&agent, uuid, q.target_commit, q.target_tag)
            .await?,
    ))
}

/// Units of the repo grouped by the firmware version they report.
#[utoipa::path(get, path = "/repos/versions/{uuid}", tag = "repos", params(("uuid" = Uuid, Path)), responses((status = 200, body = RepoVersions)))]
async fn versions(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<RepoVersions>> {
    Ok(axum::Json(state.repo_versions(&agent, uuid).await?))
}

#[utoipa::path(patch, path = "/repos/{uuid}", tag = "repos", params(("uuid" = Uuid, Path)), request_body = RepoUpdate, responses((status = 200, body = Repo)))]
async fn update_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<RepoUpdate>,
) -> AppResult<axum::Json<Repo>> {
    Ok(axum::Json(state.update_repo(&agent, uuid, body).await?))
}

/// Sends `Update` to each auto-updating unit of the repo (failures of single units are
/// swallowed; 422 when the backend is not connected to the broker).
#[utoipa::path(patch, path = "/repos/update_units_firmware/{uuid}", tag = "repos", params(("uuid" = Uuid, Path)), responses((status = 204), (status = 422, description = "MQTT Error")))]
async fn update_units_firmware(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.update_units_firmware(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admin: send `Update` to every auto-updating unit of every auto-updating repo (runs in the
/// background).
#[utoipa::path(post, path = "/repos/bulk_update", tag = "repos", responses((status = 204)))]
async fn bulk_update(state: State<Instance>, Caller(agent): Caller) -> AppResult<StatusCode> {
    state.bulk_update(&agent).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/repos/{uuid}", tag = "repos", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.delete_repo(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
