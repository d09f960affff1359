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
            (Some(given), Some(token)) => {
                crate::crypto::constant_time_eq(given.as_bytes(), token.as_bytes())
            }
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

impl Instance {
    pub fn mqtt_report(&self) -> crate::observe::mqtt::MqttReport {
        crate::observe::mqtt::MqttReport {
            mode: match self.config.mqtt_mode {
                crate::config::MqttMode::Embedded => "embedded".into(),
                crate::config::MqttMode::External => "external".into(),
            },
            backend_connected: self.outbox.is_connected(),
            shards: self.config.mqtt_shards,
            shard_queue_capacity: self.config.mqtt_shard_queue,
            queue_depths: self.mqtt_stats.queue_depths(),
            counters: self.mqtt_stats.counters.snapshot(),
            pipes: self.mqtt_stats.pipes.snapshot(),
        }
    }
}
