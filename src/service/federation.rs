//! Federation's side of the service layer: [`DbBackend`] (the storage interface the
//! federation crate asks for, over our database and git mirrors) and the admin operations
//! behind `/federation/...` and `/hub/search` (follows, domain lists, deliveries, search).

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use pepeunit_federation::backend::{
    Backend, BackendError, BackendResult, Delivery, Following, LocalObject, LocalRef, NodeSummary,
    RemoteActor, RemoteObject, RepoData, UnitData, UsageCounts,
};
use pepeunit_federation::hub::{HubKind, HubPage, HubQuery};
use pepeunit_federation::policy::{self, DomainList, ListKind, ListMode};
use pepeunit_federation::{FedError, Federation, Settings};

use super::{Agent, Instance};
use crate::config::Config;
use crate::domain::{UserRole, UserStatus, VisibilityLevel};
use crate::error::{AppError, AppResult};
use crate::store::{self, Db};

const INSTANCE_KEY: &str = "instance";

/// The federation crate's storage, over our database.
pub struct DbBackend {
    db: Db,
    config: Arc<Config>,
    git: crate::git::Git,
}

/// Largest README text published and indexed.
const MAX_README: usize = 64 * 1024;

fn backend_err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

impl DbBackend {
    /// The README at the head of `branch` (from the mirror's cached reads), cut at
    /// [`MAX_README`]; empty when there is none or the mirror is not there yet.
    async fn readme(&self, registry: Uuid, branch: Option<&str>) -> String {
        let Some(branch) = branch else {
            return String::new();
        };
        let Ok(commits) = self.git.commits(registry, branch, false, 0, 1).await else {
            return String::new();
        };
        let Some(head) = commits.first() else {
            return String::new();
        };
        for name in ["README.md", "readme.md", "README", "README.txt"] {
            if let Ok(Some(bytes)) = self.git.read_file(registry, &head.commit, name).await {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_README)]);
                return text.into_owned();
            }
        }
        String::new()
    }

    async fn repo_data(&self, repo: store::repos::Repo) -> AppResult<RepoData> {
        let registry = store::registries::get(&self.db.pool, repo.repository_registry_uuid).await?;
        // the git URL of a private registry stays here, as it does for anonymous local callers
        let (clone_url, platform) = registry
            .map(|r| {
                let url = if r.is_public_repository {
                    r.repository_url
                } else {
                    String::new()
                };
                (url, r.platform.as_str().to_string())
            })
            .unwrap_or_default();
        let readme = self
            .readme(
                repo.repository_registry_uuid,
                repo.default_branch.as_deref(),
            )
            .await;
        // the README's first line (a title, usually) describes the Repo
        let description: String = readme
            .lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Ok(RepoData {
            uuid: repo.uuid,
            name: repo.name,
            description,
            readme,
            clone_url,
            platform,
            default_branch: repo.default_branch,
            creator: repo.creator_uuid,
            created: repo.create_datetime,
            updated: repo.last_update_datetime,
        })
    }

    async fn unit_data(&self, unit: store::units::Unit) -> AppResult<UnitData> {
        let pool = &self.db.pool;
        let repo = store::repos::get(pool, unit.repo_uuid).await?;
        // a Public Unit of a non-public Repo does not reveal the Repo
        let (repo, repo_name, platform) = match repo {
            Some(r) if r.visibility_level == VisibilityLevel::Public => {
                let reg = store::registries::get(pool, r.repository_registry_uuid).await?;
                (
                    Some(r.uuid),
                    r.name,
                    reg.map(|g| g.platform.as_str().to_string())
                        .unwrap_or_default(),
                )
            }
            _ => (None, String::new(), String::new()),
        };
        let nodes = store::unit_nodes::by_unit(pool, unit.uuid)
            .await?
            .into_iter()
            .filter(|n| n.visibility_level == VisibilityLevel::Public)
            .map(|n| NodeSummary {
                topic: n.topic_name,
                kind: n.node_type.as_str().to_string(),
            })
            .collect();
        Ok(UnitData {
            uuid: unit.uuid,
            name: unit.name,
            description: String::new(),
            repo,
            repo_name,
            platform,
            firmware_version: unit.current_commit_version,
            nodes,
            creator: unit.creator_uuid,
            created: unit.create_datetime,
            updated: unit.last_update_datetime,
            moved_to: store::moves::latest_for_unit(
                &self.db.pool,
                unit.uuid,
                crate::domain::MoveRole::Outgoing,
            )
            .await?
            .filter(|m| m.state == crate::domain::MoveState::Done)
            .and_then(|m| m.remote_actor),
        })
    }

    async fn object(&self, r: LocalRef) -> AppResult<Option<LocalObject>> {
        let pool = &self.db.pool;
        Ok(match r {
            LocalRef::Instance => Some(LocalObject::Instance {
                name: self.config.instance_name.clone(),
                summary: format!(
                    "Pepeunit instance {}: public Repos and Units of its users",
                    self.config.domain
                ),
            }),
            LocalRef::User(uuid) => store::users::get(pool, uuid)
                .await?
                .filter(|u| u.status != UserStatus::Blocked)
                .map(|u| LocalObject::User {
                    uuid: u.uuid,
                    login: u.login,
                    created: u.create_datetime,
                }),
            LocalRef::Repo(uuid) => match store::repos::get(pool, uuid).await? {
                Some(r) if r.visibility_level == VisibilityLevel::Public => {
                    Some(LocalObject::Repo(self.repo_data(r).await?))
                }
                _ => None,
            },
            LocalRef::Unit(uuid) => match store::units::get(pool, uuid).await? {
                Some(u) if u.visibility_level == VisibilityLevel::Public => {
                    Some(LocalObject::Unit(self.unit_data(u).await?))
                }
                _ => None,
            },
        })
    }

    async fn public_page(&self, offset: i64, limit: i64) -> AppResult<(i64, Vec<LocalObject>)> {
        let pool = &self.db.pool;
        let repos = store::repos::count_public(pool).await?;
        let units = store::units::count_public(pool).await?;
        let mut out = Vec::new();
        if offset < repos {
            for r in store::repos::public_page(pool, offset, limit).await? {
                out.push(LocalObject::Repo(self.repo_data(r).await?));
            }
        }
        let left = limit - out.len() as i64;
        if left > 0 {
            let unit_offset = (offset - repos).max(0);
            for u in store::units::public_page(pool, unit_offset, left).await? {
                out.push(LocalObject::Unit(self.unit_data(u).await?));
            }
        }
        Ok((repos + units, out))
    }
}

macro_rules! db {
    ($e:expr) => {
        $e.await.map_err(backend_err)
    };
}

#[async_trait]
impl Backend for DbBackend {
    async fn local_object(&self, r: LocalRef) -> BackendResult<Option<LocalObject>> {
        db!(self.object(r))
    }
    async fn user_by_login(&self, login: &str) -> BackendResult<Option<Uuid>> {
        let user = db!(store::users::get_by_login(&self.db.pool, login))?;
        Ok(user
            .filter(|u| u.status != UserStatus::Blocked)
            .map(|u| u.uuid))
    }
    async fn public_objects(
        &self,
        offset: i64,
        limit: i64,
    ) -> BackendResult<(i64, Vec<LocalObject>)> {
        db!(self.public_page(offset, limit))
    }
    async fn usage(&self) -> BackendResult<UsageCounts> {
        let pool = &self.db.pool;
        Ok(UsageCounts {
            users: db!(store::users::count(pool))?,
            public_repos: db!(store::repos::count_public(pool))?,
            public_units: db!(store::units::count_public(pool))?,
        })
    }
    async fn instance_key(&self) -> BackendResult<Option<(String, String)>> {
        db!(store::federation::key(&self.db.pool, INSTANCE_KEY))
    }
    async fn store_instance_key(
        &self,
        private: &str,
        public: &str,
    ) -> BackendResult<(String, String)> {
        db!(store::federation::insert_key(
            &self.db.pool,
            INSTANCE_KEY,
            private,
            public
        ))?;
        db!(store::federation::key(&self.db.pool, INSTANCE_KEY))?
            .ok_or_else(|| BackendError("instance key vanished".into()))
    }
    async fn published(&self, actor: &str) -> BackendResult<Option<String>> {
        db!(store::federation::published(&self.db.pool, actor))
    }
    async fn set_published(&self, actor: &str, mark: Option<&str>) -> BackendResult<()> {
        db!(store::federation::set_published(&self.db.pool, actor, mark))
    }
    async fn published_all(&self) -> BackendResult<Vec<String>> {
        db!(store::federation::published_all(&self.db.pool))
    }
    async fn add_follower(
        &self,
        local: &str,
        follower: &str,
        inbox: &str,
        follow_id: &str,
    ) -> BackendResult<bool> {
        let domain = url::Url::parse(follower)
            .ok()
            .and_then(|u| pepeunit_federation::documents::domain_of(&u))
            .unwrap_or_default();
        db!(store::federation::add_follower(
            &self.db.pool,
            local,
            follower,
            &domain,
            inbox,
            follow_id
        ))
    }
    async fn remove_follow(&self, follower: &str, follow_id: &str) -> BackendResult<bool> {
        db!(store::federation::remove_follow(
            &self.db.pool,
            follower,
            follow_id
        ))
    }
    async fn remove_follower(&self, local: &str, follower: &str) -> BackendResult<()> {
        db!(store::federation::remove_follower(
            &self.db.pool,
            local,
            follower
        ))
    }
    async fn followers(
        &self,
        local: &str,
        offset: i64,
        limit: i64,
    ) -> BackendResult<(i64, Vec<String>)> {
        db!(store::federation::followers(
            &self.db.pool,
            local,
            offset,
            limit
        ))
    }
    async fn follower_inboxes(&self, locals: &[String]) -> BackendResult<Vec<String>> {
        db!(store::federation::follower_inboxes(&self.db.pool, locals))
    }
    async fn follower_domains(&self) -> BackendResult<Vec<String>> {
        db!(store::federation::follower_domains(&self.db.pool))
    }
    async fn remove_followers_on(&self, domain: &str) -> BackendResult<u64> {
        db!(store::federation::remove_followers_on(
            &self.db.pool,
            domain
        ))
    }
    async fn upsert_following(&self, f: &Following) -> BackendResult<()> {
        db!(store::federation::upsert_following(&self.db.pool, f))
    }
    async fn following(&self, follower: &str, target: &str) -> BackendResult<Option<Following>> {
        db!(store::federation::following(
            &self.db.pool,
            follower,
            target
        ))
    }
    async fn set_following_state(&self, follow_id: &str, state: &str) -> BackendResult<bool> {
        db!(store::federation::set_following_state(
            &self.db.pool,
            follow_id,
            state
        ))
    }
    async fn answer_follow(
        &self,
        follow_id: &str,
        target: &str,
        state: &str,
    ) -> BackendResult<bool> {
        db!(store::federation::answer_follow(
            &self.db.pool,
            follow_id,
            target,
            state
        ))
    }
    async fn following_list(&self, follower: &str) -> BackendResult<Vec<Following>> {
        db!(store::federation::following_list(&self.db.pool, follower))
    }
    async fn followers_of_remote(&self, target: &str) -> BackendResult<Vec<Following>> {
        db!(store::federation::following_of_target(
            &self.db.pool,
            target
        ))
    }
    async fn remote_actor(&self, id: &str) -> BackendResult<Option<RemoteActor>> {
        db!(store::federation::remote_actor(&self.db.pool, id))
    }
    async fn store_remote_actor(&self, actor: &RemoteActor) -> BackendResult<()> {
        db!(store::federation::store_remote_actor(&self.db.pool, actor))
    }
    async fn upsert_remote_object(&self, object: &RemoteObject) -> BackendResult<()> {
        db!(store::federation::upsert_remote_object(
            &self.db.pool,
            object
        ))
    }
    async fn remove_remote_object(&self, id: &str) -> BackendResult<bool> {
        db!(store::federation::remove_remote_object(&self.db.pool, id))
    }
    async fn remove_remote_objects_on(&self, domain: &str) -> BackendResult<u64> {
        db!(store::federation::remove_remote_objects_on(
            &self.db.pool,
            domain
        ))
    }
    async fn remote_objects(&self, offset: i64, limit: i64) -> BackendResult<Vec<RemoteObject>> {
        db!(store::federation::remote_objects(
            &self.db.pool,
            offset,
            limit
        ))
    }
    async fn first_sight(&self, activity_id: &str) -> BackendResult<bool> {
        db!(store::federation::first_sight(&self.db.pool, activity_id))
    }
    async fn forget_sight(&self, activity_id: &str) -> BackendResult<()> {
        db!(store::federation::forget_sight(&self.db.pool, activity_id))
    }
    async fn enqueue(&self, deliveries: &[Delivery]) -> BackendResult<()> {
        db!(store::federation::enqueue(&self.db.pool, deliveries))
    }
    async fn due_deliveries(&self, now: &str, limit: i64) -> BackendResult<Vec<Delivery>> {
        db!(store::federation::due_deliveries(&self.db.pool, now, limit))
    }
    async fn delivered(&self, id: &str) -> BackendResult<()> {
        db!(store::federation::delete_delivery(&self.db.pool, id))
    }
    async fn retry_later(
        &self,
        id: &str,
        attempts: i64,
        next: &str,
        error: &str,
    ) -> BackendResult<()> {
        db!(store::federation::retry_delivery(
            &self.db.pool,
            id,
            attempts,
            next,
            error
        ))
    }
    async fn dead_letter(&self, id: &str, attempts: i64, error: &str) -> BackendResult<()> {
        db!(store::federation::dead_letter(
            &self.db.pool,
            id,
            attempts,
            error
        ))
    }
    async fn dead_letter_domain(&self, domain: &str, error: &str) -> BackendResult<u64> {
        db!(store::federation::dead_letter_domain(
            &self.db.pool,
            domain,
            error
        ))
    }
    async fn deliveries(&self, state: Option<&str>, limit: i64) -> BackendResult<Vec<Delivery>> {
        db!(store::federation::deliveries(&self.db.pool, state, limit))
    }
    async fn domain_list(&self, kind: ListKind) -> BackendResult<DomainList> {
        db!(store::federation::domain_list(&self.db.pool, kind))
    }
}

/// Starts federation over `db`: instance key, policy, hub index at `{data}/hub`.
pub async fn start_federation(
    config: &Arc<Config>,
    db: &Db,
    git: &crate::git::Git,
) -> anyhow::Result<Federation> {
    let settings = Settings {
        origin: config.origin(),
        domain: config.domain.clone(),
        prefix: config.app_prefix.clone(),
        allow_local: config.allow_local_network,
        local_address: crate::net::local_address_class,
        authorized_fetch: config.federation_authorized_fetch,
        retry_base: std::time::Duration::from_secs(config.federation_retry_base_secs),
        max_attempts: config.federation_max_attempts,
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        instance_name: config.instance_name.clone(),
        load_limit_url: Some(format!(
            "{}{}{}/load_limit",
            config.origin(),
            config.app_prefix,
            config.api_prefix
        )),
    };
    let hub_dir = config.data_dir.join("hub");
    let hub = tokio::task::spawn_blocking(move || pepeunit_federation::hub::Hub::open(&hub_dir))
        .await??;
    let backend = Arc::new(DbBackend {
        db: db.clone(),
        config: config.clone(),
        git: git.clone(),
    });
    let fed = Federation::start(settings, backend, hub).await?;
    if fed.hub().needs_rebuild() {
        let n = fed.reindex(|_| {}).await?;
        tracing::info!("hub index rebuilt: {n} documents");
    }
    Ok(fed)
}

fn fed_error(e: FedError) -> AppError {
    match e {
        FedError::Denied(d) => AppError::validation(format!(
            "Domain {d} is refused by this instance's federation policy"
        )),
        FedError::Invalid(m) => AppError::validation(m),
        FedError::Remote(m) => AppError::validation(format!("Remote instance: {m}")),
        other => AppError::internal(other.to_string()),
    }
}

/// Body of `POST /federation/follow`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowRequest {
    /// `host[:port]` of the instance whose hub feed to follow.
    pub domain: String,
}

/// Body of `POST /federation/repos/follow` and `.../unfollow`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoFollowRequest {
    /// The remote Repo's ActivityPub id (the `url` of a hub search result).
    pub url: String,
}

/// A follow of another instance or of a remote Repo.
#[derive(Serialize, ToSchema)]
pub struct FollowRead {
    pub domain: String,
    pub actor: String,
    /// `Pending`, `Accepted`, `Rejected` or `Undone`.
    pub state: String,
    pub create_datetime: String,
}

impl From<Following> for FollowRead {
    fn from(f: Following) -> Self {
        FollowRead {
            domain: f.target_domain,
            actor: f.target,
            state: f.state,
            create_datetime: f.created_at,
        }
    }
}

/// A domain list as the admin API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DomainListRead {
    /// `federation` or `git_hosts`.
    pub list: String,
    /// `deny` (everything but the listed domains) or `allow` (only the listed domains).
    pub mode: String,
    pub domains: Vec<String>,
}

/// A queued or dead-lettered delivery.
#[derive(Serialize, ToSchema)]
pub struct DeliveryRead {
    pub id: String,
    pub activity_id: String,
    pub inbox: String,
    pub domain: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub state: String,
    pub last_error: Option<String>,
    pub create_datetime: String,
}

impl Instance {
    fn require_admin(&self, agent: &Agent) -> AppResult<()> {
        match agent {
            Agent::User(u) if u.role == UserRole::Admin => Ok(()),
            Agent::User(_) => Err(AppError::no_access("Only admins manage federation")),
            _ => Err(AppError::no_access("Only admins manage federation")),
        }
    }

    /// Forgets ids of incoming activities older than a week (kept so that redeliveries are
    /// recognised; senders stop retrying well before).
    pub async fn purge_seen_activities(&self) -> AppResult<u64> {
        let before = (chrono::Utc::now() - chrono::Duration::days(7))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Ok(store::federation::purge_seen(&self.db.pool, &before).await?)
    }

    /// Tells federation a local Repo or Unit changed (after its transaction committed).
    pub fn federation_changed(&self, r: LocalRef) {
        self.federation.changed(r);
    }

    pub async fn follow_instance(
        &self,
        agent: &Agent,
        req: FollowRequest,
    ) -> AppResult<FollowRead> {
        self.require_admin(agent)?;
        let domain = policy::normalize_domain(&req.domain)
            .map_err(|e| AppError::validation(e.to_string()))?;
        Ok(self
            .federation
            .follow_instance(&domain)
            .await
            .map_err(fed_error)?
            .into())
    }

    /// A user follows a remote Repo (by its actor id); its Updates then reach this instance.
    pub async fn follow_remote_repo(
        &self,
        agent: &Agent,
        req: RepoFollowRequest,
    ) -> AppResult<FollowRead> {
        let user = agent.user()?;
        let url = url::Url::parse(req.url.trim())
            .map_err(|_| AppError::validation("url must be the Repo's ActivityPub id"))?;
        Ok(self
            .federation
            .follow_actor(LocalRef::User(user.uuid), &url)
            .await
            .map_err(fed_error)?
            .into())
    }

    pub async fn unfollow_remote_repo(&self, agent: &Agent, url: &str) -> AppResult<()> {
        let user = agent.user()?;
        if self
            .federation
            .unfollow_actor(LocalRef::User(user.uuid), url.trim())
            .await
            .map_err(fed_error)?
        {
            Ok(())
        } else {
            Err(AppError::not_found())
        }
    }

    /// Remote Repos the calling user follows.
    pub async fn followed_repos(&self, agent: &Agent) -> AppResult<Vec<FollowRead>> {
        let user = agent.user()?;
        let me = self.federation.actor_id(LocalRef::User(user.uuid));
        let list = store::federation::following_list(&self.db.pool, me.as_str()).await?;
        Ok(list
            .into_iter()
            .filter(|f| f.state != "Undone")
            .map(FollowRead::from)
            .collect())
    }

    pub async fn unfollow_instance(&self, agent: &Agent, domain: &str) -> AppResult<()> {
        self.require_admin(agent)?;
        let domain =
            policy::normalize_domain(domain).map_err(|e| AppError::validation(e.to_string()))?;
        if self
            .federation
            .unfollow_instance(&domain)
            .await
            .map_err(fed_error)?
        {
            Ok(())
        } else {
            Err(AppError::not_found())
        }
    }

    pub async fn followed_instances(&self, agent: &Agent) -> AppResult<Vec<FollowRead>> {
        self.require_admin(agent)?;
        let me = self.federation.actor_id(LocalRef::Instance);
        let list = store::federation::following_list(&self.db.pool, me.as_str()).await?;
        Ok(list.into_iter().map(FollowRead::from).collect())
    }

    pub async fn deliveries(
        &self,
        agent: &Agent,
        state: Option<&str>,
        limit: i64,
    ) -> AppResult<Vec<DeliveryRead>> {
        self.require_admin(agent)?;
        if let Some(s) = state {
            if s != "Pending" && s != "Dead" {
                return Err(AppError::validation("state must be Pending or Dead"));
            }
        }
        let rows = store::federation::deliveries(&self.db.pool, state, limit).await?;
        Ok(rows
            .into_iter()
            .map(|d| DeliveryRead {
                id: d.id,
                activity_id: d.activity_id,
                inbox: d.inbox,
                domain: d.domain,
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at,
                state: d.state,
                last_error: d.last_error,
                create_datetime: d.created_at,
            })
            .collect())
    }

    pub async fn domain_list(&self, agent: &Agent, list: &str) -> AppResult<DomainListRead> {
        self.require_admin(agent)?;
        let kind = list_kind(list)?;
        let l = store::federation::domain_list(&self.db.pool, kind).await?;
        Ok(read_list(kind, l))
    }

    /// Replaces a list (mode and domains); every domain is checked first, nothing is stored
    /// when one is invalid.
    pub async fn set_domain_list(
        &self,
        agent: &Agent,
        list: &str,
        mode: &str,
        domains: &[String],
    ) -> AppResult<DomainListRead> {
        self.require_admin(agent)?;
        let kind = list_kind(list)?;
        let mode = ListMode::from_str(mode).map_err(|e| AppError::validation(e.to_string()))?;
        let mut normalized: Vec<String> = Vec::new();
        for d in domains {
            let d = policy::normalize_domain(d).map_err(|e| AppError::validation(e.to_string()))?;
            if !normalized.contains(&d) {
                normalized.push(d);
            }
        }
        if normalized.len() > 100_000 {
            return Err(AppError::validation("A list holds at most 100000 domains"));
        }
        normalized.sort();
        let l = DomainList {
            mode,
            domains: normalized,
        };
        store::federation::set_domain_list(&self.db.pool, kind, &l).await?;
        if kind == ListKind::Federation {
            self.federation.reload_policy().await.map_err(fed_error)?;
        }
        Ok(read_list(kind, l))
    }

    pub async fn add_domain(
        &self,
        agent: &Agent,
        list: &str,
        domain: &str,
    ) -> AppResult<DomainListRead> {
        let current = self.domain_list(agent, list).await?;
        let mut domains = current.domains;
        domains.push(domain.to_string());
        self.set_domain_list(agent, list, &current.mode, &domains)
            .await
    }

    pub async fn remove_domain(
        &self,
        agent: &Agent,
        list: &str,
        domain: &str,
    ) -> AppResult<DomainListRead> {
        let current = self.domain_list(agent, list).await?;
        let domain =
            policy::normalize_domain(domain).map_err(|e| AppError::validation(e.to_string()))?;
        if !current.domains.contains(&domain) {
            return Err(AppError::not_found());
        }
        let domains: Vec<String> = current
            .domains
            .into_iter()
            .filter(|d| *d != domain)
            .collect();
        self.set_domain_list(agent, list, &current.mode, &domains)
            .await
    }

    pub async fn export_domain_csv(&self, agent: &Agent, list: &str) -> AppResult<String> {
        let l = self.domain_list(agent, list).await?;
        Ok(policy::to_csv(&l.domains))
    }

    /// Imports a CSV list: `replace` swaps the list's domains, otherwise they are added.
    pub async fn import_domain_csv(
        &self,
        agent: &Agent,
        list: &str,
        csv: &str,
        replace: bool,
    ) -> AppResult<DomainListRead> {
        let current = self.domain_list(agent, list).await?;
        let parsed = policy::parse_csv(csv).map_err(|e| AppError::validation(e.to_string()))?;
        let domains = if replace {
            parsed
        } else {
            current.domains.into_iter().chain(parsed).collect()
        };
        self.set_domain_list(agent, list, &current.mode, &domains)
            .await
    }

    /// Refuses a registry URL whose host the `git_hosts` list does not permit.
    pub async fn check_git_host(&self, repository_url: &str) -> AppResult<()> {
        let host = url::Url::parse(repository_url)
            .ok()
            .and_then(|u| pepeunit_federation::documents::domain_of(&u))
            .ok_or_else(|| AppError::validation("Repository URL has no host"))?;
        let l = store::federation::domain_list(&self.db.pool, ListKind::GitHosts).await?;
        if l.permits(&host) {
            Ok(())
        } else {
            Err(AppError::validation(format!(
                "Git host {host} is not permitted on this instance"
            )))
        }
    }

    /// `GET /hub/search`: anyone may search the public hub.
    pub async fn hub_search(&self, q: HubSearch) -> AppResult<HubPage> {
        let kind = match q.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(
                HubKind::from_str(k)
                    .map_err(|_| AppError::validation("kind must be Repo or Unit"))?,
            ),
        };
        let limit = q.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(AppError::bare("limit must be between 1 and 100"));
        }
        let offset = q.offset.unwrap_or(0);
        if !(0..=10_000).contains(&offset) {
            return Err(AppError::bare("offset must be between 0 and 10000"));
        }
        let text = q.q.unwrap_or_default();
        if text.chars().count() > 500 {
            return Err(AppError::validation("q is at most 500 characters"));
        }
        let instance = match q.instance.as_deref() {
            None | Some("") => None,
            Some(i) => {
                Some(policy::normalize_domain(i).map_err(|e| AppError::validation(e.to_string()))?)
            }
        };
        self.federation
            .search(HubQuery {
                q: text,
                kind,
                instance,
                offset: offset as usize,
                limit: limit as usize,
            })
            .await
            .map_err(fed_error)
    }
}

/// Query of `GET /hub/search`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HubSearch {
    /// Words to look for in names, descriptions, READMEs and topics; empty lists everything.
    #[param(max_length = 500)]
    pub q: Option<String>,
    /// `Repo` or `Unit`.
    #[param(schema_with = hub_kind_schema)]
    pub kind: Option<String>,
    /// Only results from this instance (`host[:port]`).
    pub instance: Option<String>,
    /// 0 to 10,000, default 0.
    #[param(minimum = 0, maximum = 10_000)]
    pub offset: Option<i64>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
}

/// The documented values of [`HubSearch::kind`].
fn hub_kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["Repo", "Unit"]))
        .build()
}

fn list_kind(list: &str) -> AppResult<ListKind> {
    ListKind::from_str(list).map_err(|e| AppError::validation(e.to_string()))
}

fn read_list(kind: ListKind, l: DomainList) -> DomainListRead {
    DomainListRead {
        list: kind.as_str().to_string(),
        mode: l.mode.as_str().to_string(),
        domains: l.domains,
    }
}
