//! SQL for unit logs: the `log` messages devices publish, each kept until it expires.
//!
//! Telemetry rather than an entity: rows arrive in batches from MQTT ingest, are read one unit
//! at a time and never change. Readers skip expired rows themselves, so how often
//! [`delete_expired`] runs only decides how much space old rows take, never what is listed.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::{LogLevel, Order};
use crate::store::StoreResult;

/// A log line to store. Timestamps are in the format of [`crate::domain::format_time`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUnitLog {
    pub uuid: Uuid,
    pub unit_uuid: Uuid,
    pub level: LogLevel,
    pub text: String,
    pub create_datetime: String,
    pub expiration_datetime: String,
}

/// A stored log line; serializes as the wire `UnitLogRead`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnitLog {
    pub uuid: Uuid,
    pub level: LogLevel,
    pub unit_uuid: Uuid,
    pub text: String,
    pub create_datetime: String,
    pub expiration_datetime: String,
}

fn from_row(r: &AnyRow) -> StoreResult<UnitLog> {
    Ok(UnitLog {
        uuid: r.uuid("uuid")?,
        level: r.parsed("level")?,
        unit_uuid: r.uuid("unit_uuid")?,
        text: r.text("text")?,
        create_datetime: r.text("create_datetime")?,
        expiration_datetime: r.text("expiration_datetime")?,
    })
}

/// Bound parameters one statement may carry: SQLite's limit (32,766), the lower of the two
/// backends (PostgreSQL's is 65,535).
const MAX_BIND_PARAMETERS: usize = 32_766;
const COLUMNS: usize = 6;
/// Rows per INSERT, far below the limit on purpose: SQLite looks each `$N` up among the
/// placeholders before it, so parsing grows with the square of a statement's parameters, while
/// tiny statements pay the driver's per-statement cost. Measured in release with
/// `pepeunit load mqtt --store-only 200000`: 16 rows 27k lines/s, 64 rows 40k, 128 rows 36-40k.
const ROWS_PER_STATEMENT: usize = 64;
const _: () = assert!(ROWS_PER_STATEMENT * COLUMNS <= MAX_BIND_PARAMETERS);

/// Stores every row in one transaction, [`ROWS_PER_STATEMENT`] rows per statement, skipping
/// rows whose uuid is stored already. Returns the number of rows stored.
pub async fn insert_batch(db: &AnyPool, logs: &[NewUnitLog]) -> StoreResult<u64> {
    if logs.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let stored = insert_rows(&mut tx, logs).await?;
    tx.commit().await?;
    Ok(stored)
}

/// [`insert_batch`] inside the caller's transaction (an import writes its log lines in the
/// transaction of its other rows).
pub async fn insert_rows(conn: &mut AnyConnection, logs: &[NewUnitLog]) -> StoreResult<u64> {
    let mut stored = 0;
    for chunk in logs.chunks(ROWS_PER_STATEMENT) {
        let mut q = Sql::new("INSERT INTO unit_logs (uuid, unit_uuid, level, text, create_datetime, expiration_datetime) VALUES ");
        for (i, log) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(log.uuid)
                .push(", ")
                .bind(log.unit_uuid)
                .push(", ")
                .bind(log.level.as_str());
            q.push(", ")
                .bind(&log.text)
                .push(", ")
                .bind(&log.create_datetime)
                .push(", ")
                .bind(&log.expiration_datetime)
                .push(")");
        }
        // a line's uuid is its key: a message delivered again stores nothing new
        q.push(" ON CONFLICT (uuid) DO NOTHING");
        if chunk.len() < ROWS_PER_STATEMENT {
            // only a full chunk's text repeats; caching each tail would evict useful statements
            q.one_off();
        }
        stored += q.execute(&mut *conn).await?;
    }
    Ok(stored)
}

/// One unit's logs not yet expired at `now`: `(total, page)`. `levels` empty means every
/// level; `since`/`until` bound `create_datetime` (both inclusive); rows sharing a
/// `create_datetime` (one batch) are ordered by uuid so pages are stable.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    db: &AnyPool,
    unit_uuid: Uuid,
    levels: &[LogLevel],
    since: Option<&str>,
    until: Option<&str>,
    order: Order,
    offset: i64,
    limit: i64,
    now: &str,
) -> StoreResult<(i64, Vec<UnitLog>)> {
    let mut cond = Sql::new(" FROM unit_logs WHERE unit_uuid = ");
    cond.bind(unit_uuid)
        .push(" AND expiration_datetime > ")
        .bind(now);
    if !levels.is_empty() {
        cond.push(" AND level IN ")
            .bind_list(levels.iter().map(|l| l.as_str()));
    }
    if let Some(t) = since {
        cond.push(" AND create_datetime >= ").bind(t);
    }
    if let Some(t) = until {
        cond.push(" AND create_datetime <= ").bind(t);
    }
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY create_datetime ")
        .push(order.sql())
        .push(", uuid ")
        .push(order.sql());
    q.page(offset, limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

/// Up to `limit` of a unit's logs not expired at `now`, oldest first, strictly after
/// `(create_datetime, uuid)` of `after`: keyset paging along `unit_logs_unit_create`.
pub async fn page_after(
    db: &AnyPool,
    unit_uuid: Uuid,
    after: Option<(&str, Uuid)>,
    limit: i64,
    now: &str,
) -> StoreResult<Vec<UnitLog>> {
    let mut q = Sql::new("SELECT * FROM unit_logs WHERE unit_uuid = ");
    q.bind(unit_uuid)
        .push(" AND expiration_datetime > ")
        .bind(now);
    if let Some((t, id)) = after {
        q.push(" AND (create_datetime > ")
            .bind(t)
            .push(" OR (create_datetime = ")
            .bind(t)
            .push(" AND uuid > ")
            .bind(id)
            .push("))");
    }
    q.push(" ORDER BY create_datetime, uuid");
    q.page(0, limit);
    map_rows(q.fetch_all(db).await?, from_row)
}

/// Which of `uuids` are stored (any unit).
pub async fn taken_uuids(db: &AnyPool, uuids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    taken_uuids_in(&mut *db.acquire().await?, uuids).await
}

/// [`taken_uuids`] as the caller's transaction sees them.
pub async fn taken_uuids_in(conn: &mut AnyConnection, uuids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
    let mut out = Vec::new();
    // far below the bind limit of both backends
    for chunk in uuids.chunks(1000) {
        let mut q = Sql::new("SELECT uuid FROM unit_logs WHERE uuid IN ");
        q.bind_list(chunk.iter().copied());
        for row in q.fetch_all(&mut *conn).await? {
            out.push(row.uuid("uuid")?);
        }
    }
    Ok(out)
}

/// Deletes every log of a unit; returns how many there were.
pub async fn delete_for_unit(db: &AnyPool, unit_uuid: Uuid) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM unit_logs WHERE unit_uuid = ");
    q.bind(unit_uuid);
    q.execute(db).await
}

/// Deletes the logs expired at `now` (the ones [`list`] no longer returns).
pub async fn delete_expired(db: &AnyPool, now: &str) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM unit_logs WHERE expiration_datetime <= ");
    q.bind(now);
    q.execute(db).await
}
