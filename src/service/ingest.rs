//! The service side of the MQTT ingest path: the rules that decide what a device's `state`,
//! `log` and node messages change, and the batched write of those changes. The shards of
//! [`crate::mqtt::core`] parse and throttle; every decision about stored data is made here.

use std::collections::HashMap;

use chrono::Duration;
use uuid::Uuid;

use super::alerts::AlertLine;
use super::Instance;
use crate::domain::datapipe::config::DataPipeConfig;
use crate::domain::datapipe::PipeRow;
use crate::domain::payload::ReportedLog;
use crate::domain::{self, LogLevel, UnitFirmwareUpdateStatus};
use crate::error::{AppError, AppResult};
use crate::store::{self, unit_logs::NewUnitLog};

/// A firmware status transition caused by a reported version.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareChange {
    pub status: UnitFirmwareUpdateStatus,
    pub error: Option<String>,
}

/// A unit's reported state, ready to store.
#[derive(Debug, Clone)]
pub struct UnitStateWrite {
    pub unit_state: String,
    pub commit: String,
    pub at: String,
    pub firmware: Option<FirmwareChange>,
}

impl UnitStateWrite {
    /// What this state changes on the unit's row.
    fn row_change(&self) -> store::units::ReportedStateWrite<'_> {
        store::units::ReportedStateWrite {
            unit_state: &self.unit_state,
            commit: &self.commit,
            at: &self.at,
            firmware: self
                .firmware
                .as_ref()
                .map(|f| (f.status, f.error.as_deref(), None)),
        }
    }
}

/// Everything one shard batch changes; written at once by [`Instance::write_ingest_batch`].
#[derive(Default)]
pub struct IngestBatch {
    /// Last reported state per unit (later messages of the batch replace earlier ones).
    pub states: HashMap<Uuid, UnitStateWrite>,
    /// Last value per node.
    pub node_values: HashMap<Uuid, String>,
    /// Rows node pipelines produced (data pipes), written in the batch's transaction.
    pub pipe_rows: Vec<PipeRow>,
    /// NRecords nodes to cut back to their newest N rows (`Output::TrimNRecords`).
    pub pipe_trims: Vec<(Uuid, u32)>,
    pub logs: LogWrite,
}

/// Log lines to store, with the keys of those that may be stored already.
#[derive(Default)]
pub struct LogWrite {
    pub lines: Vec<NewUnitLog>,
    /// Keys of lines from messages the broker delivered again: the store skips those it
    /// has (the embedded SQL store skips every known key anyway, through its primary key).
    pub maybe_stored: Vec<Uuid>,
    /// Data pipe rows, when they live in ClickHouse: written with the lines' INSERT window.
    pub pipe_rows: Vec<PipeRow>,
}

impl LogWrite {
    pub fn merge(&mut self, other: LogWrite) {
        self.lines.extend(other.lines);
        self.maybe_stored.extend(other.maybe_stored);
        self.pipe_rows.extend(other.pipe_rows);
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.pipe_rows.is_empty()
    }
}

/// What a log write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogsStored {
    pub stored: u64,
    /// Lines found stored already (a message delivered again), not stored twice.
    pub skipped: u64,
}

impl IngestBatch {
    /// No state or node value to write (log lines go their own way).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.node_values.is_empty()
            && self.pipe_rows.is_empty()
            && self.pipe_trims.is_empty()
    }

    /// Adds a device's log lines: timestamps missing from the device become the server's time
    /// (one microsecond apart, keeping their order), and every line expires after
    /// `PU_UNIT_LOG_EXPIRATION`. A line with the device's time gets its idempotency key as
    /// uuid ([`ReportedLog::key`]); `redelivered`: the message came again (MQTT DUP).
    pub fn add_logs(
        &mut self,
        instance: &Instance,
        unit: Uuid,
        lines: Vec<ReportedLog>,
        redelivered: bool,
    ) {
        let now = chrono::Utc::now().naive_utc();
        let expires =
            domain::format_time(now + Duration::seconds(instance.config.unit_log_expiration_secs));
        for (i, line) in lines.into_iter().enumerate() {
            let key = line.key(unit, i);
            if let (Some(key), true) = (key, redelivered) {
                self.logs.maybe_stored.push(key);
            }
            let created = line
                .create_datetime
                .unwrap_or_else(|| now + Duration::microseconds(i as i64));
            self.logs.lines.push(NewUnitLog {
                // time-ordered either way, so the primary key index grows at its end instead
                // of splitting pages
                uuid: key.unwrap_or_else(Uuid::now_v7),
                unit_uuid: unit,
                level: line.level,
                text: line.text,
                create_datetime: domain::format_time(created),
                expiration_datetime: expires.clone(),
            });
        }
    }
}

/// What the MQTT core's shards and log writer may do, and nothing more: look up the units and
/// nodes messages are for, decide firmware transitions, offer alert lines and write batches.
/// A narrow handle over the instance (cheap to clone), so the shards cannot reach around the
/// ingest rules.
#[derive(Clone)]
pub struct Ingest {
    instance: Instance,
}

/// What a shard needs of a node to handle its values.
#[derive(Clone, Debug)]
pub struct IngestNode {
    /// The Unit the node belongs to.
    pub unit: Uuid,
    /// The node's data pipe, when it has an active, readable config (and data pipes are on).
    pub pipeline: Option<DataPipeConfig>,
}

/// What a shard needs of a unit to handle its `state` and `log` messages.
#[derive(Clone, Debug)]
pub struct IngestUnit {
    pub current_commit: Option<String>,
    pub status: Option<UnitFirmwareUpdateStatus>,
    /// From which level a log line is an alert (a mute is checked at delivery).
    pub alert_level: LogLevel,
}

impl Ingest {
    /// This instance's domain: topics of other domains are not the core's.
    pub fn domain(&self) -> &str {
        &self.instance.config.domain
    }

    /// `PU_STATE_SEND_INTERVAL`: the least time between two stored states of a unit that
    /// reports the same version.
    pub fn state_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.instance.config.state_send_interval as u64)
    }

    /// The unit a message is for; `Ok(None)` when it does not exist.
    pub async fn unit(&self, uuid: Uuid) -> AppResult<Option<IngestUnit>> {
        match self.instance.unit_row(uuid).await {
            Ok(u) => Ok(Some(IngestUnit {
                current_commit: u.current_commit_version.clone(),
                status: u.firmware_update_status,
                alert_level: u.alert_log_level,
            })),
            Err(AppError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How a node takes values: `None` when it does not exist or its values are not the
    /// platform's (its topic name does not end with `/pepeunit`).
    pub async fn node(&self, uuid: Uuid) -> AppResult<Option<IngestNode>> {
        let node = match self.instance.unit_node(uuid).await {
            Ok(n) => n,
            Err(AppError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !node.topic_name.ends_with("/pepeunit") {
            return Ok(None);
        }
        let pipeline = match (&node.data_pipe_yml, node.is_data_pipe_active) {
            (Some(stored), true) if self.instance.config.ff_datapipe => {
                match DataPipeConfig::from_stored_json(stored) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        // a stored config this version cannot read: the node's values are
                        // stored as plain values, and the owner sees why
                        let e: Vec<String> = e.into_iter().map(|e| e.message).collect();
                        tracing::warn!(node = %uuid, error = %e.join("; "), "data pipe config unreadable");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(Some(IngestNode {
            unit: node.unit_uuid,
            pipeline,
        }))
    }

    /// Whether data pipe rows are written in the batch's own transaction (the SQL store);
    /// otherwise (ClickHouse) they go to the log writer with the batch's log lines.
    pub fn pipe_rows_in_batch(&self) -> bool {
        self.instance.logs.in_database()
    }

    /// The data pipe side: config changes and open state saved at the last clean stop.
    pub fn pipes(&self) -> &std::sync::Arc<super::data_pipes::PipeHub> {
        &self.instance.pipes
    }

    /// The load meter the shards record every message in (SPEC §7).
    pub fn load(&self) -> &super::load::LoadMeter {
        &self.instance.load
    }

    /// Whether the shards throttle (SPEC §8): with an external broker, when a limit exists.
    /// The embedded broker throttles in its publish hook, before a message is routed.
    pub fn shards_throttle(&self) -> bool {
        self.instance.config.mqtt_mode == crate::config::MqttMode::External
            && self.instance.throttle.active()
    }

    /// Whether a message on `topic` of `unit` passes its limit; a dropped one is counted for
    /// the Unit's owner. A Unit that cannot be read now is not throttled.
    pub async fn throttle_passes(&self, topic: &str, unit: Uuid) -> bool {
        use super::throttle::Verdict;
        let throttle = &self.instance.throttle;
        let verdict = match throttle.take(topic, None) {
            Verdict::NeedSubject => match self.instance.throttle_subject_of_unit(unit).await {
                Ok(Some(subject)) => throttle.take(topic, Some(subject)),
                _ => Verdict::Pass,
            },
            v => v,
        };
        match verdict {
            Verdict::Drop(unit) => {
                self.instance
                    .load
                    .record_dropped(topic, unit, super::load::unix_now());
                false
            }
            _ => true,
        }
    }

    /// Saves running pipelines' open state (a clean stop); read back at the next start.
    pub async fn save_pipe_snapshots(&self, snapshots: &[(Uuid, String)]) -> AppResult<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        store::pipe_data::save_snapshots(
            self.instance.pool(),
            snapshots,
            chrono::Utc::now().naive_utc(),
        )
        .await?;
        Ok(())
    }

    pub async fn firmware_transition(
        &self,
        unit: Uuid,
        commit: &str,
    ) -> AppResult<Option<FirmwareChange>> {
        self.instance.firmware_transition(unit, commit).await
    }

    /// A batch the store refused past its retries: the admins see it in the node's error
    /// tracker (`GET /metrics/node`) and its crash alerts, not only in the log.
    pub fn track_error(&self, kind: &str, detail: &str) {
        self.instance.node.error(kind, detail);
    }

    /// Whether the shards feed the alert pipeline (not when EMQX's rule does).
    pub fn alerts_from_shards(&self) -> bool {
        self.instance.alerts_from_shards()
    }

    pub fn offer_alert(&self, line: AlertLine) {
        self.instance.alerts.offer(line);
    }

    pub fn add_logs(
        &self,
        batch: &mut IngestBatch,
        unit: Uuid,
        lines: Vec<ReportedLog>,
        redelivered: bool,
    ) {
        batch.add_logs(&self.instance, unit, lines, redelivered);
    }

    /// Writes a batch's states and node values (its log lines go to [`Ingest::store_logs`]).
    pub async fn write_batch(&self, batch: &IngestBatch) -> AppResult<()> {
        self.instance.write_ingest_batch(batch).await
    }

    /// The log writer's one call: a merged batch of lines into the log store. `retry`: an
    /// earlier try may have committed (its answer lost), so every keyed line may be stored.
    pub async fn store_logs(&self, write: &LogWrite, retry: bool) -> AppResult<LogsStored> {
        self.instance.store_keyed_unit_logs(write, retry).await
    }
}

impl Instance {
    /// The shards' handle.
    pub fn ingest(&self) -> Ingest {
        Ingest {
            instance: self.clone(),
        }
    }

    /// Called when a unit whose `Update` is pending reports `commit`, or when a unit reports a
    /// new version: Success when it runs the target version (also after an Update that timed
    /// out: the device did update, late); a pending Update becomes Error once
    /// `PU_FIRMWARE_UPDATE_TIMEOUT` has passed without the target version.
    pub async fn firmware_transition(
        &self,
        unit: Uuid,
        commit: &str,
    ) -> AppResult<Option<FirmwareChange>> {
        let Some(unit) = store::units::get(self.pool(), unit).await? else {
            return Ok(None);
        };
        let pending = match unit.firmware_update_status {
            Some(UnitFirmwareUpdateStatus::RequestSent) => true,
            Some(UnitFirmwareUpdateStatus::Error) => false,
            _ => return Ok(None),
        };
        let repo = self.repo(unit.repo_uuid).await?;
        let target = self.unit_target_version(&unit, &repo).await?;
        if !pending {
            return Ok((target.commit == commit).then_some(FirmwareChange {
                status: UnitFirmwareUpdateStatus::Success,
                error: None,
            }));
        }
        if target.commit == commit {
            return Ok(Some(FirmwareChange {
                status: UnitFirmwareUpdateStatus::Success,
                error: None,
            }));
        }
        let sent = unit
            .last_firmware_update_datetime
            .as_deref()
            .and_then(domain::parse_time);
        let timeout = Duration::seconds(self.config.firmware_update_timeout);
        match sent {
            Some(sent) if chrono::Utc::now().naive_utc() - sent <= timeout => Ok(None),
            _ => Ok(Some(self.update_timed_out())),
        }
    }

    fn update_timed_out(&self) -> FirmwareChange {
        FirmwareChange {
            status: UnitFirmwareUpdateStatus::Error,
            error: Some(format!(
                "The device did not report the target version within {} s",
                self.config.firmware_update_timeout
            )),
        }
    }

    /// Writes one shard batch: unit states and node values in one transaction, then the log
    /// lines (their store may be a different database).
    pub async fn write_ingest_batch(&self, batch: &IngestBatch) -> AppResult<()> {
        if !batch.is_empty() {
            let now = domain::now();
            let mut tx = self.pool().begin().await?;
            for (uuid, s) in &batch.states {
                store::units::set_reported_state(&mut *tx, *uuid, &s.row_change()).await?;
            }
            let values: Vec<(Uuid, &str)> = batch
                .node_values
                .iter()
                .map(|(uuid, value)| (*uuid, value.as_str()))
                .collect();
            store::unit_nodes::set_states(&mut tx, &values, &now).await?;
            if self.logs.in_database() {
                store::pipe_data::insert_rows(&mut tx, &batch.pipe_rows).await?;
                store::pipe_data::trim_n_records_nodes(&mut tx, &batch.pipe_trims).await?;
            }
            tx.commit().await?;
            // the shards read units through the row cache: it learns what was just written
            // instead of forgetting the row (one database read per unit per batch otherwise)
            for (uuid, s) in &batch.states {
                let change = s.row_change();
                self.units_cache.update(*uuid, |u| change.apply(u));
            }
            self.publish_live(batch, &now);
        }
        if !batch.logs.is_empty() {
            self.store_keyed_unit_logs(&batch.logs, false).await?;
        }
        Ok(())
    }

    /// Tells live watchers what a batch committed (its log lines go with the log store's write).
    fn publish_live(&self, batch: &IngestBatch, now: &str) {
        use super::live::LiveEvent;
        for (uuid, s) in &batch.states {
            self.live.publish(*uuid, || LiveEvent::UnitState {
                unit: *uuid,
                state: s.unit_state.as_str().into(),
                commit: s.commit.as_str().into(),
                at: s.at.as_str().into(),
            });
        }
        for (uuid, value) in &batch.node_values {
            self.live.publish(*uuid, || LiveEvent::NodeValue {
                node: *uuid,
                value: value.as_str().into(),
                at: now.into(),
            });
        }
    }

    /// The poller's job: pending `Update`s older than `PU_FIRMWARE_UPDATE_TIMEOUT` become Error.
    pub async fn expire_update_requests(&self) -> AppResult<usize> {
        let before = domain::format_time(
            chrono::Utc::now().naive_utc() - Duration::seconds(self.config.firmware_update_timeout),
        );
        let stale = store::units::stale_update_requests(self.pool(), &before).await?;
        let error = self.update_timed_out().error.unwrap_or_default();
        let mut failed = 0;
        for uuid in &stale {
            if store::units::fail_update_request(self.pool(), *uuid, &before, &error).await? {
                failed += 1;
            }
            self.units_cache.invalidate(*uuid);
        }
        Ok(failed)
    }
}
