//! `/federation/...` (admin: follows of other instances, domain lists, the delivery queue) and
//! `/hub/search` (anyone: the federated index of public Repos and Units). The ActivityPub
//! surface itself (WebFinger, NodeInfo, actors, inboxes) is served by the federation crate.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, Query};
use crate::error::{AppError, AppResult};
use crate::service::federation::{
    DeliveryRead, DomainListRead, FollowRead, FollowRequest, HubSearch, RepoFollowRequest,
};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(follow, followed))
        .routes(routes!(unfollow))
        .routes(routes!(deliveries))
        .routes(routes!(get_list, put_list))
        .routes(routes!(add_domain))
        .routes(routes!(remove_domain))
        .routes(routes!(export_csv, import_csv))
        .routes(routes!(hub_search))
        .routes(routes!(follow_repo, followed_repos))
        .routes(routes!(unfollow_repo))
}

/// One search result.
#[derive(Serialize, ToSchema)]
pub struct HubItemRead {
    /// `Repo` or `Unit`.
    kind: String,
    /// The object's uuid on its origin instance.
    uuid: String,
    name: String,
    /// The object's ActivityPub id on its origin instance.
    url: String,
    /// Origin instance, `host[:port]`.
    instance: String,
    description: String,
    platform: String,
    topics: Vec<String>,
    score: f32,
}

#[derive(Serialize, ToSchema)]
pub struct HubSearchRead {
    count: usize,
    items: Vec<HubItemRead>,
}

/// Search public Repos and Units of this instance and of the instances it follows.
#[utoipa::path(get, path = "/hub/search", tag = "hub", params(HubSearch), responses((status = 200, body = HubSearchRead)))]
async fn hub_search(
    state: State<Instance>,
    Query(q): Query<HubSearch>,
) -> AppResult<axum::Json<HubSearchRead>> {
    let page = state.hub_search(q).await?;
    Ok(axum::Json(HubSearchRead {
        count: page.count,
        items: page
            .items
            .into_iter()
            .map(|h| HubItemRead {
                kind: h.kind.to_string(),
                uuid: h.uuid,
                name: h.name,
                url: h.url,
                instance: h.instance,
                description: h.description,
                platform: h.platform,
                topics: h.topics,
                score: h.score,
            })
            .collect(),
    }))
}

/// Follow another instance's hub feed (admin). The follow is Pending until it accepts.
#[utoipa::path(post, path = "/federation/follow", tag = "federation", request_body = FollowRequest, responses((status = 201, body = FollowRead)))]
async fn follow(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<FollowRequest>,
) -> AppResult<(StatusCode, axum::Json<FollowRead>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.follow_instance(&agent, body).await?),
    ))
}

/// Instances this instance follows, with the state of each follow (admin).
#[utoipa::path(get, path = "/federation/follow", tag = "federation", responses((status = 200, body = Vec<FollowRead>)))]
async fn followed(
    state: State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<Vec<FollowRead>>> {
    Ok(axum::Json(state.followed_instances(&agent).await?))
}

/// Stop following an instance; what the hub learned from it is dropped (admin).
#[utoipa::path(delete, path = "/federation/follow/{domain}", tag = "federation", params(("domain" = String, Path)), responses((status = 204)))]
async fn unfollow(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(domain): Path<String>,
) -> AppResult<StatusCode> {
    state.unfollow_instance(&agent, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `Pending` or `Dead`; both when absent.
    #[param(schema_with = delivery_state_schema)]
    state: Option<String>,
    /// 1 to 500, default 100.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
}

/// The documented values of [`DeliveriesQuery::state`].
fn delivery_state_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["Pending", "Dead"]))
        .build()
}

/// Outgoing deliveries still queued or dead-lettered, newest first (admin).
#[utoipa::path(get, path = "/federation/deliveries", tag = "federation", params(DeliveriesQuery), responses((status = 200, body = Vec<DeliveryRead>)))]
async fn deliveries(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<DeliveriesQuery>,
) -> AppResult<axum::Json<Vec<DeliveryRead>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::bare("limit must be between 1 and 500"));
    }
    Ok(axum::Json(
        state.deliveries(&agent, q.state.as_deref(), limit).await?,
    ))
}

/// A domain list (`federation` or `git_hosts`) with its mode (admin).
#[utoipa::path(get, path = "/federation/domains/{list}", tag = "federation", params(("list" = String, Path)), responses((status = 200, body = DomainListRead)))]
async fn get_list(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(list): Path<String>,
) -> AppResult<axum::Json<DomainListRead>> {
    Ok(axum::Json(state.domain_list(&agent, &list).await?))
}

/// Body of `PUT /federation/domains/{list}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainListWrite {
    /// `deny` or `allow`.
    mode: String,
    domains: Vec<String>,
}

/// Replace a list's mode and domains (admin). Nothing changes when one domain is invalid.
#[utoipa::path(put, path = "/federation/domains/{list}", tag = "federation", params(("list" = String, Path)), request_body = DomainListWrite, responses((status = 200, body = DomainListRead)))]
async fn put_list(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(list): Path<String>,
    Json(body): Json<DomainListWrite>,
) -> AppResult<axum::Json<DomainListRead>> {
    Ok(axum::Json(
        state
            .set_domain_list(&agent, &list, &body.mode, &body.domains)
            .await?,
    ))
}

/// Body of `POST /federation/domains/{list}/domains`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainWrite {
    /// `host[:port]`; covers subdomains too.
    domain: String,
}

/// Add a domain to a list (admin).
#[utoipa::path(post, path = "/federation/domains/{list}/domains", tag = "federation", params(("list" = String, Path)), request_body = DomainWrite, responses((status = 200, body = DomainListRead)))]
async fn add_domain(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(list): Path<String>,
    Json(body): Json<DomainWrite>,
) -> AppResult<axum::Json<DomainListRead>> {
    Ok(axum::Json(
        state.add_domain(&agent, &list, &body.domain).await?,
    ))
}

/// Remove a domain from a list (admin).
#[utoipa::path(delete, path = "/federation/domains/{list}/domains/{domain}", tag = "federation", params(("list" = String, Path), ("domain" = String, Path)), responses((status = 200, body = DomainListRead)))]
async fn remove_domain(
    state: State<Instance>,
    Caller(agent): Caller,
    Path((list, domain)): Path<(String, String)>,
) -> AppResult<axum::Json<DomainListRead>> {
    Ok(axum::Json(
        state.remove_domain(&agent, &list, &domain).await?,
    ))
}

/// A list's domains as CSV (`domain` header, one per line) (admin).
#[utoipa::path(get, path = "/federation/domains/{list}/csv", tag = "federation", params(("list" = String, Path)), responses((status = 200, content_type = "text/csv", body = String)))]
async fn export_csv(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(list): Path<String>,
) -> AppResult<Response> {
    let csv = state.export_domain_csv(&agent, &list).await?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Replace the list's domains instead of adding to them.
    replace: Option<bool>,
}

/// Import domains from CSV (first column; header, blank lines and `#` comments skipped)
/// (admin). All-or-nothing: a bad line is reported with its number and nothing changes.
#[utoipa::path(post, path = "/federation/domains/{list}/csv", tag = "federation", params(("list" = String, Path), ImportQuery), request_body(content = String, content_type = "text/csv"), responses((status = 200, body = DomainListRead)))]
async fn import_csv(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(list): Path<String>,
    Query(q): Query<ImportQuery>,
    body: axum::body::Bytes,
) -> AppResult<axum::Json<DomainListRead>> {
    if body.len() > 8 * 1024 * 1024 {
        return Err(AppError::validation("CSV is at most 8 MiB"));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| AppError::validation("CSV must be UTF-8 text"))?;
    Ok(axum::Json(
        state
            .import_domain_csv(&agent, &list, text, q.replace.unwrap_or(false))
            .await?,
    ))
}

/// Follow a Repo on another instance (any user); its updates then reach this instance.
#[utoipa::path(post, path = "/federation/repos/follow", tag = "federation", request_body = RepoFollowRequest, responses((status = 201, body = FollowRead)))]
async fn follow_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<RepoFollowRequest>,
) -> AppResult<(StatusCode, axum::Json<FollowRead>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.follow_remote_repo(&agent, body).await?),
    ))
}

/// Remote Repos the calling user follows.
#[utoipa::path(get, path = "/federation/repos/follow", tag = "federation", responses((status = 200, body = Vec<FollowRead>)))]
async fn followed_repos(
    state: State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<Vec<FollowRead>>> {
    Ok(axum::Json(state.followed_repos(&agent).await?))
}

/// Stop following a remote Repo.
#[utoipa::path(post, path = "/federation/repos/unfollow", tag = "federation", request_body = RepoFollowRequest, responses((status = 204)))]
async fn unfollow_repo(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<RepoFollowRequest>,
) -> AppResult<StatusCode> {
    state.unfollow_remote_repo(&agent, &body.url).await?;
    Ok(StatusCode::NO_CONTENT)
}
