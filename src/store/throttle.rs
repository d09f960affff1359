//! SQL for throttling rules (migration 0011; scraper tokens are `store::scrapers`).

use sqlx::AnyPool;

use super::{RowExt, Sql};
use crate::store::StoreResult;

/// Rules stored for one scope (`instance`, or a user's uuid).
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleRow {
    pub scope: String,
    pub rules: String,
}

pub async fn all(db: &AnyPool) -> StoreResult<Vec<ThrottleRow>> {
    let rows = Sql::new("SELECT scope, rules FROM throttle_rules ORDER BY scope")
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ThrottleRow {
                scope: r.text("scope")?,
                rules: r.text("rules")?,
            })
        })
        .collect()
}

/// Writes a scope's rules (insert or replace).
pub async fn put(db: &AnyPool, scope: &str, rules: &str) -> StoreResult<()> {
    Sql::new("INSERT INTO throttle_rules (scope, rules, update_datetime) VALUES (")
        .bind(scope)
        .push(", ")
        .bind(rules)
        .push(", ")
        .bind(crate::domain::now())
        .push(
            ") ON CONFLICT (scope) DO UPDATE SET rules = EXCLUDED.rules, update_datetime = EXCLUDED.update_datetime",
        )
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &AnyPool, scope: &str) -> StoreResult<u64> {
    Sql::new("DELETE FROM throttle_rules WHERE scope = ")
        .bind(scope)
        .execute(db)
        .await
}
