//! Commands to devices (API.md §5.3): what each command carries, where it is published and what
//! it changes. Everything that publishes to a unit goes through here and [`crate::mqtt::Outbox`].

use serde_json::{json, Value};
use uuid::Uuid;

use super::repos::TargetVersion;
use super::{Agent, Instance};
use crate::domain::{self, BackendTopicCommand, Topic, UnitFirmwareUpdateStatus};
use crate::error::{AppError, AppResult};
use crate::store::{self, repos::Repo, units::Unit};

impl Instance {
    /// `{domain}/input_base_topic/{unit}/{name}/pepeunit`
    pub fn command_topic(&self, unit: Uuid, command: BackendTopicCommand) -> String {
        Topic::command(&self.config.domain, unit, command).to_string()
    }

    /// The assets `[(name, url)]` of the release tagged with the version's tag.
    pub async fn release_assets(
        &self,
        repo: &Repo,
        version: &TargetVersion,
    ) -> AppResult<Vec<(String, String)>> {
        let registry = store::registries::get(self.pool(), repo.repository_registry_uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let mut releases: std::collections::BTreeMap<String, Vec<(String, String)>> = registry
            .releases_data
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        Ok(version
            .tag
            .as_ref()
            .and_then(|t| releases.remove(t))
            .unwrap_or_default())
    }

    /// Publishes `command` to the unit when its target version's schema lists the command's
    /// topic; returns whether it was published. `Update` marks the unit `RequestSent` (or
    /// `Error` when publishing fails); `LogSync` clears the stored logs.
    pub async fn publish_command(
        &self,
        unit: &Unit,
        command: BackendTopicCommand,
    ) -> AppResult<bool> {
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(unit, &repo).await?;
        let (_, schema) = self.repo_files(&repo, &version.commit).await?;
        let name = format!("{}/pepeunit", command.topic_name());
        if !schema.input_base_topic.contains(&name) {
            return Ok(false);
        }
        let mut payload = json!({"COMMAND": command.as_str()});
        if command == BackendTopicCommand::Update {
            payload["PU_COMMIT_VERSION"] = Value::String(version.commit.clone());
            if repo.is_compilable_repo {
                let platform = unit.target_firmware_platform.as_deref().unwrap_or_default();
                let link = self
                    .release_assets(&repo, &version)
                    .await?
                    .into_iter()
                    .find(|(asset, _)| asset == platform)
                    .map(|(_, url)| url);
                match link {
                    Some(url) => payload["COMPILED_FIRMWARE_LINK"] = Value::String(url),
                    None => {
                        let err = AppError::unit(format!(
                            "Platform {platform} is not among the release assets of the target version"
                        ));
                        self.set_update_status(unit.uuid, Err(&err)).await?;
                        return Err(err);
                    }
                }
            }
        }
        let topic = self.command_topic(unit.uuid, command);
        // LogSync: the device answers with its whole log file at once, so the stored lines
        // are cleared before the command goes out (clearing after could remove or hide lines
        // of the answer); not while the broker is unreachable, when the command cannot go
        if command == BackendTopicCommand::LogSync && self.outbox.is_connected() {
            self.clear_unit_logs(unit.uuid).await?;
        }
        let sent = self.outbox.publish(&topic, payload.to_string());
        if command == BackendTopicCommand::Update {
            self.set_update_status(unit.uuid, sent.as_ref().map(|_| ()))
                .await?
        }
        sent.map(|_| true)
    }

    async fn set_update_status(&self, unit: Uuid, sent: Result<(), &AppError>) -> AppResult<()> {
        let (status, error, at) = match sent {
            Ok(()) => (
                UnitFirmwareUpdateStatus::RequestSent,
                None,
                Some(domain::now()),
            ),
            Err(e) => (
                UnitFirmwareUpdateStatus::Error,
                Some(e.message().to_string()),
                None,
            ),
        };
        store::units::set_firmware_status(self.pool(), unit, status, error, at.as_deref()).await?;
        self.units_cache.invalidate(unit);
        Ok(())
    }

    /// Sends a command where no caller waits for the answer (edge changes, unit updates,
    /// auto-update): failures are logged, never returned.
    pub async fn send_command_quietly(&self, unit: Uuid, command: BackendTopicCommand) {
        let result = match self.unit(unit).await {
            Ok(unit) => self.publish_command(&unit, command).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::info!(%unit, command = command.as_str(), error = %e, "command not sent");
        }
    }

    /// `Update` to every auto-updating unit of the repo whose current version differs from its
    /// target; returns how many were sent.
    pub async fn update_repo_units(&self, repo: &Repo, only_outdated: bool) -> AppResult<usize> {
        let mut sent = 0;
        for unit in store::units::by_repo(self.pool(), repo.uuid).await? {
            if !unit.is_auto_update_from_repo_unit {
                continue;
            }
            if only_outdated {
                let Ok(target) = self.unit_target_version(&unit, repo).await else {
                    continue;
                };
                if unit.current_commit_version.as_deref() == Some(target.commit.as_str()) {
                    continue;
                }
            }
            match self
                .publish_command(&unit, BackendTopicCommand::Update)
                .await
            {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => tracing::info!(unit = %unit.uuid, error = %e, "Update not sent"),
            }
        }
        Ok(sent)
    }

    /// `PATCH /repos/update_units_firmware/{uuid}`: the repo's creator pushes `Update` to its
    /// auto-updating units; failures of single units are swallowed (API.md).
    pub async fn update_units_firmware(&self, agent: &Agent, repo: Uuid) -> AppResult<()> {
        let repo = self.repo(repo).await?;
        agent.require_creator(Some(repo.creator_uuid))?;
        if !self.outbox.is_connected() {
            return Err(AppError::mqtt(
                "The backend is not connected to the MQTT broker",
            ));
        }
        self.update_repo_units(&repo, false).await?;
        Ok(())
    }

    /// `POST /repos/bulk_update` (admin): `Update` to every auto-updating unit of every
    /// auto-updating repo, in the background.
    pub async fn bulk_update(&self, agent: &Agent) -> AppResult<()> {
        agent.require_admin()?;
        let this = self.clone();
        tokio::spawn(async move {
            match this.auto_update_all(false).await {
                Ok(n) => tracing::info!(sent = n, "bulk update done"),
                Err(e) => tracing::warn!(error = %e, "bulk update failed"),
            }
        });
        Ok(())
    }

    /// The poller's hourly job and the step after a registry sync: units of auto-updating
    /// repos get `Update` when their repo's target version moved away from what they run.
    pub async fn auto_update_all(&self, only_outdated: bool) -> AppResult<usize> {
        let mut sent = 0;
        for repo in store::repos::auto_updating(self.pool()).await? {
            sent += self.update_repo_units(&repo, only_outdated).await?;
        }
        Ok(sent)
    }

    /// After a registry sync: auto-update the units of its repos.
    pub async fn auto_update_registry(&self, registry: Uuid) -> AppResult<usize> {
        let mut sent = 0;
        for repo in store::repos::auto_updating(self.pool()).await? {
            if repo.repository_registry_uuid == registry {
                sent += self.update_repo_units(&repo, true).await?;
            }
        }
        Ok(sent)
    }
}
