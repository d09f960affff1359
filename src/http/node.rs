//! The node's state (SPEC §6): `GET /metrics/node` (admin JSON) and the Prometheus text at
//! `GET {PU_APP_PREFIX}/metrics`, outside the API prefix where upstream serves it.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Query, Reading};
use crate::error::{AppError, AppResult};
use crate::observe::{prometheus, NodeReport};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new().routes(routes!(node_metrics))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeQuery {
    /// `desc` (default): most frequent errors first; `asc`: least frequent first.
    #[param(value_type = Option<crate::domain::Order>)]
    order: Option<String>,
    /// Errors listed at most (0 or absent: all).
    limit: Option<usize>,
}

/// Admin: requests by channel with rates, CPU and memory of the process and the machine,
/// tracked errors and the MQTT core's state.
#[utoipa::path(get, path = "/metrics/node", tag = "metrics", params(NodeQuery), responses((status = 200, body = NodeReport), (status = 403)))]
async fn node_metrics(
    State(instance): State<Instance>,
    Reading(reader): Reading,
    Query(q): Query<NodeQuery>,
) -> AppResult<Json<NodeReport>> {
    let ascending = match q.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => {
            return Err(AppError::request(
                "query",
                Some("order"),
                "must be asc or desc",
            ))
        }
    };
    Ok(Json(instance.node_report(
        &reader,
        ascending,
        q.limit.unwrap_or(0),
    )?))
}

/// Prometheus text exposition: `Authorization: Bearer <scraper token>` (or
/// `PU_METRICS_TOKEN`) or an admin's `x-auth-token`.
pub async fn prometheus_metrics(
    State(instance): State<Instance>,
    Reading(reader): Reading,
) -> AppResult<Response> {
    let body = instance.prometheus_text(&reader)?;
    Ok(([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], body).into_response())
}
