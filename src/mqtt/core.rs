//! The sharded core (SPEC §2): one dispatcher routes every message the backend receives to one
//! of N shard tasks by a hash of its topic, so one topic always reaches the same shard, in
//! order. Queues are bounded: a full queue is counted and the dispatcher waits (backpressure
//! onto the broker connection) instead of buffering without limit or dropping.
//!
//! Each shard owns its per-topic state (throttle times, message counters: the place for the
//! rate limits of SPEC §7/§8) and a small cache with a time-to-live per entry for unit and
//! node lookups, so the hot path takes no global lock. A shard drains whatever is queued (up to
//! [`MAX_BATCH`]) and writes the effects of the whole batch at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::acks::{Ack, Owed};
use crate::domain::datapipe::config::DataPipeConfig;
use crate::domain::datapipe::engine::{Output, Pipeline, Snapshot, Verdict};
use crate::domain::datapipe::{PipeRow, ProcessingPolicyType};
use crate::domain::payload::{self, ReportedState};
use crate::domain::topic::{Base, Topic, TopicError};
use crate::domain::{self, UnitFirmwareUpdateStatus};
use crate::observe::mqtt::MqttStats;
use crate::service::alerts::AlertLine;
use crate::service::ingest::{Ingest, IngestBatch, IngestUnit, LogWrite, UnitStateWrite};
use crate::service::load::unix_now;
use crate::service::Instance;

/// How often a shard closes the pipeline windows that came due.
const PIPE_TICK: Duration = Duration::from_secs(1);
/// Most messages one shard handles per database batch.
pub const MAX_BATCH: usize = 2048;
/// How long a shard trusts that a node does not exist (units are read through the row
/// cache of the service layer, the one cache of unit rows).
const MISSING_TTL: Duration = Duration::from_secs(5);
/// How long a shard trusts a node it found. Every change the shard cares about (the node
/// deleted, its data pipe set, cleared, switched on or off) reaches it at once through the
/// pipe hub; this only bounds what a missed change could cost. Reading each of 10k busy
/// nodes every 5 s cost a fifth of the core's throughput.
const FOUND_TTL: Duration = Duration::from_secs(300);
/// Per-topic entries idle this long are forgotten (bounded memory for deleted units).
const TOPIC_IDLE: Duration = Duration::from_secs(3600);

/// One message as the broker delivered it.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// Delivered again (MQTT DUP): its effects may be committed already.
    pub dup: bool,
    /// Who is told once its effects are committed (QoS 1); `None` for QoS 0.
    pub ack: Option<Ack>,
}

/// Routes messages to shards. Cloned into the broker connection task.
#[derive(Clone)]
pub struct Dispatcher {
    shards: Arc<Vec<mpsc::Sender<Message>>>,
    stats: Arc<MqttStats>,
    max_payload: usize,
}

/// FNV-1a: stable across runs and platforms, cheap for short topics.
pub fn shard_of(topic: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

impl Dispatcher {
    /// Hands a message to its shard; waits while that shard's queue is full.
    pub async fn dispatch(&self, msg: Message) {
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        stats.add(&c.received, 1);
        if msg.dup {
            stats.add(&c.redelivered, 1);
        }
        if msg.payload.len() > self.max_payload {
            stats.add(&c.oversized, 1);
            // refused for good: redelivery would not change that
            if let Some(ack) = msg.ack {
                ack.settle();
            }
            return;
        }
        let tx = &self.shards[shard_of(&msg.topic, self.shards.len())];
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                stats.add(&c.queue_full, 1);
                let _ = tx.send(msg).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The running shards; dropping every [`Dispatcher`] clone and awaiting [`Shards::join`]
/// drains the queues and flushes the last batches.
pub struct Shards {
    handles: Vec<JoinHandle<()>>,
    log_writer: JoinHandle<()>,
    ingest: Ingest,
}

impl Shards {
    /// Waits for every shard to drain (each saves its pipelines' open windows), then for the
    /// log writer to store what they sent it.
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
        // open windows restored at start whose node sent nothing since: saved again, or a
        // second restart would lose them
        let unclaimed = self.ingest.pipes().take_all_saved();
        if let Err(e) = self.ingest.save_pipe_snapshots(&unclaimed).await {
            tracing::error!(pipelines = unclaimed.len(), error = %e, "open pipeline windows not saved");
        }
        let _ = self.log_writer.await;
    }
}

/// Batches of log lines in flight from the shards to the log writer.
const LOG_WRITER_QUEUE: usize = 64;
/// How long a batch the store refuses is retried (a database restarting, ClickHouse
/// unreachable) before its messages are handed back to the broker (QoS 1: delivered again) or,
/// for QoS 0, dropped and counted in `batch_errors`.
const RETRY_FOR: Duration = Duration::from_secs(30);
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// One shard batch's log lines and the acknowledgements that wait for them.
pub struct LogWork {
    pub write: LogWrite,
    pub owed: Owed,
}

/// Runs `attempt` until it succeeds or [`RETRY_FOR`] has passed, pausing between tries.
/// `attempt` gets the number of earlier failures (a retry may know its first try committed).
async fn retried<T, F, Fut>(what: &str, lines: usize, mut attempt: F) -> Result<T, String>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = crate::error::AppResult<T>>,
{
    let started = Instant::now();
    let mut pause = RETRY_FIRST_PAUSE;
    let mut failures = 0;
    loop {
        match attempt(failures).await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(what, failures, "stored after retrying");
                }
                return Ok(v);
            }
            Err(e) if started.elapsed() + pause > RETRY_FOR => return Err(e.to_string()),
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(what, lines, error = %e, "not stored; retrying");
                }
                failures += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
        }
    }
}

/// How the log writer groups shard batches into one store write. The embedded SQL store
/// writes what is there at once (a commit is cheap and a device's PUBACK waits for it);
/// ClickHouse makes every INSERT a part on disk and wants few, large ones, so lines are
/// gathered for a while first.
#[derive(Clone, Copy, Debug)]
struct Grouping {
    /// How long lines are gathered after the first arrives (zero: write at once).
    window: Duration,
    /// Write early once this many lines are gathered.
    max_lines: usize,
    /// Write early once this many of the broker connection's messages are unacknowledged:
    /// the acknowledgements wait for this write (and, in order, every later message's too),
    /// so the broker would soon stop at its in-flight window (README asks for 1,000).
    broker_open: usize,
    /// Write early when messages owed to the broker are held and nothing arrived for this
    /// long: the broker has probably stopped at a small in-flight window.
    broker_idle: Duration,
}

impl Grouping {
    fn for_store(clickhouse: Option<&crate::config::ClickHouseConfig>) -> Grouping {
        Grouping {
            window: clickhouse.map_or(Duration::ZERO, |c| c.flush_interval),
            max_lines: 20_000,
            broker_open: 500,
            broker_idle: Duration::from_millis(50),
        }
    }
}

/// Receives the next group of work into `works`; false once the channel is closed and empty.
/// Cancel-safe receives only: nothing received is ever dropped here.
async fn gather(rx: &mut mpsc::Receiver<LogWork>, works: &mut Vec<LogWork>, g: Grouping) -> bool {
    if rx.recv_many(works, LOG_WRITER_QUEUE).await == 0 {
        return false;
    }
    if g.window.is_zero() {
        return true;
    }
    let deadline = tokio::time::Instant::now() + g.window;
    let mut counted = 0;
    let mut lines = 0;
    let mut owes_broker = false;
    loop {
        for w in &works[counted..] {
            lines += w.write.lines.len();
            if let Some(open) = w.owed.broker_open() {
                owes_broker = true;
                if open >= g.broker_open {
                    return true;
                }
            }
        }
        counted = works.len();
        if lines >= g.max_lines {
            return true;
        }
        let until = if owes_broker {
            deadline.min(tokio::time::Instant::now() + g.broker_idle)
        } else {
            deadline
        };
        tokio::select! {
            n = rx.recv_many(works, LOG_WRITER_QUEUE) => if n == 0 {
                return true; // closed: write what is here; the next call answers false
            },
            _ = tokio::time::sleep_until(until) => return true,
        }
    }
}

/// The one task that writes log lines: every shard sends its lines here, so the log store
/// sees one writer with large batches instead of N writers contending for it (SQLite has a
/// single write lock). A full queue makes the shards wait (backpressure, nothing dropped).
async fn log_writer(
    ingest: Ingest,
    stats: Arc<MqttStats>,
    rx: &mut mpsc::Receiver<LogWork>,
    grouping: Grouping,
) {
    let mut works = Vec::with_capacity(LOG_WRITER_QUEUE);
    while gather(rx, &mut works, grouping).await {
        let mut write = LogWrite::default();
        let mut owed = Owed::default();
        for w in works.drain(..) {
            write.merge(w.write);
            owed.merge(w.owed);
        }
        let n = write.lines.len() as u64;
        let rows = write.pipe_rows.len() as u64;
        // a failed INSERT stores nothing (one transaction, or one ClickHouse block); when its
        // answer was lost after the store committed, the retry finds the lines by their keys
        let result = retried("unit log lines", write.lines.len(), |failures| {
            ingest.store_logs(&write, failures > 0)
        })
        .await;
        match result {
            Ok(stored) => {
                stats.add(&stats.counters.log_writes, 1);
                stats.add(&stats.counters.logs_stored, stored.stored);
                stats.add(&stats.counters.log_duplicates_skipped, stored.skipped);
                stats.add(&stats.counters.pipe_rows_stored, rows);
                owed.settle();
            }
            Err(e) => {
                stats.add(&stats.counters.batch_errors, 1);
                let back = if owed.is_empty() {
                    "lost"
                } else {
                    "handed back to the broker"
                };
                tracing::error!(lines = n, error = %e, back, "unit log lines not stored");
                ingest.track_error("mqtt ingest: unit log lines not stored", &e);
                owed.fail();
            }
        }
    }
}

pub fn start(instance: Instance, stats: Arc<MqttStats>) -> (Dispatcher, Shards) {
    let n = instance.config.mqtt_shards;
    let mut senders = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    let (logs_tx, logs_rx) = mpsc::channel(LOG_WRITER_QUEUE);
    // supervised and restarted: a panic is a crash alert for the admins and loses what the
    // task held in hand (one batch), never the queue (the receiver outlives each run)
    let node = instance.node.clone();
    let log_writer = {
        let (ingest, stats) = (instance.ingest(), stats.clone());
        let grouping = Grouping::for_store(instance.config.clickhouse.as_ref());
        let rx = Arc::new(tokio::sync::Mutex::new(logs_rx));
        tokio::spawn(
            node.clone()
                .supervise_restarting("mqtt log writer", move || {
                    let (ingest, stats, rx) = (ingest.clone(), stats.clone(), rx.clone());
                    async move { log_writer(ingest, stats, &mut *rx.lock().await, grouping).await }
                }),
        )
    };
    for id in 0..n {
        let (tx, rx) = mpsc::channel(instance.config.mqtt_shard_queue);
        senders.push(tx);
        let (ingest, stats, logs_tx) = (instance.ingest(), stats.clone(), logs_tx.clone());
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // a restarted shard starts with empty caches
        handles.push(tokio::spawn(node.clone().supervise_restarting(
            "mqtt shard",
            move || {
                let shard = Shard::new(id, ingest.clone(), stats.clone(), logs_tx.clone());
                let rx = rx.clone();
                async move { shard.run(&mut *rx.lock().await).await }
            },
        )));
    }
    stats.set_queues(
        senders
            .iter()
            .map(|tx| {
                let weak = tx.downgrade();
                Box::new(move || {
                    weak.upgrade()
                        .map_or(0, |tx| tx.max_capacity() - tx.capacity())
                }) as crate::observe::mqtt::QueueDepth
            })
            .collect(),
    );
    let dispatcher = Dispatcher {
        shards: Arc::new(senders),
        stats,
        max_payload: instance.config.mqtt_max_payload_size,
    };
    drop(logs_tx);
    (
        dispatcher,
        Shards {
            handles,
            log_writer,
            ingest: instance.ingest(),
        },
    )
}

/// What a shard remembers about one topic.
#[derive(Default)]
pub struct TopicState {
    pub messages: u64,
    pub last_seen: Option<Instant>,
    /// When a `state` was last accepted on this topic (the `PU_STATE_SEND_INTERVAL` throttle).
    pub last_state: Option<Instant>,
    /// The last value stored for a node topic (unchanged values are not rewritten).
    pub last_value: Option<Bytes>,
}

struct Shard {
    id: usize,
    logs: mpsc::Sender<LogWork>,
    ingest: Ingest,
    /// Acknowledgements owed for the batch being handled.
    owed: Owed,
    stats: Arc<MqttStats>,
    domain: String,
    state_interval: Duration,
    topics: HashMap<String, TopicState>,
    /// Nodes read: when, and their Unit (`None`: no such node, or not the platform's).
    nodes: HashMap<Uuid, (Instant, Option<Uuid>)>,
    /// The running data pipes of this shard's nodes (issue 17).
    pipelines: HashMap<Uuid, Pipeline>,
    /// What this shard last added to the pipe gauges: (pipelines, their bytes).
    pipes_reported: (u64, u64),
    /// A unit or node could not be read (the database failing past the retries): the batch's
    /// messages are handed back for redelivery instead of acknowledged without their effects.
    lookup_failed: bool,
}

enum Route<'a> {
    State(Uuid),
    Log(Uuid),
    Node(Uuid),
    Ignore(&'a str),
}

fn route<'a>(domain: &str, topic: &'a str) -> Route<'a> {
    let parsed = match Topic::parse(topic) {
        Ok(t) if t.domain() != domain => return Route::Ignore("foreign domain"),
        Ok(t) => t,
        Err(TopicError::Uuid) => return Route::Ignore("bad uuid"),
        Err(_) => return Route::Ignore("not a topic the core processes"),
    };
    match parsed {
        Topic::UnitBase {
            base: Base::Output,
            unit,
            name,
            ..
        } => match name {
            "state" => Route::State(unit),
            "log" => Route::Log(unit),
            _ => Route::Ignore("unknown output base topic"),
        },
        Topic::Node {
            node,
            pepeunit: true,
            ..
        } => Route::Node(node),
        _ => Route::Ignore("not a topic the core processes"),
    }
}

/// Whether the core processes messages on `topic` (a unit's `state` or `log`, a node's
/// `/pepeunit` topic of this instance): what the embedded broker hands to the shards itself.
pub fn ingested(domain: &str, topic: &str) -> bool {
    !matches!(route(domain, topic), Route::Ignore(_))
}

impl Shard {
    fn new(id: usize, ingest: Ingest, stats: Arc<MqttStats>, logs: mpsc::Sender<LogWork>) -> Self {
        Shard {
            id,
            logs,
            owed: Owed::default(),
            domain: ingest.domain().to_string(),
            state_interval: ingest.state_interval(),
            ingest,
            stats,
            topics: HashMap::new(),
            nodes: HashMap::new(),
            pipelines: HashMap::new(),
            pipes_reported: (0, 0),
            lookup_failed: false,
        }
    }

    async fn run(mut self, rx: &mut mpsc::Receiver<Message>) {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        let mut last_sweep = Instant::now();
        let mut changes = self.ingest.pipes().subscribe();
        let mut ticks = tokio::time::interval(PIPE_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = IngestBatch::default();
            let received = tokio::select! {
                n = rx.recv_many(&mut buf, MAX_BATCH) => n,
                _ = ticks.tick() => {
                    // windows close on time, also when their node is silent
                    self.pipe_changes(&mut changes, &mut batch).await;
                    self.tick_pipelines(&mut batch);
                    self.report_pipes();
                    if !batch.is_empty() {
                        self.flush(batch).await;
                    }
                    continue;
                }
            };
            if received == 0 {
                break; // every sender is gone and the queue is empty
            }
            self.pipe_changes(&mut changes, &mut batch).await;
            let n = buf.len() as u64;
            for mut msg in buf.drain(..) {
                self.owed.push(msg.ack.take());
                self.handle(msg, &mut batch).await;
            }
            self.flush(batch).await;
            self.stats.add(&self.stats.counters.processed, n);
            if last_sweep.elapsed() > TOPIC_IDLE / 4 {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        self.save_pipelines().await;
        self.stats.pipes.report(self.pipes_reported, (0, 0));
        tracing::debug!(shard = self.id, "shard drained and stopped");
    }

    /// Configs changed (or data was cleared): reload those nodes now, so that a running
    /// pipeline takes its new config at once. A lagging receiver reloads every node.
    async fn pipe_changes(
        &mut self,
        changes: &mut broadcast::Receiver<Uuid>,
        batch: &mut IngestBatch,
    ) {
        let mut changed = Vec::new();
        loop {
            match changes.try_recv() {
                Ok(node) => changed.push(node),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    changed.extend(self.nodes.keys().copied());
                    changed.extend(self.pipelines.keys().copied());
                }
                Err(_) => break,
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for node in changed {
            if self.nodes.remove(&node).is_some() || self.pipelines.contains_key(&node) {
                // read again now; a failure leaves it to the next message
                let _ = self.cached_node(node, batch).await;
            }
        }
    }

    /// Closes the windows that came due.
    fn tick_pipelines(&mut self, batch: &mut IngestBatch) {
        let now = chrono::Utc::now().naive_utc();
        for (node, p) in self.pipelines.iter_mut() {
            if p.next_deadline().is_some_and(|d| d <= now) {
                let mut out = Vec::new();
                p.tick(now, &mut out);
                emit(*node, out, batch);
            }
        }
    }

    /// Brings the pipe gauges up to date with this shard's pipelines.
    fn report_pipes(&mut self) {
        let bytes = self
            .pipelines
            .values()
            .map(|p| p.memory_bytes() as u64)
            .sum();
        let now = (self.pipelines.len() as u64, bytes);
        self.stats.pipes.report(self.pipes_reported, now);
        self.pipes_reported = now;
    }

    /// A clean stop: the open state of every pipeline is saved for the next start.
    async fn save_pipelines(&mut self) {
        let snapshots: Vec<(Uuid, String)> = self
            .pipelines
            .iter()
            .map(|(node, p)| (*node, p.snapshot().to_json()))
            .collect();
        if let Err(e) = self.ingest.save_pipe_snapshots(&snapshots).await {
            tracing::error!(shard = self.id, pipelines = snapshots.len(), error = %e,
                "open pipeline windows not saved");
        }
    }

    /// Starts, reconfigures or stops a node's pipeline to match its config.
    fn apply_pipeline(
        &mut self,
        node: Uuid,
        config: Option<DataPipeConfig>,
        batch: &mut IngestBatch,
    ) {
        let now = chrono::Utc::now().naive_utc();
        match (self.pipelines.get_mut(&node), config) {
            (Some(p), Some(c)) => {
                if p.config() != &c {
                    let mut out = Vec::new();
                    p.reconfigure(c, now, &mut out);
                    emit(node, out, batch);
                }
            }
            (Some(_), None) => {
                // deactivated or deleted: its open windows go with it
                self.pipelines.remove(&node);
            }
            (None, Some(c)) => {
                let saved = self.ingest.pipes().take_saved(node);
                let p = match saved.map(|s| Snapshot::from_json(&s)) {
                    Some(Ok(snapshot)) => Pipeline::restore(node, c.clone(), snapshot, now)
                        .unwrap_or_else(|e| {
                            tracing::warn!(%node, error = %e, "saved pipeline state not restored");
                            Pipeline::new(node, c, now)
                        }),
                    Some(Err(e)) => {
                        tracing::warn!(%node, error = %e, "saved pipeline state unreadable");
                        Pipeline::new(node, c, now)
                    }
                    None => Pipeline::new(node, c, now),
                };
                self.pipelines.insert(node, p);
            }
            (None, None) => {}
        }
    }

    async fn handle(&mut self, msg: Message, batch: &mut IngestBatch) {
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        let route = route(&self.domain, &msg.topic);
        if let Route::State(unit) | Route::Log(unit) = route {
            if self.ingest.shards_throttle() && !self.ingest.throttle_passes(&msg.topic, unit).await
            {
                stats.add(&c.throttled, 1);
                return;
            }
        }
        let entry = match route {
            Route::Ignore(why) => {
                tracing::trace!(topic = %msg.topic, why, "message ignored");
                stats.add(&c.ignored, 1);
                return;
            }
            // the topic string is copied only the first time a topic is seen
            _ => {
                if !self.topics.contains_key(&msg.topic) {
                    self.topics.insert(msg.topic.clone(), TopicState::default());
                }
                self.topics.get_mut(&msg.topic).expect("inserted above")
            }
        };
        entry.messages += 1;
        let now = Instant::now();
        entry.last_seen = Some(now);
        if let Route::State(unit) | Route::Log(unit) = route {
            self.ingest.load().record(&msg.topic, unit, unix_now(), 1);
        }
        match route {
            Route::State(unit) => self.handle_state(unit, &msg, now, batch).await,
            Route::Log(unit) => self.handle_log(unit, &msg, batch).await,
            Route::Node(node) => self.handle_node(node, msg, batch).await,
            Route::Ignore(_) => {}
        }
    }

    async fn handle_state(
        &mut self,
        unit: Uuid,
        msg: &Message,
        now: Instant,
        batch: &mut IngestBatch,
    ) {
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        let reported: ReportedState = match payload::parse_state(&msg.payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(topic = %msg.topic, error = %e, "state refused");
                stats.add(&c.invalid, 1);
                return;
            }
        };
        let Some(cached) = self.unit(unit, batch).await else {
            stats.add(&c.invalid, 1);
            return;
        };
        let waiting = cached.status == Some(UnitFirmwareUpdateStatus::RequestSent);
        let same_commit = cached.current_commit.as_deref() == Some(reported.commit.as_str());
        let topic = self
            .topics
            .get_mut(&msg.topic)
            .expect("entry made by handle");
        let too_frequent = topic
            .last_state
            .is_some_and(|t| now.duration_since(t) < self.state_interval);
        if same_commit && !waiting && too_frequent {
            stats.add(&c.states_throttled, 1);
            return;
        }
        topic.last_state = Some(now);
        // a pending Update, or a new version (which may answer an Update that timed out)
        let firmware = if waiting || !same_commit {
            match self
                .ingest
                .firmware_transition(unit, &reported.commit)
                .await
            {
                Ok(change) => change,
                Err(e) => {
                    tracing::warn!(%unit, error = %e, "cannot decide the firmware update status");
                    None
                }
            }
        } else {
            None
        };
        // a second state of the batch sees this one through the batch (`Shard::unit`)
        let firmware = firmware.or_else(|| {
            batch
                .states
                .get(&unit)
                .and_then(|earlier| earlier.firmware.clone())
        });
        batch.states.insert(
            unit,
            UnitStateWrite {
                unit_state: serde_json::Value::Object(reported.state).to_string(),
                commit: reported.commit,
                at: domain::now(),
                firmware,
            },
        );
    }

    async fn handle_log(&mut self, unit: Uuid, msg: &Message, batch: &mut IngestBatch) {
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        let (lines, refused) = match payload::parse_log(&msg.payload) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::debug!(topic = %msg.topic, error = %e, "log refused");
                stats.add(&c.invalid, 1);
                return;
            }
        };
        stats.add(&c.invalid, refused as u64);
        if msg.dup {
            let unkeyed = lines.iter().filter(|l| l.create_datetime.is_none()).count();
            stats.add(&c.log_lines_unkeyed_redelivered, unkeyed as u64);
        }
        let Some(cached) = self.unit(unit, batch).await else {
            stats.add(&c.invalid, 1);
            return;
        };
        // the shards feed the alert pipeline unless EMQX's rule does (read per message: the
        // rule comes and goes with the broker-config worker's applies)
        if self.ingest.alerts_from_shards() {
            let at = domain::now();
            let threshold = cached.alert_level.rank();
            for line in lines.iter().filter(|l| l.level.rank() >= threshold) {
                self.ingest.offer_alert(AlertLine {
                    unit,
                    level: line.level,
                    text: line.text.clone(),
                    at: at.clone(),
                });
            }
        }
        self.ingest.add_logs(batch, unit, lines, msg.dup);
    }

    async fn handle_node(&mut self, node: Uuid, msg: Message, batch: &mut IngestBatch) {
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        if std::str::from_utf8(&msg.payload).is_err() {
            stats.add(&c.invalid, 1);
            return;
        }
        let Some(unit) = self.cached_node(node, batch).await else {
            stats.add(&c.invalid, 1);
            return;
        };
        if self.ingest.shards_throttle() && !self.ingest.throttle_passes(&msg.topic, unit).await {
            stats.add(&c.throttled, 1);
            return;
        }
        self.ingest.load().record(&msg.topic, unit, unix_now(), 1);
        if let Some(p) = self.pipelines.get_mut(&node) {
            let mut out = Vec::new();
            match p.offer(chrono::Utc::now().naive_utc(), &msg.payload, &mut out) {
                Verdict::Accepted => stats.add(&c.pipe_values_accepted, 1),
                Verdict::Dropped(_) => stats.add(&c.pipe_values_dropped, 1),
            }
            let keeps_state =
                p.config().processing_policy.policy_type == ProcessingPolicyType::LastValue;
            emit(node, out, batch);
            if keeps_state {
                // the node's state is what its LastValue pipeline keeps
                return;
            }
        }
        let topic = self
            .topics
            .get_mut(&msg.topic)
            .expect("entry made by handle");
        if topic.last_value.as_ref() == Some(&msg.payload) {
            return;
        }
        topic.last_value = Some(msg.payload.clone());
        let mut value = String::from_utf8(msg.payload.to_vec()).unwrap_or_default();
        payload::without_nul(&mut value);
        batch.node_values.insert(node, value);
    }

    /// The unit a message is for, as the row cache has it (the one cache of unit rows),
    /// with what this batch has not written yet: an earlier state's version and firmware
    /// status. `None` when it does not exist, or cannot be read now (counted as invalid).
    async fn unit(&mut self, uuid: Uuid, batch: &IngestBatch) -> Option<IngestUnit> {
        let ingest = &self.ingest;
        let mut unit = match retried("unit lookup", 1, |_| ingest.unit(uuid)).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(%uuid, error = %e, "unit lookup failed");
                self.lookup_failed = true;
                return None;
            }
        };
        if let Some(pending) = batch.states.get(&uuid) {
            unit.current_commit = Some(pending.commit.clone());
            if let Some(f) = &pending.firmware {
                unit.status = Some(f.status);
            }
        }
        Some(unit)
    }

    /// Only nodes whose topic ends with `/pepeunit` carry data the platform processes. Reading
    /// a node also starts, changes or stops its pipeline.
    /// The node's Unit, when the node takes the platform's values (read again past its
    /// time to live); `None` when it does not exist or cannot be read now.
    async fn cached_node(&mut self, uuid: Uuid, batch: &mut IngestBatch) -> Option<Uuid> {
        if let Some((at, unit)) = self.nodes.get(&uuid) {
            if at.elapsed()
                < if unit.is_some() {
                    FOUND_TTL
                } else {
                    MISSING_TTL
                }
            {
                return *unit;
            }
        }
        let found = match self.ingest.node(uuid).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%uuid, error = %e, "node lookup failed");
                return match self.nodes.get(&uuid) {
                    Some((_, unit)) => *unit,
                    None => {
                        self.lookup_failed = true;
                        None
                    }
                };
            }
        };
        let unit = found.as_ref().map(|n| n.unit);
        self.apply_pipeline(uuid, found.and_then(|n| n.pipeline), batch);
        self.nodes.insert(uuid, (Instant::now(), unit));
        unit
    }

    /// Writes the batch's states and node values (retried), then hands its log lines to the
    /// log writer with the acknowledgements owed: those go out once everything is stored.
    async fn flush(&mut self, mut batch: IngestBatch) {
        let mut owed = std::mem::take(&mut self.owed);
        let mut logs = std::mem::take(&mut batch.logs);
        if !self.ingest.pipe_rows_in_batch() {
            // ClickHouse: the rows share the log writer's INSERT window and acknowledgements;
            // its janitor trims NRecords nodes (readers take the newest N meanwhile)
            logs.pipe_rows = std::mem::take(&mut batch.pipe_rows);
            batch.pipe_trims.clear();
        }
        let stats = Arc::clone(&self.stats);
        let c = &stats.counters;
        if std::mem::take(&mut self.lookup_failed) {
            // some message of this batch was dropped for want of its unit or node: all of
            // them come again (what the rest commits is not repeated: keys, last values)
            stats.add(&c.batch_errors, 1);
            std::mem::take(&mut owed).fail();
        }
        if !batch.is_empty() {
            let (states, nodes) = (batch.states.len() as u64, batch.node_values.len() as u64);
            let rows = batch.pipe_rows.len() as u64;
            stats.add(&c.batches, 1);
            let ingest = &self.ingest;
            match retried(
                "unit states and node values",
                (states + nodes) as usize,
                |_| ingest.write_batch(&batch),
            )
            .await
            {
                Ok(()) => {
                    stats.add(&c.states_stored, states);
                    stats.add(&c.node_values_stored, nodes);
                    stats.add(&c.pipe_rows_stored, rows);
                }
                Err(e) => {
                    stats.add(&c.batch_errors, 1);
                    tracing::error!(shard = self.id, error = %e, "ingest batch not stored");
                    self.ingest
                        .track_error("mqtt ingest: states and node values not stored", &e);
                    // QoS 1 messages come again; what is committed of them is not repeated
                    // (their log lines are still stored below, once, by key)
                    std::mem::take(&mut owed).fail();
                    // forget what we believed was stored, so the next messages are not
                    // throttled (the row cache learns only what was committed)
                    for t in self.topics.values_mut() {
                        t.last_value = None;
                    }
                }
            }
        }
        if logs.is_empty() {
            owed.settle();
            return;
        }
        let work = LogWork { write: logs, owed };
        if let Err(mpsc::error::SendError(work)) = self.logs.send(work).await {
            tracing::error!(
                shard = self.id,
                "the log writer is gone; log lines not stored"
            );
            work.owed.fail();
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.topics.retain(|_, t| {
            t.last_seen
                .is_some_and(|s| now.duration_since(s) < TOPIC_IDLE)
        });
        // a pipeline stays (its windows are open) while its node entry is read again
        self.nodes.retain(|_, (at, unit)| {
            at.elapsed()
                < if unit.is_some() {
                    FOUND_TTL
                } else {
                    MISSING_TTL
                }
        });
    }
}

/// Puts what a node's pipeline produced into the batch: a LastValue is the node's state,
/// rows are written with the batch.
fn emit(node: Uuid, out: Vec<Output>, batch: &mut IngestBatch) {
    for o in out {
        match o {
            Output::LastValue { state, .. } => {
                batch.node_values.insert(node, state);
            }
            Output::NRecords(r) => batch.pipe_rows.push(PipeRow::NRecords(r)),
            Output::TrimNRecords { keep } => batch.pipe_trims.push((node, keep)),
            Output::Window(r) => batch.pipe_rows.push(PipeRow::Window(r)),
            Output::Aggregation(r) => batch.pipe_rows.push(PipeRow::Aggregation(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::acks::Acks;
    use crate::service::unit_logs::NewUnitLog;

    fn work(lines: usize, broker: Option<&Arc<Acks>>) -> LogWork {
        let mut owed = Owed::default();
        if let Some(acks) = broker {
            let id = acks.receive(1, rumqttc::QoS::AtLeastOnce);
            owed.push(Some(Ack::new(acks.clone(), id)));
        }
        let line = NewUnitLog {
            uuid: Uuid::nil(),
            unit_uuid: Uuid::nil(),
            level: crate::domain::LogLevel::Info,
            text: "x".into(),
            create_datetime: String::new(),
            expiration_datetime: String::new(),
        };
        LogWork {
            write: LogWrite {
                lines: vec![line; lines],
                ..Default::default()
            },
            owed,
        }
    }

    const CLICKHOUSE: Grouping = Grouping {
        window: Duration::from_millis(250),
        max_lines: 100,
        broker_open: 10,
        broker_idle: Duration::from_millis(50),
    };

    /// Sends one work of `lines` lines after each pause (from the previous send), then
    /// closes the channel after `linger` ms.
    fn send_after(
        tx: mpsc::Sender<LogWork>,
        plan: Vec<(u64, usize)>,
        broker: Option<Arc<Acks>>,
        linger: u64,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for (pause, lines) in plan {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                tx.send(work(lines, broker.as_ref())).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(linger)).await;
        })
    }

    async fn group(rx: &mut mpsc::Receiver<LogWork>, g: Grouping) -> Option<(usize, Duration)> {
        let started = tokio::time::Instant::now();
        let mut works = Vec::new();
        gather(rx, &mut works, g).await.then(|| {
            (
                works.iter().map(|w| w.write.lines.len()).sum(),
                started.elapsed(),
            )
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_sql_store_writes_what_is_there_at_once() {
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        let _s = send_after(tx, vec![(0, 1), (10, 2)], None, 0);
        let sql = Grouping::for_store(None);
        assert_eq!(group(&mut rx, sql).await, Some((1, Duration::ZERO)));
        assert_eq!(
            group(&mut rx, sql).await,
            Some((2, Duration::from_millis(10)))
        );
        assert_eq!(group(&mut rx, sql).await, None, "closed and empty");
    }

    #[tokio::test(start_paused = true)]
    async fn clickhouse_lines_are_gathered_for_the_window() {
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        // arrivals at 0, 100, 200 and 300 ms: the first three make one write at 250 ms
        let _s = send_after(
            tx,
            vec![(0, 1), (100, 1), (100, 1), (100, 1), (400, 1)],
            None,
            0,
        );
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((3, Duration::from_millis(250)))
        );
        // the fourth opens the next window; the fifth (at 700 ms) is past it
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((1, Duration::from_millis(300)))
        );
        // a closed channel ends the window at once
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((1, Duration::from_millis(150)))
        );
        assert_eq!(group(&mut rx, CLICKHOUSE).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_group_is_written_early() {
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        let _s = send_after(tx, vec![(0, 60), (20, 39), (20, 1), (20, 5)], None, 0);
        // 60 + 39 lines wait; the 100th line makes the write at 40 ms
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((100, Duration::from_millis(40)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_brokers_window_is_not_exhausted() {
        let acks = Acks::new(Arc::new(MqttStats::default()));
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        // ten messages owed to the broker, 10 ms apart: the tenth makes the write
        let _s = send_after(tx, vec![(10, 1); 12], Some(acks.clone()), 0);
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((10, Duration::from_millis(100)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_broker_gets_its_acknowledgements() {
        let acks = Acks::new(Arc::new(MqttStats::default()));
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        // two messages, then nothing for 80 ms: written 50 ms after the last arrival
        let _s = send_after(tx, vec![(0, 1), (30, 1), (80, 1)], Some(acks.clone()), 1000);
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((2, Duration::from_millis(80)))
        );
        // without broker acknowledgements the window runs its course
        let (tx, mut rx) = mpsc::channel(LOG_WRITER_QUEUE);
        let _s = send_after(tx, vec![(0, 1), (30, 1), (80, 1)], None, 1000);
        assert_eq!(
            group(&mut rx, CLICKHOUSE).await,
            Some((3, Duration::from_millis(250)))
        );
    }

    #[test]
    fn one_topic_one_shard() {
        for n in [1, 2, 7] {
            let a = shard_of("example.com/output_base_topic/u/state/pepeunit", n);
            assert!(a < n);
            assert_eq!(
                a,
                shard_of("example.com/output_base_topic/u/state/pepeunit", n)
            );
        }
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| shard_of(&format!("d/{i}/pepeunit"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
