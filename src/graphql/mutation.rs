//! `Mutation`: every write of the contract, each a call into the service layer with the REST
//! rules. Writes without a result answer `NoneType { isNone: true }`.

use async_graphql::{Context, Object, Result, Upload};
use uuid::Uuid;

use super::inputs::*;
use super::types::*;
use super::{agent, instance, upload};
use crate::service::users::{UserCreate, UserUpdate};

/// The largest data pipe configuration or CSV upload read before the feature answers.
use crate::service::data_pipes::{MAX_CONFIG_BYTES as MAX_DATA_PIPE_CONFIG, MAX_CSV_BYTES};

pub struct Mutation;

#[Object]
impl Mutation {
    async fn create_user(&self, ctx: &Context<'_>, user: UserCreateInput) -> Result<UserType> {
        let data = UserCreate {
            login: user.login,
            password: user.password,
        };
        Ok(instance(ctx).create_user(agent(ctx)?, data).await?.into())
    }

    async fn update_user(&self, ctx: &Context<'_>, user: UserUpdateInput) -> Result<UserType> {
        let data = UserUpdate {
            login: user.login,
            password: user.password,
        };
        Ok(instance(ctx).update_user(agent(ctx)?, data).await?.into())
    }

    /// Admin: changes the instance's grade (ours, beyond the contract): REST's `PATCH /grade`.
    async fn update_grade(&self, ctx: &Context<'_>, grade: GradeInput) -> Result<GradeType> {
        Ok(instance(ctx)
            .update_grade(agent(ctx)?, grade.into())
            .await?
            .into())
    }

    /// Sets the `PepeunitGrafana` cookie (a Grafana token of the caller, a user), which the
    /// OIDC provider's authorize endpoint reads when Grafana signs the user in.
    async fn set_grafana_cookies(&self, ctx: &Context<'_>) -> Result<NoneType> {
        let cookie = instance(ctx).grafana_cookie(agent(ctx)?)?;
        ctx.append_http_header(axum::http::header::SET_COOKIE, cookie);
        Ok(NoneType::done())
    }

    async fn block_user(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx)
            .set_user_blocked(agent(ctx)?, uuid, true)
            .await?;
        Ok(NoneType::done())
    }

    async fn unblock_user(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx)
            .set_user_blocked(agent(ctx)?, uuid, false)
            .await?;
        Ok(NoneType::done())
    }

    /// Clears the `PepeunitGrafana` cookie (anyone may, as upstream).
    async fn delete_user_cookies(&self, ctx: &Context<'_>) -> Result<NoneType> {
        ctx.append_http_header(
            axum::http::header::SET_COOKIE,
            instance(ctx).grafana_cookie_cleared(),
        );
        Ok(NoneType::done())
    }

    async fn create_repo(&self, ctx: &Context<'_>, repo: RepoCreateInput) -> Result<RepoType> {
        Ok(instance(ctx)
            .create_repo(agent(ctx)?, repo.into())
            .await?
            .into())
    }

    async fn update_repo(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        repo: RepoUpdateInput,
    ) -> Result<RepoType> {
        Ok(instance(ctx)
            .update_repo(agent(ctx)?, uuid, repo.into())
            .await?
            .into())
    }

    async fn delete_repo(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx).delete_repo(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn create_repository_registry(
        &self,
        ctx: &Context<'_>,
        repository_registry: RepositoryRegistryCreateInput,
    ) -> Result<RepositoryRegistryType> {
        let data = crate::service::registries::RegistryCreate {
            platform: repository_registry.platform.into(),
            repository_url: repository_registry.repository_url,
            is_public_repository: repository_registry.is_public_repository,
            credentials: repository_registry.credentials.map(Into::into),
        };
        Ok(instance(ctx)
            .create_registry(agent(ctx)?, data)
            .await?
            .into())
    }

    async fn set_credentials(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        data: CredentialsInput,
    ) -> Result<NoneType> {
        instance(ctx)
            .set_registry_credentials(agent(ctx)?, uuid, data.into())
            .await?;
        Ok(NoneType::done())
    }

    async fn update_local_repository(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx)
            .update_local_repository(agent(ctx)?, uuid)
            .await?;
        Ok(NoneType::done())
    }

    async fn delete_repository_registry(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx).delete_registry(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn update_units_firmware(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx)
            .update_units_firmware(agent(ctx)?, uuid)
            .await?;
        Ok(NoneType::done())
    }

    async fn bulk_update(&self, ctx: &Context<'_>) -> Result<NoneType> {
        instance(ctx).bulk_update(agent(ctx)?).await?;
        Ok(NoneType::done())
    }

    async fn create_unit(&self, ctx: &Context<'_>, unit: UnitCreateInput) -> Result<UnitType> {
        let unit = instance(ctx).create_unit(agent(ctx)?, unit.into()).await?;
        Ok(UnitType::new(unit, false))
    }

    async fn update_unit(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        unit: UnitUpdateInput,
    ) -> Result<UnitType> {
        let unit = instance(ctx)
            .update_unit(agent(ctx)?, uuid, unit.into())
            .await?;
        Ok(UnitType::new(unit, false))
    }

    async fn update_unit_env(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        env_json_str: String,
    ) -> Result<NoneType> {
        instance(ctx)
            .set_unit_env(agent(ctx)?, uuid, &env_json_str)
            .await?;
        Ok(NoneType::done())
    }

    async fn reset_unit_env(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx).reset_unit_env(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn set_state_storage(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        state: String,
    ) -> Result<NoneType> {
        instance(ctx)
            .set_unit_state_storage(agent(ctx)?, uuid, serde_json::Value::String(state))
            .await?;
        Ok(NoneType::done())
    }

    async fn send_command_to_input_base_topic(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        command: BackendTopicCommand,
    ) -> Result<NoneType> {
        instance(ctx)
            .send_unit_command(agent(ctx)?, uuid, command.into())
            .await?;
        Ok(NoneType::done())
    }

    async fn delete_unit(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx).delete_unit(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn update_unit_node(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        unit_node: UnitNodeUpdateInput,
    ) -> Result<UnitNodeType> {
        Ok(instance(ctx)
            .update_unit_node(agent(ctx)?, uuid, unit_node.into())
            .await?
            .into())
    }

    async fn set_state_unit_node_input(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        unit_node: UnitNodeSetStateInput,
    ) -> Result<UnitNodeType> {
        let data = crate::service::unit_nodes::UnitNodeSetState {
            state: unit_node.state,
        };
        Ok(instance(ctx)
            .set_unit_node_state(agent(ctx)?, uuid, data)
            .await?
            .into())
    }

    async fn create_permission(
        &self,
        ctx: &Context<'_>,
        permission: PermissionCreateInput,
    ) -> Result<PermissionType> {
        Ok(instance(ctx)
            .create_permission(agent(ctx)?, permission.into())
            .await?
            .into())
    }

    async fn delete_permission(
        &self,
        ctx: &Context<'_>,
        agent_uuid: Uuid,
        resource_uuid: Uuid,
    ) -> Result<NoneType> {
        instance(ctx)
            .delete_permission(agent(ctx)?, agent_uuid, resource_uuid)
            .await?;
        Ok(NoneType::done())
    }

    async fn create_unit_node_edge(
        &self,
        ctx: &Context<'_>,
        unit_node_edge: UnitNodeEdgeCreateInput,
    ) -> Result<UnitNodeEdgeType> {
        let data = crate::service::unit_nodes::UnitNodeEdgeCreate {
            node_output_uuid: unit_node_edge.node_output_uuid,
            node_input_uuid: unit_node_edge.node_input_uuid,
        };
        Ok(instance(ctx)
            .create_unit_node_edge(agent(ctx)?, data)
            .await?
            .into())
    }

    async fn delete_unit_node_edge(
        &self,
        ctx: &Context<'_>,
        input_uuid: Uuid,
        output_uuid: Uuid,
    ) -> Result<NoneType> {
        instance(ctx)
            .delete_unit_node_edge_between(agent(ctx)?, input_uuid, output_uuid)
            .await?;
        Ok(NoneType::done())
    }

    async fn set_data_pipe_config(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        file: Upload,
    ) -> Result<NoneType> {
        let bytes = upload(ctx, &file, MAX_DATA_PIPE_CONFIG)?;
        instance(ctx)
            .set_data_pipe_config(agent(ctx)?, uuid, &bytes)
            .await?;
        Ok(NoneType::done())
    }

    async fn set_data_pipe_data_csv(
        &self,
        ctx: &Context<'_>,
        uuid: Uuid,
        file: Upload,
    ) -> Result<NoneType> {
        let bytes = upload(ctx, &file, MAX_CSV_BYTES)?;
        instance(ctx)
            .import_data_pipe_csv(agent(ctx)?, uuid, &bytes)
            .await?;
        Ok(NoneType::done())
    }

    /// `Query.getConvertTomlToMd` sent with a file (hidden: see `query.rs`).
    #[graphql(visible = false)]
    async fn get_convert_toml_to_md(&self, ctx: &Context<'_>, file: Upload) -> Result<String> {
        super::query::convert_toml_to_md(ctx, file)
    }

    /// `Query.checkDataPipeConfig` sent with a file (hidden: see `query.rs`).
    #[graphql(visible = false)]
    async fn check_data_pipe_config(
        &self,
        ctx: &Context<'_>,
        file: Upload,
    ) -> Result<Vec<DataPipeValidationErrorType>> {
        super::query::check_data_pipe_config(ctx, file)
    }

    async fn delete_data_pipe_data(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<NoneType> {
        instance(ctx)
            .delete_data_pipe_data(agent(ctx)?, uuid)
            .await?;
        Ok(NoneType::done())
    }

    async fn create_dashboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "dashboard")] dashboard: DashboardCreateInput,
    ) -> Result<DashboardType> {
        let input = crate::service::dashboards::DashboardCreate {
            name: dashboard.name,
        };
        Ok(instance(ctx)
            .create_dashboard(agent(ctx)?, &input)
            .await?
            .into())
    }

    async fn create_dashboard_panel(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "dashboardPanel")] dashboard_panel: DashboardPanelCreateInput,
    ) -> Result<DashboardPanelType> {
        let input = crate::service::dashboards::DashboardPanelCreate {
            dashboard_uuid: dashboard_panel.dashboard_uuid,
            title: dashboard_panel.title,
            panel_type: dashboard_panel.panel_type.into(),
        };
        Ok(instance(ctx)
            .create_dashboard_panel(agent(ctx)?, &input)
            .await?
            .into())
    }

    async fn link_unit_node_to_panel(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "dashboard")] dashboard: LinkUnitNodeToPanelInput,
    ) -> Result<UnitNodeForPanelType> {
        let input = crate::service::dashboards::LinkUnitNodeToPanel {
            unit_node_uuid: dashboard.unit_node_uuid,
            dashboard_panels_uuid: dashboard.dashboard_panels_uuid,
            is_last_data: dashboard.is_last_data,
            is_forced_to_json: dashboard.is_forced_to_json,
        };
        Ok(instance(ctx)
            .link_unit_node_to_panel(agent(ctx)?, &input)
            .await?
            .into())
    }

    async fn sync_dashboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "uuid")] uuid: Uuid,
    ) -> Result<DashboardType> {
        Ok(instance(ctx)
            .sync_dashboard(agent(ctx)?, uuid)
            .await?
            .into())
    }

    async fn delete_dashboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "uuid")] uuid: Uuid,
    ) -> Result<NoneType> {
        instance(ctx).delete_dashboard(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn delete_panel(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "uuid")] uuid: Uuid,
    ) -> Result<NoneType> {
        instance(ctx).delete_panel(agent(ctx)?, uuid).await?;
        Ok(NoneType::done())
    }

    async fn delete_link(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "unitNodeUuid")] unit_node_uuid: Uuid,
        #[graphql(name = "dashboardPanelUuid")] dashboard_panel_uuid: Uuid,
    ) -> Result<NoneType> {
        instance(ctx)
            .delete_link(agent(ctx)?, unit_node_uuid, dashboard_panel_uuid)
            .await?;
        Ok(NoneType::done())
    }
}
