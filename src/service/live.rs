//! Live feeds for watchers (GraphQL subscriptions): a unit's reported state, its log lines and a
//! node's values, published by the ingest path once they are committed.
//!
//! One bounded broadcast channel per watched unit or node, created by the first watcher and
//! dropped with the last, so the ingest path pays one map lookup per committed item while
//! someone watches anything and nothing otherwise. A watcher that falls `CAPACITY` events
//! behind is told so (`Lagged`) and dropped by its front door: memory never grows with a slow
//! reader. Access can change while a feed runs (a grant revoked, visibility raised, a user
//! blocked, a unit deleted): every such write bumps [`Live::access_changed`], and watchers
//! check their access again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::unit_logs::NewUnitLog;

/// Events a watcher of one key may miss before it is dropped.
pub const CAPACITY: usize = 256;
/// Watchers at once on the whole instance; more are refused.
pub const MAX_WATCHERS: usize = 10_000;

/// One committed item.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// A unit's reported state (the JSON text the device sent) at `at`.
    UnitState {
        unit: Uuid,
        state: Arc<str>,
        commit: Arc<str>,
        at: Arc<str>,
    },
    /// One log line of a unit.
    Log(Arc<NewUnitLog>),
    /// A node's value; within one ingest batch (a few milliseconds) a node's last value.
    NodeValue {
        node: Uuid,
        value: Arc<str>,
        at: Arc<str>,
    },
}

/// The hub: cheap to clone.
#[derive(Clone)]
pub struct Live {
    feeds: Arc<Mutex<HashMap<Uuid, broadcast::Sender<LiveEvent>>>>,
    watchers: Arc<AtomicUsize>,
    access: Arc<watch::Sender<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            feeds: Default::default(),
            watchers: Default::default(),
            access: Arc::new(watch::channel(0).0),
        }
    }
}

/// A watcher's handle: its events, and a signal when access rules changed anywhere. Dropping it
/// frees its place.
pub struct Watch {
    pub events: broadcast::Receiver<LiveEvent>,
    pub access: watch::Receiver<u64>,
    key: Uuid,
    live: Live,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.live.watchers.fetch_sub(1, Ordering::Relaxed);
        // the last watcher of a key takes its feed (and the events it holds) with it
        let mut feeds = self.live.feeds.lock().expect("live feeds lock");
        if feeds
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            feeds.remove(&self.key);
        }
    }
}

impl Live {
    /// Starts watching a unit (state, logs) or a node (values); `None` when the instance
    /// already serves [`MAX_WATCHERS`].
    pub fn watch(&self, key: Uuid) -> Option<Watch> {
        if self.watchers.fetch_add(1, Ordering::Relaxed) >= MAX_WATCHERS {
            self.watchers.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let mut feeds = self.feeds.lock().expect("live feeds lock");
        let events = feeds
            .entry(key)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Some(Watch {
            events,
            access: self.access.subscribe(),
            key,
            live: self.clone(),
        })
    }

    /// How many watchers are connected.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Sends `event()` to the watchers of `key`, if any (the event is built only then).
    pub fn publish(&self, key: Uuid, event: impl FnOnce() -> LiveEvent) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut feeds = self.feeds.lock().expect("live feeds lock");
        if let Some(tx) = feeds.get(&key) {
            if tx.receiver_count() == 0 || tx.send(event()).is_err() {
                feeds.remove(&key);
            }
        }
    }

    /// Several events at once under one lock (a batch's log lines).
    pub fn publish_many<'a, T: 'a>(
        &self,
        items: impl IntoIterator<Item = &'a T>,
        key: impl Fn(&T) -> Uuid,
        event: impl Fn(&T) -> LiveEvent,
    ) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut feeds = self.feeds.lock().expect("live feeds lock");
        for item in items {
            let k = key(item);
            if let Some(tx) = feeds.get(&k) {
                if tx.receiver_count() == 0 || tx.send(event(item)).is_err() {
                    feeds.remove(&k);
                }
            }
        }
    }

    /// Tells watchers that who may see what has changed; each checks its access again.
    pub fn access_changed(&self) {
        self.access.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(node: Uuid, v: &str) -> LiveEvent {
        LiveEvent::NodeValue {
            node,
            value: v.into(),
            at: "t".into(),
        }
    }

    #[tokio::test]
    async fn a_watcher_gets_its_keys_events_only() {
        let live = Live::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut w = live.watch(a).unwrap();
        live.publish(b, || value(b, "other"));
        live.publish(a, || value(a, "mine"));
        match w.events.recv().await.unwrap() {
            LiveEvent::NodeValue { value, .. } => assert_eq!(&*value, "mine"),
            other => panic!("{other:?}"),
        }
        assert!(w.events.try_recv().is_err());
    }

    #[tokio::test]
    async fn nothing_is_built_without_watchers_and_feeds_go_with_the_last_watcher() {
        let live = Live::default();
        let a = Uuid::new_v4();
        live.publish(a, || panic!("built without a watcher"));
        let w = live.watch(a).unwrap();
        assert_eq!(live.watchers(), 1);
        drop(w);
        assert_eq!(live.watchers(), 0);
        assert!(
            live.feeds.lock().unwrap().is_empty(),
            "the feed left with its watcher"
        );
        live.publish(a, || panic!("built after the last watcher left"));
        // a second watcher of another key: nothing is built for the left one either
        let _w2 = live.watch(Uuid::new_v4()).unwrap();
        live.publish(a, || panic!("built for a key nobody watches"));
        // two watchers of one key: the feed stays until the second leaves
        let (x, y) = (live.watch(a).unwrap(), live.watch(a).unwrap());
        drop(x);
        assert!(live.feeds.lock().unwrap().contains_key(&a));
        drop(y);
        assert!(!live.feeds.lock().unwrap().contains_key(&a));
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_instead_of_growing() {
        let live = Live::default();
        let a = Uuid::new_v4();
        let mut w = live.watch(a).unwrap();
        for i in 0..(CAPACITY + 10) {
            live.publish(a, || value(a, &i.to_string()));
        }
        match w.events.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn access_changes_reach_every_watcher() {
        let live = Live::default();
        let mut w = live.watch(Uuid::new_v4()).unwrap();
        live.access_changed();
        w.access.changed().await.unwrap();
        assert_eq!(*w.access.borrow(), 1);
    }
}
