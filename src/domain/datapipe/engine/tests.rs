//! The engine through its public API: every filter, transformation and policy with upstream's
//! edge cases, sliding and resized windows, snapshots, the memory bound, and properties
//! (no panic on anything; windows equal a brute-force recomputation from the raw values;
//! a restored pipeline writes what an uninterrupted one would).

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::domain::datapipe::config::{
    ActivePeriod, ActivePeriodType, DataPipeConfig, FilterTypeValueFiltering,
    FilterTypeValueThreshold, FilterValue, Filters, ProcessingPolicy, Transformations,
};
use crate::domain::datapipe::{AggregationFunction, ProcessingPolicyType, TypeInputValue};

use AggregationFunction::{Avg, Max, Min, Sum};
use DropReason::*;
use Verdict::Accepted;

const NODE: Uuid = Uuid::from_u128(0x1234);

/// 2024-01-01 00:00:00 UTC plus `secs` (fractions allowed).
fn at(secs: f64) -> NaiveDateTime {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    base + TimeDelta::nanoseconds((secs * 1e9).round() as i64)
}

/// Unix seconds of `at(secs)`.
fn unix(secs: i64) -> i64 {
    at(0.0).and_utc().timestamp() + secs
}

fn config(input: TypeInputValue, policy: ProcessingPolicy) -> DataPipeConfig {
    DataPipeConfig {
        active_period: ActivePeriod {
            kind: ActivePeriodType::Permanent,
            start: None,
            end: None,
        },
        filters: Filters {
            type_input_value: input,
            type_value_filtering: None,
            filtering_values: None,
            type_value_threshold: None,
            threshold_min: None,
            threshold_max: None,
            max_rate: 0,
            last_unique_check: false,
            max_size: 0,
        },
        transformations: None,
        processing_policy: policy,
    }
}

fn policy(kind: ProcessingPolicyType) -> ProcessingPolicy {
    ProcessingPolicy {
        policy_type: kind,
        n_records_count: None,
        time_window_size: None,
        aggregation_functions: None,
        time_window_step: None,
    }
}

fn last_value() -> ProcessingPolicy {
    policy(ProcessingPolicyType::LastValue)
}

fn aggregation(window: u32, step: Option<u32>, f: AggregationFunction) -> ProcessingPolicy {
    ProcessingPolicy {
        time_window_size: Some(window),
        time_window_step: step,
        aggregation_functions: Some(f),
        ..policy(ProcessingPolicyType::Aggregation)
    }
}

fn text() -> DataPipeConfig {
    config(TypeInputValue::Text, last_value())
}

fn number() -> DataPipeConfig {
    config(TypeInputValue::Number, last_value())
}

fn agg(window: u32, step: Option<u32>, f: AggregationFunction) -> DataPipeConfig {
    config(TypeInputValue::Number, aggregation(window, step, f))
}

fn verdict(c: &DataPipeConfig, payload: &[u8]) -> Verdict {
    Pipeline::new(NODE, c.clone(), at(0.0)).offer(at(1.0), payload, &mut Vec::new())
}

/// The LastValue state a value becomes, or why it is dropped.
fn kept(c: &DataPipeConfig, payload: &str) -> Result<String, DropReason> {
    let mut out = Vec::new();
    match Pipeline::new(NODE, c.clone(), at(0.0)).offer(at(1.0), payload.as_bytes(), &mut out) {
        Accepted => match out.as_slice() {
            [Output::LastValue { state, .. }] => Ok(state.clone()),
            other => panic!("one LastValue expected, got {other:?}"),
        },
        Verdict::Dropped(r) => Err(r),
    }
}

/// The aggregation rows in `out`: (start, end, state), seconds from `at(0)`.
fn rows(out: &[Output]) -> Vec<(i64, i64, f64)> {
    out.iter()
        .map(|o| match o {
            Output::Aggregation(a) => {
                assert_eq!(a.create_datetime, a.end_window_datetime);
                let s = |t: NaiveDateTime| (t - at(0.0)).num_seconds();
                (
                    s(a.start_window_datetime),
                    s(a.end_window_datetime),
                    a.state,
                )
            }
            other => panic!("aggregation row expected, got {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------- active period

#[test]
fn active_period_bounds_are_strict_and_a_missing_bound_is_never_active() {
    let period = |kind, start: Option<f64>, end: Option<f64>| {
        let mut c = text();
        c.active_period = ActivePeriod {
            kind,
            start: start.map(at),
            end: end.map(at),
        };
        c
    };
    use ActivePeriodType::*;
    let cases = [
        // (config, time of the value, verdict)
        (period(Permanent, None, None), 5.0, Accepted),
        (
            period(FromDate, Some(10.0), None),
            10.0,
            Verdict::Dropped(Inactive),
        ),
        (period(FromDate, Some(10.0), None), 10.001, Accepted),
        (
            period(FromDate, None, None),
            10.0,
            Verdict::Dropped(Inactive),
        ),
        (period(ToDate, None, Some(10.0)), 9.999, Accepted),
        (
            period(ToDate, None, Some(10.0)),
            10.0,
            Verdict::Dropped(Inactive),
        ),
        (period(ToDate, None, None), 1.0, Verdict::Dropped(Inactive)),
        (
            period(DateRange, Some(10.0), Some(20.0)),
            10.0,
            Verdict::Dropped(Inactive),
        ),
        (period(DateRange, Some(10.0), Some(20.0)), 15.0, Accepted),
        (
            period(DateRange, Some(10.0), Some(20.0)),
            20.0,
            Verdict::Dropped(Inactive),
        ),
        (
            period(DateRange, Some(10.0), None),
            15.0,
            Verdict::Dropped(Inactive),
        ),
    ];
    for (i, (c, t, expected)) in cases.into_iter().enumerate() {
        let mut p = Pipeline::new(NODE, c, at(0.0));
        assert_eq!(p.offer(at(t), b"x", &mut Vec::new()), expected, "case {i}");
    }
}

// ---------------------------------------------------------------- filters

fn listed(
    input: TypeInputValue,
    kind: FilterTypeValueFiltering,
    values: Vec<FilterValue>,
) -> DataPipeConfig {
    let mut c = config(input, last_value());
    c.filters.type_value_filtering = Some(kind);
    c.filters.filtering_values = Some(values);
    c
}

fn threshold(
    input: TypeInputValue,
    kind: FilterTypeValueThreshold,
    min: Option<i64>,
    max: Option<i64>,
) -> DataPipeConfig {
    let mut c = config(input, last_value());
    c.filters.type_value_threshold = Some(kind);
    c.filters.threshold_min = min;
    c.filters.threshold_max = max;
    c
}

#[test]
fn filters_lists_thresholds_sizes_and_value_types() {
    use FilterTypeValueFiltering::*;
    use FilterTypeValueThreshold as T;
    use TypeInputValue::{Number as N, Text as X};
    let words = || {
        vec![
            FilterValue::Text("on".into()),
            FilterValue::Text("off".into()),
        ]
    };
    let nums = || vec![FilterValue::Number(1.5), FilterValue::Number(2.0)];
    let sized = |input, max_size| {
        let mut c = config(input, last_value());
        c.filters.max_size = max_size;
        c
    };
    let huge = "7".repeat(1 << 20);
    let cases: Vec<(DataPipeConfig, &[u8], Verdict)> = vec![
        // white and black lists: Text compares strings, case and all
        (listed(X, WhiteList, words()), b"on", Accepted),
        (listed(X, WhiteList, words()), b"ON", Verdict::Dropped(List)),
        (
            listed(X, WhiteList, words()),
            b"on ",
            Verdict::Dropped(List),
        ),
        (
            listed(X, BlackList, words()),
            b"off",
            Verdict::Dropped(List),
        ),
        (listed(X, BlackList, words()), b"x", Accepted),
        (listed(X, WhiteList, vec![]), b"on", Verdict::Dropped(List)),
        (listed(X, BlackList, vec![]), b"on", Accepted),
        // Number compares numbers, however written
        (listed(N, WhiteList, nums()), b"1.5", Accepted),
        (listed(N, WhiteList, nums()), b"2", Accepted),
        (listed(N, WhiteList, nums()), b"2.000", Accepted),
        (listed(N, WhiteList, nums()), b"+2e0", Accepted),
        (listed(N, WhiteList, nums()), b"3", Verdict::Dropped(List)),
        (listed(N, BlackList, nums()), b"2.0", Verdict::Dropped(List)),
        (listed(N, BlackList, nums()), b"2.5", Accepted),
        // a Number entry in a Text list compares as a number (upstream's isInList)
        (
            listed(X, WhiteList, vec![FilterValue::Number(2.0)]),
            b"2.0",
            Accepted,
        ),
        (
            listed(X, WhiteList, vec![FilterValue::Number(2.0)]),
            b"two",
            Verdict::Dropped(List),
        ),
        // thresholds: bounds inclusive, integers compared as floats
        (threshold(N, T::Min, Some(10), None), b"10", Accepted),
        (
            threshold(N, T::Min, Some(10), None),
            b"9.999",
            Verdict::Dropped(Threshold),
        ),
        (threshold(N, T::Max, None, Some(10)), b"10", Accepted),
        (
            threshold(N, T::Max, None, Some(10)),
            b"10.001",
            Verdict::Dropped(Threshold),
        ),
        (threshold(N, T::Range, Some(-5), Some(5)), b"-5", Accepted),
        (threshold(N, T::Range, Some(-5), Some(5)), b"5", Accepted),
        (
            threshold(N, T::Range, Some(-5), Some(5)),
            b"-5.5",
            Verdict::Dropped(Threshold),
        ),
        (
            threshold(N, T::Range, Some(-5), Some(5)),
            b"6",
            Verdict::Dropped(Threshold),
        ),
        (threshold(N, T::Min, None, None), b"-1e300", Accepted),
        // a value that is not a number passes a threshold (upstream), under Text input
        (threshold(X, T::Max, None, Some(10)), b"abc", Accepted),
        (
            threshold(X, T::Max, None, Some(10)),
            b"11",
            Verdict::Dropped(Threshold),
        ),
        // max_size counts bytes of the raw payload; 0 is no limit
        (sized(X, 4), b"1234", Accepted),
        (sized(X, 4), b"12345", Verdict::Dropped(Size)),
        (sized(X, 4), "éé".as_bytes(), Accepted),
        (sized(X, 4), "ééé".as_bytes(), Verdict::Dropped(Size)),
        (sized(N, 3), b"1000", Verdict::Dropped(Size)),
        (sized(X, 0), huge.as_bytes(), Accepted),
        (sized(X, 262_144), huge.as_bytes(), Verdict::Dropped(Size)),
        // the size filter decides before anything reads a huge payload
        (sized(N, 16), &[0xff; 1 << 16][..], Verdict::Dropped(Size)),
        // not UTF-8
        (text(), b"ok\xff", Verdict::Dropped(NotText)),
        (number(), b"\xc3", Verdict::Dropped(NotText)),
        // Number input keeps finite numbers only
        (number(), b"abc", Verdict::Dropped(NotNumber)),
        (number(), b"", Verdict::Dropped(NotNumber)),
        (number(), b" 1", Verdict::Dropped(NotNumber)),
        (number(), b"1_000", Verdict::Dropped(NotNumber)),
        (number(), b"NaN", Verdict::Dropped(NotFinite)),
        (number(), b"inf", Verdict::Dropped(NotFinite)),
        (number(), b"-Infinity", Verdict::Dropped(NotFinite)),
        (number(), b"1e400", Verdict::Dropped(NotFinite)),
        (number(), b"1e-400", Accepted),
        (number(), b"-0", Accepted),
        // Text input takes any UTF-8
        (text(), b"NaN", Accepted),
        (text(), b"", Accepted),
    ];
    for (i, (c, payload, expected)) in cases.into_iter().enumerate() {
        assert_eq!(verdict(&c, payload), expected, "case {i}");
    }
}

#[test]
fn max_rate_counts_from_the_last_accepted_value_and_passes_at_exactly_the_limit() {
    let mut c = text();
    c.filters.max_rate = 5;
    c.filters.max_size = 3;
    let mut p = Pipeline::new(NODE, c, at(0.0));
    let mut out = Vec::new();
    let steps: [(f64, &str, Verdict); 7] = [
        (100.0, "a", Accepted), // the first value always passes
        (104.999, "b", Verdict::Dropped(Rate)),
        (105.0, "c", Accepted), // exactly max_rate later
        (107.0, "dddd", Verdict::Dropped(Rate)),
        (110.0, "eeee", Verdict::Dropped(Size)), // dropped: the clock still runs from 105
        (110.0, "f", Accepted),
        (114.0, "g", Verdict::Dropped(Rate)),
    ];
    for (i, (t, v, expected)) in steps.into_iter().enumerate() {
        assert_eq!(p.offer(at(t), v.as_bytes(), &mut out), expected, "step {i}");
    }
    assert_eq!(p.counters().accepted, 3);
    assert_eq!(p.counters().dropped(Rate), 3);
    assert_eq!(p.counters().dropped(Size), 1);

    // 0: every value, even at the same instant
    let mut p = Pipeline::new(NODE, text(), at(0.0));
    for _ in 0..3 {
        assert_eq!(p.offer(at(1.0), b"x", &mut out), Accepted);
    }
}

#[test]
fn last_unique_check_compares_what_is_kept_with_what_was_last_kept() {
    let unique = |mut c: DataPipeConfig| {
        c.filters.last_unique_check = true;
        c
    };
    let mut rounded = unique(number());
    rounded.transformations = Some(Transformations {
        multiplication_ratio: None,
        round_decimal_point: Some(1),
        slice_start: None,
        slice_end: None,
    });
    let mut sized = unique(text());
    sized.filters.max_size = 3;
    let long_a = "a".repeat(1000);
    let long_b = format!("{}b", "a".repeat(999));
    let cases: Vec<(DataPipeConfig, Vec<(&str, Verdict)>)> = vec![
        (
            unique(text()),
            vec![
                ("a", Accepted),
                ("a", Verdict::Dropped(Repeat)),
                ("b", Accepted),
                ("a", Accepted),
            ],
        ),
        // Number repeats compare numbers
        (
            unique(number()),
            vec![
                ("5", Accepted),
                ("5.0", Verdict::Dropped(Repeat)),
                ("-0", Accepted),
                ("0", Verdict::Dropped(Repeat)),
            ],
        ),
        // after rounding: 5.01 and 5.04 are both kept as "5.0"
        (
            rounded,
            vec![
                ("5.01", Accepted),
                ("5.04", Verdict::Dropped(Repeat)),
                ("5.06", Accepted),
            ],
        ),
        // after slicing: "ab" and "ac" are both kept as "a" (upstream compares the raw "ac")
        (
            {
                let mut c = unique(text());
                c.transformations =
                    transformed(TypeInputValue::Text, None, None, (None, Some(1))).transformations;
                c
            },
            vec![
                ("ab", Accepted),
                ("ac", Verdict::Dropped(Repeat)),
                ("b", Accepted),
            ],
        ),
        // a dropped value is not the last value
        (
            sized,
            vec![
                ("a", Accepted),
                ("long", Verdict::Dropped(Size)),
                ("a", Verdict::Dropped(Repeat)),
            ],
        ),
        // long values are compared by length and SHA-256
        (
            unique(text()),
            vec![
                (&long_a, Accepted),
                (&long_a, Verdict::Dropped(Repeat)),
                (&long_b, Accepted),
                (&long_a, Accepted),
                ("short", Accepted),
                ("short", Verdict::Dropped(Repeat)),
            ],
        ),
        // off: repeats pass
        (text(), vec![("a", Accepted), ("a", Accepted)]),
    ];
    for (i, (c, steps)) in cases.into_iter().enumerate() {
        let mut p = Pipeline::new(NODE, c, at(0.0));
        for (j, (v, expected)) in steps.into_iter().enumerate() {
            let got = p.offer(at(j as f64), v.as_bytes(), &mut Vec::new());
            assert_eq!(got, expected, "case {i} step {j}");
        }
    }
}

// ---------------------------------------------------------------- transformations

fn transformed(
    input: TypeInputValue,
    ratio: Option<f64>,
    round: Option<u8>,
    slice: (Option<i64>, Option<i64>),
) -> DataPipeConfig {
    let mut c = config(input, last_value());
    c.transformations = Some(Transformations {
        multiplication_ratio: ratio,
        round_decimal_point: round,
        slice_start: slice.0,
        slice_end: slice.1,
    });
    c
}

#[test]
fn number_transformations_format_like_upstream_go() {
    use TypeInputValue::Number as N;
    let none = (None, None);
    let cases: Vec<(DataPipeConfig, &str, Result<&str, DropReason>)> = vec![
        // untouched: kept as the device wrote it
        (number(), "5.50", Ok("5.50")),
        (number(), "1e3", Ok("1e3")),
        (transformed(N, None, None, none), "+7", Ok("+7")),
        // a ratio gives Go's %f: six decimals
        (
            transformed(N, Some(2.0), None, none),
            "1.25",
            Ok("2.500000"),
        ),
        (transformed(N, Some(1.0), None, none), "3", Ok("3.000000")),
        (transformed(N, Some(-0.5), None, none), "3", Ok("-1.500000")),
        (transformed(N, Some(0.001), None, none), "1", Ok("0.001000")),
        (
            transformed(N, Some(1.0), None, none),
            "0.0000005",
            Ok("0.000000"),
        ),
        (
            transformed(N, Some(1e10), None, none),
            "1e300",
            Err(Overflow),
        ),
        // rounding gives %.Nf, ties to even on the exact binary value
        (transformed(N, None, Some(2), none), "2.5", Ok("2.50")),
        (transformed(N, None, Some(0), none), "2.5", Ok("2")),
        (transformed(N, None, Some(0), none), "3.5", Ok("4")),
        (transformed(N, None, Some(2), none), "2.675", Ok("2.67")),
        (transformed(N, None, Some(2), none), "-0.001", Ok("-0.00")),
        (transformed(N, None, Some(7), none), "1", Ok("1.0000000")),
        // both: the rounding reads the six-decimal text
        (transformed(N, Some(1.0), Some(0), none), "3", Ok("3")),
        (
            transformed(N, Some(1.0), Some(7), none),
            "1.23456789",
            Ok("1.2345680"),
        ),
        (transformed(N, Some(2.0), Some(1), none), "1.26", Ok("2.5")),
        // a slice does nothing to a Number
        (
            transformed(N, None, None, (Some(1), Some(2))),
            "12345",
            Ok("12345"),
        ),
        (
            transformed(N, Some(1e300), Some(2), none),
            "1e10",
            Err(Overflow),
        ),
    ];
    for (i, (c, payload, expected)) in cases.into_iter().enumerate() {
        assert_eq!(kept(&c, payload), expected.map(str::to_owned), "case {i}");
    }
}

#[test]
fn text_is_sliced_like_python_by_characters() {
    let s = |start, end| transformed(TypeInputValue::Text, None, None, (start, end));
    let cases: Vec<(DataPipeConfig, &str, &str)> = vec![
        (s(Some(1), Some(3)), "hello", "el"),
        (s(Some(-3), None), "hello", "llo"),
        (s(None, Some(-1)), "hello", "hell"),
        (s(Some(-100), Some(100)), "hello", "hello"),
        (s(Some(3), Some(1)), "hello", ""),
        (s(Some(2), Some(2)), "hello", ""),
        (s(Some(10), None), "hello", ""),
        (s(None, Some(-10)), "hello", ""),
        (s(Some(-2), Some(-1)), "hello", "l"),
        (s(Some(i64::MIN), Some(i64::MAX)), "hello", "hello"),
        (s(Some(i64::MAX), None), "hello", ""),
        (s(Some(0), Some(1)), "", ""),
        // multi-byte: characters, never bytes (upstream would split these)
        (s(Some(1), Some(-1)), "привет", "риве"),
        (s(Some(-2), None), "año🌍", "o🌍"),
        (s(Some(0), Some(1)), "🌍x", "🌍"),
        (s(Some(1), None), "e\u{301}x", "\u{301}x"),
        // a ratio and rounding do nothing to Text
        (
            transformed(TypeInputValue::Text, Some(2.0), Some(1), (None, None)),
            "1.25",
            "1.25",
        ),
        // NUL becomes U+FFFD (PostgreSQL TEXT)
        (text(), "a\0b", "a\u{FFFD}b"),
        (s(Some(1), None), "\0\0x", "\u{FFFD}x"),
    ];
    for (i, (c, payload, expected)) in cases.into_iter().enumerate() {
        assert_eq!(kept(&c, payload), Ok(expected.to_owned()), "case {i}");
    }
}

// ---------------------------------------------------------------- policies

#[test]
fn last_value_n_records_and_time_window_rows() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, text(), at(0.0));
    p.offer(at(1.5), "é!".as_bytes(), &mut out);
    assert_eq!(
        out,
        [Output::LastValue {
            state: "é!".into(),
            at: at(1.5)
        }]
    );
    assert_eq!(p.next_deadline(), None);

    let mut c = config(
        TypeInputValue::Text,
        ProcessingPolicy {
            n_records_count: Some(3),
            ..policy(ProcessingPolicyType::NRecords)
        },
    );
    c.transformations =
        transformed(TypeInputValue::Text, None, None, (Some(1), None)).transformations;
    let mut out = Vec::new();
    Pipeline::new(NODE, c, at(0.0)).offer(at(2.0), "xé".as_bytes(), &mut out);
    assert_eq!(
        out,
        [Output::NRecords(NRecordsEntry {
            unit_node_uuid: NODE,
            state: "é".into(),
            state_type: TypeInputValue::Text,
            create_datetime: at(2.0),
            max_count: 3,
            size: 2,
        })]
    );

    let c = config(
        TypeInputValue::Number,
        ProcessingPolicy {
            time_window_size: Some(600),
            ..policy(ProcessingPolicyType::TimeWindow)
        },
    );
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, c, at(0.0));
    p.offer(at(3.25), b"42", &mut out);
    assert_eq!(
        out,
        [Output::Window(WindowEntry {
            unit_node_uuid: NODE,
            state: "42".into(),
            state_type: TypeInputValue::Number,
            create_datetime: at(3.25),
            expiration_datetime: at(603.25),
            size: 2,
        })]
    );
    assert_eq!(p.next_deadline(), None);
    let mut later = Vec::new();
    p.tick(at(10_000.0), &mut later);
    assert!(later.is_empty(), "TimeWindow keeps nothing to emit");
}

#[test]
fn n_records_asks_for_a_trim_every_quarter_of_its_count_between_8_and_256() {
    assert_eq!(
        [1, 3, 32, 33, 100, 1024, 4096].map(trim_every),
        [8, 8, 8, 8, 25, 256, 256]
    );
    for count in [3, 100] {
        let c = config(
            TypeInputValue::Number,
            ProcessingPolicy {
                n_records_count: Some(count),
                ..policy(ProcessingPolicyType::NRecords)
            },
        );
        let mut p = Pipeline::new(NODE, c, at(0.0));
        let mut trims_after = Vec::new();
        let mut out = Vec::new();
        for i in 1..=3 * trim_every(count) {
            out.clear();
            p.offer(at(f64::from(i)), b"1", &mut out);
            assert!(matches!(out[0], Output::NRecords(_)), "the row comes first");
            match out.as_slice() {
                [_] => {}
                [_, Output::TrimNRecords { keep }] => {
                    assert_eq!(*keep, count);
                    trims_after.push(i);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let k = trim_every(count);
        assert_eq!(trims_after, [k, 2 * k, 3 * k], "count {count}");
    }
}

#[test]
fn a_config_missing_its_numbers_drops_every_value_and_never_panics() {
    let broken = [
        policy(ProcessingPolicyType::NRecords),
        policy(ProcessingPolicyType::TimeWindow),
        policy(ProcessingPolicyType::Aggregation),
        ProcessingPolicy {
            time_window_size: Some(60),
            ..policy(ProcessingPolicyType::Aggregation)
        },
        aggregation(60, Some(0), Avg),
        aggregation(60, Some(7), Avg),
        aggregation(0, None, Avg),
    ];
    for (i, pp) in broken.into_iter().enumerate() {
        let mut p = Pipeline::new(NODE, config(TypeInputValue::Number, pp), at(0.0));
        assert!(p.problem().is_some(), "case {i}");
        assert_eq!(
            p.offer(at(1.0), b"1", &mut Vec::new()),
            Verdict::Dropped(Config),
            "case {i}"
        );
        p.tick(at(1e6), &mut Vec::new());
        assert_eq!(p.next_deadline(), None);
    }
}

#[test]
fn tumbling_windows_are_aligned_to_their_size_and_a_value_at_the_edge_is_in_the_next() {
    let mut out = Vec::new();
    // made mid-window: windows are aligned to the epoch, not to the start
    let mut p = Pipeline::new(NODE, agg(60, None, Avg), at(30.0));
    assert_eq!(p.next_deadline(), None, "nothing to emit without values");
    for (t, v) in [(60.0, "1"), (90.0, "2"), (119.999, "6")] {
        assert_eq!(p.offer(at(t), v.as_bytes(), &mut out), Accepted);
    }
    assert_eq!(p.next_deadline(), Some(at(120.0)));
    assert!(
        out.is_empty(),
        "nothing is due before the first window ends"
    );
    p.tick(at(119.9), &mut out);
    assert!(out.is_empty());
    // a value exactly at the end belongs to the next window; it comes after the due one
    assert_eq!(p.offer(at(120.0), b"100", &mut out), Accepted);
    assert_eq!(rows(&out), [(60, 120, 3.0)]);
    assert_eq!(p.next_deadline(), Some(at(180.0)));
    out.clear();
    // empty windows emit nothing, and the deadline waits for a value
    p.tick(at(1000.0), &mut out);
    assert_eq!(rows(&out), [(120, 180, 100.0)]);
    assert_eq!(p.next_deadline(), None);
    assert_eq!(p.bucket_count(), 0);
    // a value arriving after a due window emits it first
    out.clear();
    p.offer(at(1001.0), b"5", &mut out);
    p.offer(at(1085.0), b"7", &mut out);
    assert_eq!(rows(&out), [(960, 1020, 5.0)]);
    let row = &out[0];
    let Output::Aggregation(a) = row else {
        unreachable!()
    };
    assert_eq!(
        (a.unit_node_uuid, a.aggregation_type, a.time_window_size),
        (NODE, Avg, 60)
    );
}

#[test]
fn each_aggregation_function_over_one_window() {
    let values = ["3", "-1.5", "10", "0.25"];
    for (f, expected) in [(Avg, 2.9375), (Min, -1.5), (Max, 10.0), (Sum, 11.75)] {
        let mut out = Vec::new();
        let mut p = Pipeline::new(NODE, agg(300, None, f), at(0.0));
        for (i, v) in values.iter().enumerate() {
            assert_eq!(
                p.offer(at(i as f64 * 10.0), v.as_bytes(), &mut out),
                Accepted
            );
        }
        p.tick(at(300.0), &mut out);
        assert_eq!(rows(&out), [(0, 300, expected)], "{f}");
    }
}

#[test]
fn aggregation_takes_numbers_only_after_transformations() {
    // Text input: each (sliced) value must parse, as upstream's aggregation buffer demands
    let mut c = config(TypeInputValue::Text, aggregation(60, None, Sum));
    c.transformations =
        transformed(TypeInputValue::Text, None, None, (Some(2), None)).transformations;
    let mut p = Pipeline::new(NODE, c, at(0.0));
    let mut out = Vec::new();
    assert_eq!(p.offer(at(1.0), b"t=21.5", &mut out), Accepted);
    assert_eq!(
        p.offer(at(2.0), b"t=warm", &mut out),
        Verdict::Dropped(NotNumber)
    );
    assert_eq!(
        p.offer(at(3.0), b"t=inf", &mut out),
        Verdict::Dropped(NotFinite)
    );
    assert_eq!(p.offer(at(4.0), b"t=0.5", &mut out), Accepted);
    // Number input aggregates the transformed value, as upstream re-parses it
    let mut c = agg(60, None, Sum);
    c.transformations =
        transformed(TypeInputValue::Number, Some(10.0), Some(0), (None, None)).transformations;
    let mut q = Pipeline::new(NODE, c, at(0.0));
    q.offer(at(1.0), b"0.26", &mut out);
    q.offer(at(2.0), b"0.24", &mut out);
    p.tick(at(60.0), &mut out);
    q.tick(at(60.0), &mut out);
    assert_eq!(rows(&out), [(0, 60, 22.0), (0, 60, 5.0)]);
}

#[test]
fn sums_past_f64_max_are_never_emitted() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(120, Some(60), Sum), at(0.0));
    assert_eq!(p.offer(at(1.0), b"1.5e308", &mut out), Accepted);
    // the same step's sum would be infinite: the value is refused, the bucket stays finite
    assert_eq!(
        p.offer(at(2.0), b"1.5e308", &mut out),
        Verdict::Dropped(Overflow)
    );
    assert_eq!(p.offer(at(61.0), b"1.5e308", &mut out), Accepted);
    p.tick(at(180.0), &mut out);
    // [0,60): 1.5e308, [0,120): inf (suppressed), [60,180): 1.5e308
    assert_eq!(rows(&out), [(-60, 60, 1.5e308), (60, 180, 1.5e308)]);
    assert_eq!(p.counters().windows_suppressed, 1);
    assert_eq!(p.counters().dropped(Overflow), 1);

    // an Avg of the same values cannot overflow
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(120, Some(60), Avg), at(0.0));
    p.offer(at(1.0), b"1.5e308", &mut out);
    p.offer(at(61.0), b"1.7e308", &mut out);
    p.tick(at(120.0), &mut out);
    assert_eq!(rows(&out), [(-60, 60, 1.5e308), (0, 120, 1.6e308)]);
    assert_eq!(p.counters().windows_suppressed, 0);
}

#[test]
fn sums_are_compensated_within_and_across_buckets() {
    // naive summation gives 0 for 1e16 + 1 - 1e16
    for step in [None, Some(60)] {
        let mut out = Vec::new();
        let mut p = Pipeline::new(NODE, agg(180, step, Sum), at(0.0));
        for (t, v) in [(1.0, "1e16"), (61.0, "1"), (121.0, "-1e16"), (122.0, "0.5")] {
            p.offer(at(t), v.as_bytes(), &mut out);
        }
        p.tick(at(180.0), &mut out);
        assert_eq!(rows(&out).last(), Some(&(0, 180, 1.5)), "step {step:?}");
    }
}

// ---------------------------------------------------------------- sliding windows

#[test]
fn sliding_windows_emit_every_step_over_the_last_size() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(180, Some(60), Sum), at(0.0));
    // one value per minute: 1, 2, 4, then a gap, then 8
    for (t, v) in [(0.0, "1"), (60.0, "2"), (150.0, "4"), (420.0, "8")] {
        p.offer(at(t), v.as_bytes(), &mut out);
    }
    p.tick(at(900.0), &mut out);
    assert_eq!(
        rows(&out),
        [
            (-120, 60, 1.0),
            (-60, 120, 3.0),
            (0, 180, 7.0),
            (60, 240, 6.0),
            (120, 300, 4.0),
            // [180, 360) and [240, 420) are empty: nothing
            (300, 480, 8.0),
            (360, 540, 8.0),
            (420, 600, 8.0),
        ]
    );
    assert_eq!(p.bucket_count(), 0);
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn a_step_equal_to_the_size_is_upstreams_tumbling_window() {
    let feed = |c: DataPipeConfig| {
        let mut out = Vec::new();
        let mut p = Pipeline::new(NODE, c, at(0.0));
        for i in 0..50 {
            p.offer(at(i as f64 * 37.0), format!("{i}").as_bytes(), &mut out);
        }
        p.tick(at(3600.0), &mut out);
        out
    };
    assert_eq!(feed(agg(300, None, Max)), feed(agg(300, Some(300), Max)));
    assert_eq!(rows(&feed(agg(300, None, Max))).len(), 7);
}

// ---------------------------------------------------------------- resizing

/// Feeds one value `1..` per `every` seconds from `from` to `to` (exclusive).
fn feed(p: &mut Pipeline, from: i64, to: i64, every: i64, out: &mut Vec<Output>) {
    let mut t = from;
    while t < to {
        assert_eq!(
            p.offer(at(t as f64), format!("{}", t).as_bytes(), out),
            Accepted
        );
        t += every;
    }
}

/// The Sum of the values `feed(_, start, stop, every, _)` gave that lie in `[from, to)`.
fn fed_sum(from: i64, to: i64, every: i64, (start, stop): (i64, i64)) -> f64 {
    (start..stop)
        .step_by(every as usize)
        .filter(|t| *t >= from && *t < to)
        .map(|t| t as f64)
        .sum()
}

#[test]
fn growing_the_size_keeps_what_was_kept_and_brings_back_nothing() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(300, Some(60), Sum), at(0.0));
    feed(&mut p, 0, 1200, 30, &mut out);
    out.clear();
    p.reconfigure(agg(900, Some(60), Sum), at(1200.0), &mut out);
    // due at 1200 under the old size (emitted by reconfigure)
    assert_eq!(rows(&out), [(900, 1200, fed_sum(900, 1200, 30, (0, 1200)))]);
    out.clear();
    feed(&mut p, 1200, 1500, 30, &mut out);
    p.tick(at(1500.0), &mut out);
    // the new windows reach back 900 s, but values before 960 (the start of the next window
    // under the old size) had been dropped
    let got = rows(&out);
    assert_eq!(got.len(), 5);
    for (start, end, sum) in got {
        assert_eq!(end - start, 900);
        assert_eq!(
            sum,
            fed_sum(start.max(960), end, 30, (0, 1500)),
            "window ending {end}"
        );
    }
}

#[test]
fn shrinking_the_size_keeps_the_values_inside_the_new_window() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(3600, Some(60), Sum), at(0.0));
    feed(&mut p, 0, 3630, 30, &mut out);
    out.clear();
    p.reconfigure(agg(300, Some(60), Sum), at(3630.0), &mut out);
    assert!(out.is_empty(), "3600 was emitted before, 3660 is not due");
    assert!(
        p.bucket_count() <= 6,
        "only what the new size can use is kept"
    );
    p.tick(at(3660.0), &mut out);
    assert_eq!(
        rows(&out),
        [(3360, 3660, fed_sum(3360, 3660, 30, (0, 3630)))]
    );
}

#[test]
fn a_step_that_is_a_multiple_of_the_old_one_merges_exactly() {
    // sliding 3600/60 to tumbling 3600/300... and 300 to 900: windows as if always so
    // (old, new, the first value the old config still kept at 9000)
    for (old, new, kept_from) in [
        (agg(3600, Some(60), Sum), agg(3600, Some(300), Sum), 7200),
        (
            agg(900, Some(300), Sum),
            agg(1800, Some(900), Sum),
            9300 - 900,
        ),
        (agg(3600, None, Sum), agg(7200, None, Sum), 7200),
    ] {
        let mut out = Vec::new();
        let mut p = Pipeline::new(NODE, old, at(0.0));
        feed(&mut p, 7200, 9000, 20, &mut out);
        p.reconfigure(new.clone(), at(9000.0), &mut out);
        let step = new.processing_policy.time_window_step;
        let slots = (9000 - kept_from)
            / i64::from(step.or(new.processing_policy.time_window_size).unwrap());
        assert!(
            p.bucket_count() as i64 <= slots + 1,
            "merged: {} buckets",
            p.bucket_count()
        );
        out.clear();
        feed(&mut p, 9000, 12000, 20, &mut out);
        p.tick(at(20000.0), &mut out);
        let w = i64::from(new.processing_policy.time_window_size.unwrap());
        let got = rows(&out);
        assert!(!got.is_empty());
        for (start, end, sum) in got {
            assert_eq!(end - start, w);
            // every value kept counts where it lies
            let expected = fed_sum(start.max(kept_from), end, 20, (7200, 12000));
            assert_eq!(sum, expected, "{new:?} window ending {end}");
        }
    }
}

#[test]
fn a_finer_step_counts_an_old_bucket_only_in_windows_that_hold_all_of_it() {
    // tumbling 300 to sliding 300/60: the open 300-s bucket holds values at 600..700
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(300, None, Sum), at(0.0));
    feed(&mut p, 600, 720, 30, &mut out); // 600, 630, ..., 690: 2580
    p.reconfigure(agg(300, Some(60), Sum), at(720.0), &mut out);
    feed(&mut p, 720, 840, 60, &mut out); // 720, 780
    p.tick(at(1200.0), &mut out);
    assert_eq!(
        rows(&out),
        [
            // due at once: the first window of the new step holding all of [600, 690]
            (420, 720, 2580.0),
            // windows holding all of [600, 690] and the new values
            (480, 780, 2580.0 + 720.0),
            (540, 840, 2580.0 + 720.0 + 780.0),
            (600, 900, 2580.0 + 720.0 + 780.0),
            // from here the old bucket is not wholly inside: the new values only
            (660, 960, 720.0 + 780.0),
            (720, 1020, 720.0 + 780.0),
            (780, 1080, 780.0),
        ]
    );

    // a value exactly on a boundary of the new step is in the window that starts there
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(300, Some(60), Sum), at(0.0));
    p.offer(at(610.0), b"1", &mut out);
    p.offer(at(690.0), b"2", &mut out); // in [660, 720) under the old step
    out.clear();
    p.reconfigure(agg(300, Some(30), Sum), at(695.0), &mut out);
    p.tick(at(720.0), &mut out);
    assert_eq!(rows(&out), [(390, 690, 1.0), (420, 720, 3.0)]);

    // tumbling 3600 to tumbling 900: values spanning several new slots cannot be attributed
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(3600, None, Sum), at(0.0));
    feed(&mut p, 3600, 5400, 60, &mut out);
    p.reconfigure(agg(900, None, Sum), at(5400.0), &mut out);
    feed(&mut p, 5400, 5700, 60, &mut out);
    p.tick(at(9000.0), &mut out);
    assert_eq!(
        rows(&out),
        [(5400, 6300, fed_sum(5400, 6300, 60, (5400, 5700)))]
    );

    // unless they all fall in one new slot: here all in [3600, 4500)
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(3600, None, Sum), at(0.0));
    feed(&mut p, 3600, 4200, 60, &mut out);
    p.reconfigure(agg(900, None, Sum), at(5000.0), &mut out);
    assert_eq!(
        rows(&out),
        [(3600, 4500, fed_sum(3600, 4500, 60, (3600, 4200)))],
        "emitted at once"
    );
}

#[test]
fn a_function_change_applies_to_the_open_windows() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(600, Some(300), Sum), at(0.0));
    feed(&mut p, 0, 600, 100, &mut out); // 0..500
    out.clear();
    p.reconfigure(agg(600, Some(300), Max), at(550.0), &mut out);
    assert!(out.is_empty());
    p.tick(at(600.0), &mut out);
    assert_eq!(rows(&out), [(0, 600, 500.0)]);
    out.clear();
    p.reconfigure(agg(600, Some(300), Avg), at(650.0), &mut out);
    p.tick(at(900.0), &mut out);
    assert_eq!(rows(&out), [(300, 900, 400.0)]);
}

#[test]
fn a_policy_change_discards_or_starts_the_windows_and_keeps_the_rate_clock() {
    let mut out = Vec::new();
    let mut c = agg(600, None, Sum);
    c.filters.max_rate = 10;
    c.filters.last_unique_check = true;
    let mut p = Pipeline::new(NODE, c.clone(), at(0.0));
    p.offer(at(100.0), b"1", &mut out);
    p.offer(at(200.0), b"2", &mut out);
    let mut lv = c.clone();
    lv.processing_policy = last_value();
    p.reconfigure(lv, at(205.0), &mut out);
    assert!(out.is_empty(), "a partial window is never emitted");
    assert_eq!(p.counters().values_discarded, 2);
    assert_eq!(p.next_deadline(), None);
    assert_eq!(p.offer(at(209.0), b"3", &mut out), Verdict::Dropped(Rate));
    assert_eq!(p.offer(at(210.0), b"2", &mut out), Verdict::Dropped(Repeat));
    assert_eq!(p.offer(at(211.0), b"3", &mut out), Accepted);
    // back to Aggregation: starts empty
    p.reconfigure(c, at(300.0), &mut out);
    out.clear();
    p.offer(at(400.0), b"9", &mut out);
    p.tick(at(600.0), &mut out);
    assert_eq!(rows(&out), [(0, 600, 9.0)]);
    // turning the check off forgets the last value: on again, nothing stale repeats
    let mut on = text();
    on.filters.last_unique_check = true;
    let mut off = on.clone();
    off.filters.last_unique_check = false;
    let mut q = Pipeline::new(NODE, on.clone(), at(0.0));
    assert_eq!(q.offer(at(1.0), b"a", &mut out), Accepted);
    q.reconfigure(off, at(2.0), &mut out);
    q.reconfigure(on, at(3.0), &mut out);
    assert_eq!(q.offer(at(4.0), b"a", &mut out), Accepted);
    // a type change forgets the last value (it cannot be compared)
    let mut t = text();
    t.filters.last_unique_check = true;
    p.reconfigure(t, at(700.0), &mut out);
    assert_eq!(p.offer(at(701.0), b"9", &mut out), Accepted);
}

// ---------------------------------------------------------------- time

#[test]
fn a_clock_stepped_back_is_taken_as_no_time_passing() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(60, None, Sum), at(0.0));
    p.offer(at(50.0), b"1", &mut out);
    p.tick(at(60.0), &mut out);
    // back to 30: the value lands at 60, in the next window, never in the closed one
    p.offer(at(30.0), b"2", &mut out);
    p.tick(at(120.0), &mut out);
    assert_eq!(rows(&out), [(0, 60, 1.0), (60, 120, 2.0)]);

    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, text(), at(0.0));
    p.offer(at(10.0), b"a", &mut out);
    p.offer(at(5.0), b"b", &mut out);
    assert_eq!(
        out.iter()
            .map(|o| match o {
                Output::LastValue { at, .. } => *at,
                _ => unreachable!(),
            })
            .collect::<Vec<_>>(),
        [at(10.0), at(10.0)]
    );
}

// ---------------------------------------------------------------- snapshots

#[test]
fn a_restored_pipeline_writes_what_an_uninterrupted_one_would() {
    let mut c = agg(3600, Some(300), Avg);
    c.filters.last_unique_check = true;
    let events = |p: &mut Pipeline, from: i64, to: i64, out: &mut Vec<Output>| {
        for t in (from..to).step_by(47) {
            p.offer(at(t as f64), format!("{}", (t * 7) % 13).as_bytes(), out);
            if t % 5 == 0 {
                p.tick(at(t as f64), out);
            }
        }
    };
    let mut whole = Pipeline::new(NODE, c.clone(), at(0.0));
    let mut expected = Vec::new();
    events(&mut whole, 0, 5000, &mut expected);
    let split = expected.len();
    // stopped from 5000 to 6500: the uninterrupted one only ticks
    whole.tick(at(6500.0), &mut expected);
    events(&mut whole, 6500, 9000, &mut expected);
    whole.tick(at(20000.0), &mut expected);

    let mut before = Pipeline::new(NODE, c.clone(), at(0.0));
    let mut got = Vec::new();
    events(&mut before, 0, 5000, &mut got);
    assert_eq!(got.len(), split);
    let json = before.snapshot().to_json();
    drop(before);
    let snapshot = Snapshot::from_json(&json).unwrap();
    let mut after = Pipeline::restore(NODE, c, snapshot, at(6500.0)).unwrap();
    assert!(
        after.next_deadline().unwrap() <= at(6500.0),
        "windows came due while stopped"
    );
    after.tick(at(6500.0), &mut got);
    events(&mut after, 6500, 9000, &mut got);
    after.tick(at(20000.0), &mut got);
    assert_eq!(got, expected);
    assert!(rows(&expected[split..]).len() > 10);
}

#[test]
fn snapshots_keep_the_last_value_and_the_rate_clock() {
    let mut c = text();
    c.filters.last_unique_check = true;
    c.filters.max_rate = 60;
    for v in ["short", &"x".repeat(300)] {
        let mut p = Pipeline::new(NODE, c.clone(), at(0.0));
        p.offer(at(10.0), v.as_bytes(), &mut Vec::new());
        let json = p.snapshot().to_json();
        let mut q = Pipeline::restore(
            NODE,
            c.clone(),
            Snapshot::from_json(&json).unwrap(),
            at(20.0),
        )
        .unwrap();
        assert_eq!(
            q.offer(at(69.0), b"other", &mut Vec::new()),
            Verdict::Dropped(Rate)
        );
        assert_eq!(
            q.offer(at(70.0), v.as_bytes(), &mut Vec::new()),
            Verdict::Dropped(Repeat)
        );
        assert_eq!(q.offer(at(71.0), b"other", &mut Vec::new()), Accepted);
    }
}

#[test]
fn a_snapshot_under_another_geometry_is_fitted_to_the_config() {
    let mut out = Vec::new();
    let mut p = Pipeline::new(NODE, agg(3600, Some(60), Sum), at(0.0));
    feed(&mut p, 3600, 4200, 30, &mut out);
    let snapshot = p.snapshot();
    // a multiple of the old step: merged exactly
    let mut q = Pipeline::restore(
        NODE,
        agg(3600, Some(600), Sum),
        snapshot.clone(),
        at(4200.0),
    )
    .unwrap();
    feed(&mut q, 4200, 4800, 30, &mut out);
    out.clear();
    q.tick(at(7200.0), &mut out);
    assert_eq!(
        rows(&out)[0],
        (1200, 4800, fed_sum(1200, 4800, 30, (3600, 4800)))
    );
    // another policy: the windows are discarded, counted
    let q = Pipeline::restore(NODE, number(), snapshot, at(4200.0)).unwrap();
    assert_eq!(q.counters().values_discarded, 20);
    assert_eq!(q.bucket_count(), 0);
}

#[test]
fn bad_snapshots_are_refused_with_a_reason() {
    let mut p = Pipeline::new(NODE, agg(300, Some(60), Sum), at(0.0));
    feed(&mut p, 0, 200, 10, &mut Vec::new());
    let good = p.snapshot();
    let json = good.to_json();
    let c = || agg(300, Some(60), Sum);
    let restore = |s: Snapshot| Pipeline::restore(NODE, c(), s, at(300.0)).map(|_| ());
    assert!(restore(good.clone()).is_ok());

    let edit = |f: &dyn Fn(&mut Snapshot)| {
        let mut s = good.clone();
        f(&mut s);
        s
    };
    let windows = |f: &dyn Fn(&mut SnapshotWindows)| edit(&|s| f(s.aggregation.as_mut().unwrap()));
    let cases: Vec<(Snapshot, &str)> = vec![
        (edit(&|s| s.version = 2), "version 2"),
        (edit(&|s| s.node = Uuid::from_u128(9)), "node"),
        (edit(&|s| s.last_accepted = Some(at(1e6))), "last accepted"),
        (
            edit(&|s| s.last_value = Some(SnapshotValue::Number(f64::NAN))),
            "not finite",
        ),
        (
            edit(&|s| {
                s.last_value = Some(SnapshotValue::Digest {
                    len: 3,
                    sha256: "zz".into(),
                })
            }),
            "64 hex",
        ),
        (windows(&|w| w.step = 7), "multiple"),
        (windows(&|w| w.step = 0), "multiple"),
        (
            windows(&|w| w.emitted_through = unix(1000)),
            "after its clock",
        ),
        (windows(&|w| w.buckets.swap(0, 1)), "out of order"),
        (windows(&|w| w.buckets[0].2 = 0), "malformed"),
        (windows(&|w| w.buckets[0].5 = 1e9), "malformed"),
        (
            windows(&|w| w.buckets[1].0 = w.buckets[1].1 + 1),
            "malformed",
        ),
        (windows(&|w| w.buckets[1].3 = f64::INFINITY), "malformed"),
        (
            windows(&|w| w.buckets = vec![w.buckets[0]; MAX_BUCKETS + 1]),
            "more than",
        ),
    ];
    for (s, why) in cases {
        let err = restore(s).unwrap_err();
        assert!(err.contains(why), "{err:?} should say {why:?}");
    }

    for (bad, why) in [
        ("", "not readable"),
        ("{}", "not readable"),
        ("[1,2]", "not readable"),
        (r#"{"version":2,"anything":true}"#, "version 2"),
        (&json.replace("\"node\"", "\"nodes\""), "not readable"),
        (&json.replacen("],[", "],null,[", 1), "not readable"),
    ] {
        let err = Snapshot::from_json(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err:?} should say {why:?}");
    }
    assert_eq!(Snapshot::from_json(&json).unwrap(), good);
}

// ---------------------------------------------------------------- memory

#[test]
fn memory_is_bounded_under_a_flood() {
    let idle = Pipeline::new(NODE, agg(86_400, Some(60), Avg), at(0.0));
    let idle_bytes = idle.memory_bytes();

    // two values a second for 26 hours, no rate limit, a 24 h window at a 60 s step
    let mut p = Pipeline::new(NODE, agg(86_400, Some(60), Avg), at(0.0));
    let mut out = Vec::new();
    let mut most = (0, 0);
    for half in 0..(26 * 3600 * 2) {
        let t = half as f64 / 2.0;
        assert_eq!(p.offer(at(t), b"21.5", &mut out), Accepted);
        if half % 7200 == 0 {
            p.tick(at(t), &mut out);
            out.clear();
            most = (most.0.max(p.bucket_count()), most.1.max(p.memory_bytes()));
        }
    }
    let full = p.memory_bytes();
    assert!(most.0 <= 1440, "buckets {}", most.0);
    assert_eq!(p.bucket_count(), 1440);
    let bound = std::mem::size_of::<Pipeline>() + 1440 * std::mem::size_of::<window::Bucket>();
    assert!(
        most.1 <= bound && full <= bound,
        "{} / {full} > {bound}",
        most.1
    );

    // every other policy keeps nothing per value; a huge last value is kept as a digest
    let mut c = text();
    c.filters.last_unique_check = true;
    let mut lv = Pipeline::new(NODE, c, at(0.0));
    for i in 0..200u32 {
        let big = format!("{i}{}", "x".repeat(256 * 1024));
        lv.offer(at(f64::from(i)), big.as_bytes(), &mut Vec::new());
    }
    let lv_bytes = lv.memory_bytes();
    assert!(lv_bytes <= std::mem::size_of::<Pipeline>() + INLINE_LAST_VALUE);
    eprintln!(
        "memory: idle {idle_bytes} B, full 24 h / 60 s {full} B (snapshot {} B of JSON), LastValue after 256 KiB values {lv_bytes} B, bucket {} B",
        p.snapshot().to_json().len(),
        std::mem::size_of::<window::Bucket>()
    );
}

#[test]
fn past_the_bucket_bound_values_are_dropped_and_counted() {
    // a step finer than validation should allow: 1 s over a day
    let mut p = Pipeline::new(NODE, agg(86_400, Some(1), Sum), at(0.0));
    let mut out = Vec::new();
    for t in 0..(MAX_BUCKETS as i64 + 100) {
        p.offer(at(t as f64), b"1", &mut out);
    }
    assert_eq!(p.bucket_count(), MAX_BUCKETS);
    assert_eq!(p.counters().dropped(Capacity), 100);
    assert!(
        p.memory_bytes()
            <= std::mem::size_of::<Pipeline>()
                + MAX_BUCKETS * std::mem::size_of::<window::Bucket>()
    );
    // windows count only what was accepted
    p.tick(at(MAX_BUCKETS as f64), &mut out);
    assert_eq!(rows(&out).last().unwrap().2, MAX_BUCKETS as f64);
}

// ---------------------------------------------------------------- properties

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn any_function() -> impl Strategy<Value = AggregationFunction> {
    prop::sample::select(vec![Avg, Min, Max, Sum])
}

/// Window size and a step dividing it, small so that windows close often.
fn geometry() -> impl Strategy<Value = (u32, Option<u32>)> {
    prop::sample::select(vec![60u32, 120, 300, 600]).prop_flat_map(|w| {
        let steps: Vec<Option<u32>> = [
            None,
            Some(w),
            Some(w / 2),
            Some(w / 3),
            Some(60),
            Some(w / 10),
        ]
        .into_iter()
        .filter(|s| s.is_none_or(|s| s > 0 && w.is_multiple_of(s)))
        .collect();
        (Just(w), prop::sample::select(steps))
    })
}

fn any_config() -> impl Strategy<Value = DataPipeConfig> {
    let filters = (
        prop::bool::ANY,
        prop::option::of((
            prop::bool::ANY,
            prop::collection::vec(
                prop_oneof![
                    any::<f64>().prop_map(FilterValue::Number),
                    ".{0,4}".prop_map(FilterValue::Text),
                ],
                0..4,
            ),
        )),
        prop::option::of((
            0..3u8,
            prop::option::of(-100i64..100),
            prop::option::of(-100i64..100),
        )),
        0u32..30,
        prop::bool::ANY,
        prop_oneof![Just(0u32), 1u32..64],
    );
    let transformations = prop::option::of((
        prop::option::of(prop_oneof![any::<f64>(), -10.0..10.0f64]),
        prop::option::of(0u8..9),
        prop::option::of(any::<i64>()),
        prop::option::of(-8i64..8),
    ));
    let policies = prop_oneof![
        Just(last_value()),
        (0u32..5).prop_map(|n| ProcessingPolicy {
            n_records_count: Some(n),
            ..policy(ProcessingPolicyType::NRecords)
        }),
        prop::option::of(0u32..600).prop_map(|w| ProcessingPolicy {
            time_window_size: w,
            ..policy(ProcessingPolicyType::TimeWindow)
        }),
        (geometry(), any_function()).prop_map(|((w, s), f)| aggregation(w, s, f)),
        (0u32..700, prop::option::of(0u32..700), any_function())
            .prop_map(|(w, s, f)| aggregation(w, s, f)),
    ];
    let period = (
        0..4u8,
        prop::option::of(0.0..500.0f64),
        prop::option::of(0.0..500.0f64),
    );
    (prop::bool::ANY, filters, transformations, policies, period).prop_map(
        |(is_text, (list_on, list, thr, rate, unique, size), tr, pp, (kind, start, end))| {
            let input = if is_text {
                TypeInputValue::Text
            } else {
                TypeInputValue::Number
            };
            let mut c = config(input, pp);
            c.active_period = ActivePeriod {
                kind: ActivePeriodType::ALL[kind as usize],
                start: start.map(at),
                end: end.map(at),
            };
            let _ = list_on;
            if let Some((white, values)) = list {
                c.filters.type_value_filtering = Some(if white {
                    FilterTypeValueFiltering::WhiteList
                } else {
                    FilterTypeValueFiltering::BlackList
                });
                c.filters.filtering_values = Some(values);
            }
            if let Some((k, min, max)) = thr {
                c.filters.type_value_threshold = Some(FilterTypeValueThreshold::ALL[k as usize]);
                c.filters.threshold_min = min;
                c.filters.threshold_max = max;
            }
            c.filters.max_rate = rate;
            c.filters.last_unique_check = unique;
            c.filters.max_size = size;
            c.transformations = tr.map(|(ratio, round, start, end)| Transformations {
                multiplication_ratio: ratio,
                round_decimal_point: round,
                slice_start: start,
                slice_end: end,
            });
            c
        },
    )
}

fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        ".{0,12}".prop_map(String::into_bytes),
        any::<f64>().prop_map(|x| x.to_string().into_bytes()),
        (-1000i32..1000).prop_map(|x| x.to_string().into_bytes()),
        prop::sample::select(vec![
            "NaN", "inf", "-inf", "1e400", "-1e400", "1.7e308", "-0", "1e-400"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// What happens to a pipeline: values, ticks, config changes, a stop and restart.
#[derive(Clone, Debug)]
enum Event {
    Value(f64, Vec<u8>),
    Tick(f64),
    Reconfigure(f64, DataPipeConfig),
    Restart(f64),
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0.0..200.0f64, any_payload()).prop_map(|(dt, p)| Event::Value(dt, p)),
        3 => (0.0..400.0f64).prop_map(Event::Tick),
        1 => (0.0..100.0f64, any_config()).prop_map(|(dt, c)| Event::Reconfigure(dt, c)),
        1 => (0.0..1000.0f64).prop_map(Event::Restart),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Anything at all: no panic, the bound holds, a snapshot always restores, every row is
    /// finite and in order.
    #[test]
    fn no_input_or_config_breaks_a_pipeline(
        c in any_config(),
        events in prop::collection::vec(any_event(), 0..60),
        back in prop::bool::ANY,
    ) {
        let mut p = Pipeline::new(NODE, c, at(0.0));
        let mut out = Vec::new();
        let mut t = 0.0;
        for e in events {
            match e {
                Event::Value(dt, payload) => {
                    t += dt;
                    let when = if back { t - 2.0 * dt } else { t };
                    let v = p.offer(at(when), &payload, &mut out);
                    if v == Accepted && p.config().filters.type_input_value == TypeInputValue::Number {
                        prop_assert!(std::str::from_utf8(&payload).unwrap().parse::<f64>().unwrap().is_finite());
                    }
                }
                Event::Tick(dt) => { t += dt; p.tick(at(t), &mut out); }
                Event::Reconfigure(dt, c) => { t += dt; p.reconfigure(c, at(t), &mut out); }
                Event::Restart(dt) => {
                    t += dt;
                    let json = p.snapshot().to_json();
                    let c = p.config().clone();
                    let counters = p.counters().clone();
                    p = Pipeline::restore(NODE, c, Snapshot::from_json(&json).unwrap(), at(t)).unwrap();
                    prop_assert!(p.counters().values_discarded == 0 || counters.accepted > 0);
                }
            }
            prop_assert!(p.bucket_count() <= MAX_BUCKETS);
            prop_assert!(p.memory_bytes() <= std::mem::size_of::<Pipeline>() + 4096 + MAX_BUCKETS * std::mem::size_of::<window::Bucket>());
        }
        let mut last_end = None;
        for o in &out {
            if let Output::Aggregation(a) = o {
                prop_assert!(a.state.is_finite());
                prop_assert!(a.start_window_datetime < a.end_window_datetime);
                prop_assert!(last_end.is_none_or(|e| e <= a.end_window_datetime));
                last_end = Some(a.end_window_datetime);
            }
        }
    }

    /// Sliding and tumbling windows equal a brute-force recomputation from the raw values,
    /// and every window holding a value is emitted.
    #[test]
    fn windows_equal_a_recomputation_from_the_raw_values(
        (w, s) in geometry(),
        f in any_function(),
        values in prop::collection::vec((0.0..90.0f64, -1e6..1e6f64), 1..120),
        ticks in prop::collection::vec(0.0..1.0f64, 0..40),
    ) {
        let mut p = Pipeline::new(NODE, agg(w, s, f), at(0.0));
        let mut out = Vec::new();
        let mut raw: Vec<(f64, f64)> = Vec::new();
        let mut t = 0.0;
        for (i, (dt, x)) in values.iter().enumerate() {
            // ticks between values (a tick later than a value would move the value)
            if let Some(frac) = ticks.get(i) {
                p.tick(at(t + frac * dt), &mut out);
            }
            t += dt;
            prop_assert_eq!(p.offer(at(t), format!("{x}").as_bytes(), &mut out), Accepted);
            raw.push(((at(t) - at(0.0)).num_nanoseconds().unwrap() as f64 / 1e9, *x));
        }
        let end = t + f64::from(w) * 2.0;
        p.tick(at(end), &mut out);
        prop_assert_eq!(p.bucket_count(), 0);

        let step = i64::from(s.unwrap_or(w));
        let got = rows(&out);
        let mut expected = Vec::new();
        let mut b = step;
        while (b as f64) <= end {
            let start = b - i64::from(w);
            let inside: Vec<f64> = raw.iter()
                .filter(|(t, _)| *t >= start as f64 && *t < b as f64)
                .map(|(_, x)| *x)
                .collect();
            if !inside.is_empty() {
                let n = inside.len() as f64;
                let sum: f64 = inside.iter().sum();
                let value = match f {
                    Avg => sum / n,
                    Sum => sum,
                    Min => inside.iter().cloned().fold(f64::INFINITY, f64::min),
                    Max => inside.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                };
                let scale: f64 = inside.iter().map(|x| x.abs()).sum();
                expected.push((start, b, value, scale));
            }
            b += step;
        }
        prop_assert_eq!(got.len(), expected.len(), "{:?} vs {:?}", got, expected);
        for ((s0, e0, v0), (s1, e1, v1, scale)) in got.iter().zip(&expected) {
            prop_assert_eq!((s0, e0), (s1, e1));
            prop_assert!((v0 - v1).abs() <= 1e-12 * scale, "{} vs {} over [{}, {})", v0, v1, s1, e1);
        }
    }

    /// Stopping and restoring anywhere changes no row.
    #[test]
    fn a_restart_anywhere_changes_no_row(
        (w, s) in geometry(),
        f in any_function(),
        unique in prop::bool::ANY,
        rate in 0u32..20,
        values in prop::collection::vec((0.0..100.0f64, -5i32..5), 1..80),
        stop in 0usize..80,
        downtime in 0.0..2000.0f64,
    ) {
        let mut c = agg(w, s, f);
        c.filters.last_unique_check = unique;
        c.filters.max_rate = rate;
        let run = |restart: bool| {
            let mut p = Pipeline::new(NODE, c.clone(), at(0.0));
            let mut out = Vec::new();
            let mut verdicts = Vec::new();
            let mut t = 0.0;
            for (i, (dt, x)) in values.iter().enumerate() {
                t += dt;
                if i == stop {
                    t += downtime;
                    if restart {
                        let json = p.snapshot().to_json();
                        p = Pipeline::restore(NODE, c.clone(), Snapshot::from_json(&json).unwrap(), at(t)).unwrap();
                    }
                    p.tick(at(t), &mut out);
                }
                verdicts.push(p.offer(at(t), x.to_string().as_bytes(), &mut out));
            }
            p.tick(at(t + 10_000.0), &mut out);
            (out, verdicts)
        };
        prop_assert_eq!(run(true), run(false));
    }
}
