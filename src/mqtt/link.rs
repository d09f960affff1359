//! The backend's publishing connection: carries the [`Outbox`]'s publishes (commands to
//! devices) with rumqttc, as client `{PU_MQTT_CLIENT_ID}-out`. It subscribes to nothing: the
//! core's messages come in on the ingest connection ([`super::subscriber`]). Reconnects with
//! backoff; rumqttc sends again what was not acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use crate::config::Config;
use crate::observe::mqtt::MqttStats;
use crate::service::ports::{Outbox, Publisher};

pub struct Link {
    pub config: Arc<Config>,
    pub username: String,
    pub outbox: Outbox,
    pub stats: Arc<MqttStats>,
    /// Where a lost connection is reported (a crash alert for the admins).
    pub node: crate::observe::Node,
}

/// The publishing connection's client id.
pub fn client_id(config: &Config) -> String {
    format!("{}-out", config.mqtt_client_id)
}

impl Link {
    fn options(&self) -> MqttOptions {
        let c = &self.config;
        let mut o = MqttOptions::new(client_id(c), &c.mqtt_backend_host, c.mqtt_backend_port);
        o.set_credentials(&self.username, &c.mqtt_password);
        o.set_keep_alive(Duration::from_secs(c.mqtt_keepalive.clamp(5, 600) as u64));
        // nothing to keep on the broker: no subscriptions; rumqttc itself sends again what
        // was in flight when a connection ended
        o.set_clean_session(true);
        let max = c.mqtt_max_payload_size + 64 * 1024;
        o.set_max_packet_size(max, max);
        o.set_inflight(1000);
        o.set_request_channel_capacity(10_000);
        o
    }

    /// Runs until `stop` changes; then disconnects cleanly.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let (client, mut eventloop) = AsyncClient::new(self.options(), 10_000);
        self.outbox.install(Some(Arc::new(client.clone())));
        let mut backoff = Duration::from_millis(250);
        let mut last_error: Option<String> = None;
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = stop.changed() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(250);
                    last_error = None;
                    self.outbox.set_connected(true);
                    self.stats.backend_connected.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    self.outbox.set_connected(false);
                    self.stats.backend_connected.store(false, Ordering::Relaxed);
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, retry_in = ?backoff, "MQTT publishing connection lost");
                        // once per new error, not per retry: the alert counts incidents
                        self.node.crash("mqtt connection lost", &text);
                        last_error = Some(text);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.outbox.set_connected(false);
        self.outbox.install(None);
        self.stats.backend_connected.store(false, Ordering::Relaxed);
        // best effort: publishes queued so far, then DISCONNECT
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        })
        .await;
    }
}

/// The service layer publishes through the backend's client.
impl Publisher for AsyncClient {
    fn try_publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        AsyncClient::try_publish(self, topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())
    }
}
