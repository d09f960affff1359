//! SQL for data pipe rows (issue 17): what NRecords, TimeWindow and Aggregation pipelines keep,
//! in the embedded telemetry store (`migrations/*/0008_data_pipes.sql`), and the open state of
//! pipelines saved at a clean stop (`pipe_snapshots`, always here, also with ClickHouse).
//!
//! Telemetry as `unit_logs`: rows come in batches from the MQTT core and are read one node at
//! a time. NRecords keeps the last `max_count` rows of a node: the MQTT core trims a node
//! every few rows its pipeline writes (`engine::trim_every`), an import right after it writes,
//! and readers take the newest `keep_last` anyway (a config whose count shrank shows at once). TimeWindow rows are hidden by readers once expired
//! ([`delete_expired`] frees their space). Aggregation rows are keyed by node, function,
//! window size and window start: a window emitted again (after a restore) is one row.

use chrono::NaiveDateTime;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool};
use uuid::Uuid;

use super::{map_rows, push_search, RowExt, Sql};
pub use crate::domain::datapipe::PipeRow;
use crate::domain::datapipe::{
    AggregationEntry, AggregationFunction, NRecordsEntry, ProcessingPolicyType, WindowEntry,
};
use crate::domain::{format_time, parse_time, Order};
use crate::store::{StoreError, StoreResult};

/// One read of a node's rows (`GET /unit_nodes/get_data_pipe_data/`). Times are naive UTC.
#[derive(Clone, Debug)]
pub struct PipeQuery {
    pub node: Uuid,
    /// Which table: NRecords, TimeWindow or Aggregation (LastValue is the node's state).
    pub policy: ProcessingPolicyType,
    /// NRecords: only the newest this many rows exist for readers.
    pub keep_last: Option<u32>,
    /// Words that must each occur in `state` (case-insensitive; not for Aggregation).
    pub search: Option<String>,
    /// Aggregation: these functions only (empty: every function).
    pub aggregation_types: Vec<AggregationFunction>,
    pub time_window_size: Option<u32>,
    /// Aggregation: windows ending at or after / at or before.
    pub end_window_from: Option<NaiveDateTime>,
    pub end_window_to: Option<NaiveDateTime>,
    /// Rows created at or after / at or before.
    pub created_from: Option<NaiveDateTime>,
    pub created_to: Option<NaiveDateTime>,
    /// `None`: storage order (by creation, oldest first).
    pub order: Option<Order>,
    pub offset: i64,
    /// 0: no limit.
    pub limit: i64,
}

impl PipeQuery {
    /// Every row of a node's table, oldest first.
    pub fn all(node: Uuid, policy: ProcessingPolicyType) -> PipeQuery {
        PipeQuery {
            node,
            policy,
            keep_last: None,
            search: None,
            aggregation_types: Vec::new(),
            time_window_size: None,
            end_window_from: None,
            end_window_to: None,
            created_from: None,
            created_to: None,
            order: None,
            offset: 0,
            limit: 0,
        }
    }
}

const TABLES: [&str; 3] = ["pipe_n_records", "pipe_window_entries", "pipe_aggregations"];

fn table(policy: ProcessingPolicyType) -> StoreResult<&'static str> {
    match policy {
        ProcessingPolicyType::NRecords => Ok(TABLES[0]),
        ProcessingPolicyType::TimeWindow => Ok(TABLES[1]),
        ProcessingPolicyType::Aggregation => Ok(TABLES[2]),
        ProcessingPolicyType::LastValue => Err(StoreError::column(
            "policy",
            "LastValue rows are the node's state, not a table",
        )),
    }
}

fn time(r: &AnyRow, col: &str) -> StoreResult<NaiveDateTime> {
    let s = r.text(col)?;
    parse_time(&s).ok_or_else(|| StoreError::column(col, format!("bad timestamp {s:?}")))
}

fn count(r: &AnyRow, col: &str) -> StoreResult<u32> {
    u32::try_from(r.int(col)?).map_err(|e| StoreError::column(col, e))
}

fn from_row(policy: ProcessingPolicyType, r: &AnyRow) -> StoreResult<PipeRow> {
    let node = r.uuid("unit_node_uuid")?;
    Ok(match policy {
        ProcessingPolicyType::NRecords => PipeRow::NRecords(NRecordsEntry {
            unit_node_uuid: node,
            state: r.text("state")?,
            state_type: r.parsed("state_type")?,
            create_datetime: time(r, "create_datetime")?,
            max_count: count(r, "max_count")?,
            size: count(r, "size")?,
        }),
        ProcessingPolicyType::TimeWindow => PipeRow::Window(WindowEntry {
            unit_node_uuid: node,
            state: r.text("state")?,
            state_type: r.parsed("state_type")?,
            create_datetime: time(r, "create_datetime")?,
            expiration_datetime: time(r, "expiration_datetime")?,
            size: count(r, "size")?,
        }),
        _ => PipeRow::Aggregation(AggregationEntry {
            unit_node_uuid: node,
            state: r.float("state")?,
            aggregation_type: r.parsed("aggregation_type")?,
            time_window_size: count(r, "time_window_size")?,
            create_datetime: time(r, "create_datetime")?,
            start_window_datetime: time(r, "start_window_datetime")?,
            end_window_datetime: time(r, "end_window_datetime")?,
        }),
    })
}

/// Rows per INSERT (7 columns at most: far below both backends' bind limits).
const ROWS_PER_STATEMENT: usize = 64;

/// Stores rows in the caller's transaction (any mix of nodes and policies); a row whose key
/// is stored already is skipped. NRecords nodes are not trimmed here: see
/// [`trim_n_records_nodes`].
/// Returns how many rows were stored.
pub async fn insert_rows(conn: &mut AnyConnection, rows: &[PipeRow]) -> StoreResult<u64> {
    let mut stored = 0;
    for policy in [
        ProcessingPolicyType::NRecords,
        ProcessingPolicyType::TimeWindow,
        ProcessingPolicyType::Aggregation,
    ] {
        let of: Vec<&PipeRow> = rows.iter().filter(|r| r.policy() == policy).collect();
        for chunk in of.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(match policy {
                ProcessingPolicyType::NRecords => "INSERT INTO pipe_n_records (unit_node_uuid, create_datetime, state, state_type, max_count, size) VALUES ",
                ProcessingPolicyType::TimeWindow => "INSERT INTO pipe_window_entries (unit_node_uuid, create_datetime, state, state_type, expiration_datetime, size) VALUES ",
                _ => "INSERT INTO pipe_aggregations (unit_node_uuid, aggregation_type, time_window_size, start_window_datetime, end_window_datetime, create_datetime, state) VALUES ",
            });
            for (i, row) in chunk.iter().enumerate() {
                q.push(if i > 0 { ", (" } else { "(" });
                match row {
                    PipeRow::NRecords(r) => {
                        q.bind(r.unit_node_uuid)
                            .push(", ")
                            .bind(format_time(r.create_datetime))
                            .push(", ")
                            .bind(&r.state)
                            .push(", ")
                            .bind(r.state_type.as_str())
                            .push(", ")
                            .bind(i64::from(r.max_count))
                            .push(", ")
                            .bind(i64::from(r.size));
                    }
                    PipeRow::Window(r) => {
                        q.bind(r.unit_node_uuid)
                            .push(", ")
                            .bind(format_time(r.create_datetime))
                            .push(", ")
                            .bind(&r.state)
                            .push(", ")
                            .bind(r.state_type.as_str())
                            .push(", ")
                            .bind(format_time(r.expiration_datetime))
                            .push(", ")
                            .bind(i64::from(r.size));
                    }
                    PipeRow::Aggregation(r) => {
                        q.bind(r.unit_node_uuid)
                            .push(", ")
                            .bind(r.aggregation_type.as_str())
                            .push(", ")
                            .bind(i64::from(r.time_window_size))
                            .push(", ")
                            .bind(format_time(r.start_window_datetime))
                            .push(", ")
                            .bind(format_time(r.end_window_datetime))
                            .push(", ")
                            .bind(format_time(r.create_datetime))
                            .push(", ")
                            .bind(r.state);
                    }
                }
                q.push(")");
            }
            q.push(" ON CONFLICT DO NOTHING");
            if chunk.len() < ROWS_PER_STATEMENT {
                q.one_off();
            }
            stored += q.execute(&mut *conn).await?;
        }
    }
    Ok(stored)
}

/// The NRecords nodes of `rows` with their counts, each once: what a write of whole rows
/// (an import) trims after it.
pub fn n_records_nodes(rows: &[PipeRow]) -> Vec<(Uuid, u32)> {
    let mut nodes: Vec<(Uuid, u32)> = rows
        .iter()
        .filter_map(|r| match r {
            PipeRow::NRecords(r) => Some((r.unit_node_uuid, r.max_count)),
            _ => None,
        })
        .collect();
    nodes.sort_unstable();
    nodes.dedup_by_key(|(node, _)| *node);
    nodes
}

/// Cuts each node back to its newest `keep` NRecords rows (a node named twice, once).
pub async fn trim_n_records_nodes(
    conn: &mut AnyConnection,
    nodes: &[(Uuid, u32)],
) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    for (node, keep) in nodes {
        if seen.insert(*node) {
            trim_n_records(conn, *node, *keep).await?;
        }
    }
    Ok(())
}

/// Removes a node's NRecords rows older than its newest `keep`.
pub async fn trim_n_records(conn: &mut AnyConnection, node: Uuid, keep: u32) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM pipe_n_records WHERE unit_node_uuid = ");
    q.bind(node)
        .push(" AND create_datetime < (SELECT create_datetime FROM pipe_n_records WHERE unit_node_uuid = ")
        .bind(node)
        .push(" ORDER BY create_datetime DESC LIMIT 1 OFFSET ")
        .bind(i64::from(keep.max(1)) - 1)
        .push(")");
    q.execute(&mut *conn).await
}

/// [`insert_rows`] in a transaction of its own.
pub async fn insert_batch(db: &AnyPool, rows: &[PipeRow]) -> StoreResult<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let stored = insert_rows(&mut tx, rows).await?;
    trim_n_records_nodes(&mut tx, &n_records_nodes(rows)).await?;
    tx.commit().await?;
    Ok(stored)
}

/// `(total, page)` of one node's rows visible at `now`.
pub async fn list(
    db: &AnyPool,
    q: &PipeQuery,
    now: NaiveDateTime,
) -> StoreResult<(i64, Vec<PipeRow>)> {
    let table = table(q.policy)?;
    let mut cond = Sql::new(" FROM ");
    cond.push(table)
        .push(" WHERE unit_node_uuid = ")
        .bind(q.node);
    match q.policy {
        ProcessingPolicyType::NRecords => {
            if let Some(keep) = q.keep_last {
                cond.push(" AND create_datetime >= COALESCE((SELECT create_datetime FROM pipe_n_records WHERE unit_node_uuid = ")
                    .bind(q.node)
                    .push(" ORDER BY create_datetime DESC LIMIT 1 OFFSET ")
                    .bind(i64::from(keep.max(1)) - 1)
                    .push("), '')");
            }
        }
        ProcessingPolicyType::TimeWindow => {
            cond.push(" AND expiration_datetime > ")
                .bind(format_time(now));
        }
        _ => {
            if !q.aggregation_types.is_empty() {
                cond.push(" AND aggregation_type IN ")
                    .bind_list(q.aggregation_types.iter().map(|a| a.as_str()));
            }
            if let Some(size) = q.time_window_size {
                cond.push(" AND time_window_size = ").bind(i64::from(size));
            }
            if let Some(t) = q.end_window_from {
                cond.push(" AND end_window_datetime >= ")
                    .bind(format_time(t));
            }
            if let Some(t) = q.end_window_to {
                cond.push(" AND end_window_datetime <= ")
                    .bind(format_time(t));
            }
        }
    }
    if q.policy != ProcessingPolicyType::Aggregation {
        push_search(&mut cond, q.search.as_deref(), &["state"]);
    }
    if let Some(t) = q.created_from {
        cond.push(" AND create_datetime >= ").bind(format_time(t));
    }
    if let Some(t) = q.created_to {
        cond.push(" AND create_datetime <= ").bind(format_time(t));
    }
    let mut total = Sql::new("SELECT COUNT(*)");
    total.append(&cond);
    let total = total.fetch_i64(db).await?;
    let mut rows = Sql::new("SELECT *");
    rows.append(&cond);
    let order = q.order.unwrap_or(Order::Asc).sql();
    rows.push(" ORDER BY create_datetime ").push(order);
    if q.policy == ProcessingPolicyType::Aggregation {
        rows.push(", aggregation_type ")
            .push(order)
            .push(", time_window_size ")
            .push(order);
    }
    rows.page(q.offset, q.limit);
    let policy = q.policy;
    Ok((
        total,
        map_rows(rows.fetch_all(db).await?, |r| from_row(policy, r))?,
    ))
}

/// Deletes every row of these nodes in every table; returns how many there were.
pub async fn delete_nodes(conn: &mut AnyConnection, nodes: &[Uuid]) -> StoreResult<u64> {
    let mut n = 0;
    for chunk in nodes.chunks(500) {
        for t in TABLES {
            let mut q = Sql::new("DELETE FROM ");
            q.push(t)
                .push(" WHERE unit_node_uuid IN ")
                .bind_list(chunk.iter().copied());
            n += q.execute(&mut *conn).await?;
        }
    }
    Ok(n)
}

/// Frees the space of TimeWindow rows expired at `now`; returns how many.
pub async fn delete_expired(db: &AnyPool, now: NaiveDateTime) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM pipe_window_entries WHERE expiration_datetime <= ");
    q.bind(format_time(now));
    q.execute(db).await
}

/// Saves pipelines' open state (a clean stop), replacing what a node had saved.
pub async fn save_snapshots(
    db: &AnyPool,
    snapshots: &[(Uuid, String)],
    now: NaiveDateTime,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    for (node, snapshot) in snapshots {
        let mut del = Sql::new("DELETE FROM pipe_snapshots WHERE unit_node_uuid = ");
        del.bind(*node);
        del.execute(&mut *tx).await?;
        let mut q = Sql::new(
            "INSERT INTO pipe_snapshots (unit_node_uuid, snapshot, save_datetime) VALUES (",
        );
        q.bind(*node)
            .push(", ")
            .bind(snapshot)
            .push(", ")
            .bind(format_time(now))
            .push(")");
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Takes the saved open state of every pipeline (the rows are removed: a crash after this
/// start loses the open windows, never stored rows).
pub async fn take_snapshots(db: &AnyPool) -> StoreResult<Vec<(Uuid, String)>> {
    let mut tx = db.begin().await?;
    let rows = Sql::new("SELECT unit_node_uuid, snapshot FROM pipe_snapshots")
        .fetch_all(&mut *tx)
        .await?;
    let out = map_rows(rows, |r| {
        Ok((r.uuid("unit_node_uuid")?, r.text("snapshot")?))
    })?;
    Sql::new("DELETE FROM pipe_snapshots")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(out)
}
