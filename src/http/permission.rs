//! `/permission`: grants of access to private resources.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json, Query};
use crate::domain::PermissionEntities;
use crate::error::AppResult;
use crate::service::permissions::Permission;
use crate::service::permissions::PermissionCreate;
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_permission))
        .routes(routes!(resource_agents))
        .routes(routes!(delete_permission))
}

#[derive(Serialize, ToSchema)]
pub struct PermissionsResult {
    count: i64,
    permissions: Vec<Permission>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResourceAgentsQuery {
    resource_uuid: Uuid,
    resource_type: PermissionEntities,
    agent_type: Option<PermissionEntities>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most, up to 500; 0 or absent: all.
    #[param(minimum = 0, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PermissionDeleteQuery {
    agent_uuid: Uuid,
    resource_uuid: Uuid,
}

/// Grant an agent (User or Unit) access to a resource you created.
#[utoipa::path(post, path = "/permission", tag = "permission", request_body = PermissionCreate, responses((status = 201, body = Permission)))]
async fn create_permission(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<PermissionCreate>,
) -> AppResult<(StatusCode, axum::Json<Permission>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_permission(&agent, body).await?),
    ))
}

#[utoipa::path(get, path = "/permission/get_resource_agents", tag = "permission", params(ResourceAgentsQuery), responses((status = 200, body = PermissionsResult)))]
async fn resource_agents(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<ResourceAgentsQuery>,
) -> AppResult<axum::Json<PermissionsResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, Some(500))?;
    let (count, permissions) = state
        .resource_agents(
            &agent,
            q.resource_uuid,
            q.resource_type,
            q.agent_type,
            offset,
            limit,
        )
        .await?;
    Ok(axum::Json(PermissionsResult { count, permissions }))
}

/// Revoke a grant; the agent and resource come from the query (the path segment is ignored).
#[utoipa::path(delete, path = "/permission/{anything}", tag = "permission", params(("anything" = String, Path), PermissionDeleteQuery), responses((status = 204)))]
async fn delete_permission(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<PermissionDeleteQuery>,
) -> AppResult<StatusCode> {
    state
        .delete_permission(&agent, q.agent_uuid, q.resource_uuid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
