//! The broker-config worker for EMQX 5 (SPEC §2: "broker configuration is applied by exactly
//! one worker"). With `PU_MQTT_MODE=external` and `PU_EMQX_API_URL` set, [`run_worker`] makes
//! EMQX match what Pepeunit needs, through the REST API v5, and keeps it so:
//!
//! 1. authentication: an HTTP authenticator (`password_based:http`) POSTing
//!    `{"username":"${username}","clientid":"${clientid}"}` to our `/units/mqtt_authn`;
//! 2. authorization: an `http` source POSTing
//!    `{"token":"${username}","topic":"${topic}","action":"${action}"}` to our `/units/auth`,
//!    first in the chain; every other source disabled; `no_match = deny`,
//!    `deny_action = ignore`, a short ACL cache;
//! 3. limits: `max_connections` of the `tcp:default` listener, `mqtt.max_packet_size`.
//!
//! Only the fields listed above are compared; everything else an admin tuned in EMQX (pool
//! sizes, TLS, timeouts, other listeners) is kept: updates read the object, change our fields
//! and write the whole object back, as EMQX's dashboard does.
//!
//! Why every other authorization source is disabled: EMQX treats an HTTP source that does not
//! answer, or answers anything but 200/204, as "no decision" and asks the next source
//! (`emqx_authz_http.erl`), and the `file` source EMQX ships with ends in `{allow, all}`
//! (`apps/emqx_auth/etc/acl.conf`). With Pepeunit's source alone and `no_match = deny`, an
//! outage of our endpoint closes the broker instead of opening it. Upstream Pepeunit replaces
//! the chain for the same reason (`app/configs/emqx.py`).
//!
//! Why `deny_action = ignore` rather than `disconnect`: a device whose `schema.json` is stale
//! (a link was just removed) subscribes to a topic it may no longer read; with `disconnect` it
//! would be thrown out, reconnect, resubscribe and loop until it fetched the new schema. With
//! `ignore` that one subscription fails (SUBACK 0x80) and the rest of the device keeps working;
//! a denied publish is dropped.
//!
//! Why the ACL cache lives one minute (EMQX's default) with 64 entries: decisions depend on
//! links and visibility that users change; one minute bounds how long a revoked link stays
//! usable by a connected client, and 64 entries hold a unit's base and node topics.
//!
//! Where each request shape comes from (emqx/emqx on GitHub, EMQX 5.x):
//! - `GET/POST /authentication`, `PUT /authentication/{id}`:
//!   `apps/emqx_auth/src/emqx_authn/emqx_authn_api.erl` (POST answers 200 with the config,
//!   PUT 204, GET lists the raw configs with defaults plus `id` = `password_based:http`);
//!   fields from `apps/emqx_auth_http/src/emqx_authn_http_schema.erl` (`mechanism`, `backend`,
//!   `method` get|post, `url`, `body` map, `headers`, `request_timeout`); the answer our
//!   endpoint gives (`{"result":"allow"|"deny"}`) from docs.emqx.com
//!   `/en/emqx/latest/access-control/authn/http.html`.
//! - `GET/POST /authorization/sources`, `PUT /authorization/sources/{type}`,
//!   `POST /authorization/sources/{type}/move` with `{"position":"front"}`:
//!   `apps/emqx_auth/src/emqx_authz/emqx_authz_api_sources.erl` (GET answers
//!   `{"sources":[...]}` in chain order, POST prepends and answers 204, PUT needs the body's
//!   `type` to match the path); fields from `apps/emqx_auth_http/src/emqx_authz_http_schema.erl`
//!   and `emqx_authz_schema.erl` (`type`, `enable`).
//! - `GET/PUT /authorization/settings`: `apps/emqx_auth/src/emqx_authz/emqx_authz_api_settings.erl`
//!   (PUT needs `no_match`, `deny_action` and `cache`, answers 200) and `emqx_schema.erl`
//!   `authz_fields/0`, `fields("authz_cache")` (`enable`, `max_size`, `ttl`, `excludes`).
//! - `GET/PUT /listeners/{id}`: `apps/emqx_management/src/emqx_mgmt_api_listeners.erl` (PUT
//!   needs `type` and `id`, merges into the stored listener, answers 200 with it;
//!   `max_connections` is `"infinity"` or an integer).
//! - `GET/PUT /configs/global_zone`: `apps/emqx_management/src/emqx_mgmt_api_configs.erl`.
//!   There is no `/configs/mqtt`: `mqtt` is a root of the global zone; PUT updates each root
//!   whose value differs and answers 200. `max_packet_size` is a byte size (`"1MB"`).
//! - API keys: HTTP Basic `key:secret`; 401 `BAD_API_KEY_OR_SECRET`, 403 `UNAUTHORIZED_ROLE`
//!   for a key without the rights (`emqx_dashboard`'s minirest authorization).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

/// Longest one REST call may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the connection to the API may take to establish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (the global zone is the largest, a few KiB).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The id EMQX gives the HTTP password authenticator.
pub const AUTHN_ID: &str = "password_based:http";
/// The listener whose `max_connections` is managed.
pub const LISTENER_ID: &str = "tcp:default";
/// ACL cache of EMQX: how long a decision is reused, and how many per client.
pub const AUTHZ_CACHE_TTL: &str = "1m";
pub const AUTHZ_CACHE_MAX_SIZE: u64 = 64;
/// How long EMQX waits for our auth endpoints (its defaults: 5 s authn, 30 s authz; a stuck
/// backend must not hold every publish for 30 s).
const AUTH_REQUEST_TIMEOUT: &str = "5s";
/// The largest packet MQTT can express (remaining length of four bytes).
pub const MAX_MQTT_PACKET_SIZE: u64 = 268_435_455;

/// What the worker needs to know. The lead's config builds it from:
/// - `PU_EMQX_API_URL` → `api_url`, the REST API v5 base, e.g. `http://emqx:18083/api/v5`;
/// - `PU_EMQX_API_KEY`, `PU_EMQX_API_SECRET` → `api_key`, `api_secret` (an EMQX API key with
///   the administrator role);
/// - our REST base as EMQX reaches it → `auth_url` and `authn_url` (see [`EmqxSettings::new`]);
/// - `PU_MQTT_MAX_CONNECTIONS` → `max_connections` (`None`: EMQX's setting is left alone);
/// - `PU_MQTT_MAX_PACKET_SIZE` → `max_packet_size` in bytes (`None`: left alone).
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

/// What one [`EmqxAdmin::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// What was created or changed, in order, e.g. `authorization source http: created`.
    pub changed: Vec<String>,
    /// What already matched, e.g. `listener tcp:default max_connections`.
    pub unchanged: Vec<String>,
}

impl ApplyReport {
    /// Nothing had to change.
    pub fn is_unchanged(&self) -> bool {
        self.changed.is_empty()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "nothing".to_string()
            } else {
                items.join("; ")
            }
        };
        write!(
            f,
            "changed: {}; already right: {}",
            list(&self.changed),
            list(&self.unchanged)
        )
    }
}

/// The worker's state, for metrics and health pages.
#[derive(Clone, Debug, Default)]
pub struct EmqxHealth {
    /// When EMQX last matched (after an apply that succeeded).
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure and when it happened; kept after a later success for diagnosis.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failed applies since the last success (0 when healthy).
    pub consecutive_failures: u32,
    pub last_report: Option<ApplyReport>,
}

impl EmqxHealth {
    /// The last apply succeeded.
    pub fn is_healthy(&self) -> bool {
        self.last_success.is_some() && self.consecutive_failures == 0
    }
}

/// Delays between failed applies: `first`, doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Talks to EMQX's REST API; cheap to clone.
#[derive(Clone)]
pub struct EmqxAdmin {
    settings: Arc<EmqxSettings>,
    http: reqwest::Client,
    backoff: Backoff,
    health: Arc<watch::Sender<EmqxHealth>>,
    /// The bridges EMQX must carry (set by `crate::mqtt::bridge`; applied with the rest).
    bridges: Arc<std::sync::Mutex<Option<Vec<EmqxBridge>>>>,
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

    /// Makes EMQX match, changing only what differs. Safe to repeat.
    pub async fn apply(&self) -> Result<ApplyReport, EmqxError> {
        let mut report = ApplyReport::default();
        // topics are closed before devices are let in
        self.apply_authorization_sources(&mut report).await?;
        self.apply_authorization_settings(&mut report).await?;
        self.apply_authentication(&mut report).await?;
        if let Some(max) = self.settings.max_connections {
            self.apply_listener(max, &mut report).await?;
        }
        if let Some(size) = self.settings.max_packet_size {
            self.apply_mqtt(size, &mut report).await?;
        }
        self.apply_alerts(&mut report).await?;
        let bridges = self.bridges.lock().expect("bridges lock").clone();
        // None: the bridge supervisor has not said yet; leave EMQX's bridges alone until then
        if let Some(bridges) = bridges {
            self.apply_bridges(&bridges, &mut report).await?;
        }
        Ok(report)
    }

    /// The bridges EMQX must carry from now on (the next apply makes it so).
    pub fn set_bridges(&self, bridges: Vec<EmqxBridge>) {
        *self.bridges.lock().expect("bridges lock") = Some(bridges);
    }

    /// Creates, updates and removes our connectors, actions and rules (all named
    /// [`BRIDGE_PREFIX`]...). Objects without the prefix are never touched. Order: connectors
    /// before the actions using them before the rules using those; removal the other way.
    async fn apply_bridges(
        &self,
        bridges: &[EmqxBridge],
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        if bridges.is_empty() {
            // nothing to carry: only old objects of ours to remove, and an EMQX before 5.4
            // (no connectors API) cannot hold any
            let (status, _) = self.request(Method::GET, "/connectors", None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(());
            }
        }
        let connectors = self.list(Method::GET, "/connectors").await?;
        let actions = self.list(Method::GET, "/actions").await?;
        let rules_answer = self.expect(Method::GET, "/rules?limit=1000", None).await?;
        let rules = rules_answer
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| invalid(Method::GET, "/rules", "no \"data\" list"))?;
        let find = |list: &[Value], key: &str, name: &str| {
            list.iter()
                .find(|o| o[key] == name && (key == "id" || o["type"] == "mqtt"))
                .cloned()
        };
        for b in bridges {
            let name = b.name();
            // compared: the fields that carry the bridge (EMQX masks the password and fills
            // in defaults, so whole objects would always differ)
            let kinds = [
                (
                    "connector",
                    "/connectors",
                    &connectors,
                    "name",
                    b.connector(),
                    &["enable", "server", "username"][..],
                ),
                (
                    "action",
                    "/actions",
                    &actions,
                    "name",
                    b.action(),
                    &["enable", "connector", "parameters"][..],
                ),
                (
                    "rule",
                    "/rules",
                    &rules,
                    "id",
                    b.rule(),
                    &["enable", "sql", "actions"][..],
                ),
            ];
            for (kind, path, list, key, ours, compared) in kinds {
                let what = format!("bridge {kind} {name}");
                let id = if kind == "rule" {
                    name.clone()
                } else {
                    format!("mqtt:{name}")
                };
                let current = find(list, key, &name);
                let object = Owned {
                    what,
                    path,
                    id: &id,
                    ours,
                    compared,
                };
                self.ensure_object(object, current, |_| true, report)
                    .await?;
            }
        }
        let wanted: Vec<String> = bridges.iter().map(EmqxBridge::name).collect();
        let stale = |list: &[Value], key: &str| -> Vec<String> {
            list.iter()
                .filter_map(|o| o[key].as_str())
                .filter(|n| n.starts_with(BRIDGE_PREFIX) && !wanted.iter().any(|w| w == n))
                .map(str::to_string)
                .collect()
        };
        for (kind, path, names) in [
            ("rule", "/rules", stale(&rules, "id")),
            ("action", "/actions", stale(&actions, "name")),
            ("connector", "/connectors", stale(&connectors, "name")),
        ] {
            for name in names {
                let id = if kind == "rule" {
                    name.clone()
                } else {
                    format!("mqtt:{name}")
                };
                let path = format!("{path}/{id}");
                let (status, body) = self.request(Method::DELETE, &path, None).await?;
                if status != StatusCode::NOT_FOUND {
                    ok_or_api(Method::DELETE, &path, status, body)?;
                }
                report
                    .changed
                    .push(format!("bridge {kind} {name}: removed"));
            }
        }
        Ok(())
    }

    /// The alert rule: an `http` connector to our REST base, an `http` action POSTing each
    /// matching message to `/units/alerts/emqx` with the webhook secret, and a rule selecting
    /// the devices' log topics. Without alerts, removes ours (an EMQX before 5.4 has no
    /// connectors API and so none of ours).
    async fn apply_alerts(&self, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let installed = &self.settings.alerts_rule;
        let (status, _) = self.request(Method::GET, "/connectors", None).await?;
        if status == StatusCode::NOT_FOUND {
            installed.store(false, Ordering::Relaxed);
            if self.settings.alerts.is_some() {
                report.changed.push(
                    "alerts rule: skipped (EMQX before 5.4 has no connectors API; the MQTT core feeds alerts)"
                        .into(),
                );
            }
            return Ok(());
        }
        let connectors = self.list(Method::GET, "/connectors").await?;
        let actions = self.list(Method::GET, "/actions").await?;
        let rules_answer = self.expect(Method::GET, "/rules?limit=1000", None).await?;
        let rules = rules_answer
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| invalid(Method::GET, "/rules", "no \"data\" list"))?;
        let find = |list: &[Value], key: &str| {
            list.iter()
                .find(|o| o[key] == ALERTS_NAME && (key == "id" || o["type"] == "http"))
                .cloned()
        };
        let Some(alerts) = &self.settings.alerts else {
            installed.store(false, Ordering::Relaxed);
            for (kind, path, present) in [
                ("rule", format!("/rules/{ALERTS_NAME}"), find(&rules, "id")),
                (
                    "action",
                    format!("/actions/http:{ALERTS_NAME}"),
                    find(&actions, "name"),
                ),
                (
                    "connector",
                    format!("/connectors/http:{ALERTS_NAME}"),
                    find(&connectors, "name"),
                ),
            ] {
                if present.is_some() {
                    let (status, body) = self.request(Method::DELETE, &path, None).await?;
                    if status != StatusCode::NOT_FOUND {
                        ok_or_api(Method::DELETE, &path, status, body)?;
                    }
                    report.changed.push(format!("alerts {kind}: removed"));
                }
            }
            return Ok(());
        };
        let kinds = [
            (
                "connector",
                "/connectors",
                &connectors,
                "name",
                alerts.connector(),
                &["enable", "url"][..],
            ),
            (
                "action",
                "/actions",
                &actions,
                "name",
                alerts.action(),
                &["enable", "connector", "description", "parameters"][..],
            ),
            (
                "rule",
                "/rules",
                &rules,
                "id",
                alerts.rule(),
                &["enable", "sql", "actions"][..],
            ),
        ];
        for (kind, path, list, key, ours, compared) in kinds {
            let what = format!("alerts {kind}");
            let id = if kind == "rule" {
                ALERTS_NAME.to_string()
            } else {
                format!("http:{ALERTS_NAME}")
            };
            let object = Owned {
                what,
                path,
                id: &id,
                ours,
                compared,
            };
            // EMQX masks header values it returns: the action's parameters count as different
            // only when what it shows (path, method) differs
            let shown = |field: &str| {
                !field.starts_with("parameters")
                    || alerts.shown_differs(&find(list, key).unwrap_or_default())
            };
            if let Err(e) = self
                .ensure_object(object, find(list, key), shown, report)
                .await
            {
                installed.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        installed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates `object` when `current` is None, else PUTs it when a compared field differs
    /// (`counts` can discount differences EMQX's masking makes up).
    async fn ensure_object(
        &self,
        object: Owned<'_>,
        current: Option<Value>,
        counts: impl Fn(&str) -> bool,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let Owned {
            what,
            path,
            id,
            ours,
            compared,
        } = object;
        let Some(current) = current else {
            self.expect(Method::POST, path, Some(&ours)).await?;
            report.changed.push(format!("{what}: created"));
            return Ok(());
        };
        let owned: Map<String, Value> = compared
            .iter()
            .map(|k| (k.to_string(), ours[*k].clone()))
            .collect();
        let mut differs = differing(&current, &Value::Object(owned));
        differs.retain(|d| counts(d));
        if differs.is_empty() {
            report.unchanged.push(what);
            return Ok(());
        }
        // PUT takes the object without its identity fields
        let mut update = ours;
        if let Some(o) = update.as_object_mut() {
            o.remove("type");
            o.remove("name");
            o.remove("id");
        }
        self.expect(Method::PUT, &format!("{path}/{id}"), Some(&update))
            .await?;
        report
            .changed
            .push(format!("{what}: updated {}", differs.join(", ")));
        Ok(())
    }

    /// A GET answering a JSON list.
    async fn list(&self, method: Method, path: &str) -> Result<Vec<Value>, EmqxError> {
        let answer = self.expect(method.clone(), path, None).await?;
        answer
            .as_array()
            .cloned()
            .ok_or_else(|| invalid(method, path, "not a list"))
    }

    async fn apply_authentication(&self, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let what = format!("authentication {AUTHN_ID}");
        let ours = json!({
            "mechanism": "password_based",
            "backend": "http",
            "enable": true,
            "method": "post",
            "url": self.settings.authn_url,
            "body": {"username": "${username}", "clientid": "${clientid}"},
        });
        let list = self.expect(Method::GET, "/authentication", None).await?;
        let list = list.as_array().ok_or_else(|| {
            invalid(
                Method::GET,
                "/authentication",
                "not a list of authenticators",
            )
        })?;
        let current = list.iter().find(|a| {
            a["id"] == AUTHN_ID || (a["mechanism"] == "password_based" && a["backend"] == "http")
        });
        match current {
            None => {
                let mut create = ours.clone();
                merge(
                    &mut create,
                    &json!({
                        "headers": {"content-type": "application/json"},
                        "request_timeout": AUTH_REQUEST_TIMEOUT,
                    }),
                );
                self.expect(Method::POST, "/authentication", Some(&create))
                    .await?;
                report.changed.push(format!("{what}: created"));
            }
            Some(current) => {
                let differs = differing(current, &ours);
                if differs.is_empty() {
                    report.unchanged.push(what);
                } else {
                    let mut update = current.clone();
                    if let Some(o) = update.as_object_mut() {
                        o.remove("id");
                    }
                    merge(&mut update, &ours);
                    let path = format!("/authentication/{AUTHN_ID}");
                    self.expect(Method::PUT, &path, Some(&update)).await?;
                    report
                        .changed
                        .push(format!("{what}: updated {}", differs.join(", ")));
                }
            }
        }
        Ok(())
    }

    async fn apply_authorization_sources(&self, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let what = "authorization source http";
        let ours = json!({
            "type": "http",
            "enable": true,
            "method": "post",
            "url": self.settings.auth_url,
            "body": {"token": "${username}", "topic": "${topic}", "action": "${action}"},
        });
        let mut sources = self.sources().await?;
        match sources.iter().find(|s| s["type"] == "http") {
            None => {
                let mut create = ours.clone();
                merge(
                    &mut create,
                    &json!({
                        "headers": {"content-type": "application/json"},
                        "request_timeout": AUTH_REQUEST_TIMEOUT,
                    }),
                );
                self.expect(Method::POST, "/authorization/sources", Some(&create))
                    .await?;
                report.changed.push(format!("{what}: created"));
                sources = self.sources().await?;
            }
            Some(current) => {
                let differs = differing(current, &ours);
                if differs.is_empty() {
                    report.unchanged.push(what.to_string());
                } else {
                    let mut update = current.clone();
                    merge(&mut update, &ours);
                    self.expect(Method::PUT, "/authorization/sources/http", Some(&update))
                        .await?;
                    report
                        .changed
                        .push(format!("{what}: updated {}", differs.join(", ")));
                }
            }
        }

        if sources.first().is_some_and(|s| s["type"] == "http") {
            report.unchanged.push(format!("{what} first"));
        } else {
            self.expect(
                Method::POST,
                "/authorization/sources/http/move",
                Some(&json!({"position": "front"})),
            )
            .await?;
            report.changed.push(format!("{what}: moved to the front"));
        }

        for source in &sources {
            let Some(kind) = source["type"].as_str() else {
                continue;
            };
            if kind == "http" || source["enable"] == false {
                continue;
            }
            if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    Method::GET,
                    "/authorization/sources",
                    &format!("source type {kind:?}"),
                ));
            }
            let mut disabled = source.clone();
            disabled["enable"] = json!(false);
            let path = format!("/authorization/sources/{kind}");
            self.expect(Method::PUT, &path, Some(&disabled)).await?;
            tracing::warn!(
                source = kind,
                "disabled EMQX authorization source {kind}: EMQX would ask it whenever Pepeunit's \
                 authorization endpoint fails"
            );
            report
                .changed
                .push(format!("authorization source {kind}: disabled"));
        }
        Ok(())
    }

    async fn sources(&self) -> Result<Vec<Value>, EmqxError> {
        let path = "/authorization/sources";
        let answer = self.expect(Method::GET, path, None).await?;
        match answer.get("sources").and_then(Value::as_array) {
            Some(list) => Ok(list.clone()),
            None => Err(invalid(Method::GET, path, "no \"sources\" list")),
        }
    }

    async fn apply_authorization_settings(
        &self,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let what = "authorization settings";
        let path = "/authorization/settings";
        let current = self.expect(Method::GET, path, None).await?;
        let cache = &current["cache"];
        let mut differs = Vec::new();
        if current["no_match"] != "deny" {
            differs.push("no_match");
        }
        if current["deny_action"] != "ignore" {
            differs.push("deny_action");
        }
        if cache["enable"] != true {
            differs.push("cache.enable");
        }
        if cache["max_size"].as_u64() != Some(AUTHZ_CACHE_MAX_SIZE) {
            differs.push("cache.max_size");
        }
        if duration_ms(&cache["ttl"]) != duration_ms(&json!(AUTHZ_CACHE_TTL)) {
            differs.push("cache.ttl");
        }
        if differs.is_empty() {
            report.unchanged.push(what.to_string());
            return Ok(());
        }
        let mut cache = match cache {
            Value::Object(_) => cache.clone(),
            _ => json!({}),
        };
        merge(
            &mut cache,
            &json!({"enable": true, "max_size": AUTHZ_CACHE_MAX_SIZE, "ttl": AUTHZ_CACHE_TTL}),
        );
        let update = json!({"no_match": "deny", "deny_action": "ignore", "cache": cache});
        self.expect(Method::PUT, path, Some(&update)).await?;
        report
            .changed
            .push(format!("{what}: updated {}", differs.join(", ")));
        Ok(())
    }

    async fn apply_listener(&self, max: u64, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let what = format!("listener {LISTENER_ID} max_connections");
        let path = format!("/listeners/{LISTENER_ID}");
        let (status, current) = self.request(Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(EmqxError::Api {
                method: "GET".into(),
                path,
                status: 404,
                code: error_code(&current),
                message: format!(
                    "EMQX has no {LISTENER_ID} listener to apply PU_MQTT_MAX_CONNECTIONS to"
                ),
            });
        }
        let current = ok_or_api(Method::GET, &path, status, current)?;
        if count(&current["max_connections"]) == Some(max) {
            report.unchanged.push(what);
            return Ok(());
        }
        let mut update = current.clone();
        if let Some(o) = update.as_object_mut() {
            // read-only fields of the GET answer
            o.remove("running");
            o.remove("current_connections");
        }
        merge(
            &mut update,
            &json!({"id": LISTENER_ID, "type": "tcp", "max_connections": max}),
        );
        self.expect(Method::PUT, &path, Some(&update)).await?;
        report.changed.push(format!("{what}: set to {max}"));
        Ok(())
    }

    async fn apply_mqtt(&self, size: u64, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let what = "mqtt max_packet_size";
        let path = "/configs/global_zone";
        let current = self.expect(Method::GET, path, None).await?;
        if !current["mqtt"].is_object() {
            return Err(invalid(Method::GET, path, "no \"mqtt\" object"));
        }
        if bytes(&current["mqtt"]["max_packet_size"]) == Some(size) {
            report.unchanged.push(what.to_string());
            return Ok(());
        }
        let mut update = current.clone();
        update["mqtt"]["max_packet_size"] = byte_size(size);
        self.expect(Method::PUT, path, Some(&update)).await?;
        report.changed.push(format!("{what}: set to {size} bytes"));
        Ok(())
    }

    /// One call; answers the status and the JSON body (`null` when empty). Transport failures,
    /// refused credentials and non-JSON answers are errors; other statuses are the caller's.
    async fn request(
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
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EmqxError> {
        let (status, value) = self.request(method.clone(), path, body).await?;
        ok_or_api(method, path, status, value)
    }

    async fn apply_and_record(&self) -> Result<ApplyReport, EmqxError> {
        let result = self.apply().await;
        let now = Utc::now();
        self.health.send_modify(|h| match &result {
            Ok(report) => {
                h.last_success = Some(now);
                h.consecutive_failures = 0;
                h.last_report = Some(report.clone());
            }
            Err(e) => {
                h.last_error = Some(e.to_string());
                h.last_error_at = Some(now);
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            }
        });
        result
    }
}

/// The one task that applies broker configuration: at start, again whenever something arrives
/// on `reapply`, and after a failure with backoff (1 s doubling to 60 s by default) until EMQX
/// answers. Exits when `stop` changes (or its sender is gone).
pub async fn run_worker(
    admin: EmqxAdmin,
    mut stop: watch::Receiver<bool>,
    mut reapply: mpsc::Receiver<()>,
) {
    if *stop.borrow_and_update() {
        return;
    }
    let mut reapply_open = true;
    let mut due = true;
    let mut delay = admin.backoff.first;
    loop {
        if due {
            let result = tokio::select! {
                r = admin.apply_and_record() => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(report) => {
                    due = false;
                    delay = admin.backoff.first;
                    if report.is_unchanged() {
                        tracing::info!("EMQX configuration already right");
                    } else {
                        tracing::info!("EMQX configuration applied: {report}");
                    }
                }
                Err(e) => {
                    match &e {
                        EmqxError::Credentials { .. } | EmqxError::Settings(_) => {
                            tracing::error!(retry_in = ?delay, "EMQX configuration not applied: {e}")
                        }
                        _ => {
                            tracing::warn!(retry_in = ?delay, "EMQX configuration not applied: {e}")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                        msg = reapply.recv(), if reapply_open => {
                            reapply_open = msg.is_some();
                        }
                    }
                    delay = (delay * 2).min(admin.backoff.max);
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            msg = reapply.recv(), if reapply_open => match msg {
                Some(()) => {
                    // several requests while one apply runs need one more apply, not several
                    while reapply.try_recv().is_ok() {}
                    due = true;
                }
                None => reapply_open = false,
            },
        }
    }
}

/// One EMQX object this worker owns: its report name, collection path, id and our version
/// with the fields compared.
struct Owned<'a> {
    what: String,
    path: &'a str,
    id: &'a str,
    ours: Value,
    compared: &'a [&'a str],
}

/// Name of the connector, action and rule that forward log messages for alerts.
pub const ALERTS_NAME: &str = "pepeunit_alerts";

/// The alert forwarding EMQX carries (SPEC §4): every message on a device `log` topic of this
/// instance is POSTed to the backend, which keeps the lines at or above the unit's alert
/// level. Shapes from emqx/emqx 5.4+: the `http` connector
/// (`apps/emqx_bridge_http/src/emqx_bridge_http_connector.erl`: `url`, `headers`,
/// `connect_timeout`, `pool_size`, `enable_pipelining`), the `http` action's `parameters`
/// (`emqx_bridge_http_schema.erl`: `path` appended to the connector's URL, `method`, `headers`;
/// no `body`, so EMQX sends the rule's selected fields as one JSON object), and the rule
/// selecting `id`, `topic` and `payload`. Not verified against a running EMQX (none runs
/// here); the unit tests pin the JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct EmqxAlerts {
    /// Our REST base as EMQX reaches it, e.g. `http://backend:5291/pepeunit/api/v1`.
    pub backend_api: String,
    /// Sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// `{domain}/output_base_topic/+/log/pepeunit`.
    pub topic: String,
}

impl EmqxAlerts {
    pub fn connector(&self) -> Value {
        json!({
            "type": "http",
            "name": ALERTS_NAME,
            "enable": true,
            "description": "Pepeunit: device log messages to the backend, for alerts",
            "url": self.backend_api,
            "connect_timeout": "15s",
            "pool_size": 8,
            "enable_pipelining": 100,
            "ssl": {"enable": self.backend_api.starts_with("https://")},
        })
    }

    pub fn action(&self) -> Value {
        json!({
            "type": "http",
            "name": ALERTS_NAME,
            "enable": true,
            "connector": ALERTS_NAME,
            // EMQX masks the authorization header it returns: a fingerprint of the secret in
            // a compared field makes a changed secret (new PU_SECRET_KEY) rewrite the action
            "description": format!(
                "Pepeunit: device log messages to the backend, for alerts (key {})",
                self.secret_fingerprint()
            ),
            "parameters": {
                "path": "/units/alerts/emqx",
                "method": "post",
                "headers": {
                    "content-type": "application/json",
                    "authorization": format!("Bearer {}", self.secret),
                },
            },
        })
    }

    pub fn rule(&self) -> Value {
        json!({
            "id": ALERTS_NAME,
            "name": ALERTS_NAME,
            "enable": true,
            "description": "Pepeunit: device log messages to the backend, for alerts",
            "sql": format!("SELECT id, topic, payload FROM \"{}\"", self.topic),
            "actions": [format!("http:{ALERTS_NAME}")],
        })
    }

    /// The first 8 hex digits of the secret's SHA-256: tells secrets apart, reveals nothing.
    fn secret_fingerprint(&self) -> String {
        use sha2::Digest;
        crate::crypto::hex(&sha2::Sha256::digest(self.secret.as_bytes())[..4])
    }

    /// Whether the action's visible parameters (path, method) differ from ours; header values
    /// come back masked (a changed secret shows in the compared `description` instead).
    fn shown_differs(&self, current: &Value) -> bool {
        let ours = self.action();
        let p = &current["parameters"];
        p["path"] != ours["parameters"]["path"] || p["method"] != ours["parameters"]["method"]
    }
}

/// Names of the EMQX objects this worker owns for bridges: `pepeunit_bridge_<uuid simple>`.
pub const BRIDGE_PREFIX: &str = "pepeunit_bridge_";

/// One bridge as EMQX carries it: an MQTT connector to the peer's broker authenticated with
/// the Bridge credential, an `mqtt` action publishing to the same topic there (QoS 1, not
/// retained, payload unchanged), and a rule feeding the topic's messages to the action.
///
/// Shapes from emqx/emqx (5.4 and later): the connector's fields from
/// `apps/emqx_bridge_mqtt/src/emqx_bridge_mqtt_connector_schema.erl` (`server_configs`:
/// `server` "host:port", `username`, `password`, `proto_ver`, `clean_start`, `keepalive`,
/// `clientid_prefix`; `pool_size`), the action's `parameters` from
/// `emqx_bridge_mqtt_pubsub_schema.erl` (the egress fields minus `pool_size` and `local`:
/// `remote.topic`, `remote.qos`, `remote.retain`, `remote.payload`), both addressed as
/// `mqtt:<name>` (`/connectors/{type}:{name}`, `/actions/{type}:{name}`); the rule from
/// `emqx_rule_engine_schema.erl` `fields("rules")` (`sql`, `actions` as `"<type>:<name>"`,
/// `enable`, `description`) with the `id` the POST accepts in its body. Not verified against a
/// running EMQX (none runs here); the unit tests pin the JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmqxBridge {
    pub uuid: uuid::Uuid,
    pub peer_domain: String,
    pub host: String,
    pub port: u16,
    pub credential: String,
    pub topic: String,
}

impl EmqxBridge {
    /// From an Output-side bridge row and its decrypted credential; None when the row lacks the
    /// peer's broker.
    pub fn new(b: &crate::store::bridges::Bridge, credential: &str) -> Option<EmqxBridge> {
        Some(EmqxBridge {
            uuid: b.uuid,
            peer_domain: b.peer_domain.clone(),
            host: b.mqtt_host.clone()?,
            port: u16::try_from(b.mqtt_port?).ok()?,
            credential: credential.to_string(),
            topic: b.topic.clone(),
        })
    }

    pub fn name(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.uuid.simple())
    }

    /// `POST /connectors`.
    pub fn connector(&self) -> Value {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        json!({
            "type": "mqtt",
            "name": self.name(),
            "enable": true,
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "server": format!("{host}:{}", self.port),
            "username": self.credential,
            "password": "",
            "proto_ver": "v4",
            "clean_start": true,
            "keepalive": "30s",
            "clientid_prefix": "pepeunit-bridge",
            "pool_size": 1,
            "ssl": {"enable": false},
        })
    }

    /// `POST /actions`.
    pub fn action(&self) -> Value {
        json!({
            "type": "mqtt",
            "name": self.name(),
            "enable": true,
            "connector": self.name(),
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "parameters": {
                "remote": {
                    "topic": self.topic,
                    "qos": 1,
                    "retain": false,
                    "payload": "${payload}",
                }
            },
        })
    }

    /// `POST /rules`.
    pub fn rule(&self) -> Value {
        json!({
            "id": self.name(),
            "name": self.name(),
            "enable": true,
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "sql": format!("SELECT * FROM \"{}\"", self.topic),
            "actions": [format!("mqtt:{}", self.name())],
        })
    }
}

fn invalid(method: Method, path: &str, reason: &str) -> EmqxError {
    EmqxError::Invalid {
        method: method.to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn ok_or_api(
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
fn error_code(v: &Value) -> String {
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
fn differing(current: &Value, ours: &Value) -> Vec<String> {
    let Some(ours) = ours.as_object() else {
        return Vec::new();
    };
    ours.iter()
        .filter(|(k, v)| current.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Overwrites the top-level keys of `ours` in `target`.
fn merge(target: &mut Value, ours: &Value) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let (Some(t), Some(o)) = (target.as_object_mut(), ours.as_object()) {
        for (k, v) in o {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// A count as EMQX writes it: an integer, or `"infinity"` (None).
fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A byte size as EMQX writes it: an integer, or digits with `KB`, `MB` or `GB` (binary
/// multiples, any case), as hocon's `bytesize` parses it.
fn bytes(v: &Value) -> Option<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// How a byte size is written to EMQX: `"NMB"` / `"NKB"` when exact, else the bare integer.
fn byte_size(size: u64) -> Value {
    if size.is_multiple_of(1 << 20) {
        json!(format!("{}MB", size >> 20))
    } else if size.is_multiple_of(1 << 10) {
        json!(format!("{}KB", size >> 10))
    } else {
        json!(size)
    }
}

/// A duration as EMQX writes it (`"1m"`, `"60s"`, `"500ms"`, `"1h"`, `"1d"`, or a number of
/// milliseconds), in milliseconds.
fn duration_ms(v: &Value) -> Option<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(host: &str) -> EmqxBridge {
        EmqxBridge {
            uuid: uuid::Uuid::parse_str("6f1c3a52-9d7e-4b8a-a1f0-0c2d3e4f5a6b").unwrap(),
            peer_domain: "b.example".into(),
            host: host.into(),
            port: 1883,
            credential: "eyJ.cred.sig".into(),
            topic: "a.example/0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00/pepeunit".into(),
        }
    }

    /// What `emqx_connector_schema:api_fields("post_connector", mqtt, ...)` and the MQTT
    /// connector's `server_configs` take (see [`EmqxBridge`]).
    #[test]
    fn bridge_connector_json() {
        let b = bridge("mqtt.b.example");
        let name = b.name();
        assert_eq!(name, "pepeunit_bridge_6f1c3a529d7e4b8aa1f00c2d3e4f5a6b");
        // EMQX resource names: ^[0-9a-zA-Z][_a-zA-Z0-9-]*$ (emqx_resource:validate_name)
        assert!(name.chars().next().unwrap().is_ascii_alphanumeric());
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let c = b.connector();
        assert_eq!(c["type"], "mqtt");
        assert_eq!(c["name"], name.as_str());
        assert_eq!(c["enable"], true);
        assert_eq!(c["server"], "mqtt.b.example:1883");
        assert_eq!(c["username"], "eyJ.cred.sig");
        assert_eq!(c["password"], "");
        assert_eq!(c["proto_ver"], "v4");
        assert_eq!(c["clean_start"], true);
        assert_eq!(c["pool_size"], 1);
        assert_eq!(c["ssl"]["enable"], false);
        assert_eq!(duration_ms(&c["keepalive"]), Some(30_000));
        // an IPv6 literal is bracketed so the port stays separate
        assert_eq!(bridge("::1").connector()["server"], "[::1]:1883");
    }

    /// `POST /actions` of type mqtt: `parameters` are the egress fields without `pool_size`
    /// and `local` (`emqx_bridge_mqtt_pubsub_schema:fields(action_parameters)`).
    #[test]
    fn bridge_action_and_rule_json() {
        let b = bridge("mqtt.b.example");
        let a = b.action();
        assert_eq!(a["type"], "mqtt");
        assert_eq!(a["name"], b.name().as_str());
        assert_eq!(a["connector"], b.name().as_str());
        assert_eq!(a["enable"], true);
        assert_eq!(
            a["parameters"],
            json!({"remote": {"topic": b.topic, "qos": 1, "retain": false, "payload": "${payload}"}})
        );
        assert!(a["parameters"].get("local").is_none());
        assert!(a["parameters"].get("pool_size").is_none());
        let r = b.rule();
        assert_eq!(r["id"], b.name().as_str());
        assert_eq!(
            r["sql"],
            "SELECT * FROM \"a.example/0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00/pepeunit\""
        );
        assert_eq!(r["actions"], json!([format!("mqtt:{}", b.name())]));
        assert_eq!(r["enable"], true);
    }

    #[test]
    fn byte_sizes_read_and_write() {
        assert_eq!(bytes(&json!("1MB")), Some(1 << 20));
        assert_eq!(bytes(&json!("256kb")), Some(256 << 10));
        assert_eq!(bytes(&json!(1000)), Some(1000));
        assert_eq!(bytes(&json!("1000")), Some(1000));
        assert_eq!(bytes(&json!("1TB")), None);
        assert_eq!(byte_size(1 << 20), json!("1MB"));
        assert_eq!(byte_size(3 << 10), json!("3KB"));
        assert_eq!(byte_size(1000), json!(1000));
        for n in [
            1,
            1000,
            1024,
            65_536,
            1 << 20,
            5 << 20,
            MAX_MQTT_PACKET_SIZE,
        ] {
            assert_eq!(bytes(&byte_size(n)), Some(n));
        }
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(duration_ms(&json!("1m")), Some(60_000));
        assert_eq!(duration_ms(&json!("60s")), Some(60_000));
        assert_eq!(duration_ms(&json!("60000ms")), Some(60_000));
        assert_eq!(duration_ms(&json!(60000)), Some(60_000));
        assert_eq!(duration_ms(&json!("soon")), None);
        assert_eq!(count(&json!("infinity")), None);
        assert_eq!(count(&json!(1024)), Some(1024));
    }

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
