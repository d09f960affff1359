//! Units: devices created from a Repo, their env, schema, firmware and state storage.

use std::collections::HashSet;

use pepeunit_federation::backend::LocalRef;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::repos::TargetVersion;
use super::unit_files::{to_json_4, SchemaExample};
use super::{access, Agent, Instance};
use crate::domain::datapipe::config::DataPipeConfig;
use crate::domain::datapipe::DataPipeStatus;
use crate::domain::{
    self, AgentType, BackendTopicCommand, PermissionEntities, UnitNodeType, VisibilityLevel,
};
use crate::error::{AppError, AppResult};
use crate::firmware::{self, ArchiveFormat};
use crate::store::repos::Repo;
use crate::store::unit_nodes::{UnitNode, UnitNodeFilter};
pub use crate::store::units::{Unit, UnitFilter, UnitState};
use crate::store::{self};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitCreate {
    pub repo_uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    /// 4 to 20 of `A-Z a-z 0-9 _ . -`.
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub name: String,
    pub is_auto_update_from_repo_unit: bool,
    #[serde(default)]
    pub target_firmware_platform: Option<String>,
    #[serde(default)]
    pub repo_branch: Option<String>,
    #[serde(default)]
    pub repo_commit: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UnitUpdate {
    pub visibility_level: Option<VisibilityLevel>,
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub name: Option<String>,
    pub is_auto_update_from_repo_unit: Option<bool>,
    pub target_firmware_platform: Option<String>,
    pub repo_branch: Option<String>,
    pub repo_commit: Option<String>,
}

/// List options that only apply with `is_include_output_unit_nodes=true`.
#[derive(Default)]
pub struct UnitNodeInclusion {
    pub include: bool,
    pub unit_node_input_uuid: Option<Uuid>,
    pub unit_node_type: Vec<UnitNodeType>,
    pub unit_node_uuids: Vec<Uuid>,
}

/// Largest state storage we keep for a unit.
const MAX_STATE_STORAGE: usize = 1_000_000;

fn check_unit_name(name: &str) -> AppResult<()> {
    if domain::is_valid_name(name) {
        Ok(())
    } else {
        Err(AppError::unit("Name is not correct"))
    }
}

impl Instance {
    /// A unit by uuid, through the row cache (see `row_cache`).
    pub async fn unit(&self, uuid: Uuid) -> AppResult<Unit> {
        Ok((*self.unit_row(uuid).await?).clone())
    }

    /// The unit row as the row cache holds it (no copy: the MQTT core reads it per message).
    pub async fn unit_row(&self, uuid: Uuid) -> AppResult<std::sync::Arc<Unit>> {
        if let Some(unit) = self.units_cache.get(uuid) {
            return Ok(unit);
        }
        let unit = std::sync::Arc::new(
            store::units::get(self.pool(), uuid)
                .await?
                .ok_or_else(AppError::not_found)?,
        );
        self.units_cache.put(uuid, unit.clone());
        Ok(unit)
    }

    /// Checks a unit's version settings against its repo and returns the version it will run.
    /// A pinned commit given abbreviated is stored as the full id it names.
    async fn check_unit_version(&self, unit: &mut Unit, repo: &Repo) -> AppResult<TargetVersion> {
        if !unit.is_auto_update_from_repo_unit {
            let (Some(branch), Some(commit)) = (&unit.repo_branch, &unit.repo_commit) else {
                return Err(AppError::unit(
                    "Unit updated manually requires branch and commit to be filled out",
                ));
            };
            let registry = store::registries::get(self.pool(), repo.repository_registry_uuid)
                .await?
                .ok_or_else(AppError::not_found)?;
            self.require_branch(&registry, branch).await?;
            let on_branch = self
                .git
                .is_commit_on_branch(registry.uuid, commit, branch)
                .await
                .map_err(super::registries::git_error)?;
            if !on_branch {
                return Err(AppError::git_repo(format!(
                    "Commit {commit} not found in branch {branch}"
                )));
            }
            let full = self
                .git
                .resolve_commit(registry.uuid, commit)
                .await
                .map_err(super::registries::git_error)?;
            unit.repo_commit = Some(full);
        }
        let version = self.unit_target_version(unit, repo).await?;
        if repo.is_compilable_repo && version.tag.is_none() {
            return Err(AppError::unit(
                "A compilable repo can only run a tagged commit",
            ));
        }
        Ok(version)
    }

    pub async fn create_unit(&self, agent: &Agent, data: UnitCreate) -> AppResult<Unit> {
        let user = agent.user()?.clone();
        check_unit_name(&data.name)?;
        let repo = self.repo(data.repo_uuid).await?;
        self.check_visibility(agent, repo.uuid, repo.visibility_level)
            .await?;
        access::check_child_visibility(
            repo.visibility_level,
            &repo.name,
            data.visibility_level,
            &data.name,
        )?;
        if store::units::name_taken(self.pool(), &data.name, None).await? {
            return Err(AppError::unit("Name is not unique"));
        }
        let now = domain::now();
        let mut unit = Unit {
            uuid: Uuid::new_v4(),
            visibility_level: data.visibility_level,
            name: data.name,
            create_datetime: now.clone(),
            is_auto_update_from_repo_unit: data.is_auto_update_from_repo_unit,
            target_firmware_platform: data.target_firmware_platform,
            repo_branch: data.repo_branch,
            repo_commit: data.repo_commit,
            unit_state: None,
            current_commit_version: None,
            last_update_datetime: now,
            creator_uuid: user.uuid,
            repo_uuid: repo.uuid,
            firmware_update_status: None,
            firmware_update_error: None,
            last_firmware_update_datetime: None,
            alert_log_level: crate::domain::LogLevel::Error,
            alerts_muted_until: None,
            unit_nodes: Vec::new(),
            cipher_env: None,
            cipher_state_storage: None,
            token_generation: 0,
        };
        if unit.is_auto_update_from_repo_unit {
            unit.repo_branch = None;
            unit.repo_commit = None;
        }
        let version = self.check_unit_version(&mut unit, &repo).await?;
        self.check_platform(&unit, &repo, &version).await?;
        let (_, schema) = self.repo_files(&repo, &version.commit).await?;

        let mut tx = self.pool().begin().await?;
        store::units::insert(&mut *tx, &unit)
            .await
            .map_err(|e| AppError::from(e).on_conflict(|| AppError::unit("Name is not unique")))?;
        let grants = [
            (
                (user.uuid, PermissionEntities::User),
                (unit.uuid, PermissionEntities::Unit),
            ),
            (
                (unit.uuid, PermissionEntities::Unit),
                (repo.uuid, PermissionEntities::Repo),
            ),
            (
                (unit.uuid, PermissionEntities::Unit),
                (unit.uuid, PermissionEntities::Unit),
            ),
        ];
        for (agent, resource) in grants {
            store::permissions::grant(&mut *tx, agent, resource).await?;
        }
        for node in self.nodes_from_schema(&unit, &schema, &HashSet::new()) {
            store::unit_nodes::insert(&mut *tx, &node).await?;
            self.grant_node(&mut tx, &unit, node.uuid).await?;
        }
        tx.commit().await?;
        self.federation_changed(LocalRef::Unit(unit.uuid));
        Ok(unit)
    }

    async fn grant_node(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        unit: &Unit,
        node: Uuid,
    ) -> AppResult<()> {
        let resource = (node, PermissionEntities::UnitNode);
        store::permissions::grant(
            &mut **tx,
            (unit.creator_uuid, PermissionEntities::User),
            resource,
        )
        .await?;
        Ok(
            store::permissions::grant(&mut **tx, (unit.uuid, PermissionEntities::Unit), resource)
                .await?,
        )
    }

    /// Nodes the schema declares that are not in `existing` (pairs of type and topic name).
    fn nodes_from_schema(
        &self,
        unit: &Unit,
        schema: &SchemaExample,
        existing: &HashSet<(UnitNodeType, String)>,
    ) -> Vec<UnitNode> {
        let now = domain::now();
        // upstream's default LastValue pipeline for `/pepeunit` topics, when the flag is on
        let default_pipe = (self.config.ff_datapipe && self.config.ff_datapipe_default_last_value)
            .then(|| DataPipeConfig::default_last_value().to_stored_json());
        let declared = schema
            .input_topic
            .iter()
            .map(|t| (UnitNodeType::Input, t))
            .chain(
                schema
                    .output_topic
                    .iter()
                    .map(|t| (UnitNodeType::Output, t)),
            );
        declared
            .filter(|(ty, t)| !existing.contains(&(*ty, (*t).clone())))
            .map(|(node_type, topic)| UnitNode {
                uuid: Uuid::new_v4(),
                node_type,
                visibility_level: unit.visibility_level,
                is_rewritable_input: false,
                max_connections: 10,
                topic_name: topic.clone(),
                last_update_datetime: now.clone(),
                is_data_pipe_active: default_pipe.is_some() && topic.ends_with("/pepeunit"),
                data_pipe_yml: default_pipe
                    .as_ref()
                    .filter(|_| topic.ends_with("/pepeunit"))
                    .cloned(),
                data_pipe_status: default_pipe
                    .as_ref()
                    .filter(|_| topic.ends_with("/pepeunit"))
                    .map(|_| DataPipeStatus::Active.as_str().to_string()),
                data_pipe_error: None,
                create_datetime: now.clone(),
                state: None,
                unit_uuid: unit.uuid,
                creator_uuid: unit.creator_uuid,
            })
            .collect()
    }

    /// For compilable repos the platform must be one of the target release's assets.
    async fn check_platform(
        &self,
        unit: &Unit,
        repo: &Repo,
        version: &TargetVersion,
    ) -> AppResult<()> {
        if !repo.is_compilable_repo {
            return Ok(());
        }
        let Some(platform) = &unit.target_firmware_platform else {
            return Ok(());
        };
        let assets = self.release_assets(repo, version).await?;
        if assets.iter().any(|(name, _)| name == platform) {
            Ok(())
        } else {
            Err(AppError::unit(format!(
                "Platform {platform} is not among the release assets of the target version"
            )))
        }
    }

    pub async fn get_unit(&self, agent: &Agent, uuid: Uuid) -> AppResult<Unit> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let unit = self.unit(uuid).await?;
        self.check_visibility(agent, unit.uuid, unit.visibility_level)
            .await?;
        Ok(unit)
    }

    pub async fn list_units(
        &self,
        agent: &Agent,
        mut filter: UnitFilter,
        levels: &[VisibilityLevel],
        nodes: UnitNodeInclusion,
    ) -> AppResult<(i64, Vec<Unit>)> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let scope = self.visibility_scope(agent, levels);
        if !nodes.include {
            return Ok(store::units::list(self.pool(), &filter, &scope).await?);
        }
        // nodes visible to the agent that match the node filters; units are those owning them
        let node_scope = self.visibility_scope(agent, &[]);
        let node_filter = UnitNodeFilter {
            uuids: nodes.unit_node_uuids.clone(),
            node_type: if nodes.unit_node_input_uuid.is_some() {
                vec![UnitNodeType::Output]
            } else {
                nodes.unit_node_type.clone()
            },
            linked_to_input: nodes.unit_node_input_uuid,
            ..Default::default()
        };
        filter.owning_nodes = Some((node_filter.clone(), node_scope.clone()));
        let (count, mut units) = store::units::list(self.pool(), &filter, &scope).await?;
        // the matching nodes of this page's units only, in bounded chunks
        let mut by_unit: std::collections::HashMap<Uuid, Vec<UnitNode>> = Default::default();
        for chunk in units.chunks(500) {
            let f = UnitNodeFilter {
                unit_uuids: chunk.iter().map(|u| u.uuid).collect(),
                ..node_filter.clone()
            };
            let (_, nodes) = store::unit_nodes::list(self.pool(), &f, &node_scope).await?;
            for n in nodes {
                by_unit.entry(n.unit_uuid).or_default().push(n);
            }
        }
        for unit in &mut units {
            unit.unit_nodes = by_unit.remove(&unit.uuid).unwrap_or_default();
        }
        Ok((count, units))
    }

    pub async fn update_unit(
        &self,
        agent: &Agent,
        uuid: Uuid,
        data: UnitUpdate,
    ) -> AppResult<Unit> {
        let mut unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        let repo = self.repo(unit.repo_uuid).await?;
        let old_version = self.unit_target_version(&unit, &repo).await.ok();
        if let Some(name) = data.name {
            check_unit_name(&name)?;
            if store::units::name_taken(self.pool(), &name, Some(uuid)).await? {
                return Err(AppError::unit("Name is not unique"));
            }
            unit.name = name;
        }
        if let Some(v) = data.visibility_level {
            access::check_child_visibility(repo.visibility_level, &repo.name, v, &unit.name)?;
            unit.visibility_level = v;
        }
        if let Some(a) = data.is_auto_update_from_repo_unit {
            unit.is_auto_update_from_repo_unit = a;
        }
        if data.target_firmware_platform.is_some() {
            unit.target_firmware_platform = data.target_firmware_platform;
        }
        if data.repo_branch.is_some() {
            unit.repo_branch = data.repo_branch;
        }
        if data.repo_commit.is_some() {
            unit.repo_commit = data.repo_commit;
        }
        let version = self.check_unit_version(&mut unit, &repo).await?;
        self.check_platform(&unit, &repo, &version).await?;
        let (example, schema) = self.repo_files(&repo, &version.commit).await?;
        unit.last_update_datetime = domain::now();

        let mut nodes_removed = false;
        let mut removed_nodes = Vec::new();
        let mut tx = self.pool().begin().await?;
        store::units::update(&mut *tx, &unit).await?;
        store::unit_nodes::raise_visibility(&mut *tx, unit.uuid, unit.visibility_level).await?;
        if old_version.as_ref() != Some(&version) {
            // version changed: add the nodes the new schema declares, drop the ones it no longer does
            let nodes = store::unit_nodes::by_unit(&mut *tx, unit.uuid).await?;
            let existing: HashSet<(UnitNodeType, String)> = nodes
                .iter()
                .map(|n| (n.node_type, n.topic_name.clone()))
                .collect();
            for node in self.nodes_from_schema(&unit, &schema, &existing) {
                store::unit_nodes::insert(&mut *tx, &node).await?;
                self.grant_node(&mut tx, &unit, node.uuid).await?;
            }
            for node in nodes {
                let declared = match node.node_type {
                    UnitNodeType::Input => &schema.input_topic,
                    UnitNodeType::Output => &schema.output_topic,
                };
                if !declared.contains(&node.topic_name) {
                    store::permissions::purge(&mut *tx, node.uuid).await?;
                    store::unit_nodes::delete(&mut *tx, node.uuid).await?;
                    store::pipe_data::delete_nodes(&mut tx, &[node.uuid]).await?;
                    removed_nodes.push(node.uuid);
                    nodes_removed = true;
                }
            }
        }
        tx.commit().await?;
        if nodes_removed {
            // their bridges went with them (ON DELETE CASCADE)
            self.bridges_changed();
        }
        self.delete_pipe_data_of(&removed_nodes).await;
        for node in removed_nodes {
            // a running pipeline of a removed node stops
            self.pipes.changed(node);
        }
        self.units_cache.invalidate(uuid);
        if old_version.as_ref() != Some(&version) && unit.cipher_env.is_some() {
            // re-validate the stored env against the new example: keys it no longer declares go
            match self.merge_env(&unit, &example, None) {
                Ok(merged) => {
                    let text = serde_json::to_string(&merged).map_err(AppError::internal)?;
                    store::units::set_env(
                        self.pool(),
                        unit.uuid,
                        Some(self.cipher.encrypt(&text)?),
                    )
                    .await?;
                }
                Err(e) => {
                    tracing::info!(unit = %unit.uuid, error = %e, "stored env does not fit the new version")
                }
            }
        }
        // after the commit and the env rewrite, so no reader re-caches the old row
        self.units_cache.invalidate(uuid);
        self.federation_changed(LocalRef::Unit(uuid));
        self.live.access_changed();
        // the device learns its (maybe new) version; MQTT errors are ignored (API.md §5.3)
        self.send_command_quietly(uuid, BackendTopicCommand::Update)
            .await;
        self.unit(uuid).await
    }

    pub async fn delete_unit(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        let nodes: Vec<Uuid> = store::unit_nodes::by_unit(self.pool(), uuid)
            .await?
            .into_iter()
            .map(|n| n.uuid)
            .collect();
        let mut tx = self.pool().begin().await?;
        store::permissions::purge_unit_nodes(&mut *tx, uuid).await?;
        store::permissions::purge(&mut *tx, uuid).await?;
        store::units::delete(&mut tx, uuid, &domain::now()).await?;
        // what its nodes' pipelines kept goes with them
        store::pipe_data::delete_nodes(&mut tx, &nodes).await?;
        tx.commit().await?;
        self.delete_pipe_data_of(&nodes).await;
        for node in nodes {
            self.pipes.changed(node);
        }
        self.units_cache.invalidate(uuid);
        // its device's sessions go now (its uuid is a tombstone: the token never works again)
        self.revocations.revoke(uuid);
        self.federation_changed(LocalRef::Unit(uuid));
        // its nodes' bridges went with them (ON DELETE CASCADE): the carrier drops theirs
        self.bridges_changed();
        // outside the transaction: log storage may be another database. The unit is gone
        // either way, and logs left behind by a failure here expire on their own.
        if let Err(e) = self.clear_unit_logs(uuid).await {
            tracing::warn!(unit = %uuid, error = %e, "could not delete the logs of a deleted unit");
        }
        self.live.access_changed();
        Ok(())
    }

    /// A unit the agent may manage as its creator, or the unit itself.
    pub async fn unit_for_creator_or_self(&self, agent: &Agent, uuid: Uuid) -> AppResult<Unit> {
        agent.require(&[AgentType::User, AgentType::Unit])?;
        if let Agent::Unit(own) = agent {
            if own.uuid == uuid {
                // the device itself: its row was just loaded to authenticate it
                return Ok((**own).clone());
            }
        }
        let unit = self.unit(uuid).await?;
        agent.require_creator_or_self(&unit)?;
        Ok(unit)
    }

    /// Gives a unit a new token (its creator only), for a token that leaked or a device that
    /// was lost: the unit's token generation goes up by one, every token issued before is
    /// refused from now on (REST, broker authentication and ACL; the embedded broker drops
    /// sessions opened with them), and the answer is the unit's env.json with the new token,
    /// which the device needs flashed (with the old token it can no longer fetch it).
    pub async fn rotate_unit_token(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<Map<String, Value>> {
        let unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        store::units::next_token_generation(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        self.units_cache.invalidate(uuid);
        self.revocations.revoke(uuid);
        self.live.access_changed();
        let unit = self.unit(uuid).await?;
        self.build_unit_env(&unit).await
    }

    pub async fn get_unit_env(&self, agent: &Agent, uuid: Uuid) -> AppResult<Map<String, Value>> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        self.build_unit_env(&unit).await
    }

    pub async fn set_unit_env(
        &self,
        agent: &Agent,
        uuid: Uuid,
        env_json_string: &str,
    ) -> AppResult<()> {
        let unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        self.save_unit_env(&unit, env_json_string).await
    }

    pub async fn reset_unit_env(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        store::units::set_env(self.pool(), uuid, None).await?;
        self.units_cache.invalidate(uuid);
        Ok(())
    }

    pub async fn get_unit_target_version(
        &self,
        agent: &Agent,
        uuid: Uuid,
    ) -> AppResult<TargetVersion> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        let repo = self.repo(unit.repo_uuid).await?;
        self.unit_target_version(&unit, &repo).await
    }

    pub async fn get_unit_schema(&self, agent: &Agent, uuid: Uuid) -> AppResult<Value> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        self.build_unit_schema(&unit).await
    }

    /// The firmware archive: the target commit's files (interpreted repos) plus env.json and
    /// schema.json, filtered by `.pepeignore`.
    pub async fn unit_firmware(
        &self,
        agent: &Agent,
        uuid: Uuid,
        format: ArchiveFormat,
    ) -> AppResult<Vec<u8>> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(&unit, &repo).await?;
        let env = Value::Object(self.build_unit_env(&unit).await?);
        let schema = self.build_unit_schema(&unit).await?;
        let source = if repo.is_compilable_repo {
            None
        } else {
            Some(
                self.git
                    .archive_tar(repo.repository_registry_uuid, &version.commit)
                    .await
                    .map_err(super::registries::git_error)?,
            )
        };
        tokio::task::spawn_blocking(move || {
            let env = to_json_4(&env);
            let schema = to_json_4(&schema);
            firmware::build_archive(
                source.as_deref(),
                &[("env.json", &env), ("schema.json", &schema)],
                format,
            )
        })
        .await
        .map_err(AppError::internal)?
        .map_err(|e| match e {
            firmware::ArchiveError::InvalidWbits(_) | firmware::ArchiveError::InvalidLevel(_) => {
                AppError::unit(e.to_string())
            }
            other => AppError::internal(other),
        })
    }

    /// Stores a unit's free-form state (`""` clears it). Non-string JSON is kept as its text.
    pub async fn set_unit_state_storage(
        &self,
        agent: &Agent,
        uuid: Uuid,
        state: Value,
    ) -> AppResult<()> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        let text = match state {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if text.chars().count() > MAX_STATE_STORAGE {
            return Err(AppError::cipher(format!(
                "The length of the content exceeds {MAX_STATE_STORAGE} characters"
            )));
        }
        let cipher = if text.is_empty() {
            None
        } else {
            Some(self.cipher.encrypt(&text)?)
        };
        store::units::set_state_storage(self.pool(), unit.uuid, cipher).await?;
        self.units_cache.invalidate(unit.uuid);
        Ok(())
    }

    pub async fn get_unit_state_storage(&self, agent: &Agent, uuid: Uuid) -> AppResult<String> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        match &unit.cipher_state_storage {
            None => Ok(String::new()),
            Some(c) => self.cipher.decrypt(c),
        }
    }

    /// "Update env from the instance": rewrites the instance's keys of the stored env (domain,
    /// broker, token) and tells the device to fetch its env (`EnvUpdate`) and schema
    /// (`SchemaUpdate`), then, with `restart`, to restart (`Reset`) so that a new broker
    /// address takes effect. Commands the unit's schema does not list are not sent; the
    /// answer says which were.
    pub async fn update_env_from_instance(
        &self,
        agent: &Agent,
        uuid: Uuid,
        restart: bool,
    ) -> AppResult<EnvRefreshRead> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        if matches!(agent, Agent::Unit(_)) {
            return Err(AppError::no_access(
                "Only the creator can refresh a unit's env",
            ));
        }
        self.refresh_unit_devices(&unit, restart).await
    }

    /// Stored env refreshed, then `EnvUpdate`, `SchemaUpdate` and (with `restart`) `Reset`.
    pub async fn refresh_unit_devices(
        &self,
        unit: &Unit,
        restart: bool,
    ) -> AppResult<EnvRefreshRead> {
        let stored_env_refreshed = self.refresh_stored_env(unit).await?;
        let unit = self.unit(unit.uuid).await?;
        let env_update = self
            .publish_command(&unit, BackendTopicCommand::EnvUpdate)
            .await?;
        let schema_update = self
            .publish_command(&unit, BackendTopicCommand::SchemaUpdate)
            .await?;
        let reset = restart
            && self
                .publish_command(&unit, BackendTopicCommand::Reset)
                .await?;
        Ok(EnvRefreshRead {
            stored_env_refreshed,
            env_update,
            schema_update,
            reset,
        })
    }

    /// Publishes a command to the unit's input base topic (API.md §5.3): silently nothing
    /// when the unit's schema does not list that topic.
    pub async fn send_unit_command(
        &self,
        agent: &Agent,
        uuid: Uuid,
        command: BackendTopicCommand,
    ) -> AppResult<()> {
        let unit = self.unit_for_creator_or_self(agent, uuid).await?;
        self.publish_command(&unit, command).await.map(|_| ())
    }
}

/// What "update env from the instance" did.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EnvRefreshRead {
    /// The stored env existed and now names this instance.
    pub stored_env_refreshed: bool,
    /// Commands published (the unit's schema lists their topics).
    pub env_update: bool,
    pub schema_update: bool,
    pub reset: bool,
}
