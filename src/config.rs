//! The one configuration struct, read once at start-up.
//!
//! Sources, later ones winning: built-in defaults, the TOML file named by `PU_CONFIG_FILE`
//! (keys are the variable names, e.g. `PU_DOMAIN = "iot.example.com"`), `PU_*` environment
//! variables. Secrets that are not configured are generated into `{PU_DATA_DIR}/secrets.toml`
//! on first start and reused afterwards, so tokens and encrypted data survive restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use rand::RngCore;

/// Every key this struct understands; anything else starting with `PU_` in the file is an error,
/// so a typo never silently falls back to a default.
const KNOWN_KEYS: &[&str] = &[
    "PU_DATA_DIR",
    "PU_HTTP_BIND",
    "PU_DOMAIN",
    "PU_HTTP_TYPE",
    "PU_APP_PREFIX",
    "PU_API_ACTUAL_PREFIX",
    "PU_DATABASE_URL",
    "PU_DATABASE_MAX_CONNECTIONS",
    "PU_SECRET_KEY",
    "PU_ENCRYPT_KEY",
    "PU_STATIC_SALT",
    "PU_AUTH_TOKEN_EXPIRATION",
    "PU_MQTT_HOST",
    "PU_MQTT_PORT",
    "PU_MQTT_PING_INTERVAL",
    "PU_MQTT_KEEPALIVE",
    "PU_STATE_SEND_INTERVAL",
    "PU_MIN_LOG_LEVEL",
    "PU_MAX_LOG_LENGTH",
    "PU_UNIT_LOG_EXPIRATION",
    "PU_MAX_REPOSITORY_SIZE",
    "PU_GIT_TIMEOUT",
    "PU_REGISTRY_SYNC_INTERVAL",
    "PU_GITHUB_API_URL",
    "PU_CONFIG_FILE",
    "PU_LOG",
    "PU_MQTT_MODE",
    "PU_MQTT_BIND",
    "PU_MQTT_BACKEND_HOST",
    "PU_MQTT_BACKEND_PORT",
    "PU_MQTT_USERNAME",
    "PU_MQTT_PASSWORD",
    "PU_MQTT_CLIENT_ID",
    "PU_MQTT_SHARDS",
    "PU_MQTT_SHARD_QUEUE",
    "PU_MQTT_MAX_PAYLOAD_SIZE",
    "PU_MQTT_MAX_CONNECTIONS",
    "PU_MQTT_MAX_PACKET_SIZE",
    "PU_EMQX_API_URL",
    "PU_EMQX_API_KEY",
    "PU_EMQX_API_SECRET",
    "PU_FIRMWARE_UPDATE_TIMEOUT",
    "PU_EMQX_BACKEND_URL",
    "PU_ALLOW_LOCAL_NETWORK",
    "PU_FEDERATION_ALLOW_LOCAL",
    "PU_FEDERATION_AUTHORIZED_FETCH",
    "PU_FEDERATION_RETRY_BASE",
    "PU_FEDERATION_MAX_ATTEMPTS",
    "PU_INSTANCE_NAME",
    "PU_IMPORT_MAX_BYTES",
    "PU_TELEGRAM_BOT_TOKEN",
    "PU_TELEGRAM_API_URL",
    "PU_TELEGRAM_MODE",
    "PU_TELEGRAM_ALERT_INTERVAL",
    "PU_CLICKHOUSE_URL",
    "PU_CLICKHOUSE_DATABASE",
    "PU_CLICKHOUSE_USER",
    "PU_CLICKHOUSE_PASSWORD",
    "PU_CLICKHOUSE_FLUSH_INTERVAL_MS",
    "PU_CRASH_ALERT_INTERVAL",
    "PU_METRICS_TOKEN",
    "PU_THROTTLE_RULES",
    "PU_THROTTLE_CLIENT_RATE",
    "PU_LOAD_METERING",
    "PU_FF_DATAPIPE_ENABLE",
    "PU_FF_GRAFANA_INTEGRATION_ENABLE",
    "PU_FF_DATAPIPE_DEFAULT_LAST_VALUE_ENABLE",
    "PU_GRAFANA_OIDC_CLIENT_ID",
    "PU_GRAFANA_OIDC_CLIENT_SECRET",
    "PU_GRAFANA_OIDC_REDIRECT_URIS",
    "PU_GRAFANA_OIDC_REQUIRE_PKCE",
    "PU_GRAFANA_OIDC_CODE_TTL",
    "PU_GRAFANA_OIDC_TOKEN_TTL",
];

/// Longest log lifetime accepted, seconds.
const MAX_UNIT_LOG_EXPIRATION: i64 = 100 * 365 * 86_400;

/// Where the MQTT broker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttMode {
    /// The broker runs inside this process (rmqtt), listening on `PU_MQTT_BIND`.
    Embedded,
    /// Any MQTT 3.1.1/5 broker (EMQX in production, mosquitto works for the data path).
    External,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_bind: SocketAddr,
    /// Public `host[:port]` of this instance, the first level of every MQTT topic.
    pub domain: String,
    /// `http` or `https`, as devices should reach the instance.
    pub http_type: String,
    pub app_prefix: String,
    pub api_prefix: String,
    pub database_url: String,
    pub database_max_connections: u32,
    pub secret_key: String,
    /// 32 bytes, used for AES-256-GCM of env, state storage, credentials and password salts.
    pub encrypt_key: [u8; 32],
    pub static_salt: String,
    pub auth_token_expiration: i64,
    /// The broker as devices reach it (env.json): `PU_MQTT_HOST`, else the domain's host;
    /// `PU_MQTT_PORT`, else the embedded broker's listening port (1883 for an external one).
    pub mqtt_host: String,
    /// 0 only until the embedded broker has bound a `PU_MQTT_BIND` with port 0
    /// ([`Config::set_mqtt_listener_port`]).
    pub mqtt_port: u16,
    pub mqtt_ping_interval: i64,
    pub mqtt_keepalive: i64,
    pub state_send_interval: i64,
    pub min_log_level: String,
    pub max_log_length: i64,
    /// How long a unit's `log` message is kept, seconds.
    pub unit_log_expiration_secs: i64,
    pub max_repository_size: u64,
    pub git_timeout_secs: u64,
    pub registry_sync_interval_secs: u64,
    /// Base of the GitHub REST API asked for releases, without a trailing `/`.
    pub github_api_url: String,
    pub mqtt_mode: MqttMode,
    /// Listener of the embedded broker.
    pub mqtt_bind: SocketAddr,
    /// Where the backend's own MQTT connection goes (embedded: the listener; external: the
    /// public `PU_MQTT_HOST`/`PU_MQTT_PORT` unless set).
    pub mqtt_backend_host: String,
    pub mqtt_backend_port: u16,
    /// Credentials of the backend's connection; `None` means the backend token, empty password.
    pub mqtt_username: Option<String>,
    pub mqtt_password: String,
    pub mqtt_client_id: String,
    /// Number of shard tasks of the MQTT core (default: the number of cores).
    pub mqtt_shards: usize,
    /// Capacity of each shard's queue, in messages.
    pub mqtt_shard_queue: usize,
    /// Largest payload the core processes, in bytes (`PU_MQTT_MAX_PAYLOAD_SIZE` is in KiB).
    pub mqtt_max_payload_size: usize,
    pub mqtt_max_connections: Option<u64>,
    pub mqtt_max_packet_size: Option<u64>,
    /// EMQX REST API v5 base (`http://emqx:18083/api/v5`); set only for EMQX deployments.
    pub emqx_api_url: Option<String>,
    pub emqx_api_key: String,
    pub emqx_api_secret: String,
    /// Our REST API base as EMQX reaches it (default: the public origin + prefixes).
    pub emqx_backend_url: Option<String>,
    /// Seconds after which an unanswered `Update` becomes an Error (default 2 x state interval).
    pub firmware_update_timeout: i64,
    /// `PU_ALLOW_LOCAL_NETWORK` (older name, still read: `PU_FEDERATION_ALLOW_LOCAL`): let
    /// connections users and peers aim (git registries, release APIs, bridge brokers, peer
    /// instances) reach loopback, private and link-local addresses, and federate with http,
    /// address literals and explicit ports. For tests and local trials only (see `net`).
    pub allow_local_network: bool,
    /// `PU_FEDERATION_AUTHORIZED_FETCH`: require signed GETs of actors and collections.
    pub federation_authorized_fetch: bool,
    /// `PU_FF_DATAPIPE_ENABLE` (default true): node data pipes (config, processing, data).
    pub ff_datapipe: bool,
    /// `PU_FF_GRAFANA_INTEGRATION_ENABLE`: dashboards (issue 19); off, they answer
    /// FeatureDisabled.
    pub ff_grafana: bool,
    /// Grafana (issue 19, SPEC §9): the HTTP API the dashboard sync talks to
    /// (`PU_GRAFANA_URL`; default the public origin + `/grafana`, as upstream's deploy serves
    /// it behind nginx), with admin Basic auth (`PU_GRAFANA_ADMIN_USER` and
    /// `PU_GRAFANA_ADMIN_PASSWORD`, required when the integration is on).
    pub grafana_url: Option<String>,
    /// Our REST API base as Grafana's Infinity datasource reaches it (`PU_GRAFANA_BACKEND_URL`,
    /// e.g. `http://pepeunit:5291/pepeunit/api/v1`; default the public origin + prefixes).
    pub grafana_backend_url: Option<String>,
    pub grafana_admin_user: String,
    pub grafana_admin_password: String,
    /// `PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL` (1 to 32, default 10): nodes linked to a panel.
    pub grafana_limit_unit_node_per_one_panel: i64,
    /// `PU_FF_DATAPIPE_DEFAULT_LAST_VALUE_ENABLE` (default false): new `/pepeunit` nodes get
    /// upstream's default LastValue pipeline (Permanent, Text, max_rate 5 s, max_size 100).
    pub ff_datapipe_default_last_value: bool,
    /// `PU_FEDERATION_RETRY_BASE` (s): first retry delay of a failed delivery.
    pub federation_retry_base_secs: u64,
    /// `PU_FEDERATION_MAX_ATTEMPTS`: attempts before a delivery is dead-lettered.
    pub federation_max_attempts: i64,
    /// `PU_INSTANCE_NAME`: the instance actor's and NodeInfo's name.
    pub instance_name: String,
    /// `PU_IMPORT_MAX_BYTES`: largest account archive accepted (unpacked bytes; the upload
    /// itself is limited to the same number).
    pub import_max_bytes: u64,
    /// Telegram bot token (`PU_TELEGRAM_BOT_TOKEN`); unset: no bot, no Telegram alerts.
    pub telegram_bot_token: Option<String>,
    /// Bot API base (`PU_TELEGRAM_API_URL`), the public API by default.
    pub telegram_api_url: String,
    /// How updates reach the bot (`PU_TELEGRAM_MODE`).
    pub telegram_mode: TelegramMode,
    /// Least seconds between two alerts of one unit (`PU_TELEGRAM_ALERT_INTERVAL`).
    pub telegram_alert_interval_secs: u64,
    /// Where unit logs live: `None` is the embedded store (the `unit_logs` table of
    /// `PU_DATABASE_URL`), `Some` a ClickHouse server (`PU_CLICKHOUSE_*`).
    pub clickhouse: Option<ClickHouseConfig>,
    /// `PU_CRASH_ALERT_INTERVAL` (s): crash alerts of one kind are sent at most once per
    /// interval; later occurrences are summed up in one alert when it has passed.
    pub crash_alert_interval_secs: u64,
    /// `PU_METRICS_TOKEN`: a bearer token accepted by `GET {prefix}/metrics` (Prometheus)
    /// besides an admin's `x-auth-token`.
    pub metrics_token: Option<String>,
    /// `PU_THROTTLE_RULES`: per-topic limits, `PATTERN=RATE[:BURST],...` tried in order
    /// (`crate::domain::throttle`; default [`crate::domain::throttle::DEFAULT_RULES`], `off`:
    /// none). The admin may replace them over REST (`PUT /throttle`).
    pub throttle_rules: crate::domain::throttle::Rules,
    /// `PU_THROTTLE_CLIENT_RATE`: messages per second one MQTT connection may publish, applied
    /// to EMQX's listener (`messages_rate`) by the broker-config worker; 0 leaves it unlimited.
    pub throttle_client_rate: u32,
    /// `PU_LOAD_METERING`: whether the shards meter messages per topic (SPEC §7); off, the load
    /// reports and the hourly history stay empty (benchmarks compare the two).
    pub load_metering: bool,
    /// `PU_GRAFANA_OIDC_*`: Grafana signs in with the Pepeunit account through our OIDC provider
    /// (issue 19, `service::oidc`).
    pub grafana_oidc: GrafanaOidcConfig,
}

/// The one OIDC client we know: Grafana's `[auth.generic_oauth]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrafanaOidcConfig {
    /// `PU_GRAFANA_OIDC_CLIENT_ID` (default `grafana-client`, upstream's grafana.ini).
    pub client_id: String,
    /// `PU_GRAFANA_OIDC_CLIENT_SECRET`: Grafana's `client_secret`. Unset while the Grafana
    /// integration is on: generated into `{PU_DATA_DIR}/secrets.toml` on first start (empty
    /// while the integration is off and nothing is set).
    pub client_secret: String,
    /// `PU_GRAFANA_OIDC_REDIRECT_URIS`: the redirect URIs accepted, compared byte for byte
    /// (comma-separated; default `{origin}/grafana/login/generic_oauth`, where Grafana served
    /// at `/grafana/` sends its users back).
    pub redirect_uris: Vec<String>,
    /// `PU_GRAFANA_OIDC_REQUIRE_PKCE` (default true): authorization requests without an S256
    /// `code_challenge` are refused.
    pub require_pkce: bool,
    /// `PU_GRAFANA_OIDC_CODE_TTL` (s, 1 to 600, default 60): an authorization code's lifetime.
    pub code_ttl_secs: u64,
    /// `PU_GRAFANA_OIDC_TOKEN_TTL` (s, 60 to 86400, default 3600): the access token's and the
    /// id_token's lifetime.
    pub token_ttl_secs: u64,
}

/// How the Telegram bot receives updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelegramMode {
    /// `getUpdates` long polling: works behind NAT, nothing to expose.
    Polling,
    /// Telegram POSTs updates to `{origin}/pepeunit/api/v1/bot` (needs a public https origin).
    Webhook,
}

/// The ClickHouse server holding unit logs, reached over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// `PU_CLICKHOUSE_URL`: `http://host:port`, without a trailing `/`.
    pub url: String,
    /// `PU_CLICKHOUSE_DATABASE` (default `pepeunit`), created at start when missing.
    pub database: String,
    /// `PU_CLICKHOUSE_USER`; `None` is the server's `default` user.
    pub user: Option<String>,
    /// `PU_CLICKHOUSE_PASSWORD`.
    pub password: Option<String>,
    /// `PU_CLICKHOUSE_FLUSH_INTERVAL_MS` (default 250, 0 to 5000): the MQTT core's log writer
    /// gathers lines this long into one INSERT (ClickHouse wants few, large inserts: every
    /// INSERT is a part on disk). The messages' acknowledgements wait for that INSERT.
    pub flush_interval: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("secrets file {path}: {message}")]
    Secrets { path: String, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Raw string values by key, before typing.
struct Source(BTreeMap<String, String>);

impl Source {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, key: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| invalid(key, format!("cannot parse {v:?}: {e}"))),
        }
    }

    fn parse_opt<T: FromStr>(&self, key: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| invalid(key, format!("cannot parse {v:?}: {e}")))
            })
            .transpose()
    }

    fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }
}

impl Config {
    /// Reads the process environment (and the optional file) and generates missing secrets.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds a config from explicit `PU_*` pairs; used by `from_env` and by tests.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("PU_"))
            .collect();
        let mut merged = BTreeMap::new();
        if let Some(path) = env.get("PU_CONFIG_FILE").filter(|p| !p.is_empty()) {
            merged.extend(read_config_file(Path::new(path))?);
        }
        merged.extend(env);
        Self::from_source(Source(merged))
    }

    fn from_source(src: Source) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(src.string("PU_DATA_DIR", "./data"));
        let http_bind: SocketAddr = src.parse("PU_HTTP_BIND", "127.0.0.1:5291".parse().unwrap())?;
        let domain = src.string("PU_DOMAIN", "localhost:5291");
        validate_domain(&domain)?;
        let http_type = src.string("PU_HTTP_TYPE", "http");
        if http_type != "http" && http_type != "https" {
            return Err(invalid("PU_HTTP_TYPE", "must be http or https"));
        }
        let app_prefix = src.string("PU_APP_PREFIX", "/pepeunit");
        let api_prefix = src.string("PU_API_ACTUAL_PREFIX", "/api/v1");
        for (key, value) in [
            ("PU_APP_PREFIX", &app_prefix),
            ("PU_API_ACTUAL_PREFIX", &api_prefix),
        ] {
            let ok = value.starts_with('/')
                && !value.ends_with('/')
                && value[1..].split('/').all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if !ok {
                return Err(invalid(
                    if key == "PU_APP_PREFIX" {
                        "PU_APP_PREFIX"
                    } else {
                        "PU_API_ACTUAL_PREFIX"
                    },
                    format!("{value:?} must look like /segment[/segment]"),
                ));
            }
        }
        let database_url = match src.get("PU_DATABASE_URL") {
            Some(url) => url.to_string(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("pepeunit.sqlite").display()
            ),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "PU_DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let default_mqtt_host = domain.split(':').next().unwrap_or("localhost").to_string();
        let min_log_level = src.string("PU_MIN_LOG_LEVEL", "Debug");
        if crate::domain::LogLevel::from_str(&min_log_level).is_err() {
            return Err(invalid(
                "PU_MIN_LOG_LEVEL",
                "must be one of Debug, Info, Warning, Error, Critical",
            ));
        }
        let github_api_url = src
            .string("PU_GITHUB_API_URL", "https://api.github.com")
            .trim_end_matches('/')
            .to_string();
        crate::git::validate_remote_url(&github_api_url)
            .map_err(|e| invalid("PU_GITHUB_API_URL", e.to_string()))?;
        if github_api_url.contains(['?', '#']) {
            return Err(invalid(
                "PU_GITHUB_API_URL",
                "must not have a query or fragment",
            ));
        }
        let positive = |key: &'static str, v: i64| {
            if v > 0 {
                Ok(v)
            } else {
                Err(invalid(key, "must be greater than 0"))
            }
        };

        let mqtt_mode = match src.string("PU_MQTT_MODE", "embedded").as_str() {
            "embedded" => MqttMode::Embedded,
            "external" => MqttMode::External,
            other => {
                return Err(invalid(
                    "PU_MQTT_MODE",
                    format!("{other:?} must be embedded or external"),
                ))
            }
        };
        let mqtt_bind: SocketAddr = src.parse("PU_MQTT_BIND", "127.0.0.1:1883".parse().unwrap())?;
        let mqtt_host = src.string("PU_MQTT_HOST", &default_mqtt_host);
        let mqtt_port = match src.get("PU_MQTT_PORT") {
            Some(_) => nonzero_port("PU_MQTT_PORT", src.parse("PU_MQTT_PORT", 1883)?)?,
            None => default_mqtt_port(mqtt_mode, mqtt_bind),
        };
        let (default_backend_host, default_backend_port) = match mqtt_mode {
            MqttMode::Embedded => {
                let ip = if mqtt_bind.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    mqtt_bind.ip().to_string()
                };
                (ip, mqtt_bind.port())
            }
            MqttMode::External => (mqtt_host.clone(), mqtt_port),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mqtt_shards: usize = src.parse("PU_MQTT_SHARDS", cores)?;
        if !(1..=256).contains(&mqtt_shards) {
            return Err(invalid("PU_MQTT_SHARDS", "must be between 1 and 256"));
        }
        let mqtt_shard_queue: usize = src.parse("PU_MQTT_SHARD_QUEUE", 8192)?;
        if !(16..=1_000_000).contains(&mqtt_shard_queue) {
            return Err(invalid(
                "PU_MQTT_SHARD_QUEUE",
                "must be between 16 and 1000000",
            ));
        }
        let max_payload_kib: usize = src.parse("PU_MQTT_MAX_PAYLOAD_SIZE", 256)?;
        if !(1..=262_144).contains(&max_payload_kib) {
            return Err(invalid(
                "PU_MQTT_MAX_PAYLOAD_SIZE",
                "must be between 1 and 262144 (KiB)",
            ));
        }
        let mqtt_client_id = src.string(
            "PU_MQTT_CLIENT_ID",
            &format!("pepeunit-backend-{}", domain.replace([':', '.'], "-")),
        );
        if mqtt_client_id.len() > 128 || mqtt_client_id.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "PU_MQTT_CLIENT_ID",
                "must be at most 128 printable characters",
            ));
        }
        let emqx_api_url = src
            .get("PU_EMQX_API_URL")
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(url) = &emqx_api_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("PU_EMQX_API_URL", "must be an http(s) URL"));
            }
        }
        let state_send_interval = positive(
            "PU_STATE_SEND_INTERVAL",
            src.parse("PU_STATE_SEND_INTERVAL", 60)?,
        )?;
        let firmware_update_timeout = positive(
            "PU_FIRMWARE_UPDATE_TIMEOUT",
            src.parse("PU_FIRMWARE_UPDATE_TIMEOUT", state_send_interval * 2)?,
        )?;
        let optional_positive = |key: &'static str| -> Result<Option<u64>, ConfigError> {
            match src.parse::<u64>(key, 0)? {
                0 if src.get(key).is_some() => Err(invalid(key, "must be greater than 0")),
                0 => Ok(None),
                n => Ok(Some(n)),
            }
        };

        let federation_retry_base_secs: u64 = src.parse("PU_FEDERATION_RETRY_BASE", 30)?;
        if !(1..=86_400).contains(&federation_retry_base_secs) {
            return Err(invalid(
                "PU_FEDERATION_RETRY_BASE",
                "must be between 1 and 86400 (seconds)",
            ));
        }
        let federation_max_attempts: i64 = src.parse("PU_FEDERATION_MAX_ATTEMPTS", 10)?;
        if !(1..=100).contains(&federation_max_attempts) {
            return Err(invalid(
                "PU_FEDERATION_MAX_ATTEMPTS",
                "must be between 1 and 100",
            ));
        }
        let allow_local_network = match (
            src.parse_opt::<bool>("PU_ALLOW_LOCAL_NETWORK")?,
            src.parse_opt::<bool>("PU_FEDERATION_ALLOW_LOCAL")?,
        ) {
            (Some(new), Some(old)) if new != old => {
                return Err(invalid(
                    "PU_ALLOW_LOCAL_NETWORK",
                    "contradicts PU_FEDERATION_ALLOW_LOCAL (its older name): set only one",
                ))
            }
            (Some(allow), _) | (None, Some(allow)) => allow,
            (None, None) => false,
        };
        let instance_name = src.string("PU_INSTANCE_NAME", &format!("Pepeunit {domain}"));
        if instance_name.is_empty()
            || instance_name.chars().count() > 100
            || instance_name.chars().any(char::is_control)
        {
            return Err(invalid(
                "PU_INSTANCE_NAME",
                "must be 1 to 100 printable characters",
            ));
        }

        let import_max_bytes: u64 = src.parse("PU_IMPORT_MAX_BYTES", 256 * 1024 * 1024)?;
        if !(1024 * 1024..=16 * 1024 * 1024 * 1024).contains(&import_max_bytes) {
            return Err(invalid(
                "PU_IMPORT_MAX_BYTES",
                "must be between 1048576 (1 MiB) and 17179869184 (16 GiB)",
            ));
        }

        let telegram_bot_token = src.get("PU_TELEGRAM_BOT_TOKEN").map(str::to_string);
        if let Some(token) = &telegram_bot_token {
            // `<bot id>:<secret>`; the token becomes part of every Bot API URL path
            let well_formed = token.split_once(':').is_some_and(|(id, secret)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !secret.is_empty()
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !well_formed {
                return Err(invalid(
                    "PU_TELEGRAM_BOT_TOKEN",
                    "must look like 123456:ABC-def (the token @BotFather gives)",
                ));
            }
        }
        let telegram_api_url = src
            .string("PU_TELEGRAM_API_URL", "https://api.telegram.org")
            .trim_end_matches('/')
            .to_string();
        if url::Url::parse(&telegram_api_url)
            .map(|u| !matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
            .unwrap_or(true)
        {
            return Err(invalid("PU_TELEGRAM_API_URL", "must be an http(s) URL"));
        }
        let telegram_mode = match src.string("PU_TELEGRAM_MODE", "polling").as_str() {
            "polling" => TelegramMode::Polling,
            "webhook" => TelegramMode::Webhook,
            _ => return Err(invalid("PU_TELEGRAM_MODE", "must be polling or webhook")),
        };
        let telegram_alert_interval_secs: u64 = src.parse("PU_TELEGRAM_ALERT_INTERVAL", 60)?;
        if telegram_alert_interval_secs > 86_400 {
            return Err(invalid(
                "PU_TELEGRAM_ALERT_INTERVAL",
                "must be between 0 and 86400 (seconds)",
            ));
        }

        let clickhouse = clickhouse_config(&src)?;

        let crash_alert_interval_secs: u64 = src.parse("PU_CRASH_ALERT_INTERVAL", 300)?;
        if !(1..=604_800).contains(&crash_alert_interval_secs) {
            return Err(invalid(
                "PU_CRASH_ALERT_INTERVAL",
                "must be between 1 and 604800 (seconds)",
            ));
        }
        let metrics_token = src.get("PU_METRICS_TOKEN").map(str::to_string);
        if let Some(t) = &metrics_token {
            if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    "PU_METRICS_TOKEN",
                    "must be at least 16 printable characters without spaces",
                ));
            }
        }
        let throttle_rules = match src.get("PU_THROTTLE_RULES").map(str::trim) {
            None => crate::domain::throttle::Rules::defaults(),
            Some("off") => crate::domain::throttle::Rules::default(),
            Some(text) => crate::domain::throttle::Rules::parse(text)
                .map_err(|e| invalid("PU_THROTTLE_RULES", e.to_string()))?,
        };
        let throttle_client_rate: u32 = src.parse("PU_THROTTLE_CLIENT_RATE", 100)?;
        if throttle_client_rate > 1_000_000 {
            return Err(invalid(
                "PU_THROTTLE_CLIENT_RATE",
                "must be between 0 (unlimited) and 1000000 messages per second",
            ));
        }

        let ff_grafana: bool = src.parse("PU_FF_GRAFANA_INTEGRATION_ENABLE", false)?;
        let grafana_url = src
            .get("PU_GRAFANA_URL")
            .map(|u| u.trim().trim_end_matches('/').to_string());
        let grafana_backend_url = src
            .get("PU_GRAFANA_BACKEND_URL")
            .map(|u| u.trim().trim_end_matches('/').to_string());
        for (key, value) in [
            ("PU_GRAFANA_URL", &grafana_url),
            ("PU_GRAFANA_BACKEND_URL", &grafana_backend_url),
        ] {
            if let Some(url) = value {
                if url::Url::parse(url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .is_none()
                {
                    return Err(invalid(
                        key,
                        "must be an http(s) URL such as http://grafana:3000",
                    ));
                }
            }
        }
        let grafana_admin_user = src.string("PU_GRAFANA_ADMIN_USER", "");
        let grafana_admin_password = src.string("PU_GRAFANA_ADMIN_PASSWORD", "");
        for (key, value) in [
            ("PU_GRAFANA_ADMIN_USER", &grafana_admin_user),
            ("PU_GRAFANA_ADMIN_PASSWORD", &grafana_admin_password),
        ] {
            if value.chars().count() > 128 || value.chars().any(char::is_control) {
                return Err(invalid(
                    key,
                    "must be at most 128 characters, no control characters",
                ));
            }
            if ff_grafana && value.is_empty() {
                return Err(invalid(
                    key,
                    "is required when PU_FF_GRAFANA_INTEGRATION_ENABLE is true (Grafana's admin, for the dashboard sync)",
                ));
            }
        }
        let grafana_limit_unit_node_per_one_panel: i64 =
            src.parse("PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL", 10)?;
        if !(1..=32).contains(&grafana_limit_unit_node_per_one_panel) {
            return Err(invalid(
                "PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL",
                "must be between 1 and 32",
            ));
        }

        let grafana_oidc = grafana_oidc_config(&src, &format!("{http_type}://{domain}"))?;

        let mut config = Config {
            grafana_oidc,
            grafana_url,
            grafana_backend_url,
            grafana_admin_user,
            grafana_admin_password,
            grafana_limit_unit_node_per_one_panel,
            throttle_rules,
            throttle_client_rate,
            load_metering: src.parse("PU_LOAD_METERING", true)?,
            telegram_bot_token,
            telegram_api_url,
            telegram_mode,
            telegram_alert_interval_secs,
            clickhouse,
            crash_alert_interval_secs,
            metrics_token,
            import_max_bytes,
            allow_local_network,
            federation_authorized_fetch: src.parse("PU_FEDERATION_AUTHORIZED_FETCH", false)?,
            ff_datapipe: src.parse("PU_FF_DATAPIPE_ENABLE", true)?,
            ff_grafana,
            ff_datapipe_default_last_value: src
                .parse("PU_FF_DATAPIPE_DEFAULT_LAST_VALUE_ENABLE", false)?,
            federation_retry_base_secs,
            federation_max_attempts,
            instance_name,
            mqtt_mode,
            mqtt_bind,
            mqtt_backend_host: src.string("PU_MQTT_BACKEND_HOST", &default_backend_host),
            mqtt_backend_port: match src.get("PU_MQTT_BACKEND_PORT") {
                Some(_) => nonzero_port(
                    "PU_MQTT_BACKEND_PORT",
                    src.parse("PU_MQTT_BACKEND_PORT", 1883)?,
                )?,
                None => default_backend_port,
            },
            mqtt_username: src.get("PU_MQTT_USERNAME").map(str::to_string),
            mqtt_password: src.string("PU_MQTT_PASSWORD", ""),
            mqtt_client_id,
            mqtt_shards,
            mqtt_shard_queue,
            mqtt_max_payload_size: max_payload_kib * 1024,
            mqtt_max_connections: optional_positive("PU_MQTT_MAX_CONNECTIONS")?,
            mqtt_max_packet_size: optional_positive("PU_MQTT_MAX_PACKET_SIZE")?,
            emqx_api_url,
            emqx_api_key: src.string("PU_EMQX_API_KEY", ""),
            emqx_api_secret: src.string("PU_EMQX_API_SECRET", ""),
            emqx_backend_url: src.get("PU_EMQX_BACKEND_URL").map(str::to_string),
            firmware_update_timeout,
            http_bind,
            domain,
            http_type,
            app_prefix,
            api_prefix,
            database_url,
            database_max_connections: src.parse("PU_DATABASE_MAX_CONNECTIONS", 8)?,
            secret_key: String::new(),
            encrypt_key: [0; 32],
            static_salt: String::new(),
            auth_token_expiration: positive(
                "PU_AUTH_TOKEN_EXPIRATION",
                src.parse("PU_AUTH_TOKEN_EXPIRATION", 2_678_400)?,
            )?,
            mqtt_host,
            mqtt_port,
            mqtt_ping_interval: positive(
                "PU_MQTT_PING_INTERVAL",
                src.parse("PU_MQTT_PING_INTERVAL", 20)?,
            )?,
            mqtt_keepalive: positive("PU_MQTT_KEEPALIVE", src.parse("PU_MQTT_KEEPALIVE", 60)?)?,
            state_send_interval,
            min_log_level,
            max_log_length: positive("PU_MAX_LOG_LENGTH", src.parse("PU_MAX_LOG_LENGTH", 64)?)?,
            unit_log_expiration_secs: positive(
                "PU_UNIT_LOG_EXPIRATION",
                src.parse("PU_UNIT_LOG_EXPIRATION", 86_400)?,
            )?,
            max_repository_size: src.parse("PU_MAX_REPOSITORY_SIZE", 50 * 1024 * 1024)?,
            git_timeout_secs: src.parse("PU_GIT_TIMEOUT", 300)?,
            registry_sync_interval_secs: src.parse("PU_REGISTRY_SYNC_INTERVAL", 3600)?,
            github_api_url,
            data_dir,
        };
        if config.unit_log_expiration_secs > MAX_UNIT_LOG_EXPIRATION {
            // expiry timestamps must stay within the four-digit years of the sortable format
            return Err(invalid(
                "PU_UNIT_LOG_EXPIRATION",
                format!("must be at most {MAX_UNIT_LOG_EXPIRATION} (100 years)"),
            ));
        }
        if config.database_max_connections == 0 {
            return Err(invalid(
                "PU_DATABASE_MAX_CONNECTIONS",
                "must be greater than 0",
            ));
        }
        config.load_secrets(&src)?;
        config.load_grafana_oidc_secret(&src)?;
        Ok(config)
    }

    /// Takes secrets from the sources, else from `{data_dir}/secrets.toml`, else generates them
    /// and writes that file (mode 0600) so the next start reuses them.
    fn load_secrets(&mut self, src: &Source) -> Result<(), ConfigError> {
        let path = self.data_dir.join("secrets.toml");
        let stored: BTreeMap<String, String> = if path.exists() {
            read_config_file(&path).map_err(|e| ConfigError::Secrets {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
        } else {
            BTreeMap::new()
        };
        let pick = |key: &str| {
            src.get(key)
                .map(str::to_string)
                .or_else(|| stored.get(key).cloned())
        };
        let mut generated = false;
        let mut gen = |bytes: usize| {
            generated = true;
            let mut buf = vec![0u8; bytes];
            rand::thread_rng().fill_bytes(&mut buf);
            base64::engine::general_purpose::STANDARD.encode(buf)
        };
        let secret_key = pick("PU_SECRET_KEY").unwrap_or_else(|| gen(32));
        let encrypt_key = pick("PU_ENCRYPT_KEY").unwrap_or_else(|| gen(32));
        let static_salt = pick("PU_STATIC_SALT").unwrap_or_else(|| gen(16));
        if secret_key.len() < 16 {
            return Err(invalid("PU_SECRET_KEY", "must be at least 16 characters"));
        }
        let key_bytes = base64::engine::general_purpose::STANDARD
            .decode(encrypt_key.trim())
            .map_err(|_| invalid("PU_ENCRYPT_KEY", "must be base64"))?;
        self.encrypt_key = key_bytes
            .try_into()
            .map_err(|_| invalid("PU_ENCRYPT_KEY", "must be base64 of exactly 32 bytes"))?;
        self.secret_key = secret_key.clone();
        self.static_salt = static_salt.clone();
        if generated {
            // base64 values need no TOML escaping
            let text = format!(
                "PU_SECRET_KEY = \"{secret_key}\"\nPU_ENCRYPT_KEY = \"{encrypt_key}\"\nPU_STATIC_SALT = \"{static_salt}\"\n"
            );
            write_secrets(&path, &text).map_err(|e| ConfigError::Secrets {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// `PU_GRAFANA_OIDC_CLIENT_SECRET`: from the sources, else `{data_dir}/secrets.toml`, else
    /// (only while the Grafana integration is on) generated and added to that file, whose other
    /// lines stay as they are (secrets given in the environment are never written).
    fn load_grafana_oidc_secret(&mut self, src: &Source) -> Result<(), ConfigError> {
        const KEY: &str = "PU_GRAFANA_OIDC_CLIENT_SECRET";
        let path = self.data_dir.join("secrets.toml");
        let secrets_error = |message: String| ConfigError::Secrets {
            path: path.display().to_string(),
            message,
        };
        let secret = match src.get(KEY) {
            Some(s) => s.to_string(),
            None => {
                let stored = if path.exists() {
                    read_config_file(&path).map_err(|e| secrets_error(e.to_string()))?
                } else {
                    BTreeMap::new()
                };
                match stored.get(KEY) {
                    Some(s) => s.clone(),
                    None if !self.ff_grafana => return Ok(()),
                    None => {
                        let secret = crate::crypto::random_hex(24);
                        let old = std::fs::read_to_string(&path).unwrap_or_default();
                        let old = old.strip_prefix(SECRETS_HEADER).unwrap_or(&old);
                        write_secrets(&path, &format!("{old}{KEY} = \"{secret}\"\n"))
                            .map_err(|e| secrets_error(e.to_string()))?;
                        secret
                    }
                }
            }
        };
        if secret.len() < 16 || secret.len() > 256 || !secret.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(invalid(
                KEY,
                "must be 16 to 256 printable ASCII characters without spaces",
            ));
        }
        self.grafana_oidc.client_secret = secret;
        Ok(())
    }

    /// The embedded broker took `port` for a `PU_MQTT_BIND` with port 0 (an ephemeral port,
    /// as tests use): the listener and the ports that follow it (`PU_MQTT_PORT` and
    /// `PU_MQTT_BACKEND_PORT` when unset, still 0 here) become that port, so env.json and the
    /// core's own connection name the port the broker listens on. Does nothing otherwise.
    pub fn set_mqtt_listener_port(&mut self, port: u16) {
        if self.mqtt_bind.port() != 0 {
            return;
        }
        self.mqtt_bind.set_port(port);
        if self.mqtt_port == 0 {
            self.mqtt_port = port;
        }
        if self.mqtt_backend_port == 0 {
            self.mqtt_backend_port = port;
        }
    }

    /// `{http_type}://{domain}`, the public origin of this instance.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.http_type, self.domain)
    }

    /// Our REST API base as Grafana reaches it: `PU_GRAFANA_BACKEND_URL`, else the public one.
    pub fn grafana_backend_base(&self) -> String {
        match &self.grafana_backend_url {
            Some(u) => u.clone(),
            None => format!("{}{}{}", self.origin(), self.app_prefix, self.api_prefix),
        }
    }

    /// Grafana's HTTP API base: `PU_GRAFANA_URL`, else the public origin + `/grafana`.
    pub fn grafana_base(&self) -> String {
        match &self.grafana_url {
            Some(u) => u.clone(),
            None => format!("{}/grafana", self.origin()),
        }
    }

    pub fn repositories_dir(&self) -> PathBuf {
        self.data_dir.join("repositories")
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// `PU_CLICKHOUSE_*`; the other variables are refused without `PU_CLICKHOUSE_URL`, so a
/// half-configured ClickHouse never silently falls back to the embedded store.
fn clickhouse_config(src: &Source) -> Result<Option<ClickHouseConfig>, ConfigError> {
    let Some(url) = src.get("PU_CLICKHOUSE_URL") else {
        for key in [
            "PU_CLICKHOUSE_DATABASE",
            "PU_CLICKHOUSE_USER",
            "PU_CLICKHOUSE_PASSWORD",
            "PU_CLICKHOUSE_FLUSH_INTERVAL_MS",
        ] {
            if src.get(key).is_some() {
                return Err(invalid(key, "is set but PU_CLICKHOUSE_URL is not"));
            }
        }
        return Ok(None);
    };
    let url = url.trim().trim_end_matches('/').to_string();
    // plain HTTP only: the clickhouse crate is built without TLS (ClickHouse sits next to the
    // backend, as in docker-compose.yml)
    match url.strip_prefix("http://") {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {}
        _ => {
            return Err(invalid(
                "PU_CLICKHOUSE_URL",
                "must be http://host[:port], without path or credentials \
                 (those go in PU_CLICKHOUSE_USER / PU_CLICKHOUSE_PASSWORD; https is not built in)",
            ))
        }
    }
    let database = src.string("PU_CLICKHOUSE_DATABASE", "pepeunit");
    // the name is spliced into DDL: identifiers only
    let first_ok = database
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || database.len() > 64
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(
            "PU_CLICKHOUSE_DATABASE",
            "must be 1 to 64 ASCII letters, digits or _, not starting with a digit",
        ));
    }
    let flush_ms: u64 = src.parse("PU_CLICKHOUSE_FLUSH_INTERVAL_MS", 250)?;
    if flush_ms > 5000 {
        return Err(invalid(
            "PU_CLICKHOUSE_FLUSH_INTERVAL_MS",
            "must be 0 to 5000 (milliseconds the log writer gathers lines into one INSERT)",
        ));
    }
    Ok(Some(ClickHouseConfig {
        flush_interval: std::time::Duration::from_millis(flush_ms),
        url,
        database,
        user: src.get("PU_CLICKHOUSE_USER").map(str::to_string),
        password: src.get("PU_CLICKHOUSE_PASSWORD").map(str::to_string),
    }))
}

/// The port env.json announces when `PU_MQTT_PORT` is unset: with the embedded broker, the
/// port it listens on (`PU_MQTT_BIND`; 0 until [`Config::set_mqtt_listener_port`] learns the
/// port picked at start), since devices reach that broker; with an external broker, 1883.
fn default_mqtt_port(mode: MqttMode, bind: SocketAddr) -> u16 {
    match mode {
        MqttMode::Embedded => bind.port(),
        MqttMode::External => 1883,
    }
}

/// A port given explicitly: 0 (which would mean "the listener's port") is refused.
fn nonzero_port(key: &'static str, port: u16) -> Result<u16, ConfigError> {
    if port == 0 {
        Err(invalid(key, "must be between 1 and 65535"))
    } else {
        Ok(port)
    }
}

fn validate_domain(domain: &str) -> Result<(), ConfigError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c))
        && !domain.starts_with(['-', '.', ':']);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "PU_DOMAIN",
            format!("{domain:?} must be host[:port] with letters, digits, '-' and '.'"),
        ))
    }
}

/// `PU_GRAFANA_OIDC_*` but the client secret (`Config::load_grafana_oidc_secret`).
fn grafana_oidc_config(src: &Source, origin: &str) -> Result<GrafanaOidcConfig, ConfigError> {
    let client_id = src.string("PU_GRAFANA_OIDC_CLIENT_ID", "grafana-client");
    if client_id.len() > 128 || !client_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "PU_GRAFANA_OIDC_CLIENT_ID",
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    let default_uri = format!("{origin}/grafana/login/generic_oauth");
    let redirect_uris: Vec<String> = src
        .string("PU_GRAFANA_OIDC_REDIRECT_URIS", &default_uri)
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if redirect_uris.is_empty() || redirect_uris.len() > 16 {
        return Err(invalid(
            "PU_GRAFANA_OIDC_REDIRECT_URIS",
            "must list 1 to 16 comma-separated URIs",
        ));
    }
    for uri in &redirect_uris {
        let ok = url::Url::parse(uri).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.fragment().is_none()
                && u.username().is_empty()
        }) && uri.len() <= 2048;
        if !ok {
            return Err(invalid(
                "PU_GRAFANA_OIDC_REDIRECT_URIS",
                format!("{uri:?} must be an absolute http(s) URL without fragment or credentials"),
            ));
        }
    }
    let code_ttl_secs: u64 = src.parse("PU_GRAFANA_OIDC_CODE_TTL", 60)?;
    if !(1..=600).contains(&code_ttl_secs) {
        return Err(invalid(
            "PU_GRAFANA_OIDC_CODE_TTL",
            "must be between 1 and 600 (seconds)",
        ));
    }
    let token_ttl_secs: u64 = src.parse("PU_GRAFANA_OIDC_TOKEN_TTL", 3600)?;
    if !(60..=86_400).contains(&token_ttl_secs) {
        return Err(invalid(
            "PU_GRAFANA_OIDC_TOKEN_TTL",
            "must be between 60 and 86400 (seconds)",
        ));
    }
    Ok(GrafanaOidcConfig {
        client_id,
        client_secret: String::new(),
        redirect_uris,
        require_pkce: src.parse("PU_GRAFANA_OIDC_REQUIRE_PKCE", true)?,
        code_ttl_secs,
        token_ttl_secs,
    })
}

fn read_config_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(err(format!("unknown key {key}")));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(err(format!(
                    "{key}: unsupported {} value",
                    other.type_str()
                )))
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

const SECRETS_HEADER: &str =
    "# Generated on first start. Losing it invalidates every token and encrypted value.\n";

fn write_secrets(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(SECRETS_HEADER.as_bytes())?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vec![("PU_DATA_DIR".to_string(), dir.display().to_string())];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    #[test]
    fn secrets_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Config::from_vars(vars(dir.path(), &[])).unwrap();
        let b = Config::from_vars(vars(dir.path(), &[])).unwrap();
        assert_eq!(a.secret_key, b.secret_key);
        assert_eq!(a.encrypt_key, b.encrypt_key);
        assert_eq!(a.domain, "localhost:5291");
        assert_eq!(a.github_api_url, "https://api.github.com");
        assert_eq!(a.unit_log_expiration_secs, 86_400);
        assert_eq!(a.crash_alert_interval_secs, 300);
        assert_eq!(a.metrics_token, None);
        assert!(a.database_url.starts_with("sqlite://"));
        assert_eq!(a.throttle_rules, crate::domain::throttle::Rules::defaults());
        assert_eq!(a.throttle_client_rate, 100);
    }

    #[test]
    fn throttle_rules_are_read_and_off_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let with = |extra: &[(&str, &str)]| Config::from_vars(vars(dir.path(), extra)).unwrap();
        assert!(with(&[("PU_THROTTLE_RULES", "off")])
            .throttle_rules
            .0
            .is_empty());
        let c = with(&[
            ("PU_THROTTLE_RULES", "{domain}/+=2.5:7"),
            ("PU_THROTTLE_CLIENT_RATE", "0"),
        ]);
        assert_eq!(c.throttle_rules.0.len(), 1);
        assert_eq!(c.throttle_rules.0[0].limit.rate_milli, 2500);
        assert_eq!(c.throttle_rules.0[0].limit.burst, 7);
        assert_eq!(c.throttle_client_rate, 0);
    }

    #[test]
    fn grafana_needs_its_admin_when_the_integration_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let on = ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true");
        let err = Config::from_vars(vars(dir.path(), &[on])).unwrap_err();
        assert!(err.to_string().contains("PU_GRAFANA_ADMIN_USER"), "{err}");
        let err = Config::from_vars(vars(dir.path(), &[on, ("PU_GRAFANA_ADMIN_USER", "admin")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("PU_GRAFANA_ADMIN_PASSWORD"),
            "{err}"
        );
        let c = Config::from_vars(vars(
            dir.path(),
            &[
                on,
                ("PU_GRAFANA_ADMIN_USER", "admin"),
                ("PU_GRAFANA_ADMIN_PASSWORD", "pw"),
            ],
        ))
        .unwrap();
        assert_eq!(c.grafana_base(), format!("{}/grafana", c.origin()));
        assert_eq!(c.grafana_limit_unit_node_per_one_panel, 10);
        let c = Config::from_vars(vars(
            dir.path(),
            &[("PU_GRAFANA_URL", "http://grafana:3000/")],
        ))
        .unwrap();
        assert_eq!(c.grafana_base(), "http://grafana:3000");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        for (key, value) in [
            ("PU_HTTP_BIND", "nonsense"),
            ("PU_DOMAIN", "bad domain/with space"),
            ("PU_MQTT_PORT", "70000"),
            ("PU_DATABASE_URL", "mysql://x"),
            ("PU_ENCRYPT_KEY", "c2hvcnQ="),
            ("PU_MIN_LOG_LEVEL", "Loud"),
            ("PU_APP_PREFIX", "noslash"),
            ("PU_GITHUB_API_URL", "ftp://api.github.com"),
            ("PU_GITHUB_API_URL", "https://user:pat@api.github.com"),
            ("PU_GITHUB_API_URL", "https://api.github.com/?x=1"),
            ("PU_UNIT_LOG_EXPIRATION", "0"),
            ("PU_UNIT_LOG_EXPIRATION", "-60"),
            ("PU_UNIT_LOG_EXPIRATION", "a day"),
            ("PU_UNIT_LOG_EXPIRATION", "99999999999"),
            ("PU_FEDERATION_ALLOW_LOCAL", "maybe"),
            ("PU_ALLOW_LOCAL_NETWORK", "maybe"),
            ("PU_FEDERATION_AUTHORIZED_FETCH", "1x"),
            ("PU_FEDERATION_RETRY_BASE", "0"),
            ("PU_FEDERATION_RETRY_BASE", "86401"),
            ("PU_FEDERATION_MAX_ATTEMPTS", "0"),
            ("PU_FEDERATION_MAX_ATTEMPTS", "101"),
            ("PU_INSTANCE_NAME", "tab\tin name"),
            ("PU_TELEGRAM_BOT_TOKEN", "no-colon"),
            ("PU_TELEGRAM_BOT_TOKEN", "12:secret/../x"),
            ("PU_TELEGRAM_API_URL", "ftp://api.telegram.org"),
            ("PU_TELEGRAM_MODE", "push"),
            ("PU_TELEGRAM_ALERT_INTERVAL", "-1"),
            ("PU_TELEGRAM_ALERT_INTERVAL", "86401"),
            ("PU_CLICKHOUSE_URL", "clickhouse:8123"),
            ("PU_CLICKHOUSE_URL", "http://user:pw@clickhouse:8123"),
            ("PU_CLICKHOUSE_URL", "http://clickhouse:8123/db"),
            ("PU_CLICKHOUSE_URL", "http://"),
            ("PU_CLICKHOUSE_URL", "https://clickhouse:8443"),
            ("PU_CLICKHOUSE_DATABASE", "pepeunit"),
            ("PU_CLICKHOUSE_PASSWORD", "secret"),
            ("PU_CLICKHOUSE_FLUSH_INTERVAL_MS", "100"),
            ("PU_CRASH_ALERT_INTERVAL", "0"),
            ("PU_CRASH_ALERT_INTERVAL", "-5"),
            ("PU_CRASH_ALERT_INTERVAL", "604801"),
            ("PU_CRASH_ALERT_INTERVAL", "5m"),
            ("PU_METRICS_TOKEN", "short"),
            ("PU_METRICS_TOKEN", "a token with spaces in it"),
            ("PU_THROTTLE_RULES", "{domain}/+"),
            ("PU_THROTTLE_RULES", "{domain}/+=fast"),
            ("PU_THROTTLE_RULES", "{domain}/#/x=1"),
            ("PU_THROTTLE_CLIENT_RATE", "-1"),
            ("PU_THROTTLE_CLIENT_RATE", "1000001"),
            ("PU_LOAD_METERING", "maybe"),
            ("PU_GRAFANA_URL", "grafana:3000"),
            ("PU_GRAFANA_URL", "ftp://grafana"),
            ("PU_GRAFANA_BACKEND_URL", "pepeunit:5291"),
            ("PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL", "0"),
            ("PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL", "33"),
            ("PU_GRAFANA_ADMIN_USER", "tab\there"),
        ] {
            let err = Config::from_vars(vars(dir.path(), &[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn devices_are_told_the_embedded_brokers_port() {
        let dir = tempfile::tempdir().unwrap();
        let with = |extra: &[(&str, &str)]| Config::from_vars(vars(dir.path(), extra)).unwrap();
        // defaults: the listener 127.0.0.1:1883, announced as the domain's host and 1883
        let c = with(&[("PU_DOMAIN", "iot.example.com:8443")]);
        assert_eq!(
            (c.mqtt_host.as_str(), c.mqtt_port),
            ("iot.example.com", 1883)
        );
        assert_eq!(c.mqtt_bind.port(), 1883);
        // a listener on another port is announced on that port, unless PU_MQTT_PORT says
        let c = with(&[("PU_MQTT_BIND", "127.0.0.1:21883")]);
        assert_eq!(c.mqtt_port, 21883);
        assert_eq!(c.mqtt_host, "localhost");
        assert_eq!(
            (c.mqtt_backend_host.as_str(), c.mqtt_backend_port),
            ("127.0.0.1", 21883)
        );
        let c = with(&[
            ("PU_MQTT_BIND", "0.0.0.0:21883"),
            ("PU_MQTT_PORT", "8883"),
            ("PU_MQTT_HOST", "mqtt.example.com"),
        ]);
        assert_eq!(
            (c.mqtt_host.as_str(), c.mqtt_port),
            ("mqtt.example.com", 8883)
        );
        assert_eq!(
            (c.mqtt_backend_host.as_str(), c.mqtt_backend_port),
            ("127.0.0.1", 21883)
        );
        // an external broker: the listener setting means nothing, 1883 unless set
        let c = with(&[
            ("PU_MQTT_MODE", "external"),
            ("PU_MQTT_BIND", "127.0.0.1:21883"),
        ]);
        assert_eq!(c.mqtt_port, 1883);
        assert_eq!(c.mqtt_backend_port, 1883);

        // port 0: unknown until the broker has bound, then every port that follows it is that
        let mut c = with(&[("PU_MQTT_BIND", "127.0.0.1:0")]);
        assert_eq!((c.mqtt_port, c.mqtt_backend_port), (0, 0));
        c.set_mqtt_listener_port(40001);
        assert_eq!(c.mqtt_bind, "127.0.0.1:40001".parse().unwrap());
        assert_eq!((c.mqtt_port, c.mqtt_backend_port), (40001, 40001));
        // a second call (a listener already known) changes nothing
        c.set_mqtt_listener_port(40002);
        assert_eq!((c.mqtt_bind.port(), c.mqtt_port), (40001, 40001));
        // explicit ports stay as given
        let mut c = with(&[
            ("PU_MQTT_BIND", "127.0.0.1:0"),
            ("PU_MQTT_PORT", "1884"),
            ("PU_MQTT_BACKEND_PORT", "1885"),
        ]);
        c.set_mqtt_listener_port(40003);
        assert_eq!(c.mqtt_bind.port(), 40003);
        assert_eq!((c.mqtt_port, c.mqtt_backend_port), (1884, 1885));
        // a fixed listener is never changed
        let mut c = with(&[("PU_MQTT_BIND", "127.0.0.1:21883")]);
        c.set_mqtt_listener_port(40004);
        assert_eq!((c.mqtt_bind.port(), c.mqtt_port), (21883, 21883));

        // 0 is not a port to give explicitly
        for key in ["PU_MQTT_PORT", "PU_MQTT_BACKEND_PORT"] {
            let err = Config::from_vars(vars(dir.path(), &[(key, "0")])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn local_network_opt_in_and_its_older_name() {
        let dir = tempfile::tempdir().unwrap();
        let allow = |extra: &[(&str, &str)]| {
            Config::from_vars(vars(dir.path(), extra)).map(|c| c.allow_local_network)
        };
        assert!(!allow(&[]).unwrap());
        assert!(allow(&[("PU_ALLOW_LOCAL_NETWORK", "true")]).unwrap());
        assert!(allow(&[("PU_FEDERATION_ALLOW_LOCAL", "true")]).unwrap());
        assert!(!allow(&[("PU_FEDERATION_ALLOW_LOCAL", "false")]).unwrap());
        assert!(allow(&[
            ("PU_ALLOW_LOCAL_NETWORK", "true"),
            ("PU_FEDERATION_ALLOW_LOCAL", "true")
        ])
        .unwrap());
        let err = allow(&[
            ("PU_ALLOW_LOCAL_NETWORK", "false"),
            ("PU_FEDERATION_ALLOW_LOCAL", "true"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("PU_ALLOW_LOCAL_NETWORK"), "{err}");
    }

    #[test]
    fn node_state_settings_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_vars(vars(
            dir.path(),
            &[
                ("PU_CRASH_ALERT_INTERVAL", "60"),
                ("PU_METRICS_TOKEN", "scrape-token-0123456789"),
            ],
        ))
        .unwrap();
        assert_eq!(c.crash_alert_interval_secs, 60);
        assert_eq!(c.metrics_token.as_deref(), Some("scrape-token-0123456789"));
    }

    #[test]
    fn file_values_are_overridden_by_env_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pepeunit.toml");
        std::fs::write(
            &file,
            "PU_DOMAIN = \"iot.example.com\"\nPU_MQTT_PORT = 1884\n",
        )
        .unwrap();
        let f = file.display().to_string();
        let c = Config::from_vars(vars(
            dir.path(),
            &[("PU_CONFIG_FILE", &f), ("PU_MQTT_PORT", "1999")],
        ))
        .unwrap();
        assert_eq!(c.domain, "iot.example.com");
        assert_eq!(c.mqtt_port, 1999);
        std::fs::write(&file, "PU_DOMIAN = \"typo\"\n").unwrap();
        let err = Config::from_vars(vars(dir.path(), &[("PU_CONFIG_FILE", &f)])).unwrap_err();
        assert!(err.to_string().contains("unknown key PU_DOMIAN"));
    }

    #[test]
    fn clickhouse_is_optional_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_vars(vars(dir.path(), &[])).unwrap();
        assert_eq!(c.clickhouse, None);
        let c = Config::from_vars(vars(
            dir.path(),
            &[
                ("PU_CLICKHOUSE_URL", "http://clickhouse:8123/"),
                ("PU_CLICKHOUSE_USER", "pepe"),
            ],
        ))
        .unwrap();
        assert_eq!(
            c.clickhouse,
            Some(ClickHouseConfig {
                url: "http://clickhouse:8123".into(),
                database: "pepeunit".into(),
                user: Some("pepe".into()),
                password: None,
                flush_interval: std::time::Duration::from_millis(250),
            })
        );
        let flush = |v: &str| {
            Config::from_vars(vars(
                dir.path(),
                &[
                    ("PU_CLICKHOUSE_URL", "http://localhost:8123"),
                    ("PU_CLICKHOUSE_FLUSH_INTERVAL_MS", v),
                ],
            ))
            .map(|c| c.clickhouse.unwrap().flush_interval.as_millis())
        };
        assert_eq!(flush("0").unwrap(), 0);
        assert_eq!(flush("5000").unwrap(), 5000);
        for bad in ["5001", "-1", "1s"] {
            let err = flush(bad).unwrap_err().to_string();
            assert!(
                err.contains("PU_CLICKHOUSE_FLUSH_INTERVAL_MS"),
                "{bad}: {err}"
            );
        }
        for db in ["1logs", "logs;DROP", "a-b", ""] {
            let r = Config::from_vars(vars(
                dir.path(),
                &[
                    ("PU_CLICKHOUSE_URL", "http://localhost:8123"),
                    ("PU_CLICKHOUSE_DATABASE", db),
                ],
            ));
            // an empty value means unset (the default), like every other variable
            if db.is_empty() {
                assert_eq!(r.unwrap().clickhouse.unwrap().database, "pepeunit");
            } else {
                let err = r.unwrap_err().to_string();
                assert!(err.contains("PU_CLICKHOUSE_DATABASE"), "{db}: {err}");
            }
        }
    }

    #[test]
    fn grafana_oidc_defaults_follow_the_origin_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::from_vars(vars(
            dir.path(),
            &[("PU_DOMAIN", "iot.example.com"), ("PU_HTTP_TYPE", "https")],
        ))
        .unwrap();
        let o = &c.grafana_oidc;
        assert_eq!(o.client_id, "grafana-client");
        assert_eq!(
            o.redirect_uris,
            ["https://iot.example.com/grafana/login/generic_oauth"]
        );
        assert!(o.require_pkce);
        assert_eq!((o.code_ttl_secs, o.token_ttl_secs), (60, 3600));
        assert_eq!(o.client_secret, "", "off: nothing generated");
        let c = Config::from_vars(vars(
            dir.path(),
            &[(
                "PU_GRAFANA_OIDC_REDIRECT_URIS",
                "https://a.example/cb, http://b.example:3000/login/generic_oauth",
            )],
        ))
        .unwrap();
        assert_eq!(c.grafana_oidc.redirect_uris.len(), 2);
        for (key, value) in [
            ("PU_GRAFANA_OIDC_REDIRECT_URIS", "/relative"),
            ("PU_GRAFANA_OIDC_REDIRECT_URIS", "ftp://a.example/cb"),
            ("PU_GRAFANA_OIDC_REDIRECT_URIS", "https://a.example/cb#frag"),
            ("PU_GRAFANA_OIDC_REDIRECT_URIS", "https://u:p@a.example/cb"),
            ("PU_GRAFANA_OIDC_REDIRECT_URIS", ","),
            ("PU_GRAFANA_OIDC_CLIENT_ID", "has space"),
            ("PU_GRAFANA_OIDC_CLIENT_SECRET", "short"),
            ("PU_GRAFANA_OIDC_CODE_TTL", "0"),
            ("PU_GRAFANA_OIDC_CODE_TTL", "601"),
            ("PU_GRAFANA_OIDC_TOKEN_TTL", "59"),
            ("PU_GRAFANA_OIDC_REQUIRE_PKCE", "perhaps"),
        ] {
            let err = Config::from_vars(vars(dir.path(), &[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn grafana_oidc_secret_is_generated_once_beside_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let on = [
            ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true"),
            ("PU_GRAFANA_ADMIN_USER", "admin"),
            ("PU_GRAFANA_ADMIN_PASSWORD", "secret"),
        ];
        let a = Config::from_vars(vars(dir.path(), &[])).unwrap();
        let b = Config::from_vars(vars(dir.path(), &on)).unwrap();
        assert_eq!(b.grafana_oidc.client_secret.len(), 48);
        assert_eq!(b.secret_key, a.secret_key, "the other secrets stay");
        let c = Config::from_vars(vars(dir.path(), &on)).unwrap();
        assert_eq!(c.grafana_oidc.client_secret, b.grafana_oidc.client_secret);
        assert_eq!(c.encrypt_key, a.encrypt_key);
        let text = std::fs::read_to_string(dir.path().join("secrets.toml")).unwrap();
        assert_eq!(
            text.matches("PU_GRAFANA_OIDC_CLIENT_SECRET").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("# Generated").count(), 1, "{text}");
        // a configured secret wins and is never written
        let d = Config::from_vars(vars(
            dir.path(),
            &[
                on[0],
                on[1],
                on[2],
                ("PU_GRAFANA_OIDC_CLIENT_SECRET", "configured-secret-0123"),
            ],
        ))
        .unwrap();
        assert_eq!(d.grafana_oidc.client_secret, "configured-secret-0123");
        let again = std::fs::read_to_string(dir.path().join("secrets.toml")).unwrap();
        assert_eq!(again, text);
        // secrets given only in the environment are not written to disk for it
        let env_only = tempfile::tempdir().unwrap();
        let e = Config::from_vars(vars(
            env_only.path(),
            &[
                on[0],
                on[1],
                on[2],
                ("PU_SECRET_KEY", "env-secret-key-0123456789"),
                (
                    "PU_ENCRYPT_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ),
                ("PU_STATIC_SALT", "env-salt"),
            ],
        ))
        .unwrap();
        let text = std::fs::read_to_string(env_only.path().join("secrets.toml")).unwrap();
        assert!(!text.contains("env-secret-key"), "{text}");
        assert!(text.contains(&e.grafana_oidc.client_secret), "{text}");
    }
}
