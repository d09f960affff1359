//! Throttling settings over HTTP (SPEC §8, admins): the instance's per-topic rules and each
//! user's own rules. What was dropped shows in the load reports (`/metrics/load/...`).

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid};
use crate::error::AppResult;
use crate::service::throttle::{ThrottleRulesInput, ThrottleSettings};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(get_throttle, set_throttle, reset_throttle))
        .routes(routes!(set_user_throttle, delete_user_throttle))
}

/// Admin: the rules in force (tried in order; a rate of 0 is unlimited, a topic no rule
/// matches is not limited), where they come from, the config's rules, users' own rules.
#[utoipa::path(get, path = "/throttle", tag = "metrics", responses((status = 200, body = ThrottleSettings), (status = 403)))]
async fn get_throttle(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<ThrottleSettings>> {
    Ok(axum::Json(instance.throttle_settings(&agent)?))
}

/// Admin: replaces the instance's rules (stored; in force at once, every bucket starting
/// full). Patterns are MQTT filters whose level `{domain}` is this instance's domain; 422
/// names the rule that is wrong.
#[utoipa::path(put, path = "/throttle", tag = "metrics", request_body = ThrottleRulesInput, responses((status = 200, body = ThrottleSettings), (status = 403), (status = 422)))]
async fn set_throttle(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<ThrottleRulesInput>,
) -> AppResult<axum::Json<ThrottleSettings>> {
    Ok(axum::Json(
        instance.set_throttle_rules(&agent, &body).await?,
    ))
}

/// Admin: back to the config's rules (`PU_THROTTLE_RULES`).
#[utoipa::path(delete, path = "/throttle", tag = "metrics", responses((status = 200, body = ThrottleSettings), (status = 403)))]
async fn reset_throttle(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<ThrottleSettings>> {
    Ok(axum::Json(instance.reset_throttle_rules(&agent).await?))
}

/// Admin: a user's own rules, tried before the instance's for that user's Units (e.g. the
/// limits of a paid grade).
#[utoipa::path(put, path = "/throttle/users/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), request_body = ThrottleRulesInput, responses((status = 200, body = ThrottleSettings), (status = 403), (status = 404), (status = 422)))]
async fn set_user_throttle(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<ThrottleRulesInput>,
) -> AppResult<axum::Json<ThrottleSettings>> {
    Ok(axum::Json(
        instance.set_user_throttle(&agent, uuid, &body).await?,
    ))
}

/// Admin: the user goes back to the instance's rules.
#[utoipa::path(delete, path = "/throttle/users/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 200, body = ThrottleSettings), (status = 403), (status = 404)))]
async fn delete_user_throttle(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<ThrottleSettings>> {
    Ok(axum::Json(
        instance.delete_user_throttle(&agent, uuid).await?,
    ))
}
