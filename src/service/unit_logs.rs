//! Unit logs: what devices report on their `log` topic, kept `PU_UNIT_LOG_EXPIRATION` seconds.
//!
//! The one interface to log storage for every front door: MQTT ingest writes through
//! [`Instance::store_unit_logs`], REST reads through [`Instance::unit_log_list`], the Telegram
//! bot through [`Instance::query_unit_logs`]. The lines live in the telemetry store
//! (`src/telemetry`: the embedded SQL table or ClickHouse); signatures carry only plain data,
//! so callers never know which one runs.

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::ingest::{LogWrite, LogsStored};
use super::{check_page, Agent, Instance};
use crate::domain::topic::{Topic, TopicError};
use crate::domain::{self, LogLevel, Order};
use crate::error::{AppError, AppResult};
pub use crate::store::unit_logs::{NewUnitLog, UnitLog};
use crate::telemetry::LogQuery;

/// The query of `GET /units/log_list/`: exactly one of `uuid` and `topic` names the unit.
#[derive(Clone, Debug, Default)]
pub struct UnitLogFilter {
    /// The unit whose logs are listed.
    pub uuid: Option<Uuid>,
    /// Or its log topic, `{PU_DOMAIN}/output_base_topic/{unit_uuid}/log/pepeunit`.
    pub topic: Option<String>,
    /// Empty means every level.
    pub level: Vec<LogLevel>,
    /// Lines created at or after this instant (naive UTC, `2026-11-28T12:00:00[.ffffff]`, or
    /// RFC 3339 with an offset).
    pub start_create_datetime: Option<String>,
    /// Lines created at or before this instant.
    pub end_create_datetime: Option<String>,
    /// Default `desc`: newest first.
    pub order_by_create_date: Option<Order>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

/// A query timestamp in the stored format; `name` is the parameter named in the error.
fn query_time(name: &str, s: &str) -> AppResult<String> {
    let s = s.trim();
    let t = domain::parse_time(s)
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.naive_utc())
        })
        .ok_or_else(|| {
            AppError::request(
                "query",
                Some(name),
                format!("{name} must be a UTC time like 2026-11-28T12:00:00.000000, not {s:?}"),
            )
        })?;
    Ok(domain::format_time(t))
}

impl Instance {
    /// The unit a log topic belongs to: `{PU_DOMAIN}/output_base_topic/{unit_uuid}/log/pepeunit`
    /// of this instance, nothing else.
    pub fn unit_of_log_topic(&self, topic: &str) -> AppResult<Uuid> {
        let bad = |why: &str| {
            AppError::request(
                "query",
                Some("topic"),
                format!(
                    "topic must be {}/output_base_topic/<unit_uuid>/log/pepeunit: {why}",
                    self.config.domain
                ),
            )
        };
        match Topic::parse(topic) {
            Ok(t) if t.domain() != self.config.domain => Err(bad("another instance's domain")),
            Ok(t @ Topic::UnitBase { .. }) => t.log_unit().ok_or_else(|| bad("not the log topic")),
            Ok(Topic::Node { .. }) => Err(bad("not a unit's output base topic")),
            Err(TopicError::Uuid) => Err(bad("the unit is not a uuid")),
            Err(_) => Err(bad("not a unit's output base topic")),
        }
    }

    /// A unit's unexpired logs, for its creator or the unit itself: `(total, page)`.
    pub async fn unit_log_list(
        &self,
        agent: &Agent,
        filter: UnitLogFilter,
    ) -> AppResult<(i64, Vec<UnitLog>)> {
        let (offset, limit) = check_page(filter.offset, filter.limit, None)?;
        let uuid = match (filter.uuid, &filter.topic) {
            (Some(u), None) => u,
            (None, Some(t)) => self.unit_of_log_topic(t)?,
            (Some(_), Some(_)) => {
                return Err(AppError::request(
                    "query",
                    Some("topic"),
                    "give either uuid or topic, not both",
                ))
            }
            (None, None) => {
                return Err(AppError::request(
                    "query",
                    Some("uuid"),
                    "uuid or topic is required",
                ))
            }
        };
        let since = filter
            .start_create_datetime
            .as_deref()
            .map(|s| query_time("start_create_datetime", s))
            .transpose()?;
        let until = filter
            .end_create_datetime
            .as_deref()
            .map(|s| query_time("end_create_datetime", s))
            .transpose()?;
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        self.query_unit_logs(LogQuery {
            unit_uuid: unit.uuid,
            levels: filter.level,
            since,
            until,
            order: filter.order_by_create_date.unwrap_or(Order::Desc),
            offset,
            limit,
        })
        .await
    }

    /// A unit's unexpired logs without any access check: for callers that checked access
    /// themselves (REST above, the Telegram bot). Timestamps of `q` are in
    /// [`domain::format_time`]'s format.
    pub(crate) async fn query_unit_logs(&self, q: LogQuery) -> AppResult<(i64, Vec<UnitLog>)> {
        Ok(self.logs.query(&q, chrono::Utc::now().naive_utc()).await?)
    }

    /// A log line received now, expiring after `PU_UNIT_LOG_EXPIRATION`.
    pub fn new_unit_log(&self, unit_uuid: Uuid, level: LogLevel, text: String) -> NewUnitLog {
        let now = chrono::Utc::now().naive_utc();
        // the config caps the lifetime, so this cannot overflow
        let expiration = now + chrono::Duration::seconds(self.config.unit_log_expiration_secs);
        NewUnitLog {
            uuid: Uuid::now_v7(),
            unit_uuid,
            level,
            text,
            create_datetime: domain::format_time(now),
            expiration_datetime: domain::format_time(expiration),
        }
    }

    /// Stores a batch of log lines at once; returns how many were stored.
    pub async fn store_unit_logs(&self, logs: Vec<NewUnitLog>) -> AppResult<u64> {
        let write = LogWrite {
            lines: logs,
            ..Default::default()
        };
        Ok(self.store_keyed_unit_logs(&write, false).await?.stored)
    }

    /// Stores log lines, skipping those whose key is stored already: every known key in the
    /// embedded SQL store (its primary key); in ClickHouse the lines of `write.maybe_stored`
    /// (messages delivered again), every keyed line when `retry`, and keyed lines not newer
    /// than their unit's newest stored one (a device's own repeat), one lookup for them all.
    /// Live watchers of the units get the lines stored.
    pub async fn store_keyed_unit_logs(
        &self,
        write: &LogWrite,
        retry: bool,
    ) -> AppResult<LogsStored> {
        let keyed: Vec<Uuid>;
        let maybe = if retry {
            keyed = write
                .lines
                .iter()
                .map(|l| l.uuid)
                .filter(|u| u.get_version_num() == 8)
                .collect();
            &keyed[..]
        } else {
            &write.maybe_stored[..]
        };
        let stored = self.logs.insert_new(&write.lines, maybe).await?;
        if !write.pipe_rows.is_empty() {
            // a retry after a lost answer may store them twice: readers show one per key
            self.logs.insert_pipe_rows(&write.pipe_rows).await?;
        }
        let skipped = write.lines.len() as u64 - stored;
        let old: std::collections::HashSet<&Uuid> = if skipped > 0 {
            maybe.iter().collect()
        } else {
            Default::default()
        };
        self.live.publish_many(
            write.lines.iter().filter(|l| !old.contains(&l.uuid)),
            |l| l.unit_uuid,
            |l| super::live::LiveEvent::Log(std::sync::Arc::new(l.clone())),
        );
        Ok(LogsStored { stored, skipped })
    }

    /// Deletes every log of a unit (unit deletion, the `LogSync` command): readers stop
    /// seeing them when this returns. Returns how many were visible.
    pub async fn clear_unit_logs(&self, unit_uuid: Uuid) -> AppResult<u64> {
        Ok(self
            .logs
            .clear_unit(unit_uuid, chrono::Utc::now().naive_utc())
            .await?)
    }

    /// Frees the space of logs whose lifetime is over; returns how many lines were removed.
    pub async fn purge_expired_unit_logs(&self) -> AppResult<u64> {
        self.purge_expired_unit_logs_at(chrono::Utc::now().naive_utc())
            .await
    }

    /// [`Instance::purge_expired_unit_logs`] as of `now` (tests run the janitor as of a later
    /// day). ClickHouse drops whole partitions whose expiry day is over.
    pub async fn purge_expired_unit_logs_at(&self, now: NaiveDateTime) -> AppResult<u64> {
        Ok(self.logs.purge_expired(now).await?)
    }
}
