//! SQL for the hourly load history (issue 18, `migrations/*/0009_load.sql`): messages per Unit
//! per hour with the Unit's user, in the embedded telemetry store.

use chrono::NaiveDateTime;
use sqlx::AnyPool;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::{format_time, parse_time};
use crate::store::{StoreError, StoreResult};

/// One Unit's messages in one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadHour {
    pub unit_uuid: Uuid,
    pub user_uuid: Uuid,
    pub hour_start: NaiveDateTime,
    pub messages: u64,
}

/// Adds each row's messages to its Unit's hour (rows of one hour written twice add up).
pub async fn add(db: &AnyPool, rows: &[LoadHour]) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    for chunk in rows.chunks(100) {
        let mut q = Sql::new(
            "INSERT INTO unit_load_hours (unit_uuid, hour_start, user_uuid, messages) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            q.push(if i > 0 { ", (" } else { "(" })
                .bind(r.unit_uuid)
                .push(", ")
                .bind(format_time(r.hour_start))
                .push(", ")
                .bind(r.user_uuid)
                .push(", ")
                .bind(i64::try_from(r.messages).unwrap_or(i64::MAX))
                .push(")");
        }
        q.push(
            " ON CONFLICT (unit_uuid, hour_start) DO UPDATE SET \
             messages = unit_load_hours.messages + excluded.messages",
        );
        q.one_off();
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A Unit's hours from `from` (inclusive) to `to` (exclusive), oldest first.
pub async fn of_unit(
    db: &AnyPool,
    unit: Uuid,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> StoreResult<Vec<LoadHour>> {
    let mut q = Sql::new("SELECT * FROM unit_load_hours WHERE unit_uuid = ");
    q.bind(unit)
        .push(" AND hour_start >= ")
        .bind(format_time(from))
        .push(" AND hour_start < ")
        .bind(format_time(to))
        .push(" ORDER BY hour_start");
    map_rows(q.fetch_all(db).await?, |r| {
        let hour = r.text("hour_start")?;
        Ok(LoadHour {
            unit_uuid: r.uuid("unit_uuid")?,
            user_uuid: r.uuid("user_uuid")?,
            hour_start: parse_time(&hour).ok_or_else(|| StoreError::Column {
                column: "hour_start".into(),
                reason: format!("not a time: {hour:?}"),
            })?,
            messages: r.int("messages")?.max(0) as u64,
        })
    })
}
