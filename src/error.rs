//! The one error type of the service and HTTP layers.
//!
//! Every client mistake becomes a 4xx whose body is `{"detail": "<status>: <code>: <Prefix>: <message>"}`
//! (API.md §0); internal failures are logged and answered with a bare 500 that leaks nothing.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: u16,
    pub prefix: &'static str,
    pub message: String,
    /// The `detail` value itself when it is not the domain string: a FastAPI-style list of
    /// field errors (request parsing failures) or a bare message (pagination checks). For an
    /// internal error, the cause as a string: logged and tracked, never answered.
    pub fields: Option<serde_json::Value>,
}

pub type AppResult<T> = Result<T, AppError>;

const ALREADY_EXISTS: &str = "The object already exists";

impl AppError {
    fn new(
        status: StatusCode,
        code: u16,
        prefix: &'static str,
        message: impl Into<String>,
    ) -> Self {
        AppError {
            status,
            code,
            prefix,
            message: message.into(),
            fields: None,
        }
    }

    pub fn no_access(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, 1, "No Access", message)
    }
    /// A refused instance-to-instance request (bad or missing signature: 401; denied domain:
    /// 403), with the federation layer's reason.
    pub fn peer(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error())
            .unwrap_or(StatusCode::UNAUTHORIZED);
        Self::new(status, 1, "No Access", message)
    }
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            2,
            "Validation Error",
            "The object does not exist",
        )
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            2,
            "Validation Error",
            message,
        )
    }
    pub fn user(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            3,
            "User Validation Error",
            message,
        )
    }
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4,
            "Permission Validation Error",
            message,
        )
    }
    pub fn git_repo(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            5,
            "Git Repo Validation Error",
            message,
        )
    }
    pub fn repo(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            6,
            "Repo Validation Error",
            message,
        )
    }
    pub fn unit(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            7,
            "Unit Validation Error",
            message,
        )
    }
    pub fn unit_node(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            8,
            "UnitNode Validation Error",
            message,
        )
    }
    pub fn json(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            9,
            "JSON Decode Error",
            message,
        )
    }
    pub fn mqtt(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 10, "MQTT Error", message)
    }
    pub fn cipher(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            12,
            "Cipher Error",
            message,
        )
    }
    pub fn registry(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            13,
            "Repository Registry Validation Error",
            message,
        )
    }
    pub fn platform(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            14,
            "Git Platform Client Error",
            message,
        )
    }
    pub fn readme(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            16,
            "Readme Generation Error",
            message,
        )
    }
    /// Account export/import and Unit moves (codes 17 and up are ours, not upstream's).
    pub fn transfer(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            17,
            "Transfer Error",
            message,
        )
    }
    /// The Telegram Bot API could not be reached or refused (503).
    pub fn telegram(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            18,
            "Telegram Error",
            message,
        )
    }
    pub fn feature_disabled() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            15,
            "Feature Flag Error",
            "This feature has been disabled by the instance Owner",
        )
    }

    /// A request that could not be parsed: 422 with a FastAPI-like list of field errors.
    pub fn request(location: &str, name: Option<&str>, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut loc = vec![location.to_string()];
        loc.extend(name.map(str::to_string));
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            0,
            "Request Error",
            message.clone(),
        );
        e.fields = Some(json!([{ "type": "value_error", "loc": loc, "msg": message }]));
        e
    }

    /// A 422 whose body is exactly `{"detail": "<message>"}`, as upstream's pagination checks
    /// answer (`offset must be >= 0`, `limit must be <= 500`).
    pub fn bare(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            0,
            "Request Error",
            message.clone(),
        );
        e.fields = Some(json!(message));
        e
    }

    /// An unexpected failure: logged here, answered without details. The cause travels with
    /// the 500 response as an [`InternalError`] extension, which the HTTP layer records in the
    /// instance's error tracker (hence `tracked`: the log feed skips this event).
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let cause = err.to_string();
        tracing::error!(error = %cause, tracked = true, "internal error");
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "Internal Error",
            "Internal Server Error",
        );
        e.fields = Some(serde_json::Value::String(cause));
        e
    }

    /// Whether this answers a unique-constraint violation: a check-then-insert race was lost, and
    /// the caller should answer with its own "is not unique" error.
    pub fn is_already_exists(&self) -> bool {
        self.code == 2 && self.message == ALREADY_EXISTS
    }

    /// This error, or `replacement` when it is a lost unique-constraint race.
    pub fn on_conflict(self, replacement: impl FnOnce() -> AppError) -> AppError {
        if self.is_already_exists() {
            replacement()
        } else {
            self
        }
    }

    /// The `detail` string of the wire format.
    pub fn detail(&self) -> String {
        format!(
            "{}: {}: {}: {}",
            self.status.as_u16(),
            self.code,
            self.prefix,
            self.message
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
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            let mut response = (self.status, "Internal Server Error").into_response();
            let cause = match self.fields {
                Some(serde_json::Value::String(cause)) => cause,
                _ => self.message,
            };
            response.extensions_mut().insert(InternalError(cause));
            return response;
        }
        let body = match self.fields {
            Some(fields) => json!({ "detail": fields }),
            None => json!({ "detail": self.detail() }),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => AppError::not_found(),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                AppError::validation(ALREADY_EXISTS)
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => AppError::validation(
                "The array was expected to be empty, but it turned out to be full",
            ),
            _ => AppError::internal(err),
        }
    }
}
