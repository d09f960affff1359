//! At least once, end to end: the backend acknowledges a QoS 1 message to the broker only after
//! its effects are committed, and in the order the messages arrived (MQTT 3.1.1 §4.6).
//!
//! The ingest connection ([`super::subscriber`]) gives every QoS 1 message a slot
//! ([`Acks::receive`]); the shard that handles it completes the slot after the batch holding it
//! is committed ([`Acks::complete`]), and the acknowledgements of the longest completed prefix
//! become due: the connection writes them together, in one write. A message whose batch
//! could not be stored ([`Acks::fail`]) or a slot left open too long (a shard lost the batch
//! it held) makes the connection drop ([`Acks::redelivery_wanted`]): the broker keeps the persistent session and delivers every
//! unacknowledged message again, flagged DUP. What was committed before the crash or failure is
//! not stored twice: log lines carry keys (see `crate::service::ingest`), states and node values
//! are last-value writes.
//!
//! Slots belong to one connection (an epoch): packet ids mean nothing on the next connection,
//! so completions of an older epoch are ignored (those messages come again).
//!
//! With the embedded broker there is no such connection: the broker's publish hook hands a
//! device's message to the shards itself and holds the device's PUBACK until the batch is
//! committed ([`Ack::Device`]), so PUBACK means "committed" there too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::{oneshot, Notify};

use crate::observe::mqtt::MqttStats;

/// A message's slot: which connection it came on and its place in arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckId {
    epoch: u64,
    seq: u64,
}

/// A slot left open this long means its message is lost inside the core (a shard panicked
/// with the batch in hand): ask for redelivery.
pub const STALL: Duration = Duration::from_secs(120);

struct Slot {
    pkid: u16,
    qos: QoS,
    done: bool,
    since: Instant,
}

struct Queue {
    epoch: u64,
    /// The sequence number of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot>,
    /// Acknowledgements due, in order, for the connection to write (packet id, QoS).
    due: Vec<(u16, QoS)>,
}

/// The acknowledgement queue of the backend's broker connection. One per MQTT core.
pub struct Acks {
    queue: Mutex<Queue>,
    redeliver: Notify,
    /// Wakes the connection when acknowledgements are due.
    write: Notify,
    stats: Arc<MqttStats>,
}

impl Acks {
    pub fn new(stats: Arc<MqttStats>) -> Arc<Acks> {
        Arc::new(Acks {
            queue: Mutex::new(Queue {
                epoch: 0,
                first: 0,
                slots: VecDeque::new(),
                due: Vec::new(),
            }),
            redeliver: Notify::new(),
            write: Notify::new(),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection is gone, or a new one starts: open slots are forgotten (the broker
    /// delivers their messages again) and nothing is acknowledged on the new connection for
    /// the old one.
    pub fn new_connection(&self) {
        let mut q = self.lock();
        q.epoch += 1;
        q.first = 0;
        q.slots.clear();
        q.due.clear();
    }

    /// A QoS 1 (or 2) message arrived with packet id `pkid`.
    pub fn receive(&self, pkid: u16, qos: QoS) -> AckId {
        let mut q = self.lock();
        let seq = q.first + q.slots.len() as u64;
        q.slots.push_back(Slot {
            pkid,
            qos,
            done: false,
            since: Instant::now(),
        });
        AckId {
            epoch: q.epoch,
            seq,
        }
    }

    /// These messages' effects are committed (or they were refused for good): acknowledge
    /// every message up to the first one still open.
    pub fn complete(&self, ids: impl IntoIterator<Item = AckId>) {
        let mut q = self.lock();
        let (epoch, first) = (q.epoch, q.first);
        for id in ids {
            if id.epoch != epoch || id.seq < first {
                continue;
            }
            if let Some(slot) = q.slots.get_mut((id.seq - first) as usize) {
                slot.done = true;
            }
        }
        let mut acked = 0;
        while q.slots.front().is_some_and(|s| s.done) {
            let slot = q.slots.pop_front().expect("front exists");
            q.first += 1;
            acked += 1;
            q.due.push((slot.pkid, slot.qos));
        }
        drop(q);
        if acked > 0 {
            self.stats.add(&self.stats.counters.acked, acked);
            self.write.notify_one();
        }
    }

    /// Resolves when acknowledgements are due ([`Acks::take_due`]).
    pub async fn due(&self) {
        self.write.notified().await
    }

    /// The acknowledgements due, in arrival order, for the connection to write at once.
    pub fn take_due(&self) -> Vec<(u16, QoS)> {
        std::mem::take(&mut self.lock().due)
    }

    /// These messages' effects could not be stored: the broker must deliver them again.
    pub fn fail(&self, ids: &[AckId]) {
        let epoch = self.lock().epoch;
        if ids.iter().any(|id| id.epoch == epoch) {
            self.want_redelivery();
        }
    }

    fn want_redelivery(&self) {
        self.stats
            .add(&self.stats.counters.redeliveries_requested, 1);
        self.redeliver.notify_one();
    }

    /// Resolves when the connection should be dropped so that the broker delivers the
    /// unacknowledged messages again.
    pub async fn redelivery_wanted(&self) {
        self.redeliver.notified().await
    }

    /// How long the oldest open slot has waited (zero when none is open).
    pub fn oldest_open(&self) -> Duration {
        self.lock()
            .slots
            .iter()
            .find(|s| !s.done)
            .map_or(Duration::ZERO, |s| s.since.elapsed())
    }

    /// Slots waiting for their commit or for an earlier one (the window the broker has sent).
    pub fn open(&self) -> usize {
        self.lock().slots.len()
    }
}

/// What a QoS 1 message owes whoever sent it, paid once its effects are committed.
pub enum Ack {
    /// A slot of the ingest connection to an external broker ([`Acks`]).
    Broker { acks: Arc<Acks>, id: AckId },
    /// A device's publish held in the embedded broker's publish path ([`super::broker`]):
    /// its PUBACK waits for `true` (committed); `false` or a dropped sender means not stored.
    Device(oneshot::Sender<bool>),
}

impl Ack {
    pub fn new(acks: Arc<Acks>, id: AckId) -> Ack {
        Ack::Broker { acks, id }
    }

    /// Settles one message on its own (refused for good, e.g. oversized).
    pub fn settle(self) {
        let mut owed = Owed::default();
        owed.push(Some(self));
        owed.settle();
    }
}

/// The acknowledgements owed for one batch: settled together after its commit.
#[derive(Default)]
pub struct Owed {
    acks: Option<Arc<Acks>>,
    ids: Vec<AckId>,
    devices: Vec<oneshot::Sender<bool>>,
}

impl Owed {
    pub fn push(&mut self, ack: Option<Ack>) {
        match ack {
            Some(Ack::Broker { acks, id }) => {
                self.acks.get_or_insert(acks);
                self.ids.push(id);
            }
            Some(Ack::Device(tx)) => self.devices.push(tx),
            None => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.devices.is_empty()
    }

    /// With broker acknowledgements owed: how many of the broker connection's messages are
    /// unacknowledged now (the broker stops sending at its in-flight window).
    pub fn broker_open(&self) -> Option<usize> {
        self.acks
            .as_ref()
            .filter(|_| !self.ids.is_empty())
            .map(|a| a.open())
    }

    /// Takes over another batch's debts (the log writer merges shard batches).
    pub fn merge(&mut self, other: Owed) {
        if let Some(acks) = other.acks {
            self.acks.get_or_insert(acks);
        }
        self.ids.extend(other.ids);
        self.devices.extend(other.devices);
    }

    /// Everything is committed: acknowledge.
    pub fn settle(self) {
        if let Some(acks) = &self.acks {
            acks.complete(self.ids.iter().copied());
        }
        self.answer_devices(true);
    }

    /// Not stored: the broker delivers these messages again (or the devices send them again).
    pub fn fail(self) {
        if let Some(acks) = &self.acks {
            acks.fail(&self.ids);
        }
        self.answer_devices(false);
    }

    fn answer_devices(self, committed: bool) {
        for tx in self.devices {
            // a device gone meanwhile (kicked, disconnected) sends again after reconnecting
            let _ = tx.send(committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks() -> Arc<Acks> {
        Acks::new(Arc::new(MqttStats::default()))
    }

    #[test]
    fn acknowledged_in_arrival_order() {
        let a = acks();
        let ids: Vec<AckId> = (1..=4).map(|p| a.receive(p, QoS::AtLeastOnce)).collect();
        a.complete([ids[1], ids[3]]);
        assert_eq!(a.open(), 4, "the first is still open: nothing goes out");
        a.complete([ids[0]]);
        assert_eq!(
            a.open(),
            2,
            "1 and 2 acknowledged, 3 still open (4 waits for it)"
        );
        a.complete([ids[2]]);
        assert_eq!(a.open(), 0);
        assert_eq!(
            a.stats
                .counters
                .acked
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }

    #[test]
    fn completions_of_an_older_connection_are_ignored() {
        let a = acks();
        let old = a.receive(7, QoS::AtLeastOnce);
        a.new_connection();
        let new = a.receive(7, QoS::AtLeastOnce);
        a.complete([old]);
        assert_eq!(a.open(), 1, "the old slot does not complete the new one");
        a.complete([new]);
        assert_eq!(a.open(), 0);
    }

    #[tokio::test]
    async fn a_failure_asks_for_redelivery_once_per_connection() {
        let a = acks();
        let id = a.receive(1, QoS::AtLeastOnce);
        a.fail(&[id]);
        tokio::time::timeout(Duration::from_secs(1), a.redelivery_wanted())
            .await
            .expect("redelivery asked");
        a.new_connection();
        a.fail(&[id]);
        assert_eq!(
            a.stats
                .counters
                .redeliveries_requested
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "a failure of an older connection needs no new redelivery"
        );
    }
}
