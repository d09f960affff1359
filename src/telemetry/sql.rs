//! The embedded log store: the `unit_logs` table of the instance's own database (SQLite or
//! PostgreSQL). SQL text lives in `src/store/unit_logs.rs`; this adapts it to [`LogStore`].
//!
//! [`LogStore`]: super::LogStore

use std::collections::HashSet;

use chrono::NaiveDateTime;
use sqlx::{AnyConnection, AnyPool};
use uuid::Uuid;

use super::{LogCursor, LogQuery};
use crate::domain::format_time;
use crate::store::unit_logs::{self as table, NewUnitLog, UnitLog};
use crate::store::StoreResult;

#[derive(Clone)]
pub struct SqlLogs {
    db: AnyPool,
}

impl SqlLogs {
    pub fn new(db: AnyPool) -> SqlLogs {
        SqlLogs { db }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.db
    }

    pub async fn insert(&self, logs: &[NewUnitLog]) -> StoreResult<u64> {
        table::insert_batch(&self.db, logs).await
    }

    pub async fn query(
        &self,
        q: &LogQuery,
        now: NaiveDateTime,
    ) -> StoreResult<(i64, Vec<UnitLog>)> {
        table::list(
            &self.db,
            q.unit_uuid,
            &q.levels,
            q.since.as_deref(),
            q.until.as_deref(),
            q.order,
            q.offset,
            q.limit,
            &format_time(now),
        )
        .await
    }

    pub async fn page_after(
        &self,
        unit_uuid: Uuid,
        after: Option<&LogCursor>,
        limit: i64,
        now: NaiveDateTime,
    ) -> StoreResult<Vec<UnitLog>> {
        let after = after.map(|(t, id)| (t.as_str(), *id));
        table::page_after(&self.db, unit_uuid, after, limit, &format_time(now)).await
    }

    pub async fn taken_uuids(&self, uuids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
        Ok(table::taken_uuids(&self.db, uuids)
            .await?
            .into_iter()
            .collect())
    }

    /// [`Self::insert`] inside a transaction of the instance's database.
    pub async fn insert_in(conn: &mut AnyConnection, logs: &[NewUnitLog]) -> StoreResult<u64> {
        table::insert_rows(conn, logs).await
    }

    /// [`Self::taken_uuids`] as a transaction of the instance's database sees them.
    pub async fn taken_uuids_in(
        conn: &mut AnyConnection,
        uuids: &[Uuid],
    ) -> StoreResult<HashSet<Uuid>> {
        Ok(table::taken_uuids_in(conn, uuids)
            .await?
            .into_iter()
            .collect())
    }

    /// Deleted in one statement: gone for readers at once.
    pub async fn clear_unit(&self, unit_uuid: Uuid) -> StoreResult<u64> {
        table::delete_for_unit(&self.db, unit_uuid).await
    }

    pub async fn purge_expired(&self, now: NaiveDateTime) -> StoreResult<u64> {
        table::delete_expired(&self.db, &format_time(now)).await
    }
}
