//! The bridge carrier (SPEC §11): makes the messages of every Output-side bridge reach the
//! peer's broker (see [`crate::service::bridges`] for how a bridge is agreed).
//!
//! - Built-in (embedded broker, or an external broker without EMQX's API): one carrier per
//!   (peer, topic). It subscribes to the topic on our own broker with the backend's
//!   credentials, and republishes each message (QoS 1, not retained) to the peer's broker with
//!   the Bridge credential the peer issued. Each side reconnects on its own with exponential
//!   backoff (the peer side 1 s doubling to 60 s); the peer side's state (`Active`, or `Error`
//!   with the reason) is written to the bridge row on every change. While the peer's broker is
//!   unreachable, up to [`BUFFER`] messages wait; more are dropped (and counted in the log).
//! - EMQX (`PU_EMQX_API_URL`): the same set of bridges is handed to the broker-config worker,
//!   which makes EMQX carry them with a connector, an action and a rule each
//!   ([`crate::mqtt::emqx`]).
//!
//! Several bridges from one Output node to the same peer (different Input nodes there) share
//! one carrier: the peer receives each message once, on the one topic they all read. The oldest
//! bridge's credential is used; when it is deleted, the next one takes over.
//!
//! The supervisor re-reads the bridges when [`BridgeSignal::changed`] is called and every
//! minute, and stops every carrier when the instance stops (before the MQTT core).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::BridgeState;
use crate::service::bridges::Bridge;
use crate::service::Instance;

/// Messages waiting for the peer's broker, per carrier.
pub const BUFFER: usize = 1000;
/// Longest wait between two connection attempts to a peer's broker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the supervisor re-reads the bridges without being told.
const RESCAN: Duration = Duration::from_secs(60);

/// What carries the bridges.
pub enum Carrier {
    /// Our own MQTT clients.
    BuiltIn,
    /// EMQX, through the broker-config worker.
    Emqx {
        admin: crate::mqtt::emqx::EmqxAdmin,
        reapply: tokio::sync::mpsc::Sender<()>,
    },
}

/// The running supervisor.
pub struct BridgeSupervisor {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl BridgeSupervisor {
    pub fn start(instance: Instance, carrier: Carrier) -> BridgeSupervisor {
        let (stop, stop_rx) = watch::channel(false);
        let node = instance.node.clone();
        let task = tokio::spawn(node.supervise("bridges", supervise(instance, carrier, stop_rx)));
        BridgeSupervisor { task, stop }
    }

    /// Stops every carrier (each disconnects from both brokers).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// One carrier's identity: the peer and the topic; restarted when anything else changes.
type Key = (String, String);

struct Running {
    bridge: Uuid,
    target: (String, i64, String),
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn supervise(instance: Instance, carrier: Carrier, mut stop: watch::Receiver<bool>) {
    let signal = instance.bridges.clone();
    let mut running: BTreeMap<Key, Running> = BTreeMap::new();
    loop {
        match instance.carried_bridges().await {
            Ok(bridges) => {
                // oldest first: the first bridge of each (peer, topic) is the one carried
                let mut wanted: BTreeMap<Key, (Bridge, String)> = BTreeMap::new();
                for (b, cred) in bridges {
                    wanted
                        .entry((b.peer_domain.clone(), b.topic.clone()))
                        .or_insert((b, cred));
                }
                match &carrier {
                    Carrier::BuiltIn => {
                        reconcile(&instance, &mut running, &wanted).await;
                        signal.set_running(running.values().map(|r| r.bridge).collect());
                    }
                    Carrier::Emqx { admin, reapply } => {
                        admin.set_bridges(
                            wanted
                                .values()
                                .filter_map(|(b, cred)| crate::mqtt::emqx::EmqxBridge::new(b, cred))
                                .collect(),
                        );
                        let _ = reapply.try_send(());
                        signal.set_running(wanted.values().map(|(b, _)| b.uuid).collect());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "bridges not read"),
        }
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(RESCAN) => {}
            _ = stop.changed() => break,
        }
    }
    for (_, r) in std::mem::take(&mut running) {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
    signal.set_running(HashSet::new());
}

async fn reconcile(
    instance: &Instance,
    running: &mut BTreeMap<Key, Running>,
    wanted: &BTreeMap<Key, (Bridge, String)>,
) {
    let stale: Vec<Key> = running
        .iter()
        .filter(|(k, r)| match wanted.get(*k) {
            None => true,
            Some((b, cred)) => r.bridge != b.uuid || r.target != target(b, cred),
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in stale {
        if let Some(r) = running.remove(&key) {
            let _ = r.stop.send(true);
            let _ = r.task.await;
            tracing::info!(bridge = %r.bridge, peer = %key.0, topic = %key.1, "bridge carrier stopped");
        }
    }
    for (key, (b, cred)) in wanted {
        if running.contains_key(key) {
            continue;
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(instance.node.clone().supervise(
            "bridge carrier",
            carry(instance.clone(), b.clone(), cred.clone(), stop_rx),
        ));
        tracing::info!(bridge = %b.uuid, peer = %key.0, topic = %key.1, "bridge carrier started");
        running.insert(
            key.clone(),
            Running {
                bridge: b.uuid,
                target: target(b, cred),
                stop,
                task,
            },
        );
    }
}

fn target(b: &Bridge, cred: &str) -> (String, i64, String) {
    (
        b.mqtt_host.clone().unwrap_or_default(),
        b.mqtt_port.unwrap_or_default(),
        cred.to_string(),
    )
}

/// One carrier: our broker -> the peer's broker, until `stop` changes.
async fn carry(
    instance: Instance,
    bridge: Bridge,
    credential: String,
    mut stop: watch::Receiver<bool>,
) {
    let c = &instance.config;
    let id = bridge.uuid.simple();
    let port = u16::try_from(bridge.mqtt_port.unwrap_or_default()).unwrap_or(0);
    let name = bridge.mqtt_host.clone().unwrap_or_default();
    // the name was checked when the bridge was offered; what it resolves to now is checked
    // again and pinned for this carrier (a name re-pointed into our network is refused). With
    // PU_ALLOW_LOCAL_NETWORK every address goes, and the name is left to the MQTT client.
    let host = if c.allow_local_network {
        name
    } else {
        loop {
            let reason = match crate::net::resolve_checked(&name, port, false).await {
                Ok(addrs) => break addrs[0].ip().to_string(),
                Err(e) => format!("the MQTT host is refused: {e}"),
            };
            tracing::warn!(bridge = %bridge.uuid, error = %reason, "bridge: not connecting");
            instance
                .set_bridge_state(bridge.uuid, BridgeState::Error, Some(&reason))
                .await;
            tokio::select! {
                _ = tokio::time::sleep(MAX_BACKOFF) => {}
                _ = stop.changed() => return,
            }
        }
    };
    let mut remote = MqttOptions::new(format!("pepeunit-bridge-{id}"), host, port);
    remote.set_credentials(credential, "");
    remote.set_keep_alive(Duration::from_secs(30));
    let max = c.mqtt_max_payload_size + 64 * 1024;
    remote.set_max_packet_size(max, max);
    let (remote_client, remote_loop) = AsyncClient::new(remote, BUFFER);

    let mut local = MqttOptions::new(
        format!("{}-bridge-{id}", c.mqtt_client_id),
        &c.mqtt_backend_host,
        c.mqtt_backend_port,
    );
    let username = c
        .mqtt_username
        .clone()
        .unwrap_or_else(|| instance.tokens.backend_token(&c.domain));
    local.set_credentials(username, &c.mqtt_password);
    local.set_keep_alive(Duration::from_secs(30));
    local.set_max_packet_size(max, max);
    let (local_client, local_loop) = AsyncClient::new(local, 64);

    let remote_task = tokio::spawn(run_remote(
        instance.clone(),
        bridge.clone(),
        remote_loop,
        stop.clone(),
    ));
    run_local(
        &bridge,
        local_client.clone(),
        local_loop,
        remote_client.clone(),
        stop,
    )
    .await;
    let _ = local_client.try_disconnect();
    let _ = remote_client.try_disconnect();
    let _ = remote_task.await;
}

/// Our side: subscribe (again after every CONNACK) and hand each message to the peer side.
async fn run_local(
    bridge: &Bridge,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    remote: AsyncClient,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut dropped: u64 = 0;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                if let Err(e) = client.try_subscribe(&bridge.topic, QoS::AtLeastOnce) {
                    tracing::warn!(bridge = %bridge.uuid, error = %e, "bridge: subscription not queued");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == bridge.topic => {
                if remote
                    .try_publish(&bridge.topic, QoS::AtLeastOnce, false, p.payload)
                    .is_err()
                {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(bridge = %bridge.uuid, dropped, "bridge: the peer's broker is not keeping up; messages dropped");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(bridge = %bridge.uuid, error = %e, retry_in = ?backoff, "bridge: connection to our broker lost");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The peer's side: keeps the connection up and records its state on the bridge row.
async fn run_remote(
    instance: Instance,
    bridge: Bridge,
    mut eventloop: rumqttc::EventLoop,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut recorded: Option<(BridgeState, Option<String>)> =
        Some((bridge.state, bridge.last_error.clone()));
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed() => break,
        };
        let now = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_secs(1);
                Some((BridgeState::Active, None))
            }
            Ok(_) => None,
            Err(e) => {
                let reason = describe(&e, &bridge);
                tracing::warn!(bridge = %bridge.uuid, error = %reason, retry_in = ?backoff, "bridge: the peer's broker is not reachable");
                let state = Some((BridgeState::Error, Some(reason)));
                if state != recorded {
                    instance
                        .set_bridge_state(
                            bridge.uuid,
                            BridgeState::Error,
                            state.as_ref().and_then(|s| s.1.as_deref()),
                        )
                        .await;
                    recorded = state;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                None
            }
        };
        if let Some(state) = now {
            if Some(&state) != recorded.as_ref() {
                instance.set_bridge_state(bridge.uuid, state.0, None).await;
                recorded = Some(state);
            }
        }
    }
    // flush what is queued for a moment, then leave
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

fn describe(e: &ConnectionError, bridge: &Bridge) -> String {
    let at = format!(
        "{}:{}",
        bridge.mqtt_host.as_deref().unwrap_or_default(),
        bridge.mqtt_port.unwrap_or_default()
    );
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker of {} at {at} refused the bridge credential ({code:?})",
                bridge.peer_domain
            )
        }
        other => format!("the broker of {} at {at}: {other}", bridge.peer_domain),
    }
}
