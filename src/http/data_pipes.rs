//! `/unit_nodes/*data_pipe*`: a node's pipeline config and data (issue 17, DATAPIPE.md), at
//! upstream's paths.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{multipart_field, Caller, PathUuid, Query};
use crate::domain::datapipe::{
    AggregationFunction, DataPipeStage, PipeRow, ProcessingPolicyType, TypeInputValue,
};
use crate::domain::{format_time, parse_time, Order};
use crate::error::{AppError, AppResult};
use crate::service::data_pipes::{
    parse_relative_time, PipeData, PipeDataRequest, MAX_CONFIG_BYTES, MAX_CSV_BYTES,
};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(check_data_pipe_config))
        .routes(routes!(set_data_pipe_config))
        .routes(routes!(get_data_pipe_config))
        .routes(routes!(get_data_pipe_data))
        .routes(routes!(get_data_pipe_data_csv))
        .routes(routes!(set_data_pipe_data_csv))
        .routes(routes!(delete_data_pipe_data))
}

/// A multipart upload with one file field, `data`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DataUpload {
    #[schema(value_type = String, format = Binary)]
    data: Vec<u8>,
}

#[derive(Serialize, ToSchema)]
pub struct DataPipeValidationError {
    stage: DataPipeStage,
    message: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeQuery {
    uuid: Uuid,
}

async fn upload(request: Request, state: &Instance, max: usize) -> AppResult<Vec<u8>> {
    multipart_field(request, state, "data", max, || {
        AppError::data_pipe(format!("The file is larger than {max} bytes"))
    })
    .await
}

/// Validates a config file: the list of `{stage, message}`, empty when it is valid.
#[utoipa::path(post, path = "/unit_nodes/check_data_pipe_config", tag = "unit_nodes",
    request_body(content = DataUpload, content_type = "multipart/form-data"),
    responses((status = 200, body = Vec<DataPipeValidationError>)))]
async fn check_data_pipe_config(
    state: State<Instance>,
    Caller(agent): Caller,
    request: Request,
) -> AppResult<axum::Json<Vec<DataPipeValidationError>>> {
    let file = upload(request, &state, MAX_CONFIG_BYTES).await?;
    let errors = state.check_data_pipe_config(&agent, &file)?;
    Ok(axum::Json(
        errors
            .into_iter()
            .map(|e| DataPipeValidationError {
                stage: e.stage,
                message: e.message,
            })
            .collect(),
    ))
}

/// Sets a node's config (its creator; the node must have `is_data_pipe_active`). The
/// pipeline runs it at once.
#[utoipa::path(post, path = "/unit_nodes/set_data_pipe_config", tag = "unit_nodes", params(NodeQuery),
    request_body(content = DataUpload, content_type = "multipart/form-data"),
    responses((status = 204), (status = 422, description = "DataPipe Validation Error")))]
async fn set_data_pipe_config(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<NodeQuery>,
    request: Request,
) -> AppResult<StatusCode> {
    let file = upload(request, &state, MAX_CONFIG_BYTES).await?;
    state.set_data_pipe_config(&agent, q.uuid, &file).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A node's config as YAML.
#[utoipa::path(get, path = "/unit_nodes/get_data_pipe_config/{uuid}", tag = "unit_nodes",
    params(("uuid" = Uuid, Path)), responses((status = 200, content_type = "text/plain", body = String)))]
async fn get_data_pipe_config(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<Response> {
    let yaml = state.get_data_pipe_config(&agent, uuid).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"data_pipe_{uuid}.yml\""),
            ),
        ],
        yaml,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DataPipeQuery {
    uuid: Uuid,
    #[serde(rename = "type")]
    policy: ProcessingPolicyType,
    /// Words each found in `state` (case-insensitive; not for Aggregation).
    search_string: Option<String>,
    /// Aggregation: these functions only (none given: every function).
    #[serde(default)]
    aggregation_type: Vec<AggregationFunction>,
    time_window_size: Option<u32>,
    /// Aggregation windows ending at or after / at or before (ISO 8601, UTC).
    start_agg_window_datetime: Option<String>,
    end_agg_window_datetime: Option<String>,
    /// Rows created at or after / at or before (ISO 8601, UTC).
    start_create_datetime: Option<String>,
    end_create_datetime: Option<String>,
    /// Rows created within this long before now: `<int><s|m|h|d|M|y>`.
    relative_time: Option<String>,
    order_by_create_date: Option<Order>,
    #[param(minimum = 0)]
    offset: Option<i64>,
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// NRecords and TimeWindow rows (TimeWindow has `expiration_datetime`, NRecords `max_count`).
#[derive(Serialize, ToSchema)]
pub struct PipeValueItem {
    unit_node_uuid: Uuid,
    state: String,
    state_type: TypeInputValue,
    create_datetime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_datetime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_count: Option<u32>,
    size: u32,
}

#[derive(Serialize, ToSchema)]
pub struct PipeAggregationItem {
    unit_node_uuid: Uuid,
    state: f64,
    aggregation_type: AggregationFunction,
    time_window_size: u32,
    create_datetime: String,
    start_window_datetime: String,
    end_window_datetime: String,
}

#[derive(Serialize, ToSchema)]
pub struct PipeLastValueItem {
    unit_node_uuid: Uuid,
    state: Option<String>,
    last_update_datetime: String,
}

/// One item, by the node's policy.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PipeDataItem {
    Value(PipeValueItem),
    Aggregation(PipeAggregationItem),
    LastValue(PipeLastValueItem),
}

#[derive(Serialize, ToSchema)]
pub struct PipeDataResult {
    count: i64,
    pipe_data: Vec<PipeDataItem>,
}

fn item(row: PipeRow) -> PipeDataItem {
    match row {
        PipeRow::NRecords(r) => PipeDataItem::Value(PipeValueItem {
            unit_node_uuid: r.unit_node_uuid,
            state: r.state,
            state_type: r.state_type,
            create_datetime: format_time(r.create_datetime),
            expiration_datetime: None,
            max_count: Some(r.max_count),
            size: r.size,
        }),
        PipeRow::Window(r) => PipeDataItem::Value(PipeValueItem {
            unit_node_uuid: r.unit_node_uuid,
            state: r.state,
            state_type: r.state_type,
            create_datetime: format_time(r.create_datetime),
            expiration_datetime: Some(format_time(r.expiration_datetime)),
            max_count: None,
            size: r.size,
        }),
        PipeRow::Aggregation(r) => PipeDataItem::Aggregation(PipeAggregationItem {
            unit_node_uuid: r.unit_node_uuid,
            state: r.state,
            aggregation_type: r.aggregation_type,
            time_window_size: r.time_window_size,
            create_datetime: format_time(r.create_datetime),
            start_window_datetime: format_time(r.start_window_datetime),
            end_window_datetime: format_time(r.end_window_datetime),
        }),
    }
}

pub(super) fn time_param(
    name: &str,
    value: Option<String>,
) -> AppResult<Option<chrono::NaiveDateTime>> {
    value
        .map(|v| {
            let trimmed = v.trim_end_matches('Z');
            parse_time(trimmed)
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
                .ok_or_else(|| {
                    AppError::request(
                        "query",
                        Some(name),
                        format!("Input should be a valid datetime, got {v:?}"),
                    )
                })
        })
        .transpose()
}

/// A node's pipeline data (its creator, or a unit that may see the node), by policy.
/// `/unit_nodes/get_data_pipe_data/` with the slash, as upstream, is the same route.
#[utoipa::path(get, path = "/unit_nodes/get_data_pipe_data", tag = "unit_nodes", params(DataPipeQuery),
    responses((status = 200, body = PipeDataResult)))]
async fn get_data_pipe_data(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<DataPipeQuery>,
) -> AppResult<axum::Json<PipeDataResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let request = PipeDataRequest {
        node: q.uuid,
        policy: q.policy,
        search: q.search_string,
        aggregation_types: q.aggregation_type,
        time_window_size: q.time_window_size,
        end_window_from: time_param("start_agg_window_datetime", q.start_agg_window_datetime)?,
        end_window_to: time_param("end_agg_window_datetime", q.end_agg_window_datetime)?,
        created_from: time_param("start_create_datetime", q.start_create_datetime)?,
        created_to: time_param("end_create_datetime", q.end_create_datetime)?,
        relative: q
            .relative_time
            .as_deref()
            .map(parse_relative_time)
            .transpose()?,
        order: q.order_by_create_date,
        offset,
        limit,
    };
    let (count, data) = state.get_data_pipe_data(&agent, request).await?;
    let pipe_data = match data {
        PipeData::LastValue {
            node,
            state,
            last_update_datetime,
        } => vec![PipeDataItem::LastValue(PipeLastValueItem {
            unit_node_uuid: node,
            state,
            last_update_datetime,
        })],
        PipeData::Rows(rows) => rows.into_iter().map(item).collect(),
    };
    Ok(axum::Json(PipeDataResult { count, pipe_data }))
}

/// A node's rows as CSV inside a ZIP (`dp_data_<uuid>.csv`).
#[utoipa::path(get, path = "/unit_nodes/get_data_pipe_data_csv/{uuid}", tag = "unit_nodes",
    params(("uuid" = Uuid, Path)), responses((status = 200, content_type = "application/zip", body = Vec<u8>)))]
async fn get_data_pipe_data_csv(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<Response> {
    let (name, zip) = state.export_data_pipe_csv(&agent, uuid).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        zip,
    )
        .into_response())
}

/// Replaces a node's rows with a CSV file's (its creator); every row is checked against the
/// node's config, all or nothing.
#[utoipa::path(post, path = "/unit_nodes/set_data_pipe_data_csv", tag = "unit_nodes", params(NodeQuery),
    request_body(content = DataUpload, content_type = "multipart/form-data"),
    responses((status = 204), (status = 422, description = "DataPipe Validation Error: the bad row")))]
async fn set_data_pipe_data_csv(
    state: State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<NodeQuery>,
    request: Request,
) -> AppResult<StatusCode> {
    let file = upload(request, &state, MAX_CSV_BYTES).await?;
    state.import_data_pipe_csv(&agent, q.uuid, &file).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every row a node's pipeline kept (its creator).
#[utoipa::path(delete, path = "/unit_nodes/delete_data_pipe_data/{uuid}", tag = "unit_nodes",
    params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn delete_data_pipe_data(
    state: State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.delete_data_pipe_data(&agent, uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
