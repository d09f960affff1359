//! SQL for scraper tokens (migration 0011).

use sqlx::AnyPool;
use uuid::Uuid;

use super::{RowExt, Sql};
use crate::store::StoreResult;

/// A scraper token as stored (its SHA-256 only).
#[derive(Clone, Debug, PartialEq)]
pub struct ScraperRow {
    pub uuid: Uuid,
    pub name: String,
    pub creator_uuid: Option<Uuid>,
    pub create_datetime: String,
    pub last_used_datetime: Option<String>,
}

fn scraper(r: &sqlx::any::AnyRow) -> StoreResult<ScraperRow> {
    Ok(ScraperRow {
        uuid: r.uuid("uuid")?,
        name: r.text("name")?,
        creator_uuid: r.opt_uuid("creator_uuid")?,
        create_datetime: r.text("create_datetime")?,
        last_used_datetime: r.opt_text("last_used_datetime")?,
    })
}

const SCRAPER_COLUMNS: &str =
    "SELECT uuid, name, creator_uuid, create_datetime, last_used_datetime FROM scraper_tokens";

pub async fn insert_scraper(db: &AnyPool, row: &ScraperRow, token_sha256: &str) -> StoreResult<()> {
    Sql::new("INSERT INTO scraper_tokens (uuid, name, token_sha256, creator_uuid, create_datetime) VALUES (")
        .bind(row.uuid.to_string())
        .push(", ")
        .bind(row.name.as_str())
        .push(", ")
        .bind(token_sha256)
        .push(", ")
        .bind(row.creator_uuid.map(|u| u.to_string()))
        .push(", ")
        .bind(row.create_datetime.as_str())
        .push(")")
        .execute(db)
        .await?;
    Ok(())
}

pub async fn scrapers(db: &AnyPool) -> StoreResult<Vec<ScraperRow>> {
    let rows = Sql::new(SCRAPER_COLUMNS)
        .push(" ORDER BY create_datetime, uuid")
        .fetch_all(db)
        .await?;
    rows.iter().map(scraper).collect()
}

pub async fn count_scrapers(db: &AnyPool) -> StoreResult<i64> {
    let row = Sql::new("SELECT COUNT(*) AS n FROM scraper_tokens")
        .fetch_optional(db)
        .await?;
    match row {
        Some(r) => r.int("n"),
        None => Ok(0),
    }
}

/// The token with this SHA-256, its last use set to `now`.
pub async fn use_scraper(db: &AnyPool, token_sha256: &str, now: &str) -> StoreResult<Option<Uuid>> {
    let row = Sql::new("SELECT uuid FROM scraper_tokens WHERE token_sha256 = ")
        .bind(token_sha256)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let uuid = row.uuid("uuid")?;
    Sql::new("UPDATE scraper_tokens SET last_used_datetime = ")
        .bind(now)
        .push(" WHERE uuid = ")
        .bind(uuid.to_string())
        .execute(db)
        .await?;
    Ok(Some(uuid))
}

pub async fn delete_scraper(db: &AnyPool, uuid: Uuid) -> StoreResult<u64> {
    Sql::new("DELETE FROM scraper_tokens WHERE uuid = ")
        .bind(uuid.to_string())
        .execute(db)
        .await
}
