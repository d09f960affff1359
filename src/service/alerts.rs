//! Alerts (SPEC §4): a unit's log line at or above the unit's alert level goes to its owner's
//! Telegram, at most one message per unit every `PU_TELEGRAM_ALERT_INTERVAL` seconds.
//!
//! Lines enter through [`Alerts::offer`] from exactly one source, so no line is alerted twice:
//! the MQTT core's shards (embedded broker, or an external broker without EMQX's API) or, with
//! EMQX, the Rule Engine's HTTP action posting to `POST /units/alerts/emqx` (then the shards
//! stay silent; EMQX retries are recognised by message id). One task ([`run_alerts`]) applies
//! the per-unit [`Throttle`] and sends: a line that may go out now goes out with a summary of
//! what was held back before it; held lines are summarised once the interval has passed even
//! when no new line comes. Alerts live in memory: a normal stop sends every held summary at
//! once (the task stops after the MQTT core has drained); a crash loses the summary of the
//! lines still held (the log store keeps every line).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::{self, LogLevel, Topic};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::units::Unit;

/// Lines waiting for the alert task; beyond this a flood is counted and dropped.
const QUEUE: usize = 10_000;
/// Message ids of EMQX deliveries remembered to drop retries.
const SEEN_IDS: usize = 20_000;
/// Messages sent to Telegram at once.
const CONCURRENT_SENDS: usize = 8;
/// Longest mute accepted: ten years.
const MAX_MUTE_SECS: i64 = 10 * 365 * 86_400;
// `UnitAlertsUpdate::mute_seconds` documents this bound as a literal.
const _: () = assert!(MAX_MUTE_SECS == 315_360_000);

/// One log line that crossed its unit's alert level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertLine {
    pub unit: Uuid,
    pub level: LogLevel,
    pub text: String,
    /// When the line was received (format of [`domain::format_time`]).
    pub at: String,
}

/// Counters of the alert pipeline (part of `GET /metrics/node`'s neighbour, `/metrics/alerts`).
#[derive(Debug, Default)]
pub struct AlertCounters {
    pub offered: AtomicU64,
    pub sent: AtomicU64,
    pub held: AtomicU64,
    /// Dropped because the queue was full (a flood faster than the task).
    pub dropped: AtomicU64,
    /// The owner has no linked Telegram chat, or the unit is gone or muted.
    pub undeliverable: AtomicU64,
    /// Telegram refused or could not be reached after retries.
    pub failed: AtomicU64,
    /// EMQX redeliveries recognised and dropped.
    pub duplicates: AtomicU64,
}

/// A snapshot of [`AlertCounters`].
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AlertReport {
    pub enabled: bool,
    pub source: &'static str,
    pub interval_secs: u64,
    pub offered: u64,
    pub sent: u64,
    pub held: u64,
    pub dropped: u64,
    pub undeliverable: u64,
    pub failed: u64,
    pub duplicates: u64,
}

/// The entry of the alert pipeline; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    enabled: bool,
    tx: mpsc::Sender<AlertLine>,
    rx: Arc<Mutex<Option<mpsc::Receiver<AlertLine>>>>,
    seen: Arc<Mutex<SeenIds>>,
    /// Whether EMQX carries our alert rule (set by the broker-config worker).
    emqx_rule: Arc<AtomicBool>,
    pub counters: Arc<AlertCounters>,
}

impl Alerts {
    /// `enabled`: a Telegram bot is configured (otherwise offers are ignored at once).
    pub fn new(enabled: bool) -> Alerts {
        let (tx, rx) = mpsc::channel(QUEUE);
        Alerts {
            enabled,
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            seen: Arc::default(),
            emqx_rule: Arc::default(),
            counters: Arc::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The flag the EMQX worker sets while EMQX carries our alert rule.
    pub fn emqx_rule_flag(&self) -> Arc<AtomicBool> {
        self.emqx_rule.clone()
    }

    /// Hands a line to the alert task without waiting.
    pub fn offer(&self, line: AlertLine) {
        if !self.enabled {
            return;
        }
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(line).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True the first time `id` is seen (among the last [`SEEN_IDS`]).
    fn first_delivery(&self, id: &str) -> bool {
        let fresh = self.seen.lock().expect("seen ids").insert(id);
        if !fresh {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }
}

/// A bounded set of recent ids, oldest forgotten first.
#[derive(Default)]
struct SeenIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenIds {
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == SEEN_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// Lines held back for one unit since its last message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub count: u64,
    /// Counts per level, in [`LogLevel::rank`] order.
    pub by_level: [u64; 5],
    /// When the first held line arrived.
    pub since: Option<String>,
    /// The most recent held line.
    pub last: Option<AlertLine>,
}

impl Held {
    fn add(&mut self, line: AlertLine) {
        self.count += 1;
        self.by_level[line.level.rank()] += 1;
        if self.since.is_none() {
            self.since = Some(line.at.clone());
        }
        self.last = Some(line);
    }
}

/// What goes to the owner: a line (with what was held before it), or only a summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertMessage {
    pub unit: Uuid,
    pub line: Option<AlertLine>,
    pub held: Held,
}

struct UnitThrottle {
    last_sent: Instant,
    held: Held,
}

/// Per-unit throttle: at most one message per unit per interval. Pure state (time is passed
/// in), so its rules are unit-tested without waiting.
pub struct Throttle {
    interval: Duration,
    units: HashMap<Uuid, UnitThrottle>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            units: HashMap::new(),
        }
    }

    /// A message to send now, or None when the line is held back.
    pub fn offer(&mut self, now: Instant, line: AlertLine) -> Option<AlertMessage> {
        let unit = line.unit;
        match self.units.get_mut(&unit) {
            Some(t) if now.duration_since(t.last_sent) < self.interval => {
                t.held.add(line);
                None
            }
            Some(t) => {
                t.last_sent = now;
                Some(AlertMessage {
                    unit,
                    line: Some(line),
                    held: std::mem::take(&mut t.held),
                })
            }
            None => {
                self.units.insert(
                    unit,
                    UnitThrottle {
                        last_sent: now,
                        held: Held::default(),
                    },
                );
                Some(AlertMessage {
                    unit,
                    line: Some(line),
                    held: Held::default(),
                })
            }
        }
    }

    /// Summaries of units whose held lines may go out now; forgets idle units.
    pub fn due(&mut self, now: Instant) -> Vec<AlertMessage> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.units.retain(|unit, t| {
            let quiet_for = now.duration_since(t.last_sent);
            if quiet_for < interval {
                return true;
            }
            if t.held.count == 0 {
                return false; // nothing held and the interval is over: start afresh next time
            }
            t.last_sent = now;
            out.push(AlertMessage {
                unit: *unit,
                line: None,
                held: std::mem::take(&mut t.held),
            });
            true
        });
        out
    }

    /// Summaries of every unit with held lines, interval or not (the instance is stopping:
    /// better early than never).
    pub fn flush(&mut self) -> Vec<AlertMessage> {
        self.units
            .iter_mut()
            .filter(|(_, t)| t.held.count > 0)
            .map(|(unit, t)| AlertMessage {
                unit: *unit,
                line: None,
                held: std::mem::take(&mut t.held),
            })
            .collect()
    }

    /// When the next [`Throttle::due`] call can return something.
    pub fn next_due(&self) -> Option<Instant> {
        self.units
            .values()
            .filter(|t| t.held.count > 0)
            .map(|t| t.last_sent + self.interval)
            .min()
    }
}

/// `PATCH /units/alerts/{uuid}`: a unit's alert settings.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitAlertsUpdate {
    /// From which level a log line becomes an alert.
    pub alert_log_level: Option<LogLevel>,
    /// Mute alerts for this many seconds from now (at most ten years); 0 unmutes.
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub mute_seconds: Option<i64>,
}

/// A log message EMQX's rule forwards (`POST /units/alerts/emqx`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmqxLogMessage {
    /// EMQX's message id (unique per publish; a retried delivery repeats it).
    pub id: String,
    pub topic: String,
    /// The log payload as the device published it.
    pub payload: String,
}

impl Instance {
    /// Changes a unit's alert level or mute; the unit's creator only.
    pub async fn set_unit_alerts(
        &self,
        agent: &Agent,
        uuid: Uuid,
        data: UnitAlertsUpdate,
    ) -> AppResult<Unit> {
        let unit = self.unit(uuid).await?;
        agent.require_creator(Some(unit.creator_uuid))?;
        let level = data.alert_log_level.unwrap_or(unit.alert_log_level);
        let muted_until = match data.mute_seconds {
            None => unit.alerts_muted_until.clone(),
            Some(0) => None,
            Some(s) if (1..=MAX_MUTE_SECS).contains(&s) => Some(domain::format_time(
                chrono::Utc::now().naive_utc() + chrono::Duration::seconds(s),
            )),
            Some(_) => {
                return Err(AppError::unit(format!(
                    "mute_seconds must be between 0 and {MAX_MUTE_SECS}"
                )))
            }
        };
        store::units::set_alerts(self.pool(), uuid, level, muted_until.as_deref()).await?;
        self.units_cache.invalidate(uuid);
        self.unit(uuid).await
    }

    /// Whether the MQTT core's shards feed alerts: not while EMQX carries our rule (which
    /// needs EMQX 5.4+ and a successful apply; until then the shards do).
    pub fn alerts_from_shards(&self) -> bool {
        self.alerts.is_enabled()
            && (self.config.emqx_api_url.is_none()
                || !self.alerts.emqx_rule.load(Ordering::Relaxed))
    }

    /// The secret EMQX's HTTP action presents (`Authorization: Bearer ...`): derived from the
    /// instance secret, so nothing more to configure or store.
    pub fn emqx_webhook_secret(&self) -> String {
        crate::crypto::derived_secret(&self.config.secret_key, b"pepeunit emqx alert webhook v1")
    }

    /// A log message forwarded by EMQX's rule: the lines at or above the unit's alert level
    /// become alerts; a redelivered message id is ignored. Returns how many lines were offered.
    pub async fn alert_from_emqx(&self, msg: EmqxLogMessage) -> AppResult<usize> {
        let unit_uuid = self
            .log_topic_unit(&msg.topic)
            .ok_or_else(|| AppError::unit("topic is not a log topic of this instance"))?;
        if !self.alerts.is_enabled() {
            return Ok(0);
        }
        let (lines, _) =
            crate::domain::payload::parse_log(msg.payload.as_bytes()).map_err(AppError::unit)?;
        let unit = match self.unit(unit_uuid).await {
            Ok(u) => u,
            Err(AppError::NotFound) => return Ok(0),
            // not remembered as seen: EMQX's retry of this message gets its chance
            Err(e) => return Err(e),
        };
        // remembered only now that nothing can fail before the lines are offered
        if !self.alerts.first_delivery(&msg.id) {
            return Ok(0);
        }
        let at = domain::now();
        let mut offered = 0;
        for line in lines {
            if line.level.rank() >= unit.alert_log_level.rank() {
                self.alerts.offer(AlertLine {
                    unit: unit_uuid,
                    level: line.level,
                    text: line.text,
                    at: at.clone(),
                });
                offered += 1;
            }
        }
        Ok(offered)
    }

    /// The unit of `{domain}/output_base_topic/{unit}/log/pepeunit`.
    pub fn log_topic_unit(&self, topic: &str) -> Option<Uuid> {
        let topic = Topic::parse(topic).ok()?;
        (topic.domain() == self.config.domain)
            .then(|| topic.log_unit())
            .flatten()
    }

    pub fn alert_report(&self) -> AlertReport {
        let c = &self.alerts.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AlertReport {
            enabled: self.alerts.is_enabled(),
            source: if !self.alerts.is_enabled() {
                "off (no PU_TELEGRAM_BOT_TOKEN)"
            } else if self.alerts_from_shards() {
                "mqtt core"
            } else {
                "emqx rule"
            },
            interval_secs: self.config.telegram_alert_interval_secs,
            offered: get(&c.offered),
            sent: get(&c.sent),
            held: get(&c.held),
            dropped: get(&c.dropped),
            undeliverable: get(&c.undeliverable),
            failed: get(&c.failed),
            duplicates: get(&c.duplicates),
        }
    }

    /// Sends one alert message to the unit owner's chat, if the unit still exists, is not
    /// muted and its owner linked Telegram.
    async fn deliver_alert(&self, msg: AlertMessage) {
        let c = &self.alerts.counters;
        let Some(bot) = self.chat_bot.clone() else {
            return;
        };
        let unit = match self.unit(msg.unit).await {
            Ok(u) => u,
            Err(_) => {
                c.undeliverable.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let now = domain::now();
        if unit
            .alerts_muted_until
            .as_deref()
            .is_some_and(|m| *m > *now)
        {
            c.undeliverable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // a blocked account hears nothing, as over REST and the bot
        let to = match store::users::get(self.pool(), unit.creator_uuid).await {
            Ok(Some(owner)) => self.chat_of(&owner),
            _ => None,
        };
        let Some(to) = to else {
            c.undeliverable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match bot.send_alert(&to, &unit.name, &msg).await {
            Ok(()) => {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(unit = %unit.uuid, error = %e, "alert not delivered to Telegram");
            }
        }
    }
}

/// The alert task: throttles and delivers until `stop` turns true. Lines still held back then
/// are dropped (the log store keeps them); messages being sent are finished.
pub async fn run_alerts(instance: Instance, mut stop: watch::Receiver<bool>) {
    let Some(mut rx) = instance.alerts.rx.lock().expect("alerts rx").take() else {
        return; // already running
    };
    let interval = Duration::from_secs(instance.config.telegram_alert_interval_secs);
    let mut throttle = Throttle::new(interval);
    let sends = Arc::new(Semaphore::new(CONCURRENT_SENDS));
    let counters = instance.alerts.counters.clone();
    let send = |msg: AlertMessage| {
        let instance = instance.clone();
        let sends = sends.clone();
        async move {
            let Ok(permit) = sends.acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                instance.deliver_alert(msg).await;
                drop(permit);
            });
        }
    };
    loop {
        let wake = throttle
            .next_due()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => match throttle.offer(Instant::now(), line) {
                    Some(msg) => send(msg).await,
                    None => {
                        counters.held.fetch_add(1, Ordering::Relaxed);
                    }
                },
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {
                for msg in throttle.due(Instant::now()) {
                    send(msg).await;
                }
            }
            _ = stop.changed() => break,
        }
    }
    // stopping (after the MQTT core has drained): what is queued and what is held goes out
    // now as summaries, so a restart does not swallow alerts
    while let Ok(line) = rx.try_recv() {
        match throttle.offer(Instant::now(), line) {
            Some(msg) => send(msg).await,
            None => {
                counters.held.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for msg in throttle.flush() {
        send(msg).await;
    }
    // wait for sends in flight (bounded by their own timeouts)
    let _ = sends.acquire_many(CONCURRENT_SENDS as u32).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(unit: Uuid, level: LogLevel, text: &str) -> AlertLine {
        AlertLine {
            unit,
            level,
            text: text.into(),
            at: domain::now(),
        }
    }

    #[test]
    fn first_line_goes_at_once_then_held_then_summarised() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        let u = Uuid::new_v4();
        let first = t.offer(t0, line(u, LogLevel::Error, "a")).unwrap();
        assert_eq!(first.held.count, 0);
        assert_eq!(first.line.unwrap().text, "a");
        for (i, level) in [LogLevel::Error, LogLevel::Critical, LogLevel::Error]
            .into_iter()
            .enumerate()
        {
            let at = t0 + Duration::from_secs(10 * (i as u64 + 1));
            assert!(t.offer(at, line(u, level, &format!("h{i}"))).is_none());
        }
        assert_eq!(t.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(t.due(t0 + Duration::from_secs(59)).is_empty());
        let due = t.due(t0 + Duration::from_secs(60));
        assert_eq!(due.len(), 1);
        assert!(due[0].line.is_none());
        assert_eq!(due[0].held.count, 3);
        assert_eq!(due[0].held.by_level[LogLevel::Error.rank()], 2);
        assert_eq!(due[0].held.by_level[LogLevel::Critical.rank()], 1);
        assert_eq!(due[0].held.last.as_ref().unwrap().text, "h2");
        // the summary counts as a message: the next line within the interval is held again
        assert!(t
            .offer(t0 + Duration::from_secs(61), line(u, LogLevel::Error, "b"))
            .is_none());
        let later = t.offer(t0 + Duration::from_secs(121), line(u, LogLevel::Error, "c"));
        let later = later.unwrap();
        assert_eq!(later.line.unwrap().text, "c");
        assert_eq!(later.held.count, 1, "the held line is summarised with it");
        assert_eq!(later.held.last.unwrap().text, "b");
    }

    #[test]
    fn units_are_throttled_separately_and_idle_ones_forgotten() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(5));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(t.offer(t0, line(a, LogLevel::Error, "a")).is_some());
        assert!(t.offer(t0, line(b, LogLevel::Error, "b")).is_some());
        assert!(t.offer(t0, line(a, LogLevel::Error, "a2")).is_none());
        assert!(t.due(t0 + Duration::from_secs(5)).len() == 1);
        assert!(t.due(t0 + Duration::from_secs(11)).is_empty());
        assert!(t.units.is_empty(), "idle units are dropped");
        assert!(t.next_due().is_none());
    }

    #[test]
    fn flush_summarises_every_unit_with_held_lines_at_once() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(3600));
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for u in [a, b, c] {
            assert!(t.offer(t0, line(u, LogLevel::Error, "first")).is_some());
        }
        assert!(t.offer(t0, line(a, LogLevel::Error, "a2")).is_none());
        assert!(t.offer(t0, line(a, LogLevel::Critical, "a3")).is_none());
        assert!(t.offer(t0, line(b, LogLevel::Error, "b2")).is_none());
        let mut flushed = t.flush();
        flushed.sort_by_key(|m| m.held.count);
        let counts: Vec<(Uuid, u64)> = flushed.iter().map(|m| (m.unit, m.held.count)).collect();
        assert_eq!(counts, [(b, 1), (a, 2)], "c held nothing");
        assert!(flushed.iter().all(|m| m.line.is_none()));
        assert!(t.flush().is_empty(), "flushed once");
    }

    #[test]
    fn zero_interval_sends_everything() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::ZERO);
        let u = Uuid::new_v4();
        for i in 0..5 {
            assert!(t
                .offer(t0, line(u, LogLevel::Error, &i.to_string()))
                .is_some());
        }
    }

    #[test]
    fn seen_ids_forget_the_oldest() {
        let mut s = SeenIds::default();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        for i in 0..SEEN_IDS {
            s.insert(&i.to_string());
        }
        assert!(s.insert("a"), "forgotten after SEEN_IDS newer ids");
    }
}
