//! Moving a Unit to another instance: tickets and moves for users, the signed peer endpoints
//! the two instances talk through, and "update env from the instance".

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use pepeunit_federation::peer::Peer;
use pepeunit_federation::signing::SignedRequest;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid, Query};
use crate::error::{AppError, AppResult};
use crate::service::moves::{MoveRead, MoveRequest, TicketRead};
use crate::service::units::EnvRefreshRead;
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_ticket))
        .routes(routes!(start_move, get_move, cancel_move))
        .routes(routes!(update_env_from_instance))
        .routes(routes!(peer_create))
        .routes(routes!(peer_status, peer_cancel))
}

/// A one-time ticket (1 hour) that lets another instance move one Unit into your account here.
#[utoipa::path(post, path = "/federation/move_tickets", tag = "federation", responses((status = 201, body = TicketRead)))]
async fn create_ticket(
    State(state): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<(StatusCode, axum::Json<TicketRead>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_move_ticket(&agent).await?),
    ))
}

/// Move a Unit to another instance with a ticket made there. The device follows by itself:
/// it is told to fetch the new env and schema and to restart; `GET` shows the progress.
#[utoipa::path(post, path = "/units/move/{uuid}", tag = "units", params(("uuid" = uuid::Uuid, Path)), request_body = MoveRequest,
    responses((status = 202, body = MoveRead), (status = 422, description = "The target refused or cannot be reached")))]
async fn start_move(
    State(state): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<MoveRequest>,
) -> AppResult<(StatusCode, axum::Json<MoveRead>)> {
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(state.start_move(&agent, uuid, body).await?),
    ))
}

/// The Unit's latest move.
#[utoipa::path(get, path = "/units/move/{uuid}", tag = "units", params(("uuid" = uuid::Uuid, Path)), responses((status = 200, body = MoveRead)))]
async fn get_move(
    State(state): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<MoveRead>> {
    Ok(axum::Json(state.get_move(&agent, uuid).await?))
}

/// Cancel a move the device has not completed: this instance keeps the Unit.
#[utoipa::path(delete, path = "/units/move/{uuid}", tag = "units", params(("uuid" = uuid::Uuid, Path)), responses((status = 200, body = MoveRead)))]
async fn cancel_move(
    State(state): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<MoveRead>> {
    Ok(axum::Json(state.cancel_move(&agent, uuid).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefreshQuery {
    /// Also send `Reset`, so that a new broker address takes effect.
    #[serde(default)]
    restart: bool,
}

/// Update env from the instance: the stored env's instance keys (domain, broker, token) are
/// rewritten from this instance's settings and the device is told to fetch env and schema.
#[utoipa::path(post, path = "/units/update_env_from_instance/{uuid}", tag = "units", params(("uuid" = uuid::Uuid, Path), RefreshQuery),
    responses((status = 200, body = EnvRefreshRead)))]
async fn update_env_from_instance(
    State(state): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Query(q): Query<RefreshQuery>,
) -> AppResult<axum::Json<EnvRefreshRead>> {
    Ok(axum::Json(
        state
            .update_env_from_instance(&agent, uuid, q.restart)
            .await?,
    ))
}

/// The instance that signed a peer request, or the refusal.
async fn signed_peer(
    state: &Instance,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<Peer, Response> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = SignedRequest {
        method: method.as_str(),
        path_and_query: path,
        headers,
        body,
    };
    state.federation.verify_peer(&req).await.map_err(|r| {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNAUTHORIZED);
        (status, axum::Json(json!({"detail": r.message}))).into_response()
    })
}

fn app_response(r: AppResult<Response>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

/// Peer (signed by another instance): create a moving Unit here with a ticket.
#[utoipa::path(post, path = "/federation/peer/moves", tag = "federation", request_body(content = Object, content_type = "application/json"), responses((status = 201), (status = 401), (status = 403)))]
async fn peer_create(
    State(state): State<Instance>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = match signed_peer(&state, &method, &uri, &headers, Some(&body)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    app_response(
        async {
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| AppError::transfer(format!("body is not JSON: {e}")))?;
            let out = state.peer_move_create(&peer, &doc).await?;
            Ok((StatusCode::CREATED, axum::Json(out)).into_response())
        }
        .await,
    )
}

/// Peer: how a move from the signing instance is going (`Syncing`, `Ready` + env, `Arrived`).
#[utoipa::path(get, path = "/federation/peer/moves/{uuid}", tag = "federation", params(("uuid" = uuid::Uuid, Path)), responses((status = 200), (status = 404)))]
async fn peer_status(
    State(state): State<Instance>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    PathUuid(uuid): PathUuid,
) -> Response {
    let peer = match signed_peer(&state, &method, &uri, &headers, None).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    app_response(
        state
            .peer_move_status(&peer, uuid)
            .await
            .map(|v| axum::Json(v).into_response()),
    )
}

/// Peer: the signing instance cancels; our copy goes (409 once the device has arrived).
#[utoipa::path(delete, path = "/federation/peer/moves/{uuid}", tag = "federation", params(("uuid" = uuid::Uuid, Path)), responses((status = 204), (status = 409)))]
async fn peer_cancel(
    State(state): State<Instance>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    PathUuid(uuid): PathUuid,
) -> Response {
    let peer = match signed_peer(&state, &method, &uri, &headers, None).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    app_response(state.peer_move_cancel(&peer, uuid).await.map(|done| {
        if done {
            StatusCode::NO_CONTENT.into_response()
        } else {
            (
                StatusCode::CONFLICT,
                axum::Json(json!({"detail": "the device has arrived here"})),
            )
                .into_response()
        }
    }))
}
