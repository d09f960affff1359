//! Unit logs: what devices report on their `log` topic, kept `PU_UNIT_LOG_EXPIRATION` seconds.
//!
//! The one interface to log storage for every front door: MQTT ingest writes through
//! [`Instance::store_unit_logs`], REST reads through [`Instance::unit_log_list`]. Signatures
//! carry only plain data, so the store behind them can change (ClickHouse) without callers
//! noticing.

use uuid::Uuid;

use super::{check_page, Agent, Instance};
use crate::domain::{self, LogLevel, Order};
use crate::error::AppResult;
use crate::store::unit_logs::{NewUnitLog, UnitLog};
use crate::store::{self};

/// The query of `GET /units/log_list/`.
#[derive(Clone, Debug)]
pub struct UnitLogFilter {
    /// The unit whose logs are listed.
    pub uuid: Uuid,
    /// Empty means every level.
    pub level: Vec<LogLevel>,
    /// Default `desc`: newest first.
    pub order_by_create_date: Option<Order>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

impl Instance {
    /// A unit's unexpired logs, for its creator or the unit itself: `(total, page)`.
    pub async fn unit_log_list(
        &self,
        agent: &Agent,
        filter: UnitLogFilter,
    ) -> AppResult<(i64, Vec<UnitLog>)> {
        let (offset, limit) = check_page(filter.offset, filter.limit, None)?;
        let unit = self.unit_for_creator_or_self(agent, filter.uuid).await?;
        store::unit_logs::list(
            self.pool(),
            unit.uuid,
            &filter.level,
            filter.order_by_create_date.unwrap_or(Order::Desc),
            offset,
            limit,
            &domain::now(),
        )
        .await
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

    /// Stores a batch of log lines at once (one transaction); returns how many were stored.
    pub async fn store_unit_logs(&self, logs: Vec<NewUnitLog>) -> AppResult<u64> {
        store::unit_logs::insert_batch(self.pool(), &logs).await
    }

    /// Deletes every log of a unit (unit deletion, the `LogSync` command); returns how many.
    pub async fn clear_unit_logs(&self, unit_uuid: Uuid) -> AppResult<u64> {
        store::unit_logs::delete_for_unit(self.pool(), unit_uuid).await
    }

    /// Deletes the logs whose lifetime is over; returns how many.
    pub async fn purge_expired_unit_logs(&self) -> AppResult<u64> {
        store::unit_logs::delete_expired(self.pool(), &domain::now()).await
    }
}
