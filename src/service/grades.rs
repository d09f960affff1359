//! Instance grades and the `load_limit` report (SPEC §7; issue 18, parts 3 and 4).
//!
//! The **grade** is what the admin charges: free messages per second (MPS) per user and the price
//! of each MPS above it, free aggregated topics (data pipes whose policy is Aggregation or
//! TimeWindow: they cost storage) and the price of each one above, in one currency. Until the
//! admin first sets it, an instance answers [`Grade::DEFAULT`]: everything free within generous
//! allowances, prices 0, USD.
//!
//! A **load report** is what `pepeunit load ramp --publish` measured on one channel (rest,
//! graphql, mqtt): the offered rate stepped up until p99 latency or the error share passed the
//! bounds. The newest report per channel, with the grade, is the instance's public
//! `load_limit`: what it can carry and what it costs, so users compare instances. The capacity
//! of a channel is recomputed here from the steps and the bounds the report carries (the highest
//! offered rate whose step stayed within both), not taken from the publisher's word.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Agent, Instance};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::grades::GradeRow;

/// Upper bound of the MPS allowance and of every price (a sanity bound, not a business rule).
pub const MAX_AMOUNT: f64 = 1_000_000_000.0;
/// Upper bound of the free aggregated topics.
pub const MAX_TOPICS: i64 = 1_000_000_000;
/// Steps a published report may carry.
pub const MAX_STEPS: usize = 1000;
/// The channels a report may measure, in the order `load_limit` lists them.
pub const CHANNELS: [&str; 3] = ["rest", "graphql", "mqtt"];

// the OpenAPI descriptions below spell these bounds as literals
const _: () = assert!(MAX_AMOUNT as i64 == 1_000_000_000 && MAX_TOPICS == 1_000_000_000);

/// The instance's grade: what a user gets for free and what the rest costs.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Grade {
    /// Messages per second each user's units may send for free (sum over their topics).
    pub free_mps_per_user: f64,
    /// Price of one MPS above the free amount, per month, in `currency`.
    pub price_per_mps: f64,
    /// Aggregated topics (data pipes with an Aggregation or TimeWindow policy) free per user.
    pub free_aggregated_topics: i64,
    /// Price of one aggregated topic above the free amount, per month, in `currency`.
    pub price_per_aggregated_topic: f64,
    /// ISO 4217 code: three upper-case letters.
    pub currency: String,
    /// When the admin last changed it; null while the defaults apply.
    pub update_datetime: Option<String>,
}

impl Grade {
    /// A fresh instance: everything free within generous allowances.
    pub const DEFAULT_FREE_MPS: f64 = 1000.0;
    pub const DEFAULT_FREE_TOPICS: i64 = 1000;
    pub const DEFAULT_CURRENCY: &'static str = "USD";

    pub fn default_grade() -> Grade {
        Grade {
            free_mps_per_user: Self::DEFAULT_FREE_MPS,
            price_per_mps: 0.0,
            free_aggregated_topics: Self::DEFAULT_FREE_TOPICS,
            price_per_aggregated_topic: 0.0,
            currency: Self::DEFAULT_CURRENCY.to_string(),
            update_datetime: None,
        }
    }
}

impl From<GradeRow> for Grade {
    fn from(r: GradeRow) -> Grade {
        Grade {
            free_mps_per_user: r.free_mps_per_user,
            price_per_mps: r.price_per_mps,
            free_aggregated_topics: r.free_aggregated_topics,
            price_per_aggregated_topic: r.price_per_aggregated_topic,
            currency: r.currency,
            update_datetime: Some(r.update_datetime),
        }
    }
}

/// A change of the grade: the fields given replace the stored ones.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GradeUpdate {
    /// 0 ..= 1e9.
    pub free_mps_per_user: Option<f64>,
    /// 0 ..= 1e9.
    pub price_per_mps: Option<f64>,
    /// 0 ..= 1e9.
    pub free_aggregated_topics: Option<i64>,
    /// 0 ..= 1e9.
    pub price_per_aggregated_topic: Option<f64>,
    /// ISO 4217 code, e.g. USD, EUR, RUB.
    pub currency: Option<String>,
}

fn amount(field: &str, v: f64) -> AppResult<f64> {
    if !v.is_finite() || !(0.0..=MAX_AMOUNT).contains(&v) {
        return Err(AppError::request(
            "body",
            Some(field),
            format!("{field} must be a finite number from 0 to 1000000000"),
        ));
    }
    Ok(v)
}

fn currency(v: &str) -> AppResult<String> {
    if v.len() != 3 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AppError::request(
            "body",
            Some("currency"),
            "currency must be an ISO 4217 code: three upper-case letters such as USD",
        ));
    }
    Ok(v.to_string())
}

/// The measurement bounds a ramp stopped at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadBounds {
    pub p99_ms: f64,
    pub max_error_percent: f64,
}

/// The machine the instance runs on, as the instance reported it (absent when unknown).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadMachine {
    pub cpus: Option<u64>,
    pub mem_total_bytes: Option<u64>,
}

/// One step of a ramp: a fixed offered rate for a while.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadStep {
    /// Requests (or messages) per second sent on schedule (open loop).
    pub offered_rate: f64,
    /// What was completed per second over the step (answered or acknowledged, errors included).
    pub achieved_rate: f64,
    pub requests: u64,
    /// Failed requests, and for MQTT publishes that could not even be queued (drops).
    pub errors: u64,
    pub error_percent: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub seconds: f64,
    /// p99 and the error share both within the bounds.
    pub within_bounds: bool,
}

impl LoadStep {
    /// p99 and the error share both within `bounds`.
    pub fn within(&self, bounds: &LoadBounds) -> bool {
        self.p99_ms <= bounds.p99_ms && self.error_percent <= bounds.max_error_percent
    }
}

/// What `pepeunit load ramp` measured on one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadReport {
    /// rest, graphql or mqtt.
    pub channel: String,
    /// What was requested: e.g. `GET /units?limit=20`.
    pub operation: String,
    pub started: String,
    pub finished: String,
    pub bounds: LoadBounds,
    #[serde(default)]
    pub machine: LoadMachine,
    pub steps: Vec<LoadStep>,
    /// Why the ramp stopped.
    pub stop_reason: String,
    /// The highest step within bounds (recomputed by the instance when published).
    pub capacity: Option<LoadStep>,
}

impl LoadReport {
    /// The step of the highest offered rate that stayed within the report's bounds.
    pub fn capacity_step(&self) -> Option<LoadStep> {
        self.steps
            .iter()
            .filter(|s| s.within(&self.bounds))
            .max_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate))
            .cloned()
    }

    fn validate(&self) -> AppResult<()> {
        let bad = |name: &str, msg: String| Err(AppError::request("body", Some(name), msg));
        if !CHANNELS.contains(&self.channel.as_str()) {
            return bad("channel", "channel must be rest, graphql or mqtt".into());
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return bad("steps", format!("steps must hold 1 to {MAX_STEPS} steps"));
        }
        for (name, text) in [
            ("operation", &self.operation),
            ("started", &self.started),
            ("finished", &self.finished),
            ("stop_reason", &self.stop_reason),
        ] {
            if text.chars().count() > 500 {
                return bad(name, format!("{name} is longer than 500 characters"));
            }
        }
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !finite(self.bounds.p99_ms) || !finite(self.bounds.max_error_percent) {
            return bad(
                "bounds",
                "bounds must be finite non-negative numbers".into(),
            );
        }
        for (i, s) in self.steps.iter().enumerate() {
            let all = [
                s.offered_rate,
                s.achieved_rate,
                s.error_percent,
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                s.seconds,
            ];
            if !all.into_iter().all(finite) || s.error_percent > 100.0 {
                return bad(
                    &format!("steps.{i}"),
                    "a step's rates, latencies and seconds must be finite non-negative numbers (error_percent at most 100)".into(),
                );
            }
        }
        Ok(())
    }
}

/// One channel of the public `load_limit` report.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChannelLimit {
    pub channel: String,
    pub operation: String,
    /// When the ramp finished, and when it was published.
    pub measured: String,
    pub published: String,
    pub bounds: LoadBounds,
    pub machine: LoadMachine,
    /// The highest step within bounds; null when even the first step was beyond them.
    pub capacity: Option<LoadStep>,
    pub stop_reason: String,
    pub steps: Vec<LoadStep>,
}

/// `GET /load_limit`: what the instance can carry per channel and what it costs.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LoadLimit {
    pub domain: String,
    pub version: String,
    pub grade: Grade,
    /// The newest published report per channel (rest, graphql, mqtt), those that exist.
    pub channels: Vec<ChannelLimit>,
}

impl Instance {
    /// The grade (defaults until the admin sets it). Public: `load_limit` shows it anyway.
    pub async fn grade(&self) -> AppResult<Grade> {
        Ok(store::grades::grade(&self.db.pool)
            .await?
            .map(Grade::from)
            .unwrap_or_else(Grade::default_grade))
    }

    /// Admin: changes the grade; every given field is checked before anything is written.
    pub async fn update_grade(&self, agent: &Agent, update: GradeUpdate) -> AppResult<Grade> {
        agent.require_admin()?;
        let _settings = self.admin_settings.lock().await;
        let current = self.grade().await?;
        let row = GradeRow {
            free_mps_per_user: match update.free_mps_per_user {
                Some(v) => amount("free_mps_per_user", v)?,
                None => current.free_mps_per_user,
            },
            price_per_mps: match update.price_per_mps {
                Some(v) => amount("price_per_mps", v)?,
                None => current.price_per_mps,
            },
            free_aggregated_topics: match update.free_aggregated_topics {
                Some(v) if !(0..=MAX_TOPICS).contains(&v) => {
                    return Err(AppError::request(
                        "body",
                        Some("free_aggregated_topics"),
                        "free_aggregated_topics must be an integer from 0 to 1000000000",
                    ))
                }
                Some(v) => v,
                None => current.free_aggregated_topics,
            },
            price_per_aggregated_topic: match update.price_per_aggregated_topic {
                Some(v) => amount("price_per_aggregated_topic", v)?,
                None => current.price_per_aggregated_topic,
            },
            currency: match &update.currency {
                Some(c) => currency(c)?,
                None => current.currency,
            },
            update_datetime: crate::domain::now(),
        };
        store::grades::set_grade(&self.db.pool, &row).await?;
        Ok(row.into())
    }

    /// Admin: stores a ramp's report as its channel's newest; answers it with the capacity the
    /// instance computed.
    pub async fn publish_load_report(
        &self,
        agent: &Agent,
        mut report: LoadReport,
    ) -> AppResult<LoadReport> {
        let admin = agent.require_admin()?.uuid;
        report.validate()?;
        report.capacity = report.capacity_step();
        let bounds = report.bounds.clone();
        for s in &mut report.steps {
            s.within_bounds = s.within(&bounds);
        }
        let text = serde_json::to_string(&report).map_err(AppError::internal)?;
        store::grades::insert_load_report(
            &self.db.pool,
            &report.channel,
            &text,
            admin,
            &crate::domain::now(),
        )
        .await?;
        Ok(report)
    }

    /// Public: the grade and the newest report per channel.
    pub async fn load_limit(&self) -> AppResult<LoadLimit> {
        let mut channels = Vec::new();
        for channel in CHANNELS {
            let Some((text, published)) =
                store::grades::latest_load_report(&self.db.pool, channel).await?
            else {
                continue;
            };
            let r: LoadReport = serde_json::from_str(&text).map_err(AppError::internal)?;
            channels.push(ChannelLimit {
                capacity: r.capacity_step(),
                channel: r.channel,
                operation: r.operation,
                measured: r.finished,
                published,
                bounds: r.bounds,
                machine: r.machine,
                stop_reason: r.stop_reason,
                steps: r.steps,
            });
        }
        Ok(LoadLimit {
            domain: self.config.domain.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            grade: self.grade().await?,
            channels,
        })
    }
}
