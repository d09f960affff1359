//! Grafana dashboards over HTTP (issue 19), at upstream's paths under `/grafana`: the first
//! slice, dashboards themselves (create, read, list, delete). Behind
//! `PU_FF_GRAFANA_INTEGRATION_ENABLE`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::Order;
use crate::error::AppResult;
use crate::service::dashboards::{Dashboard, DashboardCreate, DashboardFilter};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_dashboard))
        .routes(routes!(get_dashboard))
        .routes(routes!(get_dashboards))
        .routes(routes!(delete_dashboard))
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
