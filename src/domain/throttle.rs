//! Throttling vocabulary (SPEC §8): per-topic limits chosen by topic pattern, and the token
//! bucket that enforces one. Pure and clocked by the caller (nanoseconds of a monotonic clock),
//! so every boundary is testable.
//!
//! A [`Limit`] is a sustained rate (messages per second, to the thousandth) and a burst (the
//! bucket's capacity, whole messages). A topic's bucket starts full: `burst` messages pass at
//! once, then one more every `1 / rate` seconds. Arithmetic is exact: one token is
//! [`TOKEN`] units and a nanosecond refills `rate_milli` units, so a message exactly at the
//! instant its token is complete passes and one a nanosecond earlier does not. A clock that
//! goes back refills nothing (and takes nothing back).
//!
//! [`Rules`] are `PATTERN=RATE[:BURST]` entries; the first whose pattern matches a topic gives
//! its limit, a topic no rule matches is not limited, and a rate of 0 means unlimited. Patterns
//! are MQTT filters (`+` one level, `#` the rest) whose level `{domain}` stands for the
//! instance's domain.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Units of bucket level per token: with this scale a nanosecond at `rate_milli`
/// thousandths of a message per second refills exactly `rate_milli` units.
pub const TOKEN: u64 = 1_000_000_000_000;
/// Highest rate a rule may give (messages per second).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Highest burst a rule may give (messages).
pub const MAX_BURST: u32 = 1_000_000;
/// Rules in one set at most.
pub const MAX_RULES: usize = 64;
/// Longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 256;
/// The level standing for the instance's domain in a pattern.
pub const DOMAIN_LEVEL: &str = "{domain}";

/// The rules of a fresh instance (SPEC §8), in the order they are tried:
///
/// - a unit's `log` topic: 1 message/s with a burst of 60. The official client sends one
///   message per log line, and a device writes a handful to a few dozen lines at once (a boot,
///   a command and its answer, a `LogSync` answer followed by its own line); a burst of 60 keeps
///   those whole while the sustained rate stays that of the other unit base topics;
/// - the other unit base topics (`state`, ...): 1 message/s, burst 3;
/// - node topics the platform processes (`/pepeunit`): 1 message/s, burst 3;
/// - other node topics (device to device): 10 messages/s, burst 20.
pub const DEFAULT_RULES: &str = "{domain}/output_base_topic/+/log/pepeunit=1:60,\
{domain}/+/+/+/pepeunit=1:3,{domain}/+/pepeunit=1:3,{domain}/+=10:20";

/// A sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Thousandths of a message per second; 0 is unlimited.
    pub rate_milli: u64,
    /// Messages that may pass at once (the bucket's capacity), at least 1.
    pub burst: u32,
}

impl Limit {
    pub fn unlimited(&self) -> bool {
        self.rate_milli == 0
    }

    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
    }

    fn capacity(&self) -> u64 {
        u64::from(self.burst) * TOKEN
    }
}

/// One topic's token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    level: u64,
    at_ns: u64,
}

impl Bucket {
    /// A full bucket at `now_ns`.
    pub fn full(limit: &Limit, now_ns: u64) -> Bucket {
        Bucket {
            level: limit.capacity(),
            at_ns: now_ns,
        }
    }

    /// Whether one message at `now_ns` passes (taking its token) or is dropped.
    pub fn take(&mut self, limit: &Limit, now_ns: u64) -> bool {
        if limit.unlimited() {
            return true;
        }
        let capacity = limit.capacity();
        if now_ns > self.at_ns {
            let refill = u128::from(now_ns - self.at_ns) * u128::from(limit.rate_milli);
            let level = (u128::from(self.level) + refill).min(u128::from(capacity));
            self.level = level as u64;
            self.at_ns = now_ns;
        }
        if self.level >= TOKEN {
            self.level -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now_ns` (it can be forgotten: a fresh one is the same).
    pub fn is_full(&self, limit: &Limit, now_ns: u64) -> bool {
        if limit.unlimited() {
            return true;
        }
        let refill = u128::from(now_ns.saturating_sub(self.at_ns)) * u128::from(limit.rate_milli);
        u128::from(self.level) + refill >= u128::from(limit.capacity())
    }
}

/// One rule: topics matching `pattern` get `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub limit: Limit,
}

/// A rule as REST and GraphQL show and take it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// An MQTT filter; the level `{domain}` is the instance's domain.
    pub pattern: String,
    /// Messages per second (to the thousandth); 0 is unlimited.
    pub rate: f64,
    /// Messages that may pass at once; when omitted, the rate rounded up (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Why a rule set was refused, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// Rules tried in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Parses `PATTERN=RATE[:BURST],...` (spaces around entries allowed; empty: no rules).
    pub fn parse(text: &str) -> Result<Rules, RuleError> {
        let mut specs = Vec::new();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return Err(RuleError(format!("entry {}: empty", i + 1)));
            }
            let Some((pattern, limit)) = entry.rsplit_once('=') else {
                return Err(RuleError(format!(
                    "entry {} ({entry:?}): must be PATTERN=RATE or PATTERN=RATE:BURST",
                    i + 1
                )));
            };
            let (rate, burst) = match limit.split_once(':') {
                Some((r, b)) => (r, Some(b)),
                None => (limit, None),
            };
            let rate = parse_rate(rate.trim())
                .ok_or_else(|| RuleError(format!("entry {} ({entry:?}): the rate {rate:?} must be a number of messages per second from 0 to {MAX_RATE}, at most 3 decimals", i + 1)))?;
            let burst = match burst {
                None => None,
                Some(b) => Some(b.trim().parse::<u32>().map_err(|_| {
                    RuleError(format!(
                        "entry {} ({entry:?}): the burst {b:?} must be a whole number from 1 to {MAX_BURST}",
                        i + 1
                    ))
                })?),
            };
            specs.push((pattern.trim().to_string(), rate, burst));
        }
        Rules::build(specs)
    }

    /// Rules from their REST/GraphQL form.
    pub fn from_specs(specs: &[RuleSpec]) -> Result<Rules, RuleError> {
        let mut out = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            if !s.rate.is_finite() || !(0.0..=MAX_RATE).contains(&s.rate) {
                return Err(RuleError(format!(
                    "rule {} ({}): the rate must be from 0 to {MAX_RATE} messages per second",
                    i + 1,
                    s.pattern
                )));
            }
            let milli = (s.rate * 1000.0).round();
            if (milli / 1000.0 - s.rate).abs() > 1e-9 {
                return Err(RuleError(format!(
                    "rule {} ({}): the rate has more than 3 decimals",
                    i + 1,
                    s.pattern
                )));
            }
            out.push((s.pattern.clone(), milli as u64, s.burst));
        }
        Rules::build(out)
    }

    fn build(specs: Vec<(String, u64, Option<u32>)>) -> Result<Rules, RuleError> {
        if specs.len() > MAX_RULES {
            return Err(RuleError(format!(
                "{} rules: at most {MAX_RULES}",
                specs.len()
            )));
        }
        let mut rules = Vec::with_capacity(specs.len());
        for (i, (pattern, rate_milli, burst)) in specs.into_iter().enumerate() {
            check_pattern(&pattern).map_err(|why| {
                RuleError(format!("rule {} ({pattern:?}): the pattern {why}", i + 1))
            })?;
            if rules.iter().any(|r: &Rule| r.pattern == pattern) {
                return Err(RuleError(format!(
                    "rule {} ({pattern:?}): the pattern appears twice",
                    i + 1
                )));
            }
            let burst = match burst {
                Some(b) if (1..=MAX_BURST).contains(&b) => b,
                Some(_) => {
                    return Err(RuleError(format!(
                        "rule {} ({pattern:?}): the burst must be from 1 to {MAX_BURST}",
                        i + 1
                    )))
                }
                // the rate rounded up, at least one message
                None => rate_milli.div_ceil(1000).clamp(1, u64::from(MAX_BURST)) as u32,
            };
            rules.push(Rule {
                pattern,
                limit: Limit { rate_milli, burst },
            });
        }
        Ok(Rules(rules))
    }

    /// The defaults of a fresh instance ([`DEFAULT_RULES`]).
    pub fn defaults() -> Rules {
        Rules::parse(DEFAULT_RULES).expect("the default rules parse")
    }

    /// The first rule matching `topic` on an instance of `domain`.
    pub fn find(&self, domain: &str, topic: &str) -> Option<&Rule> {
        self.0.iter().find(|r| matches(&r.pattern, domain, topic))
    }

    /// The REST/GraphQL form.
    pub fn specs(&self) -> Vec<RuleSpec> {
        self.0
            .iter()
            .map(|r| RuleSpec {
                pattern: r.pattern.clone(),
                rate: r.limit.rate(),
                burst: Some(r.limit.burst),
            })
            .collect()
    }

    /// The text form `PATTERN=RATE:BURST,...` (what [`Rules::parse`] reads).
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{}={}:{}", r.pattern, r.limit.rate(), r.limit.burst))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A rate in messages per second, to the thousandth, as thousandths.
fn parse_rate(s: &str) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || frac.len() > 3 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut frac_milli: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..3 {
        frac_milli *= 10;
    }
    let milli = int.checked_mul(1000)?.checked_add(frac_milli)?;
    (milli <= (MAX_RATE as u64) * 1000).then_some(milli)
}

fn check_pattern(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.len() > MAX_PATTERN_LEN {
        return Err("is longer than 256 characters");
    }
    let levels: Vec<&str> = p.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "" => return Err("has an empty level"),
            "#" if i + 1 != levels.len() => return Err("has # before its last level"),
            "#" | "+" | DOMAIN_LEVEL => {}
            l if l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') => {}
            _ => {
                return Err(
                    "may hold only letters, digits, _ - . levels, + and # wildcards and {domain}",
                )
            }
        }
    }
    Ok(())
}

/// Whether `topic` matches `pattern` (MQTT filter semantics, `{domain}` = `domain`).
pub fn matches(pattern: &str, domain: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for p in pattern.split('/') {
        if p == "#" {
            return true;
        }
        let Some(level) = t.next() else {
            return false;
        };
        let ok = match p {
            "+" => true,
            DOMAIN_LEVEL => level == domain,
            lit => level == lit,
        };
        if !ok {
            return false;
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn limit(rate: f64, burst: u32) -> Limit {
        Limit {
            rate_milli: (rate * 1000.0) as u64,
            burst,
        }
    }

    #[test]
    fn exactly_the_burst_passes_and_one_more_is_dropped() {
        let l = limit(10.0, 10);
        let mut b = Bucket::full(&l, 5 * S);
        for _ in 0..10 {
            assert!(b.take(&l, 5 * S));
        }
        assert!(!b.take(&l, 5 * S));
        // the next token is whole exactly 100 ms later, not a nanosecond before
        assert!(!b.take(&l, 5 * S + S / 10 - 1));
        assert!(b.take(&l, 5 * S + S / 10));
        assert!(!b.take(&l, 5 * S + S / 10));
    }

    #[test]
    fn a_second_carries_the_burst_plus_the_rate_then_the_rate() {
        let l = limit(1.0, 3);
        let mut b = Bucket::full(&l, 0);
        let mut passed = 0;
        // one message every 10 ms for 10 s: 3 at once, then one per second
        for i in 0..1000u64 {
            if b.take(&l, i * S / 100) {
                passed += 1;
            }
        }
        assert_eq!(passed, 3 + 9);
    }

    #[test]
    fn a_long_silence_fills_the_bucket_to_the_burst_only() {
        let l = limit(2.0, 4);
        let mut b = Bucket::full(&l, 0);
        for _ in 0..4 {
            assert!(b.take(&l, 0));
        }
        assert!(!b.is_full(&l, S));
        assert!(b.is_full(&l, 2 * S));
        let later = 86_400 * 365 * S;
        assert!(b.is_full(&l, later));
        for _ in 0..4 {
            assert!(b.take(&l, later));
        }
        assert!(!b.take(&l, later));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let l = limit(1.0, 1);
        let mut b = Bucket::full(&l, 10 * S);
        assert!(b.take(&l, 10 * S));
        assert!(!b.take(&l, 9 * S));
        // time is counted from the latest instant seen, not from the earlier one
        assert!(!b.take(&l, 11 * S - 1));
        assert!(b.take(&l, 11 * S));
    }

    #[test]
    fn fractional_rates_are_exact() {
        let l = limit(0.5, 1);
        let mut b = Bucket::full(&l, 0);
        assert!(b.take(&l, 0));
        assert!(!b.take(&l, 2 * S - 1));
        assert!(b.take(&l, 2 * S));
        let l = Limit {
            rate_milli: 1,
            burst: 1,
        };
        let mut b = Bucket::full(&l, 0);
        assert!(b.take(&l, 0));
        assert!(!b.take(&l, 1000 * S - 1));
        assert!(b.take(&l, 1000 * S));
    }

    #[test]
    fn unlimited_passes_everything() {
        let l = limit(0.0, 1);
        let mut b = Bucket::full(&l, 0);
        for _ in 0..100_000 {
            assert!(b.take(&l, 0));
        }
    }

    #[test]
    fn the_largest_limits_do_not_overflow() {
        let l = Limit {
            rate_milli: (MAX_RATE as u64) * 1000,
            burst: MAX_BURST,
        };
        let mut b = Bucket::full(&l, 0);
        for _ in 0..1000 {
            assert!(b.take(&l, 0));
        }
        assert!(!b.is_full(&l, 0));
        // the longest silence refills to the burst, no further
        assert!(b.is_full(&l, u64::MAX));
        assert!(b.take(&l, u64::MAX));
        assert!(!b.is_full(&l, u64::MAX));
    }

    #[test]
    fn patterns_match_like_mqtt_filters() {
        let d = "example.com";
        assert!(matches("{domain}/+", d, "example.com/abc"));
        assert!(!matches("{domain}/+", d, "example.com/abc/pepeunit"));
        assert!(!matches("{domain}/+", d, "other.org/abc"));
        assert!(matches(
            "{domain}/+/pepeunit",
            d,
            "example.com/abc/pepeunit"
        ));
        assert!(matches(
            "{domain}/+/+/+/pepeunit",
            d,
            "example.com/output_base_topic/u/state/pepeunit"
        ));
        assert!(matches("{domain}/#", d, "example.com/a/b/c"));
        assert!(matches("#", d, "anything/at/all"));
        assert!(!matches("{domain}/+/+", d, "example.com/a"));
        assert!(matches("x/y", d, "x/y"));
        assert!(!matches("x/y", d, "x/y/z"));
    }

    #[test]
    fn the_defaults_give_the_documented_limits() {
        let r = Rules::defaults();
        let d = "pepeunit.example";
        let unit = "00000000-0000-0000-0000-000000000001";
        let get = |t: &str| r.find(d, t).map(|r| (r.limit.rate(), r.limit.burst));
        assert_eq!(
            get(&format!("{d}/output_base_topic/{unit}/log/pepeunit")),
            Some((1.0, 60))
        );
        assert_eq!(
            get(&format!("{d}/output_base_topic/{unit}/state/pepeunit")),
            Some((1.0, 3))
        );
        assert_eq!(
            get(&format!("{d}/input_base_topic/{unit}/update/pepeunit")),
            Some((1.0, 3))
        );
        assert_eq!(get(&format!("{d}/{unit}/pepeunit")), Some((1.0, 3)));
        assert_eq!(get(&format!("{d}/{unit}")), Some((10.0, 20)));
        assert_eq!(get(&format!("other.example/{unit}")), None);
        assert_eq!(Rules::parse(&r.to_text()).unwrap(), r);
    }

    #[test]
    fn rule_text_is_checked() {
        assert_eq!(Rules::parse("").unwrap(), Rules::default());
        assert_eq!(Rules::parse("  ").unwrap(), Rules::default());
        let r = Rules::parse(" a/+ = 2.5 , b/# =0").unwrap();
        assert_eq!(
            r.0[0].limit,
            Limit {
                rate_milli: 2500,
                burst: 3
            }
        );
        assert_eq!(
            r.0[1].limit,
            Limit {
                rate_milli: 0,
                burst: 1
            }
        );
        for bad in [
            "a/+",
            "a/+=x",
            "a/+=-1",
            "a/+=1.2345",
            "a/+=1.",
            "a/+=1:0",
            "a/+=1:x",
            "a/+=2000000",
            "a/#/b=1",
            "a//b=1",
            "=1",
            "a/$=1",
            "a=1,,b=1",
            "a=1,a=2",
        ] {
            assert!(Rules::parse(bad).is_err(), "{bad:?} was taken");
        }
        let long = format!("{}=1", "a".repeat(300));
        assert!(Rules::parse(&long).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("t{i}=1")).collect();
        assert!(Rules::parse(&many.join(",")).is_err());
    }

    #[test]
    fn specs_are_checked() {
        let ok = Rules::from_specs(&[RuleSpec {
            pattern: "{domain}/+".into(),
            rate: 0.25,
            burst: None,
        }])
        .unwrap();
        assert_eq!(
            ok.0[0].limit,
            Limit {
                rate_milli: 250,
                burst: 1
            }
        );
        for (rate, burst) in [
            (f64::NAN, None),
            (-1.0, None),
            (0.0001, None),
            (2e6, None),
            (1.0, Some(0)),
        ] {
            let spec = RuleSpec {
                pattern: "{domain}/+".into(),
                rate,
                burst,
            };
            assert!(Rules::from_specs(&[spec]).is_err(), "{rate} {burst:?}");
        }
    }
}
