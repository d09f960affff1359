//! Grafana dashboards (issue 19, SPEC §9): a user's dashboards, at upstream's REST paths
//! (`/grafana/...`) and GraphQL fields. Behind `PU_FF_GRAFANA_INTEGRATION_ENABLE`: off, every
//! operation answers FeatureDisabled, as before the feature existed.
//!
//! This is the first slice: dashboards are created, read, listed (the caller's own, searched by
//! name, ordered by creation) and deleted. Panels, node links, the sync to Grafana and its
//! datasource come next (docs/research/GRAFANA-UPSTREAM.md has upstream's contract). Only a
//! dashboard's creator sees or changes it, as upstream.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::{self, AgentType, Order};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::dashboards::DashboardRow;

/// Dashboard names and panel titles: 4 to 100 characters after trimming, no control
/// characters (upstream refuses one-letter names; its exact rule is not public).
pub fn is_valid_title(s: &str) -> bool {
    let t = s.trim();
    (4..=100).contains(&t.chars().count()) && !t.chars().any(char::is_control)
}

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
            return Err(AppError::validation(
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

#[cfg(test)]
mod tests {
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
