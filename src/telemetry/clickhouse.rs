//! The ClickHouse log store, over HTTP with the `clickhouse` crate. Written for ClickHouse 18.16
//! (the version tests run) and current servers alike:
//!
//! - `unit_logs`: MergeTree, `PARTITION BY toYYYYMMDD(expiration_datetime)` (one partition per
//!   expiry day), `ORDER BY (unit_uuid, create_datetime, create_micros, uuid)`. 18.16 has no
//!   DateTime64, so each timestamp is a `DateTime('UTC')` plus a `UInt32` of microseconds: the
//!   wire keeps its microsecond format and ordering is total. `level` is an `Enum8`.
//! - Expiry: readers always filter `expiration > now`. Servers with TTL (19.6+, found with
//!   `SELECT version()` at start) also get a native `TTL expiration_datetime` at CREATE. On
//!   every server [`ClickHouseLogs::purge_expired`] (the poller's log purge tick) drops whole
//!   partitions whose expiry day is over.
//! - Clearing a unit (LogSync, unit deletion) is a mutation (`ALTER TABLE ... DELETE`), which
//!   18.16 runs asynchronously. So that readers never see cleared lines, every row carries
//!   `inserted_us` (when this backend wrote it, microseconds since the epoch), the clear first
//!   records a watermark in `unit_log_clears` (unit, instant of the clear) and readers hide the
//!   unit's rows inserted at or before its latest watermark. Insertion time, not
//!   `create_datetime`: after LogSync a device sends its stored lines again with their old
//!   timestamps, and those must show. The watermark lives in ClickHouse next to the rows it
//!   hides, so it holds across restarts; backends sharing one ClickHouse must keep their clocks
//!   in sync. Watermark rows are a few bytes per clear and are never removed.
//! - No unique key: a keyed line (its uuid from the device's time) that may be stored already
//!   is looked up before the INSERT ([`ClickHouseLogs::insert_new`]); what is newer than its
//!   unit's newest stored line is not, which is every line of a device sending in order.
//! - The client runs with validation off: 18.16 knows neither `RowBinaryWithNamesAndTypes` nor
//!   the settings validation asks for. Values go into queries with the client-side `.bind()`
//!   (server-side `.param()` does not work on 18.16).

mod load;
mod pipes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{LogCursor, LogQuery};
use crate::config::ClickHouseConfig;
use crate::domain::{format_time, parse_time, LogLevel, Order};
use crate::store::unit_logs::{NewUnitLog, UnitLog};
use crate::store::{StoreError, StoreResult};

/// The first version with `TTL` clauses on MergeTree tables.
const TTL_SINCE: (u32, u32) = (19, 6);
/// Largest second a `DateTime` holds (2106-02-07); later expiries are stored as this.
const MAX_DATETIME: i64 = u32::MAX as i64;

const COLUMNS: &str = "uuid, unit_uuid, level, text, create_datetime, create_micros, expiration_datetime, expiration_micros, inserted_us";

/// One line as ClickHouse's RowBinary carries it.
#[derive(Row, Serialize, Deserialize)]
struct LogRow {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    unit_uuid: Uuid,
    /// `Enum8` value: position in [`LogLevel::ALL`] + 1.
    level: i8,
    text: String,
    create_datetime: u32,
    create_micros: u32,
    expiration_datetime: u32,
    expiration_micros: u32,
    /// When the backend wrote the row, microseconds since the epoch (clear watermarks).
    inserted_us: u64,
}

#[derive(Clone)]
pub struct ClickHouseLogs {
    /// Bound to the configured database.
    client: Client,
    database: String,
    /// Per unit, the newest device time (microseconds since the epoch) of a keyed line known
    /// to be stored: what is not newer may be a repeat ([`ClickHouseLogs::insert_new`]).
    newest: Arc<Mutex<HashMap<Uuid, u64>>>,
    /// `SELECT version()` at start.
    pub version: String,
    /// Whether the table was created with a native TTL by this start.
    pub native_ttl: bool,
}

fn ch_err(e: clickhouse::error::Error) -> StoreError {
    StoreError::Telemetry(e.to_string())
}

fn level_code(l: LogLevel) -> i8 {
    LogLevel::ALL.iter().position(|x| *x == l).unwrap_or(0) as i8 + 1
}

fn level_of(code: i8) -> StoreResult<LogLevel> {
    usize::try_from(code - 1)
        .ok()
        .and_then(|i| LogLevel::ALL.get(i).copied())
        .ok_or_else(|| StoreError::Telemetry(format!("unknown level code {code}")))
}

/// `(seconds, microseconds)` of a naive UTC instant, clamped to what `DateTime` holds.
fn split(t: NaiveDateTime) -> (u32, u32) {
    let secs = t.and_utc().timestamp();
    if secs < 0 {
        return (0, 0);
    }
    if secs > MAX_DATETIME {
        return (u32::MAX, 999_999);
    }
    (secs as u32, t.and_utc().timestamp_subsec_micros())
}

fn split_text(s: &str) -> StoreResult<(u32, u32)> {
    parse_time(s)
        .map(split)
        .ok_or_else(|| StoreError::Telemetry(format!("bad timestamp {s:?}")))
}

fn join(secs: u32, micros: u32) -> String {
    let t = DateTime::from_timestamp(secs as i64, micros.min(999_999) * 1000)
        .unwrap_or_default()
        .naive_utc();
    format_time(t)
}

/// Whether a line's uuid is a key from its device time (UUIDv8, `ReportedLog::key`).
fn is_key(uuid: Uuid) -> bool {
    uuid.get_version_num() == 8
}

/// A stored timestamp as microseconds since the epoch.
fn micros_of(s: &str) -> StoreResult<u64> {
    let (secs, micros) = split_text(s)?;
    Ok(secs as u64 * 1_000_000 + micros as u64)
}

/// Microseconds since the epoch, this process's clock.
fn micros_now() -> u64 {
    chrono::Utc::now().timestamp_micros().max(0) as u64
}

/// `(major, minor)` of a `version()` answer such as `18.16.1` or `24.8.4.13`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The DDL of the log table; `ttl` adds the native TTL clause.
fn create_logs(db: &str, ttl: bool) -> String {
    let levels: Vec<String> = LogLevel::ALL
        .iter()
        .map(|l| format!("'{}' = {}", l.as_str(), level_code(*l)))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.unit_logs (\
         uuid UUID, unit_uuid UUID, level Enum8({}), text String, \
         create_datetime DateTime('UTC'), create_micros UInt32, \
         expiration_datetime DateTime('UTC'), expiration_micros UInt32, inserted_us UInt64) \
         ENGINE = MergeTree PARTITION BY toYYYYMMDD(expiration_datetime) \
         ORDER BY (unit_uuid, create_datetime, create_micros, uuid){}",
        levels.join(", "),
        if ttl { " TTL expiration_datetime" } else { "" }
    )
}

fn create_clears(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.unit_log_clears (\
         unit_uuid UUID, cleared_us UInt64) \
         ENGINE = MergeTree ORDER BY unit_uuid"
    )
}

/// A `WHERE` clause under construction with its client-side bound values.
struct Filter {
    text: String,
    binds: Vec<Bound>,
}

enum Bound {
    Text(String),
    Num(u64),
}

impl Filter {
    fn new() -> Filter {
        Filter {
            text: String::new(),
            binds: Vec::new(),
        }
    }
    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    fn text(&mut self, v: impl Into<String>) -> &mut Self {
        self.text.push('?');
        self.binds.push(Bound::Text(v.into()));
        self
    }
    fn num(&mut self, v: u64) -> &mut Self {
        self.text.push('?');
        self.binds.push(Bound::Num(v));
        self
    }
    /// `(create_datetime, create_micros) <op> (instant)`.
    fn created(&mut self, op: &str, (s, us): (u32, u32)) -> &mut Self {
        self.push(" AND (create_datetime, create_micros) ")
            .push(op)
            .push(" (toDateTime(")
            .num(s as u64)
            .push("), ")
            .num(us as u64)
            .push(")")
    }
    fn query(&self, client: &Client, head: &str, tail: &str) -> clickhouse::query::Query {
        let mut q = client.query(&format!("{head}{}{tail}", self.text));
        for b in &self.binds {
            q = match b {
                Bound::Text(s) => q.bind(s.as_str()),
                Bound::Num(n) => q.bind(*n),
            };
        }
        q
    }
}

impl ClickHouseLogs {
    /// Connects, reads the version, creates the database and tables when missing.
    pub async fn open(cfg: &ClickHouseConfig) -> anyhow::Result<ClickHouseLogs> {
        let mut base = Client::default().with_url(&cfg.url).with_validation(false);
        if let Some(u) = &cfg.user {
            base = base.with_user(u);
        }
        if let Some(p) = &cfg.password {
            base = base.with_password(p);
        }
        let version: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "PU_CLICKHOUSE_URL: cannot reach ClickHouse at {} ({e})",
                    cfg.url
                )
            })?;
        let native_ttl = parse_version(&version).is_some_and(|v| v >= TTL_SINCE);
        let db = &cfg.database;
        let tables = [
            format!("CREATE DATABASE IF NOT EXISTS {db}"),
            create_logs(db, native_ttl),
            create_clears(db),
        ];
        for ddl in tables
            .into_iter()
            .chain(pipes::ddl(db, native_ttl))
            .chain(load::ddl(db))
        {
            base.query(&ddl).execute().await.map_err(|e| {
                anyhow::anyhow!("ClickHouse {} (PU_CLICKHOUSE_DATABASE={db}): {e}", cfg.url)
            })?;
        }
        tracing::info!(version = %version, database = %db, native_ttl, "ClickHouse log store ready");
        Ok(ClickHouseLogs {
            client: base.with_database(db),
            database: db.clone(),
            newest: Arc::default(),
            version,
            native_ttl,
        })
    }

    /// Stores `logs` except the lines stored already, each key once. ClickHouse has no unique
    /// key, so keyed lines (a UUIDv8 from the device's time, `ReportedLog::key`) that may be
    /// stored are looked up first: those of `maybe_stored` (a message the broker delivered
    /// again, or a retried batch), and those not newer than the newest keyed line stored for
    /// their unit. A device sends its lines in time order, so a line that is not newer is a
    /// repeat (a device that sends a message again after a lost connection: the broker passes
    /// it on as a new message, without DUP) or comes from a clock that went back; either is
    /// looked up, nothing else is. The newest time of a unit is read from ClickHouse when this
    /// process first sees the unit (its lines of the hour before), then kept by each insert.
    /// Lines hidden by a clear (LogSync) do not count as stored: a device sends them again.
    pub async fn insert_new(&self, logs: &[NewUnitLog], maybe_stored: &[Uuid]) -> StoreResult<u64> {
        let mut keyed: Vec<(&NewUnitLog, u64)> = Vec::new();
        for l in logs.iter().filter(|l| is_key(l.uuid)) {
            keyed.push((l, micros_of(&l.create_datetime)?));
        }
        if keyed.is_empty() && maybe_stored.is_empty() {
            return self.insert(logs).await;
        }
        self.learn_newest(&keyed).await?;
        let maybe: HashSet<Uuid> = maybe_stored.iter().copied().collect();
        let candidates: Vec<&NewUnitLog> = {
            let newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            let not_newer =
                |l: &NewUnitLog, t: u64| newest.get(&l.unit_uuid).is_some_and(|n| t <= *n);
            logs.iter()
                .filter(|l| maybe.contains(&l.uuid))
                .chain(
                    keyed
                        .iter()
                        .filter(|(l, t)| !maybe.contains(&l.uuid) && not_newer(l, *t))
                        .map(|(l, _)| *l),
                )
                .collect()
        };
        // `seen` starts with what is stored; a key enters it once, so a batch holding a line
        // twice (a message and its repeat) stores it once
        let mut seen = if candidates.is_empty() {
            HashSet::new()
        } else {
            self.stored_keys(&candidates).await?
        };
        let fresh: Vec<NewUnitLog> = logs
            .iter()
            .filter(|l| !(is_key(l.uuid) || maybe.contains(&l.uuid)) || seen.insert(l.uuid))
            .cloned()
            .collect();
        let stored = self.insert(&fresh).await?;
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        for (l, t) in &keyed {
            let n = newest.entry(l.unit_uuid).or_insert(0);
            *n = (*n).max(*t);
        }
        Ok(stored)
    }

    /// Reads the newest stored device time of the units of `keyed` this process has not seen
    /// yet (keyed lines of the hour before the batch's oldest; 0 when there are none).
    async fn learn_newest(&self, keyed: &[(&NewUnitLog, u64)]) -> StoreResult<()> {
        let unseen: Vec<Uuid> = {
            let newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            let mut u: Vec<Uuid> = keyed
                .iter()
                .map(|(l, _)| l.unit_uuid)
                .filter(|u| !newest.contains_key(u))
                .collect();
            u.sort_unstable();
            u.dedup();
            u
        };
        if unseen.is_empty() {
            return Ok(());
        }
        let oldest = keyed.iter().map(|(_, t)| *t).min().unwrap_or(0);
        let from = (oldest / 1_000_000).saturating_sub(3600);
        let mut found = HashMap::new();
        for chunk in unseen.chunks(2_000) {
            let units: Vec<String> = chunk.iter().map(|u| format!("'{u}'")).collect();
            let rows: Vec<(String, u64)> = self
                .client
                .query(&format!(
                    "SELECT toString(unit_uuid), max(toUInt64(create_datetime) * 1000000 + create_micros) \
                     FROM unit_logs WHERE unit_uuid IN (SELECT toUUID(arrayJoin([{}]))) \
                     AND create_datetime >= {from} AND substring(toString(uuid), 15, 1) = '8' \
                     GROUP BY unit_uuid",
                    units.join(", ")
                ))
                .fetch_all()
                .await
                .map_err(ch_err)?;
            for (u, t) in rows {
                if let Ok(u) = u.parse::<Uuid>() {
                    found.insert(u, t);
                }
            }
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        for u in unseen {
            let t = found.get(&u).copied().unwrap_or(0);
            let n = newest.entry(u).or_insert(0);
            *n = (*n).max(t);
        }
        Ok(())
    }

    /// Which of these lines' uuids are stored and not hidden by a clear: the primary key
    /// (unit, time) narrows the lookup to the lines' units and seconds.
    async fn stored_keys(&self, lines: &[&NewUnitLog]) -> StoreResult<HashSet<Uuid>> {
        let mut out = HashSet::new();
        // 2,000 lines: their uuids and units stay under 18.16's 256 KiB max_query_size
        for chunk in lines.chunks(2_000) {
            let mut units: Vec<String> =
                chunk.iter().map(|l| format!("'{}'", l.unit_uuid)).collect();
            units.sort();
            units.dedup();
            let mut from = u32::MAX;
            let mut to = 0;
            for l in chunk {
                let (secs, _) = split_text(&l.create_datetime)?;
                from = from.min(secs);
                to = to.max(secs);
            }
            let uuids: Vec<String> = chunk.iter().map(|l| format!("'{}'", l.uuid)).collect();
            let units = units.join(", ");
            let rows: Vec<(String, String, u64)> = self
                .client
                .query(&format!(
                    "SELECT toString(uuid), toString(unit_uuid), max(inserted_us) FROM unit_logs \
                     WHERE unit_uuid IN (SELECT toUUID(arrayJoin([{units}]))) \
                     AND create_datetime BETWEEN {from} AND {to} \
                     AND uuid IN (SELECT toUUID(arrayJoin([{}]))) \
                     GROUP BY uuid, unit_uuid",
                    uuids.join(", ")
                ))
                .fetch_all()
                .await
                .map_err(ch_err)?;
            if rows.is_empty() {
                continue;
            }
            let clears: HashMap<String, u64> = self
                .client
                .query(&format!(
                    "SELECT toString(unit_uuid), max(cleared_us) FROM unit_log_clears \
                     WHERE unit_uuid IN (SELECT toUUID(arrayJoin([{units}]))) GROUP BY unit_uuid"
                ))
                .fetch_all::<(String, u64)>()
                .await
                .map_err(ch_err)?
                .into_iter()
                .collect();
            out.extend(
                rows.iter()
                    .filter(|(_, unit, inserted)| clears.get(unit).is_none_or(|w| inserted > w))
                    .filter_map(|(uuid, _, _)| uuid.parse::<Uuid>().ok()),
            );
        }
        Ok(out)
    }

    /// One INSERT (RowBinary, lz4) for the whole batch. A failed INSERT stores nothing of the
    /// batch when it has fewer rows than the server's `max_insert_block_size` (1M), which
    /// ingest batches always have; the caller may retry it.
    pub async fn insert(&self, logs: &[NewUnitLog]) -> StoreResult<u64> {
        if logs.is_empty() {
            return Ok(0);
        }
        let inserted_us = micros_now();
        let mut insert = self
            .client
            .insert::<LogRow>("unit_logs")
            .await
            .map_err(ch_err)?;
        for l in logs {
            let (cs, cu) = split_text(&l.create_datetime)?;
            let (es, eu) = split_text(&l.expiration_datetime)?;
            let row = LogRow {
                uuid: l.uuid,
                unit_uuid: l.unit_uuid,
                level: level_code(l.level),
                text: l.text.clone(),
                create_datetime: cs,
                create_micros: cu,
                expiration_datetime: es,
                expiration_micros: eu,
                inserted_us,
            };
            insert.write(&row).await.map_err(ch_err)?;
        }
        insert.end().await.map_err(ch_err)?;
        Ok(logs.len() as u64)
    }

    /// `unit_uuid = ... AND` visible at `now` (not expired, not cleared). The clear watermark
    /// is a scalar subquery (`max` of no rows is 0), so a read is one round trip.
    fn visible(unit_uuid: Uuid, now: NaiveDateTime) -> Filter {
        let (ns, nu) = split(now);
        let mut f = Filter::new();
        f.push(" WHERE unit_uuid = toUUID(")
            .text(unit_uuid.to_string())
            // the plain comparison lets ClickHouse skip whole expired partitions
            .push(") AND expiration_datetime >= toDateTime(")
            .num(ns as u64)
            .push(") AND (expiration_datetime, expiration_micros) > (toDateTime(")
            .num(ns as u64)
            .push("), ")
            .num(nu as u64)
            .push(")")
            .push(" AND inserted_us > (SELECT max(cleared_us) FROM unit_log_clears")
            .push(" WHERE unit_uuid = toUUID(")
            .text(unit_uuid.to_string())
            .push("))");
        f
    }

    fn to_log(r: LogRow) -> StoreResult<UnitLog> {
        Ok(UnitLog {
            uuid: r.uuid,
            level: level_of(r.level)?,
            unit_uuid: r.unit_uuid,
            text: r.text,
            create_datetime: join(r.create_datetime, r.create_micros),
            expiration_datetime: join(r.expiration_datetime, r.expiration_micros),
        })
    }

    async fn fetch(&self, f: &Filter, tail: &str) -> StoreResult<Vec<UnitLog>> {
        let head = format!("SELECT {COLUMNS} FROM unit_logs");
        let rows: Vec<LogRow> = f
            .query(&self.client, &head, tail)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        rows.into_iter().map(Self::to_log).collect()
    }

    pub async fn query(
        &self,
        q: &LogQuery,
        now: NaiveDateTime,
    ) -> StoreResult<(i64, Vec<UnitLog>)> {
        let mut f = Self::visible(q.unit_uuid, now);
        if !q.levels.is_empty() {
            // names of our own enum, never user text
            let names: Vec<String> = q.levels.iter().map(|l| format!("'{l}'")).collect();
            f.push(" AND level IN (").push(&names.join(", ")).push(")");
        }
        if let Some(t) = &q.since {
            f.created(">=", split_text(t)?);
        }
        if let Some(t) = &q.until {
            f.created("<=", split_text(t)?);
        }
        let o = match q.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let mut tail = format!(" ORDER BY create_datetime {o}, create_micros {o}, uuid {o}");
        let (offset, limit) = (q.offset.max(0) as u64, q.limit.max(0) as u64);
        if limit > 0 || offset > 0 {
            let limit = if limit > 0 { limit } else { u64::MAX };
            tail.push_str(&format!(" LIMIT {offset}, {limit}"));
        }
        // the count and the page together: two queries at once, not one after the other
        let count = async {
            f.query(&self.client, "SELECT count() FROM unit_logs", "")
                .fetch_one::<u64>()
                .await
                .map_err(ch_err)
        };
        let (total, page) = tokio::try_join!(count, self.fetch(&f, &tail))?;
        Ok((total as i64, page))
    }

    pub async fn page_after(
        &self,
        unit_uuid: Uuid,
        after: Option<&LogCursor>,
        limit: i64,
        now: NaiveDateTime,
    ) -> StoreResult<Vec<UnitLog>> {
        let mut f = Self::visible(unit_uuid, now);
        if let Some((t, id)) = after {
            let (s, us) = split_text(t)?;
            f.push(" AND (create_datetime, create_micros, uuid) > (toDateTime(")
                .num(s as u64)
                .push("), ")
                .num(us as u64)
                .push(", toUUID(")
                .text(id.to_string())
                .push("))");
        }
        let tail = format!(
            " ORDER BY create_datetime, create_micros, uuid LIMIT {}",
            limit.max(1)
        );
        self.fetch(&f, &tail).await
    }

    /// A scan of the `uuid` column (not the sort key): only import calls it, once per chunk
    /// of lines.
    pub async fn taken_uuids(&self, uuids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
        let mut out = HashSet::new();
        // 4,000 quoted uuids stay under 18.16's 256 KiB max_query_size
        for chunk in uuids.chunks(4_000) {
            let list: Vec<String> = chunk.iter().map(|u| format!("'{u}'")).collect();
            let rows: Vec<String> = self
                .client
                .query(&format!(
                    "SELECT DISTINCT toString(uuid) FROM unit_logs WHERE uuid IN (SELECT toUUID(arrayJoin([{}])))",
                    list.join(", ")
                ))
                .fetch_all()
                .await
                .map_err(ch_err)?;
            for r in rows {
                if let Ok(u) = r.parse() {
                    out.insert(u);
                }
            }
        }
        Ok(out)
    }

    /// Records the watermark (readers hide the lines at once), then starts the mutation that
    /// frees their space. Returns how many lines were visible.
    pub async fn clear_unit(&self, unit_uuid: Uuid, now: NaiveDateTime) -> StoreResult<u64> {
        let f = Self::visible(unit_uuid, now);
        let visible: u64 = f
            .query(&self.client, "SELECT count() FROM unit_logs", "")
            .fetch_one()
            .await
            .map_err(ch_err)?;
        // rows written up to this instant are hidden; `now` is only for the count above
        let watermark = micros_now();
        self.client
            .query("INSERT INTO unit_log_clears VALUES (toUUID(?), ?)")
            .bind(unit_uuid.to_string())
            .bind(watermark)
            .execute()
            .await
            .map_err(ch_err)?;
        // only what the watermark hides: lines stored meanwhile (a LogSync answer) stay
        self.client
            .query("ALTER TABLE unit_logs DELETE WHERE unit_uuid = toUUID(?) AND inserted_us <= ?")
            .bind(unit_uuid.to_string())
            .bind(watermark)
            .execute()
            .await
            .map_err(ch_err)?;
        Ok(visible)
    }

    /// The janitor: drops every partition whose expiry day ended before `now`'s day began
    /// (all its lines expired). Returns how many lines the dropped partitions held. Lines
    /// expiring later today stay until tomorrow's first run (readers skip them meanwhile).
    pub async fn purge_expired(&self, now: NaiveDateTime) -> StoreResult<u64> {
        self.drop_expired_partitions("unit_logs", now).await
    }

    /// Drops the partitions of `table` (partitioned by `toYYYYMMDD` of an expiry) whose day
    /// ended before `now`'s day began; returns how many rows they held.
    async fn drop_expired_partitions(&self, table: &str, now: NaiveDateTime) -> StoreResult<u64> {
        let today: u32 = now.format("%Y%m%d").to_string().parse().unwrap_or(u32::MAX);
        let parts: Vec<(String, u64)> = self
            .client
            .query(
                "SELECT partition, sum(rows) FROM system.parts \
                 WHERE database = ? AND table = ? AND active GROUP BY partition",
            )
            .bind(self.database.as_str())
            .bind(table)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let mut dropped = 0;
        for (partition, rows) in parts {
            // the partition key is toYYYYMMDD: digits only, so safe to splice
            let Ok(day) = partition.trim_matches('\'').parse::<u32>() else {
                continue;
            };
            if day >= today {
                continue;
            }
            self.client
                .query(&format!("ALTER TABLE {table} DROP PARTITION {day}"))
                .execute()
                .await
                .map_err(ch_err)?;
            dropped += rows;
        }
        Ok(dropped)
    }
}

impl ClickHouseLogs {
    /// Drops the whole database (`pepeunit load logs` cleans up after itself with it).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.client
            .query(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .execute()
            .await
            .map_err(ch_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_timestamps() {
        assert_eq!(parse_version("18.16.1"), Some((18, 16)));
        assert!(parse_version("19.6.2.11").unwrap() >= TTL_SINCE);
        assert!(parse_version("24.8.4.13").unwrap() >= TTL_SINCE);
        assert!(parse_version("19.5.1").unwrap() < TTL_SINCE);
        let t = "2026-11-28T12:00:00.123456";
        let (s, us) = split_text(t).unwrap();
        assert_eq!(join(s, us), t);
        for l in LogLevel::ALL {
            assert_eq!(level_of(level_code(*l)).unwrap(), *l);
        }
        assert!(create_logs("pepeunit", true).ends_with("TTL expiration_datetime"));
    }
}
