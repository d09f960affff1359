//! The relational store: one code path for SQLite (embedded default) and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$N` placeholders, which both SQLite and
//! PostgreSQL accept, so every entity module holds exactly one SQL text per operation. Only this
//! module tree knows SQL; the service layer calls typed functions.

pub mod bridges;
pub mod dashboards;
pub mod federation;
pub mod grades;
pub mod load_hours;
pub mod moves;
pub mod permissions;
pub mod pipe_data;
pub mod registries;
pub mod repos;
pub mod scrapers;
pub mod throttle;
pub mod transfer;
pub mod unit_logs;
pub mod unit_nodes;
pub mod units;
pub mod users;

use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};
use uuid::Uuid;

/// What went wrong in a store (relational or telemetry). The service layer turns it into an
/// `AppError`: the first three are answers about the data, the rest internal failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the row does not exist")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("the object already exists")]
    AlreadyExists,
    /// A foreign key refused the write or delete.
    #[error("the row is still referenced")]
    StillReferenced,
    /// A stored value that does not read back as its type.
    #[error("column {column}: {reason}")]
    Column { column: String, reason: String },
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The telemetry engine (ClickHouse) failed or answered something unexpected.
    #[error("clickhouse: {0}")]
    Telemetry(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    pub fn column(column: &str, reason: impl std::fmt::Display) -> Self {
        StoreError::Column {
            column: column.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::StillReferenced
            }
            _ => StoreError::Database(err),
        }
    }
}

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Embedded migrations; each backend has its own folder so they can diverge when needed.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "unit_logs",
        sqlite: include_str!("../../migrations/sqlite/0002_unit_logs.sql"),
        postgres: include_str!("../../migrations/postgres/0002_unit_logs.sql"),
    },
    Migration {
        version: 3,
        name: "federation",
        sqlite: include_str!("../../migrations/sqlite/0003_federation.sql"),
        postgres: include_str!("../../migrations/postgres/0003_federation.sql"),
    },
    Migration {
        version: 4,
        name: "unit_moves",
        sqlite: include_str!("../../migrations/sqlite/0004_unit_moves.sql"),
        postgres: include_str!("../../migrations/postgres/0004_unit_moves.sql"),
    },
    Migration {
        version: 5,
        name: "bridges",
        sqlite: include_str!("../../migrations/sqlite/0005_bridges.sql"),
        postgres: include_str!("../../migrations/postgres/0005_bridges.sql"),
    },
    Migration {
        version: 6,
        name: "alerts",
        sqlite: include_str!("../../migrations/sqlite/0006_alerts.sql"),
        postgres: include_str!("../../migrations/postgres/0006_alerts.sql"),
    },
    Migration {
        version: 7,
        name: "security",
        sqlite: include_str!("../../migrations/sqlite/0007_security.sql"),
        postgres: include_str!("../../migrations/postgres/0007_security.sql"),
    },
    Migration {
        version: 8,
        name: "data_pipes",
        sqlite: include_str!("../../migrations/sqlite/0008_data_pipes.sql"),
        postgres: include_str!("../../migrations/postgres/0008_data_pipes.sql"),
    },
    Migration {
        version: 9,
        name: "load",
        sqlite: include_str!("../../migrations/sqlite/0009_load.sql"),
        postgres: include_str!("../../migrations/postgres/0009_load.sql"),
    },
    Migration {
        version: 10,
        name: "grades_and_load_reports",
        sqlite: include_str!("../../migrations/sqlite/0010_grades_and_load_reports.sql"),
        postgres: include_str!("../../migrations/postgres/0010_grades_and_load_reports.sql"),
    },
    Migration {
        version: 11,
        name: "throttle_and_scrapers",
        sqlite: include_str!("../../migrations/sqlite/0011_throttle_and_scrapers.sql"),
        postgres: include_str!("../../migrations/postgres/0011_throttle_and_scrapers.sql"),
    },
    Migration {
        version: 12,
        name: "dashboards",
        sqlite: include_str!("../../migrations/sqlite/0012_dashboards.sql"),
        postgres: include_str!("../../migrations/postgres/0012_dashboards.sql"),
    },
    Migration {
        version: 13,
        name: "dashboard_panels",
        sqlite: include_str!("../../migrations/sqlite/0013_dashboard_panels.sql"),
        postgres: include_str!("../../migrations/postgres/0013_dashboard_panels.sql"),
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if backend == Backend::Sqlite {
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
            {
                if let Some(dir) = std::path::Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)?;
                    }
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .after_release(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        return sqlite_released_clean(conn).await;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Db { pool, backend })
    }

    /// A transaction that will write after reading. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`, waiting up to `busy_timeout`): a deferred one that reads first fails
    /// with SQLITE_BUSY_SNAPSHOT ("database is locked", code 517) when another connection
    /// commits a write before its own first write, and no timeout helps then.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Applies every migration not yet recorded in `_pepeunit_migrations`, each in a transaction.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS _pepeunit_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_datetime TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM _pepeunit_migrations")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        if let Some(newest) = applied.iter().max() {
            let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
            if *newest > known {
                anyhow::bail!(
                    "the database is at migration {newest}, newer than this binary knows ({known}); refusing to run an older version against it"
                );
            }
        }
        let mut count = 0;
        for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| anyhow::anyhow!("migration {} ({}) failed: {e}", m.version, m.name))?;
            sqlx::query("INSERT INTO _pepeunit_migrations (version, name, applied_datetime) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(crate::domain::now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            count += 1;
        }
        Ok(count)
    }
}

/// Whether a SQLite connection coming back to the pool may be used again: not if a
/// transaction on it could not be ended.
///
/// On SQLITE_FULL (and SQLITE_IOERR, SQLITE_BUSY, SQLITE_NOMEM) SQLite may roll the whole
/// transaction back by itself (<https://www.sqlite.org/lang_transaction.html>, "Response To
/// Errors Within A Transaction"). The dropped `Transaction`'s ROLLBACK then fails ("no
/// transaction is active") and sqlx-sqlite 0.8 keeps the connection's transaction depth at 1.
/// Reused, that connection refuses `BEGIN IMMEDIATE`, and a plain `begin()` issues `SAVEPOINT`
/// instead of `BEGIN`: SQLite opens a real transaction for it, and a later error's `ROLLBACK TO`
/// leaves that transaction open. From then on the connection holds the write lock forever
/// (every other writer gets "database is locked") and its "commits" are `RELEASE`s inside the
/// open transaction, never written. So such a connection is closed instead; the pool opens a
/// fresh one.
///
/// Depth 0 needs no more: a transaction ended by COMMIT or ROLLBACK is acknowledged with its
/// depth already lowered. Otherwise a dropped transaction's ROLLBACK may still be queued: the
/// ping lets the worker run it first.
async fn sqlite_released_clean(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Connection, Database, TransactionManager};
    let depth = |conn: &sqlx::AnyConnection| {
        <<Any as Database>::TransactionManager as TransactionManager>::get_transaction_depth(conn)
    };
    if depth(conn) == 0 {
        return Ok(true);
    }
    conn.ping().await?;
    let depth = depth(conn);
    if depth == 0 {
        return Ok(true);
    }
    tracing::warn!(
        depth,
        "closing a SQLite connection whose transaction could not be ended (SQLite rolled it back after an error such as a full disk)"
    );
    Ok(false)
}

/// A bound value of a dynamic query.
#[derive(Clone, Debug)]
pub enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Float(f64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<Option<Uuid>> for Value {
    fn from(v: Option<Uuid>) -> Self {
        Value::OptText(v.map(|u| u.to_string()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::OptText(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::OptText(v.map(str::to_string))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::OptInt(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// A query text with `$N` placeholders numbered as values are bound.
#[derive(Default, Debug)]
pub struct Sql {
    text: String,
    args: Vec<Value>,
    one_off: bool,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            args: Vec::new(),
            one_off: false,
        }
    }

    /// Keeps the statement out of the connection's prepared-statement cache: for texts whose
    /// shape follows the data (multi-row inserts), which would only evict the ones that repeat.
    pub fn one_off(&mut self) -> &mut Self {
        self.one_off = true;
        self
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }

    /// `(v1, v2, ...)`; callers must not pass an empty list.
    pub fn bind_list<V: Into<Value>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        self.text.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self.text.push(')');
        self
    }

    /// Appends another fragment, renumbering its placeholders after ours.
    pub fn append(&mut self, other: &Sql) -> &mut Self {
        let shift = self.args.len();
        let mut out = String::with_capacity(other.text.len());
        let mut chars = other.text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c == '$' {
                let mut n = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                if let Ok(n) = n.parse::<usize>() {
                    out.push_str(&format!("${}", n + shift));
                    continue;
                }
                out.push('$');
                out.push_str(&n);
                continue;
            }
            out.push(c);
        }
        self.text.push_str(&out);
        self.args.extend(other.args.iter().cloned());
        self
    }

    /// Appends ` LIMIT n OFFSET m` where `limit` 0 means unlimited.
    pub fn page(&mut self, offset: i64, limit: i64) -> &mut Self {
        if limit > 0 {
            self.push(" LIMIT ").bind(limit);
        } else if offset > 0 {
            // both engines need a LIMIT before OFFSET
            self.push(" LIMIT ").bind(i64::MAX);
        }
        if offset > 0 {
            self.push(" OFFSET ").bind(offset);
        }
        self
    }

    fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text).persistent(!self.one_off);
        for a in &self.args {
            q = match a {
                Value::Text(s) => q.bind(s.as_str()),
                Value::OptText(s) => q.bind(s.as_deref()),
                Value::Int(i) => q.bind(*i),
                Value::OptInt(i) => q.bind(*i),
                Value::Float(f) => q.bind(*f),
                Value::Bool(b) => q.bind(*b),
            };
        }
        q
    }

    pub async fn fetch_all<'e, E: Executor<'e, Database = Any>>(
        &self,
        e: E,
    ) -> StoreResult<Vec<AnyRow>> {
        Ok(self.query().fetch_all(e).await?)
    }

    pub async fn fetch_optional<'e, E: Executor<'e, Database = Any>>(
        &self,
        e: E,
    ) -> StoreResult<Option<AnyRow>> {
        Ok(self.query().fetch_optional(e).await?)
    }

    pub async fn fetch_i64<'e, E: Executor<'e, Database = Any>>(&self, e: E) -> StoreResult<i64> {
        let row = self.query().fetch_one(e).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Runs the statement and returns the number of affected rows.
    pub async fn execute<'e, E: Executor<'e, Database = Any>>(&self, e: E) -> StoreResult<u64> {
        Ok(self.query().execute(e).await?.rows_affected())
    }
}

/// Typed column access with errors that name the column.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn uuid(&self, col: &str) -> StoreResult<Uuid>;
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn float(&self, col: &str) -> StoreResult<f64>;
    fn boolean(&self, col: &str) -> StoreResult<bool>;
    fn parsed<T: std::str::FromStr>(&self, col: &str) -> StoreResult<T>;
    fn opt_parsed<T: std::str::FromStr>(&self, col: &str) -> StoreResult<Option<T>>;
}

fn column_error(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::column(col, e)
}

impl RowExt for AnyRow {
    fn text(&self, col: &str) -> StoreResult<String> {
        self.try_get::<String, _>(col)
            .map_err(|e| column_error(col, e))
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.try_get::<Option<String>, _>(col)
            .map_err(|e| column_error(col, e))
    }
    fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        Uuid::parse_str(&self.text(col)?).map_err(|e| column_error(col, e))
    }
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.opt_text(col)?
            .map(|s| Uuid::parse_str(&s).map_err(|e| column_error(col, e)))
            .transpose()
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        self.try_get::<i64, _>(col)
            .map_err(|e| column_error(col, e))
    }
    fn float(&self, col: &str) -> StoreResult<f64> {
        self.try_get::<f64, _>(col)
            .map_err(|e| column_error(col, e))
    }
    fn boolean(&self, col: &str) -> StoreResult<bool> {
        // PostgreSQL has BOOLEAN; SQLite stores INTEGER 0/1 (see migrations/sqlite)
        match self.try_get::<bool, _>(col) {
            Ok(b) => Ok(b),
            Err(_) => self
                .try_get::<i64, _>(col)
                .map(|i| i != 0)
                .map_err(|e| column_error(col, e)),
        }
    }
    fn parsed<T: std::str::FromStr>(&self, col: &str) -> StoreResult<T> {
        let s = self.text(col)?;
        s.parse()
            .map_err(|_| column_error(col, format!("unexpected value {s:?}")))
    }
    fn opt_parsed<T: std::str::FromStr>(&self, col: &str) -> StoreResult<Option<T>> {
        self.opt_text(col)?
            .map(|s| {
                s.parse()
                    .map_err(|_| column_error(col, format!("unexpected value {s:?}")))
            })
            .transpose()
    }
}

/// `search_string`: every whitespace-separated word must match (case-insensitive substring)
/// at least one of `columns`.
pub(crate) fn push_search(q: &mut Sql, search: Option<&str>, columns: &[&str]) {
    let Some(search) = search else { return };
    for word in search.split_whitespace().take(16) {
        let pattern = format!(
            "%{}%",
            word.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        q.push(" AND (");
        for (i, col) in columns.iter().enumerate() {
            if i > 0 {
                q.push(" OR ");
            }
            q.push("LOWER(COALESCE(")
                .push(col)
                .push(", '')) LIKE ")
                .bind(pattern.clone());
            q.push(" ESCAPE '\\'");
        }
        q.push(")");
    }
}

/// Maps every row with `f`.
pub(crate) fn map_rows<T>(
    rows: Vec<AnyRow>,
    f: impl Fn(&AnyRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// Which visibility levels a list may return to an agent (API.md: lists filter by visibility).
#[derive(Clone, Debug)]
pub struct VisibilityScope {
    /// Levels requested and allowed for the agent.
    pub levels: Vec<crate::domain::VisibilityLevel>,
    /// Private rows are restricted to resources this agent holds a permission on;
    /// `None` means no restriction (the backend).
    pub private_agent: Option<Uuid>,
}

pub(crate) fn push_visibility(q: &mut Sql, scope: &VisibilityScope, column_prefix: &str) {
    if scope.levels.is_empty() {
        q.push(" AND 1=0");
        return;
    }
    q.push(" AND ")
        .push(column_prefix)
        .push("visibility_level IN ");
    q.bind_list(scope.levels.iter().map(|l| l.as_str()));
    if let Some(agent) = scope.private_agent {
        if scope
            .levels
            .contains(&crate::domain::VisibilityLevel::Private)
        {
            q.push(" AND (")
                .push(column_prefix)
                .push("visibility_level <> 'Private' OR ");
            q.push(column_prefix)
                .push("uuid IN (SELECT resource_uuid FROM permissions WHERE agent_uuid = ");
            q.bind(agent).push("))");
        }
    }
}
