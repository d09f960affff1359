//! Alerts and Telegram over HTTP: a unit's alert settings, the alert pipeline's counters, the
//! webhook EMQX's rule posts log messages to, and the Telegram webhook.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, PathUuid};
use crate::error::{AppError, AppResult};
use crate::service::alerts::{AlertReport, EmqxLogMessage, UnitAlertsUpdate};
use crate::service::units::Unit;
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(set_unit_alerts))
        .routes(routes!(emqx_log_message))
        .routes(routes!(alert_metrics))
        .routes(routes!(telegram_webhook))
}

/// Set from which level a unit's log lines become alerts, or mute them for a while
/// (`mute_seconds`: 0 unmutes). The unit's creator only.
#[utoipa::path(patch, path = "/units/alerts/{uuid}", tag = "units", params(("uuid" = Uuid, Path)), request_body = UnitAlertsUpdate, responses((status = 200, body = Unit)))]
async fn set_unit_alerts(
    State(instance): State<Instance>,
    Caller(agent): Caller,
    PathUuid(uuid): PathUuid,
    Json(body): Json<UnitAlertsUpdate>,
) -> AppResult<axum::Json<Unit>> {
    Ok(axum::Json(
        instance.set_unit_alerts(&agent, uuid, body).await?,
    ))
}

/// EMQX's Rule Engine HTTP action: a device's log message (`Authorization: Bearer <secret>`,
/// the secret the broker-config worker gave EMQX). Lines at or above the unit's alert level
/// become alerts; a redelivered message id is ignored.
#[utoipa::path(post, path = "/units/alerts/emqx", tag = "units", request_body = EmqxLogMessage, responses((status = 204), (status = 403)))]
async fn emqx_log_message(
    State(instance): State<Instance>,
    headers: HeaderMap,
    Json(body): Json<EmqxLogMessage>,
) -> AppResult<StatusCode> {
    let expected = format!("Bearer {}", instance.emqx_webhook_secret());
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::crypto::constant_time_eq(given, expected.as_bytes()) {
        return Err(AppError::no_access("Bad alert webhook credentials"));
    }
    instance.alert_from_emqx(body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admin: the alert pipeline's counters.
#[utoipa::path(get, path = "/metrics/alerts", tag = "metrics", responses((status = 200, body = AlertReport)))]
async fn alert_metrics(
    State(instance): State<Instance>,
    Caller(agent): Caller,
) -> AppResult<axum::Json<AlertReport>> {
    agent.require_admin()?;
    Ok(axum::Json(instance.alert_report()))
}

/// Telegram's webhook (`PU_TELEGRAM_MODE=webhook`): one Update per request, authenticated by
/// the secret token registered with `setWebhook`. Answers at once; the bot replies with
/// `sendMessage`.
#[utoipa::path(post, path = "/bot", tag = "users", request_body = Object, responses((status = 200), (status = 403), (status = 405)))]
async fn telegram_webhook(
    State(instance): State<Instance>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<StatusCode> {
    let bot = instance
        .chat_bot
        .clone()
        .ok_or_else(AppError::feature_disabled)?;
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    bot.receive_webhook(&instance, given, &body).await?;
    Ok(StatusCode::OK)
}
