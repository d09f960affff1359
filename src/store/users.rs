//! SQL for users.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::{Order, UserRole, UserStatus};
use crate::store::StoreResult;

/// A user; serializes as the wire `UserRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct User {
    pub uuid: Uuid,
    pub role: UserRole,
    pub status: UserStatus,
    pub login: String,
    pub grafana_org_name: Uuid,
    pub grafana_org_id: Option<String>,
    pub create_datetime: String,
    #[serde(skip)]
    pub hashed_password: String,
    #[serde(skip)]
    pub cipher_dynamic_salt: String,
    #[serde(skip)]
    pub telegram_chat_id: Option<String>,
    /// The language of the linked Telegram user (`en`, `ru`), for messages the bot pushes.
    #[serde(skip)]
    pub telegram_language: Option<String>,
}

fn from_row(r: &AnyRow) -> StoreResult<User> {
    Ok(User {
        uuid: r.uuid("uuid")?,
        role: r.parsed("role")?,
        status: r.parsed("status")?,
        login: r.text("login")?,
        grafana_org_name: r.uuid("grafana_org_name")?,
        grafana_org_id: r.opt_text("grafana_org_id")?,
        create_datetime: r.text("create_datetime")?,
        hashed_password: r.text("hashed_password")?,
        cipher_dynamic_salt: r.text("cipher_dynamic_salt")?,
        telegram_chat_id: r.opt_text("telegram_chat_id")?,
        telegram_language: r.opt_text("telegram_language")?,
    })
}

pub async fn insert<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    u: &User,
) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO users (uuid, role, status, login, hashed_password, cipher_dynamic_salt, telegram_chat_id, grafana_org_name, grafana_org_id, create_datetime) VALUES (");
    q.bind(u.uuid)
        .push(", ")
        .bind(u.role.as_str())
        .push(", ")
        .bind(u.status.as_str());
    q.push(", ")
        .bind(&u.login)
        .push(", ")
        .bind(&u.hashed_password);
    q.push(", ")
        .bind(&u.cipher_dynamic_salt)
        .push(", ")
        .bind(u.telegram_chat_id.clone());
    q.push(", ")
        .bind(u.grafana_org_name)
        .push(", ")
        .bind(u.grafana_org_id.clone());
    q.push(", ").bind(&u.create_datetime).push(")");
    q.execute(db).await?;
    Ok(())
}

/// Claims the instance's one first-Admin row for `user`; true for the one caller that got it.
/// Concurrent claims wait on the row's key (PostgreSQL) or the write lock (SQLite) and lose.
pub async fn claim_first_admin<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    user: Uuid,
    at: &str,
) -> StoreResult<bool> {
    let mut q = Sql::new("INSERT INTO first_admin (id, user_uuid, claim_datetime) VALUES (1, ");
    q.bind(user)
        .push(", ")
        .bind(at)
        .push(") ON CONFLICT (id) DO NOTHING");
    Ok(q.execute(db).await? == 1)
}

pub async fn set_role<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    uuid: Uuid,
    role: UserRole,
) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE users SET role = ");
    q.bind(role.as_str()).push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn get(db: &AnyPool, uuid: Uuid) -> StoreResult<Option<User>> {
    let mut q = Sql::new("SELECT * FROM users WHERE uuid = ");
    q.bind(uuid);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// By login, or by linked telegram chat id (as upstream's `credentials`).
pub async fn get_by_credentials(db: &AnyPool, credentials: &str) -> StoreResult<Option<User>> {
    let mut q = Sql::new("SELECT * FROM users WHERE login = ");
    q.bind(credentials)
        .push(" OR telegram_chat_id = ")
        .bind(credentials);
    q.push(" ORDER BY create_datetime LIMIT 1");
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn get_by_login(db: &AnyPool, login: &str) -> StoreResult<Option<User>> {
    let mut q = Sql::new("SELECT * FROM users WHERE login = ");
    q.bind(login);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn login_taken(db: &AnyPool, login: &str, except: Option<Uuid>) -> StoreResult<bool> {
    let mut q = Sql::new("SELECT COUNT(*) FROM users WHERE login = ");
    q.bind(login);
    if let Some(u) = except {
        q.push(" AND uuid <> ").bind(u);
    }
    Ok(q.fetch_i64(db).await? > 0)
}

pub async fn count(db: &AnyPool) -> StoreResult<i64> {
    Sql::new("SELECT COUNT(*) FROM users").fetch_i64(db).await
}

pub async fn update_credentials(db: &AnyPool, u: &User) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE users SET login = ");
    q.bind(&u.login)
        .push(", hashed_password = ")
        .bind(&u.hashed_password);
    q.push(", cipher_dynamic_salt = ")
        .bind(&u.cipher_dynamic_salt);
    q.push(" WHERE uuid = ").bind(u.uuid);
    q.execute(db).await?;
    Ok(())
}

pub async fn set_status(db: &AnyPool, uuid: Uuid, status: UserStatus) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE users SET status = ");
    q.bind(status.as_str()).push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Links a Telegram chat to a user: the chat leaves any other user it was linked to, and the
/// user becomes Verified unless Blocked. One transaction.
pub async fn link_telegram(
    db: &AnyPool,
    uuid: Uuid,
    chat_id: &str,
    language: &str,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    let mut q = Sql::new("UPDATE users SET telegram_chat_id = NULL WHERE telegram_chat_id = ");
    q.bind(chat_id).push(" AND uuid <> ").bind(uuid);
    q.execute(&mut *tx).await?;
    let mut q = Sql::new("UPDATE users SET telegram_chat_id = ");
    q.bind(chat_id)
        .push(", telegram_language = ")
        .bind(language)
        .push(
            ", status = CASE WHEN status = 'Blocked' THEN status ELSE 'Verified' END WHERE uuid = ",
        )
        .bind(uuid);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The user a Telegram chat is linked to.
pub async fn by_telegram_chat(db: &AnyPool, chat_id: &str) -> StoreResult<Option<User>> {
    let mut q = Sql::new("SELECT * FROM users WHERE telegram_chat_id = ");
    q.bind(chat_id).push(" ORDER BY create_datetime LIMIT 1");
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn set_telegram_language(db: &AnyPool, uuid: Uuid, language: &str) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE users SET telegram_language = ");
    q.bind(language).push(" WHERE uuid = ").bind(uuid);
    q.execute(db).await?;
    Ok(())
}

/// Admins that are not blocked and have a linked Telegram chat (receivers of crash alerts).
pub async fn admins_with_telegram(db: &AnyPool) -> StoreResult<Vec<User>> {
    let q = Sql::new(
        "SELECT * FROM users WHERE role = 'Admin' AND status <> 'Blocked' AND telegram_chat_id IS NOT NULL ORDER BY create_datetime",
    );
    map_rows(q.fetch_all(db).await?, from_row)
}

#[derive(Default)]
pub struct UserFilter {
    pub uuids: Vec<Uuid>,
    pub search_string: Option<String>,
    pub role: Vec<UserRole>,
    pub status: Vec<UserStatus>,
    pub order_by_create_date: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

pub async fn list(db: &AnyPool, f: &UserFilter) -> StoreResult<(i64, Vec<User>)> {
    let mut cond = Sql::new(" FROM users WHERE 1=1");
    if !f.uuids.is_empty() {
        cond.push(" AND uuid IN ")
            .bind_list(f.uuids.iter().copied());
    }
    if !f.role.is_empty() {
        cond.push(" AND role IN ")
            .bind_list(f.role.iter().map(|r| r.as_str()));
    }
    if !f.status.is_empty() {
        cond.push(" AND status IN ")
            .bind_list(f.status.iter().map(|r| r.as_str()));
    }
    super::push_search(&mut cond, f.search_string.as_deref(), &["login"]);
    let mut count = Sql::new("SELECT COUNT(*)");
    count.append(&cond);
    let total = count.fetch_i64(db).await?;
    let mut q = Sql::new("SELECT *");
    q.append(&cond);
    q.push(" ORDER BY create_datetime ")
        .push(f.order_by_create_date.unwrap_or(Order::Desc).sql());
    q.page(f.offset, f.limit);
    Ok((total, map_rows(q.fetch_all(db).await?, from_row)?))
}

/// The Grafana organisation a dashboard sync made for the user (its numeric id, as text).
pub async fn set_grafana_org_id(db: &AnyPool, uuid: Uuid, org_id: &str) -> StoreResult<()> {
    Sql::new("UPDATE users SET grafana_org_id = ")
        .bind(org_id)
        .push(" WHERE uuid = ")
        .bind(uuid)
        .execute(db)
        .await?;
    Ok(())
}
