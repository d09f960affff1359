//! Data pipes (SPEC §9, issue 17): a node's pipeline config, the rows its pipeline keeps, CSV
//! export and import, clearing. The pipelines run in the MQTT core's shards; the service tells
//! them at once when a config changes ([`PipeHub::changed`]) and hands them the open state a
//! clean stop saved ([`PipeHub::take_saved`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use chrono::NaiveDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::datapipe::config::DataPipeConfig;
use crate::domain::datapipe::{
    csv, DataPipeStage, DataPipeStatus, ProcessingPolicyType, ValidationError,
};
use crate::domain::{self, AgentType, Order};
use crate::error::{AppError, AppResult};
use crate::store::pipe_data::{self, PipeQuery, PipeRow};
use crate::store::unit_nodes::UnitNode;
use crate::store::{self};

/// Largest config file taken (upstream reads whatever comes; a config is a few hundred bytes).
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Largest CSV import taken.
pub const MAX_CSV_BYTES: usize = 64 * 1024 * 1024;
/// Most rows a CSV import may hold.
pub const MAX_CSV_ROWS: usize = 1_000_000;

/// The shards' side of the service: config changes and saved open state.
pub struct PipeHub {
    changed: broadcast::Sender<Uuid>,
    /// Open state saved at the last clean stop, per node, until its pipeline starts.
    saved: Mutex<HashMap<Uuid, String>>,
}

impl Default for PipeHub {
    fn default() -> Self {
        PipeHub {
            changed: broadcast::channel(1024).0,
            saved: Mutex::default(),
        }
    }
}

impl PipeHub {
    /// Node uuids whose config changed (or whose data was cleared or replaced): a shard
    /// running their pipeline reloads it. A receiver that lags reloads every pipeline.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changed.subscribe()
    }

    pub fn changed(&self, node: Uuid) {
        let _ = self.changed.send(node);
    }

    /// The open state saved for a node at the last clean stop (once).
    pub fn take_saved(&self, node: Uuid) -> Option<String> {
        self.saved.lock().expect("pipe hub").remove(&node)
    }

    /// What no pipeline took since the start (their nodes sent nothing): saved again at a
    /// clean stop.
    pub fn take_all_saved(&self) -> Vec<(Uuid, String)> {
        self.saved.lock().expect("pipe hub").drain().collect()
    }

    pub fn restore_saved(&self, saved: Vec<(Uuid, String)>) {
        self.saved.lock().expect("pipe hub").extend(saved);
    }
}

/// One read of a node's pipeline data (`GET /unit_nodes/get_data_pipe_data/`).
pub struct PipeDataRequest {
    pub node: Uuid,
    pub policy: ProcessingPolicyType,
    pub search: Option<String>,
    pub aggregation_types: Vec<crate::domain::datapipe::AggregationFunction>,
    pub time_window_size: Option<u32>,
    pub end_window_from: Option<NaiveDateTime>,
    pub end_window_to: Option<NaiveDateTime>,
    pub created_from: Option<NaiveDateTime>,
    pub created_to: Option<NaiveDateTime>,
    /// `relative_time`: rows created within this long before now.
    pub relative: Option<chrono::Duration>,
    pub order: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

impl PipeDataRequest {
    /// All of a node's rows of `policy`, in the store's order.
    pub fn all(node: Uuid, policy: ProcessingPolicyType) -> Self {
        PipeDataRequest {
            node,
            policy,
            search: None,
            aggregation_types: Vec::new(),
            time_window_size: None,
            end_window_from: None,
            end_window_to: None,
            created_from: None,
            created_to: None,
            relative: None,
            order: None,
            offset: 0,
            limit: 0,
        }
    }
}

/// A node's data, by policy.
pub enum PipeData {
    /// The node's state (LastValue keeps no rows).
    LastValue {
        node: Uuid,
        state: Option<String>,
        last_update_datetime: String,
    },
    Rows(Vec<PipeRow>),
}

/// Parses `relative_time` (`<int><s|m|h|d|M|y>`, upstream's units; M = 30 days, y = 365).
pub fn parse_relative_time(s: &str) -> AppResult<chrono::Duration> {
    let bad = || {
        AppError::data_pipe(format!(
            "relative_time {s:?} is not <number><s|m|h|d|M|y>, e.g. 15m"
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'M' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(bad)
}

impl Instance {
    pub(super) fn require_data_pipes(&self) -> AppResult<()> {
        if self.config.ff_datapipe {
            Ok(())
        } else {
            Err(AppError::feature_disabled())
        }
    }

    /// The broker's payload limit in bytes: the largest `max_size` a config may ask for.
    fn max_payload_bytes(&self) -> u32 {
        u32::try_from(self.config.mqtt_max_payload_size).unwrap_or(u32::MAX)
    }

    /// `[{stage, message}]` for a config file (empty: valid).
    pub fn check_data_pipe_config(
        &self,
        agent: &Agent,
        file: &[u8],
    ) -> AppResult<Vec<ValidationError>> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        self.require_data_pipes()?;
        Ok(match self.parse_data_pipe_config(file) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        })
    }

    fn parse_data_pipe_config(&self, file: &[u8]) -> Result<DataPipeConfig, Vec<ValidationError>> {
        let text = match std::str::from_utf8(file) {
            Ok(t) => t,
            Err(e) => {
                return Err(vec![ValidationError {
                    stage: DataPipeStage::ActivePeriod,
                    message: format!("The config is not UTF-8 text: {e}"),
                }])
            }
        };
        DataPipeConfig::parse_yaml(text, self.max_payload_bytes())
    }

    /// A node its creator may change the pipeline of.
    async fn own_pipe_node(&self, agent: &Agent, uuid: Uuid) -> AppResult<UnitNode> {
        agent.require(&[AgentType::User])?;
        self.require_data_pipes()?;
        let node = self.unit_node(uuid).await?;
        agent.require_creator(Some(node.creator_uuid))?;
        Ok(node)
    }

    /// A node whose pipeline data the agent may read: its creator, or a unit that may see it
    /// (upstream lets any unit read any node's data; we check visibility).
    pub(super) async fn readable_pipe_node(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<UnitNode> {
        agent.require(&[AgentType::User, AgentType::Unit])?;
        self.require_data_pipes()?;
        let node = self.unit_node(uuid).await?;
        match agent {
            Agent::User(_) => {
                agent.require_creator(Some(node.creator_uuid))?;
            }
            _ => {
                self.check_visibility(agent, node.uuid, node.visibility_level)
                    .await?
            }
        }
        Ok(node)
    }

    /// The node's config as stored, parsed.
    pub(super) fn node_pipe_config(node: &UnitNode) -> AppResult<DataPipeConfig> {
        let stored = node
            .data_pipe_yml
            .as_deref()
            .ok_or_else(|| AppError::data_pipe("Data pipe config is not set"))?;
        DataPipeConfig::from_stored_json(stored).map_err(|errors| {
            AppError::data_pipe(format!(
                "The stored data pipe config is invalid: {}",
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.stage, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })
    }

    /// Validates and stores a node's config; its pipeline runs the new config at once.
    pub async fn set_data_pipe_config(
        &self,
        agent: &Agent,
        uuid: Uuid,
        file: &[u8],
    ) -> AppResult<()> {
        let node = self.own_pipe_node(agent, uuid).await?;
        if !node.is_data_pipe_active {
            return Err(AppError::unit_node("Data pipe is not active for this node"));
        }
        let config = self.parse_data_pipe_config(file).map_err(|errors| {
            AppError::data_pipe(format!(
                "{} validation errors for DataPipeConfig: {}",
                errors.len(),
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.stage, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        store::unit_nodes::set_data_pipe(
            self.pool(),
            uuid,
            Some(&config.to_stored_json()),
            Some(DataPipeStatus::Active.as_str()),
            None,
            &domain::now(),
        )
        .await?;
        self.pipes.changed(uuid);
        Ok(())
    }

    /// The node's config as YAML (nulls left out).
    pub async fn get_data_pipe_config(&self, agent: &Agent, uuid: Uuid) -> AppResult<String> {
        agent.require(&[AgentType::User])?;
        self.require_data_pipes()?;
        let node = self.unit_node(uuid).await?;
        // upstream lets any user read any node's config; only who may see the node reads it
        self.check_visibility(agent, node.uuid, node.visibility_level)
            .await?;
        Ok(Self::node_pipe_config(&node)?.to_yaml())
    }

    /// `(count, data)` of a node's pipeline.
    pub async fn get_data_pipe_data(
        &self,
        agent: &Agent,
        r: PipeDataRequest,
    ) -> AppResult<(i64, PipeData)> {
        let node = self.readable_pipe_node(agent, r.node).await?;
        self.pipe_data_of(node, r).await
    }

    /// `(count, data)` of a node whose reader was checked by the caller.
    pub(super) async fn pipe_data_of(
        &self,
        node: UnitNode,
        r: PipeDataRequest,
    ) -> AppResult<(i64, PipeData)> {
        if r.policy == ProcessingPolicyType::LastValue {
            // upstream answers 500 here; the intended item is the node's state
            return Ok((
                1,
                PipeData::LastValue {
                    node: node.uuid,
                    state: node.state,
                    last_update_datetime: node.last_update_datetime,
                },
            ));
        }
        let now = chrono::Utc::now().naive_utc();
        let keep_last = Self::node_pipe_config(&node)
            .ok()
            .and_then(|c| c.processing_policy.n_records_count);
        let created_from = match (r.created_from, r.relative) {
            (Some(a), Some(d)) => Some(a.max(now - d)),
            (a, d) => a.or(d.map(|d| now - d)),
        };
        let q = PipeQuery {
            node: node.uuid,
            policy: r.policy,
            keep_last,
            search: r.search,
            aggregation_types: r.aggregation_types,
            time_window_size: r.time_window_size,
            end_window_from: r.end_window_from,
            end_window_to: r.end_window_to,
            created_from,
            created_to: r.created_to,
            order: r.order,
            offset: r.offset,
            limit: r.limit,
        };
        let (count, rows) = self.logs.pipe_rows(&q, now).await?;
        Ok((count, PipeData::Rows(rows)))
    }

    /// The node's rows as `dp_data_<uuid>.csv` inside a ZIP: `(file name, zip bytes)`.
    pub async fn export_data_pipe_csv(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<(String, Vec<u8>)> {
        let node = self.readable_pipe_node(agent, uuid).await?;
        let config = Self::node_pipe_config(&node)?;
        let policy = config.processing_policy.policy_type;
        if policy == ProcessingPolicyType::LastValue {
            return Err(AppError::data_pipe(
                "Bulk create for LastValue not available",
            ));
        }
        let mut q = PipeQuery::all(node.uuid, policy);
        q.keep_last = config.processing_policy.n_records_count;
        let (_, rows) = self
            .logs
            .pipe_rows(&q, chrono::Utc::now().naive_utc())
            .await?;
        if rows.is_empty() {
            return Err(AppError::data_pipe("No data found"));
        }
        let text = csv::encode_rows(&rows);
        let name = format!("dp_data_{}.csv", Uuid::new_v4());
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(name.as_str(), options)
            .map_err(AppError::internal)?;
        zip.write_all(text.as_bytes()).map_err(AppError::internal)?;
        let bytes = zip.finish().map_err(AppError::internal)?.into_inner();
        Ok((name.replace(".csv", ".zip"), bytes))
    }

    /// Replaces the node's rows with a CSV file's, every row checked against the config
    /// (all or nothing).
    pub async fn import_data_pipe_csv(
        &self,
        agent: &Agent,
        uuid: Uuid,
        file: &[u8],
    ) -> AppResult<u64> {
        let node = self.own_pipe_node(agent, uuid).await?;
        let config = Self::node_pipe_config(&node)?;
        let limits = csv::CsvLimits {
            max_bytes: MAX_CSV_BYTES,
            max_rows: MAX_CSV_ROWS,
        };
        let now = chrono::Utc::now().naive_utc();
        // the size limit is the decoder's, with its message
        let rows = csv::decode(file, &config, node.uuid, now, limits)
            .map_err(|e| AppError::data_pipe(e.to_string()))?
            .into_pipe_rows();
        let stored = self.logs.replace_pipe_node(node.uuid, &rows).await?;
        self.pipes.changed(node.uuid);
        Ok(stored)
    }

    /// Removes every row the node's pipeline kept.
    pub async fn delete_data_pipe_data(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let node = self.own_pipe_node(agent, uuid).await?;
        self.logs.delete_pipe_nodes(&[node.uuid]).await?;
        self.pipes.changed(node.uuid);
        Ok(())
    }

    /// Rows of deleted nodes go with them (unit deletion, a version change dropping nodes);
    /// the SQL store removed them in the deleting transaction already.
    pub async fn delete_pipe_data_of(&self, nodes: &[Uuid]) {
        for node in nodes {
            // open windows saved for a deleted node are not saved again
            self.pipes.take_saved(*node);
        }
        if nodes.is_empty() || self.logs.in_database() {
            return;
        }
        if let Err(e) = self.logs.delete_pipe_nodes(nodes).await {
            tracing::warn!(nodes = nodes.len(), error = %e, "data pipe rows of deleted nodes not removed");
        }
    }

    /// At start, before the MQTT core: the open pipeline state a clean stop saved (the rows
    /// are taken: a crash after this start loses open windows, never stored rows).
    pub async fn restore_pipe_snapshots(&self) -> AppResult<usize> {
        let saved = pipe_data::take_snapshots(self.pool()).await?;
        let n = saved.len();
        self.pipes.restore_saved(saved);
        Ok(n)
    }

    /// The poller's job: frees the space of expired TimeWindow rows.
    pub async fn purge_expired_pipe_rows(&self) -> AppResult<u64> {
        Ok(self
            .logs
            .purge_expired_pipe_rows(chrono::Utc::now().naive_utc())
            .await?)
    }
}
