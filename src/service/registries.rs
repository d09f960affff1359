//! Repository registries: external git repositories mirrored locally (API.md §5.2).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::{self, AgentType, CredentialStatus, GitPlatform, RepositoryRegistryStatus};
use crate::error::{AppError, AppResult};
use crate::git::{self, CommitInfo, GitCredentials, GitError};
use crate::platform;
use crate::store::registries::RegistryCredentials;
pub use crate::store::registries::{RegistryFilter, RepositoryRegistry};
use crate::store::{self};

/// A re-sync within this many seconds of a running one is refused.
const SYNC_GUARD_SECS: i64 = 10;

#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub pat_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryCreate {
    pub platform: GitPlatform,
    pub repository_url: String,
    pub is_public_repository: bool,
    pub credentials: Option<Credentials>,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialsRead {
    pub credentials: Credentials,
    pub status: CredentialStatus,
}

impl From<&Credentials> for GitCredentials {
    fn from(c: &Credentials) -> Self {
        GitCredentials {
            username: c.username.clone(),
            pat_token: c.pat_token.clone(),
        }
    }
}

fn check_credentials_shape(c: &Credentials) -> AppResult<()> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_control());
    if ok(&c.username) && ok(&c.pat_token) {
        Ok(())
    } else {
        Err(AppError::registry("Credentials is not valid"))
    }
}

pub(crate) fn git_error(e: GitError) -> AppError {
    match e {
        GitError::Io(_) => AppError::internal(e),
        other => AppError::git_repo(other.to_string()),
    }
}

impl Instance {
    pub async fn create_registry(
        &self,
        agent: &Agent,
        data: RegistryCreate,
    ) -> AppResult<RepositoryRegistry> {
        let user = agent.user()?.clone();
        let url = data.repository_url.trim().to_string();
        git::validate_remote_url(&url).map_err(|e| AppError::registry(e.to_string()))?;
        if !url.ends_with(".git") {
            return Err(AppError::registry("Repository URL must end with .git"));
        }
        self.check_git_host(&url)
            .await
            .map_err(|e| AppError::registry(e.message()))?;
        self.check_registry_address(&url)
            .await
            .map_err(|e| AppError::registry(format!("Repository URL is refused: {e}")))?;
        if store::registries::url_taken(self.pool(), &url).await? {
            return Err(AppError::registry("Repository URL is not unique"));
        }
        let credentials = match (&data.credentials, data.is_public_repository) {
            (_, true) => None,
            (Some(c), false) => {
                check_credentials_shape(c)?;
                Some(c.clone())
            }
            (None, false) => return Err(AppError::registry("Credentials is not valid")),
        };
        let now = domain::now();
        let registry = RepositoryRegistry {
            uuid: Uuid::new_v4(),
            platform: data.platform,
            repository_url: url,
            is_public_repository: data.is_public_repository,
            releases_data: None,
            local_repository_size: 0,
            sync_status: None,
            sync_error: None,
            sync_last_datetime: None,
            create_datetime: now.clone(),
            last_update_datetime: now,
            creator_uuid: Some(user.uuid),
            branches: Vec::new(),
        };
        store::registries::insert(self.pool(), &registry)
            .await
            .map_err(|e| {
                AppError::from(e).on_conflict(|| AppError::registry("Repository URL is not unique"))
            })?;
        if let Some(c) = &credentials {
            if let Err(e) = self.store_credentials(&registry, user.uuid, c).await {
                // no registry without the credentials it was created with
                let _ = store::registries::delete(self.pool(), registry.uuid).await;
                return Err(e);
            }
        }
        self.sync_registry_detached(registry.uuid, Some(user.uuid))
            .await?;
        self.registry_read(registry.uuid).await
    }

    /// Refuses a registry whose host is, or resolves to, a local address (unless
    /// `PU_ALLOW_LOCAL_NETWORK`), so that the refusal names the class at once. Every git
    /// command checks again and pins what it checked (`git`), since a name can change.
    pub(crate) async fn check_registry_address(
        &self,
        url: &str,
    ) -> Result<(), crate::net::NetError> {
        crate::net::resolve_url(url, self.config.allow_local_network)
            .await
            .map(|_| ())
    }

    /// Checks credentials against the remote and stores them encrypted with their status.
    async fn store_credentials(
        &self,
        registry: &RepositoryRegistry,
        user: Uuid,
        c: &Credentials,
    ) -> AppResult<CredentialStatus> {
        let status = match self
            .git
            .check_access(&registry.repository_url, Some(&c.into()))
            .await
        {
            Ok(()) => CredentialStatus::Valid,
            Err(e) => {
                tracing::info!(registry = %registry.uuid, error = %e, "credentials check failed");
                CredentialStatus::Error
            }
        };
        let now = domain::now();
        let row = RegistryCredentials {
            uuid: Uuid::new_v4(),
            user_uuid: user,
            repository_registry_uuid: registry.uuid,
            cipher_credentials: self
                .cipher
                .encrypt(&serde_json::to_string(c).map_err(AppError::internal)?)?,
            status,
        };
        store::registries::upsert_credentials(self.pool(), &row, &now).await?;
        Ok(status)
    }

    /// Checks a user's stored credentials for `registry` against the remote again and stores
    /// the outcome (an account import brings credentials unchecked, as `Error`).
    pub(crate) async fn recheck_credentials(
        &self,
        user: Uuid,
        registry: Uuid,
    ) -> AppResult<CredentialStatus> {
        let registry = store::registries::get(self.pool(), registry)
            .await?
            .ok_or_else(AppError::not_found)?;
        let row = store::registries::get_credentials(self.pool(), user, registry.uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let c = self.decrypt_credentials(&row)?;
        self.store_credentials(&registry, user, &c).await
    }

    fn decrypt_credentials(&self, row: &RegistryCredentials) -> AppResult<Credentials> {
        serde_json::from_str(&self.cipher.decrypt(&row.cipher_credentials)?)
            .map_err(AppError::internal)
    }

    /// [`Self::sync_registry`] in its own task: a client that disconnects while waiting does not
    /// cancel the sync half-way (which would leave the status at Processing).
    async fn sync_registry_detached(&self, uuid: Uuid, as_user: Option<Uuid>) -> AppResult<()> {
        let instance = self.clone();
        tokio::spawn(async move { instance.sync_registry(uuid, as_user).await })
            .await
            .map_err(AppError::internal)?
    }

    /// Clones or fetches a registry's mirror and records the outcome. A failed sync is not an
    /// error of the call: it is stored in `sync_status`/`sync_error`, as upstream.
    pub async fn sync_registry(&self, uuid: Uuid, as_user: Option<Uuid>) -> AppResult<()> {
        let registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let now = chrono::Utc::now().naive_utc();
        let guard = domain::format_time(now - chrono::Duration::seconds(SYNC_GUARD_SECS));
        if !store::registries::begin_sync(self.pool(), uuid, &domain::format_time(now), &guard)
            .await?
        {
            return Err(AppError::registry(
                "Synchronization is already running, retry in a few seconds",
            ));
        }
        let credentials = if registry.is_public_repository {
            None
        } else {
            let row = match as_user {
                Some(user) => store::registries::get_credentials(self.pool(), user, uuid)
                    .await?
                    .filter(|c| c.status == CredentialStatus::Valid),
                None => None,
            };
            let row = match row {
                Some(r) => Some(r),
                None => store::registries::first_valid_credentials(self.pool(), uuid).await?,
            };
            row.map(|r| self.decrypt_credentials(&r)).transpose()?
        };
        let result = if !registry.is_public_repository && credentials.is_none() {
            Err("No valid credentials for this private repository".to_string())
        } else {
            self.git
                .sync(
                    uuid,
                    &registry.repository_url,
                    credentials.as_ref().map(GitCredentials::from).as_ref(),
                )
                .await
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(size) => {
                self.refresh_releases(&registry, credentials.as_ref()).await;
                let done = domain::now();
                store::registries::finish_sync(
                    self.pool(),
                    uuid,
                    RepositoryRegistryStatus::Updated,
                    None,
                    Some(size as i64),
                    &done,
                )
                .await?;
                // units following a repo of this registry move to its new target version
                match self.auto_update_registry(uuid).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(registry = %uuid, units = n, "auto-update sent"),
                    Err(e) => tracing::warn!(registry = %uuid, error = %e, "auto-update failed"),
                }
                Ok(())
            }
            Err(message) => {
                let done = domain::now();
                tracing::warn!(registry = %uuid, error = %message, "registry sync failed");
                let detail = AppError::git_repo(message).detail();
                let size = if self.git.exists(uuid) { None } else { Some(0) };
                Ok(store::registries::finish_sync(
                    self.pool(),
                    uuid,
                    RepositoryRegistryStatus::Error,
                    Some(detail),
                    size,
                    &done,
                )
                .await?)
            }
        }
    }

    /// Reads the registry's releases from its platform's API into `releases_data` (sync step
    /// 4). A failure is logged and keeps the previous value: a platform API that is down or
    /// rate-limited must not fail a sync whose git part worked.
    async fn refresh_releases(
        &self,
        registry: &RepositoryRegistry,
        credentials: Option<&Credentials>,
    ) {
        let credentials = credentials.map(GitCredentials::from);
        let fetched = platform::fetch_releases(
            &self.config.github_api_url,
            registry.platform,
            &registry.repository_url,
            credentials.as_ref(),
            self.config.allow_local_network,
        )
        .await;
        match fetched {
            Ok(releases) => {
                let data = platform::releases_data(&releases);
                if let Err(e) = store::registries::set_releases_data(
                    self.pool(),
                    registry.uuid,
                    data.as_deref(),
                )
                .await
                {
                    tracing::warn!(registry = %registry.uuid, error = %e, "releases not stored");
                }
            }
            Err(e) => tracing::warn!(
                registry = %registry.uuid,
                platform = registry.platform.as_str(),
                error = %e,
                "releases not read; keeping the previous ones"
            ),
        }
    }

    /// The registry with its branches from the local mirror.
    pub async fn registry_read(&self, uuid: Uuid) -> AppResult<RepositoryRegistry> {
        let mut registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        self.fill_branches(&mut registry).await;
        Ok(registry)
    }

    async fn fill_branches(&self, registry: &mut RepositoryRegistry) {
        if self.git.exists(registry.uuid) {
            registry.branches = self.git.branches(registry.uuid).await.unwrap_or_default();
        }
    }

    pub async fn get_registry(&self, agent: &Agent, uuid: Uuid) -> AppResult<RepositoryRegistry> {
        agent.require(&[AgentType::Bot, AgentType::User])?;
        let registry = self.registry_read(uuid).await?;
        if matches!(agent, Agent::Bot) && !registry.is_public_repository {
            return Err(AppError::no_access(
                "Private RepositoryRegistry is not allowed",
            ));
        }
        Ok(registry)
    }

    pub async fn list_registries(
        &self,
        agent: &Agent,
        mut filter: RegistryFilter,
    ) -> AppResult<(i64, Vec<RepositoryRegistry>)> {
        agent.require(&[AgentType::Bot, AgentType::User])?;
        if matches!(agent, Agent::Bot) {
            filter.is_public_repository = Some(true);
        }
        let (count, mut items) = store::registries::list(self.pool(), &filter).await?;
        for r in &mut items {
            self.fill_branches(r).await;
        }
        Ok((count, items))
    }

    /// A registry the caller may build Repos from: a User, and for a private registry one with
    /// their own valid credentials.
    pub async fn registry_with_access(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<RepositoryRegistry> {
        let user = agent.user()?;
        let registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if !registry.is_public_repository {
            let valid = store::registries::get_credentials(self.pool(), user.uuid, uuid)
                .await?
                .is_some_and(|c| c.status == CredentialStatus::Valid);
            if !valid {
                return Err(AppError::no_access(
                    "Private repository requires your own valid credentials",
                ));
            }
        }
        Ok(registry)
    }

    pub async fn branch_commits(
        &self,
        agent: &Agent,
        uuid: Uuid,
        branch: &str,
        only_tag: bool,
        offset: i64,
        limit: i64,
    ) -> AppResult<Vec<CommitInfo>> {
        agent.require(&[AgentType::User])?;
        let registry = self.get_registry(agent, uuid).await?;
        self.require_branch(&registry, branch).await?;
        self.git
            .commits(uuid, branch, only_tag, offset as usize, limit as usize)
            .await
            .map_err(git_error)
    }

    /// The branch must exist in the mirror (code 5 with the available ones otherwise).
    pub async fn require_branch(
        &self,
        registry: &RepositoryRegistry,
        branch: &str,
    ) -> AppResult<()> {
        if !self.git.exists(registry.uuid) {
            return Err(AppError::git_repo(
                "The repository has not been synchronized yet",
            ));
        }
        let branches = self.git.branches(registry.uuid).await.map_err(git_error)?;
        if branches.iter().any(|b| b == branch) {
            Ok(())
        } else {
            Err(AppError::git_repo(format!(
                "Branch {branch} not found, available: {branches:?}"
            )))
        }
    }

    pub async fn set_registry_credentials(
        &self,
        agent: &Agent,
        uuid: Uuid,
        c: Credentials,
    ) -> AppResult<()> {
        let user = agent.user()?.uuid;
        let registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if registry.is_public_repository {
            return Err(AppError::registry("This Repository is Public"));
        }
        check_credentials_shape(&c)?;
        let status = self.store_credentials(&registry, user, &c).await?;
        if status == CredentialStatus::Valid
            && registry.sync_status != Some(RepositoryRegistryStatus::Updated)
        {
            // first working credentials: bring the mirror up now rather than at the next poll
            if let Err(e) = self.sync_registry(uuid, Some(user)).await {
                tracing::info!(registry = %uuid, error = %e, "sync after credentials skipped");
            }
        }
        Ok(())
    }

    pub async fn get_registry_credentials(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<Option<CredentialsRead>> {
        let user = agent.user()?.uuid;
        let registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if registry.is_public_repository {
            return Err(AppError::registry("This Repository is Public"));
        }
        match store::registries::get_credentials(self.pool(), user, uuid).await? {
            None => Ok(None),
            Some(row) => Ok(Some(CredentialsRead {
                credentials: self.decrypt_credentials(&row)?,
                status: row.status,
            })),
        }
    }

    pub async fn update_local_repository(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let registry = self.registry_with_access(agent, uuid).await?;
        self.sync_registry_detached(registry.uuid, agent.uuid())
            .await
    }

    /// Backend token: clone every registry whose mirror is missing on disk.
    pub async fn backend_sync_registries(&self, agent: &Agent) -> AppResult<()> {
        agent.require(&[AgentType::Backend])?;
        self.sync_all_registries(true).await;
        Ok(())
    }

    /// Syncs registries one after another (`only_missing`: those without a mirror on disk).
    /// Failures are recorded per registry; one bad registry never stops the others.
    pub async fn sync_all_registries(&self, only_missing: bool) {
        self.sync_registries_where(|uuid| !only_missing || !self.git.exists(uuid))
            .await
    }

    /// At start, before anything else syncs: the syncs a stopped process left at Processing
    /// (it died during them) end as Error, so that they neither look like running forever
    /// nor hold off a new sync. Returns those registries, for [`Self::sync_at_start`].
    pub async fn end_interrupted_syncs(&self) -> AppResult<Vec<Uuid>> {
        let error =
            AppError::git_repo("the sync was interrupted: the instance stopped during it").detail();
        let uuids =
            store::registries::end_interrupted_syncs(self.pool(), &error, &domain::now()).await?;
        if !uuids.is_empty() {
            tracing::warn!(
                registries = uuids.len(),
                "syncs interrupted by the last stop; they run again"
            );
        }
        Ok(uuids)
    }

    /// The start-up pass: registries without a mirror on disk, and those whose sync was
    /// interrupted (`interrupted`; their mirror may hold a fetch's leftovers, which the sync
    /// clears, `git::Git::sync`).
    pub async fn sync_at_start(&self, interrupted: &[Uuid]) {
        self.sync_registries_where(|uuid| interrupted.contains(&uuid) || !self.git.exists(uuid))
            .await
    }

    async fn sync_registries_where(&self, pick: impl Fn(Uuid) -> bool) {
        let uuids = match store::registries::all_uuids(self.pool()).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list registries for sync");
                return;
            }
        };
        for uuid in uuids {
            if !pick(uuid) {
                continue;
            }
            if let Err(e) = self.sync_registry(uuid, None).await {
                tracing::info!(registry = %uuid, error = %e, "registry sync skipped");
            }
        }
    }

    pub async fn delete_registry(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let registry = store::registries::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        agent.require_creator(registry.creator_uuid)?;
        if store::repos::count_by_registry(self.pool(), uuid).await? > 0 {
            return Err(AppError::validation(
                "The array was expected to be empty, but it turned out to be full",
            ));
        }
        store::registries::delete(self.pool(), uuid).await?;
        if let Err(e) = self.git.remove(uuid).await {
            tracing::warn!(registry = %uuid, error = %e, "mirror not removed");
        }
        Ok(())
    }
}
