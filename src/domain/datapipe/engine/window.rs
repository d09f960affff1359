//! The open state of an Aggregation pipeline: per-step partial aggregates ("buckets") from
//! which every window, tumbling or sliding, before or after a resize, is computed.
//!
//! Time here is whole seconds since the Unix epoch (`i64`). A value at `t` (sub-second part
//! dropped: every boundary is a whole second, so `floor(t) < b` exactly when `t < b`) goes into
//! the bucket of its step slot `floor(t / step)`. A bucket remembers the first and last second
//! it holds a value for, and `{count, sum (compensated), min, max}` of its values: exact for
//! Min, Max and the count, and a sum correct to about one rounding for Sum and Avg, whichever
//! buckets a window combines.
//!
//! **A bucket counts in a window `[b - window, b)` when all its values are known to be in it:
//! `first >= b - window` and `last < b`.** For buckets made under the current step this is
//! exactly "the slot is inside the window". After a resize, a bucket made under an older step
//! whose values span two new slots ("straddling") counts only in windows that contain both ends:
//! its values cannot be split, and nothing is recomputed from values never kept.
//!
//! Invariants: buckets are in time order and disjoint (`a.last <= b.first` for consecutive
//! `a`, `b`), each holds at least one value, every number is finite, and there are at most
//! [`MAX_BUCKETS`].

use std::collections::VecDeque;

use crate::domain::datapipe::AggregationFunction;

/// Most buckets one pipeline keeps: a 24 h window at a 60 s step (1,440) with as many again
/// left from a resize. A value that would open one more is dropped (`DropReason::Capacity`).
pub const MAX_BUCKETS: usize = 2 * 1440;

/// The partial aggregate of the values of one step slot (or, after a resize, of a span that
/// straddles slots of the new step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// First and last second holding a value.
    pub first: i64,
    pub last: i64,
    pub count: u64,
    /// Neumaier-compensated sum: the sum is `sum + comp`.
    pub sum: f64,
    pub comp: f64,
    pub min: f64,
    pub max: f64,
}

impl Bucket {
    fn one(t: i64, x: f64) -> Bucket {
        Bucket {
            first: t,
            last: t,
            count: 1,
            sum: x,
            comp: 0.0,
            min: x,
            max: x,
        }
    }

    /// `self` with the values of `other` (which comes later) added; `None` when the sum would
    /// not be finite.
    fn merged(&self, other: &Bucket) -> Option<Bucket> {
        let (sum, comp) = add(self.sum, self.comp, other.sum)?;
        let comp = comp + other.comp;
        comp.is_finite().then_some(Bucket {
            first: self.first,
            last: other.last,
            count: self.count + other.count,
            sum,
            comp,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        })
    }

    /// Whether the bucket is well formed (used on restore).
    pub fn is_valid(&self) -> bool {
        self.first <= self.last
            && self.count > 0
            && [self.sum, self.comp, self.min, self.max]
                .iter()
                .all(|v| v.is_finite())
            && self.min <= self.max
    }
}

/// One step of Neumaier summation: `(sum, comp) + x`, or `None` when the sum would not be
/// finite.
fn add(sum: f64, comp: f64, x: f64) -> Option<(f64, f64)> {
    let t = sum + x;
    let comp = if sum.abs() >= x.abs() {
        comp + ((sum - t) + x)
    } else {
        comp + ((x - t) + sum)
    };
    (t.is_finite() && comp.is_finite()).then_some((t, comp))
}

/// Why a value was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its bucket's sum would not be finite.
    Overflow,
    /// It needs a new bucket and [`MAX_BUCKETS`] are open.
    Capacity,
}

/// The windows of one Aggregation pipeline.
#[derive(Clone, Debug)]
pub struct Windows {
    pub window: i64,
    pub step: i64,
    pub function: AggregationFunction,
    /// Every boundary at or before this second has been dealt with (emitted, or found empty).
    pub emitted_through: i64,
    pub buckets: VecDeque<Bucket>,
}

impl Windows {
    /// `window` and `step` are positive and `step` divides `window` (the caller checks).
    pub fn new(window: i64, step: i64, function: AggregationFunction, now: i64) -> Windows {
        Windows {
            window,
            step,
            function,
            emitted_through: now,
            buckets: VecDeque::new(),
        }
    }

    /// The smallest multiple of the step strictly after `t`.
    fn boundary_after(&self, t: i64) -> i64 {
        (t.div_euclid(self.step) + 1) * self.step
    }

    /// Adds a value at second `t`, which is not before any value already added.
    pub fn add(&mut self, t: i64, x: f64) -> Result<(), Refusal> {
        let slot = t.div_euclid(self.step);
        if let Some(back) = self.buckets.back_mut() {
            if back.first.div_euclid(self.step) == slot && back.last.div_euclid(self.step) == slot {
                let (sum, comp) = add(back.sum, back.comp, x).ok_or(Refusal::Overflow)?;
                back.last = back.last.max(t);
                back.count += 1;
                back.sum = sum;
                back.comp = comp;
                back.min = back.min.min(x);
                back.max = back.max.max(x);
                return Ok(());
            }
        }
        let len = self.buckets.len();
        if len >= MAX_BUCKETS {
            return Err(Refusal::Capacity);
        }
        if len == self.buckets.capacity() {
            // grow by doubling up to what the window can hold (`window / step` buckets of the
            // current step), never past the bound: VecDeque alone could reach twice either
            let natural = usize::try_from(self.window / self.step).unwrap_or(MAX_BUCKETS);
            let target = (len * 2).max(8).min(natural).max(len + 1).min(MAX_BUCKETS);
            self.buckets.reserve_exact(target - len);
        }
        self.buckets.push_back(Bucket::one(t, x));
        Ok(())
    }

    /// The next boundary whose window holds a whole bucket, if any: where `tick` is needed.
    pub fn next_boundary(&self) -> Option<i64> {
        // buckets are ordered, so the first that fits any window gives the earliest boundary
        self.buckets.iter().find_map(|b| {
            let at = self.boundary_after(self.emitted_through.max(b.last));
            (at - self.window <= b.first).then_some(at)
        })
    }

    /// Deals with every boundary at or before `now`: `emit(boundary, aggregate)` for each
    /// window that holds a value (`None`: the aggregate is not finite), then drops the buckets
    /// no later window can hold.
    pub fn advance(&mut self, now: i64, mut emit: impl FnMut(i64, Option<f64>)) {
        while let Some(at) = self.next_boundary().filter(|&at| at <= now) {
            emit(at, self.aggregate(at));
            self.emitted_through = at;
            self.evict();
        }
        let last = now.div_euclid(self.step) * self.step;
        if last > self.emitted_through {
            self.emitted_through = last;
            self.evict();
        }
    }

    /// The aggregate of the window ending at `end`, `None` when it holds nothing or is not
    /// finite (a Sum past `f64::MAX`).
    fn aggregate(&self, end: i64) -> Option<f64> {
        let start = end - self.window;
        let from = self.buckets.partition_point(|b| b.first < start);
        let to = self.buckets.partition_point(|b| b.last < end);
        if from >= to {
            return None;
        }
        let inside = self.buckets.range(from..to);
        let mut count = 0u64;
        let (mut sum, mut comp, mut sum_finite) = (0.0f64, 0.0f64, true);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for b in inside.clone() {
            count += b.count;
            min = min.min(b.min);
            max = max.max(b.max);
            if sum_finite {
                match add(sum, comp, b.sum) {
                    Some((s, c)) => (sum, comp) = (s, c + b.comp),
                    None => sum_finite = false,
                }
            }
        }
        let total = sum + comp;
        let value = match self.function {
            AggregationFunction::Min => min,
            AggregationFunction::Max => max,
            AggregationFunction::Sum if sum_finite => total,
            AggregationFunction::Sum => return None,
            AggregationFunction::Avg if sum_finite && total.is_finite() => total / count as f64,
            AggregationFunction::Avg => {
                // the sum overflows but the mean cannot: add each bucket's share
                let n = count as f64;
                let (mut s, mut c) = (0.0f64, 0.0f64);
                for b in inside {
                    (s, c) = add(s, c, b.sum / n)?;
                    c += b.comp / n;
                }
                s + c
            }
        };
        value.is_finite().then_some(value)
    }

    /// Drops the buckets that start before the earliest window still to come.
    fn evict(&mut self) {
        let earliest_start = self.boundary_after(self.emitted_through) - self.window;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.first < earliest_start)
        {
            self.buckets.pop_front();
        }
        let (len, cap) = (self.buckets.len(), self.buckets.capacity());
        if cap > 64 && len * 4 < cap {
            self.buckets.shrink_to(len * 2);
        }
    }

    /// A new window size, step or function for the open state (see the module doc of the
    /// engine for what is kept): buckets that lie within one slot of the new step are merged
    /// into it, the others stay as they are; buckets no window to come can hold are dropped.
    pub fn resize(&mut self, window: i64, step: i64, function: AggregationFunction) {
        self.window = window;
        self.step = step;
        self.function = function;
        let mut merged: VecDeque<Bucket> = VecDeque::with_capacity(self.buckets.len());
        for b in self.buckets.drain(..) {
            let same_slot = merged
                .back()
                .is_some_and(|m| m.first.div_euclid(step) == b.last.div_euclid(step));
            match merged.back_mut() {
                Some(m) if same_slot => match m.merged(&b) {
                    Some(joined) => *m = joined,
                    None => merged.push_back(b),
                },
                _ => merged.push_back(b),
            }
        }
        self.buckets = merged;
        self.evict();
    }

    /// Values held.
    pub fn value_count(&self) -> u64 {
        self.buckets.iter().map(|b| b.count).sum()
    }
}
