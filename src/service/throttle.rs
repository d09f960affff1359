//! Per-topic throttling (SPEC §8, issue 18 part 2).
//!
//! Each topic a Unit publishes to has a token bucket ([`crate::domain::throttle::Bucket`])
//! whose limit is the first rule matching the topic: the Unit's user's own rules (an admin's
//! per-user override, e.g. for a paid grade) before the instance's rules. The instance's rules
//! come from `PU_THROTTLE_RULES` at start unless the admin has set them over REST (stored, they
//! outlive restarts; removing them goes back to the config's).
//!
//! Where a message enters: the embedded broker asks in its publish ACL hook, after the ACL
//! allowed the message and before it is routed to anyone (a dropped QoS 1 message is answered
//! with PUBACK reason 0x97 Quota exceeded on MQTT 5, a plain PUBACK on 3.1.1: the device does
//! not send it again); with an external broker the shards ask before they process a message
//! (the broker has routed it already; EMQX's own per-client limiter is applied by the
//! broker-config worker). Superusers (the backend) and bridge carriers are never throttled.
//! A dropped message is counted per topic and Unit in the load meter
//! ([`super::load::LoadMeter::record_dropped`]), which the Unit's owner reads in its load
//! report, and in the MQTT counters.
//!
//! The buckets are striped by topic like the meter. A rule change starts every bucket afresh
//! (full). Topics whose buckets are full again are forgotten by the hourly job; at most
//! [`MAX_TOPICS`] are held, past which new topics pass unthrottled (counted).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::throttle::{Bucket, Limit, RuleSpec, Rules};
use crate::error::{AppError, AppResult};
use crate::store;

const STRIPES: usize = 16;
/// Topics held at most; past it new topics pass unthrottled and are counted.
pub const MAX_TOPICS: usize = 1_000_000;
/// Scope of the instance's rules in `throttle_rules` (users' rules are keyed by their uuid).
const INSTANCE_SCOPE: &str = "instance";
/// Users with rules of their own at most.
pub const MAX_USER_OVERRIDES: usize = 100_000;

/// Who published a message: the Unit and its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject {
    pub unit: Uuid,
    pub user: Uuid,
}

/// What became of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped: over its topic's limit (the Unit named).
    Drop(Uuid),
    /// The topic has no bucket yet: ask again with its [`Subject`].
    NeedSubject,
}

struct Policy {
    rules: Rules,
    /// Whether the admin set `rules` (else they are the config's).
    from_admin: bool,
    users: HashMap<Uuid, Rules>,
}

struct TopicBucket {
    subject: Subject,
    generation: u64,
    limit: Limit,
    bucket: Bucket,
}

/// The instance's throttle (one per instance).
pub struct Throttle {
    domain: String,
    config_rules: Rules,
    policy: RwLock<Arc<Policy>>,
    generation: AtomicU64,
    /// Whether any rule exists (no rules: every message passes without a lookup).
    active: AtomicBool,
    stripes: Vec<Mutex<HashMap<Box<str>, TopicBucket>>>,
    hasher: RandomState,
    topics: AtomicUsize,
    unthrottled: AtomicU64,
    epoch: Instant,
}

impl Throttle {
    pub fn new(domain: &str, config_rules: Rules) -> Throttle {
        let t = Throttle {
            domain: domain.to_string(),
            policy: RwLock::new(Arc::new(Policy {
                rules: config_rules.clone(),
                from_admin: false,
                users: HashMap::new(),
            })),
            config_rules,
            generation: AtomicU64::new(1),
            active: AtomicBool::new(false),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            topics: AtomicUsize::new(0),
            unthrottled: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        t.refresh_active();
        t
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn refresh_active(&self) {
        let p = self.policy();
        let any = p.rules.0.iter().any(|r| !r.limit.unlimited())
            || p.users
                .values()
                .any(|u| u.0.iter().any(|r| !r.limit.unlimited()));
        self.active.store(any, Relaxed);
    }

    fn set_policy(&self, change: impl FnOnce(&Policy) -> Policy) {
        {
            let mut guard = self.policy.write().unwrap_or_else(|e| e.into_inner());
            let next = change(&guard);
            *guard = Arc::new(next);
            // buckets made under the old rules take their new limit (full) when next used
            self.generation.fetch_add(1, Relaxed);
        }
        self.refresh_active();
    }

    /// Whether any limit exists: without one, nothing is looked up per message.
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn limit_for(&self, policy: &Policy, subject: &Subject, topic: &str) -> Limit {
        policy
            .users
            .get(&subject.user)
            .and_then(|r| r.find(&self.domain, topic))
            .or_else(|| policy.rules.find(&self.domain, topic))
            .map_or(
                Limit {
                    rate_milli: 0,
                    burst: 1,
                },
                |r| r.limit,
            )
    }

    /// One message on `topic` now. Without `subject`, a topic with no bucket yet answers
    /// [`Verdict::NeedSubject`].
    pub fn take(&self, topic: &str, subject: Option<Subject>) -> Verdict {
        self.take_at(topic, subject, self.now_ns())
    }

    /// [`Throttle::take`] at `now_ns` (nanoseconds of the throttle's clock; tests).
    pub fn take_at(&self, topic: &str, subject: Option<Subject>, now_ns: u64) -> Verdict {
        if !self.active() {
            return Verdict::Pass;
        }
        let generation = self.generation.load(Relaxed);
        let stripe = &self.stripes[(self.hasher.hash_one(topic) as usize) % STRIPES];
        let mut stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match (stripe.get_mut(topic), subject) {
            (Some(e), _) => {
                if e.generation != generation {
                    let policy = self.policy();
                    e.limit = self.limit_for(&policy, &e.subject, topic);
                    e.bucket = Bucket::full(&e.limit, now_ns);
                    e.generation = generation;
                }
                e
            }
            (None, None) => return Verdict::NeedSubject,
            (None, Some(subject)) => {
                if self.topics.load(Relaxed) >= MAX_TOPICS {
                    self.unthrottled.fetch_add(1, Relaxed);
                    return Verdict::Pass;
                }
                let policy = self.policy();
                let limit = self.limit_for(&policy, &subject, topic);
                self.topics.fetch_add(1, Relaxed);
                stripe.entry(topic.into()).or_insert(TopicBucket {
                    subject,
                    generation,
                    limit,
                    bucket: Bucket::full(&limit, now_ns),
                })
            }
        };
        if entry.bucket.take(&entry.limit, now_ns) {
            Verdict::Pass
        } else {
            Verdict::Drop(entry.subject.unit)
        }
    }

    /// Forgets topics whose buckets are full again (a fresh bucket is the same); the hourly
    /// job.
    pub fn sweep(&self) {
        self.sweep_at(self.now_ns());
    }

    fn sweep_at(&self, now: u64) {
        for stripe in &self.stripes {
            let mut stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
            let before = stripe.len();
            stripe.retain(|_, b| !b.bucket.is_full(&b.limit, now));
            self.topics.fetch_sub(before - stripe.len(), Relaxed);
            stripe.shrink_to_fit();
        }
    }

    /// Topics with a bucket now.
    pub fn topics(&self) -> usize {
        self.topics.load(Relaxed)
    }

    /// Messages let through unthrottled because [`MAX_TOPICS`] buckets existed.
    pub fn unthrottled(&self) -> u64 {
        self.unthrottled.load(Relaxed)
    }
}

/// The throttle's settings, as the admin reads them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ThrottleSettings {
    /// The rules in force, tried in order (a user's own rules first).
    pub rules: Vec<RuleSpec>,
    /// `config` (`PU_THROTTLE_RULES`) or `admin` (set over REST).
    pub source: String,
    /// The config's rules (what `DELETE /throttle` goes back to).
    pub config_rules: Vec<RuleSpec>,
    /// Users with rules of their own.
    pub users: Vec<UserThrottle>,
    /// EMQX's per-client message rate (`PU_THROTTLE_CLIENT_RATE`), 0: not limited.
    pub client_rate: u32,
    /// Topics with a bucket now, and messages passed unthrottled because too many had one.
    pub topics: usize,
    pub unthrottled_messages: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserThrottle {
    pub user_uuid: Uuid,
    pub rules: Vec<RuleSpec>,
}

/// `PUT /throttle` and `PUT /throttle/users/{uuid}`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRulesInput {
    pub rules: Vec<RuleSpec>,
}

impl Instance {
    /// Reads the rules the admin stored (at start).
    pub(super) async fn load_throttle_rules(&self) -> anyhow::Result<()> {
        let rows = store::throttle::all(self.pool()).await?;
        let mut instance_rules = None;
        let mut users = HashMap::new();
        for row in rows {
            let rules = match Rules::parse(&row.rules) {
                Ok(r) => r,
                Err(e) => {
                    // written by us and checked before; a row that no longer parses is skipped
                    tracing::error!(scope = %row.scope, error = %e, "stored throttle rules are unreadable, ignored");
                    continue;
                }
            };
            if row.scope == INSTANCE_SCOPE {
                instance_rules = Some(rules);
            } else if let Ok(user) = Uuid::parse_str(&row.scope) {
                users.insert(user, rules);
            }
        }
        self.throttle.set_policy(|p| Policy {
            from_admin: instance_rules.is_some(),
            rules: instance_rules.unwrap_or_else(|| p.rules.clone()),
            users,
        });
        Ok(())
    }

    /// The publisher of an MQTT connection, for throttling: a Unit token's Unit and user.
    /// `None` for everyone else (the backend, bridge carriers): they are not throttled.
    pub async fn throttle_subject(&self, token: &str) -> Option<Subject> {
        if self.bridge_claim(token).is_some() {
            return None;
        }
        match self.agent_from_token(Some(token)).await {
            Ok(Agent::Unit(u)) => Some(Subject {
                unit: u.uuid,
                user: u.creator_uuid,
            }),
            _ => None,
        }
    }

    /// A Unit's throttling subject (the shards, with an external broker).
    pub async fn throttle_subject_of_unit(&self, unit: Uuid) -> AppResult<Option<Subject>> {
        match self.unit_row(unit).await {
            Ok(u) => Ok(Some(Subject {
                unit: u.uuid,
                user: u.creator_uuid,
            })),
            Err(AppError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /throttle` (admins).
    pub fn throttle_settings(&self, agent: &Agent) -> AppResult<ThrottleSettings> {
        require_admin(agent)?;
        let p = self.throttle.policy();
        let mut users: Vec<UserThrottle> = p
            .users
            .iter()
            .map(|(u, r)| UserThrottle {
                user_uuid: *u,
                rules: r.specs(),
            })
            .collect();
        users.sort_by_key(|u| u.user_uuid);
        Ok(ThrottleSettings {
            rules: p.rules.specs(),
            source: if p.from_admin { "admin" } else { "config" }.to_string(),
            config_rules: self.throttle.config_rules.specs(),
            users,
            client_rate: self.config.throttle_client_rate,
            topics: self.throttle.topics(),
            unthrottled_messages: self.throttle.unthrottled(),
        })
    }

    /// `PUT /throttle`: the instance's rules (admins); stored, in force at once.
    pub async fn set_throttle_rules(
        &self,
        agent: &Agent,
        input: &ThrottleRulesInput,
    ) -> AppResult<ThrottleSettings> {
        require_admin(agent)?;
        let _settings = self.admin_settings.lock().await;
        let rules = Rules::from_specs(&input.rules).map_err(|e| AppError::validation(e.0))?;
        store::throttle::put(self.pool(), INSTANCE_SCOPE, &rules.to_text()).await?;
        self.throttle.set_policy(|p| Policy {
            rules,
            from_admin: true,
            users: p.users.clone(),
        });
        self.throttle_settings(agent)
    }

    /// `DELETE /throttle`: back to the config's rules (admins).
    pub async fn reset_throttle_rules(&self, agent: &Agent) -> AppResult<ThrottleSettings> {
        require_admin(agent)?;
        let _settings = self.admin_settings.lock().await;
        store::throttle::delete(self.pool(), INSTANCE_SCOPE).await?;
        let config_rules = self.throttle.config_rules.clone();
        self.throttle.set_policy(|p| Policy {
            rules: config_rules,
            from_admin: false,
            users: p.users.clone(),
        });
        self.throttle_settings(agent)
    }

    /// `PUT /throttle/users/{uuid}`: a user's own rules, tried before the instance's
    /// (admins).
    pub async fn set_user_throttle(
        &self,
        agent: &Agent,
        user: Uuid,
        input: &ThrottleRulesInput,
    ) -> AppResult<ThrottleSettings> {
        require_admin(agent)?;
        let _settings = self.admin_settings.lock().await;
        let rules = Rules::from_specs(&input.rules).map_err(|e| AppError::validation(e.0))?;
        if store::users::get(self.pool(), user).await?.is_none() {
            return Err(AppError::not_found());
        }
        let p = self.throttle.policy();
        if !p.users.contains_key(&user) && p.users.len() >= MAX_USER_OVERRIDES {
            return Err(AppError::validation(format!(
                "at most {MAX_USER_OVERRIDES} users may have rules of their own"
            )));
        }
        store::throttle::put(self.pool(), &user.to_string(), &rules.to_text()).await?;
        self.throttle.set_policy(|p| {
            let mut users = p.users.clone();
            users.insert(user, rules);
            Policy {
                rules: p.rules.clone(),
                from_admin: p.from_admin,
                users,
            }
        });
        self.throttle_settings(agent)
    }

    /// `DELETE /throttle/users/{uuid}`: the user goes back to the instance's rules (admins).
    pub async fn delete_user_throttle(
        &self,
        agent: &Agent,
        user: Uuid,
    ) -> AppResult<ThrottleSettings> {
        require_admin(agent)?;
        let _settings = self.admin_settings.lock().await;
        if !self.throttle.policy().users.contains_key(&user) {
            return Err(AppError::not_found());
        }
        store::throttle::delete(self.pool(), &user.to_string()).await?;
        self.throttle.set_policy(|p| {
            let mut users = p.users.clone();
            users.remove(&user);
            Policy {
                rules: p.rules.clone(),
                from_admin: p.from_admin,
                users,
            }
        });
        self.throttle_settings(agent)
    }
}

fn require_admin(agent: &Agent) -> AppResult<()> {
    agent.user()?;
    if agent.is_admin() {
        Ok(())
    } else {
        Err(AppError::no_access("Only an Admin manages throttling"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const D: &str = "example.com";

    fn subject(n: u128) -> Subject {
        Subject {
            unit: Uuid::from_u128(n),
            user: Uuid::from_u128(1000 + n),
        }
    }

    fn node(n: u128) -> String {
        format!("{D}/{}/pepeunit", Uuid::from_u128(n))
    }

    #[test]
    fn no_rules_no_lookups() {
        let t = Throttle::new(D, Rules::default());
        assert!(!t.active());
        assert_eq!(t.take_at(&node(1), None, 0), Verdict::Pass);
        assert_eq!(t.topics(), 0);
    }

    #[test]
    fn a_topic_needs_its_subject_once() {
        let t = Throttle::new(D, Rules::defaults());
        assert_eq!(t.take_at(&node(1), None, 0), Verdict::NeedSubject);
        for _ in 0..3 {
            assert_eq!(t.take_at(&node(1), Some(subject(1)), 0), Verdict::Pass);
        }
        assert_eq!(
            t.take_at(&node(1), None, 0),
            Verdict::Drop(Uuid::from_u128(1))
        );
        assert_eq!(t.take_at(&node(1), None, S), Verdict::Pass);
    }

    #[test]
    fn many_topics_of_one_unit_have_a_bucket_each() {
        let t = Throttle::new(D, Rules::defaults());
        let s = subject(7);
        for n in 0..1000 {
            for _ in 0..3 {
                assert_eq!(t.take_at(&node(n), Some(s), 0), Verdict::Pass);
            }
            assert_eq!(t.take_at(&node(n), Some(s), 0), Verdict::Drop(s.unit));
        }
        assert_eq!(t.topics(), 1000);
        // a second later each topic has one token again; after three, all are full: forgotten
        for n in 0..1000 {
            assert_eq!(t.take_at(&node(n), None, S), Verdict::Pass);
            assert_eq!(t.take_at(&node(n), None, S), Verdict::Drop(s.unit));
        }
    }

    #[test]
    fn a_users_rules_come_first_and_a_change_refills() {
        let t = Throttle::new(D, Rules::defaults());
        let s = subject(1);
        let other = subject(2);
        t.set_policy(|p| Policy {
            rules: p.rules.clone(),
            from_admin: false,
            users: HashMap::from([(s.user, Rules::parse("{domain}/+/pepeunit=5:5").unwrap())]),
        });
        let passed = |sub: Subject, topic: &str| {
            (0..10)
                .filter(|_| t.take_at(topic, Some(sub), 0) == Verdict::Pass)
                .count()
        };
        assert_eq!(passed(s, &node(1)), 5);
        assert_eq!(passed(other, &node(2)), 3);
        // the instance's rules change: every bucket starts full under its new limit
        t.set_policy(|p| Policy {
            rules: Rules::parse("{domain}/+/pepeunit=2:2").unwrap(),
            from_admin: true,
            users: p.users.clone(),
        });
        assert_eq!(passed(other, &node(2)), 2);
        assert_eq!(passed(s, &node(1)), 5);
        // unlimited everywhere: off
        t.set_policy(|_| Policy {
            rules: Rules::parse("{domain}/#=0").unwrap(),
            from_admin: true,
            users: HashMap::new(),
        });
        assert!(!t.active());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let t = Throttle::new(D, Rules::defaults());
        assert_eq!(t.take_at(&node(1), Some(subject(1)), 0), Verdict::Pass);
        assert_eq!(t.take_at(&node(2), Some(subject(1)), S / 2), Verdict::Pass);
        // node 1 has its token back a second after taking it; node 2 not yet
        t.sweep_at(S);
        assert_eq!(t.topics(), 1);
        assert_eq!(t.take_at(&node(1), None, S), Verdict::NeedSubject);
        assert_eq!(t.take_at(&node(2), None, S), Verdict::Pass);
    }
}
