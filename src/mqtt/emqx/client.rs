//! The REST client for EMQX's API v5: [`EmqxSettings`] (what the worker is told), [`EmqxError`],
//! and [`EmqxAdmin`] with its one request path (HTTP Basic `key:secret`, no redirects, bounded
//! answers; 401/403 become [`EmqxError::Credentials`]), plus the JSON helpers the appliers
//! share (`differing`, `merge`) and the error decoding (`{"code", "message"}`).
//!
//! API keys: HTTP Basic `key:secret`; 401 `BAD_API_KEY_OR_SECRET`, 403 `UNAUTHORIZED_ROLE`
//! for a key without the rights (`emqx_dashboard`'s minirest authorization).

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::rules::{EmqxAlerts, EmqxBridge};
use super::worker::{Backoff, EmqxHealth};

/// Longest one REST call may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the connection to the API may take to establish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (the global zone is the largest, a few KiB).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// The largest packet MQTT can express (remaining length of four bytes).
pub const MAX_MQTT_PACKET_SIZE: u64 = 268_435_455;

/// What the worker needs to know. The lead's config builds it from:
/// - `PU_EMQX_API_URL` → `api_url`, the REST API v5 base, e.g. `http://emqx:18083/api/v5`;
/// - `PU_EMQX_API_KEY`, `PU_EMQX_API_SECRET` → `api_key`, `api_secret` (an EMQX API key with
///   the administrator role);
/// - our REST base as EMQX reaches it → `auth_url` and `authn_url` (see [`EmqxSettings::new`]);
/// - `PU_MQTT_MAX_CONNECTIONS` → `max_connections` (`None`: EMQX's setting is left alone);
/// - `PU_MQTT_MAX_PACKET_SIZE` → `max_packet_size` in bytes (`None`: left alone);
/// - `PU_THROTTLE_CLIENT_RATE` → `messages_rate`, the listener's per-client limit on
///   published messages per second (`Some(0)`: `infinity`; `None`: left alone). EMQX has no
///   per-topic limiter: the per-topic rules (SPEC §8) stay with the MQTT core's shards.
#[derive(Clone)]
pub struct EmqxSettings {
    pub api_url: String,
    pub api_key: String,
    pub api_secret: String,
    /// Full URL of our `POST /units/auth` (topic authorization).
    pub auth_url: String,
    /// Full URL of our `POST /units/mqtt_authn` (CONNECT authentication).
    pub authn_url: String,
    pub max_connections: Option<u64>,
    pub max_packet_size: Option<u64>,
    pub messages_rate: Option<u32>,
    /// The alert forwarding rule (SPEC §4), when alerts are on; None removes ours.
    pub alerts: Option<EmqxAlerts>,
    /// Set after each apply: whether EMQX now carries our alert rule. Until it does (an EMQX
    /// before 5.4, or a failed apply) the MQTT core's shards feed the alerts instead.
    pub alerts_rule: Arc<AtomicBool>,
}

impl EmqxSettings {
    /// Settings whose auth URLs lie under `backend_api`, our REST base as EMQX reaches it
    /// (`{PU_HTTP_TYPE}://{PU_DOMAIN}{PU_APP_PREFIX}{PU_API_ACTUAL_PREFIX}` unless EMQX
    /// reaches the backend by an internal name, e.g. `http://backend:5291/pepeunit/api/v1`).
    pub fn new(api_url: &str, api_key: &str, api_secret: &str, backend_api: &str) -> Self {
        let backend_api = backend_api.trim_end_matches('/');
        EmqxSettings {
            api_url: api_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            auth_url: format!("{backend_api}/units/auth"),
            authn_url: format!("{backend_api}/units/mqtt_authn"),
            max_connections: None,
            max_packet_size: None,
            messages_rate: None,
            alerts: None,
            alerts_rule: Arc::default(),
        }
    }
}

impl fmt::Debug for EmqxSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmqxSettings")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<hidden>")
            .field("auth_url", &self.auth_url)
            .field("authn_url", &self.authn_url)
            .field("max_connections", &self.max_connections)
            .field("max_packet_size", &self.max_packet_size)
            .field("messages_rate", &self.messages_rate)
            .field("alerts", &self.alerts.as_ref().map(|a| &a.topic))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmqxError {
    #[error("invalid EMQX settings: {0}")]
    Settings(String),
    #[error("EMQX API at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "EMQX API refused the API key (HTTP {status} {code}: {message}); check PU_EMQX_API_KEY, \
         PU_EMQX_API_SECRET and that the key has the administrator role"
    )]
    Credentials {
        status: u16,
        code: String,
        message: String,
    },
    #[error("EMQX API {method} {path} answered HTTP {status} {code}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("EMQX API {method} {path} answered something unexpected: {reason}")]
    Invalid {
        method: String,
        path: String,
        reason: String,
    },
}

/// Talks to EMQX's REST API; cheap to clone.
#[derive(Clone)]
pub struct EmqxAdmin {
    pub(super) settings: Arc<EmqxSettings>,
    http: reqwest::Client,
    pub(super) backoff: Backoff,
    pub(super) health: Arc<watch::Sender<EmqxHealth>>,
    /// The bridges EMQX must carry (set by `crate::mqtt::bridge`; applied with the rest).
    pub(super) bridges: Arc<std::sync::Mutex<Option<Vec<EmqxBridge>>>>,
}

impl EmqxAdmin {
    pub fn new(settings: EmqxSettings) -> Result<EmqxAdmin, EmqxError> {
        let http_url = |name: &str, url: &str| {
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(())
            } else {
                Err(EmqxError::Settings(format!(
                    "{name} {url:?} is not an http(s) URL"
                )))
            }
        };
        http_url("the EMQX API URL", &settings.api_url)?;
        http_url("the authorization URL", &settings.auth_url)?;
        http_url("the authentication URL", &settings.authn_url)?;
        if settings.api_key.is_empty() || settings.api_secret.is_empty() {
            return Err(EmqxError::Settings(
                "PU_EMQX_API_KEY and PU_EMQX_API_SECRET must both be set".into(),
            ));
        }
        if settings.max_connections == Some(0) {
            return Err(EmqxError::Settings(
                "max_connections must be greater than 0".into(),
            ));
        }
        if let Some(size) = settings.max_packet_size {
            if size == 0 || size > MAX_MQTT_PACKET_SIZE {
                return Err(EmqxError::Settings(format!(
                    "max_packet_size must be between 1 and {MAX_MQTT_PACKET_SIZE} bytes"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // credentials travel in every request: never follow a redirect elsewhere
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EmqxError::Settings(format!("HTTP client: {e}")))?;
        let mut settings = settings;
        settings.api_url = settings.api_url.trim_end_matches('/').to_string();
        Ok(EmqxAdmin {
            settings: Arc::new(settings),
            http,
            backoff: Backoff::default(),
            health: Arc::new(watch::Sender::new(EmqxHealth::default())),
            bridges: Arc::default(),
        })
    }

    /// Other retry delays than 1 s doubling to 60 s (tests use milliseconds).
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> EmqxAdmin {
        self.backoff = Backoff {
            first,
            max: max.max(first),
        };
        self
    }

    pub fn settings(&self) -> &EmqxSettings {
        &self.settings
    }

    /// The worker's health; `borrow()` for a snapshot, `wait_for` to await a state.
    pub fn health(&self) -> watch::Receiver<EmqxHealth> {
        self.health.subscribe()
    }

    /// A GET answering a JSON list.
    pub(super) async fn list(&self, method: Method, path: &str) -> Result<Vec<Value>, EmqxError> {
        let answer = self.expect(method.clone(), path, None).await?;
        answer
            .as_array()
            .cloned()
            .ok_or_else(|| invalid(method, path, "not a list"))
    }

    /// One call; answers the status and the JSON body (`null` when empty). Transport failures,
    /// refused credentials and non-JSON answers are errors; other statuses are the caller's.
    pub(super) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), EmqxError> {
        let s = &self.settings;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", s.api_url, path))
            .basic_auth(&s.api_key, Some(&s.api_secret))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        let unreachable = |e: reqwest::Error| EmqxError::Unreachable {
            url: s.api_url.clone(),
            reason: error_chain(&e),
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_RESPONSE_BYTES {
                return Err(invalid(
                    method,
                    path,
                    &format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
        }
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v,
                Err(_) if !status.is_success() => {
                    let text = String::from_utf8_lossy(&bytes);
                    json!({"message": text.chars().take(300).collect::<String>()})
                }
                Err(e) => {
                    return Err(invalid(method, path, &format!("not JSON ({e})")));
                }
            }
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(EmqxError::Credentials {
                status: status.as_u16(),
                code: error_code(&value),
                message: error_message(&value),
            });
        }
        Ok((status, value))
    }

    /// A call that must succeed.
    pub(super) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EmqxError> {
        let (status, value) = self.request(method.clone(), path, body).await?;
        ok_or_api(method, path, status, value)
    }
}

pub(super) fn invalid(method: Method, path: &str, reason: &str) -> EmqxError {
    EmqxError::Invalid {
        method: method.to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn ok_or_api(
    method: Method,
    path: &str,
    status: StatusCode,
    value: Value,
) -> Result<Value, EmqxError> {
    if status.is_success() {
        Ok(value)
    } else {
        Err(EmqxError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            code: error_code(&value),
            message: error_message(&value),
        })
    }
}

/// EMQX errors are `{"code": "...", "message": "..."}`.
pub(super) fn error_code(v: &Value) -> String {
    v["code"].as_str().unwrap_or("-").to_string()
}

fn error_message(v: &Value) -> String {
    match &v["message"] {
        Value::String(s) => s.clone(),
        Value::Null => "(no message)".to_string(),
        other => other.to_string(),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The keys of `ours` whose values `current` does not have.
pub(super) fn differing(current: &Value, ours: &Value) -> Vec<String> {
    let Some(ours) = ours.as_object() else {
        return Vec::new();
    };
    ours.iter()
        .filter(|(k, v)| current.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Overwrites the top-level keys of `ours` in `target`.
pub(super) fn merge(target: &mut Value, ours: &Value) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let (Some(t), Some(o)) = (target.as_object_mut(), ours.as_object()) {
        for (k, v) in o {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_the_secret_is_not_printed() {
        let good = EmqxSettings::new(
            "http://emqx:18083/api/v5/",
            "key",
            "s3cret",
            "http://b/api/v1/",
        );
        assert_eq!(good.auth_url, "http://b/api/v1/units/auth");
        assert_eq!(good.authn_url, "http://b/api/v1/units/mqtt_authn");
        assert!(!format!("{good:?}").contains("s3cret"));
        assert_eq!(
            EmqxAdmin::new(good.clone()).unwrap().settings().api_url,
            "http://emqx:18083/api/v5"
        );
        let mut bad = good.clone();
        bad.api_secret.clear();
        assert!(matches!(EmqxAdmin::new(bad), Err(EmqxError::Settings(_))));
        let mut bad = good.clone();
        bad.api_url = "emqx:18083".into();
        assert!(matches!(EmqxAdmin::new(bad), Err(EmqxError::Settings(_))));
        let mut bad = good;
        bad.max_packet_size = Some(MAX_MQTT_PACKET_SIZE + 1);
        assert!(matches!(EmqxAdmin::new(bad), Err(EmqxError::Settings(_))));
    }
}
