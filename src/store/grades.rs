//! SQL for instance grades and published load reports (migration 0010).

use sqlx::AnyPool;
use uuid::Uuid;

use super::{RowExt, Sql};
use crate::store::StoreResult;

/// The admin's grade settings as stored (one row, id 1).
#[derive(Clone, Debug, PartialEq)]
pub struct GradeRow {
    pub free_mps_per_user: f64,
    pub price_per_mps: f64,
    pub free_aggregated_topics: i64,
    pub price_per_aggregated_topic: f64,
    pub currency: String,
    pub update_datetime: String,
}

/// The stored grade, or None before the admin first set it.
pub async fn grade(db: &AnyPool) -> StoreResult<Option<GradeRow>> {
    let row = Sql::new(
        "SELECT free_mps_per_user, price_per_mps, free_aggregated_topics, price_per_aggregated_topic, currency, update_datetime FROM instance_grade WHERE id = 1",
    )
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(GradeRow {
            free_mps_per_user: r.float("free_mps_per_user")?,
            price_per_mps: r.float("price_per_mps")?,
            free_aggregated_topics: r.int("free_aggregated_topics")?,
            price_per_aggregated_topic: r.float("price_per_aggregated_topic")?,
            currency: r.text("currency")?,
            update_datetime: r.text("update_datetime")?,
        })
    })
    .transpose()
}

/// Writes the whole grade (insert or replace the one row).
pub async fn set_grade(db: &AnyPool, g: &GradeRow) -> StoreResult<()> {
    Sql::new("INSERT INTO instance_grade (id, free_mps_per_user, price_per_mps, free_aggregated_topics, price_per_aggregated_topic, currency, update_datetime) VALUES (1, ")
        .bind(g.free_mps_per_user)
        .push(", ")
        .bind(g.price_per_mps)
        .push(", ")
        .bind(g.free_aggregated_topics)
        .push(", ")
        .bind(g.price_per_aggregated_topic)
        .push(", ")
        .bind(g.currency.as_str())
        .push(", ")
        .bind(g.update_datetime.as_str())
        .push(
            ") ON CONFLICT (id) DO UPDATE SET free_mps_per_user = EXCLUDED.free_mps_per_user, price_per_mps = EXCLUDED.price_per_mps, free_aggregated_topics = EXCLUDED.free_aggregated_topics, price_per_aggregated_topic = EXCLUDED.price_per_aggregated_topic, currency = EXCLUDED.currency, update_datetime = EXCLUDED.update_datetime",
        )
        .execute(db)
        .await?;
    Ok(())
}

/// Stores one channel's report (JSON text).
pub async fn insert_load_report(
    db: &AnyPool,
    channel: &str,
    report: &str,
    publisher: Uuid,
    at: &str,
) -> StoreResult<Uuid> {
    let uuid = Uuid::now_v7();
    Sql::new("INSERT INTO load_reports (uuid, channel, report, publisher_uuid, create_datetime) VALUES (")
        .bind(uuid)
        .push(", ")
        .bind(channel)
        .push(", ")
        .bind(report)
        .push(", ")
        .bind(Some(publisher))
        .push(", ")
        .bind(at)
        .push(")")
        .execute(db)
        .await?;
    Ok(uuid)
}

/// The newest report of `channel` (JSON text and its date).
pub async fn latest_load_report(
    db: &AnyPool,
    channel: &str,
) -> StoreResult<Option<(String, String)>> {
    let row = Sql::new("SELECT report, create_datetime FROM load_reports WHERE channel = ")
        .bind(channel)
        .push(" ORDER BY create_datetime DESC, uuid DESC LIMIT 1")
        .fetch_optional(db)
        .await?;
    row.map(|r| Ok((r.text("report")?, r.text("create_datetime")?)))
        .transpose()
}
