//! Who may read the node's state (SPEC §6): admins, and a scraper holding `PU_METRICS_TOKEN`.

use crate::error::AppResult;
use crate::observe::{prometheus, NodeReport};

use super::{Agent, Instance};

impl Instance {
    /// `GET /metrics/node` (admin only): errors most frequent first, or least with `ascending`.
    pub fn node_report(
        &self,
        agent: &Agent,
        ascending: bool,
        limit: usize,
    ) -> AppResult<NodeReport> {
        agent.require_admin()?;
        Ok(self.node.report(self.mqtt_report(), ascending, limit))
    }

    /// The Prometheus text, for the bearer of `PU_METRICS_TOKEN` or an admin's `x-auth-token`;
    /// anyone else gets 403.
    pub async fn prometheus_text(
        &self,
        bearer: Option<&str>,
        auth_token: Option<&str>,
    ) -> AppResult<String> {
        let by_bearer = match (bearer, &self.config.metrics_token) {
            (Some(given), Some(token)) => same_secret(given.as_bytes(), token.as_bytes()),
            _ => false,
        };
        if !by_bearer {
            self.agent_from_token(auth_token).await?.require_admin()?;
        }
        Ok(prometheus::render(&self.node.report(
            self.mqtt_report(),
            false,
            0,
        )))
    }
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
