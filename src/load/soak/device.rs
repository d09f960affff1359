//! One simulated device: a lean MQTT 3.1.1 client on rumqttc's packet codec (as the core's
//! ingest connection, `src/mqtt/subscriber.rs`), so that 2,000 of them cost little in the
//! load process. It authenticates as its unit (the unit token as username, its uuid as client
//! id) and publishes QoS 1 only: a `state` every `state_every` seconds, a `log` message of
//! `log_lines` lines (each with its device time, so each has an idempotency key) every
//! `log_every` seconds and a node value every `node_every` seconds, at a phase of its own.
//!
//! A message counts as sent once the broker acknowledged it (PUBACK). Until then it stays in
//! the device's window (at most `max_inflight`; a tick that finds the window full is counted
//! as skipped, not queued). When the connection is dropped, on purpose (`reconnect_per_s`,
//! abruptly: no DISCONNECT, messages possibly in flight) or not, the device connects again
//! and sends every unacknowledged message again with DUP set, as a QoS 1 client must: the
//! broker may then deliver a message twice, and the instance must store it once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::{Rng, SeedableRng};
use rumqttc::mqttbytes::v4::{Connect, Packet, PingReq, Publish};
use rumqttc::mqttbytes::{self, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

/// Where the run is; every device follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connected, publishing nothing (memory per connection is measured here).
    Idle,
    Run,
    /// No new messages; wait for the acknowledgements of those in flight.
    Drain,
    /// Send the final state and node value, wait for their acknowledgements, disconnect.
    Final,
}

/// What every device does, the same for all.
pub struct Plan {
    pub broker: String,
    pub state_every: u64,
    pub log_every: u64,
    pub log_lines: usize,
    pub node_every: u64,
    /// Probability per second that a device drops its connection while running.
    pub reconnect_per_s: f64,
    pub max_inflight: usize,
    pub seed: u64,
    /// `millis` of every device's final state, and the tag of its final node value.
    pub final_millis: u64,
}

/// One device's identity.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub index: usize,
    pub unit: Uuid,
    pub token: String,
    pub commit: String,
    pub state_topic: String,
    pub log_topic: String,
    pub node_topic: String,
}

impl DeviceSpec {
    /// The node value of the final message (unique per run and device).
    pub fn final_value(&self, plan: &Plan) -> String {
        format!("final-{}-{}", plan.final_millis, self.index)
    }
}

/// Counters shared by all devices, read by the sampler while the run goes on.
#[derive(Default)]
pub struct Live {
    pub connected: AtomicUsize,
    /// Devices with nothing in flight after `Drain`.
    pub drained: AtomicUsize,
    pub finished: AtomicUsize,
    pub acked: AtomicU64,
    pub reconnects: AtomicU64,
}

/// What one device did.
#[derive(Clone, Debug, Default)]
pub struct DeviceResult {
    pub states_acked: u64,
    pub logs_acked: u64,
    pub lines_acked: u64,
    pub nodes_acked: u64,
    /// Connections dropped on purpose, and lost otherwise.
    pub reconnects: u64,
    pub lost: u64,
    /// Messages sent again (DUP) after a reconnect.
    pub resent: u64,
    /// Ticks that found the window full (the message was not sent).
    pub skipped: u64,
    /// The final state and node value were acknowledged.
    pub final_acked: bool,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    State,
    Log,
    Node,
}

struct InFlight {
    kind: Kind,
    lines: u64,
    sent: Instant,
    publish: Publish,
}

type Conn = (OwnedReadHalf, OwnedWriteHalf, BytesMut);

const KEEP_ALIVE: u16 = 60;
const PING_EVERY: Duration = Duration::from_secs(20);
/// A message unacknowledged this long while draining: connect again and resend it.
const STUCK: Duration = Duration::from_secs(20);
/// How long a device keeps trying to (re)connect before it gives up.
const CONNECT_FOR: Duration = Duration::from_secs(120);

struct Device {
    spec: DeviceSpec,
    plan: Arc<Plan>,
    live: Arc<Live>,
    rng: rand::rngs::StdRng,
    inflight: VecDeque<InFlight>,
    next_pkid: u16,
    seq: u64,
    result: DeviceResult,
    last_write: Instant,
    final_sent: bool,
    drained: bool,
}

/// Runs one device until the final phase is done (or it fails for good).
pub async fn run(
    spec: DeviceSpec,
    plan: Arc<Plan>,
    live: Arc<Live>,
    mut phase: watch::Receiver<Phase>,
    ramp: Arc<Semaphore>,
) -> DeviceResult {
    let rng = rand::rngs::StdRng::seed_from_u64(plan.seed ^ ((spec.index as u64 + 1) * 0x9e37));
    let mut d = Device {
        result: DeviceResult::default(),
        spec,
        plan,
        live,
        rng,
        inflight: VecDeque::new(),
        next_pkid: 0,
        seq: 0,
        last_write: Instant::now(),
        final_sent: false,
        drained: false,
    };
    let conn = {
        let _permit = ramp.acquire().await;
        d.connect_retrying().await
    };
    match conn {
        Ok(conn) => {
            d.live.connected.fetch_add(1, Relaxed);
            if let Err(e) = d.serve(conn, &mut phase).await {
                d.result.error = Some(e);
            }
            d.live.connected.fetch_sub(1, Relaxed);
        }
        Err(e) => d.result.error = Some(e),
    }
    d.live.finished.fetch_add(1, Relaxed);
    if !d.drained {
        d.live.drained.fetch_add(1, Relaxed);
    }
    d.result
}

impl Device {
    async fn connect(&self) -> Result<Conn, String> {
        let timeout = Duration::from_secs(30);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&self.plan.broker))
            .await
            .map_err(|_| format!("no TCP connection to {} within 30 s", self.plan.broker))?
            .map_err(|e| format!("{}: {e}", self.plan.broker))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut connect = Connect::new(self.spec.unit.to_string());
        connect.keep_alive = KEEP_ALIVE;
        connect.clean_session = true;
        connect.set_login(self.spec.token.clone(), "");
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, usize::MAX)
            .map_err(|e| e.to_string())?;
        wr.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(256);
        let packet = tokio::time::timeout(timeout, async {
            loop {
                match Packet::read(&mut buf, 64 * 1024) {
                    Ok(p) => return Ok(p),
                    Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(format!("bad packet from the broker: {e}")),
                }
                if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("the broker closed the connection before CONNACK".to_string());
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK within 30 s".to_string())??;
        match packet {
            Packet::ConnAck(ack) if ack.code == rumqttc::ConnectReturnCode::Success => {
                Ok((rd, wr, buf))
            }
            Packet::ConnAck(ack) => Err(format!("the broker refused the device: {:?}", ack.code)),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    async fn connect_retrying(&mut self) -> Result<Conn, String> {
        let until = Instant::now() + CONNECT_FOR;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.connect().await {
                Ok(c) => {
                    self.last_write = Instant::now();
                    return Ok(c);
                }
                Err(e) if Instant::now() > until => {
                    return Err(format!("device {}: {e}", self.spec.index))
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Connects again and sends what is unacknowledged once more, DUP set, in order.
    async fn reconnect(&mut self) -> Result<Conn, String> {
        let (rd, mut wr, buf) = self.connect_retrying().await?;
        let mut out = BytesMut::new();
        for m in self.inflight.iter_mut() {
            m.publish.dup = true;
            m.sent = Instant::now();
            Packet::Publish(m.publish.clone())
                .write(&mut out, usize::MAX)
                .map_err(|e| e.to_string())?;
        }
        self.result.resent += self.inflight.len() as u64;
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        Ok((rd, wr, buf))
    }

    async fn serve(
        &mut self,
        conn: Conn,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<(), String> {
        let (mut rd, mut wr, mut buf) = conn;
        let offset = Duration::from_millis(self.rng.gen_range(0..1000));
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + offset, Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n: u64 = self.rng.gen_range(0..3600);
        let mut out = BytesMut::new();
        let mut current = *phase.borrow_and_update();
        loop {
            // the packets complete in the buffer first
            loop {
                match Packet::read(&mut buf, 64 * 1024) {
                    Ok(Packet::PubAck(ack)) => self.acked(ack.pkid),
                    Ok(_) => {}
                    Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => return Err(format!("bad packet from the broker: {e}")),
                }
            }
            if current == Phase::Drain && self.inflight.is_empty() && !self.drained {
                self.drained = true;
                self.live.drained.fetch_add(1, Relaxed);
            }
            if self.final_sent && self.inflight.is_empty() {
                self.result.final_acked = true;
                out.clear();
                let _ = Packet::Disconnect.write(&mut out, usize::MAX);
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
                return Ok(());
            }
            let mut drop_now = false;
            tokio::select! {
                read = rd.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        self.result.lost += 1;
                        (rd, wr, buf) = self.reconnect().await?;
                    }
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    n += 1;
                    out.clear();
                    if current == Phase::Run {
                        self.due(n, &mut out);
                        drop_now = self.plan.reconnect_per_s > 0.0
                            && self.rng.gen_bool(self.plan.reconnect_per_s.min(1.0));
                    }
                    if out.is_empty() && self.last_write.elapsed() >= PING_EVERY {
                        let _ = PingReq.write(&mut out);
                    }
                    if current != Phase::Run
                        && self.inflight.front().is_some_and(|m| m.sent.elapsed() > STUCK)
                    {
                        drop_now = true;
                    }
                    if !out.is_empty() {
                        self.last_write = Instant::now();
                        if wr.write_all(&out).await.is_err() {
                            self.result.lost += 1;
                            (rd, wr, buf) = self.reconnect().await?;
                        }
                    }
                }
                changed = phase.changed() => {
                    current = if changed.is_err() { Phase::Final } else { *phase.borrow_and_update() };
                    if current == Phase::Final && !self.final_sent {
                        out.clear();
                        self.final_messages(&mut out);
                        self.final_sent = true;
                        self.last_write = Instant::now();
                        if wr.write_all(&out).await.is_err() {
                            self.result.lost += 1;
                            (rd, wr, buf) = self.reconnect().await?;
                        }
                    }
                }
            }
            if drop_now {
                // abruptly: no DISCONNECT, whatever is in flight stays unacknowledged
                drop((rd, wr));
                self.result.reconnects += 1;
                self.live.reconnects.fetch_add(1, Relaxed);
                let pause = self.rng.gen_range(100..1000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                buf.clear();
                (rd, wr, buf) = self.reconnect().await?;
            }
        }
    }

    fn acked(&mut self, pkid: u16) {
        let Some(i) = self.inflight.iter().position(|m| m.publish.pkid == pkid) else {
            return; // a second PUBACK for a message sent twice
        };
        let m = self.inflight.remove(i).expect("position found");
        match m.kind {
            Kind::State => self.result.states_acked += 1,
            Kind::Log => {
                self.result.logs_acked += 1;
                self.result.lines_acked += m.lines;
            }
            Kind::Node => self.result.nodes_acked += 1,
        }
        self.live.acked.fetch_add(1, Relaxed);
    }

    /// The messages due at tick `n`, written to `out`.
    fn due(&mut self, n: u64, out: &mut BytesMut) {
        let p = Arc::clone(&self.plan);
        if n.is_multiple_of(p.state_every) {
            let payload = self.state_payload(self.seq);
            self.publish(Kind::State, 0, self.spec.state_topic.clone(), payload, out);
        }
        if n.is_multiple_of(p.log_every) {
            let at = chrono::Utc::now()
                .naive_utc()
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string();
            let lines: Vec<_> = (0..p.log_lines)
                .map(|k| {
                    let level = ["Debug", "Info", "Warning"][(self.seq as usize + k) % 3];
                    json!({"level": level, "text": format!("soak {} m{} l{k}", self.spec.index, self.seq), "create_datetime": at})
                })
                .collect();
            let payload = serde_json::Value::Array(lines).to_string();
            self.publish(
                Kind::Log,
                p.log_lines as u64,
                self.spec.log_topic.clone(),
                payload,
                out,
            );
        }
        if n.is_multiple_of(p.node_every) {
            let value = format!("{}", 20 + self.seq % 17);
            self.publish(Kind::Node, 0, self.spec.node_topic.clone(), value, out);
        }
        self.seq += 1;
    }

    fn state_payload(&self, millis: u64) -> String {
        json!({
            "pu_commit_version": self.spec.commit,
            "millis": millis,
            "mem_free": 100_000 + self.spec.index,
            "mem_alloc": 20_000,
            "freq": 240,
        })
        .to_string()
    }

    fn final_messages(&mut self, out: &mut BytesMut) {
        let state = self.state_payload(self.plan.final_millis);
        let value = self.spec.final_value(&self.plan);
        // these two always go out: the window holds them beyond its size
        self.publish_anyway(Kind::State, 0, self.spec.state_topic.clone(), state, out);
        self.publish_anyway(Kind::Node, 0, self.spec.node_topic.clone(), value, out);
    }

    fn publish(
        &mut self,
        kind: Kind,
        lines: u64,
        topic: String,
        payload: String,
        out: &mut BytesMut,
    ) {
        if self.inflight.len() >= self.plan.max_inflight {
            self.result.skipped += 1;
            return;
        }
        self.publish_anyway(kind, lines, topic, payload, out);
    }

    fn publish_anyway(
        &mut self,
        kind: Kind,
        lines: u64,
        topic: String,
        payload: String,
        out: &mut BytesMut,
    ) {
        let pkid = self.pkid();
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
        publish.pkid = pkid;
        let _ = Packet::Publish(publish.clone()).write(out, usize::MAX);
        self.inflight.push_back(InFlight {
            kind,
            lines,
            sent: Instant::now(),
            publish,
        });
    }

    /// The next packet id not in flight (never 0).
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let id = self.next_pkid;
            if !self.inflight.iter().any(|m| m.publish.pkid == id) {
                return id;
            }
        }
    }
}
