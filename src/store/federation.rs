//! SQL for federation (migration 0003): instance key, published marks, followers, follows,
//! remote actors and objects, seen activity ids, the delivery queue and the domain lists.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{map_rows, RowExt, Sql};
use crate::store::StoreResult;
use pepeunit_federation::backend::{Delivery, Following, RemoteActor, RemoteObject};
use pepeunit_federation::policy::{DomainList, ListKind, ListMode};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn key(db: &AnyPool, name: &str) -> StoreResult<Option<(String, String)>> {
    let row = Sql::new("SELECT private_pem, public_pem FROM fed_keys WHERE name = ")
        .bind(name)
        .fetch_optional(db)
        .await?;
    row.map(|r| Ok((r.text("private_pem")?, r.text("public_pem")?)))
        .transpose()
}

/// Inserts the key unless one exists (two instances starting at once keep the first).
pub async fn insert_key(db: &AnyPool, name: &str, private: &str, public: &str) -> StoreResult<()> {
    Sql::new("INSERT INTO fed_keys (name, private_pem, public_pem, create_datetime) VALUES (")
        .bind(name)
        .push(", ")
        .bind(private)
        .push(", ")
        .bind(public)
        .push(", ")
        .bind(now())
        .push(") ON CONFLICT (name) DO NOTHING")
        .execute(db)
        .await?;
    Ok(())
}

pub async fn published(db: &AnyPool, actor: &str) -> StoreResult<Option<String>> {
    let row = Sql::new("SELECT mark FROM fed_published WHERE actor_id = ")
        .bind(actor)
        .fetch_optional(db)
        .await?;
    row.map(|r| r.text("mark")).transpose()
}

pub async fn set_published(db: &AnyPool, actor: &str, mark: Option<&str>) -> StoreResult<()> {
    match mark {
        Some(u) => {
            Sql::new("INSERT INTO fed_published (actor_id, mark) VALUES (")
                .bind(actor)
                .push(", ")
                .bind(u)
                .push(") ON CONFLICT (actor_id) DO UPDATE SET mark = excluded.mark")
                .execute(db)
                .await?
        }
        None => {
            Sql::new("DELETE FROM fed_published WHERE actor_id = ")
                .bind(actor)
                .execute(db)
                .await?
        }
    };
    Ok(())
}

pub async fn published_all(db: &AnyPool) -> StoreResult<Vec<String>> {
    let rows = Sql::new("SELECT actor_id FROM fed_published ORDER BY actor_id")
        .fetch_all(db)
        .await?;
    map_rows(rows, |r| r.text("actor_id"))
}

pub async fn add_follower(
    db: &AnyPool,
    local: &str,
    follower: &str,
    domain: &str,
    inbox: &str,
    follow_id: &str,
) -> StoreResult<bool> {
    let n = Sql::new(
        "INSERT INTO fed_followers (local_actor, follower, domain, inbox, follow_id, create_datetime) VALUES (",
    )
    .bind(local)
    .push(", ")
    .bind(follower)
    .push(", ")
    .bind(domain)
    .push(", ")
    .bind(inbox)
    .push(", ")
    .bind(follow_id)
    .push(", ")
    .bind(now())
    .push(") ON CONFLICT (local_actor, follower) DO NOTHING")
    .execute(db)
    .await?;
    if n > 0 {
        return Ok(true);
    }
    // a repeated Follow (new id, maybe a new inbox) of an existing follower
    Sql::new("UPDATE fed_followers SET inbox = ")
        .bind(inbox)
        .push(", follow_id = ")
        .bind(follow_id)
        .push(" WHERE local_actor = ")
        .bind(local)
        .push(" AND follower = ")
        .bind(follower)
        .execute(db)
        .await?;
    Ok(false)
}

pub async fn follower_domains(db: &AnyPool) -> StoreResult<Vec<String>> {
    let rows = Sql::new("SELECT DISTINCT domain FROM fed_followers ORDER BY domain")
        .fetch_all(db)
        .await?;
    map_rows(rows, |r| r.text("domain"))
}

pub async fn remove_follower(db: &AnyPool, local: &str, follower: &str) -> StoreResult<()> {
    Sql::new("DELETE FROM fed_followers WHERE local_actor = ")
        .bind(local)
        .push(" AND follower = ")
        .bind(follower)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn remove_follow(db: &AnyPool, follower: &str, follow_id: &str) -> StoreResult<bool> {
    let n = Sql::new("DELETE FROM fed_followers WHERE follower = ")
        .bind(follower)
        .push(" AND follow_id = ")
        .bind(follow_id)
        .execute(db)
        .await?;
    Ok(n > 0)
}

pub async fn followers(
    db: &AnyPool,
    local: &str,
    offset: i64,
    limit: i64,
) -> StoreResult<(i64, Vec<String>)> {
    let total = Sql::new("SELECT COUNT(*) FROM fed_followers WHERE local_actor = ")
        .bind(local)
        .fetch_i64(db)
        .await?;
    let mut q = Sql::new("SELECT follower FROM fed_followers WHERE local_actor = ");
    q.bind(local).push(" ORDER BY create_datetime, follower");
    q.page(offset, limit);
    let rows = q.fetch_all(db).await?;
    Ok((total, map_rows(rows, |r| r.text("follower"))?))
}

pub async fn follower_inboxes(db: &AnyPool, locals: &[String]) -> StoreResult<Vec<String>> {
    if locals.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new("SELECT DISTINCT inbox FROM fed_followers WHERE local_actor IN ");
    q.bind_list(locals.iter().map(String::as_str));
    q.push(" ORDER BY inbox");
    let rows = q.fetch_all(db).await?;
    map_rows(rows, |r| r.text("inbox"))
}

pub async fn remove_followers_on(db: &AnyPool, domain: &str) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM fed_followers WHERE ");
    q.push("domain = ").bind(domain);
    q.execute(db).await
}

fn following_from_row(r: &AnyRow) -> StoreResult<Following> {
    Ok(Following {
        follower: r.text("follower")?,
        target: r.text("target")?,
        target_domain: r.text("target_domain")?,
        inbox: r.text("inbox")?,
        follow_id: r.text("follow_id")?,
        state: r.text("state")?,
        created_at: r.text("create_datetime")?,
    })
}

const FOLLOWING_COLUMNS: &str =
    "follower, target, target_domain, inbox, follow_id, state, create_datetime";

pub async fn upsert_following(db: &AnyPool, f: &Following) -> StoreResult<()> {
    Sql::new(&format!("INSERT INTO fed_following ({FOLLOWING_COLUMNS}) VALUES ("))
        .bind(f.follower.as_str())
        .push(", ")
        .bind(f.target.as_str())
        .push(", ")
        .bind(f.target_domain.as_str())
        .push(", ")
        .bind(f.inbox.as_str())
        .push(", ")
        .bind(f.follow_id.as_str())
        .push(", ")
        .bind(f.state.as_str())
        .push(", ")
        .bind(f.created_at.as_str())
        .push(") ON CONFLICT (follower, target) DO UPDATE SET inbox = excluded.inbox, follow_id = excluded.follow_id, state = excluded.state, target_domain = excluded.target_domain")
        .execute(db)
        .await?;
    Ok(())
}

pub async fn following(
    db: &AnyPool,
    follower: &str,
    target: &str,
) -> StoreResult<Option<Following>> {
    let row = Sql::new(&format!(
        "SELECT {FOLLOWING_COLUMNS} FROM fed_following WHERE follower = "
    ))
    .bind(follower)
    .push(" AND target = ")
    .bind(target)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(following_from_row).transpose()
}

pub async fn set_following_state(db: &AnyPool, follow_id: &str, state: &str) -> StoreResult<bool> {
    let n = Sql::new("UPDATE fed_following SET state = ")
        .bind(state)
        .push(" WHERE follow_id = ")
        .bind(follow_id)
        .execute(db)
        .await?;
    Ok(n > 0)
}

pub async fn answer_follow(
    db: &AnyPool,
    follow_id: &str,
    target: &str,
    state: &str,
) -> StoreResult<bool> {
    let n = Sql::new("UPDATE fed_following SET state = ")
        .bind(state)
        .push(" WHERE follow_id = ")
        .bind(follow_id)
        .push(" AND target = ")
        .bind(target)
        .push(" AND state = 'Pending'")
        .execute(db)
        .await?;
    Ok(n > 0)
}

pub async fn following_list(db: &AnyPool, follower: &str) -> StoreResult<Vec<Following>> {
    let rows = Sql::new(&format!(
        "SELECT {FOLLOWING_COLUMNS} FROM fed_following WHERE follower = "
    ))
    .bind(follower)
    .push(" ORDER BY create_datetime, target")
    .fetch_all(db)
    .await?;
    map_rows(rows, following_from_row)
}

pub async fn following_of_target(db: &AnyPool, target: &str) -> StoreResult<Vec<Following>> {
    let rows = Sql::new(&format!(
        "SELECT {FOLLOWING_COLUMNS} FROM fed_following WHERE target = "
    ))
    .bind(target)
    .push(" ORDER BY create_datetime, follower")
    .fetch_all(db)
    .await?;
    map_rows(rows, following_from_row)
}

pub async fn remote_actor(db: &AnyPool, id: &str) -> StoreResult<Option<RemoteActor>> {
    let row = Sql::new("SELECT id, kind, domain, inbox, shared_inbox, public_key_pem, document, fetched_at FROM fed_remote_actors WHERE id = ")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        Ok(RemoteActor {
            id: r.text("id")?,
            kind: r.text("kind")?,
            domain: r.text("domain")?,
            inbox: r.text("inbox")?,
            shared_inbox: r.opt_text("shared_inbox")?,
            public_key_pem: r.text("public_key_pem")?,
            document: serde_json::from_str(&r.text("document")?).unwrap_or_default(),
            fetched_at: r.text("fetched_at")?,
        })
    })
    .transpose()
}

pub async fn store_remote_actor(db: &AnyPool, a: &RemoteActor) -> StoreResult<()> {
    Sql::new("INSERT INTO fed_remote_actors (id, kind, domain, inbox, shared_inbox, public_key_pem, document, fetched_at) VALUES (")
        .bind(a.id.as_str()).push(", ")
        .bind(a.kind.as_str()).push(", ")
        .bind(a.domain.as_str()).push(", ")
        .bind(a.inbox.as_str()).push(", ")
        .bind(a.shared_inbox.clone()).push(", ")
        .bind(a.public_key_pem.as_str()).push(", ")
        .bind(a.document.to_string()).push(", ")
        .bind(a.fetched_at.as_str())
        .push(") ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, domain = excluded.domain, inbox = excluded.inbox, shared_inbox = excluded.shared_inbox, public_key_pem = excluded.public_key_pem, document = excluded.document, fetched_at = excluded.fetched_at")
        .execute(db)
        .await?;
    Ok(())
}

pub async fn upsert_remote_object(db: &AnyPool, o: &RemoteObject) -> StoreResult<()> {
    Sql::new("INSERT INTO fed_remote_objects (id, kind, domain, document, updated_at) VALUES (")
        .bind(o.id.as_str())
        .push(", ")
        .bind(o.kind.to_string())
        .push(", ")
        .bind(o.domain.as_str())
        .push(", ")
        .bind(o.document.to_string())
        .push(", ")
        .bind(o.updated_at.as_str())
        .push(") ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, document = excluded.document, updated_at = excluded.updated_at")
        .execute(db)
        .await?;
    Ok(())
}

pub async fn remove_remote_object(db: &AnyPool, id: &str) -> StoreResult<bool> {
    let n = Sql::new("DELETE FROM fed_remote_objects WHERE id = ")
        .bind(id)
        .execute(db)
        .await?;
    Ok(n > 0)
}

pub async fn remove_remote_objects_on(db: &AnyPool, domain: &str) -> StoreResult<u64> {
    let mut q = Sql::new("DELETE FROM fed_remote_objects WHERE ");
    q.push("domain = ").bind(domain);
    q.execute(db).await
}

pub async fn remote_objects(
    db: &AnyPool,
    offset: i64,
    limit: i64,
) -> StoreResult<Vec<RemoteObject>> {
    let mut q = Sql::new(
        "SELECT id, kind, domain, document, updated_at FROM fed_remote_objects ORDER BY id",
    );
    q.page(offset, limit);
    let rows = q.fetch_all(db).await?;
    map_rows(rows, |r| {
        Ok(RemoteObject {
            id: r.text("id")?,
            kind: r.parsed("kind")?,
            domain: r.text("domain")?,
            document: serde_json::from_str(&r.text("document")?).unwrap_or_default(),
            updated_at: r.text("updated_at")?,
        })
    })
}

/// Records an activity id; `false` when it was recorded before.
pub async fn first_sight(db: &AnyPool, activity_id: &str) -> StoreResult<bool> {
    let n = Sql::new("INSERT INTO fed_seen (activity_id, seen_at) VALUES (")
        .bind(activity_id)
        .push(", ")
        .bind(now())
        .push(") ON CONFLICT (activity_id) DO NOTHING")
        .execute(db)
        .await?;
    Ok(n > 0)
}

pub async fn forget_sight(db: &AnyPool, activity_id: &str) -> StoreResult<()> {
    Sql::new("DELETE FROM fed_seen WHERE activity_id = ")
        .bind(activity_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets activity ids seen before `before` (RFC 3339).
pub async fn purge_seen(db: &AnyPool, before: &str) -> StoreResult<u64> {
    Sql::new("DELETE FROM fed_seen WHERE seen_at < ")
        .bind(before)
        .execute(db)
        .await
}

const DELIVERY_COLUMNS: &str = "id, activity_id, actor, inbox, domain, body, attempts, next_attempt_at, state, last_error, create_datetime";

fn delivery_from_row(r: &AnyRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: r.text("id")?,
        activity_id: r.text("activity_id")?,
        actor: r.text("actor")?,
        inbox: r.text("inbox")?,
        domain: r.text("domain")?,
        body: r.text("body")?,
        attempts: r.try_get::<i64, _>("attempts")?,
        next_attempt_at: r.text("next_attempt_at")?,
        state: r.text("state")?,
        last_error: r.opt_text("last_error")?,
        created_at: r.text("create_datetime")?,
    })
}

pub async fn enqueue(db: &AnyPool, rows: &[Delivery]) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    for d in rows {
        Sql::new(&format!(
            "INSERT INTO fed_deliveries ({DELIVERY_COLUMNS}) VALUES ("
        ))
        .bind(d.id.as_str())
        .push(", ")
        .bind(d.activity_id.as_str())
        .push(", ")
        .bind(d.actor.as_str())
        .push(", ")
        .bind(d.inbox.as_str())
        .push(", ")
        .bind(d.domain.as_str())
        .push(", ")
        .bind(d.body.as_str())
        .push(", ")
        .bind(d.attempts)
        .push(", ")
        .bind(d.next_attempt_at.as_str())
        .push(", ")
        .bind(d.state.as_str())
        .push(", ")
        .bind(d.last_error.clone())
        .push(", ")
        .bind(d.created_at.as_str())
        .push(")")
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn due_deliveries(db: &AnyPool, now: &str, limit: i64) -> StoreResult<Vec<Delivery>> {
    let rows = Sql::new(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM fed_deliveries WHERE state = 'Pending' AND next_attempt_at <= "
    ))
    .bind(now)
    .push(" ORDER BY next_attempt_at, id LIMIT ")
    .bind(limit)
    .fetch_all(db)
    .await?;
    map_rows(rows, delivery_from_row)
}

pub async fn delete_delivery(db: &AnyPool, id: &str) -> StoreResult<()> {
    Sql::new("DELETE FROM fed_deliveries WHERE id = ")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn retry_delivery(
    db: &AnyPool,
    id: &str,
    attempts: i64,
    next: &str,
    error: &str,
) -> StoreResult<()> {
    Sql::new("UPDATE fed_deliveries SET attempts = ")
        .bind(attempts)
        .push(", next_attempt_at = ")
        .bind(next)
        .push(", last_error = ")
        .bind(error)
        .push(" WHERE id = ")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn dead_letter(db: &AnyPool, id: &str, attempts: i64, error: &str) -> StoreResult<()> {
    Sql::new("UPDATE fed_deliveries SET state = 'Dead', attempts = ")
        .bind(attempts)
        .push(", last_error = ")
        .bind(error)
        .push(" WHERE id = ")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn dead_letter_domain(db: &AnyPool, domain: &str, error: &str) -> StoreResult<u64> {
    let mut q = Sql::new("UPDATE fed_deliveries SET state = 'Dead', last_error = ");
    q.bind(error).push(" WHERE state = 'Pending' AND ");
    q.push("domain = ").bind(domain);
    q.execute(db).await
}

pub async fn deliveries(
    db: &AnyPool,
    state: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Delivery>> {
    let mut q = Sql::new(&format!("SELECT {DELIVERY_COLUMNS} FROM fed_deliveries"));
    if let Some(s) = state {
        q.push(" WHERE state = ").bind(s);
    }
    q.push(" ORDER BY create_datetime DESC, id DESC");
    q.page(0, limit);
    let rows = q.fetch_all(db).await?;
    map_rows(rows, delivery_from_row)
}

pub async fn domain_list(db: &AnyPool, kind: ListKind) -> StoreResult<DomainList> {
    let mode = Sql::new("SELECT mode FROM domain_list_modes WHERE list = ")
        .bind(kind.as_str())
        .fetch_optional(db)
        .await?;
    let mode = match mode {
        Some(r) => r.parsed::<ListMode>("mode")?,
        None => ListMode::Deny,
    };
    let rows = Sql::new("SELECT domain FROM domain_rules WHERE list = ")
        .bind(kind.as_str())
        .push(" ORDER BY domain")
        .fetch_all(db)
        .await?;
    Ok(DomainList {
        mode,
        domains: map_rows(rows, |r| r.text("domain"))?,
    })
}

/// Replaces a list's mode and domains in one transaction.
pub async fn set_domain_list(db: &AnyPool, kind: ListKind, list: &DomainList) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    Sql::new("INSERT INTO domain_list_modes (list, mode) VALUES (")
        .bind(kind.as_str())
        .push(", ")
        .bind(list.mode.as_str())
        .push(") ON CONFLICT (list) DO UPDATE SET mode = excluded.mode")
        .execute(&mut *tx)
        .await?;
    Sql::new("DELETE FROM domain_rules WHERE list = ")
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
    let at = now();
    for d in &list.domains {
        Sql::new("INSERT INTO domain_rules (list, domain, create_datetime) VALUES (")
            .bind(kind.as_str())
            .push(", ")
            .bind(d.as_str())
            .push(", ")
            .bind(at.as_str())
            .push(") ON CONFLICT (list, domain) DO NOTHING")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
