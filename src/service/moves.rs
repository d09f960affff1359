//! Moving a Unit to another instance (SPEC §11), with no hand on the device.
//!
//! On B the user makes a one-time ticket. On A the owner asks to move the Unit to B with it:
//! A sends B (signed, as its instance actor) the Unit's archive (the export format, scope
//! one Unit, env and state storage sealed with a one-time passphrase sent alongside). B
//! imports it into the ticket's account and, once its copy of the registry is cloned, answers
//! A's status requests with the env.json that points the device at B. A then serves that env
//! to the device and sends it `EnvUpdate`, `SchemaUpdate` and `Reset` (again every
//! [`RESEND_SECS`] while it has not arrived: a device that was offline gets them when it comes
//! back). The device restarts into B; its first report there is its arrival, after which A
//! marks the move done: a `Move` activity, `movedTo` on the Unit's actor, and the old env
//! endpoint redirects to B. Until then the move can be cancelled and A keeps the Unit.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine;
use pepeunit_federation::peer::Peer;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::transfer::{ExportOptions, ExportScope};
use super::{Agent, Instance};
use crate::domain::{BackendTopicCommand, MoveRole, MoveState, Topic};
use crate::error::{AppError, AppResult};
use crate::store::moves::{self, UnitMove};
use crate::store::units::Unit;
use crate::{domain, store};

/// Seconds between two rounds of commands to a device that has not arrived yet.
pub const RESEND_SECS: i64 = 30;
/// How often the move task looks at moves in progress.
const POLL: Duration = Duration::from_secs(1);
/// Lifetime of a move ticket.
const TICKET_SECS: i64 = 3600;
/// Largest Unit archive carried by a move (base64 in a JSON body under axum's 2 MB limit).
const MAX_MOVE_ARCHIVE: usize = 1024 * 1024;
/// A move older than this that is not done asks the target only every [`SLOW_EVERY`]
/// rounds.
const SLOW_AFTER_SECS: i64 = 120;
const SLOW_EVERY: u64 = 10;

/// `POST /units/move/{uuid}` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The instance the Unit moves to, `host[:port]`.
    pub target_domain: String,
    /// A ticket made there by the account that receives the Unit
    /// (`POST /federation/move_tickets`).
    pub ticket: String,
}

/// A move as its owner sees it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MoveRead {
    pub uuid: Uuid,
    pub unit_uuid: Uuid,
    pub target_domain: String,
    /// The Unit's uuid on the target.
    pub remote_unit_uuid: Uuid,
    /// `Requested` (the target is preparing the device's env), `CommandsSent` (the device was
    /// told to fetch it and restart; waiting for it to report to the target), `Done`,
    /// `Cancelled`.
    pub state: MoveState,
    /// The Unit's actor on the target (`movedTo` once done).
    pub moved_to: Option<String>,
    pub last_error: Option<String>,
    pub commands_sent_datetime: Option<String>,
    pub create_datetime: String,
    pub last_update_datetime: String,
}

impl From<UnitMove> for MoveRead {
    fn from(m: UnitMove) -> Self {
        MoveRead {
            uuid: m.uuid,
            unit_uuid: m.unit_uuid,
            target_domain: m.peer_domain,
            remote_unit_uuid: m.remote_unit_uuid,
            state: m.state,
            moved_to: m.remote_actor,
            last_error: m.last_error,
            commands_sent_datetime: m.commands_sent_datetime,
            create_datetime: m.create_datetime,
            last_update_datetime: m.last_update_datetime,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TicketRead {
    /// Give it to the instance the Unit comes from; usable once.
    pub ticket: String,
    pub expires_datetime: String,
}

/// What `GET /units/env/{uuid}` answers for a Unit that is moving or moved.
pub enum MovedEnv {
    /// The env that points the device at the target.
    Env(Map<String, Value>),
    /// The Unit lives on another instance now: its env URL there.
    Redirect(String),
}

fn hash_ticket(ticket: &str) -> String {
    crate::crypto::hex(&Sha256::digest(ticket.as_bytes()))
}

fn later(secs: i64) -> String {
    domain::format_time(chrono::Utc::now().naive_utc() + chrono::Duration::seconds(secs))
}

fn peer_error(what: &str, e: impl std::fmt::Display) -> AppError {
    AppError::transfer(format!("{what}: {e}"))
}

impl Instance {
    /// A one-time ticket that lets another instance create one Unit in the caller's account.
    pub async fn create_move_ticket(&self, agent: &Agent) -> AppResult<TicketRead> {
        let user = agent.user()?;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let ticket = URL_SAFE_NO_PAD.encode(raw);
        let expires = later(TICKET_SECS);
        moves::insert_ticket(self.pool(), &hash_ticket(&ticket), user.uuid, &expires).await?;
        Ok(TicketRead {
            ticket,
            expires_datetime: expires,
        })
    }

    async fn own_unit(&self, agent: &Agent, uuid: Uuid) -> AppResult<Unit> {
        let user = agent.user()?;
        let unit = self.unit(uuid).await?;
        if unit.creator_uuid != user.uuid {
            return Err(AppError::no_access(
                "Only the creator of a unit can move it",
            ));
        }
        Ok(unit)
    }

    /// Starts moving a Unit (A's side): B imports it and answers with the Unit's new uuid.
    pub async fn start_move(
        &self,
        agent: &Agent,
        uuid: Uuid,
        req: MoveRequest,
    ) -> AppResult<MoveRead> {
        let unit = self.own_unit(agent, uuid).await?;
        if let Some(m) = moves::latest_for_unit(self.pool(), uuid, MoveRole::Outgoing).await? {
            if matches!(
                m.state,
                MoveState::Requested | MoveState::CommandsSent | MoveState::Done
            ) {
                return Err(AppError::transfer(format!(
                    "The unit is already {} to {}",
                    if m.state == MoveState::Done {
                        "moved"
                    } else {
                        "moving"
                    },
                    m.peer_domain
                )));
            }
        }
        let domain = pepeunit_federation::policy::normalize_domain(&req.target_domain)
            .map_err(|e| AppError::transfer(e.to_string()))?;
        if domain == self.config.domain {
            return Err(AppError::transfer("A unit cannot move to its own instance"));
        }
        if req.ticket.trim().is_empty() || req.ticket.len() > 200 {
            return Err(AppError::transfer("The ticket is missing or malformed"));
        }
        // the archive of this one unit, its secrets sealed with a one-time passphrase
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let passphrase = URL_SAFE_NO_PAD.encode(raw);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let opts = ExportOptions {
            passphrase: Some(passphrase.clone()),
            include_credentials: true,
        };
        let collect = tokio::spawn(super::transfer::collect(rx));
        self.export_archive(ExportScope::Unit(unit.uuid), &opts, tx, &|_| {})
            .await?;
        let archive = collect.await.map_err(AppError::internal)?;
        if archive.len() > MAX_MOVE_ARCHIVE {
            return Err(AppError::transfer(format!(
                "The unit's archive is {} bytes, more than a move carries ({MAX_MOVE_ARCHIVE})",
                archive.len()
            )));
        }
        let fed = &self.federation;
        let api = fed
            .peer_api_base(&domain)
            .await
            .map_err(|e| peer_error(&domain, e))?;
        let url = url::Url::parse(&format!("{api}/federation/peer/moves"))
            .map_err(|e| peer_error(&domain, e))?;
        let body = json!({
            "ticket": req.ticket.trim(),
            "unit_uuid": unit.uuid,
            "actor": fed.actor_id(pepeunit_federation::backend::LocalRef::Unit(unit.uuid)).to_string(),
            "archive": B64.encode(&archive),
            "passphrase": passphrase,
        });
        let reply = fed
            .peer_request(reqwest::Method::POST, &url, Some(&body))
            .await
            .map_err(|e| peer_error(&domain, e))?;
        if !reply.ok() {
            return Err(AppError::transfer(format!(
                "{domain} refused the move: {}",
                reply.reason()
            )));
        }
        let remote_unit = reply.body["unit_uuid"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| AppError::transfer(format!("{domain} answered without a unit uuid")))?;
        let now = domain::now();
        let m = UnitMove {
            uuid: Uuid::new_v4(),
            role: MoveRole::Outgoing,
            unit_uuid: unit.uuid,
            remote_unit_uuid: remote_unit,
            peer_domain: domain,
            user_uuid: unit.creator_uuid,
            state: MoveState::Requested,
            cipher_env: None,
            remote_actor: reply.body["actor"].as_str().map(str::to_string),
            remote_api: Some(api.to_string()),
            last_error: None,
            commands_sent_datetime: None,
            create_datetime: now.clone(),
            last_update_datetime: now,
        };
        moves::insert(self.pool(), &m).await?;
        Ok(m.into())
    }

    /// The Unit's latest move.
    pub async fn get_move(&self, agent: &Agent, uuid: Uuid) -> AppResult<MoveRead> {
        self.own_unit(agent, uuid).await?;
        moves::latest_for_unit(self.pool(), uuid, MoveRole::Outgoing)
            .await?
            .map(MoveRead::from)
            .ok_or_else(AppError::not_found)
    }

    /// Cancels a move that is not done: A keeps the Unit and B drops its copy.
    pub async fn cancel_move(&self, agent: &Agent, uuid: Uuid) -> AppResult<MoveRead> {
        self.own_unit(agent, uuid).await?;
        let mut m = moves::latest_for_unit(self.pool(), uuid, MoveRole::Outgoing)
            .await?
            .ok_or_else(AppError::not_found)?;
        match m.state.as_str() {
            "Done" => {
                return Err(AppError::transfer(
                    "The device has arrived at the target; the move cannot be cancelled",
                ))
            }
            "Cancelled" => return Ok(m.into()),
            _ => {}
        }
        // B's copy goes, unless the device reached it meanwhile
        let reply = self.ask_target(&m, reqwest::Method::DELETE).await;
        match reply {
            Ok(r) if r.status == 409 => {
                return Err(AppError::transfer(format!(
                    "The device has just arrived at {}; the move cannot be cancelled",
                    m.peer_domain
                )))
            }
            Ok(r) if !r.ok() && r.status != 404 => {
                m.last_error = Some(format!("target kept its copy: {}", r.reason()));
            }
            Err(e) => m.last_error = Some(format!("target kept its copy: {e}")),
            _ => {}
        }
        m.state = MoveState::Cancelled;
        m.cipher_env = None;
        moves::update(self.pool(), &m).await?;
        self.units_cache.invalidate(uuid);
        Ok(m.into())
    }

    async fn ask_target(
        &self,
        m: &UnitMove,
        method: reqwest::Method,
    ) -> Result<pepeunit_federation::peer::PeerReply, String> {
        let api = m.remote_api.as_deref().unwrap_or_default();
        let url = url::Url::parse(&format!("{api}/federation/peer/moves/{}", m.unit_uuid))
            .map_err(|e| e.to_string())?;
        self.federation
            .peer_request(method, &url, None)
            .await
            .map_err(|e| e.to_string())
    }

    /// What the env endpoint answers for a moving or moved Unit, if anything special.
    pub async fn moved_env(&self, agent: &Agent, uuid: Uuid) -> AppResult<Option<MovedEnv>> {
        let Some(m) = moves::latest_for_unit(self.pool(), uuid, MoveRole::Outgoing).await? else {
            return Ok(None);
        };
        match m.state.as_str() {
            "Done" => {
                let api = m.remote_api.unwrap_or_default();
                Ok(Some(MovedEnv::Redirect(format!(
                    "{api}/units/env/{}",
                    m.remote_unit_uuid
                ))))
            }
            "CommandsSent" if matches!(agent, Agent::Unit(u) if u.uuid == uuid) => {
                let Some(c) = &m.cipher_env else {
                    return Ok(None);
                };
                let env: Map<String, Value> =
                    serde_json::from_str(&self.cipher.decrypt(c)?).map_err(AppError::internal)?;
                Ok(Some(MovedEnv::Env(env)))
            }
            _ => Ok(None),
        }
    }

    /// The task that drives outgoing moves until stopped.
    pub async fn run_moves(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut round: u64 = 0;
        loop {
            round += 1;
            match moves::active_outgoing(self.pool()).await {
                Ok(list) => {
                    for m in list {
                        // a device that stays away (switched off), or a target that stays
                        // unreachable, is asked about less often
                        let waiting_long =
                            domain::parse_time(&m.create_datetime).is_some_and(|t| {
                                chrono::Utc::now().naive_utc() - t
                                    > chrono::Duration::seconds(SLOW_AFTER_SECS)
                            });
                        if waiting_long && !round.is_multiple_of(SLOW_EVERY) {
                            continue;
                        }
                        let uuid = m.uuid;
                        if let Err(e) = self.advance_move(m).await {
                            tracing::warn!(%uuid, "move: {}", e.detail());
                        }
                    }
                }
                Err(e) => tracing::warn!("moves: {}", e),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn advance_move(&self, mut m: UnitMove) -> AppResult<()> {
        let reply = match self.ask_target(&m, reqwest::Method::GET).await {
            Ok(r) => r,
            Err(e) => {
                m.last_error = Some(e);
                return Ok(moves::update(self.pool(), &m).await?);
            }
        };
        if !reply.ok() {
            m.last_error = Some(reply.reason());
            if reply.status == 404 || reply.status == 410 {
                // the target dropped its copy: the unit stays here
                m.state = MoveState::Cancelled;
                m.cipher_env = None;
            }
            return Ok(moves::update(self.pool(), &m).await?);
        }
        let state = reply.body["state"].as_str().unwrap_or_default();
        if state == "Arrived" {
            m.state = MoveState::Done;
            m.last_error = None;
            moves::update(self.pool(), &m).await?;
            self.units_cache.invalidate(m.unit_uuid);
            if let Some(target) = &m.remote_actor {
                if let Err(e) = self.federation.announce_move(m.unit_uuid, target).await {
                    tracing::warn!("move: announcing {}: {e}", m.unit_uuid);
                }
            }
            self.federation_changed(pepeunit_federation::backend::LocalRef::Unit(m.unit_uuid));
            tracing::info!(unit = %m.unit_uuid, to = %m.peer_domain, "unit moved");
            return Ok(());
        }
        let env = match reply.body.get("env") {
            Some(Value::Object(env)) if state == "Ready" => env.clone(),
            _ => {
                m.last_error = None;
                return Ok(moves::update(self.pool(), &m).await?);
            }
        };
        if m.state == MoveState::CommandsSent && m.last_error.is_none() {
            // once the device has its new schema it listens only to the new instance's topics
            // (which it may subscribe to here while it moves): Reset goes there, every round
            let topic = Topic::command(
                &m.peer_domain,
                m.remote_unit_uuid,
                BackendTopicCommand::Reset,
            )
            .to_string();
            let _ = self
                .outbox
                .publish(&topic, json!({"COMMAND": "Reset"}).to_string());
        }
        let due = match &m.commands_sent_datetime {
            None => true,
            Some(t) => domain::parse_time(t).is_none_or(|t| {
                chrono::Utc::now().naive_utc() - t > chrono::Duration::seconds(RESEND_SECS)
            }),
        };
        if !due {
            return Ok(());
        }
        m.cipher_env = Some(
            self.cipher
                .encrypt(&serde_json::to_string(&env).map_err(AppError::internal)?)?,
        );
        m.state = MoveState::CommandsSent;
        m.commands_sent_datetime = Some(domain::now());
        m.last_error = None;
        // the env must be in place before the device asks for it
        moves::update(self.pool(), &m).await?;
        let unit = self.unit(m.unit_uuid).await?;
        let mut missing = Vec::new();
        // EnvUpdate then SchemaUpdate on our topics; Reset is sent on the new instance's
        // topics (above), since after SchemaUpdate the device no longer knows ours. Without
        // all three topics in its schema the device moves when it next restarts by itself.
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(&unit, &repo).await?;
        let (_, schema) = self.repo_files(&repo, &version.commit).await?;
        for needed in [
            "env_update/pepeunit",
            "schema_update/pepeunit",
            "reset/pepeunit",
        ] {
            if !schema.input_base_topic.iter().any(|t| t == needed) {
                missing.push(needed);
            }
        }
        if !missing.is_empty() {
            m.last_error = Some(format!(
                "the unit's schema has no {}: the device cannot be moved remotely; it moves when it next downloads its env and restarts",
                missing.join(", ")
            ));
            return Ok(moves::update(self.pool(), &m).await?);
        }
        for cmd in [
            BackendTopicCommand::EnvUpdate,
            BackendTopicCommand::SchemaUpdate,
        ] {
            match self.publish_command(&unit, cmd).await {
                Ok(_) => {}
                Err(e) => {
                    m.last_error = Some(format!("{}: {}", cmd.as_str(), e.message()));
                    return Ok(moves::update(self.pool(), &m).await?);
                }
            }
        }
        Ok(())
    }

    // ---- B's side: requests signed by A's instance actor ----

    /// A asks to create one of its Units here with a ticket of ours.
    pub async fn peer_move_create(&self, peer: &Peer, body: &Value) -> AppResult<Value> {
        let ticket = body["ticket"].as_str().unwrap_or_default();
        let remote = body["unit_uuid"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| AppError::transfer("unit_uuid is missing"))?;
        let archive = body["archive"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| AppError::transfer("archive is missing or not base64"))?;
        let passphrase = body["passphrase"].as_str().map(str::to_string);
        if let Some(existing) = moves::incoming(self.pool(), &peer.domain, remote).await? {
            if existing.state != MoveState::Cancelled {
                return Err(AppError::transfer(
                    "This unit is already moving here; cancel that move first",
                ));
            }
        }
        let user = moves::take_ticket(self.pool(), &hash_ticket(ticket), &domain::now())
            .await?
            .ok_or_else(|| AppError::no_access("The move ticket is unknown, used or expired"))?;
        let report = self
            .import_archive(user, archive, passphrase, &|_| {})
            .await?;
        let local = report
            .map
            .get(&remote.to_string())
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| AppError::transfer("The archive does not hold the unit that moves"))?;
        // what the device reported over there is history here: its first report is arrival
        moves::clear_reported_state(self.pool(), local).await?;
        self.units_cache.invalidate(local);
        self.sync_imported(&report);
        let now = domain::now();
        let m = UnitMove {
            uuid: Uuid::new_v4(),
            role: MoveRole::Incoming,
            unit_uuid: local,
            remote_unit_uuid: remote,
            peer_domain: peer.domain.clone(),
            user_uuid: user,
            state: MoveState::Imported,
            cipher_env: None,
            remote_actor: body["actor"].as_str().map(str::to_string),
            remote_api: None,
            last_error: None,
            commands_sent_datetime: None,
            create_datetime: now.clone(),
            last_update_datetime: now,
        };
        moves::insert(self.pool(), &m).await?;
        tracing::info!(unit = %local, from = %peer.domain, "unit moving here");
        Ok(json!({
            "unit_uuid": local,
            "actor": self.federation.actor_id(pepeunit_federation::backend::LocalRef::Unit(local)).to_string(),
            "report": report,
        }))
    }

    async fn incoming_of(&self, peer: &Peer, remote: Uuid) -> AppResult<UnitMove> {
        moves::incoming(self.pool(), &peer.domain, remote)
            .await?
            .filter(|m| m.state != MoveState::Cancelled)
            .ok_or_else(AppError::not_found)
    }

    /// A asks how its move is going: `Syncing` (our copy of the firmware registry is not
    /// ready), `Ready` with the device's env, or `Arrived`.
    pub async fn peer_move_status(&self, peer: &Peer, remote: Uuid) -> AppResult<Value> {
        let mut m = self.incoming_of(peer, remote).await?;
        let unit = self.unit(m.unit_uuid).await?;
        if unit.unit_state.is_some() && m.state != MoveState::Arrived {
            m.state = MoveState::Arrived;
            moves::update(self.pool(), &m).await?;
        }
        if m.state == MoveState::Arrived {
            return Ok(json!({"state": "Arrived", "unit_uuid": unit.uuid}));
        }
        match self.build_unit_env(&unit).await {
            Ok(env) => Ok(json!({"state": "Ready", "unit_uuid": unit.uuid, "env": env})),
            Err(e) => {
                Ok(json!({"state": "Syncing", "unit_uuid": unit.uuid, "detail": e.message()}))
            }
        }
    }

    /// A cancels: our copy goes unless the device already arrived (409).
    pub async fn peer_move_cancel(&self, peer: &Peer, remote: Uuid) -> AppResult<bool> {
        let mut m = self.incoming_of(peer, remote).await?;
        let unit = self.unit(m.unit_uuid).await?;
        if m.state == MoveState::Arrived || unit.unit_state.is_some() {
            return Ok(false);
        }
        let owner = store::users::get(self.pool(), m.user_uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        self.delete_unit(&Agent::User(Box::new(owner)), unit.uuid)
            .await?;
        m.state = MoveState::Cancelled;
        moves::update(self.pool(), &m).await?;
        Ok(true)
    }
}
