//! The service layer: every rule of the product (agents, visibility, permissions, validation)
//! lives here. REST (and later GraphQL, Telegram, MQTT, ActivityPub) are thin front doors onto
//! these functions; none of them writes SQL or re-implements a rule.

pub mod access;
pub mod alerts;
pub mod bridges;
pub mod broker_access;
pub mod charts;
pub mod chat;
pub mod commands;
pub mod dashboards;
pub mod data_pipes;
pub mod federation;
pub mod grades;
pub mod ingest;
pub mod live;
pub mod load;
pub mod moves;
pub mod node;
pub mod oidc;
pub mod permissions;
pub mod ports;
pub mod readme;
pub mod registries;
pub mod repos;
pub mod row_cache;
pub mod scrapers;
pub mod throttle;
pub mod transfer;
pub mod unit_files;
pub mod unit_logs;
pub mod unit_nodes;
pub mod units;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::crypto::Cipher;
use crate::error::AppResult;
use crate::git::Git;
use crate::store::{self, Db};
use crate::token::TokenKey;

pub use access::Agent;

/// Everything a request or task needs: configuration, stores, keys. Cheap to clone.
#[derive(Clone)]
pub struct Instance {
    pub config: Arc<Config>,
    pub db: Db,
    pub cipher: Cipher,
    pub tokens: TokenKey,
    pub git: Git,
    pub units_cache: Arc<row_cache::RowCache<crate::store::units::Unit>>,
    pub repos_cache: Arc<row_cache::RowCache<crate::store::repos::Repo>>,
    /// Publishes to devices over the backend's MQTT connection.
    pub outbox: ports::Outbox,
    pub mqtt_stats: Arc<crate::observe::mqtt::MqttStats>,
    /// This instance as an ActivityPub server (actors, deliveries, hub index).
    pub federation: pepeunit_federation::Federation,
    /// Tells the bridge carrier that bridges changed (SPEC §11).
    pub bridges: ports::BridgeSignal,
    /// Tells the embedded broker that a unit's tokens may have died (deletion, rotation).
    pub revocations: access::Revocations,
    /// The chat bot (Telegram), when `PU_TELEGRAM_BOT_TOKEN` is set and the instance serves:
    /// installed by whoever starts the instance (`server.rs`), since the service never names
    /// the bot.
    pub chat_bot: Option<Arc<dyn ports::ChatBot>>,
    /// Log lines that became alerts, on their way to Telegram (SPEC §4).
    pub alerts: alerts::Alerts,
    /// Where unit log lines live (the embedded table or ClickHouse).
    pub logs: crate::telemetry::LogStore,
    /// Self-observation: request counters, CPU and memory, errors, crash alerts (SPEC §6).
    pub node: crate::observe::Node,
    /// Committed states, log lines and node values for live watchers (GraphQL subscriptions).
    pub live: live::Live,
    /// Data pipes: config changes for the shards running the pipelines, saved open state.
    pub pipes: Arc<data_pipes::PipeHub>,
    /// Messages per second per topic, Unit, Repo and user (SPEC §7).
    pub load: Arc<load::LoadMeter>,
    /// Per-topic limits where messages enter (SPEC §8).
    pub throttle: Arc<throttle::Throttle>,
    /// The OIDC provider Grafana signs in through: its codes, access tokens and key.
    pub oidc: Arc<oidc::OidcProvider>,
    /// Held by the admin's read-modify-writes of instance settings (throttle rules, the
    /// grade, scraper tokens), so concurrent requests in this process cannot lose each
    /// other's change or leave memory and database apart.
    pub admin_settings: Arc<tokio::sync::Mutex<()>>,
}

impl Instance {
    /// Connects to the database and applies pending migrations.
    pub async fn open(config: Config) -> anyhow::Result<Instance> {
        std::fs::create_dir_all(&config.data_dir)?;
        std::fs::create_dir_all(config.repositories_dir())?;
        let db = Db::connect(&config.database_url, config.database_max_connections).await?;
        db.migrate().await?;
        let logs = crate::telemetry::LogStore::open(&config, &db).await?;
        let config = Arc::new(config);
        let git = Git::new(
            config.repositories_dir(),
            config.max_repository_size,
            Duration::from_secs(config.git_timeout_secs),
            config.allow_local_network,
        );
        let federation = federation::start_federation(&config, &db, &git).await?;
        let mqtt_stats: Arc<crate::observe::mqtt::MqttStats> = Arc::default();
        let node = crate::observe::Node::new(
            mqtt_stats.clone(),
            Duration::from_secs(config.crash_alert_interval_secs),
        );
        let throttle = Arc::new(throttle::Throttle::new(
            &config.domain,
            config.throttle_rules.clone(),
        ));
        let instance = Instance {
            throttle,
            federation,
            cipher: Cipher::new(&config.encrypt_key),
            tokens: TokenKey::new(&config.secret_key),
            git,
            db,
            units_cache: Arc::default(),
            repos_cache: Arc::default(),
            outbox: ports::Outbox::default(),
            mqtt_stats,
            node,
            bridges: Default::default(),
            revocations: Default::default(),
            live: Default::default(),
            pipes: Arc::default(),
            load: Arc::default(),
            oidc: Arc::default(),
            admin_settings: Arc::default(),
            chat_bot: None,
            alerts: alerts::Alerts::new(config.telegram_bot_token.is_some()),
            logs,
            config,
        };
        instance.load.set_enabled(instance.config.load_metering);
        instance.load_throttle_rules().await?;
        Ok(instance)
    }

    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.db.pool
    }
}

/// Entity counts of `GET /metrics/`.
#[derive(Serialize, ToSchema)]
pub struct InstanceMetrics {
    pub user_count: i64,
    pub repository_registry_count: i64,
    pub repo_count: i64,
    pub unit_count: i64,
    pub unit_node_count: i64,
    pub unit_node_edge_count: i64,
}

impl Instance {
    pub async fn metrics(&self, agent: &Agent) -> AppResult<InstanceMetrics> {
        agent.require(&[
            crate::domain::AgentType::Bot,
            crate::domain::AgentType::User,
            crate::domain::AgentType::Unit,
        ])?;
        let db = self.pool();
        Ok(InstanceMetrics {
            user_count: store::users::count(db).await?,
            repository_registry_count: store::registries::count(db).await?,
            repo_count: store::repos::count(db).await?,
            unit_count: store::units::count(db).await?,
            unit_node_count: store::unit_nodes::count(db).await?,
            unit_node_edge_count: store::unit_nodes::count_all_edges(db).await?,
        })
    }
}

/// `offset`/`limit` checks shared by every list (`limit` 0 = unlimited, at most 500 otherwise
/// where the endpoint caps it). Failures are upstream's bare `{"detail": "limit must be >= 0"}`.
pub fn check_page(
    offset: Option<i64>,
    limit: Option<i64>,
    cap: Option<i64>,
) -> AppResult<(i64, i64)> {
    let offset = offset.unwrap_or(0);
    let limit = limit.unwrap_or(0);
    if offset < 0 {
        return Err(crate::error::AppError::bare("offset must be >= 0"));
    }
    if limit < 0 {
        return Err(crate::error::AppError::bare("limit must be >= 0"));
    }
    if let Some(cap) = cap {
        if limit > cap {
            return Err(crate::error::AppError::bare(format!(
                "limit must be <= {cap}"
            )));
        }
    }
    Ok((offset, limit))
}
