//! Instance grades and the public `load_limit` report (SPEC §7): `GET`/`PATCH /grade`,
//! `POST /load_limit` (a ramp's report, admins) and `GET /load_limit` (anyone, no token).

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json};
use crate::error::AppResult;
use crate::service::grades::{Grade, GradeUpdate, LoadLimit, LoadReport};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(get_grade, update_grade))
        .routes(routes!(load_limit, publish_load_report))
}

/// The instance's grade: free MPS per user, price per MPS above it, free aggregated topics,
/// price per aggregated topic, currency. Public, as `load_limit` shows it anyway; the defaults
/// (everything free) until the admin sets it.
#[utoipa::path(get, path = "/grade", tag = "metrics", responses((status = 200, body = Grade)))]
async fn get_grade(State(instance): State<Instance>) -> AppResult<axum::Json<Grade>> {
    Ok(axum::Json(instance.grade().await?))
}

/// Admin: changes the grade; the fields given replace the stored ones (422 naming the field
/// for a value out of range).
#[utoipa::path(patch, path = "/grade", tag = "metrics", request_body = GradeUpdate, responses((status = 200, body = Grade), (status = 403), (status = 422)))]
async fn update_grade(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<GradeUpdate>,
) -> AppResult<axum::Json<Grade>> {
    Ok(axum::Json(instance.update_grade(&agent, body).await?))
}

/// The instance's grade for comparison between instances: the newest `pepeunit load ramp`
/// report per channel (capacity: the highest offered rate within the bounds) and the grade's
/// prices. Public, no token.
#[utoipa::path(get, path = "/load_limit", tag = "metrics", responses((status = 200, body = LoadLimit)))]
async fn load_limit(State(instance): State<Instance>) -> AppResult<axum::Json<LoadLimit>> {
    Ok(axum::Json(instance.load_limit().await?))
}

/// Admin: stores a ramp's report (`pepeunit load ramp --publish`) as its channel's newest.
#[utoipa::path(post, path = "/load_limit", tag = "metrics", request_body = LoadReport, responses((status = 201, body = LoadReport), (status = 403), (status = 422)))]
async fn publish_load_report(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<LoadReport>,
) -> AppResult<(StatusCode, axum::Json<LoadReport>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(instance.publish_load_report(&agent, body).await?),
    ))
}
