//! The one error type of the service layer and its front doors: what went wrong, as an enum.
//!
//! Every client mistake becomes a 4xx whose body is `{"detail": "<status>: <code>: <Prefix>: <message>"}`
//! (API.md §0); internal failures are logged and answered with a bare 500 that leaks nothing.
//! Callers decide by matching variants ([`AppError::NotFound`], [`AppError::Conflict`], ...),
//! never by status numbers or message text: those belong to the wire format alone.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

/// Which product rule refused the input: the `<code>: <Prefix>` pair of a 422's detail
/// (upstream's codes; 17 and up are ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Validation,
    User,
    Permission,
    GitRepo,
    Repo,
    Unit,
    UnitNode,
    Json,
    Mqtt,
    Cipher,
    Registry,
    Platform,
    Readme,
    /// Account export/import and Unit moves.
    Transfer,
    /// Data pipe configs and data (upstream shares code 8 with UnitNode).
    DataPipe,
    /// Grafana dashboards, their panels, links and sync (ours: upstream's code is not public).
    Grafana,
}

impl Rule {
    pub fn code(self) -> u16 {
        match self {
            Rule::Validation => 2,
            Rule::User => 3,
            Rule::Permission => 4,
            Rule::GitRepo => 5,
            Rule::Repo => 6,
            Rule::Unit => 7,
            Rule::UnitNode | Rule::DataPipe => 8,
            Rule::Json => 9,
            Rule::Mqtt => 10,
            Rule::Cipher => 12,
            Rule::Registry => 13,
            Rule::Platform => 14,
            Rule::Readme => 16,
            Rule::Transfer => 17,
            Rule::Grafana => 18,
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Rule::Validation => "Validation Error",
            Rule::User => "User Validation Error",
            Rule::Permission => "Permission Validation Error",
            Rule::GitRepo => "Git Repo Validation Error",
            Rule::Repo => "Repo Validation Error",
            Rule::Unit => "Unit Validation Error",
            Rule::UnitNode => "UnitNode Validation Error",
            Rule::Json => "JSON Decode Error",
            Rule::Mqtt => "MQTT Error",
            Rule::Cipher => "Cipher Error",
            Rule::Registry => "Repository Registry Validation Error",
            Rule::Platform => "Git Platform Client Error",
            Rule::Readme => "Readme Generation Error",
            Rule::Transfer => "Transfer Error",
            Rule::DataPipe => "DataPipe Validation Error",
            Rule::Grafana => "Grafana Error",
        }
    }
}

#[derive(Debug)]
pub enum AppError {
    /// The object does not exist, or the agent may not learn that it does (404).
    NotFound,
    /// The agent may not do this (403), or a refused instance-to-instance request (401 for a
    /// bad or missing signature, 403 for a denied domain).
    NoAccess { status: StatusCode, message: String },
    /// A product rule refused the input (422).
    Invalid { rule: Rule, message: String },
    /// A unique constraint refused the write: a check-then-insert race was lost. Callers that
    /// know which name collided answer their own "is not unique" ([`AppError::on_conflict`]).
    Conflict,
    /// A row is still referenced by others (a foreign key refused the delete).
    InUse,
    /// The instance's owner turned the feature off (405).
    FeatureDisabled,
    /// The Telegram Bot API could not be reached or refused (503).
    Telegram(String),
    /// A request that could not be parsed: 422 with a FastAPI-like list of field errors.
    Request {
        location: String,
        name: Option<String>,
        message: String,
    },
    /// A 422 whose body is exactly `{"detail": "<message>"}`, as upstream's pagination checks
    /// answer (`offset must be >= 0`, `limit must be <= 500`).
    Bare(String),
    /// An unexpected failure with its cause: logged and tracked, answered as a bare 500.
    Internal(String),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    fn invalid(rule: Rule, message: impl Into<String>) -> Self {
        AppError::Invalid {
            rule,
            message: message.into(),
        }
    }

    pub fn no_access(message: impl Into<String>) -> Self {
        AppError::NoAccess {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
    /// A refused instance-to-instance request (bad or missing signature: 401; denied domain:
    /// 403), with the federation layer's reason.
    pub fn peer(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error())
            .unwrap_or(StatusCode::UNAUTHORIZED);
        AppError::NoAccess {
            status,
            message: message.into(),
        }
    }
    pub fn not_found() -> Self {
        AppError::NotFound
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Validation, message)
    }
    pub fn user(message: impl Into<String>) -> Self {
        Self::invalid(Rule::User, message)
    }
    pub fn permission(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Permission, message)
    }
    pub fn git_repo(message: impl Into<String>) -> Self {
        Self::invalid(Rule::GitRepo, message)
    }
    pub fn repo(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Repo, message)
    }
    pub fn unit(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Unit, message)
    }
    pub fn unit_node(message: impl Into<String>) -> Self {
        Self::invalid(Rule::UnitNode, message)
    }
    pub fn data_pipe(message: impl Into<String>) -> Self {
        Self::invalid(Rule::DataPipe, message)
    }
    pub fn grafana(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Grafana, message)
    }
    pub fn json(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Json, message)
    }
    pub fn mqtt(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Mqtt, message)
    }
    pub fn cipher(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Cipher, message)
    }
    pub fn registry(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Registry, message)
    }
    pub fn platform(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Platform, message)
    }
    pub fn readme(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Readme, message)
    }
    pub fn transfer(message: impl Into<String>) -> Self {
        Self::invalid(Rule::Transfer, message)
    }
    pub fn telegram(message: impl Into<String>) -> Self {
        AppError::Telegram(message.into())
    }
    pub fn feature_disabled() -> Self {
        AppError::FeatureDisabled
    }
    pub fn request(location: &str, name: Option<&str>, message: impl Into<String>) -> Self {
        AppError::Request {
            location: location.to_string(),
            name: name.map(str::to_string),
            message: message.into(),
        }
    }
    pub fn bare(message: impl Into<String>) -> Self {
        AppError::Bare(message.into())
    }

    /// An unexpected failure: logged here, answered without details. The cause travels with
    /// the 500 response as an [`InternalError`] extension, which the HTTP layer records in the
    /// instance's error tracker (hence `tracked`: the log feed skips this event).
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let cause = err.to_string();
        tracing::error!(error = %cause, tracked = true, "internal error");
        AppError::Internal(cause)
    }

    /// This error, or `replacement` when it is a lost unique-constraint race.
    pub fn on_conflict(self, replacement: impl FnOnce() -> AppError) -> AppError {
        match self {
            AppError::Conflict => replacement(),
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::NoAccess { status, .. } => *status,
            AppError::FeatureDisabled => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Telegram(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Invalid { .. }
            | AppError::Conflict
            | AppError::InUse
            | AppError::Request { .. }
            | AppError::Bare(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn code_and_prefix(&self) -> (u16, &'static str) {
        match self {
            AppError::NoAccess { .. } => (1, "No Access"),
            AppError::NotFound | AppError::Conflict | AppError::InUse => {
                (Rule::Validation.code(), Rule::Validation.prefix())
            }
            AppError::Invalid { rule, .. } => (rule.code(), rule.prefix()),
            AppError::FeatureDisabled => (15, "Feature Flag Error"),
            AppError::Telegram(_) => (18, "Telegram Error"),
            AppError::Request { .. } | AppError::Bare(_) => (0, "Request Error"),
            AppError::Internal(_) => (0, "Internal Error"),
        }
    }

    /// The human part of the detail (what a user is shown, e.g. by the Telegram bot); an
    /// internal error's cause is never part of it.
    pub fn message(&self) -> &str {
        match self {
            AppError::NotFound => "The object does not exist",
            AppError::Conflict => "The object already exists",
            AppError::InUse => "The array was expected to be empty, but it turned out to be full",
            AppError::FeatureDisabled => "This feature has been disabled by the instance Owner",
            AppError::Internal(_) => "Internal Server Error",
            AppError::NoAccess { message, .. }
            | AppError::Invalid { message, .. }
            | AppError::Telegram(message)
            | AppError::Request { message, .. }
            | AppError::Bare(message) => message,
        }
    }

    /// The `detail` string of the wire format.
    pub fn detail(&self) -> String {
        let (code, prefix) = self.code_and_prefix();
        format!(
            "{}: {}: {}: {}",
            self.status().as_u16(),
            code,
            prefix,
            self.message()
        )
    }
}

/// The cause of a 500, kept on the response for the error tracker; never sent to the client.
#[derive(Clone, Debug)]
pub struct InternalError(pub String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match self {
            AppError::Internal(cause) => {
                let mut response = (status, "Internal Server Error").into_response();
                response.extensions_mut().insert(InternalError(cause));
                return response;
            }
            AppError::Request {
                location,
                name,
                message,
            } => {
                let mut loc = vec![location];
                loc.extend(name);
                json!([{ "type": "value_error", "loc": loc, "msg": message }])
            }
            AppError::Bare(message) => json!(message),
            other => json!(other.detail()),
        };
        (status, Json(json!({ "detail": body }))).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => AppError::NotFound,
            StoreError::AlreadyExists => AppError::Conflict,
            StoreError::StillReferenced => AppError::InUse,
            other => AppError::internal(other),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_of_each_kind() {
        let cases = [
            (
                AppError::not_found(),
                "404: 2: Validation Error: The object does not exist",
            ),
            (AppError::no_access("nope"), "403: 1: No Access: nope"),
            (
                AppError::peer(401, "unsigned"),
                "401: 1: No Access: unsigned",
            ),
            (AppError::peer(200, "odd"), "401: 1: No Access: odd"),
            (
                AppError::unit("Name is not unique"),
                "422: 7: Unit Validation Error: Name is not unique",
            ),
            (
                AppError::Conflict,
                "422: 2: Validation Error: The object already exists",
            ),
            (
                AppError::feature_disabled(),
                "405: 15: Feature Flag Error: This feature has been disabled by the instance Owner",
            ),
            (AppError::telegram("down"), "503: 18: Telegram Error: down"),
            (
                AppError::transfer("bad archive"),
                "422: 17: Transfer Error: bad archive",
            ),
        ];
        for (err, detail) in cases {
            assert_eq!(err.detail(), detail);
        }
    }

    #[test]
    fn conflicts_are_replaced_and_others_kept() {
        let e = AppError::Conflict.on_conflict(|| AppError::user("Login is not unique"));
        assert_eq!(
            e.detail(),
            "422: 3: User Validation Error: Login is not unique"
        );
        let e = AppError::NotFound.on_conflict(|| AppError::user("x"));
        assert!(matches!(e, AppError::NotFound));
    }
}
