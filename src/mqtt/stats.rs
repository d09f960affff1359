//! Counters of the MQTT core, shared by the broker hooks, the dispatcher and the shards.
//! Plain relaxed atomics: they are read for reports, never used for decisions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use tokio::sync::mpsc::WeakSender;

use super::core::Message;
use utoipa::ToSchema;

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
    /// Log lines stored.
    logs_stored,
    /// Node values stored (after coalescing within a batch).
    node_values_stored,
    /// Database write batches and the messages they carried.
    batches,
    batch_errors,
    /// Broker side (embedded broker only): refused CONNECTs and ACL denials.
    connects_refused,
    subscribes_denied,
    publishes_denied,
    /// Times the backend connection to the broker was (re)established.
    backend_connects,
}

#[derive(Default)]
pub struct MqttStats {
    pub counters: Counters,
    pub backend_connected: AtomicBool,
    /// The broker acknowledged the core's subscriptions on the current connection: from then
    /// on a device's message has somewhere to go.
    pub backend_subscribed: AtomicBool,
    /// The shards' queues, held weakly so they never keep a stopping shard alive.
    pub(crate) queues: std::sync::Mutex<Vec<WeakSender<Message>>>,
}

impl MqttStats {
    /// Messages waiting in each shard's queue now (empty when the core is not running).
    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| {
                w.upgrade()
                    .map_or(0, |tx| tx.max_capacity() - tx.capacity())
            })
            .collect()
    }

    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
