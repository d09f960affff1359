//! Load over HTTP (SPEC §7): messages per second per Unit (with its topics), per Repo and per
//! user. Owners see their own Units, admins every Unit.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{PathUuid, Query, Reading};
use crate::error::AppResult;
use crate::service::load::{GroupLoad, LoadHistory, LoadReport, UnitLoad};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(units_load))
        .routes(routes!(unit_load))
        .routes(routes!(repo_load))
        .routes(routes!(user_load))
        .routes(routes!(unit_load_history))
}

/// `from` / `to` of a history read: naive UTC times (`2026-12-06T10:00:00`).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryRange {
    from: Option<String>,
    to: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> AppResult<Option<chrono::NaiveDateTime>> {
    v.map(|s| {
        crate::domain::parse_time(s).ok_or_else(|| {
            crate::error::AppError::validation(format!(
                "{name}: {s:?} is not a time like 2026-12-06T10:00:00"
            ))
        })
    })
    .transpose()
}

/// A Unit's messages per hour in `[from, to)` (default the last 24 hours, at most 31 days;
/// its creator or an admin). Hours are written a few seconds after they end and at a clean
/// stop.
#[utoipa::path(get, path = "/metrics/load/units/{uuid}/history", tag = "metrics", params(("uuid" = Uuid, Path), HistoryRange), responses((status = 200, body = LoadHistory)))]
async fn unit_load_history(
    State(instance): State<Instance>,
    Reading(reader): Reading,
    PathUuid(uuid): PathUuid,
    Query(range): Query<HistoryRange>,
) -> AppResult<axum::Json<LoadHistory>> {
    let from = time_param("from", range.from.as_deref())?;
    let to = time_param("to", range.to.as_deref())?;
    Ok(axum::Json(
        instance.unit_load_history(&reader, uuid, from, to).await?,
    ))
}

/// The caller's Units with traffic in the last hour (an admin's: every Unit), busiest first,
/// with the instance's total.
#[utoipa::path(get, path = "/metrics/load/units", tag = "metrics", responses((status = 200, body = LoadReport)))]
async fn units_load(
    State(instance): State<Instance>,
    Reading(reader): Reading,
) -> AppResult<axum::Json<LoadReport>> {
    Ok(axum::Json(instance.load_report(&reader).await?))
}

/// One Unit's load with its topics (its creator or an admin).
#[utoipa::path(get, path = "/metrics/load/units/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = UnitLoad)))]
async fn unit_load(
    State(instance): State<Instance>,
    Reading(reader): Reading,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<UnitLoad>> {
    Ok(axum::Json(instance.unit_load(&reader, uuid).await?))
}

/// A Repo's load: the average over its Units (its creator or an admin).
#[utoipa::path(get, path = "/metrics/load/repos/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = GroupLoad)))]
async fn repo_load(
    State(instance): State<Instance>,
    Reading(reader): Reading,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<GroupLoad>> {
    Ok(axum::Json(instance.repo_load(&reader, uuid).await?))
}

/// A user's load: the sum over their Units (the user or an admin).
#[utoipa::path(get, path = "/metrics/load/users/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = GroupLoad)))]
async fn user_load(
    State(instance): State<Instance>,
    Reading(reader): Reading,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<GroupLoad>> {
    Ok(axum::Json(instance.user_load(&reader, uuid).await?))
}
