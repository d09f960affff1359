//! Counters of the MQTT core, shared by the broker hooks, the dispatcher and the shards, and
//! the report `GET /metrics/mqtt` answers with. Plain relaxed atomics: they are read for
//! reports, never used for decisions. Nothing here knows the core's types: the shards'
//! queues are seen through depth probes the core registers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use utoipa::ToSchema;

/// How full one queue is now.
pub type QueueDepth = Box<dyn Fn() -> usize + Send + Sync>;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        #[derive(Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)+ }

        /// A point-in-time copy of [`Counters`].
        #[derive(Clone, Debug, Default, Serialize, ToSchema)]
        pub struct CountersSnapshot { $($(#[$doc])* pub $name: u64,)+ }

        impl Counters {
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Relaxed),)+ }
            }
        }
    };
}

counters! {
    /// Messages the dispatcher took from the broker.
    received,
    /// Messages a shard finished (stored, throttled or refused).
    processed,
    /// Times a shard queue was full when the dispatcher offered a message (it then waited).
    queue_full,
    /// Payloads larger than `PU_MQTT_MAX_PAYLOAD_SIZE`, dropped.
    oversized,
    /// Messages on topics the core does not handle (e.g. the backend's own commands).
    ignored,
    /// Messages refused by validation (bad JSON, unknown unit or node, wrong shape).
    invalid,
    /// `state` messages stored.
    states_stored,
    /// `state` messages dropped by the `PU_STATE_SEND_INTERVAL` throttle.
    states_throttled,
    /// Messages over their topic's limit (`PU_THROTTLE_RULES`, SPEC §8), dropped where they
    /// entered: the embedded broker's publish hook, or the shards with an external broker.
    throttled,
    /// Log lines stored.
    logs_stored,
    /// Writes of log lines to the log store (one transaction, or one ClickHouse INSERT).
    log_writes,
    /// Node values stored (after coalescing within a batch).
    node_values_stored,
    /// Node values a data pipe accepted / dropped (its filters, rate, size, bounds).
    pipe_values_accepted,
    pipe_values_dropped,
    /// Rows data pipes produced (NRecords values, TimeWindow entries, closed aggregation
    /// windows) that were stored.
    pipe_rows_stored,
    /// Database write batches and the messages they carried.
    batches,
    batch_errors,
    /// Broker side (embedded broker only): refused CONNECTs and ACL denials.
    connects_refused,
    subscribes_denied,
    publishes_denied,
    /// Times the backend connection to the broker was (re)established.
    backend_connects,
    /// QoS 1 messages acknowledged to the broker (after their effects were committed).
    acked,
    /// Messages the broker delivered again (DUP flag): unacknowledged when a connection ended.
    redelivered,
    /// Times the core dropped its connection to have unacknowledged messages delivered again
    /// (a batch not stored, an acknowledgement not queued, a message stuck in the core).
    redeliveries_requested,
    /// Log lines of redelivered messages found already stored, and not stored again.
    log_duplicates_skipped,
    /// Log lines of redelivered messages without a device timestamp: they have no key, so
    /// one may be a second copy of a line stored before (the bound of duplicates).
    log_lines_unkeyed_redelivered,
}

/// The running data pipes, summed over the shards (each shard adds the change of its own
/// figures once a second, so the sums stay right without a lock).
#[derive(Default)]
pub struct PipeGauges {
    pub active: AtomicU64,
    /// The pipelines' own accounting of their memory (`Pipeline::memory_bytes`: config,
    /// last value, open window buckets), not counting the shards' maps.
    pub memory_bytes: AtomicU64,
}

/// What [`PipeGauges`] read now.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct PipeGaugesSnapshot {
    /// Data pipes running in the shards.
    pub active: u64,
    /// Their memory, by their own accounting.
    pub memory_bytes: u64,
}

impl PipeGauges {
    /// Moves the sums from what one shard reported last (`before`) to what it has now.
    pub fn report(&self, before: (u64, u64), now: (u64, u64)) {
        self.active.fetch_add(now.0.wrapping_sub(before.0), Relaxed);
        self.memory_bytes
            .fetch_add(now.1.wrapping_sub(before.1), Relaxed);
    }

    pub fn snapshot(&self) -> PipeGaugesSnapshot {
        PipeGaugesSnapshot {
            active: self.active.load(Relaxed),
            memory_bytes: self.memory_bytes.load(Relaxed),
        }
    }
}

#[derive(Default)]
pub struct MqttStats {
    pub counters: Counters,
    pub pipes: PipeGauges,
    pub backend_connected: AtomicBool,
    /// The broker acknowledged the core's subscriptions on the current connection: from then
    /// on a device's message has somewhere to go.
    pub backend_subscribed: AtomicBool,
    /// The shards' queue depths (the core's probes hold its queues weakly, so they never
    /// keep a stopping shard alive).
    queues: std::sync::Mutex<Vec<QueueDepth>>,
}

/// What `GET /metrics/mqtt` reports.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct MqttReport {
    pub mode: String,
    pub backend_connected: bool,
    pub shards: usize,
    pub shard_queue_capacity: usize,
    /// Messages waiting in each shard's queue now.
    pub queue_depths: Vec<usize>,
    pub counters: CountersSnapshot,
    /// Data pipes running now and their memory.
    pub pipes: PipeGaugesSnapshot,
}

impl MqttStats {
    /// Messages waiting in each shard's queue now (empty when the core is not running).
    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|depth| depth())
            .collect()
    }

    /// Replaces the queues whose depths are reported (the core calls it when it starts).
    pub fn set_queues(&self, queues: Vec<QueueDepth>) {
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) = queues;
    }

    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
