//! The MQTT core (SPEC §0–§2): the embedded broker or a connection to an external one, the
//! backend's connection with the core's subscriptions, the dispatcher and its shards, and the
//! outbox the service layer publishes commands through.
//!
//! Data path of a device message: external broker -> [`subscriber`] -> [`core::Dispatcher`] ->
//! shard (by topic hash) -> [`crate::service::ingest`] -> batched store writes -> [`acks`] ->
//! the broker gets the QoS 1 acknowledgement. With the embedded broker its publish hook is the
//! first step ([`broker`]) and the device gets its PUBACK after the commit. Commands go out through [`link`] (the [`Outbox`]).
//!
//! [`Outbox`]: crate::service::ports::Outbox
//!
//! With an external EMQX, [`emqx`] is the broker-config worker that keeps EMQX's access
//! control, bridges and alert rule as Pepeunit needs them.

pub mod acks;
pub mod bridge;
pub mod broker;
pub mod core;
pub mod emqx;

pub mod link;
pub mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::mqtt::MqttStats;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MqttMode;
use crate::service::Instance;

/// The running MQTT core; [`MqttCore::stop`] drains it.
pub struct MqttCore {
    broker: Option<broker::EmbeddedBroker>,
    /// The broker-config worker (EMQX only) and its stop signal.
    emqx: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    /// Carries Output-side bridges to peers' brokers (built-in, or through EMQX).
    bridges: Option<bridge::BridgeSupervisor>,
    /// The publishing connection (commands to devices) and its stop signal.
    link: JoinHandle<()>,
    link_stop: watch::Sender<bool>,
    /// The ingest connection (the core's subscriptions) and its phase; external broker only.
    subscriber: Option<(JoinHandle<()>, watch::Sender<subscriber::Phase>)>,
    shards: core::Shards,
    dispatcher: core::Dispatcher,
    last_message_ms: Arc<AtomicU64>,
    started: Instant,
    client_id: String,
}

impl MqttCore {
    /// Starts the embedded broker (in embedded mode), the shards and the backend connection.
    /// `listener`: the embedded broker's, from [`broker::bind`] (None with an external broker).
    pub async fn start(
        instance: Instance,
        listener: Option<broker::BrokerListener>,
    ) -> anyhow::Result<MqttCore> {
        fn stats_ready(stats: &MqttStats) -> bool {
            stats
                .backend_subscribed
                .load(std::sync::atomic::Ordering::Relaxed)
        }
        let stats = instance.mqtt_stats.clone();
        // pipelines restore the open windows a clean stop saved as their nodes are first seen
        let restored = instance.restore_pipe_snapshots().await?;
        if restored > 0 {
            tracing::info!(pipelines = restored, "saved data pipe state read back");
        }
        let (dispatcher, shards) = core::start(instance.clone(), stats.clone());
        let broker = match instance.config.mqtt_mode {
            MqttMode::Embedded => {
                let listener = listener
                    .ok_or_else(|| anyhow::anyhow!("the embedded broker has no listener"))?;
                let broker = broker::EmbeddedBroker::start(
                    instance.clone(),
                    stats.clone(),
                    listener,
                    dispatcher.clone(),
                )
                .await?;
                // the broker hands device messages to the shards itself: they have somewhere
                // to go from the first CONNECT on
                stats.backend_subscribed.store(true, Ordering::Relaxed);
                Some(broker)
            }
            MqttMode::External => None,
        };
        let (emqx, carrier) = match (&instance.config.mqtt_mode, &instance.config.emqx_api_url) {
            (MqttMode::External, Some(_)) => {
                let (task, stop, admin, reapply) = start_emqx_worker(&instance)?;
                (Some((task, stop)), bridge::Carrier::Emqx { admin, reapply })
            }
            _ => (None, bridge::Carrier::BuiltIn),
        };
        let username = instance
            .config
            .mqtt_username
            .clone()
            .unwrap_or_else(|| instance.tokens.backend_token(&instance.config.domain));
        let started = Instant::now();
        let last_message_ms = Arc::new(AtomicU64::new(0));
        // with an external broker the core subscribes and acknowledges after commit itself
        let subscriber = (broker.is_none()).then(|| {
            let (phase, phase_rx) = watch::channel(subscriber::Phase::Running);
            let ingest = subscriber::Subscriber {
                config: instance.config.clone(),
                username: username.clone(),
                acks: acks::Acks::new(stats.clone()),
                dispatcher: Some(dispatcher.clone()),
                stats: stats.clone(),
                node: instance.node.clone(),
                last_message_ms: last_message_ms.clone(),
                started,
            };
            let task = tokio::spawn(
                instance
                    .node
                    .clone()
                    .supervise("mqtt ingest connection", ingest.run(phase_rx)),
            );
            (task, phase)
        });
        let (link_stop, link_stop_rx) = watch::channel(false);
        let link = link::Link {
            config: instance.config.clone(),
            username,
            outbox: instance.outbox.clone(),
            stats,
            node: instance.node.clone(),
        };
        let link = tokio::spawn(
            instance
                .node
                .clone()
                .supervise("mqtt link", link.run(link_stop_rx)),
        );
        if broker.is_some() {
            // the broker is ours and local: commands work from the first request on
            let deadline = Instant::now() + Duration::from_secs(10);
            // and devices are admitted once the core's subscriptions are acknowledged
            let ready = || instance.outbox.is_connected() && stats_ready(&instance.mqtt_stats);
            while !ready() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !ready() {
                tracing::warn!("the MQTT core has not connected to the embedded broker yet");
            }
        }
        let bridges = Some(bridge::BridgeSupervisor::start(instance.clone(), carrier));
        Ok(MqttCore {
            broker,
            emqx,
            bridges,
            link,
            link_stop,
            subscriber,
            shards,
            dispatcher,
            last_message_ms,
            started,
            client_id: instance.config.mqtt_client_id.clone(),
        })
    }

    /// Stops in the order that loses nothing already accepted. Embedded broker: it stops
    /// taking connections and drops the devices (they keep unacknowledged QoS 1 messages and
    /// resend them on reconnect), stops handing messages to the shards, and every shard drains
    /// its queue and commits its last batch (answering the publishes still waiting for it).
    /// External broker: the backend receives what the broker still holds until messages stop
    /// arriving (bounded), the shards drain and commit, and the backend acknowledges what was
    /// committed and disconnects; the rest stays unacknowledged and comes again to the next run.
    pub async fn stop(mut self) {
        // bridge carriers are clients of our broker and of peers': they go first
        if let Some(bridges) = self.bridges.take() {
            bridges.stop().await;
        }
        if let Some(b) = self.broker.as_mut() {
            b.disconnect_devices(&self.client_id).await;
            b.close_ingest();
        }
        match self.subscriber.take() {
            Some((task, phase)) => {
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    let last = Duration::from_millis(self.last_message_ms.load(Ordering::Relaxed));
                    let quiet =
                        self.started.elapsed().saturating_sub(last) > Duration::from_millis(500);
                    if quiet || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = phase.send(subscriber::Phase::Draining);
                drop(self.dispatcher);
                self.shards.join().await;
                let _ = phase.send(subscriber::Phase::Stop);
                let _ = task.await;
            }
            None => {
                drop(self.dispatcher);
                self.shards.join().await;
            }
        }
        let _ = self.link_stop.send(true);
        let _ = self.link.await;
        if let Some(b) = self.broker {
            b.stop().await;
        }
        if let Some((task, stop)) = self.emqx {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// The one task applying broker configuration (SPEC §2): EMQX's authentication and
/// authorization sources and listener limits, through its REST API.
type EmqxWorker = (
    JoinHandle<()>,
    watch::Sender<bool>,
    emqx::EmqxAdmin,
    tokio::sync::mpsc::Sender<()>,
);

fn start_emqx_worker(instance: &Instance) -> anyhow::Result<EmqxWorker> {
    let c = &instance.config;
    let backend = c
        .emqx_backend_url
        .clone()
        .unwrap_or_else(|| format!("{}{}{}", c.origin(), c.app_prefix, c.api_prefix));
    let mut settings = emqx::EmqxSettings::new(
        c.emqx_api_url.as_deref().unwrap_or_default(),
        &c.emqx_api_key,
        &c.emqx_api_secret,
        &backend,
    );
    settings.max_connections = c.mqtt_max_connections;
    settings.max_packet_size = c.mqtt_max_packet_size;
    settings.messages_rate = Some(c.throttle_client_rate);
    settings.alerts_rule = instance.alerts.emqx_rule_flag();
    if instance.alerts.is_enabled() {
        settings.alerts = Some(emqx::EmqxAlerts {
            backend_api: backend.trim_end_matches('/').to_string(),
            secret: instance.emqx_webhook_secret(),
            topic: crate::domain::topic::log_filter(&c.domain),
        });
    }
    let admin =
        emqx::EmqxAdmin::new(settings).map_err(|e| anyhow::anyhow!("EMQX settings: {e}"))?;
    let (stop, stop_rx) = watch::channel(false);
    // the bridge supervisor asks for a re-apply whenever bridges change
    let (reapply, reapply_rx) = tokio::sync::mpsc::channel(4);
    let worker_admin = admin.clone();
    let task = tokio::spawn(emqx::run_worker(worker_admin, stop_rx, reapply_rx));
    Ok((task, stop, admin, reapply))
}
