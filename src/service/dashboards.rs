//! Grafana dashboards (issue 19, SPEC §9): a user's dashboards, their panels and the nodes
//! linked to panels, at upstream's REST paths (`/grafana/...`) and GraphQL fields, and the sync
//! that provisions the user's Grafana organisation (user, membership, the Infinity datasource)
//! and pushes the dashboard through Grafana's HTTP API ([`crate::grafana`]). Grafana then reads
//! each linked node's data from `grafana/datasource/` with the link's token. Behind
//! `PU_FF_GRAFANA_INTEGRATION_ENABLE`: off, every operation answers FeatureDisabled, as before the
//! feature existed. docs/research/GRAFANA-UPSTREAM.md has upstream's contract.
//!
//! Only a dashboard's creator sees or changes it and its panels, as upstream; only a node's
//! creator links it. Where we differ from upstream on purpose: a node is linked to a panel at
//! most once (the database holds it, so two racing requests cannot both pass); the per-panel
//! limit is checked in the same statement that inserts; a link's token stops working as soon
//! as the link is deleted or the node changes hands (upstream's never stop); a sync always
//! re-checks the user, membership and datasource in Grafana (each call is idempotent), so a
//! user removed in Grafana comes back at the next sync.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::data_pipes::{PipeData, PipeDataRequest};
use super::unit_nodes::UnitNode;
use super::users::User;
use super::{Agent, Instance};
pub use crate::domain::dashboard::is_valid_title;
use crate::domain::dashboard::{self as dash, PanelSpec, PanelType, Sample, TargetSpec};
use crate::domain::datapipe::{PipeRow, ProcessingPolicyType, TypeInputValue};
use crate::domain::{self, AgentType, Order};
use crate::error::{AppError, AppResult};
use crate::grafana::GrafanaApi;
use crate::store::dashboards::{DashboardRow, PanelNodeRow, PanelRow};
use crate::store::{self, StoreError};

/// Most panels one dashboard holds (ours; upstream has no bound).
pub const MAX_PANELS_PER_DASHBOARD: usize = 100;
/// The role a user gets in their own Grafana organisation (upstream's).
const GRAFANA_ROLE: &str = "Editor";

/// A dashboard, as upstream's `DashboardRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub uuid: Uuid,
    /// The Grafana dashboard uid it gets at sync.
    pub grafana_uuid: Uuid,
    pub name: String,
    pub create_datetime: String,
    pub dashboard_url: Option<String>,
    pub inc_last_version: Option<i64>,
    /// `Success`, `Processing` or `Error`; null before the first sync.
    pub sync_status: Option<String>,
    pub sync_error: Option<String>,
    pub sync_last_datetime: Option<String>,
    pub creator_uuid: Uuid,
}

impl From<DashboardRow> for Dashboard {
    fn from(r: DashboardRow) -> Self {
        Dashboard {
            uuid: r.uuid,
            grafana_uuid: r.grafana_uuid,
            name: r.name,
            create_datetime: r.create_datetime,
            dashboard_url: r.dashboard_url,
            inc_last_version: r.inc_last_version,
            sync_status: r.sync_status,
            sync_error: r.sync_error,
            sync_last_datetime: r.sync_last_datetime,
            creator_uuid: r.creator_uuid,
        }
    }
}

/// `POST /grafana/create_dashboard`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct DashboardCreate {
    pub name: String,
}

/// A dashboard list's filter (the caller's own only).
#[derive(Clone, Debug, Default)]
pub struct DashboardFilter {
    pub search_string: Option<String>,
    pub order_by_create_date: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

/// A panel, as upstream's `DashboardPanelRead`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DashboardPanel {
    pub uuid: Uuid,
    #[serde(rename = "type")]
    pub panel_type: PanelType,
    pub title: String,
    pub create_datetime: String,
    pub creator_uuid: Uuid,
    pub dashboard_uuid: Uuid,
    pub unit_nodes_for_panel: Vec<UnitNodeForPanel>,
}

/// A node linked to a panel (upstream's `UnitNodeForPanel`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UnitNodeForPanel {
    pub unit_node: UnitNode,
    /// Stored and answered; upstream's generator ignores it too.
    pub is_last_data: bool,
    /// The node's values are JSON objects: Grafana gets one column per member.
    pub is_forced_to_json: bool,
    /// `unit name@topic name`.
    pub unit_with_unit_node_name: String,
}

/// `POST /grafana/create_dashboard_panel`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct DashboardPanelCreate {
    pub dashboard_uuid: Uuid,
    pub title: String,
    #[serde(rename = "type")]
    pub panel_type: PanelType,
}

/// `POST /grafana/link_unit_node_to_panel`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct LinkUnitNodeToPanel {
    pub unit_node_uuid: Uuid,
    pub dashboard_panels_uuid: Uuid,
    #[serde(default)]
    pub is_last_data: bool,
    #[serde(default)]
    pub is_forced_to_json: bool,
}

/// What Grafana's Infinity datasource asks for (upstream's `DatasourceFilter`); Aggregation
/// rows are filtered by their window's end, the others by creation.
#[derive(Clone, Debug, Default)]
pub struct DatasourceRequest {
    pub start_agg_datetime: Option<chrono::NaiveDateTime>,
    pub end_agg_datetime: Option<chrono::NaiveDateTime>,
    pub start_create_datetime: Option<chrono::NaiveDateTime>,
    pub end_create_datetime: Option<chrono::NaiveDateTime>,
    pub relative_time: Option<chrono::Duration>,
    pub order_by_create_date: Option<Order>,
    pub offset: i64,
    pub limit: i64,
}

/// One point of a node's data for Grafana: milliseconds since the epoch, and the value (a
/// number, a text, or an object for links with `is_forced_to_json`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DatasourcePoint {
    pub time: i64,
    #[schema(value_type = Object)]
    pub value: Value,
}

/// A linked node with what a sync and the datasource need.
struct LinkedNode {
    link: PanelNodeRow,
    node: UnitNode,
    unit_name: String,
}

impl LinkedNode {
    fn name(&self) -> String {
        format!("{}@{}", self.unit_name, self.node.topic_name)
    }

    fn read(self) -> UnitNodeForPanel {
        UnitNodeForPanel {
            unit_with_unit_node_name: self.name(),
            is_last_data: self.link.is_last_data,
            is_forced_to_json: self.link.is_forced_to_json,
            unit_node: self.node,
        }
    }
}

fn panel_type(row: &PanelRow) -> AppResult<PanelType> {
    PanelType::parse(&row.panel_type).ok_or_else(|| {
        AppError::grafana(format!("Stored panel type {:?} is unknown", row.panel_type))
    })
}

/// A stored value as Grafana gets it: by the link's JSON flag, else by the pipeline's input type.
fn point_value(state: &str, forced_to_json: bool, input: TypeInputValue) -> Value {
    if forced_to_json {
        // a value that is not JSON is given as its text, so one bad row does not fail a panel
        return serde_json::from_str(state).unwrap_or_else(|_| Value::String(state.into()));
    }
    match input {
        TypeInputValue::Number => state
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(state.into())),
        TypeInputValue::Text => Value::String(state.into()),
    }
}

fn millis(t: &str) -> i64 {
    domain::parse_time(t)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

impl Instance {
    fn dashboards_enabled(&self, agent: &Agent) -> AppResult<Uuid> {
        if !self.config.ff_grafana {
            return Err(AppError::feature_disabled());
        }
        agent.require(&[AgentType::User])?;
        Ok(agent.user()?.uuid)
    }

    /// A dashboard its creator asks for (404 when missing, 403 for anyone else).
    async fn own_dashboard(&self, agent: &Agent, uuid: Uuid) -> AppResult<DashboardRow> {
        let user = self.dashboards_enabled(agent)?;
        let row = store::dashboards::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if row.creator_uuid != user {
            return Err(AppError::no_access("Only its creator has access"));
        }
        Ok(row)
    }

    pub async fn create_dashboard(
        &self,
        agent: &Agent,
        input: &DashboardCreate,
    ) -> AppResult<Dashboard> {
        let user = self.dashboards_enabled(agent)?;
        if !is_valid_title(&input.name) {
            // upstream: GrafanaError("Name is not correct"), as for a panel's title
            return Err(AppError::grafana(
                "Name is not correct: 4 to 100 characters, no control characters",
            ));
        }
        let row = DashboardRow {
            uuid: Uuid::new_v4(),
            grafana_uuid: Uuid::new_v4(),
            name: input.name.trim().to_string(),
            dashboard_url: None,
            inc_last_version: None,
            sync_status: None,
            sync_error: None,
            sync_last_datetime: None,
            create_datetime: domain::now(),
            creator_uuid: user,
        };
        store::dashboards::insert(self.pool(), &row).await?;
        Ok(row.into())
    }

    pub async fn get_dashboard(&self, agent: &Agent, uuid: Uuid) -> AppResult<Dashboard> {
        Ok(self.own_dashboard(agent, uuid).await?.into())
    }

    /// The caller's dashboards: (how many match, the page).
    pub async fn list_dashboards(
        &self,
        agent: &Agent,
        f: &DashboardFilter,
    ) -> AppResult<(i64, Vec<Dashboard>)> {
        let user = self.dashboards_enabled(agent)?;
        let (count, rows) = store::dashboards::list(
            self.pool(),
            user,
            f.search_string.as_deref(),
            f.order_by_create_date.unwrap_or(Order::Desc),
            f.offset,
            f.limit,
        )
        .await?;
        Ok((count, rows.into_iter().map(Into::into).collect()))
    }

    pub async fn delete_dashboard(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        self.own_dashboard(agent, uuid).await?;
        store::dashboards::delete(self.pool(), uuid).await?;
        Ok(())
    }
}

impl Instance {
    /// A panel its creator asks for (404 when missing, 403 for anyone else).
    async fn own_panel(&self, agent: &Agent, uuid: Uuid) -> AppResult<PanelRow> {
        let user = self.dashboards_enabled(agent)?;
        let row = store::dashboards::get_panel(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if row.creator_uuid != user {
            return Err(AppError::no_access("Only its creator has access"));
        }
        Ok(row)
    }

    pub async fn create_dashboard_panel(
        &self,
        agent: &Agent,
        input: &DashboardPanelCreate,
    ) -> AppResult<DashboardPanel> {
        let dashboard = self.own_dashboard(agent, input.dashboard_uuid).await?;
        if !is_valid_title(&input.title) {
            return Err(AppError::grafana(
                "Title is not correct: 4 to 100 characters, no control characters",
            ));
        }
        let row = PanelRow {
            uuid: Uuid::new_v4(),
            panel_type: input.panel_type.as_str().to_string(),
            title: input.title.trim().to_string(),
            create_datetime: domain::now(),
            creator_uuid: dashboard.creator_uuid,
            dashboard_uuid: dashboard.uuid,
        };
        if !store::dashboards::insert_panel(&self.db, &row, MAX_PANELS_PER_DASHBOARD as i64).await?
        {
            return Err(AppError::grafana(format!(
                "A dashboard holds at most {MAX_PANELS_PER_DASHBOARD} panels"
            )));
        }
        Ok(DashboardPanel {
            uuid: row.uuid,
            panel_type: input.panel_type,
            title: row.title,
            create_datetime: row.create_datetime,
            creator_uuid: row.creator_uuid,
            dashboard_uuid: row.dashboard_uuid,
            unit_nodes_for_panel: Vec::new(),
        })
    }

    /// A node's unit's name, each unit read once.
    async fn unit_name(&self, unit: Uuid, names: &mut HashMap<Uuid, String>) -> AppResult<String> {
        if let Some(n) = names.get(&unit) {
            return Ok(n.clone());
        }
        let name = self.unit(unit).await?.name;
        names.insert(unit, name.clone());
        Ok(name)
    }

    /// A dashboard's panels with their linked nodes, oldest first: three queries for the
    /// panels, links and nodes, and one per unit for its name.
    async fn panels_with_nodes(
        &self,
        dashboard: Uuid,
    ) -> AppResult<Vec<(PanelRow, Vec<LinkedNode>)>> {
        let panels = store::dashboards::panels(self.pool(), dashboard).await?;
        let link_rows = store::dashboards::links_of_dashboard(self.pool(), dashboard).await?;
        let nodes: HashMap<Uuid, UnitNode> =
            store::dashboards::linked_nodes(self.pool(), dashboard)
                .await?
                .into_iter()
                .map(|n| (n.uuid, n))
                .collect();
        let mut links: HashMap<Uuid, Vec<LinkedNode>> = HashMap::new();
        let mut names = HashMap::new();
        for link in link_rows {
            // a node deleted between the two reads has lost its link too
            let Some(node) = nodes.get(&link.unit_node_uuid).cloned() else {
                continue;
            };
            let unit_name = match self.unit_name(node.unit_uuid, &mut names).await {
                Ok(n) => n,
                Err(AppError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            links
                .entry(link.dashboard_panel_uuid)
                .or_default()
                .push(LinkedNode {
                    link,
                    node,
                    unit_name,
                });
        }
        Ok(panels
            .into_iter()
            .map(|p| {
                let nodes = links.remove(&p.uuid).unwrap_or_default();
                (p, nodes)
            })
            .collect())
    }

    /// `(count, panels)` of one of the caller's dashboards.
    pub async fn get_dashboard_panels(
        &self,
        agent: &Agent,
        dashboard: Uuid,
    ) -> AppResult<(i64, Vec<DashboardPanel>)> {
        let dashboard = self.own_dashboard(agent, dashboard).await?;
        let mut out = Vec::new();
        for (p, nodes) in self.panels_with_nodes(dashboard.uuid).await? {
            out.push(DashboardPanel {
                panel_type: panel_type(&p)?,
                uuid: p.uuid,
                title: p.title,
                create_datetime: p.create_datetime,
                creator_uuid: p.creator_uuid,
                dashboard_uuid: p.dashboard_uuid,
                unit_nodes_for_panel: nodes.into_iter().map(LinkedNode::read).collect(),
            });
        }
        Ok((out.len() as i64, out))
    }

    pub async fn delete_panel(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        self.own_panel(agent, uuid).await?;
        store::dashboards::delete_panel(self.pool(), uuid).await?;
        Ok(())
    }

    /// Links one of the caller's nodes to one of the caller's panels, at most
    /// `PU_GRAFANA_LIMIT_UNIT_NODE_PER_ONE_PANEL` per panel, each node once.
    pub async fn link_unit_node_to_panel(
        &self,
        agent: &Agent,
        input: &LinkUnitNodeToPanel,
    ) -> AppResult<UnitNodeForPanel> {
        self.dashboards_enabled(agent)?;
        let node = self.unit_node(input.unit_node_uuid).await?;
        agent.require_creator(Some(node.creator_uuid))?;
        let panel = self.own_panel(agent, input.dashboard_panels_uuid).await?;
        let limit = self.config.grafana_limit_unit_node_per_one_panel;
        let link = PanelNodeRow {
            uuid: Uuid::new_v4(),
            is_last_data: input.is_last_data,
            is_forced_to_json: input.is_forced_to_json,
            create_datetime: domain::now(),
            creator_uuid: panel.creator_uuid,
            unit_node_uuid: node.uuid,
            dashboard_panel_uuid: panel.uuid,
        };
        match store::dashboards::insert_link(&self.db, &link, limit).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(AppError::grafana(format!(
                    "Limit UnitNode for one panel is {limit}"
                )))
            }
            Err(StoreError::AlreadyExists) => {
                return Err(AppError::grafana(
                    "This UnitNode is already linked to this panel",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let unit_name = self.unit_name(node.unit_uuid, &mut HashMap::new()).await?;
        Ok(LinkedNode {
            link,
            node,
            unit_name,
        }
        .read())
    }

    pub async fn delete_link(&self, agent: &Agent, node: Uuid, panel: Uuid) -> AppResult<()> {
        self.own_panel(agent, panel).await?;
        if store::dashboards::delete_link(self.pool(), panel, node).await? == 0 {
            return Err(AppError::not_found());
        }
        Ok(())
    }

    /// Pushes one of the caller's dashboards to Grafana, after making sure the caller's
    /// organisation, user, membership and datasource exist there. A dashboard that cannot be
    /// built (no panels, a node without a valid active pipeline) is refused before anything is
    /// sent; a Grafana failure is recorded on the dashboard (`sync_status` Error with the
    /// reason) and answered as the dashboard, as upstream.
    pub async fn sync_dashboard(&self, agent: &Agent, uuid: Uuid) -> AppResult<Dashboard> {
        let mut row = self.own_dashboard(agent, uuid).await?;
        let user = agent.user()?.clone();
        let panels = self.panels_with_nodes(row.uuid).await?;
        if panels.is_empty() {
            return Err(AppError::grafana("Dashboard does not have Panels"));
        }
        let mut specs = Vec::with_capacity(panels.len());
        for (panel, nodes) in &panels {
            let mut targets = Vec::with_capacity(nodes.len());
            for n in nodes {
                if !n.node.is_data_pipe_active {
                    return Err(AppError::grafana(format!(
                        "{} has no active DataPipe",
                        n.name()
                    )));
                }
                let config = Self::node_pipe_config(&n.node).map_err(|_| {
                    AppError::grafana(format!("{} has no valid yml DataPipe", n.name()))
                })?;
                let newest = DatasourceRequest {
                    order_by_create_date: Some(Order::Desc),
                    limit: 1,
                    ..Default::default()
                };
                let sample = self
                    .points_of(&n.node, &n.link, newest)
                    .await?
                    .first()
                    .map(|p| Sample::of(&p.value))
                    .unwrap_or(Sample::Empty);
                targets.push(TargetSpec {
                    token: self.tokens.grafana_unit_node_token(n.node.uuid, panel.uuid),
                    policy: config.processing_policy.policy_type,
                    time_window_size: config.processing_policy.time_window_size.map(u64::from),
                    sample,
                });
            }
            specs.push(PanelSpec {
                panel_type: panel_type(panel)?,
                title: panel.title.clone(),
                targets,
            });
        }
        let body = dash::dashboard_json(row.grafana_uuid, &row.name, &specs);
        let outcome = async {
            let api = self.grafana_api();
            let org = self.provision_grafana(&api, &user).await?;
            api.save_dashboard(org, &body).await
        }
        .await;
        match outcome {
            Ok(saved) => {
                row.dashboard_url = Some(saved.url);
                row.inc_last_version = Some(saved.version);
                row.sync_status = Some("Success".into());
                row.sync_error = None;
            }
            Err(e) => {
                tracing::warn!(dashboard = %row.uuid, error = %e, "dashboard sync failed");
                row.sync_status = Some("Error".into());
                row.sync_error = Some(e.to_string());
            }
        }
        row.sync_last_datetime = Some(domain::now());
        store::dashboards::set_sync(self.pool(), &row).await?;
        Ok(row.into())
    }

    fn grafana_api(&self) -> GrafanaApi {
        let c = &self.config;
        GrafanaApi::new(
            &c.grafana_base(),
            &c.grafana_admin_user,
            &c.grafana_admin_password,
        )
    }

    /// The user's Grafana organisation (named by `grafana_org_name`), with the user in it as
    /// an Editor and the Infinity datasource reading our `grafana/datasource/`; every step
    /// keeps what exists. Records the organisation's id on the user. Returns the id.
    async fn provision_grafana(
        &self,
        api: &GrafanaApi,
        user: &User,
    ) -> Result<i64, crate::grafana::GrafanaError> {
        let org = api.ensure_org(&user.grafana_org_name.to_string()).await?;
        let password = crate::crypto::random_b64(18);
        let login = dash::grafana_login(user.uuid);
        api.ensure_user(&login, &user.login, &password).await?;
        api.ensure_member(org, &login, GRAFANA_ROLE).await?;
        let c = &self.config;
        let api_base = c.grafana_backend_base();
        // Infinity's health check reads the app root (`GET /pepeunit`)
        let root = api_base.strip_suffix(&c.api_prefix).unwrap_or(&api_base);
        api.ensure_datasource(
            org,
            dash::DATASOURCE_NAME,
            dash::INFINITY_PLUGIN,
            &format!("{api_base}/grafana/datasource/"),
            root,
        )
        .await?;
        if user.grafana_org_id.as_deref() != Some(org.to_string().as_str()) {
            if let Err(e) =
                store::users::set_grafana_org_id(self.pool(), user.uuid, &org.to_string()).await
            {
                tracing::warn!(user = %user.uuid, error = %e, "could not record the Grafana org id");
            }
        }
        Ok(org)
    }

    /// Makes sure the user's Grafana organisation, user, membership and datasource exist
    /// (upstream does it at sign-in to Grafana too). Returns the organisation's id.
    pub async fn provision_grafana_user(&self, user: &User) -> AppResult<i64> {
        if !self.config.ff_grafana {
            return Err(AppError::feature_disabled());
        }
        self.provision_grafana(&self.grafana_api(), user)
            .await
            .map_err(|e| AppError::grafana(e.to_string()))
    }

    /// Grafana's Infinity datasource reading one node of one panel: `token` must be that
    /// link's GrafanaUnitNode token (any other token is refused), and the link must still
    /// exist with the node still its creator's.
    pub async fn grafana_datasource(
        &self,
        token: Option<&str>,
        r: DatasourceRequest,
    ) -> AppResult<Vec<DatasourcePoint>> {
        if !self.config.ff_grafana {
            return Err(AppError::feature_disabled());
        }
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::no_access("Only a GrafanaUnitNode token reads the datasource")
            })?;
        let claims = self
            .tokens
            .decode(token, chrono::Utc::now().timestamp())
            .map_err(|_| AppError::no_access("Token is invalid"))?;
        if claims.agent_type != AgentType::GrafanaUnitNode.as_str() {
            return Err(AppError::no_access(
                "Only a GrafanaUnitNode token reads the datasource",
            ));
        }
        let parse = |v: Option<&str>| {
            v.and_then(|u| Uuid::parse_str(u).ok())
                .ok_or_else(|| AppError::no_access("Token is invalid"))
        };
        let (node, panel) = (
            parse(claims.uuid.as_deref())?,
            parse(claims.panel_uuid.as_deref())?,
        );
        let link = store::dashboards::get_link(self.pool(), panel, node)
            .await?
            .ok_or_else(|| AppError::no_access("The node is not linked to this panel"))?;
        let node = self.unit_node(node).await?;
        if node.creator_uuid != link.creator_uuid {
            return Err(AppError::no_access(
                "The node no longer belongs to the panel's creator",
            ));
        }
        self.points_of(&node, &link, r).await
    }

    /// A linked node's data as Grafana points.
    async fn points_of(
        &self,
        node: &UnitNode,
        link: &PanelNodeRow,
        r: DatasourceRequest,
    ) -> AppResult<Vec<DatasourcePoint>> {
        self.require_data_pipes()?;
        if !node.is_data_pipe_active {
            return Err(AppError::grafana("The node has no active DataPipe"));
        }
        let config = Self::node_pipe_config(node)?;
        let policy = config.processing_policy.policy_type;
        let input = config.filters.type_input_value;
        let aggregation = policy == ProcessingPolicyType::Aggregation;
        let request = PipeDataRequest {
            end_window_from: r.start_agg_datetime.filter(|_| aggregation),
            end_window_to: r.end_agg_datetime.filter(|_| aggregation),
            created_from: r.start_create_datetime,
            created_to: r.end_create_datetime,
            relative: r.relative_time,
            order: r.order_by_create_date,
            offset: r.offset,
            limit: r.limit,
            ..PipeDataRequest::all(node.uuid, policy)
        };
        let forced = link.is_forced_to_json;
        Ok(match self.pipe_data_of(node.clone(), request).await?.1 {
            PipeData::LastValue {
                state,
                last_update_datetime,
                ..
            } => state
                .map(|s| DatasourcePoint {
                    time: millis(&last_update_datetime),
                    value: point_value(&s, forced, input),
                })
                .into_iter()
                .collect(),
            PipeData::Rows(rows) => rows
                .into_iter()
                .map(|row| match row {
                    PipeRow::NRecords(e) => DatasourcePoint {
                        time: e.create_datetime.and_utc().timestamp_millis(),
                        value: point_value(&e.state, forced, input),
                    },
                    PipeRow::Window(e) => DatasourcePoint {
                        time: e.create_datetime.and_utc().timestamp_millis(),
                        value: point_value(&e.state, forced, input),
                    },
                    PipeRow::Aggregation(e) => DatasourcePoint {
                        time: e.end_window_datetime.and_utc().timestamp_millis(),
                        value: serde_json::Number::from_f64(e.state)
                            .map(Value::Number)
                            .unwrap_or(Value::Null),
                    },
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_reach_grafana_typed() {
        use super::point_value;
        use crate::domain::datapipe::TypeInputValue::{Number, Text};
        use serde_json::json;
        assert_eq!(point_value(" 21.5", false, Number), json!(21.5));
        assert_eq!(point_value("warm", false, Number), json!("warm"));
        assert_eq!(point_value("21.5", false, Text), json!("21.5"));
        assert_eq!(
            point_value(r#"{"t": 20, "room": "hall"}"#, true, Text),
            json!({"t": 20, "room": "hall"})
        );
        assert_eq!(point_value("not json", true, Number), json!("not json"));
    }

    #[test]
    fn titles() {
        use super::is_valid_title;
        assert!(is_valid_title("Home"));
        assert!(is_valid_title("  Greenhouse 2  "));
        assert!(is_valid_title("Теплица"));
        assert!(!is_valid_title("x"));
        assert!(!is_valid_title("   abc  "));
        assert!(!is_valid_title(&"a".repeat(101)));
        assert!(!is_valid_title("tab\there"));
    }
}
