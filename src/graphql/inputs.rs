//! The input objects of the contract, with upstream's defaults (`= null`, `= []`, the full
//! enum lists), and their conversion into the service layer's filters and bodies.

use async_graphql::InputObject;
use uuid::Uuid;

use super::scalars::DateTime;
use super::types::*;
use crate::domain;
use crate::error::AppResult;
use crate::service::check_page;

/// The largest page a GraphQL list answers (as REST's capped lists).
pub const MAX_LIMIT: i64 = 500;

/// `offset`/`limit` of a filter: `offset < 0` and `limit > 500` are refused (absent limit: all).
pub fn page(offset: Option<i32>, limit: Option<i32>) -> AppResult<(i64, i64)> {
    check_page(offset.map(i64::from), limit.map(i64::from), Some(MAX_LIMIT))
}

fn all_visibility() -> Option<Vec<VisibilityLevel>> {
    Some(vec![
        VisibilityLevel::Public,
        VisibilityLevel::Internal,
        VisibilityLevel::Private,
    ])
}

fn both_node_types() -> Option<Vec<UnitNodeTypeEnum>> {
    Some(vec![UnitNodeTypeEnum::Output, UnitNodeTypeEnum::Input])
}

fn empty<T>() -> Option<Vec<T>> {
    Some(Vec::new())
}

fn desc() -> Option<OrderByDate> {
    Some(OrderByDate::Desc)
}

/// Lists of GraphQL enums to the domain's.
pub fn levels(v: Option<Vec<VisibilityLevel>>) -> Vec<domain::VisibilityLevel> {
    v.unwrap_or_default().into_iter().map(Into::into).collect()
}

fn node_types(v: Option<Vec<UnitNodeTypeEnum>>) -> Vec<domain::UnitNodeType> {
    v.unwrap_or_default().into_iter().map(Into::into).collect()
}

#[derive(InputObject)]
pub struct UserAuthInput {
    pub credentials: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct UserCreateInput {
    pub login: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct UserUpdateInput {
    #[graphql(default)]
    pub login: Option<String>,
    #[graphql(default)]
    pub password: Option<String>,
}

#[derive(InputObject)]
pub struct UserFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default_with = "empty()")]
    pub uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(default_with = "Some(vec![UserRole::User, UserRole::Admin])")]
    pub role: Option<Vec<UserRole>>,
    #[graphql(
        default_with = "Some(vec![UserStatus::Unverified, UserStatus::Verified, UserStatus::Blocked])"
    )]
    pub status: Option<Vec<UserStatus>>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
}

impl UserFilterInput {
    pub fn into_filter(self) -> AppResult<crate::service::users::UserFilter> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok(crate::service::users::UserFilter {
            uuids: self.uuids.unwrap_or_default(),
            search_string: self.search_string,
            role: self
                .role
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            status: self
                .status
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            order_by_create_date: self.order_by_create_date.map(Into::into),
            offset,
            limit,
        })
    }
}

#[derive(InputObject)]
pub struct CredentialsInput {
    pub username: String,
    pub pat_token: String,
}

impl From<CredentialsInput> for crate::service::registries::Credentials {
    fn from(c: CredentialsInput) -> Self {
        crate::service::registries::Credentials {
            username: c.username,
            pat_token: c.pat_token,
        }
    }
}

#[derive(InputObject)]
pub struct RepositoryRegistryCreateInput {
    pub platform: GitPlatform,
    pub repository_url: String,
    pub is_public_repository: bool,
    #[graphql(default)]
    pub credentials: Option<CredentialsInput>,
}

#[derive(InputObject)]
pub struct RepositoryRegistryFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default_with = "empty()")]
    pub uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub creator_uuid: Option<Uuid>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(default)]
    pub is_public_repository: Option<bool>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
    #[graphql(default_with = "desc()")]
    pub order_by_last_update: Option<OrderByDate>,
}

impl RepositoryRegistryFilterInput {
    pub fn into_filter(self) -> AppResult<crate::service::registries::RegistryFilter> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok(crate::service::registries::RegistryFilter {
            uuids: self.uuids.unwrap_or_default(),
            creator_uuid: self.creator_uuid,
            search_string: self.search_string,
            is_public_repository: self.is_public_repository,
            order_by_create_date: self.order_by_create_date.map(Into::into),
            order_by_last_update: self.order_by_last_update.map(Into::into),
            offset,
            limit,
        })
    }
}

#[derive(InputObject)]
pub struct CommitFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    pub repo_branch: String,
    #[graphql(default = false)]
    pub only_tag: bool,
}

#[derive(InputObject)]
pub struct RepoCreateInput {
    pub repository_registry_uuid: Uuid,
    pub default_branch: String,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub is_compilable_repo: bool,
}

impl From<RepoCreateInput> for crate::service::repos::RepoCreate {
    fn from(r: RepoCreateInput) -> Self {
        crate::service::repos::RepoCreate {
            repository_registry_uuid: r.repository_registry_uuid,
            default_branch: r.default_branch,
            visibility_level: r.visibility_level.into(),
            name: r.name,
            is_compilable_repo: r.is_compilable_repo,
        }
    }
}

#[derive(InputObject)]
pub struct RepoUpdateInput {
    #[graphql(default)]
    pub visibility_level: Option<VisibilityLevel>,
    #[graphql(default)]
    pub name: Option<String>,
    #[graphql(default)]
    pub is_auto_update_repo: Option<bool>,
    #[graphql(default)]
    pub default_branch: Option<String>,
    #[graphql(default)]
    pub default_commit: Option<String>,
    #[graphql(default)]
    pub is_only_tag_update: Option<bool>,
    #[graphql(default)]
    pub is_compilable_repo: Option<bool>,
}

impl From<RepoUpdateInput> for crate::service::repos::RepoUpdate {
    fn from(r: RepoUpdateInput) -> Self {
        crate::service::repos::RepoUpdate {
            visibility_level: r.visibility_level.map(Into::into),
            name: r.name,
            is_auto_update_repo: r.is_auto_update_repo,
            default_branch: r.default_branch,
            default_commit: r.default_commit,
            is_only_tag_update: r.is_only_tag_update,
            is_compilable_repo: r.is_compilable_repo,
        }
    }
}

#[derive(InputObject)]
pub struct RepoFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default)]
    pub repository_registry_uuid: Option<Uuid>,
    #[graphql(default_with = "empty()")]
    pub uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub creator_uuid: Option<Uuid>,
    #[graphql(default_with = "empty()")]
    pub creators_uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(default)]
    pub is_auto_update_repo: Option<bool>,
    #[graphql(default_with = "all_visibility()")]
    pub visibility_level: Option<Vec<VisibilityLevel>>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
    #[graphql(default_with = "desc()")]
    pub order_by_last_update: Option<OrderByDate>,
}

impl RepoFilterInput {
    pub fn into_filter(
        self,
    ) -> AppResult<(
        crate::service::repos::RepoFilter,
        Vec<domain::VisibilityLevel>,
    )> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok((
            crate::service::repos::RepoFilter {
                repository_registry_uuid: self.repository_registry_uuid,
                uuids: self.uuids.unwrap_or_default(),
                creator_uuid: self.creator_uuid,
                creators_uuids: self.creators_uuids.unwrap_or_default(),
                search_string: self.search_string,
                is_auto_update_repo: self.is_auto_update_repo,
                order_by_create_date: self.order_by_create_date.map(Into::into),
                order_by_last_update: self.order_by_last_update.map(Into::into),
                offset,
                limit,
            },
            levels(self.visibility_level),
        ))
    }
}

#[derive(InputObject)]
pub struct UnitCreateInput {
    pub repo_uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub is_auto_update_from_repo_unit: bool,
    #[graphql(default)]
    pub target_firmware_platform: Option<String>,
    #[graphql(default)]
    pub repo_branch: Option<String>,
    #[graphql(default)]
    pub repo_commit: Option<String>,
}

impl From<UnitCreateInput> for crate::service::units::UnitCreate {
    fn from(u: UnitCreateInput) -> Self {
        crate::service::units::UnitCreate {
            repo_uuid: u.repo_uuid,
            visibility_level: u.visibility_level.into(),
            name: u.name,
            is_auto_update_from_repo_unit: u.is_auto_update_from_repo_unit,
            target_firmware_platform: u.target_firmware_platform,
            repo_branch: u.repo_branch,
            repo_commit: u.repo_commit,
        }
    }
}

#[derive(InputObject)]
pub struct UnitUpdateInput {
    #[graphql(default)]
    pub visibility_level: Option<VisibilityLevel>,
    #[graphql(default)]
    pub name: Option<String>,
    #[graphql(default)]
    pub is_auto_update_from_repo_unit: Option<bool>,
    #[graphql(default)]
    pub target_firmware_platform: Option<String>,
    #[graphql(default)]
    pub repo_branch: Option<String>,
    #[graphql(default)]
    pub repo_commit: Option<String>,
}

impl From<UnitUpdateInput> for crate::service::units::UnitUpdate {
    fn from(u: UnitUpdateInput) -> Self {
        crate::service::units::UnitUpdate {
            visibility_level: u.visibility_level.map(Into::into),
            name: u.name,
            is_auto_update_from_repo_unit: u.is_auto_update_from_repo_unit,
            target_firmware_platform: u.target_firmware_platform,
            repo_branch: u.repo_branch,
            repo_commit: u.repo_commit,
        }
    }
}

#[derive(InputObject)]
pub struct UnitFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default_with = "empty()")]
    pub uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub creator_uuid: Option<Uuid>,
    #[graphql(default)]
    pub repo_uuid: Option<Uuid>,
    #[graphql(default_with = "empty()")]
    pub repos_uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(default)]
    pub is_auto_update_from_repo_unit: Option<bool>,
    #[graphql(default_with = "all_visibility()")]
    pub visibility_level: Option<Vec<VisibilityLevel>>,
    #[graphql(default_with = "Some(OrderByText::Asc)")]
    pub order_by_unit_name: Option<OrderByText>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
    #[graphql(default_with = "desc()")]
    pub order_by_last_update: Option<OrderByDate>,
    #[graphql(default)]
    pub unit_node_input_uuid: Option<Uuid>,
    #[graphql(default_with = "both_node_types()")]
    pub unit_node_type: Option<Vec<UnitNodeTypeEnum>>,
    #[graphql(default_with = "empty()")]
    pub unit_node_uuids: Option<Vec<Uuid>>,
}

impl UnitFilterInput {
    /// The service's filter; `with_nodes`: the query selected `unitNodes` (upstream fills and
    /// filters by nodes exactly then).
    pub fn into_filter(
        self,
        with_nodes: bool,
    ) -> AppResult<(
        crate::service::units::UnitFilter,
        Vec<domain::VisibilityLevel>,
        crate::service::units::UnitNodeInclusion,
    )> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok((
            crate::service::units::UnitFilter {
                uuids: self.uuids.unwrap_or_default(),
                creator_uuid: self.creator_uuid,
                repo_uuid: self.repo_uuid,
                repos_uuids: self.repos_uuids.unwrap_or_default(),
                search_string: self.search_string,
                is_auto_update_from_repo_unit: self.is_auto_update_from_repo_unit,
                order_by_unit_name: self.order_by_unit_name.map(Into::into),
                order_by_create_date: self.order_by_create_date.map(Into::into),
                order_by_last_update: self.order_by_last_update.map(Into::into),
                owning_nodes: None,
                offset,
                limit,
            },
            levels(self.visibility_level),
            crate::service::units::UnitNodeInclusion {
                include: with_nodes,
                unit_node_input_uuid: self.unit_node_input_uuid,
                unit_node_type: node_types(self.unit_node_type),
                unit_node_uuids: self.unit_node_uuids.unwrap_or_default(),
            },
        ))
    }
}

#[derive(InputObject)]
pub struct UnitLogFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    pub uuid: Uuid,
    #[graphql(
        default_with = "Some(vec![LogLevel::Debug, LogLevel::Info, LogLevel::Warning, LogLevel::Error, LogLevel::Critical])"
    )]
    pub level: Option<Vec<LogLevel>>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
}

impl UnitLogFilterInput {
    pub fn into_filter(self) -> AppResult<crate::service::unit_logs::UnitLogFilter> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok(crate::service::unit_logs::UnitLogFilter {
            uuid: Some(self.uuid),
            topic: None,
            level: self
                .level
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            start_create_datetime: None,
            end_create_datetime: None,
            order_by_create_date: self.order_by_create_date.map(Into::into),
            offset: Some(offset),
            limit: Some(limit),
        })
    }
}

#[derive(InputObject)]
pub struct UnitNodeFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default_with = "empty()")]
    pub uuids: Option<Vec<Uuid>>,
    #[graphql(default)]
    pub unit_uuid: Option<Uuid>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(name = "type", default_with = "both_node_types()")]
    pub node_type: Option<Vec<UnitNodeTypeEnum>>,
    #[graphql(default_with = "all_visibility()")]
    pub visibility_level: Option<Vec<VisibilityLevel>>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
    #[graphql(default)]
    pub output_uuid: Option<Uuid>,
}

impl UnitNodeFilterInput {
    pub fn into_filter(
        self,
    ) -> AppResult<(
        crate::service::unit_nodes::UnitNodeFilter,
        Vec<domain::VisibilityLevel>,
    )> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok((
            crate::service::unit_nodes::UnitNodeFilter {
                uuids: self.uuids.unwrap_or_default(),
                unit_uuid: self.unit_uuid,
                search_string: self.search_string,
                node_type: node_types(self.node_type),
                order_by_create_date: self.order_by_create_date.map(Into::into),
                output_uuid: self.output_uuid,
                offset,
                limit,
                ..Default::default()
            },
            levels(self.visibility_level),
        ))
    }
}

#[derive(InputObject)]
pub struct UnitNodeUpdateInput {
    #[graphql(default)]
    pub visibility_level: Option<VisibilityLevel>,
    #[graphql(default)]
    pub is_rewritable_input: Option<bool>,
    #[graphql(default)]
    pub is_data_pipe_active: Option<bool>,
    #[graphql(default)]
    pub max_connections: Option<i32>,
}

impl From<UnitNodeUpdateInput> for crate::service::unit_nodes::UnitNodeUpdate {
    fn from(u: UnitNodeUpdateInput) -> Self {
        crate::service::unit_nodes::UnitNodeUpdate {
            visibility_level: u.visibility_level.map(Into::into),
            is_rewritable_input: u.is_rewritable_input,
            is_data_pipe_active: u.is_data_pipe_active,
            max_connections: u.max_connections.map(i64::from),
        }
    }
}

#[derive(InputObject)]
pub struct UnitNodeSetStateInput {
    #[graphql(default)]
    pub state: Option<String>,
}

#[derive(InputObject)]
pub struct UnitNodeEdgeCreateInput {
    pub node_output_uuid: Uuid,
    pub node_input_uuid: Uuid,
}

#[derive(InputObject)]
pub struct PermissionCreateInput {
    pub agent_uuid: Uuid,
    pub agent_type: PermissionEntities,
    pub resource_uuid: Uuid,
    pub resource_type: PermissionEntities,
}

impl From<PermissionCreateInput> for crate::service::permissions::PermissionCreate {
    fn from(p: PermissionCreateInput) -> Self {
        crate::service::permissions::PermissionCreate {
            agent_uuid: p.agent_uuid,
            agent_type: p.agent_type.into(),
            resource_uuid: p.resource_uuid,
            resource_type: p.resource_type.into(),
        }
    }
}

#[derive(InputObject)]
pub struct PermissionFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    pub resource_uuid: Uuid,
    pub resource_type: PermissionEntities,
    #[graphql(default)]
    pub agent_type: Option<PermissionEntities>,
}

// Data pipes (issue 17).

#[derive(InputObject)]
pub struct DataPipeFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    pub uuid: Uuid,
    #[graphql(name = "type")]
    pub policy_type: ProcessingPolicyType,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(
        default_with = "Some(vec![AggregationFunctions::Avg, AggregationFunctions::Min, AggregationFunctions::Max, AggregationFunctions::Sum])"
    )]
    pub aggregation_type: Option<Vec<AggregationFunctions>>,
    #[graphql(default)]
    pub time_window_size: Option<i32>,
    #[graphql(default)]
    pub start_agg_window_datetime: Option<DateTime>,
    #[graphql(default)]
    pub end_agg_window_datetime: Option<DateTime>,
    #[graphql(default)]
    pub start_create_datetime: Option<DateTime>,
    #[graphql(default)]
    pub end_create_datetime: Option<DateTime>,
    #[graphql(default)]
    pub relative_time: Option<String>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
}

impl DataPipeFilterInput {
    pub fn into_request(self) -> AppResult<crate::service::data_pipes::PipeDataRequest> {
        let (offset, limit) = page(self.offset, self.limit)?;
        let time = |t: Option<DateTime>| t.and_then(|t| crate::domain::parse_time(&t.0));
        let size = self
            .time_window_size
            .map(|s| {
                u32::try_from(s).map_err(|_| {
                    crate::error::AppError::data_pipe("time_window_size must not be negative")
                })
            })
            .transpose()?;
        Ok(crate::service::data_pipes::PipeDataRequest {
            node: self.uuid,
            policy: self.policy_type.into(),
            search: self.search_string,
            aggregation_types: self
                .aggregation_type
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            time_window_size: size,
            end_window_from: time(self.start_agg_window_datetime),
            end_window_to: time(self.end_agg_window_datetime),
            created_from: time(self.start_create_datetime),
            created_to: time(self.end_create_datetime),
            relative: self
                .relative_time
                .as_deref()
                .map(crate::service::data_pipes::parse_relative_time)
                .transpose()?,
            order: self.order_by_create_date.map(Into::into),
            offset,
            limit,
        })
    }
}

#[derive(InputObject)]
pub struct DashboardCreateInput {
    pub name: String,
}

#[derive(InputObject)]
pub struct DashboardFilterInput {
    #[graphql(default)]
    pub offset: Option<i32>,
    #[graphql(default)]
    pub limit: Option<i32>,
    #[graphql(default)]
    pub search_string: Option<String>,
    #[graphql(default_with = "desc()")]
    pub order_by_create_date: Option<OrderByDate>,
}

impl DashboardFilterInput {
    pub fn into_filter(self) -> AppResult<crate::service::dashboards::DashboardFilter> {
        let (offset, limit) = page(self.offset, self.limit)?;
        Ok(crate::service::dashboards::DashboardFilter {
            search_string: self.search_string,
            order_by_create_date: self.order_by_create_date.map(Into::into),
            offset,
            limit,
        })
    }
}

#[derive(InputObject)]
pub struct DashboardPanelCreateInput {
    pub dashboard_uuid: Uuid,
    pub title: String,
    #[graphql(name = "type")]
    pub panel_type: DashboardPanelTypeEnum,
}

#[derive(InputObject)]
pub struct LinkUnitNodeToPanelInput {
    pub unit_node_uuid: Uuid,
    pub dashboard_panels_uuid: Uuid,
    pub is_last_data: bool,
    pub is_forced_to_json: bool,
}

/// A change of the instance's grade (ours, beyond the contract): REST's `PATCH /grade`.
#[derive(InputObject)]
pub struct GradeInput {
    #[graphql(default)]
    pub free_mps_per_user: Option<f64>,
    #[graphql(default)]
    pub price_per_mps: Option<f64>,
    #[graphql(default)]
    pub free_aggregated_topics: Option<i32>,
    #[graphql(default)]
    pub price_per_aggregated_topic: Option<f64>,
    #[graphql(default)]
    pub currency: Option<String>,
}

impl From<GradeInput> for crate::service::grades::GradeUpdate {
    fn from(g: GradeInput) -> Self {
        crate::service::grades::GradeUpdate {
            free_mps_per_user: g.free_mps_per_user,
            price_per_mps: g.price_per_mps,
            free_aggregated_topics: g.free_aggregated_topics.map(i64::from),
            price_per_aggregated_topic: g.price_per_aggregated_topic,
            currency: g.currency,
        }
    }
}
