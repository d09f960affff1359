//! Request rates from periodic samples of the channel totals: the sampler pushes the totals
//! every few seconds; a rate over a window is the difference between the newest sample and the
//! oldest one inside the window, divided by the time between them.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples covering at least `keep` (the longest window asked for).
pub struct Rates<const N: usize> {
    keep: Duration,
    samples: VecDeque<(Duration, [u64; N])>,
}

impl<const N: usize> Rates<N> {
    pub fn new(keep: Duration) -> Self {
        Rates {
            keep,
            samples: VecDeque::new(),
        }
    }

    /// Adds the totals observed at `at` (time since a fixed start, non-decreasing).
    pub fn push(&mut self, at: Duration, totals: [u64; N]) {
        self.samples.push_back((at, totals));
        // drop the oldest while the next one still covers the longest window
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.saturating_sub(*t) >= self.keep)
        {
            self.samples.pop_front();
        }
    }

    /// Events per second of counter `i` over (at most) the last `window`; 0 before two samples.
    pub fn rate(&self, i: usize, window: Duration) -> f64 {
        let Some((last_at, last)) = self.samples.back() else {
            return 0.0;
        };
        let Some((first_at, first)) = self
            .samples
            .iter()
            .find(|(t, _)| last_at.saturating_sub(*t) <= window)
        else {
            return 0.0;
        };
        let secs = last_at.saturating_sub(*first_at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let per_sec = last[i].saturating_sub(first[i]) as f64 / secs;
        (per_sec * 1000.0).round() / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn rates_over_windows() {
        let mut r = Rates::<2>::new(s(300));
        assert_eq!(r.rate(0, s(60)), 0.0);
        r.push(s(0), [0, 0]);
        assert_eq!(r.rate(0, s(60)), 0.0, "one sample has no rate");
        // counter 0: 1/s for 4 minutes, then 10/s for a minute
        for t in (5..=240).step_by(5) {
            r.push(s(t), [t, 0]);
        }
        for t in (245..=300).step_by(5) {
            r.push(s(t), [240 + (t - 240) * 10, 7]);
        }
        assert_eq!(r.rate(0, s(60)), 10.0);
        assert_eq!(r.rate(0, s(300)), 840.0 / 300.0);
        assert_eq!(r.rate(1, s(60)), 0.117);
        // older samples are dropped but the 5-minute window stays covered
        r.push(s(600), [840, 7]);
        assert_eq!(r.rate(0, s(300)), 0.0);
        assert!(r.samples.len() <= 62);
    }
}
