//! The telemetry store: where unit log lines (the `log` topic of devices) live.
//!
//! Two implementations, chosen once at start-up by `PU_CLICKHOUSE_URL`:
//! - [`sql`]: the embedded default, the `unit_logs` table of `PU_DATABASE_URL` (SQLite or
//!   PostgreSQL), SQL in `src/store/unit_logs.rs`;
//! - [`clickhouse`]: a ClickHouse server over HTTP (18.16 and current versions).
//!
//! Only the service layer (`src/service/unit_logs.rs`, `src/service/transfer/`) talks to it;
//! everything it takes and returns is plain data, so callers never know which store runs.
//! Invariants both keep: readers never return a line expired at `now` or cleared by
//! [`LogStore::clear_unit`]; lines of one unit are ordered by `(create_datetime, uuid)`, stable
//! across pages.

pub mod clickhouse;
pub mod sql;

use std::collections::HashSet;

use chrono::NaiveDateTime;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::datapipe::PipeRow;
use crate::domain::{LogLevel, Order};
use crate::store::load_hours;
use crate::store::pipe_data::{self, PipeQuery};
use crate::store::unit_logs::{NewUnitLog, UnitLog};
use crate::store::StoreResult;

/// One query of a unit's log lines. Timestamps are in [`crate::domain::format_time`]'s
/// format, naive UTC.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub unit_uuid: Uuid,
    /// Empty means every level.
    pub levels: Vec<LogLevel>,
    /// Lines created at or after this instant.
    pub since: Option<String>,
    /// Lines created at or before this instant.
    pub until: Option<String>,
    pub order: Order,
    pub offset: i64,
    /// 0 means no limit.
    pub limit: i64,
}

/// Where the lines after which an export page starts: `(create_datetime, uuid)` of the last
/// line of the previous page.
pub type LogCursor = (String, Uuid);

/// The log store of an instance. Cheap to clone.
#[derive(Clone)]
pub enum LogStore {
    Sql(sql::SqlLogs),
    /// Boxed: the client is a few hundred bytes, the SQL store a pool handle.
    ClickHouse(Box<clickhouse::ClickHouseLogs>),
}

impl LogStore {
    /// The store the configuration names; ClickHouse is prepared (database, tables) here and
    /// an unreachable server fails start-up.
    pub async fn open(config: &Config, db: &crate::store::Db) -> anyhow::Result<LogStore> {
        Ok(match &config.clickhouse {
            None => LogStore::Sql(sql::SqlLogs::new(db.pool.clone())),
            Some(ch) => LogStore::ClickHouse(Box::new(clickhouse::ClickHouseLogs::open(ch).await?)),
        })
    }

    /// Whether the lines live in the instance's own database (the `unit_logs` table), so that
    /// a writer can put them in the transaction of its other rows ([`sql::SqlLogs::insert_in`]).
    pub fn in_database(&self) -> bool {
        matches!(self, LogStore::Sql(_))
    }

    /// A short name for logs and benchmarks.
    pub fn kind(&self) -> &'static str {
        match self {
            LogStore::Sql(_) => "sql",
            LogStore::ClickHouse(_) => "clickhouse",
        }
    }

    /// Stores a batch (one transaction, or one ClickHouse INSERT); returns how many lines.
    pub async fn insert(&self, logs: &[NewUnitLog]) -> StoreResult<u64> {
        self.insert_new(logs, &[]).await
    }

    /// Stores the lines not stored yet; returns how many were stored. A line's uuid is its
    /// key: the SQL store skips every known one (primary key, `ON CONFLICT DO NOTHING`),
    /// ClickHouse (no unique keys) looks up those in `maybe_stored` and the keyed lines not
    /// newer than their unit's newest stored one first, and stores each key once per batch.
    pub async fn insert_new(&self, logs: &[NewUnitLog], maybe_stored: &[Uuid]) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => s.insert(logs).await,
            LogStore::ClickHouse(c) => c.insert_new(logs, maybe_stored).await,
        }
    }

    /// `(total, page)` of a unit's lines visible at `now`.
    pub async fn query(
        &self,
        q: &LogQuery,
        now: NaiveDateTime,
    ) -> StoreResult<(i64, Vec<UnitLog>)> {
        match self {
            LogStore::Sql(s) => s.query(q, now).await,
            LogStore::ClickHouse(c) => c.query(q, now).await,
        }
    }

    /// Up to `limit` lines of a unit visible at `now`, oldest first, strictly after `after`
    /// (keyset paging for export: no OFFSET, no sort of the remaining lines).
    pub async fn page_after(
        &self,
        unit_uuid: Uuid,
        after: Option<&LogCursor>,
        limit: i64,
        now: NaiveDateTime,
    ) -> StoreResult<Vec<UnitLog>> {
        match self {
            LogStore::Sql(s) => s.page_after(unit_uuid, after, limit, now).await,
            LogStore::ClickHouse(c) => c.page_after(unit_uuid, after, limit, now).await,
        }
    }

    /// Which of these line uuids are stored already (import remaps them).
    pub async fn taken_uuids(&self, uuids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
        match self {
            LogStore::Sql(s) => s.taken_uuids(uuids).await,
            LogStore::ClickHouse(c) => c.taken_uuids(uuids).await,
        }
    }

    /// Removes every line of a unit; readers stop seeing them when this returns. Returns how
    /// many lines were visible.
    pub async fn clear_unit(&self, unit_uuid: Uuid, now: NaiveDateTime) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => s.clear_unit(unit_uuid).await,
            LogStore::ClickHouse(c) => c.clear_unit(unit_uuid, now).await,
        }
    }

    /// Frees the space of lines expired at `now`; returns how many lines were removed. Never
    /// changes what readers see (they skip expired lines themselves).
    pub async fn purge_expired(&self, now: NaiveDateTime) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => s.purge_expired(now).await,
            LogStore::ClickHouse(c) => c.purge_expired(now).await,
        }
    }

    // Data pipe rows (issue 17): the instance database's tables (`store::pipe_data`), or
    // ClickHouse's. With the SQL store the MQTT core writes them in its batch transaction.

    /// Stores data pipe rows (ClickHouse: one INSERT per table).
    pub async fn insert_pipe_rows(&self, rows: &[PipeRow]) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => pipe_data::insert_batch(s.pool(), rows).await,
            LogStore::ClickHouse(c) => c.insert_pipe_rows(rows, None).await,
        }
    }

    /// `(total, page)` of one node's data pipe rows visible at `now`.
    pub async fn pipe_rows(
        &self,
        q: &PipeQuery,
        now: NaiveDateTime,
    ) -> StoreResult<(i64, Vec<PipeRow>)> {
        match self {
            LogStore::Sql(s) => pipe_data::list(s.pool(), q, now).await,
            LogStore::ClickHouse(c) => c.pipe_rows(q, now).await,
        }
    }

    /// Removes every data pipe row of these nodes; readers stop seeing them at once.
    pub async fn delete_pipe_nodes(&self, nodes: &[Uuid]) -> StoreResult<()> {
        match self {
            LogStore::Sql(s) => {
                let mut tx = s.pool().begin().await?;
                pipe_data::delete_nodes(&mut tx, nodes).await?;
                tx.commit().await?;
                Ok(())
            }
            LogStore::ClickHouse(c) => c.clear_pipe_nodes(nodes, clickhouse_now()).await,
        }
    }

    /// Replaces a node's data pipe rows, all or nothing (CSV import).
    pub async fn replace_pipe_node(&self, node: Uuid, rows: &[PipeRow]) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => {
                let mut tx = s.pool().begin().await?;
                pipe_data::delete_nodes(&mut tx, &[node]).await?;
                let stored = pipe_data::insert_rows(&mut tx, rows).await?;
                pipe_data::trim_n_records_nodes(&mut tx, &pipe_data::n_records_nodes(rows)).await?;
                tx.commit().await?;
                Ok(stored)
            }
            LogStore::ClickHouse(c) => c.replace_pipe_node(node, rows).await,
        }
    }

    /// Frees the space of expired TimeWindow rows (and, in ClickHouse, trims NRecords).
    /// Adds Units' messages to their hours (the hourly load history).
    pub async fn add_load_hours(&self, rows: &[load_hours::LoadHour]) -> StoreResult<()> {
        match self {
            LogStore::Sql(s) => load_hours::add(s.pool(), rows).await,
            LogStore::ClickHouse(c) => c.add_load_hours(rows).await,
        }
    }

    /// A Unit's hours in `[from, to)`, oldest first.
    pub async fn load_hours(
        &self,
        unit: Uuid,
        from: NaiveDateTime,
        to: NaiveDateTime,
    ) -> StoreResult<Vec<load_hours::LoadHour>> {
        match self {
            LogStore::Sql(s) => load_hours::of_unit(s.pool(), unit, from, to).await,
            LogStore::ClickHouse(c) => c.load_hours(unit, from, to).await,
        }
    }

    pub async fn purge_expired_pipe_rows(&self, now: NaiveDateTime) -> StoreResult<u64> {
        match self {
            LogStore::Sql(s) => pipe_data::delete_expired(s.pool(), now).await,
            LogStore::ClickHouse(c) => c.purge_expired_pipe_rows(now).await,
        }
    }
}

/// Microseconds since the epoch, now (a clear's watermark).
fn clickhouse_now() -> u64 {
    chrono::Utc::now().timestamp_micros().max(0) as u64
}
