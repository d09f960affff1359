//! Who may read the node's state (SPEC §6): admins, and scrapers (a scraper token, or
//! `PU_METRICS_TOKEN`: [`super::scrapers`]).

use crate::error::AppResult;
use crate::observe::{prometheus, NodeReport};

use super::scrapers::Reader;
use super::Instance;

impl Instance {
    /// `GET /metrics/node` (admin only): errors most frequent first, or least with `ascending`.
    pub fn node_report(
        &self,
        reader: &Reader,
        ascending: bool,
        limit: usize,
    ) -> AppResult<NodeReport> {
        reader.require_admin_or_scraper()?;
        Ok(self.node.report(self.mqtt_report(), ascending, limit))
    }

    /// The Prometheus text, for admins and scrapers; anyone else gets 403.
    pub fn prometheus_text(&self, reader: &Reader) -> AppResult<String> {
        reader.require_admin_or_scraper()?;
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
