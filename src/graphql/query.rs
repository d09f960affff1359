//! `Query`: every read of the contract, each a call into the service layer with the REST rules.

use async_graphql::{Context, Object, Result, Upload};
use uuid::Uuid;

use super::inputs::*;
use super::types::*;
use super::{agent, instance, upload};
use crate::service::users::UserAuth;

/// The largest `getConvertTomlToMd` file (as REST's `convert_toml_to_md`).
const MAX_TOML: usize = 64 * 1024;
use crate::service::data_pipes::{PipeData, MAX_CONFIG_BYTES as MAX_DATA_PIPE_CONFIG};

pub struct Query;

// The two queries that take a file. async-graphql allows `Upload` variables only in mutations,
// so `super::upload_queries_as_mutations` runs such a query as a mutation, on the hidden twins
// of these fields in `Mutation`.

pub(super) fn convert_toml_to_md(ctx: &Context<'_>, file: Upload) -> Result<String> {
    let bytes = upload(ctx, &file, MAX_TOML)?;
    Ok(instance(ctx).convert_toml_to_md(agent(ctx)?, &bytes)?)
}

pub(super) fn check_data_pipe_config(
    ctx: &Context<'_>,
    file: Upload,
) -> Result<Vec<DataPipeValidationErrorType>> {
    let bytes = upload(ctx, &file, MAX_DATA_PIPE_CONFIG)?;
    Ok(instance(ctx)
        .check_data_pipe_config(agent(ctx)?, &bytes)?
        .into_iter()
        .map(|e| DataPipeValidationErrorType {
            stage: e.stage.into(),
            message: e.message,
        })
        .collect())
}

#[Object]
impl Query {
    async fn get_user(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<UserType> {
        Ok(instance(ctx).get_user(agent(ctx)?, uuid).await?.into())
    }

    async fn get_token(&self, ctx: &Context<'_>, data: UserAuthInput) -> Result<String> {
        let auth = UserAuth {
            credentials: data.credentials,
            password: data.password,
        };
        Ok(instance(ctx).authenticate(agent(ctx)?, auth).await?)
    }

    /// A one-time link binding a Telegram chat to the caller's account.
    async fn get_verification_user(&self, ctx: &Context<'_>) -> Result<String> {
        Ok(instance(ctx).telegram_link(agent(ctx)?).await?)
    }

    async fn get_users(
        &self,
        ctx: &Context<'_>,
        filters: UserFilterInput,
    ) -> Result<UsersResultType> {
        let (count, users) = instance(ctx)
            .list_users(agent(ctx)?, filters.into_filter()?)
            .await?;
        Ok(UsersResultType {
            count: super::types::count(count),
            users: users.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_repo(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<RepoType> {
        Ok(instance(ctx).get_repo(agent(ctx)?, uuid).await?.into())
    }

    async fn get_repos(
        &self,
        ctx: &Context<'_>,
        filters: RepoFilterInput,
    ) -> Result<ReposResultType> {
        let (filter, levels) = filters.into_filter()?;
        let (count, repos) = instance(ctx)
            .list_repos(agent(ctx)?, filter, &levels)
            .await?;
        Ok(ReposResultType {
            count: super::types::count(count),
            repos: repos.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_repository_registry(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
    ) -> Result<RepositoryRegistryType> {
        Ok(instance(ctx).get_registry(agent(ctx)?, uuid).await?.into())
    }

    /// Commits of a branch, newest first (10 unless `limit` says otherwise, at most 500).
    async fn get_branch_commits(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        filters: CommitFilterInput,
    ) -> Result<Vec<CommitType>> {
        let (offset, limit) = page(filters.offset, Some(filters.limit.unwrap_or(10)))?;
        let commits = instance(ctx)
            .branch_commits(
                agent(ctx)?,
                uuid,
                &filters.repo_branch,
                filters.only_tag,
                offset,
                limit,
            )
            .await?;
        Ok(commits
            .into_iter()
            .map(|c| CommitType {
                commit: c.commit,
                summary: c.summary,
                tag: c.tag,
            })
            .collect())
    }

    async fn get_credentials(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
    ) -> Result<Option<OneRepositoryRegistryCredentialsType>> {
        Ok(instance(ctx)
            .get_registry_credentials(agent(ctx)?, uuid)
            .await?
            .map(Into::into))
    }

    async fn get_repositories_registry(
        &self,
        ctx: &Context<'_>,
        filters: RepositoryRegistryFilterInput,
    ) -> Result<RepositoriesRegistryResultType> {
        let (count, registries) = instance(ctx)
            .list_registries(agent(ctx)?, filters.into_filter()?)
            .await?;
        Ok(RepositoriesRegistryResultType {
            count: super::types::count(count),
            repositories_registry: registries.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_available_platforms(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        #[graphql(default)] target_commit: Option<String>,
        #[graphql(default)] target_tag: Option<String>,
    ) -> Result<Vec<PlatformType>> {
        Ok(instance(ctx)
            .available_platforms(agent(ctx)?, uuid, target_commit, target_tag)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn get_versions(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<RepoVersionsType> {
        Ok(instance(ctx).repo_versions(agent(ctx)?, uuid).await?.into())
    }

    async fn get_unit(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<UnitType> {
        Ok(UnitType::new(
            instance(ctx).get_unit(agent(ctx)?, uuid).await?,
            false,
        ))
    }

    /// The unit's env.json as JSON text.
    async fn get_unit_env(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<String> {
        let env = instance(ctx).get_unit_env(agent(ctx)?, uuid).await?;
        Ok(serde_json::to_string(&env)?)
    }

    async fn get_target_version(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<TargetVersionType> {
        Ok(instance(ctx)
            .get_unit_target_version(agent(ctx)?, uuid)
            .await?
            .into())
    }

    /// The unit's schema.json as JSON text.
    async fn get_unit_current_schema(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<String> {
        let schema = instance(ctx).get_unit_schema(agent(ctx)?, uuid).await?;
        Ok(serde_json::to_string(&schema)?)
    }

    async fn get_state_storage(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<String> {
        Ok(instance(ctx)
            .get_unit_state_storage(agent(ctx)?, uuid)
            .await?)
    }

    /// Units; their `unitNodes` are loaded (and filter the units, as upstream) only when the
    /// query selects them, in one query for the whole page.
    async fn get_units(
        &self,
        ctx: &Context<'_>,
        filters: UnitFilterInput,
    ) -> Result<UnitsResultType> {
        let with_nodes = ctx.look_ahead().field("units").field("unitNodes").exists();
        let (filter, levels, nodes) = filters.into_filter(with_nodes)?;
        let (count, units) = instance(ctx)
            .list_units(agent(ctx)?, filter, &levels, nodes)
            .await?;
        Ok(UnitsResultType {
            count: super::types::count(count),
            units: units
                .into_iter()
                .map(|u| UnitType::new(u, with_nodes))
                .collect(),
        })
    }

    async fn get_unit_logs(
        &self,
        ctx: &Context<'_>,
        filters: UnitLogFilterInput,
    ) -> Result<UnitLogsResultType> {
        let (count, logs) = instance(ctx)
            .unit_log_list(agent(ctx)?, filters.into_filter()?)
            .await?;
        Ok(UnitLogsResultType {
            count: super::types::count(count),
            unit_logs: logs.into_iter().map(Into::into).collect(),
        })
    }

    /// A README in Markdown from a `.toml` description (at most 64 KiB).
    async fn get_convert_toml_to_md(&self, ctx: &Context<'_>, file: Upload) -> Result<String> {
        convert_toml_to_md(ctx, file)
    }

    async fn get_unit_node(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<UnitNodeType> {
        Ok(instance(ctx).get_unit_node(agent(ctx)?, uuid).await?.into())
    }

    async fn get_pipe_data(
        &self,
        ctx: &Context<'_>,
        filters: DataPipeFilterInput,
    ) -> Result<PipeDataResultType> {
        let request = filters.into_request()?;
        let (count, data) = instance(ctx)
            .get_data_pipe_data(agent(ctx)?, request)
            .await?;
        let pipe_data = match data {
            PipeData::LastValue {
                node,
                state,
                last_update_datetime,
            } => vec![PipeDataRow::LastValue(LastValueType {
                unit_node_uuid: node,
                state: state.unwrap_or_default(),
                last_update_datetime: super::scalars::DateTime(last_update_datetime),
            })],
            PipeData::Rows(rows) => rows.into_iter().map(Into::into).collect(),
        };
        Ok(PipeDataResultType {
            count: super::types::count(count),
            pipe_data,
        })
    }

    async fn get_unit_nodes(
        &self,
        ctx: &Context<'_>,
        filters: UnitNodeFilterInput,
    ) -> Result<UnitNodesResultType> {
        let (filter, levels) = filters.into_filter()?;
        let (count, nodes) = instance(ctx)
            .list_unit_nodes(agent(ctx)?, filter, &levels)
            .await?;
        Ok(UnitNodesResultType {
            count: super::types::count(count),
            unit_nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    async fn check_data_pipe_config(
        &self,
        ctx: &Context<'_>,
        file: Upload,
    ) -> Result<Vec<DataPipeValidationErrorType>> {
        check_data_pipe_config(ctx, file)
    }

    async fn get_data_pipe_config(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<String> {
        Ok(instance(ctx)
            .get_data_pipe_config(agent(ctx)?, uuid)
            .await?)
    }

    /// The instance's grade (ours, beyond the contract): public, as REST's `GET /grade`.
    async fn get_grade(&self, ctx: &Context<'_>) -> Result<GradeType> {
        Ok(instance(ctx).grade().await?.into())
    }

    /// The caller's Units with traffic (an admin's: all), as REST's `GET /metrics/load/units`
    /// (ours, beyond the contract).
    async fn get_load_report(&self, ctx: &Context<'_>) -> Result<LoadReportType> {
        Ok(instance(ctx).load_report(agent(ctx)?).await?.into())
    }

    /// One Unit's load with its topics (its creator or an admin).
    async fn get_unit_load(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<UnitLoadType> {
        Ok(instance(ctx).unit_load(agent(ctx)?, uuid).await?.into())
    }

    /// A Repo's load: the average over its Units (its creator or an admin).
    async fn get_repo_load(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<GroupLoadType> {
        Ok(instance(ctx).repo_load(agent(ctx)?, uuid).await?.into())
    }

    /// A user's load: the sum over their Units (the user or an admin).
    async fn get_user_load(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<GroupLoadType> {
        Ok(instance(ctx).user_load(agent(ctx)?, uuid).await?.into())
    }

    async fn get_base_metrics(&self, ctx: &Context<'_>) -> Result<BaseMetricsType> {
        Ok(instance(ctx).metrics(agent(ctx)?).await?.into())
    }

    async fn get_resource_agents(
        &self,
        ctx: &Context<'_>,
        filters: PermissionFilterInput,
    ) -> Result<PermissionsType> {
        let (offset, limit) = page(filters.offset, filters.limit)?;
        let (count, permissions) = instance(ctx)
            .resource_agents(
                agent(ctx)?,
                filters.resource_uuid,
                filters.resource_type.into(),
                filters.agent_type.map(Into::into),
                offset,
                limit,
            )
            .await?;
        Ok(PermissionsType {
            count: super::types::count(count),
            permissions: permissions.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_dashboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "uuid")] uuid: Uuid,
    ) -> Result<DashboardType> {
        Ok(instance(ctx).get_dashboard(agent(ctx)?, uuid).await?.into())
    }

    async fn get_dashboards(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "filters")] filters: DashboardFilterInput,
    ) -> Result<DashboardsResultType> {
        let (count, dashboards) = instance(ctx)
            .list_dashboards(agent(ctx)?, &filters.into_filter()?)
            .await?;
        Ok(DashboardsResultType {
            count: super::types::count(count),
            dashboards: dashboards.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_dashboard_panels(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "uuid")] uuid: Uuid,
    ) -> Result<DashboardPanelsResultType> {
        let (count, panels) = instance(ctx)
            .get_dashboard_panels(agent(ctx)?, uuid)
            .await?;
        Ok(DashboardPanelsResultType {
            count: super::types::count(count),
            panels: panels.into_iter().map(Into::into).collect(),
        })
    }
}
