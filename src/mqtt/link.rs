//! The backend's own MQTT connection: holds the core's only two subscriptions
//! (`{domain}/+/+/+/pepeunit` and `{domain}/+/pepeunit`), feeds the dispatcher, and carries the
//! [`Outbox`]'s publishes. Reconnects with backoff and subscribes again after every CONNACK,
//! so a broker restart or a lost session never leaves the core deaf.
//!
//! QoS 1 messages are acknowledged by hand, after their effects are committed ([`Acks`]). The
//! link drops the connection when [`Acks`] asks for redelivery, and stops in two steps
//! ([`LinkPhase`]) so that what the shards commit while stopping is still acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use super::acks::{Ack, Acks, STALL};
use super::core::{Dispatcher, Message};
use crate::config::Config;
use crate::observe::mqtt::MqttStats;
use crate::service::ports::{Outbox, Publisher};

/// Where a link is in its life; [`Link::run`] follows a watch of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkPhase {
    Running,
    /// Stopping: messages that still arrive are left unacknowledged (the broker delivers them
    /// again to the next run); acknowledgements of what the shards commit still go out.
    Draining,
    /// Disconnect (after the acknowledgements queued so far).
    Stop,
}

pub struct Link {
    pub config: Arc<Config>,
    pub acks: Arc<Acks>,
    pub username: String,
    pub outbox: Outbox,
    /// Taken by [`Link::run`], dropped when draining (the shards end once every dispatcher is gone).
    pub dispatcher: Option<Dispatcher>,
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
        // acknowledged after commit (see `Acks`)
        o.set_manual_acks(true);
        o.set_request_channel_capacity(10_000);
        o
    }

    /// Runs until `phase` becomes [`LinkPhase::Stop`]; then disconnects cleanly.
    pub async fn run(mut self, mut phase: watch::Receiver<LinkPhase>) {
        let (client, mut eventloop) = AsyncClient::new(self.options(), 10_000);
        self.outbox.install(Some(Arc::new(client.clone())));
        let mut dispatcher = self.dispatcher.take();
        let mut backoff = Duration::from_millis(250);
        let mut last_error: Option<String> = None;
        let mut watchdog = tokio::time::interval(STALL / 4);
        loop {
            match *phase.borrow_and_update() {
                LinkPhase::Running => {}
                // the shards end once every dispatcher is gone
                LinkPhase::Draining => dispatcher = None,
                LinkPhase::Stop => break,
            }
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = self.acks.redelivery_wanted() => {
                    self.lost_connection();
                    tracing::warn!("MQTT: reconnecting so that the broker delivers unacknowledged messages again");
                    // the next poll connects again; the persistent session keeps them
                    eventloop.clean();
                    continue;
                }
                _ = watchdog.tick() => {
                    let waited = self.acks.oldest_open();
                    if waited > STALL {
                        tracing::error!(?waited, "MQTT: a message was never finished by the core; asking for it again");
                        self.node.crash("mqtt message stuck", &format!("no commit after {waited:?}"));
                        self.lost_connection();
                        eventloop.clean();
                    }
                    continue;
                }
                changed = phase.changed() => {
                    if changed.is_err() {
                        break; // the core is gone
                    }
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.last_message_ms
                        .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let Some(dispatcher) = &dispatcher else {
                        continue; // draining: delivered again to the next run
                    };
                    let ack = match p.qos {
                        QoS::AtMostOnce => None,
                        qos => Some(Ack::Broker(
                            self.acks.clone(),
                            self.acks.receive(p.pkid, qos),
                        )),
                    };
                    dispatcher
                        .dispatch(Message {
                            topic: p.topic,
                            payload: p.payload,
                            dup: p.dup,
                            ack,
                        })
                        .await;
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(250);
                    last_error = None;
                    self.acks.connected(client.clone());
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
                    self.lost_connection();
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, retry_in = ?backoff, "MQTT core connection lost");
                        // once per new error, not per retry: the alert counts incidents
                        self.node.crash("mqtt connection lost", &text);
                        last_error = Some(text);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        changed = phase.changed() => {
                            if changed.is_err() {
                                break;
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.outbox.set_connected(false);
        self.outbox.install(None);
        self.stats.backend_connected.store(false, Ordering::Relaxed);
        // DISCONNECT goes after the acknowledgements queued before it; the broker keeps the
        // session (and what is still unacknowledged) but not a will
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        })
        .await;
        self.acks.disconnected();
    }

    /// The connection is gone (or being dropped on purpose).
    fn lost_connection(&self) {
        self.acks.disconnected();
        self.outbox.set_connected(false);
        self.stats.backend_connected.store(false, Ordering::Relaxed);
        self.stats
            .backend_subscribed
            .store(false, Ordering::Relaxed);
    }
}

/// The service layer publishes through the backend's client.
impl Publisher for AsyncClient {
    fn try_publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        AsyncClient::try_publish(self, topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())
    }
}
