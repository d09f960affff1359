//! Repos: named views on a registry, with version targeting (API.md §5.3).

use pepeunit_federation::backend::LocalRef;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::registries::git_error;
use super::{access, Agent, Instance};
use crate::domain::{self, AgentType, PermissionEntities, VisibilityLevel};
use crate::error::{AppError, AppResult};
pub use crate::store::repos::{Repo, RepoFilter};
use crate::store::{self};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoCreate {
    pub repository_registry_uuid: Uuid,
    pub default_branch: String,
    pub visibility_level: VisibilityLevel,
    /// 4 to 20 of `A-Z a-z 0-9 _ . -`.
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub name: String,
    pub is_compilable_repo: bool,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RepoUpdate {
    pub visibility_level: Option<VisibilityLevel>,
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub name: Option<String>,
    pub is_auto_update_repo: Option<bool>,
    pub default_branch: Option<String>,
    pub default_commit: Option<String>,
    pub is_only_tag_update: Option<bool>,
    pub is_compilable_repo: Option<bool>,
}

/// A resolved firmware version (wire `TargetVersionRead`).
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct TargetVersion {
    pub commit: String,
    pub tag: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RepoVersion {
    pub commit: Option<String>,
    pub unit_count: i64,
    pub tag: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RepoVersions {
    pub unit_count: i64,
    pub versions: Vec<RepoVersion>,
}

#[derive(Serialize, ToSchema)]
pub struct PlatformRead {
    pub name: String,
    pub link: String,
}

fn check_repo_name(name: &str) -> AppResult<()> {
    if domain::is_valid_name(name) {
        Ok(())
    } else {
        Err(AppError::repo("Name is not correct"))
    }
}

/// A concurrent request took the name between our check and the write.
fn name_conflict(e: impl Into<AppError>) -> AppError {
    e.into()
        .on_conflict(|| AppError::repo("Name is not unique"))
}

impl Instance {
    /// A repo by uuid, through the row cache (see `row_cache`).
    pub async fn repo(&self, uuid: Uuid) -> AppResult<Repo> {
        if let Some(repo) = self.repos_cache.get(uuid) {
            return Ok((*repo).clone());
        }
        let repo = store::repos::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        self.repos_cache
            .put(uuid, std::sync::Arc::new(repo.clone()));
        Ok(repo)
    }

    pub async fn create_repo(&self, agent: &Agent, data: RepoCreate) -> AppResult<Repo> {
        let user = agent.user()?.clone();
        check_repo_name(&data.name)?;
        let registry = self
            .registry_with_access(agent, data.repository_registry_uuid)
            .await?;
        // the git host may have been denied since the registry was created
        self.check_git_host(&registry.repository_url)
            .await
            .map_err(|e| AppError::repo(e.message()))?;
        if store::repos::name_taken(self.pool(), &data.name, None).await? {
            return Err(AppError::repo("Name is not unique"));
        }
        self.require_branch(&registry, &data.default_branch).await?;
        let now = domain::now();
        let repo = Repo {
            uuid: Uuid::new_v4(),
            visibility_level: data.visibility_level,
            name: data.name,
            create_datetime: now.clone(),
            default_branch: Some(data.default_branch),
            is_auto_update_repo: true,
            default_commit: None,
            is_only_tag_update: true,
            is_compilable_repo: data.is_compilable_repo,
            last_update_datetime: now,
            creator_uuid: user.uuid,
            repository_registry_uuid: registry.uuid,
        };
        let mut tx = self.pool().begin().await?;
        store::repos::insert(&mut *tx, &repo)
            .await
            .map_err(name_conflict)?;
        store::permissions::grant(
            &mut *tx,
            (user.uuid, PermissionEntities::User),
            (repo.uuid, PermissionEntities::Repo),
        )
        .await?;
        tx.commit().await?;
        self.federation_changed(LocalRef::Repo(repo.uuid));
        Ok(repo)
    }

    pub async fn get_repo(&self, agent: &Agent, uuid: Uuid) -> AppResult<Repo> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let repo = self.repo(uuid).await?;
        self.check_visibility(agent, repo.uuid, repo.visibility_level)
            .await?;
        Ok(repo)
    }

    pub async fn list_repos(
        &self,
        agent: &Agent,
        filter: RepoFilter,
        levels: &[VisibilityLevel],
    ) -> AppResult<(i64, Vec<Repo>)> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let scope = self.visibility_scope(agent, levels);
        Ok(store::repos::list(self.pool(), &filter, &scope).await?)
    }

    /// The version units following this repo should run (API.md §5.3 "Target version").
    pub async fn repo_target_version(&self, repo: &Repo) -> AppResult<TargetVersion> {
        let registry = repo.repository_registry_uuid;
        if !self.git.exists(registry) {
            return Err(AppError::git_repo(
                "The repository has not been synchronized yet",
            ));
        }
        if repo.is_auto_update_repo {
            let branch = repo
                .default_branch
                .as_deref()
                .ok_or_else(|| AppError::repo("The repo has no default branch"))?;
            let only_tag = repo.is_only_tag_update || repo.is_compilable_repo;
            let newest = self
                .git
                .commits(registry, branch, only_tag, 0, 1)
                .await
                .map_err(git_error)?
                .into_iter()
                .next();
            match newest {
                Some(c) => Ok(TargetVersion {
                    commit: c.commit,
                    tag: c.tag,
                }),
                None if only_tag => Err(AppError::git_repo(
                    "Version is missing: The tags are not in the repository",
                )),
                None => Err(AppError::git_repo(
                    "Version is missing: The branch has no commits",
                )),
            }
        } else {
            let commit = repo.default_commit.clone().ok_or_else(|| {
                AppError::repo("Repo updated manually requires branch and commit to be filled out")
            })?;
            let tag = self
                .git
                .tags_of(registry, &commit)
                .await
                .map_err(git_error)?
                .into_iter()
                .next();
            Ok(TargetVersion { commit, tag })
        }
    }

    pub async fn update_repo(
        &self,
        agent: &Agent,
        uuid: Uuid,
        data: RepoUpdate,
    ) -> AppResult<Repo> {
        let mut repo = self.repo(uuid).await?;
        agent.require_creator(Some(repo.creator_uuid))?;
        if let Some(name) = data.name {
            check_repo_name(&name)?;
            if store::repos::name_taken(self.pool(), &name, Some(uuid)).await? {
                return Err(AppError::repo("Name is not unique"));
            }
            repo.name = name;
        }
        if let Some(v) = data.visibility_level {
            repo.visibility_level = v;
        }
        let registry = store::registries::get(self.pool(), repo.repository_registry_uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if let Some(branch) = data.default_branch {
            self.require_branch(&registry, &branch).await?;
            if repo.default_branch.as_deref() != Some(&branch) {
                repo.default_commit = None;
            }
            repo.default_branch = Some(branch);
        }
        let commit_given = data.default_commit.is_some();
        if let Some(commit) = data.default_commit {
            repo.default_commit = Some(commit);
        }
        if let Some(a) = data.is_auto_update_repo {
            repo.is_auto_update_repo = a;
        }
        if let Some(t) = data.is_only_tag_update {
            repo.is_only_tag_update = t;
        }
        if let Some(c) = data.is_compilable_repo {
            repo.is_compilable_repo = c;
        }
        if repo.is_compilable_repo && repo.is_auto_update_repo && !repo.is_only_tag_update {
            return Err(AppError::repo(
                "A compilable repo updated automatically must be updated only by tags",
            ));
        }
        // a commit is checked whenever it is given, not only when it is used right away
        if !repo.is_auto_update_repo || commit_given {
            let (Some(branch), Some(commit)) = (&repo.default_branch, &repo.default_commit) else {
                return Err(AppError::repo(
                    "Repo updated manually requires branch and commit to be filled out",
                ));
            };
            let on_branch = self
                .git
                .is_commit_on_branch(registry.uuid, commit, branch)
                .await
                .map_err(git_error)?;
            if !on_branch {
                return Err(AppError::git_repo(format!(
                    "Commit {commit} not found in branch {branch}"
                )));
            }
            // store the full id: an abbreviation would reach devices as PU_COMMIT_VERSION
            let full = self
                .git
                .resolve_commit(registry.uuid, commit)
                .await
                .map_err(git_error)?;
            repo.default_commit = Some(full);
        }
        if repo.is_auto_update_repo {
            // must resolve, or units would have nothing to run
            self.repo_target_version(&repo).await?;
        } else if repo.is_compilable_repo && self.repo_target_version(&repo).await?.tag.is_none() {
            return Err(AppError::repo(
                "A compilable repo can only target a tagged commit",
            ));
        }
        // children may not become less strict than the repo
        for unit in store::units::by_repo(self.pool(), uuid).await? {
            access::check_child_visibility(
                repo.visibility_level,
                &repo.name,
                unit.visibility_level,
                &unit.name,
            )?;
        }
        repo.last_update_datetime = domain::now();
        store::repos::update(self.pool(), &repo)
            .await
            .map_err(name_conflict)?;
        self.repos_cache.invalidate(uuid);
        self.federation_changed(LocalRef::Repo(uuid));
        if !repo.is_auto_update_repo
            && repo.default_branch.is_some()
            && repo.default_commit.is_some()
        {
            // a manual repo with branch and commit pushes its version right away (API.md §5.3)
            if let Err(e) = self.update_repo_units(&repo, false).await {
                tracing::info!(repo = %uuid, error = %e, "Update to the repo's units not sent");
            }
        }
        Ok(repo)
    }

    pub async fn delete_repo(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let repo = self.repo(uuid).await?;
        agent.require_creator(Some(repo.creator_uuid))?;
        if store::units::count_by_repo(self.pool(), uuid).await? > 0 {
            return Err(AppError::validation(
                "The array was expected to be empty, but it turned out to be full",
            ));
        }
        let mut tx = self.pool().begin().await?;
        store::permissions::purge(&mut *tx, uuid).await?;
        store::repos::delete(&mut *tx, uuid).await?;
        tx.commit().await?;
        self.repos_cache.invalidate(uuid);
        self.federation_changed(LocalRef::Repo(uuid));
        Ok(())
    }

    pub async fn repo_versions(&self, agent: &Agent, uuid: Uuid) -> AppResult<RepoVersions> {
        let repo = self.get_repo(agent, uuid).await?;
        let groups = store::units::versions_of_repo(self.pool(), uuid).await?;
        let mut versions = Vec::with_capacity(groups.len());
        let mut total = 0;
        for (commit, count) in groups {
            total += count;
            let tag = match &commit {
                Some(c) if self.git.exists(repo.repository_registry_uuid) => self
                    .git
                    .tags_of(repo.repository_registry_uuid, c)
                    .await
                    .ok()
                    .and_then(|t| t.into_iter().next()),
                _ => None,
            };
            versions.push(RepoVersion {
                commit,
                unit_count: count,
                tag,
            });
        }
        Ok(RepoVersions {
            unit_count: total,
            versions,
        })
    }

    /// Release assets of compilable repos, from the registry's `releases_data` (read from the
    /// GitHub/GitLab API at each sync); empty when the registry has none for the chosen tag.
    pub async fn available_platforms(
        &self,
        agent: &Agent,
        uuid: Uuid,
        target_commit: Option<String>,
        target_tag: Option<String>,
    ) -> AppResult<Vec<PlatformRead>> {
        agent.require(&[AgentType::User])?;
        let repo = self.get_repo(agent, uuid).await?;
        if !repo.is_compilable_repo {
            return Ok(Vec::new());
        }
        let registry = store::registries::get(self.pool(), repo.repository_registry_uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let Some(releases) = registry.releases_data.as_deref().and_then(|r| {
            serde_json::from_str::<std::collections::BTreeMap<String, Vec<(String, String)>>>(r)
                .ok()
        }) else {
            return Ok(Vec::new());
        };
        let tag = match (target_tag, target_commit) {
            (Some(t), _) => Some(t),
            (None, Some(c)) => self
                .git
                .tags_of(registry.uuid, &c)
                .await
                .map_err(git_error)?
                .into_iter()
                .next(),
            (None, None) => self.repo_target_version(&repo).await?.tag,
        };
        Ok(tag
            .and_then(|t| releases.get(&t).cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, link)| PlatformRead { name, link })
            .collect())
    }
}
