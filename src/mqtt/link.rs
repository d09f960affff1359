//! The backend's own MQTT connection: holds the core's only two subscriptions
//! (`{domain}/+/+/+/pepeunit` and `{domain}/+/pepeunit`), feeds the dispatcher, and carries the
//! [`Outbox`]'s publishes. Reconnects with backoff and subscribes again after every CONNACK,
//! so a broker restart or a lost session never leaves the core deaf.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use super::core::{Dispatcher, Message};
use crate::config::Config;
use crate::observe::mqtt::MqttStats;
use crate::service::ports::{Outbox, Publisher};

pub struct Link {
    pub config: Arc<Config>,
    pub username: String,
    pub outbox: Outbox,
    pub dispatcher: Dispatcher,
    pub stats: Arc<MqttStats>,
    /// Where a lost connection is reported (a crash alert for the admins).
    pub node: crate::observe::Node,
    /// Milliseconds since `started` of the last message received (for a quiet shutdown).
    pub last_message_ms: Arc<AtomicU64>,
    pub started: Instant,
}

impl Link {
    fn options(&self) -> MqttOptions {
        let c = &self.config;
        let mut o = MqttOptions::new(&c.mqtt_client_id, &c.mqtt_backend_host, c.mqtt_backend_port);
        o.set_credentials(&self.username, &c.mqtt_password);
        o.set_keep_alive(Duration::from_secs(c.mqtt_keepalive.clamp(5, 600) as u64));
        // a persistent session: an external broker keeps our subscriptions and queues QoS 1
        // messages while the backend restarts
        o.set_clean_session(false);
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
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.last_message_ms
                        .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    self.dispatcher
                        .dispatch(Message {
                            topic: p.topic,
                            payload: p.payload,
                        })
                        .await;
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(250);
                    last_error = None;
                    for filter in crate::domain::topic::core_filters(&self.config.domain) {
                        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "MQTT: cannot queue the core's subscription");
                        }
                    }
                    self.outbox.set_connected(true);
                    self.stats.backend_connected.store(true, Ordering::Relaxed);
                    self.stats.add(&self.stats.counters.backend_connects, 1);
                    tracing::info!(
                        broker = %format!("{}:{}", self.config.mqtt_backend_host, self.config.mqtt_backend_port),
                        session_present = ack.session_present,
                        "MQTT core connected and subscribed"
                    );
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        tracing::error!("MQTT: the broker refused the core's subscription");
                    } else {
                        self.stats.backend_subscribed.store(true, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.outbox.set_connected(false);
                    self.stats.backend_connected.store(false, Ordering::Relaxed);
                    self.stats
                        .backend_subscribed
                        .store(false, Ordering::Relaxed);
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, retry_in = ?backoff, "MQTT core connection lost");
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
        // best effort: send DISCONNECT so the broker keeps the session but not a will
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                match ev {
                    Event::Outgoing(rumqttc::Outgoing::Disconnect) => break,
                    // already acknowledged to the broker: it must still reach a shard
                    Event::Incoming(Packet::Publish(p)) => {
                        self.dispatcher
                            .dispatch(Message {
                                topic: p.topic,
                                payload: p.payload,
                            })
                            .await
                    }
                    _ => {}
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
