//! `/federation/bridges` (users: MQTT bridges from another instance's Output node into a local
//! Input node) and `/federation/peer/bridges` (instances: the signed requests by which the two
//! sides agree on a bridge). Rules live in `crate::service::bridges`.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json};
use crate::error::{AppError, AppResult};
use crate::service::bridges::{BridgeCreate, BridgeRead, PeerBridgeAccepted, PeerBridgeOffer};
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_bridge, list_bridges))
        .routes(routes!(delete_bridge))
        .routes(routes!(peer_offer))
        .routes(routes!(peer_delete))
}

/// Bridge an Output node of another instance into one of your Input nodes. Answers once the
/// other instance accepted (state `Active`); if it refuses, nothing is kept and the answer
/// says why.
#[utoipa::path(post, path = "/federation/bridges", tag = "federation", request_body = BridgeCreate, responses((status = 201, body = BridgeRead)))]
async fn create_bridge(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<BridgeCreate>,
) -> AppResult<(StatusCode, axum::Json<BridgeRead>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_bridge(&agent, body).await?),
    ))
}

/// Your bridges on this instance: into your Input nodes (`role` Input) and out of your Output
/// nodes (`role` Output, with the carrier's state and last error).
#[utoipa::path(get, path = "/federation/bridges", tag = "federation", responses((status = 200, body = Vec<BridgeRead>)))]
async fn list_bridges(
    state: State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<Vec<BridgeRead>>> {
    Ok(axum::Json(state.list_bridges(&agent).await?))
}

/// Remove a bridge (either side). The other instance is told; if it cannot be reached, this
/// side is removed anyway and its credential stops working.
#[utoipa::path(delete, path = "/federation/bridges/{uuid}", tag = "federation", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_bridge(
    state: State<Instance>,
    Caller(agent): Caller,
    Path(uuid): Path<String>,
) -> AppResult<StatusCode> {
    let uuid = parse_uuid(&uuid)?;
    state.delete_bridge(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Instance to instance, signed as the instance actor: the Input side offers a bridge and its
/// credential; answers the topic carried.
#[utoipa::path(post, path = "/federation/peer/bridges", tag = "federation", request_body = PeerBridgeOffer, responses((status = 201, body = PeerBridgeAccepted), (status = 401)))]
async fn peer_offer(
    state: State<Instance>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<(StatusCode, axum::Json<PeerBridgeAccepted>)> {
    let peer = verify(&state, &method, &uri, &headers, Some(&body)).await?;
    let offer: PeerBridgeOffer = serde_json::from_slice(&body)
        .map_err(|e| AppError::request("body", None, e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(state.accept_peer_bridge(&peer, offer).await?),
    ))
}

/// Instance to instance, signed: the peer removed its side of a bridge.
#[utoipa::path(delete, path = "/federation/peer/bridges/{uuid}", tag = "federation", params(("uuid" = Uuid, Path)), responses((status = 204), (status = 401)))]
async fn peer_delete(
    state: State<Instance>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> AppResult<StatusCode> {
    // signed with the digest of its empty body
    let peer = verify(&state, &method, &uri, &headers, Some(&[])).await?;
    state.delete_peer_bridge(&peer, parse_uuid(&uuid)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signature first, before anything in the request is looked at; answers the peer's domain.
async fn verify(
    state: &Instance,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> AppResult<String> {
    let req = pepeunit_federation::signing::SignedRequest {
        method: method.as_str(),
        path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        headers,
        body,
    };
    state
        .federation
        .verify_peer(&req)
        .await
        .map(|peer| peer.domain)
        .map_err(|r| AppError::peer(r.status, r.message))
}

fn parse_uuid(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|e| AppError::request("path", Some("uuid"), e.to_string()))
}
