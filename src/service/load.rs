//! Load metering (SPEC §7, issue 18 part 1): messages per second per topic over sliding
//! 1-minute and 1-hour windows, summed per Unit, averaged per Repo, summed per user, and a load
//! class per Unit by its percentile among the instance's Units.
//!
//! The MQTT core's shards record every message they take (no extra subscriber), with the Unit
//! it belongs to (a `state`/`log` topic names its Unit, a node's Unit comes with the node's
//! row). The meter is striped by topic so that shards rarely meet on a lock; a topic silent
//! for an hour is forgotten (the hourly job sweeps), so memory follows the live topics
//! (BENCHMARKS.md: bytes per topic). Readers are the reports here: owners see their own Units,
//! admins all.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::scrapers::Viewer;
use super::Instance;
use crate::domain::load::{classify, LoadClass, Mps, Rates};
use crate::error::{AppError, AppResult};
use crate::store;

const STRIPES: usize = 16;
/// Topics metered at most; past it new topics are counted in `unmetered` and not kept (a
/// flood of distinct topic names cannot grow the meter without bound).
pub const MAX_TOPICS: usize = 1_000_000;

struct TopicLoad {
    unit: Uuid,
    rates: Rates,
    /// Messages since the hourly job last took them (the history).
    hour_messages: u64,
    /// Messages the throttle dropped (boxed: most topics never have any).
    dropped: Option<Box<Rates>>,
}

impl TopicLoad {
    fn idle(&self, now: u64) -> bool {
        self.rates.idle(now) && self.dropped.as_ref().is_none_or(|d| d.idle(now))
    }
}

/// The instance's load meter (one per instance, shared by the shards and the reports).
pub struct LoadMeter {
    stripes: Vec<Mutex<HashMap<Box<str>, TopicLoad>>>,
    hasher: RandomState,
    /// Topics held (kept beside the maps: a shard inserting holds one stripe's lock).
    topics: AtomicUsize,
    unmetered: AtomicU64,
    /// `PU_LOAD_METERING`: off, nothing is recorded.
    enabled: std::sync::atomic::AtomicBool,
    /// Hours taken from the meter whose write to the history failed: written with the next
    /// hour's (at most `MAX_UNWRITTEN_HOURS` rows; the oldest go first).
    unwritten: Mutex<Vec<store::load_hours::LoadHour>>,
}

/// Rows of failed history writes kept for the next try (a day of 4k busy Units).
pub const MAX_UNWRITTEN_HOURS: usize = 100_000;

impl Default for LoadMeter {
    fn default() -> Self {
        LoadMeter {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            topics: AtomicUsize::new(0),
            unmetered: AtomicU64::new(0),
            enabled: std::sync::atomic::AtomicBool::new(true),
            unwritten: Mutex::default(),
        }
    }
}

/// One topic's load now.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TopicLoadReport {
    pub topic: String,
    pub mps: Mps,
    /// Messages in the windows the rates are over.
    pub messages_last_minute: u64,
    pub messages_last_hour: u64,
    /// Messages the throttle dropped on this topic (SPEC §8), in the same windows.
    pub throttled_last_minute: u64,
    pub throttled_last_hour: u64,
}

impl LoadMeter {
    fn stripe(&self, topic: &str) -> &Mutex<HashMap<Box<str>, TopicLoad>> {
        &self.stripes[(self.hasher.hash_one(topic) as usize) % STRIPES]
    }

    /// `n` messages on `topic` of `unit` at `now` (seconds since the epoch).
    pub fn record(&self, topic: &str, unit: Uuid, now: u64, n: u32) {
        self.with_entry(topic, unit, n, |entry| {
            entry.rates.record(now, n);
            entry.hour_messages += u64::from(n);
        });
    }

    /// A message on `topic` of `unit` dropped by the throttle at `now`.
    pub fn record_dropped(&self, topic: &str, unit: Uuid, now: u64) {
        self.with_entry(topic, unit, 1, |entry| {
            entry
                .dropped
                .get_or_insert_with(Box::default)
                .record(now, 1);
        });
    }

    /// Switches recording on or off (`PU_LOAD_METERING`).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Relaxed);
    }

    fn with_entry(&self, topic: &str, unit: Uuid, n: u32, f: impl FnOnce(&mut TopicLoad)) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let mut stripe = self.stripe(topic).lock().unwrap_or_else(|e| e.into_inner());
        let entry = match stripe.get_mut(topic) {
            Some(e) => e,
            None => {
                if self.topics.load(Relaxed) >= MAX_TOPICS {
                    self.unmetered.fetch_add(u64::from(n), Relaxed);
                    return;
                }
                self.topics.fetch_add(1, Relaxed);
                stripe.entry(topic.into()).or_insert(TopicLoad {
                    unit,
                    rates: Rates::default(),
                    hour_messages: 0,
                    dropped: None,
                })
            }
        };
        entry.unit = unit;
        f(entry);
    }

    /// Topics metered now.
    pub fn topics(&self) -> usize {
        self.topics.load(Relaxed)
    }

    /// Messages not metered because the meter was full.
    pub fn unmetered(&self) -> u64 {
        self.unmetered.load(Relaxed)
    }

    /// An estimate of the meter's heap: its maps' slots and topic names.
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Box<str>, TopicLoad)>() + 1;
        self.stripes
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.capacity() * slot + s.keys().map(|k| k.len()).sum::<usize>()
            })
            .sum::<usize>()
            + std::mem::size_of::<Self>()
    }

    /// Every topic with traffic within the hour before `now`, per Unit.
    pub fn by_unit(&self, now: u64) -> HashMap<Uuid, Vec<TopicLoadReport>> {
        let mut out: HashMap<Uuid, Vec<TopicLoadReport>> = HashMap::new();
        for stripe in &self.stripes {
            let stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
            for (topic, t) in stripe.iter().filter(|(_, t)| !t.idle(now)) {
                let (minute, hour) = t.rates.counts(now);
                let (throttled_minute, throttled_hour) =
                    t.dropped.as_ref().map_or((0, 0), |d| d.counts(now));
                out.entry(t.unit).or_default().push(TopicLoadReport {
                    topic: topic.to_string(),
                    mps: t.rates.per_second(now),
                    messages_last_minute: minute,
                    messages_last_hour: hour,
                    throttled_last_minute: throttled_minute,
                    throttled_last_hour: throttled_hour,
                });
            }
        }
        for topics in out.values_mut() {
            topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        }
        out
    }

    /// Keeps rows whose write failed for the next `record_load_hour`, at most
    /// `MAX_UNWRITTEN_HOURS` (the oldest are dropped, and said so).
    fn keep_unwritten(&self, mut rows: Vec<store::load_hours::LoadHour>) {
        let mut kept = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        rows.append(&mut kept);
        if rows.len() > MAX_UNWRITTEN_HOURS {
            rows.sort_by_key(|r| std::cmp::Reverse(r.hour_start));
            let dropped = rows.len() - MAX_UNWRITTEN_HOURS;
            rows.truncate(MAX_UNWRITTEN_HOURS);
            tracing::warn!(
                rows = dropped,
                "load history rows dropped: too many unwritten"
            );
        }
        *kept = rows;
    }

    /// Rows of load history waiting for a write that failed.
    pub fn unwritten_hours(&self) -> usize {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The messages per Unit since the last call (the hourly history), and forgets topics
    /// silent for an hour.
    pub fn take_hour(&self, now: u64) -> HashMap<Uuid, u64> {
        let mut out: HashMap<Uuid, u64> = HashMap::new();
        for stripe in &self.stripes {
            let mut stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
            for t in stripe.values_mut() {
                if t.hour_messages > 0 {
                    *out.entry(t.unit).or_default() += std::mem::take(&mut t.hour_messages);
                }
            }
            let before = stripe.len();
            stripe.retain(|_, t| !t.idle(now));
            self.topics.fetch_sub(before - stripe.len(), Relaxed);
            stripe.shrink_to_fit();
        }
        out
    }
}

/// A Unit's load now.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UnitLoad {
    pub unit_uuid: Uuid,
    pub unit_name: String,
    pub repo_uuid: Uuid,
    pub creator_uuid: Uuid,
    /// Its topics with traffic in the last hour.
    pub topic_count: usize,
    /// Messages per second over its topics (sum).
    pub mps: Mps,
    /// Per topic (average over its topics).
    pub mps_per_topic: Mps,
    /// Messages over its topics in the last hour.
    pub messages_last_hour: u64,
    /// Messages the throttle dropped over its topics in the last hour (SPEC §8).
    pub throttled_last_hour: u64,
    /// Its place among the instance's Units, by the 1-hour rate.
    pub load_class: LoadClass,
    /// The topics themselves (in the report of one Unit only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<TopicLoadReport>>,
}

/// Units' load, the instance's figures beside them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LoadReport {
    /// Messages per second over every Unit of the instance (sum).
    pub instance_mps: Mps,
    /// Units with traffic in the last hour, on the whole instance.
    pub active_units: usize,
    /// Topics metered now, and the meter's memory.
    pub metered_topics: usize,
    pub meter_memory_bytes: usize,
    /// Messages not metered because the meter held its most topics already.
    pub unmetered_messages: u64,
    pub units: Vec<UnitLoad>,
}

/// A Repo's or a user's load: the Units it covers and the aggregate.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GroupLoad {
    pub uuid: Uuid,
    /// Its Units (all of them, idle ones at zero).
    pub unit_count: usize,
    /// Repo: the average over its Units; user: the sum over its Units.
    pub mps: Mps,
    pub units: Vec<UnitLoad>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Instance {
    /// Every Unit with traffic, its load and class (classes among all of the instance's
    /// Units with traffic).
    async fn unit_loads(
        &self,
        by_unit: &HashMap<Uuid, Vec<TopicLoadReport>>,
    ) -> AppResult<Vec<UnitLoad>> {
        let uuids: Vec<Uuid> = by_unit.keys().copied().collect();
        let rows = store::units::by_uuids(self.pool(), &uuids).await?;
        let mut loads: Vec<UnitLoad> = rows
            .into_iter()
            .filter_map(|u| {
                let topics = by_unit.get(&u.uuid)?;
                let mps = topics.iter().fold(Mps::default(), |a, t| a + t.mps);
                Some(UnitLoad {
                    unit_uuid: u.uuid,
                    unit_name: u.name,
                    repo_uuid: u.repo_uuid,
                    creator_uuid: u.creator_uuid,
                    topic_count: topics.len(),
                    mps,
                    mps_per_topic: mps.average(topics.len()),
                    messages_last_hour: topics.iter().map(|t| t.messages_last_hour).sum(),
                    throttled_last_hour: topics.iter().map(|t| t.throttled_last_hour).sum(),
                    load_class: LoadClass::Idle,
                    topics: None,
                })
            })
            .collect();
        let hours: Vec<f64> = loads.iter().map(|l| l.mps.hour).collect();
        for (l, class) in loads.iter_mut().zip(classify(&hours)) {
            l.load_class = class;
        }
        loads.sort_by(|a, b| b.mps.hour.total_cmp(&a.mps.hour));
        Ok(loads)
    }

    /// `GET /metrics/load/units`: the caller's Units with traffic (an admin's: every Unit).
    pub async fn load_report(&self, viewer: impl Into<Viewer<'_>>) -> AppResult<LoadReport> {
        let scope = viewer.into().scope()?;
        let loads = self.unit_loads(&self.load.by_unit(unix_now())).await?;
        let instance_mps = loads.iter().fold(Mps::default(), |a, l| a + l.mps);
        let active_units = loads.len();
        let units = loads
            .into_iter()
            .filter(|l| scope.sees(l.creator_uuid))
            .collect();
        Ok(LoadReport {
            instance_mps,
            active_units,
            metered_topics: self.load.topics(),
            meter_memory_bytes: self.load.memory_bytes(),
            unmetered_messages: self.load.unmetered(),
            units,
        })
    }

    /// `GET /metrics/load/units/{uuid}`: one Unit with its topics (its creator or an admin).
    pub async fn unit_load(
        &self,
        viewer: impl Into<Viewer<'_>>,
        uuid: Uuid,
    ) -> AppResult<UnitLoad> {
        let scope = viewer.into().scope()?;
        let unit = self.unit(uuid).await?;
        if !scope.sees(unit.creator_uuid) {
            return Err(AppError::no_access(
                "Only its creator or an Admin sees its load",
            ));
        }
        let now = unix_now();
        let mut by_unit = self.load.by_unit(now);
        let loads = self.unit_loads(&by_unit).await?;
        let mut topics = by_unit.remove(&uuid).unwrap_or_default();
        let found = loads.into_iter().find(|l| l.unit_uuid == uuid);
        topics.sort_by(|a, b| b.mps.hour.total_cmp(&a.mps.hour));
        Ok(match found {
            Some(l) => UnitLoad {
                topics: Some(topics),
                ..l
            },
            None => UnitLoad {
                unit_uuid: unit.uuid,
                unit_name: unit.name,
                repo_uuid: unit.repo_uuid,
                creator_uuid: unit.creator_uuid,
                topic_count: 0,
                mps: Mps::default(),
                mps_per_topic: Mps::default(),
                messages_last_hour: 0,
                throttled_last_hour: 0,
                load_class: LoadClass::Idle,
                topics: Some(Vec::new()),
            },
        })
    }

    /// `GET /metrics/load/repos/{uuid}`: the average over the Repo's Units (its creator or
    /// an admin; the Units listed are those the caller may see the load of).
    pub async fn repo_load(
        &self,
        viewer: impl Into<Viewer<'_>>,
        uuid: Uuid,
    ) -> AppResult<GroupLoad> {
        let scope = viewer.into().scope()?;
        let repo = self.repo(uuid).await?;
        if !scope.sees(repo.creator_uuid) {
            return Err(AppError::no_access(
                "Only its creator or an Admin sees its load",
            ));
        }
        let units = store::units::by_repo(self.pool(), uuid).await?;
        let loads = self.unit_loads(&self.load.by_unit(unix_now())).await?;
        let of_repo: Vec<UnitLoad> = loads.into_iter().filter(|l| l.repo_uuid == uuid).collect();
        let sum = of_repo.iter().fold(Mps::default(), |a, l| a + l.mps);
        Ok(GroupLoad {
            uuid,
            unit_count: units.len(),
            mps: sum.average(units.len()),
            units: of_repo
                .into_iter()
                .filter(|l| scope.sees(l.creator_uuid))
                .collect(),
        })
    }

    /// `GET /metrics/load/users/{uuid}`: the sum over a user's Units (the user or an admin).
    pub async fn user_load(
        &self,
        viewer: impl Into<Viewer<'_>>,
        uuid: Uuid,
    ) -> AppResult<GroupLoad> {
        let scope = viewer.into().scope()?;
        if !scope.sees(uuid) {
            return Err(AppError::no_access(
                "Only the user or an Admin sees its load",
            ));
        }
        let unit_count = store::units::count_by_creator(self.pool(), uuid).await? as usize;
        let loads = self.unit_loads(&self.load.by_unit(unix_now())).await?;
        let units: Vec<UnitLoad> = loads
            .into_iter()
            .filter(|l| l.creator_uuid == uuid)
            .collect();
        Ok(GroupLoad {
            uuid,
            unit_count,
            mps: units.iter().fold(Mps::default(), |a, l| a + l.mps),
            units,
        })
    }
}

/// `GET /metrics/load/units/{uuid}/history`: a Unit's messages per hour.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LoadHistory {
    pub unit_uuid: Uuid,
    pub hours: Vec<LoadHourReport>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LoadHourReport {
    /// The hour's start, naive UTC.
    pub hour_start: String,
    pub messages: u64,
    /// The hour's average messages per second.
    pub mps: f64,
}

/// The start of the hour holding `t` (seconds since the epoch).
pub fn hour_of(t: u64) -> chrono::NaiveDateTime {
    let start = (t - t % 3600) as i64;
    chrono::DateTime::from_timestamp(start, 0)
        .unwrap_or_default()
        .naive_utc()
}

impl Instance {
    /// Moves what the meter counted since the last call into the history as the hour starting
    /// at `hour` (the hourly job: the hour just over; a clean stop: the current one), and
    /// forgets topics silent for an hour. Units deleted meanwhile are not kept. When the write
    /// fails, the rows are kept and written with the next call (nothing counted is lost to a
    /// telemetry store that is down for a while). Returns the rows written.
    pub async fn record_load_hour(&self, hour: chrono::NaiveDateTime) -> AppResult<usize> {
        let taken = self.load.take_hour(unix_now());
        self.throttle.sweep();
        let mut rows = std::mem::take(
            &mut *self
                .load
                .unwritten
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if !taken.is_empty() {
            let uuids: Vec<Uuid> = taken.keys().copied().collect();
            match store::units::by_uuids(self.pool(), &uuids).await {
                Ok(units) => rows.extend(units.into_iter().map(|u| store::load_hours::LoadHour {
                    unit_uuid: u.uuid,
                    user_uuid: u.creator_uuid,
                    hour_start: hour,
                    messages: taken[&u.uuid],
                })),
                Err(e) => {
                    self.load.keep_unwritten(rows);
                    return Err(e.into());
                }
            }
        }
        if rows.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.logs.add_load_hours(&rows).await {
            self.load.keep_unwritten(rows);
            return Err(e.into());
        }
        Ok(rows.len())
    }

    /// A Unit's hourly history in `[from, to)` (default: the last 24 hours), its creator or
    /// an admin; at most 31 days at a time.
    pub async fn unit_load_history(
        &self,
        viewer: impl Into<Viewer<'_>>,
        uuid: Uuid,
        from: Option<chrono::NaiveDateTime>,
        to: Option<chrono::NaiveDateTime>,
    ) -> AppResult<LoadHistory> {
        let scope = viewer.into().scope()?;
        let unit = self.unit(uuid).await?;
        if !scope.sees(unit.creator_uuid) {
            return Err(AppError::no_access(
                "Only its creator or an Admin sees its load",
            ));
        }
        let to = to.unwrap_or_else(|| chrono::Utc::now().naive_utc());
        let from = match from {
            Some(from) => from,
            None => to
                .checked_sub_signed(chrono::Duration::hours(24))
                .ok_or_else(|| AppError::validation("to is out of range"))?,
        };
        if from >= to {
            return Err(AppError::validation("from must be before to"));
        }
        if to - from > chrono::Duration::days(31) {
            return Err(AppError::validation(
                "at most 31 days of load history at a time",
            ));
        }
        let hours = self.logs.load_hours(uuid, from, to).await?;
        Ok(LoadHistory {
            unit_uuid: uuid,
            hours: hours
                .into_iter()
                .map(|h| LoadHourReport {
                    hour_start: crate::domain::format_time(h.hour_start),
                    mps: h.messages as f64 / 3600.0,
                    messages: h.messages,
                })
                .collect(),
        })
    }
}
