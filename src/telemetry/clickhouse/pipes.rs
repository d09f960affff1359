//! Data pipe rows in ClickHouse (issue 17), next to the unit logs and on the same rules: 18.16
//! and current servers, no DateTime64 (timestamps are microseconds since the epoch in `UInt64`
//! columns; the TimeWindow expiry also as a `DateTime` for partitions and TTL), no unique keys
//! (readers keep one row per key with `LIMIT 1 BY`, so a retried INSERT whose answer was lost
//! shows once), clears hidden at once by a per-node watermark (`pipe_clears`, as
//! `unit_log_clears`) while a mutation frees the space. NRecords readers take the newest
//! `keep_last` rows; the janitor trims nodes far past the largest count (1,024).

use chrono::{DateTime, NaiveDateTime};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ch_err, micros_now, ClickHouseLogs};
use crate::domain::datapipe::{
    AggregationEntry, AggregationFunction, NRecordsEntry, PipeRow, ProcessingPolicyType,
    TypeInputValue, WindowEntry,
};
use crate::domain::Order;
use crate::store::pipe_data::PipeQuery;
use crate::store::{StoreError, StoreResult};

/// The most NRecords rows a node keeps (upstream's `n_records_count` bound).
const MAX_N_RECORDS: u64 = 1024;

/// The tables (`db` checked by config: identifier characters only).
pub(super) fn ddl(db: &str, ttl: bool) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.pipe_n_records (\
             unit_node_uuid UUID, create_us UInt64, state String, \
             state_type Enum8('Number' = 1, 'Text' = 2), max_count UInt32, size UInt32, \
             inserted_us UInt64) ENGINE = MergeTree ORDER BY (unit_node_uuid, create_us)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.pipe_window_entries (\
             unit_node_uuid UUID, create_us UInt64, state String, \
             state_type Enum8('Number' = 1, 'Text' = 2), \
             expiration_datetime DateTime('UTC'), expiration_us UInt64, size UInt32, \
             inserted_us UInt64) ENGINE = MergeTree \
             PARTITION BY toYYYYMMDD(expiration_datetime) ORDER BY (unit_node_uuid, create_us){}",
            if ttl { " TTL expiration_datetime" } else { "" }
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.pipe_aggregations (\
             unit_node_uuid UUID, \
             aggregation_type Enum8('Avg' = 1, 'Min' = 2, 'Max' = 3, 'Sum' = 4), \
             time_window_size UInt32, start_us UInt64, end_us UInt64, create_us UInt64, \
             state Float64, inserted_us UInt64) ENGINE = MergeTree \
             ORDER BY (unit_node_uuid, create_us, aggregation_type, time_window_size, start_us)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.pipe_clears (unit_node_uuid UUID, cleared_us UInt64) \
             ENGINE = MergeTree ORDER BY unit_node_uuid"
        ),
    ]
}

#[derive(Row, Serialize, Deserialize)]
struct NRecordsRow {
    #[serde(with = "clickhouse::serde::uuid")]
    unit_node_uuid: Uuid,
    create_us: u64,
    state: String,
    state_type: i8,
    max_count: u32,
    size: u32,
    inserted_us: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct WindowRow {
    #[serde(with = "clickhouse::serde::uuid")]
    unit_node_uuid: Uuid,
    create_us: u64,
    state: String,
    state_type: i8,
    expiration_datetime: u32,
    expiration_us: u64,
    size: u32,
    inserted_us: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct AggregationRow {
    #[serde(with = "clickhouse::serde::uuid")]
    unit_node_uuid: Uuid,
    aggregation_type: i8,
    time_window_size: u32,
    start_us: u64,
    end_us: u64,
    create_us: u64,
    state: f64,
    inserted_us: u64,
}

fn us(t: NaiveDateTime) -> u64 {
    t.and_utc().timestamp_micros().max(0) as u64
}

fn time(us: u64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(us.min(i64::MAX as u64) as i64)
        .unwrap_or_default()
        .naive_utc()
}

fn type_code(t: TypeInputValue) -> i8 {
    match t {
        TypeInputValue::Number => 1,
        TypeInputValue::Text => 2,
    }
}

fn type_of(code: i8) -> StoreResult<TypeInputValue> {
    match code {
        1 => Ok(TypeInputValue::Number),
        2 => Ok(TypeInputValue::Text),
        _ => Err(StoreError::Telemetry(format!("unknown state_type {code}"))),
    }
}

fn function_code(f: AggregationFunction) -> i8 {
    AggregationFunction::ALL
        .iter()
        .position(|x| *x == f)
        .unwrap_or(0) as i8
        + 1
}

fn function_of(code: i8) -> StoreResult<AggregationFunction> {
    usize::try_from(code - 1)
        .ok()
        .and_then(|i| AggregationFunction::ALL.get(i).copied())
        .ok_or_else(|| StoreError::Telemetry(format!("unknown aggregation_type {code}")))
}

/// `unit_node_uuid = ... AND` not hidden by a clear of the node.
fn visible(node: Uuid) -> String {
    format!(
        " WHERE unit_node_uuid = toUUID('{node}') AND inserted_us > \
         (SELECT max(cleared_us) FROM pipe_clears WHERE unit_node_uuid = toUUID('{node}'))"
    )
}

impl ClickHouseLogs {
    /// Stores rows (any mix of nodes and policies), one INSERT per table; `inserted_us` is the
    /// given instant or now.
    pub async fn insert_pipe_rows(&self, rows: &[PipeRow], at: Option<u64>) -> StoreResult<u64> {
        let inserted_us = at.unwrap_or_else(micros_now);
        let n = |p: ProcessingPolicyType| rows.iter().filter(|r| r.policy() == p).count();
        if n(ProcessingPolicyType::NRecords) > 0 {
            let mut insert = self
                .client
                .insert::<NRecordsRow>("pipe_n_records")
                .await
                .map_err(ch_err)?;
            for r in rows {
                if let PipeRow::NRecords(r) = r {
                    let row = NRecordsRow {
                        unit_node_uuid: r.unit_node_uuid,
                        create_us: us(r.create_datetime),
                        state: r.state.clone(),
                        state_type: type_code(r.state_type),
                        max_count: r.max_count,
                        size: r.size,
                        inserted_us,
                    };
                    insert.write(&row).await.map_err(ch_err)?;
                }
            }
            insert.end().await.map_err(ch_err)?;
        }
        if n(ProcessingPolicyType::TimeWindow) > 0 {
            let mut insert = self
                .client
                .insert::<WindowRow>("pipe_window_entries")
                .await
                .map_err(ch_err)?;
            for r in rows {
                if let PipeRow::Window(r) = r {
                    let (expiry, _) = super::split(r.expiration_datetime);
                    let row = WindowRow {
                        unit_node_uuid: r.unit_node_uuid,
                        create_us: us(r.create_datetime),
                        state: r.state.clone(),
                        state_type: type_code(r.state_type),
                        expiration_datetime: expiry,
                        expiration_us: us(r.expiration_datetime),
                        size: r.size,
                        inserted_us,
                    };
                    insert.write(&row).await.map_err(ch_err)?;
                }
            }
            insert.end().await.map_err(ch_err)?;
        }
        if n(ProcessingPolicyType::Aggregation) > 0 {
            let mut insert = self
                .client
                .insert::<AggregationRow>("pipe_aggregations")
                .await
                .map_err(ch_err)?;
            for r in rows {
                if let PipeRow::Aggregation(r) = r {
                    let row = AggregationRow {
                        unit_node_uuid: r.unit_node_uuid,
                        aggregation_type: function_code(r.aggregation_type),
                        time_window_size: r.time_window_size,
                        start_us: us(r.start_window_datetime),
                        end_us: us(r.end_window_datetime),
                        create_us: us(r.create_datetime),
                        state: r.state,
                        inserted_us,
                    };
                    insert.write(&row).await.map_err(ch_err)?;
                }
            }
            insert.end().await.map_err(ch_err)?;
        }
        Ok(rows.len() as u64)
    }

    /// `(total, page)` of one node's rows visible at `now`.
    pub async fn pipe_rows(
        &self,
        q: &PipeQuery,
        now: NaiveDateTime,
    ) -> StoreResult<(i64, Vec<PipeRow>)> {
        let (table, key) = match q.policy {
            ProcessingPolicyType::NRecords => ("pipe_n_records", "unit_node_uuid, create_us"),
            ProcessingPolicyType::TimeWindow => {
                ("pipe_window_entries", "unit_node_uuid, create_us")
            }
            ProcessingPolicyType::Aggregation => (
                "pipe_aggregations",
                "unit_node_uuid, aggregation_type, time_window_size, start_us",
            ),
            ProcessingPolicyType::LastValue => {
                return Err(StoreError::Telemetry(
                    "LastValue rows are the node's state".into(),
                ))
            }
        };
        let mut cond = visible(q.node);
        let mut binds: Vec<String> = Vec::new();
        match q.policy {
            ProcessingPolicyType::NRecords => {
                if let Some(keep) = q.keep_last {
                    cond.push_str(&format!(
                        " AND create_us >= (SELECT min(create_us) FROM (SELECT create_us FROM \
                         pipe_n_records{} ORDER BY create_us DESC LIMIT 1 BY create_us LIMIT {}))",
                        visible(q.node),
                        keep.max(1)
                    ));
                }
            }
            ProcessingPolicyType::TimeWindow => {
                cond.push_str(&format!(" AND expiration_us > {}", us(now)));
            }
            _ => {
                if !q.aggregation_types.is_empty() {
                    let codes: Vec<String> = q
                        .aggregation_types
                        .iter()
                        .map(|a| function_code(*a).to_string())
                        .collect();
                    cond.push_str(&format!(
                        " AND toInt8(aggregation_type) IN ({})",
                        codes.join(", ")
                    ));
                }
                if let Some(size) = q.time_window_size {
                    cond.push_str(&format!(" AND time_window_size = {size}"));
                }
                if let Some(t) = q.end_window_from {
                    cond.push_str(&format!(" AND end_us >= {}", us(t)));
                }
                if let Some(t) = q.end_window_to {
                    cond.push_str(&format!(" AND end_us <= {}", us(t)));
                }
            }
        }
        if q.policy != ProcessingPolicyType::Aggregation {
            if let Some(search) = &q.search {
                for word in search.split_whitespace().take(16) {
                    cond.push_str(" AND positionCaseInsensitiveUTF8(state, ?) > 0");
                    binds.push(word.to_string());
                }
            }
        }
        if let Some(t) = q.created_from {
            cond.push_str(&format!(" AND create_us >= {}", us(t)));
        }
        if let Some(t) = q.created_to {
            cond.push_str(&format!(" AND create_us <= {}", us(t)));
        }
        let order = match q.order.unwrap_or(Order::Asc) {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let mut page = format!(" ORDER BY create_us {order} LIMIT 1 BY {key}");
        let (offset, limit) = (q.offset.max(0) as u64, q.limit.max(0) as u64);
        if limit > 0 || offset > 0 {
            let limit = if limit > 0 { limit } else { u64::MAX };
            page.push_str(&format!(" LIMIT {offset}, {limit}"));
        }
        let bind_all = |mut query: clickhouse::query::Query| {
            for b in &binds {
                query = query.bind(b.as_str());
            }
            query
        };
        let count = bind_all(self.client.query(&format!(
            "SELECT count() FROM (SELECT 1 FROM {table}{cond} LIMIT 1 BY {key})"
        )))
        .fetch_one::<u64>();
        let rows = async {
            let text = |cols: &str| format!("SELECT {cols} FROM {table}{cond}{page}");
            Ok::<_, StoreError>(match q.policy {
                ProcessingPolicyType::NRecords => bind_all(self.client.query(&text(
                    "unit_node_uuid, create_us, state, state_type, max_count, size, inserted_us",
                )))
                .fetch_all::<NRecordsRow>()
                .await
                .map_err(ch_err)?
                .into_iter()
                .map(|r| {
                    Ok(PipeRow::NRecords(NRecordsEntry {
                        unit_node_uuid: r.unit_node_uuid,
                        state: r.state,
                        state_type: type_of(r.state_type)?,
                        create_datetime: time(r.create_us),
                        max_count: r.max_count,
                        size: r.size,
                    }))
                })
                .collect::<StoreResult<Vec<_>>>()?,
                ProcessingPolicyType::TimeWindow => bind_all(self.client.query(&text(
                    "unit_node_uuid, create_us, state, state_type, expiration_datetime, expiration_us, size, inserted_us",
                )))
                .fetch_all::<WindowRow>()
                .await
                .map_err(ch_err)?
                .into_iter()
                .map(|r| {
                    Ok(PipeRow::Window(WindowEntry {
                        unit_node_uuid: r.unit_node_uuid,
                        state: r.state,
                        state_type: type_of(r.state_type)?,
                        create_datetime: time(r.create_us),
                        expiration_datetime: time(r.expiration_us),
                        size: r.size,
                    }))
                })
                .collect::<StoreResult<Vec<_>>>()?,
                _ => bind_all(self.client.query(&text(
                    "unit_node_uuid, aggregation_type, time_window_size, start_us, end_us, create_us, state, inserted_us",
                )))
                .fetch_all::<AggregationRow>()
                .await
                .map_err(ch_err)?
                .into_iter()
                .map(|r| {
                    Ok(PipeRow::Aggregation(AggregationEntry {
                        unit_node_uuid: r.unit_node_uuid,
                        state: r.state,
                        aggregation_type: function_of(r.aggregation_type)?,
                        time_window_size: r.time_window_size,
                        create_datetime: time(r.create_us),
                        start_window_datetime: time(r.start_us),
                        end_window_datetime: time(r.end_us),
                    }))
                })
                .collect::<StoreResult<Vec<_>>>()?,
            })
        };
        let (total, rows) = tokio::try_join!(async { count.await.map_err(ch_err) }, rows)?;
        Ok((total as i64, rows))
    }

    /// Hides every row of these nodes at once (a watermark per node), then starts the
    /// mutations that free their space. Rows stored after `before_us` stay visible.
    pub async fn clear_pipe_nodes(&self, nodes: &[Uuid], before_us: u64) -> StoreResult<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = nodes
            .iter()
            .map(|n| format!("(toUUID('{n}'), {before_us})"))
            .collect();
        self.client
            .query(&format!(
                "INSERT INTO pipe_clears VALUES {}",
                values.join(", ")
            ))
            .execute()
            .await
            .map_err(ch_err)?;
        let list: Vec<String> = nodes.iter().map(|n| format!("toUUID('{n}')")).collect();
        for table in ["pipe_n_records", "pipe_window_entries", "pipe_aggregations"] {
            self.client
                .query(&format!(
                    "ALTER TABLE {table} DELETE WHERE unit_node_uuid IN ({}) AND inserted_us <= {before_us}",
                    list.join(", ")
                ))
                .execute()
                .await
                .map_err(ch_err)?;
        }
        Ok(())
    }

    /// Replaces a node's rows (CSV import), all or nothing: the new rows are written first,
    /// stamped after the watermark that then hides the old ones. A failed INSERT leaves the
    /// old rows as they were.
    pub async fn replace_pipe_node(&self, node: Uuid, rows: &[PipeRow]) -> StoreResult<u64> {
        let before = micros_now();
        let stored = self.insert_pipe_rows(rows, Some(before + 1)).await?;
        self.clear_pipe_nodes(&[node], before).await?;
        Ok(stored)
    }

    /// The janitor: drops TimeWindow partitions whose expiry day is over, and trims NRecords
    /// nodes holding more than twice the largest count. Returns the rows dropped.
    pub async fn purge_expired_pipe_rows(&self, now: NaiveDateTime) -> StoreResult<u64> {
        let dropped = self
            .drop_expired_partitions("pipe_window_entries", now)
            .await?;
        let crowded: Vec<String> = self
            .client
            .query(&format!(
                "SELECT toString(unit_node_uuid) FROM pipe_n_records GROUP BY unit_node_uuid \
                 HAVING count() > {}",
                2 * MAX_N_RECORDS
            ))
            .fetch_all()
            .await
            .map_err(ch_err)?;
        for node in crowded {
            let Ok(node) = node.parse::<Uuid>() else {
                continue;
            };
            let oldest_kept: u64 = self
                .client
                .query(&format!(
                    "SELECT min(create_us) FROM (SELECT create_us FROM pipe_n_records \
                     WHERE unit_node_uuid = toUUID('{node}') ORDER BY create_us DESC LIMIT {MAX_N_RECORDS})"
                ))
                .fetch_one()
                .await
                .map_err(ch_err)?;
            self.client
                .query(&format!(
                    "ALTER TABLE pipe_n_records DELETE WHERE unit_node_uuid = toUUID('{node}') \
                     AND create_us < {oldest_kept}"
                ))
                .execute()
                .await
                .map_err(ch_err)?;
        }
        Ok(dropped)
    }
}
