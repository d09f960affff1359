//! The HTTP front door: REST API v1 under `{PU_APP_PREFIX}{PU_API_ACTUAL_PREFIX}`, the root
//! document, OpenAPI and its docs page. Handlers only parse, call the service layer and encode.

mod alerts;
mod bridges;
mod data_pipes;
pub mod extract;
mod federation;
mod grades;
mod grafana;
mod load;
mod moves;
mod node;
mod oidc;
mod permission;
mod repos;
mod repository_registry;
mod scrapers;
mod throttle;
mod transfer;
mod unit_nodes;
mod units;
mod users;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, ServiceExt};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tower::Layer;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::observe::{Channel, Node};
use crate::service::{Instance, InstanceMetrics};
use extract::Caller;

#[derive(OpenApi)]
#[openapi(
    info(title = "Pepeunit", description = "Self-hosted federated IoT platform: REST API v1"),
    tags(
        (name = "users"), (name = "repository_registry"), (name = "repos"),
        (name = "units"), (name = "unit_nodes"), (name = "permission"), (name = "metrics"),
        (name = "federation"), (name = "hub"), (name = "grafana")
    ),
    // Enums used only by query parameters: utoipa collects the schemas of bodies and
    // responses, not those of `IntoParams` fields, so they are registered here (tests/openapi.rs
    // fails on any `$ref` that does not resolve).
    components(schemas(
        crate::domain::Order, crate::domain::BackendTopicCommand, crate::domain::LogLevel,
        crate::domain::VisibilityLevel, crate::domain::UnitNodeType, crate::domain::UserRole,
        crate::domain::UserStatus, crate::domain::PermissionEntities,
        crate::domain::datapipe::ProcessingPolicyType, crate::domain::datapipe::AggregationFunction
    ))
)]
struct ApiDoc;

/// Builds the API router and its OpenAPI document from the handlers' annotations.
pub fn api() -> (Router<Instance>, OpenApiDoc) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(repository_registry::router())
        .merge(repos::router())
        .merge(units::router())
        .merge(unit_nodes::router())
        .merge(data_pipes::router())
        .merge(permission::router())
        .merge(federation::router())
        .merge(transfer::router())
        .merge(moves::router())
        .merge(bridges::router())
        .merge(alerts::router())
        .merge(load::router())
        .merge(node::router())
        .merge(grades::router())
        .merge(grafana::router())
        .merge(oidc::router())
        .merge(throttle::router())
        .merge(scrapers::router())
        .routes(routes!(metrics))
        .routes(routes!(mqtt_metrics))
        .split_for_parts()
}

/// The whole application: prefixed API, root document, docs, Prometheus text, JSON 404/405.
/// Every request is counted: ActivityPub's routes as `activitypub`, all others as `rest`.
pub fn router(instance: Instance) -> Router {
    let (api, mut doc) = api();
    let c = &instance.config;
    let api_base = format!("{}{}", c.app_prefix, c.api_prefix);
    doc.servers = Some(vec![utoipa::openapi::server::Server::new(api_base.clone())]);
    let doc_json = serde_json::to_value(&doc).expect("OpenAPI serializes");
    let docs_page = docs_html(&format!("{api_base}/openapi.json"));
    Router::new()
        .nest(
            &api_base,
            api.route("/openapi.json", get(move || async move { Json(doc_json) })),
        )
        .route(&c.app_prefix, get(root))
        .route(
            &format!("{}/docs", c.app_prefix),
            get(move || async move { Html(docs_page) }),
        )
        .route(
            &format!("{}/metrics", c.app_prefix),
            get(node::prometheus_metrics),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(instance.clone())
        .layer(from_fn_with_state(instance.node.clone(), count_rest))
        .merge(
            pepeunit_federation::routes::router(instance.federation.clone())
                .layer(from_fn_with_state(instance.node.clone(), count_activitypub)),
        )
}

async fn count_rest(State(node): State<Node>, req: Request, next: Next) -> Response {
    counted(node, Channel::Rest, req, next).await
}

async fn count_activitypub(State(node): State<Node>, req: Request, next: Next) -> Response {
    counted(node, Channel::Activitypub, req, next).await
}

/// Counts the request; a 500's cause (left on the response by `AppError`) goes to the tracker.
async fn counted(node: Node, channel: Channel, req: Request, next: Next) -> Response {
    node.count(channel);
    let response = next.run(req).await;
    if let Some(crate::error::InternalError(cause)) = response.extensions().get() {
        let kind = format!("internal: {}", crate::observe::errors::normalize(cause));
        node.error(&kind, cause);
    }
    response
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"detail": "Method Not Allowed"})),
    )
        .into_response()
}

/// `/a/b/` and `/a/b` are the same route (upstream needed the slash on some paths).
fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let new = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Serves the application, with the other front doors' routes in `others` (GraphQL), on
/// `listener` until `shutdown` resolves.
pub async fn serve(
    instance: Instance,
    others: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = tower::util::MapRequestLayer::new(trim_trailing_slash)
        .layer(others.merge(router(instance)));
    axum::serve(
        listener,
        ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[derive(Serialize)]
struct FeatureFlags {
    pu_ff_telegram_bot_enable: bool,
    pu_ff_grafana_integration_enable: bool,
    pu_ff_datapipe_enable: bool,
    pu_ff_datapipe_default_last_value_enable: bool,
    pu_ff_prometheus_enable: bool,
}

/// `GET /pepeunit`: version and feature flags.
async fn root(State(instance): State<Instance>) -> Json<serde_json::Value> {
    let c = &instance.config;
    let origin = c.origin();
    let telegram_bot = match &instance.chat_bot {
        // known once the bot started (getMe); the root document never waits for Telegram
        Some(t) => t.cached_username().map(|n| format!("https://t.me/{n}")),
        None => None,
    };
    Json(json!({
        "name": "pepeunit",
        "version": env!("CARGO_PKG_VERSION"),
        "description": env!("CARGO_PKG_DESCRIPTION"),
        "license": env!("CARGO_PKG_LICENSE"),
        "authors": "Pepeunit Rust developers",
        "swagger": format!("{origin}{}/docs", c.app_prefix),
        "graphql": format!("{origin}{}/graphql", c.app_prefix),
        "grafana": format!("{origin}/grafana/"),
        "telegram_bot": telegram_bot,
        "feature_flags": FeatureFlags {
            pu_ff_telegram_bot_enable: instance.chat_bot.is_some(),
            pu_ff_grafana_integration_enable: instance.config.ff_grafana,
            pu_ff_datapipe_enable: c.ff_datapipe,
            pu_ff_datapipe_default_last_value_enable: c.ff_datapipe
                && c.ff_datapipe_default_last_value,
            pu_ff_prometheus_enable: true,
        },
        // read by the official frontend's dashboard editor
        "settings": {
            "pu_grafana_limit_unit_node_per_one_panel": c.grafana_limit_unit_node_per_one_panel,
        },
    }))
}

/// Entity counts of the instance.
#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, body = InstanceMetrics)))]
async fn metrics(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> crate::error::AppResult<Json<InstanceMetrics>> {
    Ok(Json(instance.metrics(&agent).await?))
}

/// Admins and scrapers: the MQTT core's state (connection, shard queues, counters).
#[utoipa::path(get, path = "/metrics/mqtt", tag = "metrics", responses((status = 200, body = crate::observe::mqtt::MqttReport)))]
async fn mqtt_metrics(
    State(instance): State<Instance>,
    extract::Reading(reader): extract::Reading,
) -> crate::error::AppResult<Json<crate::observe::mqtt::MqttReport>> {
    reader.require_admin_or_scraper()?;
    Ok(Json(instance.mqtt_report()))
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Object;

/// The docs page (static/docs.html): Swagger UI from a CDN, as upstream, pointed at our document.
fn docs_html(spec_url: &str) -> String {
    include_str!("../../static/docs.html").replace("__SPEC_URL__", spec_url)
}
