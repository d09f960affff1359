//! The output types and enums of the contract (`../shared/upstream-schema.graphql`), each built
//! from the row type the service layer answers with. Names are upstream's (`UnitType`, ...);
//! fields are camelCase on the wire.

use async_graphql::{ComplexObject, Context, Enum, Result, SimpleObject, Union};
use uuid::Uuid;

use super::scalars::DateTime;
use super::{agent, instance};
use crate::service::permissions::Permission;
use crate::service::registries::{CredentialsRead, RepositoryRegistry};
use crate::service::repos::{PlatformRead, Repo, RepoVersions, TargetVersion};
use crate::service::unit_logs::UnitLog;
use crate::service::unit_nodes::{UnitNode, UnitNodeEdge};
use crate::service::units::{Unit, UnitState};
use crate::service::users::User;

/// Declares a GraphQL enum mirroring a domain enum (converted both ways by async-graphql).
macro_rules! mirror_enum {
    ($name:ident = $remote:literal { $($variant:ident),+ $(,)? }) => {
        #[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
        #[graphql(remote = $remote)]
        pub enum $name { $($variant),+ }
    };
}

mirror_enum!(VisibilityLevel = "crate::domain::VisibilityLevel" { Public, Internal, Private });
mirror_enum!(UserRole = "crate::domain::UserRole" { User, Admin });
mirror_enum!(UserStatus = "crate::domain::UserStatus" { Unverified, Verified, Blocked });
mirror_enum!(UnitNodeTypeEnum = "crate::domain::UnitNodeType" { Output, Input });
mirror_enum!(UnitFirmwareUpdateStatus = "crate::domain::UnitFirmwareUpdateStatus" { RequestSent, Error, Success });
mirror_enum!(BackendTopicCommand = "crate::domain::BackendTopicCommand" { Update, EnvUpdate, SchemaUpdate, LogSync, Reset });
mirror_enum!(GitPlatform = "crate::domain::GitPlatform" { Gitlab, Github });
mirror_enum!(RepositoryRegistryStatus = "crate::domain::RepositoryRegistryStatus" { Updated, Processing, Error });
mirror_enum!(CredentialStatus = "crate::domain::CredentialStatus" { Valid, NotVerified, Error });
mirror_enum!(PermissionEntities = "crate::domain::PermissionEntities" { User, Unit, Repo, UnitNode });
mirror_enum!(LogLevel = "crate::domain::LogLevel" { Debug, Info, Warning, Error, Critical });

/// `asc` / `desc` of date orderings (upstream spells these two enums in lower case).
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(rename_items = "lowercase", remote = "crate::domain::Order")]
pub enum OrderByDate {
    Asc,
    Desc,
}

/// `asc` / `desc` of text orderings.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(rename_items = "lowercase", remote = "crate::domain::Order")]
pub enum OrderByText {
    Asc,
    Desc,
}

mirror_enum!(AggregationFunctions = "crate::domain::datapipe::AggregationFunction" { Avg, Min, Max, Sum });
mirror_enum!(ProcessingPolicyType = "crate::domain::datapipe::ProcessingPolicyType" { LastValue, NRecords, TimeWindow, Aggregation });
mirror_enum!(DataPipeStage = "crate::domain::datapipe::DataPipeStage" { ActivePeriod, Filters, Transformations, ProcessingPolicy });
mirror_enum!(TypeInputValue = "crate::domain::datapipe::TypeInputValue" { Text, Number });

// Grafana dashboards (issue 19).

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum DashboardStatus {
    Success,
    Processing,
    Error,
}

mirror_enum!(DashboardPanelTypeEnum = "crate::domain::dashboard::PanelType" {
    TimeSeries, BarChart, Stat, Gauge, BarGauge, Table, PieChart, StateTimeline, Heatmap,
    StatusHistory, Histogram, Text, AlertList, DashboardList, News, AnnotationList, Candlestick,
    Canvas, FlameGraph, Geomap, Logs, HourlyHeatmap, NodeGraph, Traces, Trend, XyChart,
});

/// What a mutation without a result answers.
#[derive(SimpleObject)]
pub struct NoneType {
    pub is_none: bool,
}

impl NoneType {
    pub fn done() -> Self {
        NoneType { is_none: true }
    }
}

/// GraphQL's `Int` is 32 bits; counts and sizes beyond it are clamped rather than failing.
fn int(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

#[derive(SimpleObject)]
pub struct UserType {
    pub uuid: Uuid,
    pub role: UserRole,
    pub status: UserStatus,
    pub login: String,
    pub grafana_org_name: Uuid,
    pub grafana_org_id: Option<String>,
    pub create_datetime: DateTime,
}

impl From<User> for UserType {
    fn from(u: User) -> Self {
        UserType {
            uuid: u.uuid,
            role: u.role.into(),
            status: u.status.into(),
            login: u.login,
            grafana_org_name: u.grafana_org_name,
            grafana_org_id: u.grafana_org_id,
            create_datetime: DateTime(u.create_datetime),
        }
    }
}

#[derive(SimpleObject)]
pub struct UsersResultType {
    pub count: i32,
    pub users: Vec<UserType>,
}

#[derive(SimpleObject)]
pub struct RepositoryRegistryType {
    pub uuid: Uuid,
    pub platform: GitPlatform,
    pub repository_url: String,
    pub is_public_repository: bool,
    pub releases_data: Option<String>,
    pub local_repository_size: i32,
    pub sync_status: Option<RepositoryRegistryStatus>,
    pub sync_error: Option<String>,
    pub sync_last_datetime: Option<DateTime>,
    pub create_datetime: DateTime,
    pub last_update_datetime: DateTime,
    pub creator_uuid: Option<Uuid>,
    pub branches: Vec<String>,
}

impl From<RepositoryRegistry> for RepositoryRegistryType {
    fn from(r: RepositoryRegistry) -> Self {
        RepositoryRegistryType {
            uuid: r.uuid,
            platform: r.platform.into(),
            repository_url: r.repository_url,
            is_public_repository: r.is_public_repository,
            releases_data: r.releases_data,
            local_repository_size: int(r.local_repository_size),
            sync_status: r.sync_status.map(Into::into),
            sync_error: r.sync_error,
            sync_last_datetime: r.sync_last_datetime.map(DateTime),
            create_datetime: DateTime(r.create_datetime),
            last_update_datetime: DateTime(r.last_update_datetime),
            creator_uuid: r.creator_uuid,
            branches: r.branches,
        }
    }
}

#[derive(SimpleObject)]
pub struct RepositoriesRegistryResultType {
    pub count: i32,
    pub repositories_registry: Vec<RepositoryRegistryType>,
}

#[derive(SimpleObject)]
pub struct CredentialsType {
    pub username: String,
    pub pat_token: String,
}

#[derive(SimpleObject)]
pub struct OneRepositoryRegistryCredentialsType {
    pub credentials: CredentialsType,
    pub status: CredentialStatus,
}

impl From<CredentialsRead> for OneRepositoryRegistryCredentialsType {
    fn from(c: CredentialsRead) -> Self {
        OneRepositoryRegistryCredentialsType {
            credentials: CredentialsType {
                username: c.credentials.username,
                pat_token: c.credentials.pat_token,
            },
            status: c.status.into(),
        }
    }
}

#[derive(SimpleObject)]
pub struct CommitType {
    pub commit: String,
    pub summary: String,
    pub tag: Option<String>,
}

#[derive(SimpleObject)]
pub struct PlatformType {
    pub name: String,
    pub link: String,
}

impl From<PlatformRead> for PlatformType {
    fn from(p: PlatformRead) -> Self {
        PlatformType {
            name: p.name,
            link: p.link,
        }
    }
}

#[derive(SimpleObject)]
pub struct RepoType {
    pub uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub create_datetime: DateTime,
    pub default_branch: Option<String>,
    pub is_auto_update_repo: bool,
    pub default_commit: Option<String>,
    pub is_only_tag_update: bool,
    pub is_compilable_repo: bool,
    pub last_update_datetime: DateTime,
    pub creator_uuid: Uuid,
    pub repository_registry_uuid: Uuid,
}

impl From<Repo> for RepoType {
    fn from(r: Repo) -> Self {
        RepoType {
            uuid: r.uuid,
            visibility_level: r.visibility_level.into(),
            name: r.name,
            create_datetime: DateTime(r.create_datetime),
            default_branch: r.default_branch,
            is_auto_update_repo: r.is_auto_update_repo,
            default_commit: r.default_commit,
            is_only_tag_update: r.is_only_tag_update,
            is_compilable_repo: r.is_compilable_repo,
            last_update_datetime: DateTime(r.last_update_datetime),
            creator_uuid: r.creator_uuid,
            repository_registry_uuid: r.repository_registry_uuid,
        }
    }
}

#[derive(SimpleObject)]
pub struct ReposResultType {
    pub count: i32,
    pub repos: Vec<RepoType>,
}

#[derive(SimpleObject)]
pub struct RepoVersionType {
    pub commit: String,
    pub unit_count: i32,
    pub tag: Option<String>,
}

#[derive(SimpleObject)]
pub struct RepoVersionsType {
    pub unit_count: i32,
    pub versions: Vec<RepoVersionType>,
}

impl From<RepoVersions> for RepoVersionsType {
    fn from(v: RepoVersions) -> Self {
        RepoVersionsType {
            unit_count: int(v.unit_count),
            versions: v
                .versions
                .into_iter()
                .map(|v| RepoVersionType {
                    // units that never reported a version are grouped under "" (the contract
                    // has no null here)
                    commit: v.commit.unwrap_or_default(),
                    unit_count: int(v.unit_count),
                    tag: v.tag,
                })
                .collect(),
        }
    }
}

#[derive(SimpleObject)]
pub struct TargetVersionType {
    pub commit: String,
    pub tag: Option<String>,
}

impl From<TargetVersion> for TargetVersionType {
    fn from(t: TargetVersion) -> Self {
        TargetVersionType {
            commit: t.commit,
            tag: t.tag,
        }
    }
}

#[derive(SimpleObject)]
pub struct UnitStateType {
    pub ifconfig: Vec<String>,
    pub millis: Option<f64>,
    pub mem_free: Option<f64>,
    pub mem_alloc: Option<f64>,
    pub freq: Option<f64>,
    pub statvfs: Vec<f64>,
    pub pu_commit_version: Option<String>,
}

impl From<UnitState> for UnitStateType {
    fn from(s: UnitState) -> Self {
        UnitStateType {
            // addresses as the device sent them; anything but text as its JSON
            ifconfig: s
                .ifconfig
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            millis: s.millis,
            mem_free: s.mem_free,
            mem_alloc: s.mem_alloc,
            freq: s.freq,
            statvfs: s.statvfs.iter().filter_map(|v| v.as_f64()).collect(),
            pu_commit_version: s.pu_commit_version,
        }
    }
}

/// A unit. `unitNodes` is filled only when selected: a list query loads the nodes of its whole
/// page in one query beforehand (`nodes` is then `Some`), a single unit loads its own.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct UnitType {
    pub uuid: Uuid,
    pub visibility_level: VisibilityLevel,
    pub name: String,
    pub create_datetime: DateTime,
    pub is_auto_update_from_repo_unit: bool,
    pub target_firmware_platform: Option<String>,
    pub repo_branch: Option<String>,
    pub repo_commit: Option<String>,
    pub unit_state: Option<UnitStateType>,
    pub current_commit_version: Option<String>,
    pub last_update_datetime: DateTime,
    pub creator_uuid: Uuid,
    pub repo_uuid: Uuid,
    pub firmware_update_status: Option<UnitFirmwareUpdateStatus>,
    pub firmware_update_error: Option<String>,
    pub last_firmware_update_datetime: Option<DateTime>,
    /// From which level the unit's log lines are alerts (ours, beyond the contract).
    pub alert_log_level: LogLevel,
    /// Alerts are held until then (ours, beyond the contract).
    pub alerts_muted_until: Option<DateTime>,
    #[graphql(skip)]
    pub nodes: Option<Vec<UnitNode>>,
}

impl UnitType {
    /// `with_nodes`: the row's `unit_nodes` were loaded (a list query that selected them).
    pub fn new(u: Unit, with_nodes: bool) -> Self {
        UnitType {
            uuid: u.uuid,
            visibility_level: u.visibility_level.into(),
            name: u.name,
            create_datetime: DateTime(u.create_datetime),
            is_auto_update_from_repo_unit: u.is_auto_update_from_repo_unit,
            target_firmware_platform: u.target_firmware_platform,
            repo_branch: u.repo_branch,
            repo_commit: u.repo_commit,
            unit_state: u.unit_state.map(Into::into),
            current_commit_version: u.current_commit_version,
            last_update_datetime: DateTime(u.last_update_datetime),
            creator_uuid: u.creator_uuid,
            repo_uuid: u.repo_uuid,
            firmware_update_status: u.firmware_update_status.map(Into::into),
            firmware_update_error: u.firmware_update_error,
            last_firmware_update_datetime: u.last_firmware_update_datetime.map(DateTime),
            alert_log_level: u.alert_log_level.into(),
            alerts_muted_until: u.alerts_muted_until.map(DateTime),
            nodes: with_nodes.then_some(u.unit_nodes),
        }
    }
}

#[ComplexObject]
impl UnitType {
    /// The unit's nodes visible to the caller.
    async fn unit_nodes(&self, ctx: &Context<'_>) -> Result<Vec<UnitNodeType>> {
        let nodes = match &self.nodes {
            Some(nodes) => nodes.clone(),
            None => {
                let filter = crate::service::unit_nodes::UnitNodeFilter {
                    unit_uuid: Some(self.uuid),
                    ..Default::default()
                };
                instance(ctx)
                    .list_unit_nodes(agent(ctx)?, filter, &[])
                    .await?
                    .1
            }
        };
        Ok(nodes.into_iter().map(Into::into).collect())
    }
}

#[derive(SimpleObject)]
pub struct UnitsResultType {
    pub count: i32,
    pub units: Vec<UnitType>,
}

#[derive(SimpleObject)]
pub struct UnitNodeType {
    pub uuid: Uuid,
    #[graphql(name = "type")]
    pub node_type: UnitNodeTypeEnum,
    pub visibility_level: VisibilityLevel,
    pub is_rewritable_input: bool,
    pub max_connections: i32,
    pub topic_name: String,
    pub last_update_datetime: DateTime,
    pub is_data_pipe_active: bool,
    pub data_pipe_yml: Option<String>,
    pub data_pipe_status: Option<String>,
    pub data_pipe_error: Option<String>,
    pub create_datetime: DateTime,
    pub state: Option<String>,
    pub unit_uuid: Uuid,
    pub creator_uuid: Uuid,
}

impl From<UnitNode> for UnitNodeType {
    fn from(n: UnitNode) -> Self {
        UnitNodeType {
            uuid: n.uuid,
            node_type: n.node_type.into(),
            visibility_level: n.visibility_level.into(),
            is_rewritable_input: n.is_rewritable_input,
            max_connections: int(n.max_connections),
            topic_name: n.topic_name,
            last_update_datetime: DateTime(n.last_update_datetime),
            is_data_pipe_active: n.is_data_pipe_active,
            data_pipe_yml: n.data_pipe_yml,
            data_pipe_status: n.data_pipe_status,
            data_pipe_error: n.data_pipe_error,
            create_datetime: DateTime(n.create_datetime),
            state: n.state,
            unit_uuid: n.unit_uuid,
            creator_uuid: n.creator_uuid,
        }
    }
}

#[derive(SimpleObject)]
pub struct UnitNodesResultType {
    pub count: i32,
    pub unit_nodes: Vec<UnitNodeType>,
}

#[derive(SimpleObject)]
pub struct UnitNodeEdgeType {
    pub uuid: Uuid,
    pub node_output_uuid: Uuid,
    pub node_input_uuid: Uuid,
}

impl From<UnitNodeEdge> for UnitNodeEdgeType {
    fn from(e: UnitNodeEdge) -> Self {
        UnitNodeEdgeType {
            uuid: e.uuid,
            node_output_uuid: e.node_output_uuid,
            node_input_uuid: e.node_input_uuid,
        }
    }
}

#[derive(SimpleObject, Clone)]
pub struct UnitLogType {
    pub uuid: Uuid,
    pub level: LogLevel,
    pub unit_uuid: Uuid,
    pub text: String,
    pub create_datetime: DateTime,
    pub expiration_datetime: DateTime,
}

impl From<UnitLog> for UnitLogType {
    fn from(l: UnitLog) -> Self {
        UnitLogType {
            uuid: l.uuid,
            level: l.level.into(),
            unit_uuid: l.unit_uuid,
            text: l.text,
            create_datetime: DateTime(l.create_datetime),
            expiration_datetime: DateTime(l.expiration_datetime),
        }
    }
}

#[derive(SimpleObject)]
pub struct UnitLogsResultType {
    pub count: i32,
    pub unit_logs: Vec<UnitLogType>,
}

#[derive(SimpleObject)]
pub struct PermissionType {
    pub uuid: Uuid,
    pub agent_uuid: Uuid,
    pub agent_type: PermissionEntities,
    pub resource_uuid: Uuid,
    pub resource_type: PermissionEntities,
}

impl From<Permission> for PermissionType {
    fn from(p: Permission) -> Self {
        PermissionType {
            uuid: p.uuid,
            agent_uuid: p.agent_uuid,
            agent_type: p.agent_type.into(),
            resource_uuid: p.resource_uuid,
            resource_type: p.resource_type.into(),
        }
    }
}

#[derive(SimpleObject)]
pub struct PermissionsType {
    pub count: i32,
    pub permissions: Vec<PermissionType>,
}

#[derive(SimpleObject)]
pub struct BaseMetricsType {
    pub user_count: i32,
    pub repository_registry_count: i32,
    pub repo_count: i32,
    pub unit_count: i32,
    pub unit_node_count: i32,
    pub unit_node_edge_count: i32,
}

impl From<crate::service::InstanceMetrics> for BaseMetricsType {
    fn from(m: crate::service::InstanceMetrics) -> Self {
        BaseMetricsType {
            user_count: int(m.user_count),
            repository_registry_count: int(m.repository_registry_count),
            repo_count: int(m.repo_count),
            unit_count: int(m.unit_count),
            unit_node_count: int(m.unit_node_count),
            unit_node_edge_count: int(m.unit_node_edge_count),
        }
    }
}

// Data pipes (SPEC §9, issue 17).

#[derive(SimpleObject)]
pub struct DataPipeValidationErrorType {
    pub stage: DataPipeStage,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct LastValueType {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub last_update_datetime: DateTime,
}

#[derive(SimpleObject)]
#[graphql(name = "NRecordsType")]
pub struct NRecordsType {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub state_type: TypeInputValue,
    pub create_datetime: DateTime,
    pub max_count: i32,
    pub size: i32,
}

#[derive(SimpleObject)]
pub struct TimeWindowType {
    pub unit_node_uuid: Uuid,
    pub state: String,
    pub state_type: TypeInputValue,
    pub create_datetime: DateTime,
    pub expiration_datetime: DateTime,
    pub size: i32,
}

#[derive(SimpleObject)]
pub struct AggregationType {
    pub unit_node_uuid: Uuid,
    pub state: f64,
    pub aggregation_type: AggregationFunctions,
    pub time_window_size: i32,
    pub create_datetime: DateTime,
    pub start_window_datetime: DateTime,
}

/// One row of pipeline data, by the node's policy (upstream's generated union name).
#[derive(Union)]
#[graphql(name = "NRecordsTypeTimeWindowTypeAggregationTypeLastValueType")]
pub enum PipeDataRow {
    NRecords(NRecordsType),
    TimeWindow(TimeWindowType),
    Aggregation(AggregationType),
    LastValue(LastValueType),
}

#[derive(SimpleObject)]
pub struct PipeDataResultType {
    pub count: i32,
    pub pipe_data: Vec<PipeDataRow>,
}

impl From<crate::domain::datapipe::PipeRow> for PipeDataRow {
    fn from(row: crate::domain::datapipe::PipeRow) -> Self {
        use crate::domain::datapipe::PipeRow;
        use crate::domain::format_time;
        let t = |t| DateTime(format_time(t));
        match row {
            PipeRow::NRecords(r) => PipeDataRow::NRecords(NRecordsType {
                unit_node_uuid: r.unit_node_uuid,
                state: r.state,
                state_type: r.state_type.into(),
                create_datetime: t(r.create_datetime),
                max_count: r.max_count as i32,
                size: r.size as i32,
            }),
            PipeRow::Window(r) => PipeDataRow::TimeWindow(TimeWindowType {
                unit_node_uuid: r.unit_node_uuid,
                state: r.state,
                state_type: r.state_type.into(),
                create_datetime: t(r.create_datetime),
                expiration_datetime: t(r.expiration_datetime),
                size: r.size as i32,
            }),
            PipeRow::Aggregation(r) => PipeDataRow::Aggregation(AggregationType {
                unit_node_uuid: r.unit_node_uuid,
                state: r.state,
                aggregation_type: r.aggregation_type.into(),
                time_window_size: r.time_window_size as i32,
                create_datetime: t(r.create_datetime),
                start_window_datetime: t(r.start_window_datetime),
            }),
        }
    }
}

// Grafana dashboards (SPEC §9, issue 19).

#[derive(SimpleObject)]
pub struct DashboardType {
    pub uuid: Uuid,
    pub grafana_uuid: Uuid,
    pub name: String,
    pub create_datetime: DateTime,
    pub dashboard_url: Option<String>,
    pub inc_last_version: Option<i32>,
    pub sync_status: Option<DashboardStatus>,
    pub sync_error: Option<String>,
    pub sync_last_datetime: Option<DateTime>,
    pub creator_uuid: Uuid,
}

impl From<crate::service::dashboards::Dashboard> for DashboardType {
    fn from(d: crate::service::dashboards::Dashboard) -> Self {
        DashboardType {
            uuid: d.uuid,
            grafana_uuid: d.grafana_uuid,
            name: d.name,
            create_datetime: DateTime(d.create_datetime),
            dashboard_url: d.dashboard_url,
            inc_last_version: d.inc_last_version.map(int),
            sync_status: d.sync_status.as_deref().and_then(|s| match s {
                "Success" => Some(DashboardStatus::Success),
                "Processing" => Some(DashboardStatus::Processing),
                "Error" => Some(DashboardStatus::Error),
                _ => None,
            }),
            sync_error: d.sync_error,
            sync_last_datetime: d.sync_last_datetime.map(DateTime),
            creator_uuid: d.creator_uuid,
        }
    }
}

#[derive(SimpleObject)]
pub struct DashboardsResultType {
    pub count: i32,
    pub dashboards: Vec<DashboardType>,
}

#[derive(SimpleObject)]
pub struct UnitNodeForPanelType {
    pub unit_node: UnitNodeType,
    pub is_last_data: bool,
    pub is_forced_to_json: bool,
    pub unit_with_unit_node_name: String,
}

#[derive(SimpleObject)]
pub struct DashboardPanelType {
    pub uuid: Uuid,
    #[graphql(name = "type")]
    pub panel_type: DashboardPanelTypeEnum,
    pub title: String,
    pub create_datetime: DateTime,
    pub creator_uuid: Uuid,
    pub dashboard_uuid: Uuid,
    pub unit_nodes_for_panel: Vec<UnitNodeForPanelType>,
}

impl From<crate::service::dashboards::UnitNodeForPanel> for UnitNodeForPanelType {
    fn from(l: crate::service::dashboards::UnitNodeForPanel) -> Self {
        UnitNodeForPanelType {
            unit_node: l.unit_node.into(),
            is_last_data: l.is_last_data,
            is_forced_to_json: l.is_forced_to_json,
            unit_with_unit_node_name: l.unit_with_unit_node_name,
        }
    }
}

impl From<crate::service::dashboards::DashboardPanel> for DashboardPanelType {
    fn from(p: crate::service::dashboards::DashboardPanel) -> Self {
        DashboardPanelType {
            uuid: p.uuid,
            panel_type: p.panel_type.into(),
            title: p.title,
            create_datetime: DateTime(p.create_datetime),
            creator_uuid: p.creator_uuid,
            dashboard_uuid: p.dashboard_uuid,
            unit_nodes_for_panel: p.unit_nodes_for_panel.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(SimpleObject)]
pub struct DashboardPanelsResultType {
    pub count: i32,
    pub panels: Vec<DashboardPanelType>,
}

/// Counts of list answers, clamped to GraphQL's `Int`.
pub fn count(v: i64) -> i32 {
    int(v)
}

/// The instance's grade (ours, beyond the contract; SPEC §7): REST's `GET /grade`.
#[derive(SimpleObject)]
pub struct GradeType {
    pub free_mps_per_user: f64,
    pub price_per_mps: f64,
    pub free_aggregated_topics: i32,
    pub price_per_aggregated_topic: f64,
    pub currency: String,
    /// Null while the defaults apply.
    pub update_datetime: Option<String>,
}

impl From<crate::service::grades::Grade> for GradeType {
    fn from(g: crate::service::grades::Grade) -> Self {
        GradeType {
            free_mps_per_user: g.free_mps_per_user,
            price_per_mps: g.price_per_mps,
            free_aggregated_topics: int(g.free_aggregated_topics),
            price_per_aggregated_topic: g.price_per_aggregated_topic,
            currency: g.currency,
            update_datetime: g.update_datetime,
        }
    }
}

/// Messages per second over the last minute and the last hour (ours, beyond the contract;
/// SPEC §7): REST's `/metrics/load/...`.
#[derive(SimpleObject)]
pub struct MpsType {
    pub minute: f64,
    pub hour: f64,
}

impl From<crate::domain::load::Mps> for MpsType {
    fn from(m: crate::domain::load::Mps) -> Self {
        MpsType {
            minute: m.minute,
            hour: m.hour,
        }
    }
}

#[derive(SimpleObject)]
pub struct TopicLoadType {
    pub topic: String,
    pub mps: MpsType,
    pub messages_last_minute: f64,
    pub messages_last_hour: f64,
    /// Messages the throttle dropped on this topic, in the same windows.
    pub throttled_last_minute: f64,
    pub throttled_last_hour: f64,
}

/// A Unit's load now: REST's `GET /metrics/load/units/{uuid}`.
#[derive(SimpleObject)]
pub struct UnitLoadType {
    pub unit_uuid: Uuid,
    pub unit_name: String,
    pub repo_uuid: Uuid,
    pub creator_uuid: Uuid,
    pub topic_count: i32,
    pub mps: MpsType,
    pub mps_per_topic: MpsType,
    pub messages_last_hour: f64,
    /// Messages the throttle dropped over its topics in the last hour.
    pub throttled_last_hour: f64,
    /// Idle, Light, Moderate, Heavy or Extreme.
    pub load_class: String,
    pub topics: Option<Vec<TopicLoadType>>,
}

impl From<crate::service::load::UnitLoad> for UnitLoadType {
    fn from(l: crate::service::load::UnitLoad) -> Self {
        UnitLoadType {
            unit_uuid: l.unit_uuid,
            unit_name: l.unit_name,
            repo_uuid: l.repo_uuid,
            creator_uuid: l.creator_uuid,
            topic_count: int(l.topic_count as i64),
            mps: l.mps.into(),
            mps_per_topic: l.mps_per_topic.into(),
            messages_last_hour: l.messages_last_hour as f64,
            throttled_last_hour: l.throttled_last_hour as f64,
            load_class: format!("{:?}", l.load_class),
            topics: l.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| TopicLoadType {
                        topic: t.topic,
                        mps: t.mps.into(),
                        messages_last_minute: t.messages_last_minute as f64,
                        messages_last_hour: t.messages_last_hour as f64,
                        throttled_last_minute: t.throttled_last_minute as f64,
                        throttled_last_hour: t.throttled_last_hour as f64,
                    })
                    .collect()
            }),
        }
    }
}

/// REST's `GET /metrics/load/units`.
#[derive(SimpleObject)]
pub struct LoadReportType {
    pub instance_mps: MpsType,
    pub active_units: i32,
    pub metered_topics: i32,
    pub units: Vec<UnitLoadType>,
}

impl From<crate::service::load::LoadReport> for LoadReportType {
    fn from(r: crate::service::load::LoadReport) -> Self {
        LoadReportType {
            instance_mps: r.instance_mps.into(),
            active_units: int(r.active_units as i64),
            metered_topics: int(r.metered_topics as i64),
            units: r.units.into_iter().map(Into::into).collect(),
        }
    }
}

/// A Repo's (average) or a user's (sum) load: REST's `/metrics/load/{repos,users}/{uuid}`.
#[derive(SimpleObject)]
pub struct GroupLoadType {
    pub uuid: Uuid,
    pub unit_count: i32,
    pub mps: MpsType,
    pub units: Vec<UnitLoadType>,
}

impl From<crate::service::load::GroupLoad> for GroupLoadType {
    fn from(g: crate::service::load::GroupLoad) -> Self {
        GroupLoadType {
            uuid: g.uuid,
            unit_count: int(g.unit_count as i64),
            mps: g.mps.into(),
            units: g.units.into_iter().map(Into::into).collect(),
        }
    }
}
