//! SQL for Unit moves and move tickets.

use sqlx::any::AnyRow;
use sqlx::AnyPool;
use uuid::Uuid;

use super::{map_rows, RowExt, Sql};
use crate::domain::{MoveRole, MoveState};
use crate::store::StoreResult;

#[derive(Clone, Debug)]
pub struct UnitMove {
    pub uuid: Uuid,
    pub role: MoveRole,
    pub unit_uuid: Uuid,
    pub remote_unit_uuid: Uuid,
    pub peer_domain: String,
    pub user_uuid: Uuid,
    pub state: MoveState,
    pub cipher_env: Option<String>,
    pub remote_actor: Option<String>,
    pub remote_api: Option<String>,
    pub last_error: Option<String>,
    pub commands_sent_datetime: Option<String>,
    pub create_datetime: String,
    pub last_update_datetime: String,
}

fn from_row(r: &AnyRow) -> StoreResult<UnitMove> {
    Ok(UnitMove {
        uuid: r.uuid("uuid")?,
        role: r.parsed("role")?,
        unit_uuid: r.uuid("unit_uuid")?,
        remote_unit_uuid: r.uuid("remote_unit_uuid")?,
        peer_domain: r.text("peer_domain")?,
        user_uuid: r.uuid("user_uuid")?,
        state: r.parsed("state")?,
        cipher_env: r.opt_text("cipher_env")?,
        remote_actor: r.opt_text("remote_actor")?,
        remote_api: r.opt_text("remote_api")?,
        last_error: r.opt_text("last_error")?,
        commands_sent_datetime: r.opt_text("commands_sent_datetime")?,
        create_datetime: r.text("create_datetime")?,
        last_update_datetime: r.text("last_update_datetime")?,
    })
}

pub async fn insert(db: &AnyPool, m: &UnitMove) -> StoreResult<()> {
    let mut q = Sql::new("INSERT INTO unit_moves (uuid, role, unit_uuid, remote_unit_uuid, peer_domain, user_uuid, state, cipher_env, remote_actor, remote_api, last_error, commands_sent_datetime, create_datetime, last_update_datetime) VALUES (");
    q.bind(m.uuid).push(", ").bind(m.role.as_str()).push(", ");
    q.bind(m.unit_uuid)
        .push(", ")
        .bind(m.remote_unit_uuid)
        .push(", ");
    q.bind(&m.peer_domain)
        .push(", ")
        .bind(m.user_uuid)
        .push(", ");
    q.bind(m.state.as_str())
        .push(", ")
        .bind(m.cipher_env.clone())
        .push(", ");
    q.bind(m.remote_actor.clone())
        .push(", ")
        .bind(m.remote_api.clone())
        .push(", ");
    q.bind(m.last_error.clone())
        .push(", ")
        .bind(m.commands_sent_datetime.clone())
        .push(", ");
    q.bind(&m.create_datetime)
        .push(", ")
        .bind(&m.last_update_datetime)
        .push(")");
    q.execute(db).await?;
    Ok(())
}

/// Saves state, env, error and command time.
pub async fn update(db: &AnyPool, m: &UnitMove) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE unit_moves SET state = ");
    q.bind(m.state.as_str())
        .push(", cipher_env = ")
        .bind(m.cipher_env.clone())
        .push(", last_error = ")
        .bind(m.last_error.clone())
        .push(", commands_sent_datetime = ")
        .bind(m.commands_sent_datetime.clone())
        .push(", last_update_datetime = ")
        .bind(crate::domain::now())
        .push(" WHERE uuid = ")
        .bind(m.uuid);
    q.execute(db).await?;
    Ok(())
}

/// The newest move of a local unit in a role.
pub async fn latest_for_unit(
    db: &AnyPool,
    unit: Uuid,
    role: MoveRole,
) -> StoreResult<Option<UnitMove>> {
    let mut q = Sql::new("SELECT * FROM unit_moves WHERE unit_uuid = ");
    q.bind(unit)
        .push(" AND role = ")
        .bind(role.as_str())
        .push(" ORDER BY create_datetime DESC LIMIT 1");
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// B's record of a move from `peer` of its unit `remote`.
pub async fn incoming(db: &AnyPool, peer: &str, remote: Uuid) -> StoreResult<Option<UnitMove>> {
    let mut q = Sql::new("SELECT * FROM unit_moves WHERE role = 'Incoming' AND peer_domain = ");
    q.bind(peer)
        .push(" AND remote_unit_uuid = ")
        .bind(remote)
        .push(" ORDER BY create_datetime DESC LIMIT 1");
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Outgoing moves still in progress.
pub async fn active_outgoing(db: &AnyPool) -> StoreResult<Vec<UnitMove>> {
    let q = Sql::new(
        "SELECT * FROM unit_moves WHERE role = 'Outgoing' AND state IN ('Requested', 'CommandsSent') ORDER BY create_datetime",
    );
    map_rows(q.fetch_all(db).await?, from_row)
}

pub async fn insert_ticket(db: &AnyPool, hash: &str, user: Uuid, expires: &str) -> StoreResult<()> {
    let mut q =
        Sql::new("INSERT INTO move_tickets (ticket_hash, user_uuid, expires_datetime) VALUES (");
    q.bind(hash)
        .push(", ")
        .bind(user)
        .push(", ")
        .bind(expires)
        .push(")");
    q.execute(db).await?;
    Ok(())
}

/// Uses up a ticket: its user when it exists and has not expired.
pub async fn take_ticket(db: &AnyPool, hash: &str, now: &str) -> StoreResult<Option<Uuid>> {
    let mut q =
        Sql::new("SELECT user_uuid, expires_datetime FROM move_tickets WHERE ticket_hash = ");
    q.bind(hash);
    let Some(row) = q.fetch_optional(db).await? else {
        return Ok(None);
    };
    let user = row.uuid("user_uuid")?;
    let expires = row.text("expires_datetime")?;
    // whoever deletes it used it: two requests with one ticket cannot both pass
    let mut d = Sql::new("DELETE FROM move_tickets WHERE ticket_hash = ");
    d.bind(hash);
    let used = d.execute(db).await? == 1;
    let mut old = Sql::new("DELETE FROM move_tickets WHERE expires_datetime < ");
    old.bind(now);
    old.execute(db).await?;
    Ok((used && expires.as_str() > now).then_some(user))
}

/// Forgets what a device reported before it moved here (arrival is its first report).
pub async fn clear_reported_state(db: &AnyPool, unit: Uuid) -> StoreResult<()> {
    let mut q = Sql::new("UPDATE units SET unit_state = NULL WHERE uuid = ");
    q.bind(unit);
    q.execute(db).await?;
    Ok(())
}

/// The outgoing move (device told, not arrived) of the unit that is `remote` on `peer`.
pub async fn moving_to(db: &AnyPool, peer: &str, remote: Uuid) -> StoreResult<Option<UnitMove>> {
    let mut q = Sql::new("SELECT * FROM unit_moves WHERE role = 'Outgoing' AND state = 'CommandsSent' AND peer_domain = ");
    q.bind(peer).push(" AND remote_unit_uuid = ").bind(remote);
    q.fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}
