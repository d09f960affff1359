//! Load vocabulary (SPEC §7): messages per second over sliding windows and the load classes
//! of Units. Pure and clocked by the caller (whole seconds since the Unix epoch), so every
//! edge is testable.
//!
//! A topic's rates come from two rings of counts: six 10-second buckets for the last minute
//! and twelve 5-minute buckets for the last hour (72 bytes, whatever the traffic). A window
//! holds the current, partly elapsed bucket and the full ones before it: the 1-minute rate is
//! the count of those buckets over the seconds they span, `50 + now % 10 + 1` (the current
//! second counts whole), the 1-hour rate likewise over `3300 + now % 300 + 1`. A clock that
//! goes back (a corrected wall clock) adds to the newest bucket instead of rewriting history.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const MINUTE_BUCKETS: usize = 6;
const MINUTE_BUCKET_SECS: u64 = 10;
const HOUR_BUCKETS: usize = 12;
const HOUR_BUCKET_SECS: u64 = 300;

/// One ring of counts: `buckets[i % N]` holds bucket number `i` (seconds / width) for the N
/// newest numbers up to `newest`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ring<const N: usize> {
    buckets: [u32; N],
    /// Number of the newest bucket written (0: none yet).
    newest: u32,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Ring {
            buckets: [0; N],
            newest: 0,
        }
    }
}

impl<const N: usize> Ring<N> {
    fn record(&mut self, bucket: u64, n: u32) {
        let bucket = u32::try_from(bucket).unwrap_or(u32::MAX);
        if bucket > self.newest {
            // clear the buckets skipped since the newest (all of them after a long pause)
            let gap = (bucket - self.newest).min(N as u32);
            for k in 0..gap {
                self.buckets[((bucket - k) as usize) % N] = 0;
            }
            self.newest = bucket;
        }
        // a bucket older than the newest (the clock went back) counts in the newest one
        let slot = (self.newest as usize) % N;
        self.buckets[slot] = self.buckets[slot].saturating_add(n);
    }

    /// The count of the N buckets ending at `bucket`: those the ring still holds (the N
    /// newest written) that fall in the window.
    fn count(&self, bucket: u64) -> u64 {
        let end = u32::try_from(bucket).unwrap_or(u32::MAX);
        let lo = end
            .saturating_sub(N as u32 - 1)
            .max(self.newest.saturating_sub(N as u32 - 1));
        let hi = end.min(self.newest);
        (lo..=hi)
            .map(|b| u64::from(self.buckets[(b as usize) % N]))
            .sum()
    }
}

/// Sliding 1-minute and 1-hour message counts of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    minute: Ring<MINUTE_BUCKETS>,
    hour: Ring<HOUR_BUCKETS>,
}

/// Messages per second over the last minute and the last hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Mps {
    pub minute: f64,
    pub hour: f64,
}

impl std::ops::Add for Mps {
    type Output = Mps;

    fn add(self, other: Mps) -> Mps {
        Mps {
            minute: self.minute + other.minute,
            hour: self.hour + other.hour,
        }
    }
}

impl Mps {
    /// The average over `n` (zero over none).
    pub fn average(self, n: usize) -> Mps {
        if n == 0 {
            return Mps::default();
        }
        Mps {
            minute: self.minute / n as f64,
            hour: self.hour / n as f64,
        }
    }
}

impl Rates {
    /// `n` messages at `now` (seconds since the epoch).
    pub fn record(&mut self, now: u64, n: u32) {
        self.minute.record(now / MINUTE_BUCKET_SECS, n);
        self.hour.record(now / HOUR_BUCKET_SECS, n);
    }

    /// Messages in the 1-minute and the 1-hour window ending at `now`.
    pub fn counts(&self, now: u64) -> (u64, u64) {
        (
            self.minute.count(now / MINUTE_BUCKET_SECS),
            self.hour.count(now / HOUR_BUCKET_SECS),
        )
    }

    /// Messages per second over the windows ending at `now`.
    pub fn per_second(&self, now: u64) -> Mps {
        let (m, h) = self.counts(now);
        Mps {
            minute: m as f64 / window_secs(now, MINUTE_BUCKETS, MINUTE_BUCKET_SECS),
            hour: h as f64 / window_secs(now, HOUR_BUCKETS, HOUR_BUCKET_SECS),
        }
    }

    /// Whether nothing was counted within the last hour before `now`.
    pub fn idle(&self, now: u64) -> bool {
        self.counts(now).1 == 0
    }
}

/// Seconds a window of `n` buckets of `width` spans at `now`: the full buckets before the
/// current one and the current one's elapsed seconds, the current second included.
fn window_secs(now: u64, n: usize, width: u64) -> f64 {
    ((n as u64 - 1) * width + now % width + 1) as f64
}

/// Where a Unit's load stands among the instance's Units (by its 1-hour messages per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum LoadClass {
    /// Nothing in the last hour.
    Idle,
    /// Below the median of the Units with traffic.
    Light,
    /// From the median up to the 90th percentile.
    Moderate,
    /// From the 90th up to the 99th percentile.
    Heavy,
    /// The top 1%.
    Extreme,
}

/// The class of each value among `values` (1-hour rates of the instance's Units): its
/// percentile rank among the non-zero values, the share of non-zero values strictly below
/// it. Equal values get the same class.
pub fn classify(values: &[f64]) -> Vec<LoadClass> {
    let mut busy: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
    busy.sort_by(f64::total_cmp);
    values
        .iter()
        .map(|v| {
            if *v <= 0.0 || v.is_nan() {
                return LoadClass::Idle;
            }
            let below = busy.partition_point(|b| b < v) as f64;
            let rank = below / busy.len() as f64;
            match rank {
                r if r >= 0.99 => LoadClass::Extreme,
                r if r >= 0.90 => LoadClass::Heavy,
                r if r >= 0.50 => LoadClass::Moderate,
                _ => LoadClass::Light,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `offset` seconds after a whole hour, so bucket edges fall on offsets divisible by 10
    /// and 300.
    fn at(offset: u64) -> u64 {
        const T0: u64 = 1_765_000_000;
        T0 - T0 % 3600 + offset
    }

    #[test]
    fn one_minute_window_counts_the_current_and_five_full_buckets() {
        let mut r = Rates::default();
        r.record(at(0), 6);
        // at 0: one bucket, 51 s of window
        assert_eq!(r.counts(at(0)), (6, 6));
        assert_eq!(r.per_second(at(0)).minute, 6.0 / 51.0);
        r.record(at(59), 4);
        // at 59 the window is buckets 0..=5 (0..60 s): 10 messages over 60 s
        assert_eq!(r.counts(at(59)).0, 10);
        assert_eq!(r.per_second(at(59)).minute, 10.0 / 60.0);
        // at 60 bucket 0 left the window
        assert_eq!(r.counts(at(60)).0, 4);
        assert_eq!(r.per_second(at(60)).minute, 4.0 / 51.0);
        // their bucket (50..60 s) counts up to 109 s, at 110 it left the window
        assert_eq!(r.counts(at(109)).0, 4);
        assert_eq!(r.counts(at(110)).0, 0);
        // the hour window still has all of them
        assert_eq!(r.counts(at(110)).1, 10);
    }

    #[test]
    fn a_long_pause_clears_the_rings_and_a_clock_going_back_adds_to_the_newest() {
        let mut r = Rates::default();
        r.record(at(5), 3);
        r.record(at(7200), 1);
        assert_eq!(
            r.counts(at(7200)),
            (1, 1),
            "two hours later only the new message"
        );
        r.record(at(7100), 2);
        assert_eq!(r.counts(at(7200)), (3, 3), "the late ones count now");
        assert!(r.idle(at(7200 + 3600)));
        assert!(!r.idle(at(7200 + 3599)));
    }

    #[test]
    fn hour_window_spans_eleven_full_buckets_and_the_current_one() {
        let mut r = Rates::default();
        for s in (0..3600).step_by(10) {
            r.record(at(s), 1);
        }
        // 360 messages in the hour, one every 10 s
        assert_eq!(r.counts(at(3599)).1, 360);
        assert!((r.per_second(at(3599)).hour - 0.1).abs() < 1e-9);
        // at 3600 the first 5 minutes (30 messages) are out, none new
        assert_eq!(r.counts(at(3600)).1, 330);
        assert_eq!(r.per_second(at(3600)).hour, 330.0 / 3301.0);
    }

    #[test]
    fn counts_never_overflow() {
        let mut r = Rates::default();
        r.record(at(0), u32::MAX);
        r.record(at(1), u32::MAX);
        assert_eq!(r.counts(at(1)), (u64::from(u32::MAX), u64::from(u32::MAX)));
    }

    #[test]
    fn classes_follow_percentile_ranks_among_busy_units() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        values.push(0.0);
        let classes = classify(&values);
        assert_eq!(classes[0], LoadClass::Light, "lowest");
        assert_eq!(classes[49], LoadClass::Light, "49 below: rank 0.49");
        assert_eq!(classes[50], LoadClass::Moderate, "50 below");
        assert_eq!(classes[89], LoadClass::Moderate);
        assert_eq!(classes[90], LoadClass::Heavy);
        assert_eq!(classes[98], LoadClass::Heavy);
        assert_eq!(classes[99], LoadClass::Extreme, "the top 1%");
        assert_eq!(classes[100], LoadClass::Idle);
        // equal values share a class; a lone busy unit is Light
        assert_eq!(classify(&[2.0, 2.0, 2.0]), [LoadClass::Light; 3]);
        assert_eq!(classify(&[0.5]), [LoadClass::Light]);
        assert_eq!(classify(&[f64::NAN, 0.0]), [LoadClass::Idle; 2]);
    }
}
