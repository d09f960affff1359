//! `/unit_nodes`: a unit's topics and the edges between them.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::{Order, UnitNodeType, VisibilityLevel};
use crate::error::AppResult;
use crate::service::unit_nodes::{UnitNode, UnitNodeEdge, UnitNodeFilter};
use crate::service::unit_nodes::{UnitNodeEdgeCreate, UnitNodeSetState, UnitNodeUpdate};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(list_unit_nodes))
        .routes(routes!(create_edge))
        .routes(routes!(delete_edge))
        .routes(routes!(get_unit_node, update_unit_node))
        .routes(routes!(set_state_input))
}

#[derive(Serialize, ToSchema)]
pub struct UnitNodesResult {
    count: i64,
    unit_nodes: Vec<UnitNode>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitNodeListQuery {
    #[serde(default)]
    uuids: Vec<Uuid>,
    unit_uuid: Option<Uuid>,
    search_string: Option<String>,
    #[serde(default, rename = "type")]
    node_type: Vec<UnitNodeType>,
    #[serde(default)]
    visibility_level: Vec<VisibilityLevel>,
    order_by_create_date: Option<Order>,
    /// Input nodes linked from this Output node.
    output_uuid: Option<Uuid>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/unit_nodes/{uuid}", tag = "unit_nodes", params(("uuid" = Uuid, Path)), responses((status = 200, body = UnitNode)))]
async fn get_unit_node(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<UnitNode>> {
    Ok(axum::Json(state.get_unit_node(&agent, uuid).await?))
}

#[utoipa::path(patch, path = "/unit_nodes/{uuid}", tag = "unit_nodes", params(("uuid" = Uuid, Path)), request_body = UnitNodeUpdate, responses((status = 200, body = UnitNode)))]
async fn update_unit_node(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<UnitNodeUpdate>,
) -> AppResult<axum::Json<UnitNode>> {
    Ok(axum::Json(
        state.update_unit_node(&agent, uuid, body).await?,
    ))
}

/// Publish a value to an Input node (needs the MQTT core).
#[utoipa::path(patch, path = "/unit_nodes/set_state_input/{uuid}", tag = "unit_nodes", params(("uuid" = Uuid, Path)), request_body = UnitNodeSetState, responses((status = 200, body = UnitNode), (status = 422, description = "MQTT Error")))]
async fn set_state_input(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<UnitNodeSetState>,
) -> AppResult<axum::Json<UnitNode>> {
    Ok(axum::Json(
        state.set_unit_node_state(&agent, uuid, body).await?,
    ))
}

#[utoipa::path(get, path = "/unit_nodes", tag = "unit_nodes", params(UnitNodeListQuery), responses((status = 200, body = UnitNodesResult)))]
async fn list_unit_nodes(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<UnitNodeListQuery>,
) -> AppResult<axum::Json<UnitNodesResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = UnitNodeFilter {
        uuids: q.uuids,
        unit_uuid: q.unit_uuid,
        search_string: q.search_string,
        node_type: q.node_type,
        order_by_create_date: q.order_by_create_date,
        output_uuid: q.output_uuid,
        offset,
        limit,
        ..Default::default()
    };
    let (count, unit_nodes) = state
        .list_unit_nodes(&agent, filter, &q.visibility_level)
        .await?;
    Ok(axum::Json(UnitNodesResult { count, unit_nodes }))
}

/// Link an Output node to an Input node.
#[utoipa::path(post, path = "/unit_nodes/create_unit_node_edge", tag = "unit_nodes", request_body = UnitNodeEdgeCreate, responses((status = 201, body = UnitNodeEdge)))]
async fn create_edge(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<UnitNodeEdgeCreate>,
) -> AppResult<(StatusCode, axum::Json<UnitNodeEdge>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_unit_node_edge(&agent, body).await?),
    ))
}

/// Remove a link (upstream offers this only over GraphQL).
#[utoipa::path(delete, path = "/unit_nodes/delete_unit_node_edge/{uuid}", tag = "unit_nodes", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_edge(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.delete_unit_node_edge(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
