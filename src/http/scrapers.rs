//! Scraper tokens over HTTP (SPEC §7, admins): generate, list, revoke. A scraper token is sent
//! as `Authorization: Bearer <token>` and reads only metrics, load and `load_limit`.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid};
use crate::error::AppResult;
use crate::service::scrapers::{NewScraperToken, ScraperToken, ScraperTokenCreate};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(list_scrapers, create_scraper))
        .routes(routes!(revoke_scraper))
}

/// Admin: the scraper tokens (never the tokens themselves), with when each was last used.
#[utoipa::path(get, path = "/scraper_tokens", tag = "metrics", responses((status = 200, body = Vec<ScraperToken>), (status = 403)))]
async fn list_scrapers(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<Vec<ScraperToken>>> {
    Ok(axum::Json(instance.scraper_tokens(&agent).await?))
}

/// Admin: a new scraper token; `token` is shown in this answer only (at most 100 tokens).
#[utoipa::path(post, path = "/scraper_tokens", tag = "metrics", request_body = ScraperTokenCreate, responses((status = 201, body = NewScraperToken), (status = 403), (status = 422)))]
async fn create_scraper(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<ScraperTokenCreate>,
) -> AppResult<(StatusCode, axum::Json<NewScraperToken>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(instance.create_scraper_token(&agent, &body).await?),
    ))
}

/// Admin: revokes a scraper token; it stops working at once.
#[utoipa::path(delete, path = "/scraper_tokens/{uuid}", tag = "metrics", params(("uuid" = Uuid, Path)), responses((status = 204), (status = 403), (status = 404)))]
async fn revoke_scraper(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    instance.revoke_scraper_token(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
