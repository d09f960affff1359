//! The hourly load history in ClickHouse (issue 18): `unit_load_hours`, a SummingMergeTree so
//! two writes of one Unit's hour add up (also on 18.16); readers sum per hour anyway, since
//! merges come when ClickHouse likes.

use chrono::{DateTime, NaiveDateTime};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ch_err, ClickHouseLogs};
use crate::store::load_hours::LoadHour;
use crate::store::StoreResult;

pub(super) fn ddl(db: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.unit_load_hours (\
         unit_uuid UUID, hour_start DateTime('UTC'), user_uuid UUID, messages UInt64) \
         ENGINE = SummingMergeTree(messages) PARTITION BY toYYYYMM(hour_start) \
         ORDER BY (unit_uuid, hour_start, user_uuid)"
    )]
}

#[derive(Row, Serialize, Deserialize)]
struct HourRow {
    #[serde(with = "clickhouse::serde::uuid")]
    unit_uuid: Uuid,
    hour_start: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    user_uuid: Uuid,
    messages: u64,
}

fn secs(t: NaiveDateTime) -> u32 {
    u32::try_from(t.and_utc().timestamp().max(0)).unwrap_or(u32::MAX)
}

impl ClickHouseLogs {
    pub async fn add_load_hours(&self, rows: &[LoadHour]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<HourRow>("unit_load_hours")
            .await
            .map_err(ch_err)?;
        for r in rows {
            let row = HourRow {
                unit_uuid: r.unit_uuid,
                hour_start: secs(r.hour_start),
                user_uuid: r.user_uuid,
                messages: r.messages,
            };
            insert.write(&row).await.map_err(ch_err)?;
        }
        insert.end().await.map_err(ch_err)
    }

    pub async fn load_hours(
        &self,
        unit: Uuid,
        from: NaiveDateTime,
        to: NaiveDateTime,
    ) -> StoreResult<Vec<LoadHour>> {
        let rows = self
            .client
            .query(
                "SELECT unit_uuid, toUInt32(hour_start) AS hour_start, any(user_uuid) AS user_uuid, \
                 sum(messages) AS messages FROM unit_load_hours \
                 WHERE unit_uuid = toUUID(?) AND hour_start >= toDateTime(?, 'UTC') \
                 AND hour_start < toDateTime(?, 'UTC') \
                 GROUP BY unit_uuid, hour_start ORDER BY hour_start",
            )
            .bind(unit.to_string())
            .bind(secs(from))
            .bind(secs(to))
            .fetch_all::<HourRow>()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(LoadHour {
                    unit_uuid: r.unit_uuid,
                    user_uuid: r.user_uuid,
                    hour_start: DateTime::from_timestamp(i64::from(r.hour_start), 0)?.naive_utc(),
                    messages: r.messages,
                })
            })
            .collect())
    }
}
