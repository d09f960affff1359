//! The node's self-observation (SPEC §6): requests by channel with rates, CPU and memory of the
//! process and the machine, the error tracker and throttled crash alerts for the admins.
//!
//! [`Node`] is per instance and held by `Instance`; a sampler task (`Node::run_sampler`,
//! started by `RunningInstance`) takes the periodic samples behind rates and CPU percentages
//! and sends due alert summaries. Nothing here blocks a caller for long or grows without bound.

pub mod alerts;
pub mod errors;
pub mod feed;
pub mod mqtt;
pub mod prometheus;
pub mod rates;
pub mod system;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

pub use alerts::AdminAlert;
pub use errors::ErrorReport;
pub use feed::ProcessFeed;
use system::{CpuSampler, MachineReport, ProcTexts, ProcessReport};

use mqtt::MqttStats;

/// How often the sampler runs.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Error kinds kept by the tracker.
const MAX_ERROR_KINDS: usize = 500;
/// Pause before a panicked worker is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);
/// Alerts kept for a slow (or absent) consumer; older ones are dropped first.
const ALERT_BUFFER: usize = 64;

/// Where a request reached the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Device messages the MQTT core took from the broker (read from `MqttStats::received`).
    Mqtt,
    /// No GraphQL front door exists yet: stays 0.
    Graphql,
    /// Every HTTP request except ActivityPub's routes.
    Rest,
    /// Updates handled by the Telegram bot (it calls [`Node::count`]).
    Telegram,
    /// WebFinger, NodeInfo, actors, collections and inboxes.
    Activitypub,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Mqtt,
        Channel::Graphql,
        Channel::Rest,
        Channel::Telegram,
        Channel::Activitypub,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mqtt => "mqtt",
            Channel::Graphql => "graphql",
            Channel::Rest => "rest",
            Channel::Telegram => "telegram",
            Channel::Activitypub => "activitypub",
        }
    }
}

const CHANNELS: usize = Channel::ALL.len();

/// Requests of one channel.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChannelReport {
    pub total: u64,
    /// Requests per second over the last minute and the last 5 minutes.
    pub rate_1m: f64,
    pub rate_5m: f64,
}

/// What `GET /metrics/node` reports.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NodeReport {
    /// By channel name: mqtt, graphql, rest, telegram, activitypub.
    pub channels: BTreeMap<String, ChannelReport>,
    pub process: ProcessReport,
    pub machine: MachineReport,
    /// Error kinds tracked now (at most 500) and the listed ones.
    pub error_kinds: usize,
    pub errors: Vec<ErrorReport>,
    /// Crash alerts produced, and those dropped because nobody took them in time.
    pub alerts_sent: u64,
    pub alerts_dropped: u64,
    pub mqtt: mqtt::MqttReport,
}

/// This instance's self-observation. Cheap to clone.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

struct Inner {
    started: Instant,
    counts: [AtomicU64; CHANNELS],
    mqtt: Arc<MqttStats>,
    rates: Mutex<rates::Rates<CHANNELS>>,
    cpu: Mutex<CpuSampler>,
    errors: Mutex<errors::ErrorTracker>,
    throttle: Mutex<alerts::AlertThrottle>,
    alerts: broadcast::Sender<AdminAlert>,
    /// Buffers alerts from the start until [`Node::admin_alerts`] takes it.
    first_receiver: Mutex<Option<broadcast::Receiver<AdminAlert>>>,
    alerts_sent: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

impl Node {
    pub fn new(mqtt: Arc<MqttStats>, crash_alert_interval: Duration) -> Node {
        let (alerts, first) = broadcast::channel(ALERT_BUFFER);
        Node(Arc::new(Inner {
            started: Instant::now(),
            counts: Default::default(),
            mqtt,
            rates: Mutex::new(rates::Rates::new(Duration::from_secs(300))),
            cpu: Mutex::default(),
            errors: Mutex::new(errors::ErrorTracker::new(MAX_ERROR_KINDS)),
            throttle: Mutex::new(alerts::AlertThrottle::new(crash_alert_interval)),
            alerts,
            first_receiver: Mutex::new(Some(first)),
            alerts_sent: AtomicU64::new(0),
        }))
    }

    /// One request reached the backend over `channel`.
    pub fn count(&self, channel: Channel) {
        self.0.counts[channel as usize].fetch_add(1, Relaxed);
    }

    /// Totals by channel, in [`Channel::ALL`] order.
    pub fn totals(&self) -> [u64; CHANNELS] {
        let mut t: [u64; CHANNELS] = std::array::from_fn(|i| self.0.counts[i].load(Relaxed));
        t[Channel::Mqtt as usize] += self.0.mqtt.counters.received.load(Relaxed);
        t
    }

    /// Records an error of `kind` (a short stable key) in the tracker.
    pub fn error(&self, kind: &str, detail: &str) {
        lock(&self.0.errors).record(kind, detail, now());
    }

    /// Errors, most frequent first (`ascending`: least frequent first), `limit` 0 = all.
    pub fn errors(&self, ascending: bool, limit: usize) -> Vec<ErrorReport> {
        lock(&self.0.errors).list(ascending, limit)
    }

    /// A crash (panic, failed task, lost broker connection): tracked as an error and sent to
    /// the admins as an alert, throttled per kind by `PU_CRASH_ALERT_INTERVAL`.
    pub fn crash(&self, kind: &str, detail: &str) {
        let at = now();
        lock(&self.0.errors).record(kind, detail, at);
        let alert = lock(&self.0.throttle).record(kind, detail, at);
        if let Some(alert) = alert {
            self.send(alert);
        }
    }

    /// [`Node::crash`] from the panic hook: never waits for a lock (the panic may have
    /// happened while one was held on this thread).
    fn panicked(&self, kind: &str, detail: &str) {
        let at = now();
        if let Ok(mut errors) = self.0.errors.try_lock() {
            errors.record(kind, detail, at);
        }
        let alert = match self.0.throttle.try_lock() {
            Ok(mut t) => t.record(kind, detail, at),
            Err(_) => None,
        };
        if let Some(alert) = alert {
            self.send(alert);
        }
    }

    fn send(&self, alert: AdminAlert) {
        self.0.alerts_sent.fetch_add(1, Relaxed);
        // no receiver left: the alert is dropped, which is all there is to do
        let _ = self.0.alerts.send(alert);
    }

    /// The crash alerts for the admins. The first call gets every alert since the start (at
    /// most the last 64); later calls get those from then on. A receiver that falls more than
    /// 64 behind gets `RecvError::Lagged(n)`: the n oldest were dropped.
    pub fn admin_alerts(&self) -> broadcast::Receiver<AdminAlert> {
        lock(&self.0.first_receiver)
            .take()
            .unwrap_or_else(|| self.0.alerts.subscribe())
    }

    /// Alerts dropped (oldest first) while nobody has taken the receiver yet; afterwards the
    /// consumer learns of drops from `RecvError::Lagged`.
    fn alerts_dropped(&self) -> u64 {
        let sent = self.0.alerts_sent.load(Relaxed);
        lock(&self.0.first_receiver)
            .as_ref()
            // `len` counts every unreceived alert, also those already overwritten
            .map_or(0, |r| sent.saturating_sub(r.len().min(ALERT_BUFFER) as u64))
    }

    /// Runs `task`; a panic becomes a crash alert ("task <name> panicked") and then continues
    /// unwinding, so the task's `JoinHandle` still reports it. When the process's panic hook
    /// (see [`feed`]) has already alerted about this panic, the task's name is only recorded in
    /// the error tracker: one panic, one alert.
    pub async fn supervise<F: Future>(self, name: &'static str, task: F) -> F::Output {
        match AssertUnwindSafe(task).catch_unwind().await {
            Ok(out) => out,
            Err(payload) => {
                self.caught_panic(&format!("task {name} panicked"), &*payload);
                std::panic::resume_unwind(payload)
            }
        }
    }

    /// Runs the future `make` returns; after a panic (a crash alert, "task <name> panicked
    /// (restarted)") runs a new one from `make`, until one returns. For long-lived workers
    /// whose state can be rebuilt (the MQTT shards, the log writer): what the panicking one
    /// held in hand is lost, the rest carries on.
    pub async fn supervise_restarting<F, Fut>(self, name: &'static str, mut make: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            match AssertUnwindSafe(make()).catch_unwind().await {
                Ok(()) => return,
                Err(payload) => {
                    self.caught_panic(&format!("task {name} panicked (restarted)"), &*payload)
                }
            }
            // a fault that repeats at once must not spin a core
            tokio::time::sleep(RESTART_PAUSE).await;
        }
    }

    /// A panic caught with `catch_unwind` on this thread: a crash alert of `kind`, or only an
    /// error-tracker entry when the panic hook has alerted about it already.
    pub fn caught_panic(&self, kind: &str, payload: &(dyn std::any::Any + Send)) {
        let message = panic_message(payload);
        if feed::take_hook_reported() {
            self.error(kind, &message);
        } else {
            self.crash(kind, &message);
        }
    }

    /// Takes a sample every few seconds (rates, CPU) and sends due alert summaries, until
    /// `stop` changes.
    pub async fn run_sampler(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            self.sample(&ProcTexts::read());
        }
    }

    fn sample(&self, texts: &ProcTexts) {
        lock(&self.0.rates).push(self.0.started.elapsed(), self.totals());
        lock(&self.0.cpu).sample(texts);
        let due = lock(&self.0.throttle).due(now());
        for alert in due {
            self.send(alert);
        }
    }

    /// Everything but the MQTT part of the report; errors as in [`Node::errors`].
    pub fn report(&self, mqtt: mqtt::MqttReport, ascending: bool, limit: usize) -> NodeReport {
        let totals = self.totals();
        let channels = {
            let rates = lock(&self.0.rates);
            Channel::ALL
                .iter()
                .map(|&c| {
                    let i = c as usize;
                    let report = ChannelReport {
                        total: totals[i],
                        rate_1m: rates.rate(i, Duration::from_secs(60)),
                        rate_5m: rates.rate(i, Duration::from_secs(300)),
                    };
                    (c.as_str().to_string(), report)
                })
                .collect()
        };
        let (process, machine) = system::reports(
            &ProcTexts::read(),
            &lock(&self.0.cpu),
            self.0.started.elapsed().as_secs(),
        );
        let errors = lock(&self.0.errors);
        NodeReport {
            channels,
            process,
            machine,
            error_kinds: errors.len(),
            errors: errors.list(ascending, limit),
            alerts_sent: self.0.alerts_sent.load(Relaxed),
            alerts_dropped: self.alerts_dropped(),
            mqtt,
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic payload)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node::new(Arc::default(), Duration::from_secs(300))
    }

    #[test]
    fn channels_count_and_mqtt_comes_from_the_core() {
        let n = node();
        n.count(Channel::Rest);
        n.count(Channel::Rest);
        n.count(Channel::Telegram);
        n.0.mqtt.counters.received.fetch_add(5, Relaxed);
        assert_eq!(n.totals(), [5, 0, 2, 1, 0]);
    }

    #[tokio::test]
    async fn crashes_become_alerts_and_panicking_tasks_are_reported() {
        let n = node();
        n.crash("mqtt connection lost", "refused");
        n.crash("mqtt connection lost", "refused again");
        let task = tokio::spawn(n.clone().supervise("poller", async { panic!("boom") }));
        assert!(
            task.await.unwrap_err().is_panic(),
            "the panic still reaches the handle"
        );
        let mut rx = n.admin_alerts();
        let a = rx.try_recv().unwrap();
        assert_eq!((a.kind.as_str(), a.count), ("mqtt connection lost", 1));
        let b = rx.try_recv().unwrap();
        assert_eq!(b.text, "task poller panicked: boom");
        assert!(
            rx.try_recv().is_err(),
            "the second loss is held by the throttle"
        );
        let errors = n.errors(false, 0);
        assert_eq!(errors[0].kind, "mqtt connection lost");
        assert_eq!(errors[0].count, 2);
    }

    #[tokio::test]
    async fn a_restarting_worker_runs_again_after_a_panic() {
        let n = node();
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        n.clone()
            .supervise_restarting("shard", move || {
                let r = r.clone();
                async move {
                    if r.fetch_add(1, Relaxed) < 2 {
                        panic!("poison message");
                    }
                }
            })
            .await;
        assert_eq!(runs.load(Relaxed), 3, "two panics, then a normal return");
        let mut rx = n.admin_alerts();
        let a = rx.try_recv().unwrap();
        assert_eq!(a.text, "task shard panicked (restarted): poison message");
        assert!(
            rx.try_recv().is_err(),
            "the second panic is held by the throttle"
        );
        let errors = n.errors(false, 0);
        assert_eq!(errors[0].count, 2, "{errors:?}");
    }

    #[test]
    fn unconsumed_alerts_stay_bounded() {
        let n = node();
        for i in 0..200 {
            n.crash(&format!("kind {i}"), "x");
        }
        let report = n.report(mqtt::MqttReport::default(), false, 3);
        assert_eq!(report.alerts_sent, 200);
        assert_eq!(report.alerts_dropped, 200 - ALERT_BUFFER as u64);
        assert_eq!(report.errors.len(), 3);
        assert_eq!(report.error_kinds, 200);
        let mut rx = n.admin_alerts();
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
