//! The core's ingest connection: a lean MQTT 3.1.1 subscriber that holds the core's only two
//! subscriptions (`{domain}/+/+/+/pepeunit` and `{domain}/+/pepeunit`) in a persistent session,
//! feeds the dispatcher, and acknowledges QoS 1 messages only once their effects are committed
//! ([`Acks`]): the acknowledgements due are written together, one write for many.
//!
//! Why not rumqttc here: with manual acknowledgements rumqttc writes one PUBACK per event-loop
//! turn (each with its own flush) while it reads up to ten messages a turn, so under load the
//! acknowledgements fall behind without bound. The packets themselves are rumqttc's
//! (`rumqttc::mqttbytes::v4`). The outbox's publishes keep their own rumqttc connection
//! ([`super::link`]).
//!
//! Reconnects with backoff and subscribes again after every CONNACK, so a broker restart or a
//! lost session never leaves the core deaf; pings every keep-alive; a connection silent for
//! 1.5 keep-alives is dropped. Stops in two steps ([`Phase`]) so that what the shards commit
//! while stopping is still acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, PingReq, Subscribe, SubscribeFilter};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::acks::{Ack, Acks, STALL};
use super::core::{Dispatcher, Message};
use crate::config::Config;
use crate::observe::mqtt::MqttStats;

/// Where the connection is in its life; [`Subscriber::run`] follows a watch of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stopping: messages that still arrive are left unacknowledged (the broker delivers them
    /// again to the next run); acknowledgements of what the shards commit still go out.
    Draining,
    /// Disconnect (after the acknowledgements due so far).
    Stop,
}

pub struct Subscriber {
    pub config: Arc<Config>,
    pub username: String,
    pub acks: Arc<Acks>,
    /// Taken by [`Subscriber::run`] and dropped when draining: the shards end once every
    /// dispatcher is gone.
    pub dispatcher: Option<Dispatcher>,
    pub stats: Arc<MqttStats>,
    /// Where a lost connection is reported (a crash alert for the admins).
    pub node: crate::observe::Node,
    /// Milliseconds since `started` of the last message received (for a quiet shutdown).
    pub last_message_ms: Arc<AtomicU64>,
    pub started: Instant,
}

/// Why a connection ended.
enum End {
    Stop,
    Lost(String),
    /// Dropped on purpose so that the broker delivers unacknowledged messages again.
    Redeliver,
}

impl Subscriber {
    fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.config.mqtt_keepalive.clamp(5, 600) as u64)
    }

    fn max_packet(&self) -> usize {
        self.config.mqtt_max_payload_size * 2 + 64 * 1024
    }

    /// Runs until `phase` becomes [`Phase::Stop`]; then disconnects cleanly.
    pub async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let mut dispatcher = self.dispatcher.take();
        let mut backoff = Duration::from_millis(250);
        let mut last_error: Option<String> = None;
        loop {
            if *phase.borrow_and_update() == Phase::Stop {
                break;
            }
            let conn = match self.connect().await {
                Ok(conn) => conn,
                Err(e) => {
                    self.lost(&mut last_error, e, backoff);
                    if self.pause(&mut phase, &mut dispatcher, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            last_error = None;
            self.stats.add(&self.stats.counters.backend_connects, 1);
            let end = self.serve(conn, &mut phase, &mut dispatcher).await;
            self.acks.new_connection();
            self.stats
                .backend_subscribed
                .store(false, Ordering::Relaxed);
            match end {
                End::Stop => break,
                End::Redeliver => {
                    tracing::warn!(
                        "MQTT: reconnecting so that the broker delivers unacknowledged messages again"
                    );
                }
                End::Lost(e) => {
                    self.lost(&mut last_error, e, backoff);
                    if self.pause(&mut phase, &mut dispatcher, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.acks.new_connection();
    }

    fn lost(&self, last_error: &mut Option<String>, text: String, retry_in: Duration) {
        self.stats
            .backend_subscribed
            .store(false, Ordering::Relaxed);
        if last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, ?retry_in, "MQTT core ingest connection lost");
            // once per new error, not per retry: the alert counts incidents
            self.node.crash("mqtt connection lost", &text);
            *last_error = Some(text);
        }
    }

    /// Waits `backoff`, following the phase; true when it is time to stop.
    async fn pause(
        &self,
        phase: &mut watch::Receiver<Phase>,
        dispatcher: &mut Option<Dispatcher>,
        backoff: Duration,
    ) -> bool {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            match *phase.borrow_and_update() {
                Phase::Running => {}
                Phase::Draining => *dispatcher = None,
                Phase::Stop => return true,
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                changed = phase.changed() => if changed.is_err() { return true },
            }
        }
    }

    /// TCP, CONNECT (persistent session), CONNACK, SUBSCRIBE.
    async fn connect(&self) -> Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut), String> {
        let c = &self.config;
        let timeout = Duration::from_secs(10);
        let addr = format!("{}:{}", c.mqtt_backend_host, c.mqtt_backend_port);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("no TCP connection to {addr} within {timeout:?}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut connect = Connect::new(c.mqtt_client_id.clone());
        connect.keep_alive = self.keep_alive().as_secs() as u16;
        // the broker keeps our subscriptions and queues QoS 1 messages while we are away
        connect.clean_session = false;
        connect.set_login(self.username.clone(), c.mqtt_password.clone());
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, usize::MAX)
            .map_err(|e| e.to_string())?;
        wr.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let packet =
            tokio::time::timeout(timeout, read_packet(&mut rd, &mut buf, self.max_packet()))
                .await
                .map_err(|_| "no CONNACK within 10 s".to_string())??;
        match packet {
            Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => {
                tracing::info!(
                    broker = %addr,
                    session_present = ack.session_present,
                    "MQTT core connected"
                );
            }
            Packet::ConnAck(ack) => {
                return Err(format!("the broker refused the core: {:?}", ack.code))
            }
            other => return Err(format!("expected CONNACK, got {other:?}")),
        }
        let filters = crate::domain::topic::core_filters(&c.domain)
            .into_iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        let mut subscribe = Subscribe::new_many(filters);
        subscribe.pkid = 1;
        out.clear();
        Packet::Subscribe(subscribe)
            .write(&mut out, usize::MAX)
            .map_err(|e| e.to_string())?;
        wr.write_all(&out).await.map_err(|e| e.to_string())?;
        Ok((rd, wr, buf))
    }

    /// One connection's life: messages in, acknowledgements out, pings.
    async fn serve(
        &self,
        (mut rd, mut wr, mut buf): (OwnedReadHalf, OwnedWriteHalf, BytesMut),
        phase: &mut watch::Receiver<Phase>,
        dispatcher: &mut Option<Dispatcher>,
    ) -> End {
        let keep_alive = self.keep_alive();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        let mut watchdog = tokio::time::interval(STALL / 4);
        let mut last_read = Instant::now();
        let mut out = BytesMut::new();
        let max = self.max_packet();
        loop {
            // everything complete in the buffer first
            loop {
                match Packet::read(&mut buf, max) {
                    Ok(packet) => {
                        if let Err(e) = self.incoming(packet, dispatcher).await {
                            return End::Lost(e);
                        }
                    }
                    Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => return End::Lost(format!("bad packet from the broker: {e}")),
                }
            }
            tokio::select! {
                read = rd.read_buf(&mut buf) => match read {
                    Ok(0) => return End::Lost("the broker closed the connection".into()),
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => return End::Lost(e.to_string()),
                },
                _ = self.acks.due() => {
                    self.due_acks(&mut out);
                    if let Err(e) = wr.write_all(&out).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = ping.tick() => {
                    if last_read.elapsed() > keep_alive * 3 / 2 {
                        return End::Lost(format!("nothing from the broker for {:?}", last_read.elapsed()));
                    }
                    out.clear();
                    let _ = PingReq.write(&mut out);
                    if let Err(e) = wr.write_all(&out).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = self.acks.redelivery_wanted() => return End::Redeliver,
                _ = watchdog.tick() => {
                    let waited = self.acks.oldest_open();
                    if waited > STALL {
                        tracing::error!(?waited, "MQTT: a message was never finished by the core; asking for it again");
                        self.node.crash("mqtt message stuck", &format!("no commit after {waited:?}"));
                        return End::Redeliver;
                    }
                }
                changed = phase.changed() => {
                    let now = if changed.is_err() { Phase::Stop } else { *phase.borrow_and_update() };
                    match now {
                        Phase::Running => {}
                        Phase::Draining => *dispatcher = None,
                        Phase::Stop => {
                            // the acknowledgements due so far, then DISCONNECT: the broker
                            // keeps the session and what is still unacknowledged
                            self.due_acks(&mut out);
                            let _ = Packet::Disconnect.write(&mut out, usize::MAX);
                            let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&out)).await;
                            let _ = wr.shutdown().await;
                            return End::Stop;
                        }
                    }
                }
            }
        }
    }

    /// Replaces `out` with the PUBACKs due, in order.
    fn due_acks(&self, out: &mut BytesMut) {
        out.clear();
        for (pkid, _) in self.acks.take_due() {
            let _ = Packet::PubAck(rumqttc::PubAck::new(pkid)).write(out, usize::MAX);
        }
    }

    async fn incoming(
        &self,
        packet: Packet,
        dispatcher: &Option<Dispatcher>,
    ) -> Result<(), String> {
        match packet {
            Packet::Publish(p) => {
                self.last_message_ms
                    .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let Some(dispatcher) = dispatcher else {
                    return Ok(()); // draining: delivered again to the next run
                };
                // the core subscribes with QoS 1, so the broker sends at most QoS 1
                let ack = match p.qos {
                    QoS::AtMostOnce => None,
                    qos => Some(Ack::new(self.acks.clone(), self.acks.receive(p.pkid, qos))),
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
            Packet::SubAck(ack) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err("the broker refused the core's subscription".into());
                }
                self.stats.backend_subscribed.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads until one whole packet is in `buf`, and returns it.
async fn read_packet(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("bad packet from the broker: {e}")),
        }
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the broker closed the connection".into());
        }
    }
}
