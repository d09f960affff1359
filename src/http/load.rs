//! Load over HTTP (SPEC §7): messages per second per Unit (with its topics), per Repo and per
//! user. Owners see their own Units, admins every Unit.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, PathUuid};
use crate::error::AppResult;
use crate::service::load::{GroupLoad, LoadReport, UnitLoad};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(units_load))
        .routes(routes!(unit_load))
        .routes(routes!(repo_load))
        .routes(routes!(user_load))
}

/// The caller's Units with traffic in the last hour (an admin's: every Unit), busiest first,
/// with the instance's total.
#[utoipa::path(get, path = "/metrics/load/units", tag = "metrics", responses((status = 200, body = LoadReport)))]
async fn units_load(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<LoadReport>> {
    Ok(axum::Json(instance.load_report(&agent).await?))
}

/// One Unit's load with its topics (its creator or an admin).
#[utoipa::path(get, path = "/metrics/load/units/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = UnitLoad)))]
async fn unit_load(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<UnitLoad>> {
    Ok(axum::Json(instance.unit_load(&agent, uuid).await?))
}

/// A Repo's load: the average over its Units (its creator or an admin).
#[utoipa::path(get, path = "/metrics/load/repos/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = GroupLoad)))]
async fn repo_load(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<GroupLoad>> {
    Ok(axum::Json(instance.repo_load(&agent, uuid).await?))
}

/// A user's load: the sum over their Units (the user or an admin).
#[utoipa::path(get, path = "/metrics/load/users/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = GroupLoad)))]
async fn user_load(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<GroupLoad>> {
    Ok(axum::Json(instance.user_load(&agent, uuid).await?))
}
