//! `/users`: registration, login, profiles, blocking.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Caller, Json, PathUuid, Query};
use crate::domain::{Order, UserRole, UserStatus};
use crate::error::AppResult;
use crate::service::users::{User, UserFilter};
use crate::service::users::{UserAuth, UserCreate, UserUpdate};
use crate::service::{check_page, Instance};

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(auth))
        .routes(routes!(generate_verification_link))
        .routes(routes!(get_user, update_user))
        .routes(routes!(block_user))
        .routes(routes!(unblock_user))
}

#[derive(Serialize, ToSchema)]
pub struct TokenRead {
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct UsersResult {
    count: i64,
    users: Vec<User>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    #[serde(default)]
    uuids: Vec<Uuid>,
    search_string: Option<String>,
    #[serde(default)]
    role: Vec<UserRole>,
    #[serde(default)]
    status: Vec<UserStatus>,
    order_by_create_date: Option<Order>,
    /// Rows skipped, default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Rows returned at most; 0 or absent: all.
    #[param(minimum = 0)]
    limit: Option<i64>,
}

/// Register; the first user of an instance becomes its Admin.
#[utoipa::path(post, path = "/users", tag = "users", request_body = UserCreate,
    responses((status = 201, body = User), (status = 422, description = "Invalid login or password")))]
async fn create_user(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<UserCreate>,
) -> AppResult<(StatusCode, axum::Json<User>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(state.create_user(&agent, body).await?),
    ))
}

/// Log in with login (or linked Telegram chat id) and password.
#[utoipa::path(post, path = "/users/auth", tag = "users", request_body = UserAuth, responses((status = 200, body = TokenRead)))]
async fn auth(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    Json(body): Json<UserAuth>,
) -> AppResult<axum::Json<TokenRead>> {
    Ok(axum::Json(TokenRead {
        token: state.authenticate(&agent, body).await?,
    }))
}

/// A one-time link that binds a Telegram chat to the caller's account: open it (or send the
/// bot `/start CODE`) within 5 minutes. 405 when the instance runs no Telegram bot.
#[utoipa::path(get, path = "/users/generate_verification_link", tag = "users", responses((status = 200, body = String, description = "`https://t.me/<bot>?start=<code>`"), (status = 405, description = "No Telegram bot on this instance")))]
async fn generate_verification_link(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<String>> {
    Ok(axum::Json(state.telegram_link(&agent).await?))
}

#[utoipa::path(get, path = "/users/{uuid}", tag = "users", params(("uuid" = Uuid, Path)), responses((status = 200, body = User)))]
async fn get_user(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<axum::Json<User>> {
    Ok(axum::Json(state.get_user(&agent, uuid).await?))
}

/// Change the caller's login or password (the path uuid is ignored, as upstream).
#[utoipa::path(patch, path = "/users/{uuid}", tag = "users", params(("uuid" = Uuid, Path)), request_body = UserUpdate, responses((status = 200, body = User)))]
async fn update_user(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    PathUuid(_uuid): PathUuid,
    Json(body): Json<UserUpdate>,
) -> AppResult<axum::Json<User>> {
    Ok(axum::Json(state.update_user(&agent, body).await?))
}

#[utoipa::path(patch, path = "/users/block/{uuid}", tag = "users", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn block_user(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.set_user_blocked(&agent, uuid, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/users/unblock/{uuid}", tag = "users", params(("uuid" = Uuid, Path)), responses((status = 204)))]
async fn unblock_user(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
) -> AppResult<StatusCode> {
    state.set_user_blocked(&agent, uuid, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/users", tag = "users", params(UserListQuery), responses((status = 200, body = UsersResult)))]
async fn list_users(
    state: axum::extract::State<Instance>,
    Caller(agent): Caller,
    Query(q): Query<UserListQuery>,
) -> AppResult<axum::Json<UsersResult>> {
    let (offset, limit) = check_page(q.offset, q.limit, None)?;
    let filter = UserFilter {
        uuids: q.uuids,
        search_string: q.search_string,
        role: q.role,
        status: q.status,
        order_by_create_date: q.order_by_create_date,
        offset,
        limit,
    };
    let (count, users) = state.list_users(&agent, filter).await?;
    Ok(axum::Json(UsersResult { count, users }))
}
