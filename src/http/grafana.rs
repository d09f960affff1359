//! Grafana dashboards over HTTP (issue 19), at upstream's paths under `/grafana`: dashboards,
//! panels, node links, the sync, and `datasource/` that Grafana's Infinity plugin reads with a
//! link's token. Behind `PU_FF_GRAFANA_INTEGRATION_ENABLE`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::Order;
use crate::error::AppResult;
use crate::service::dashboards::{
    Dashboard, DashboardCreate, DashboardFilter, DashboardPanel, DashboardPanelCreate,
    DatasourcePoint, DatasourceRequest, LinkUnitNodeToPanel, UnitNodeForPanel,
};
use crate::service::data_pipes::parse_relative_time;
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_dashboard))
        .routes(routes!(get_dashboard))
        .routes(routes!(get_dashboards))
        .routes(routes!(delete_dashboard))
        .routes(routes!(create_dashboard_panel))
        .routes(routes!(get_dashboard_panels))
        .routes(routes!(delete_panel))
        .routes(routes!(link_unit_node_to_panel))
        .routes(routes!(delete_link))
        .routes(routes!(delete_link_bare))
        .routes(routes!(sync_dashboard))
        .routes(routes!(datasource))
}

#[derive(Serialize, ToSchema)]
pub struct DashboardPanelsResult {
    count: i64,
    panels: Vec<DashboardPanel>,
}

/// A new panel on one of the caller's dashboards (a title of 4 to 100 characters; `type` is a
/// Grafana panel plugin id such as `timeseries`).
#[utoipa::path(post, path = "/grafana/create_dashboard_panel", tag = "grafana", request_body = DashboardPanelCreate, responses((status = 201, body = DashboardPanel), (status = 403), (status = 404), (status = 422)))]
async fn create_dashboard_panel(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<DashboardPanelCreate>,
) -> AppResult<(StatusCode, axum::Json<DashboardPanel>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(instance.create_dashboard_panel(&agent, &body).await?),
    ))
}

/// The panels of one of the caller's dashboards, with their nodes, oldest first.
#[utoipa::path(get, path = "/grafana/get_dashboard_panels/{uuid}", tag = "grafana", params(("uuid" = Uuid, Path, description = "the dashboard")), responses((status = 200, body = DashboardPanelsResult), (status = 403), (status = 404)))]
async fn get_dashboard_panels(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<DashboardPanelsResult>> {
    let (count, panels) = instance.get_dashboard_panels(&agent, uuid).await?;
    Ok(axum::Json(DashboardPanelsResult { count, panels }))
}

/// Deletes one of the caller's panels and its links.
#[utoipa::path(delete, path = "/grafana/delete_panel/{uuid}", tag = "grafana", params(("uuid" = Uuid, Path)), responses((status = 204), (status = 403), (status = 404)))]
async fn delete_panel(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    instance.delete_panel(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Links one of the caller's nodes to one of the caller's panels (each node once, at most
/// `PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL` nodes per panel).
#[utoipa::path(post, path = "/grafana/link_unit_node_to_panel", tag = "grafana", request_body = LinkUnitNodeToPanel, responses((status = 201, body = UnitNodeForPanel), (status = 403), (status = 404), (status = 422)))]
async fn link_unit_node_to_panel(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<LinkUnitNodeToPanel>,
) -> AppResult<(StatusCode, axum::Json<UnitNodeForPanel>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(instance.link_unit_node_to_panel(&agent, &body).await?),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    unit_node_uuid: uuid::Uuid,
    dashboard_panel_uuid: uuid::Uuid,
}

/// Unlinks a node from one of the caller's panels. The link is named by the query; the path
/// segment is upstream's and is not read.
#[utoipa::path(delete, path = "/grafana/delete_link/{uuid}", tag = "grafana", params(("uuid" = String, Path, description = "not read (upstream's path)"), LinkQuery), responses((status = 204), (status = 403), (status = 404)))]
async fn delete_link(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<LinkQuery>,
) -> AppResult<StatusCode> {
    instance
        .delete_link(&agent, q.unit_node_uuid, q.dashboard_panel_uuid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `delete_link` without the unused path segment.
#[utoipa::path(delete, path = "/grafana/delete_link", tag = "grafana", params(LinkQuery), responses((status = 204), (status = 403), (status = 404)))]
async fn delete_link_bare(
    state: State<Instance>,
    caller: Caller,
    query: Query<LinkQuery>,
) -> AppResult<StatusCode> {
    delete_link(state, caller, query).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// The dashboard.
    uuid: uuid::Uuid,
}

/// Pushes one of the caller's dashboards to Grafana (creating the caller's organisation, user
/// and datasource there when missing). A Grafana failure is answered as the dashboard with
/// `sync_status` `Error` and the reason in `sync_error`.
#[utoipa::path(post, path = "/grafana/sync_dashboard", tag = "grafana", params(SyncQuery), responses((status = 200, body = Dashboard), (status = 403), (status = 404), (status = 422)))]
async fn sync_dashboard(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<SyncQuery>,
) -> AppResult<axum::Json<Dashboard>> {
    Ok(axum::Json(instance.sync_dashboard(&agent, q.uuid).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatasourceQuery {
    /// `timeseries` (the only format).
    format: String,
    /// Aggregation rows whose window ends at or after this (ISO 8601, UTC).
    start_agg_datetime: Option<String>,
    end_agg_datetime: Option<String>,
    /// Rows created at or after this (ISO 8601, UTC).
    start_create_datetime: Option<String>,
    end_create_datetime: Option<String>,
    /// Rows created within this long before now: `<int><s|m|h|d|M|y>`.
    relative_time: Option<String>,
    /// Default `desc`.
    order_by_create_date: Option<Order>,
    #[param(minimum = 0)]
    offset: Option<i64>,
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// What Grafana's Infinity datasource reads: one linked node's data as `[{time, value}]`, time
/// in milliseconds since the epoch. Only the link's GrafanaUnitNode token (in `x-auth-token`,
/// as the generated dashboard sends it) is accepted.
#[utoipa::path(get, path = "/grafana/datasource", tag = "grafana", params(DatasourceQuery, ("x-auth-token" = String, Header)), responses((status = 200, body = Vec<DatasourcePoint>), (status = 403), (status = 422)))]
async fn datasource(
    State(instance): State<Instance>,
    headers: HeaderMap,
    Query(q): Query<DatasourceQuery>,
) -> AppResult<axum::Json<Vec<DatasourcePoint>>> {
    if q.format != "timeseries" {
        return Err(crate::error::AppError::request(
            "query",
            Some("format"),
            "Input should be 'timeseries'",
        ));
    }
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let time = super::data_pipes::time_param;
    let request = DatasourceRequest {
        start_agg_datetime: time("start_agg_datetime", q.start_agg_datetime)?,
        end_agg_datetime: time("end_agg_datetime", q.end_agg_datetime)?,
        start_create_datetime: time("start_create_datetime", q.start_create_datetime)?,
        end_create_datetime: time("end_create_datetime", q.end_create_datetime)?,
        relative_time: q
            .relative_time
            .as_deref()
            .map(parse_relative_time)
            .transpose()?,
        // upstream's default: newest first
        order_by_create_date: Some(q.order_by_create_date.unwrap_or(Order::Desc)),
        offset,
        limit,
    };
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    Ok(axum::Json(
        instance.grafana_datasource(token, request).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct DashboardsResult {
    count: i64,
    dashboards: Vec<Dashboard>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DashboardListQuery {
    /// Words the name must contain (case-insensitive).
    search_string: Option<String>,
    order_by_create_date: Option<Order>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// A new dashboard of the caller (a name of 4 to 100 characters).
#[utoipa::path(post, path = "/grafana/create_dashboard", tag = "grafana", request_body = DashboardCreate, responses((status = 201, body = Dashboard), (status = 405), (status = 422)))]
async fn create_dashboard(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<DashboardCreate>,
) -> AppResult<(StatusCode, axum::Json<Dashboard>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(instance.create_dashboard(&agent, &body).await?),
    ))
}

/// One of the caller's dashboards.
#[utoipa::path(get, path = "/grafana/get_dashboard/{uuid}", tag = "grafana", params(("uuid" = Uuid, Path)), responses((status = 200, body = Dashboard), (status = 403), (status = 404)))]
async fn get_dashboard(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<Dashboard>> {
    Ok(axum::Json(instance.get_dashboard(&agent, uuid).await?))
}

/// The caller's dashboards, newest first unless `order_by_create_date=asc`.
#[utoipa::path(get, path = "/grafana/get_dashboards", tag = "grafana", params(DashboardListQuery), responses((status = 200, body = DashboardsResult)))]
async fn get_dashboards(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<DashboardListQuery>,
) -> AppResult<axum::Json<DashboardsResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = DashboardFilter {
        search_string: q.search_string,
        order_by_create_date: q.order_by_create_date,
        offset,
        limit,
    };
    let (count, dashboards) = instance.list_dashboards(&agent, &filter).await?;
    Ok(axum::Json(DashboardsResult { count, dashboards }))
}

/// Deletes one of the caller's dashboards.
#[utoipa::path(delete, path = "/grafana/delete_dashboard/{uuid}", tag = "grafana", params(("uuid" = Uuid, Path)), responses((status = 204), (status = 403), (status = 404)))]
async fn delete_dashboard(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    instance.delete_dashboard(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
