//! `/units`: devices, their env, schema, firmware archives, state storage and logs.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{multipart_field, Caller, Json, PathUuid, Query};
use crate::domain::{BackendTopicCommand, LogLevel, Order, UnitNodeType, VisibilityLevel};
use crate::error::{AppError, AppResult};
use crate::firmware::ArchiveFormat;
use crate::service::repos::TargetVersion;
use crate::service::unit_logs::UnitLog;
use crate::service::unit_logs::UnitLogFilter;
use crate::service::units::{Unit, UnitFilter};
use crate::service::units::{UnitCreate, UnitNodeInclusion, UnitUpdate};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_unit, list_units))
        .routes(routes!(get_unit, update_unit, delete_unit))
        .routes(routes!(get_env, set_env, reset_env))
        .routes(routes!(rotate_token))
        .routes(routes!(get_target_version))
        .routes(routes!(get_current_schema))
        .routes(routes!(firmware_zip))
        .routes(routes!(firmware_tar))
        .routes(routes!(firmware_tgz))
        .routes(routes!(set_state_storage))
        .routes(routes!(get_state_storage))
        .routes(routes!(send_command))
        .routes(routes!(broker_auth))
        .routes(routes!(broker_authn))
        .routes(routes!(convert_toml_to_md))
        .routes(routes!(unit_log_list))
}

/// The largest `convert_toml_to_md` body kept: room for 10,000 four-byte characters plus the
/// multipart framing.
const MAX_README_UPLOAD: usize = 64 * 1024;

#[derive(Serialize, ToSchema)]
pub struct UnitsResult {
    count: i64,
    units: Vec<Unit>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitListQuery {
    #[serde(default)]
    uuids: Vec<Uuid>,
    creator_uuid: Option<Uuid>,
    repo_uuid: Option<Uuid>,
    #[serde(default)]
    repos_uuids: Vec<Uuid>,
    search_string: Option<String>,
    is_auto_update_from_repo_unit: Option<bool>,
    #[serde(default)]
    visibility_level: Vec<VisibilityLevel>,
    order_by_unit_name: Option<Order>,
    order_by_create_date: Option<Order>,
    order_by_last_update: Option<Order>,
    #[serde(default)]
    is_include_output_unit_nodes: bool,
    unit_node_input_uuid: Option<Uuid>,
    #[serde(default)]
    unit_node_type: Vec<UnitNodeType>,
    #[serde(default)]
    unit_node_uuids: Vec<Uuid>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct UnitLogsResult {
    count: i64,
    unit_logs: Vec<UnitLog>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitLogListQuery {
    /// The unit whose logs are listed (or give `topic`).
    uuid: Option<Uuid>,
    /// The unit's log topic instead of `uuid`:
    /// `{domain}/output_base_topic/{unit_uuid}/log/pepeunit` of this instance.
    topic: Option<String>,
    /// Repeat for several levels; absent means every level.
    #[serde(default)]
    level: Vec<LogLevel>,
    /// Lines created at or after this UTC instant (`2026-11-28T12:00:00.000000`; RFC 3339
    /// with an offset is accepted too).
    start_create_datetime: Option<String>,
    /// Lines created at or before this UTC instant.
    end_create_datetime: Option<String>,
    /// Default `desc` (newest first).
    order_by_create_date: Option<Order>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvUpdate {
    /// A JSON object, as text.
    env_json_string: String,
}

#[derive(Deserialize, ToSchema)]
pub struct StateStorage {
    /// Any text (`""` clears); other JSON values are stored as their JSON text.
    state: Value,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TgzQuery {
    /// zlib 9..=15, gzip 25..=31 or raw deflate -15..=-9; default 9.
    #[param(schema_with = tgz_wbits_schema)]
    wbits: Option<i32>,
    /// Compression level -1..=9 (-1: zlib's default); default 9.
    #[param(minimum = -1, maximum = 9)]
    level: Option<i32>,
}

/// The three ranges of [`TgzQuery::wbits`] (as `firmware::ArchiveFormat::tgz` checks them).
fn tgz_wbits_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let range = |lo: i32, hi: i32, what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(lo))
            .maximum(Some(hi))
            .description(Some(what))
    };
    OneOfBuilder::new()
        .item(range(9, 15, "zlib"))
        .item(range(25, 31, "gzip"))
        .item(range(-15, -9, "raw deflate"))
        .into()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandQuery {
    command: BackendTopicCommand,
}

#[utoipa::path(post, path = "/units", tag = "units", request_body = UnitCreate, responses((status = 201, body = Unit)))]
async fn create_unit(
    state: State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<UnitCreate>,
) -> AppResult<(StatusCode, axum::Json<Unit>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_unit(&agent, body).await?),
    ))
}

#[utoipa::path(get, path = "/units/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, body = Unit)))]
async fn get_unit(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<Unit>> {
    Ok(axum::Json(state.get_unit(&agent, uuid).await?))
}

#[utoipa::path(get, path = "/units", tag = "units", params(UnitListQuery), responses((status = 200, body = UnitsResult)))]
async fn list_units(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<UnitListQuery>,
) -> AppResult<axum::Json<UnitsResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = UnitFilter {
        uuids: q.uuids,
        creator_uuid: q.creator_uuid,
        repo_uuid: q.repo_uuid,
        repos_uuids: q.repos_uuids,
        search_string: q.search_string,
        is_auto_update_from_repo_unit: q.is_auto_update_from_repo_unit,
        order_by_unit_name: q.order_by_unit_name,
        order_by_create_date: q.order_by_create_date,
        order_by_last_update: q.order_by_last_update,
        owning_nodes: None,
        offset,
        limit,
    };
    let nodes = UnitNodeInclusion {
        include: q.is_include_output_unit_nodes,
        unit_node_input_uuid: q.unit_node_input_uuid,
        unit_node_type: q.unit_node_type,
        unit_node_uuids: q.unit_node_uuids,
    };
    let (count, units) = state
        .list_units(&agent, filter, &q.visibility_level, nodes)
        .await?;
    Ok(axum::Json(UnitsResult { count, units }))
}

#[utoipa::path(patch, path = "/units/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), request_body = UnitUpdate, responses((status = 200, body = Unit)))]
async fn update_unit(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<UnitUpdate>,
) -> AppResult<axum::Json<Unit>> {
    Ok(axum::Json(state.update_unit(&agent, uuid, body).await?))
}

#[utoipa::path(delete, path = "/units/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_unit(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.delete_unit(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The unit's `env.json` (creator or the unit itself).
#[utoipa::path(get, path = "/units/env/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, body = Object)))]
async fn get_env(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<Response> {
    let env = state.get_unit_env(&agent, uuid).await?;
    // a moving unit's device gets the env of its new instance; a moved one is sent there
    match state.moved_env(&agent, uuid).await? {
        Some(crate::service::moves::MovedEnv::Env(env)) => Ok(axum::Json(env).into_response()),
        Some(crate::service::moves::MovedEnv::Redirect(url)) => Ok((
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, url)],
            axum::Json(serde_json::json!({"detail": "This unit has moved to another instance"})),
        )
            .into_response()),
        None => Ok(axum::Json(env).into_response()),
    }
}

/// Gives the unit a new token (its creator only) and answers with its env.json holding it.
/// Every token issued to the unit before is refused from now on: REST, MQTT authentication
/// and topic checks, and the embedded broker disconnects sessions opened with one. The device
/// cannot fetch the new env with its old token: flash it (env.json or a firmware archive).
#[utoipa::path(post, path = "/units/rotate_token/{uuid}", tag = "units", params(("uuid" = Uuid, Path)),
    responses(
        (status = 200, body = Object, description = "The unit's env.json with the new `PU_AUTH_TOKEN`"),
        (status = 403, description = "No Access: only the unit's creator rotates its token"),
        (status = 404, description = "No such unit"),
    ))]
async fn rotate_token(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<serde_json::Map<String, Value>>> {
    Ok(axum::Json(state.rotate_unit_token(&agent, uuid).await?))
}

#[utoipa::path(patch, path = "/units/env/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), request_body = EnvUpdate, responses((status = 204)))]
async fn set_env(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<EnvUpdate>,
) -> AppResult<StatusCode> {
    state
        .set_unit_env(&agent, uuid, &body.env_json_string)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/units/env/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn reset_env(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.reset_unit_env(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/units/get_target_version/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, body = TargetVersion)))]
async fn get_target_version(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<TargetVersion>> {
    Ok(axum::Json(
        state.get_unit_target_version(&agent, uuid).await?,
    ))
}

/// The unit's `schema.json`.
#[utoipa::path(get, path = "/units/get_current_schema/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, body = Object)))]
async fn get_current_schema(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<Value>> {
    Ok(axum::Json(state.get_unit_schema(&agent, uuid).await?))
}

async fn firmware(
    state: &Instance,
    agent: &crate::service::Agent,
    uuid: Uuid,
    format: ArchiveFormat,
) -> AppResult<Response> {
    let bytes = state.unit_firmware(agent, uuid, format).await?;
    let name = format!("firmware_{uuid}.{}", format.file_extension());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/units/firmware/zip/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, content_type = "application/zip", body = Vec<u8>)))]
async fn firmware_zip(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<Response> {
    firmware(&state, &agent, uuid, ArchiveFormat::Zip).await
}

#[utoipa::path(get, path = "/units/firmware/tar/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, content_type = "application/x-tar", body = Vec<u8>)))]
async fn firmware_tar(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<Response> {
    firmware(&state, &agent, uuid, ArchiveFormat::Tar).await
}

/// The tar compressed as one stream: zlib for `wbits` 9..15, gzip for 25..31, raw deflate for -15..-9.
#[utoipa::path(get, path = "/units/firmware/tgz/{uuid}", tag = "units", params(("uuid" = Uuid, Path), TgzQuery), responses((status = 200, content_type = "application/x-tar", body = Vec<u8>)))]
async fn firmware_tgz(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Query(q): Query<TgzQuery>,
) -> AppResult<Response> {
    let format = ArchiveFormat::tgz(q.wbits.unwrap_or(9), q.level.unwrap_or(9))
        .map_err(|e| AppError::unit(e.to_string()))?;
    firmware(&state, &agent, uuid, format).await
}

#[utoipa::path(post, path = "/units/set_state_storage/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), request_body = StateStorage, responses((status = 204)))]
async fn set_state_storage(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<StateStorage>,
) -> AppResult<StatusCode> {
    state
        .set_unit_state_storage(&agent, uuid, body.state)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The stored state as a JSON string (`""` when unset).
#[utoipa::path(get, path = "/units/get_state_storage/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), responses((status = 200, body = String)))]
async fn get_state_storage(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<String>> {
    Ok(axum::Json(
        state.get_unit_state_storage(&agent, uuid).await?,
    ))
}

/// Publish a command to the unit's input base topic (needs the MQTT core).
#[utoipa::path(post, path = "/units/send_command_to_input_base_topic/{uuid}", tag = "units", params(("uuid" = Uuid, Path), CommandQuery), responses((status = 204), (status = 422, description = "MQTT Error")))]
async fn send_command(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Query(q): Query<CommandQuery>,
) -> AppResult<StatusCode> {
    state.send_unit_command(&agent, uuid, q.command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A unit's logs that have not expired (creator or the unit itself), by `uuid` or by its log
/// `topic`, with level and creation-time filters. `/units/log_list/` with the slash, as
/// upstream, reaches the same handler.
#[utoipa::path(get, path = "/units/log_list", tag = "units", params(UnitLogListQuery), responses((status = 200, body = UnitLogsResult)))]
async fn unit_log_list(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<UnitLogListQuery>,
) -> AppResult<axum::Json<UnitLogsResult>> {
    let filter = UnitLogFilter {
        uuid: q.uuid,
        topic: q.topic,
        level: q.level,
        start_create_datetime: q.start_create_datetime,
        end_create_datetime: q.end_create_datetime,
        order_by_create_date: q.order_by_create_date,
        offset: q.offset,
        limit: q.limit,
    };
    let (count, unit_logs) = state.unit_log_list(&agent, filter).await?;
    Ok(axum::Json(UnitLogsResult { count, unit_logs }))
}

/// The multipart form of `convert_toml_to_md`, for the OpenAPI document only (the handler
/// reads the form itself).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TomlUpload {
    /// A `pepeunit.toml`: UTF-8, at most 10,000 characters.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Renders an uploaded `pepeunit.toml` as the Unit's `readme.md` (any User).
#[utoipa::path(
    post,
    path = "/units/convert_toml_to_md",
    tag = "units",
    request_body(content = TomlUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, content_type = "text/markdown", body = String),
        (status = 403, description = "No Access: only a User may convert"),
        (status = 422, description = "Readme Generation Error, or no `file` field"),
    )
)]
async fn convert_toml_to_md(
    state: State<Instance>,
    Caller(agent): Caller,
    request: Request,
) -> AppResult<Response> {
    let too_large = || {
        AppError::readme(format!(
            "The upload is larger than {MAX_README_UPLOAD} bytes, although a pepeunit.toml may only have <= {} characters",
            crate::service::readme::MAX_TOML_CHARS
        ))
    };
    let file = multipart_field(request, &state, "file", MAX_README_UPLOAD, too_large).await?;
    let markdown = state.convert_toml_to_md(&agent, &file)?;
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        markdown,
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct BrokerAuthRequest {
    /// The MQTT username: the unit's (or the backend's) token.
    token: String,
    topic: String,
    /// `publish` or `subscribe` when the broker sends it (EMQX: `${action}`); without it both
    /// are judged by the same, looser rule, as upstream.
    #[serde(default)]
    action: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BrokerAuthResult {
    result: crate::service::broker_access::BrokerDecision,
}

#[derive(Deserialize, ToSchema)]
pub struct BrokerAuthnRequest {
    /// The MQTT username: the unit's (or the backend's) token.
    username: String,
    /// The MQTT client id; accepted for the record, not checked.
    #[serde(default)]
    #[allow(dead_code)]
    clientid: Option<String>,
}

/// EMQX HTTP authenticator: may a client with this MQTT username connect? Always 200; only a
/// Unit token of an existing unit or this instance's Backend token is allowed.
#[utoipa::path(post, path = "/units/mqtt_authn", tag = "units", request_body = BrokerAuthnRequest, responses((status = 200, body = BrokerAuthResult)))]
async fn broker_authn(
    state: State<Instance>,
    Json(body): Json<BrokerAuthnRequest>,
) -> axum::Json<BrokerAuthResult> {
    use crate::service::broker_access::BrokerDecision;
    let result = if state.broker_authenticate(&body.username).await {
        BrokerDecision::Allow
    } else {
        BrokerDecision::Deny
    };
    axum::Json(BrokerAuthResult { result })
}

/// EMQX HTTP authorization source: may this MQTT username use this topic? Always 200.
#[utoipa::path(post, path = "/units/auth", tag = "units", request_body = BrokerAuthRequest, responses((status = 200, body = BrokerAuthResult)))]
async fn broker_auth(
    state: State<Instance>,
    Json(body): Json<BrokerAuthRequest>,
) -> axum::Json<BrokerAuthResult> {
    use crate::service::broker_access::{BrokerAction, BrokerDecision};
    let action = match body
        .action
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("all") => Ok(None),
        Some("publish") => Ok(Some(BrokerAction::Publish)),
        Some("subscribe") => Ok(Some(BrokerAction::Subscribe)),
        Some(_) => Err(()),
    };
    let result = match action {
        Ok(action) => {
            state
                .broker_decision(&body.token, &body.topic, action)
                .await
        }
        Err(()) => BrokerDecision::Deny,
    };
    axum::Json(BrokerAuthResult { result })
}
