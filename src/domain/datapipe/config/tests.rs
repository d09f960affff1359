//! Tests of the config's forms. The expected messages of `UPSTREAM` and the golden stored
//! JSON and YAML were produced by upstream's validator on pydantic 2.14 and PyYAML 6.0 (our
//! additions are in `OURS`, written by hand).

use chrono::{NaiveDate, NaiveDateTime};
use proptest::prelude::*;

use super::*;
use crate::domain::datapipe::DataPipeStage as S;

const LIMIT: u32 = 262_144;

/// The `{stage, message}` list a case expects.
type Expected = &'static [(DataPipeStage, &'static str)];

fn errors(text: &str) -> Vec<(DataPipeStage, String)> {
    match DataPipeConfig::parse_yaml(text, LIMIT) {
        Ok(_) => Vec::new(),
        Err(e) => e.into_iter().map(|e| (e.stage, e.message)).collect(),
    }
}

fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

/// Upstream's answers (`check_data_pipe_config`), one case per validator branch, enum, bound
/// and conversion.
#[rustfmt::skip]
const UPSTREAM: &[(&str, &str, Expected)] = &[
    ("valid default", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("active period type bogus", "active_period:\n  type: Bogus\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be 'Permanent', 'FromDate', 'ToDate' or 'DateRange'")]),
    ("active period type lower case", "active_period:\n  type: permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be 'Permanent', 'FromDate', 'ToDate' or 'DateRange'")]),
    ("active period type number", "active_period:\n  type: 5\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be 'Permanent', 'FromDate', 'ToDate' or 'DateRange'")]),
    ("active period type null", "active_period:\n  type: null\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be 'Permanent', 'FromDate', 'ToDate' or 'DateRange'")]),
    ("type input value", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Txt\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be 'Text' or 'Number'")]),
    ("type value filtering", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  type_value_filtering: White\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be 'WhiteList' or 'BlackList'")]),
    ("type value threshold", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Mn\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be 'Min', 'Max' or 'Range'")]),
    ("policy type", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Last\n", &[(S::ProcessingPolicy, "Input should be 'LastValue', 'NRecords', 'TimeWindow' or 'Aggregation'")]),
    ("aggregation functions", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 60\n  aggregation_functions: Mean\n", &[(S::ProcessingPolicy, "Input should be 'Avg', 'Min', 'Max' or 'Sum'")]),
    ("missing active_period", "filters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Field required")]),
    ("missing filters", "active_period:\n  type: Permanent\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Field required")]),
    ("missing processing_policy", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n", &[(S::ProcessingPolicy, "Field required")]),
    ("missing type", "active_period:\n  start: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Field required")]),
    ("missing max_rate and max_size", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Field required"), (S::Filters, "Field required")]),
    ("missing policy_type", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  n_records_count: 5\n", &[(S::ProcessingPolicy, "Field required")]),
    ("sections not mappings", "active_period: 5\nfilters: [1]\ntransformations: x\nprocessing_policy: null\n", &[(S::ActivePeriod, "Input should be a valid dictionary or instance of ActivePeriod"), (S::Filters, "Input should be a valid dictionary or instance of FiltersConfig"), (S::Transformations, "Input should be a valid dictionary or instance of TransformationConfig"), (S::ProcessingPolicy, "Input should be a valid dictionary or instance of ProcessingPolicyConfig")]),
    ("transformations null", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations: null\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("transformations empty", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations: {}\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("FromDate without start", "active_period:\n  type: FromDate\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, start must be provided for FROM_DATE")]),
    ("FromDate with start", "active_period:\n  type: FromDate\n  start: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("ToDate without end", "active_period:\n  type: ToDate\n  start: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, end must be provided for TO_DATE")]),
    ("ToDate with end", "active_period:\n  type: ToDate\n  end: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("DateRange without end", "active_period:\n  type: DateRange\n  start: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, start and end must be provided for DATE_RANGE")]),
    ("DateRange without start", "active_period:\n  type: DateRange\n  end: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, start and end must be provided for DATE_RANGE")]),
    ("DateRange equal", "active_period:\n  type: DateRange\n  start: 2024-01-01\n  end: 2024-01-01 00:00:00\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, start must be before end for DATE_RANGE")]),
    ("DateRange reversed", "active_period:\n  type: DateRange\n  start: 2024-01-02\n  end: 2024-01-01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Value error, start must be before end for DATE_RANGE")]),
    ("DateRange ok", "active_period:\n  type: DateRange\n  start: 2024-01-01\n  end: 2024-01-01 00:00:01\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("bad datetimes", "active_period:\n  type: DateRange\n  start: hello\n  end: \"2024-13-01\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, input is too short"), (S::ActivePeriod, "Input should be a valid datetime or date, month value is outside expected range of 1-12")]),
    ("datetime too short", "active_period:\n  type: FromDate\n  start: \"2024-1-1\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, input is too short")]),
    ("datetime separator", "active_period:\n  type: FromDate\n  start: \"2024/01/01\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, invalid date separator, expected `-`")]),
    ("datetime year", "active_period:\n  type: FromDate\n  start: \"01.01.2024\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, invalid character in year")]),
    ("datetime day", "active_period:\n  type: FromDate\n  start: \"2024-02-30\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, day value is outside expected range")]),
    ("datetime extra", "active_period:\n  type: FromDate\n  start: \"2024-01-01T25:00:00\"\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime or date, unexpected extra characters at the end of the input")]),
    ("datetime list", "active_period:\n  type: FromDate\n  start: [1]\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime")]),
    ("datetime bool", "active_period:\n  type: FromDate\n  start: true\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime")]),
    ("datetime before 1600", "active_period:\n  type: FromDate\n  start: -20000000000000\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("datetime after 9999", "active_period:\n  type: FromDate\n  start: 1.0e+20\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::ActivePeriod, "Input should be a valid datetime, dates after 9999 are not supported as unix timestamps")]),
    ("numeric for NUMBER", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_filtering: WhiteList\n  filtering_values: [1, \"x\"]\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, filtering_values must be numeric for NUMBER input")]),
    ("strings for TEXT", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  type_value_filtering: BlackList\n  filtering_values: [\"a\", 1]\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, filtering_values must be strings for TEXT input")]),
    ("strings for TEXT bool", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  type_value_filtering: BlackList\n  filtering_values: [\"a\", true]\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, filtering_values must be strings for TEXT input")]),
    ("values without filtering type are not checked", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  filtering_values: [1, 2.5]\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("empty list is not checked", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_filtering: WhiteList\n  filtering_values: []\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("Min without threshold_min", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Min\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, threshold_min is required for MIN threshold")]),
    ("Max without threshold_max", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Max\n  threshold_min: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, threshold_max is required for MAX threshold")]),
    ("Range without max", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\n  threshold_min: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, Both threshold_min and threshold_max are required for RANGE threshold")]),
    ("Range without min", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\n  threshold_max: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, Both threshold_min and threshold_max are required for RANGE threshold")]),
    ("Range equal", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\n  threshold_min: 5\n  threshold_max: 5\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, threshold_min must be less than threshold_max")]),
    ("Range reversed", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\n  threshold_min: 6\n  threshold_max: 5\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, threshold_min must be less than threshold_max")]),
    ("Range ok", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\n  threshold_min: 4\n  threshold_max: 5\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("threshold on Text is not checked", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Range\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("max_size over the limit", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 262145\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Value error, max_size must be <= 262144")]),
    ("max_size at the limit", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 262144\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("max_size 0", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 0\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("max_size negative", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: -1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be greater than or equal to 0")]),
    ("max_rate 0", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 0\n  max_size: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("max_rate 86400", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 86400\n  max_size: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("max_rate 86401", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 86401\n  max_size: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be less than or equal to 86400")]),
    ("max_rate -1", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: -1\n  max_size: 1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be greater than or equal to 0")]),
    ("rule error after field error is not shown", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Min\n  last_unique_check: maybe\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean, unable to interpret input")]),
    ("int from fractional float", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5.5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid integer, got a number with a fractional part")]),
    ("int from integral float and strings", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5.0\n  max_size: \" 1_00 \"\n  threshold_min: \"1.0\"\n  threshold_max: true\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("int parsing", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: \"abc\"\n  max_size: \"1.5\"\n  threshold_min: \"0x10\"\n  threshold_max: 1e3\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid integer, unable to parse string as an integer"), (S::Filters, "Input should be a valid integer, unable to parse string as an integer"), (S::Filters, "Input should be a valid integer, unable to parse string as an integer"), (S::Filters, "Input should be a valid integer, unable to parse string as an integer")]),
    ("int type", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: [1]\n  max_size: {a: 1}\n  threshold_min: 2024-01-01\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid integer")]),
    ("int required null", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: null\n  max_size: ~\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid integer")]),
    ("bool conversions ok", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: \"off\"\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("bool parsing", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: maybe\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean, unable to interpret input")]),
    ("bool parsing int", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: 2\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean, unable to interpret input")]),
    ("bool type float", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: 1.5\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean")]),
    ("bool type null", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: null\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean")]),
    ("bool type list", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  last_unique_check: []\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid boolean")]),
    ("float parsing", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  multiplication_ratio: abc\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be a valid number, unable to parse string as a number")]),
    ("float type bool", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  multiplication_ratio: true\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("float type list", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  multiplication_ratio: [1]\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be a valid number")]),
    ("float from string", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  multiplication_ratio: \" 1_000.5 \"\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be a valid number, unable to parse string as a number")]),
    ("round 0", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  round_decimal_point: 0\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("round 7", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  round_decimal_point: 7\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("round 8", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  round_decimal_point: 8\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be less than or equal to 7")]),
    ("round -1", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  round_decimal_point: -1\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be greater than or equal to 0")]),
    ("round 7.0 string", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  round_decimal_point: \"7.0\"\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("slices", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  slice_start: \"+5\"\n  slice_end: -0\nprocessing_policy:\n  policy_type: LastValue\n", &[]),
    ("slice parsing", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\ntransformations:\n  slice_start: \"1.5\"\n  slice_end: 1.5\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Transformations, "Input should be a valid integer, unable to parse string as an integer"), (S::Transformations, "Input should be a valid integer, got a number with a fractional part")]),
    ("list type", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n  filtering_values: abc\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid list")]),
    ("union items", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  filtering_values: [null, [1], {a: 1}, 2024-01-01]\nprocessing_policy:\n  policy_type: LastValue\n", &[(S::Filters, "Input should be a valid string"), (S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid number"), (S::Filters, "Input should be a valid string"), (S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid number"), (S::Filters, "Input should be a valid string"), (S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid number"), (S::Filters, "Input should be a valid string"), (S::Filters, "Input should be a valid integer"), (S::Filters, "Input should be a valid number")]),
    ("NRecords without count", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n", &[(S::ProcessingPolicy, "Value error, n_records_count is required for N_RECORDS")]),
    ("NRecords count 0", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: 0\n", &[(S::ProcessingPolicy, "Value error, n_records_count must be between 1 and 1024")]),
    ("NRecords count 1", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: 1\n", &[]),
    ("NRecords count 1024", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: 1024\n", &[]),
    ("NRecords count 1025", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: 1025\n", &[(S::ProcessingPolicy, "Value error, n_records_count must be between 1 and 1024")]),
    ("NRecords count -1", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: NRecords\n  n_records_count: -1\n", &[(S::ProcessingPolicy, "Value error, n_records_count must be between 1 and 1024")]),
    ("TimeWindow without size", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n", &[(S::ProcessingPolicy, "Value error, time_window_size is required")]),
    ("TimeWindow size 0", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 0\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("TimeWindow size 59", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 59\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("TimeWindow size 60", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 60\n", &[]),
    ("TimeWindow size 61", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 61\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("TimeWindow size 300", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 300\n", &[]),
    ("TimeWindow size 86400", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 86400\n", &[]),
    ("TimeWindow size 86401", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 86401\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("TimeWindow size 3599", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: TimeWindow\n  time_window_size: 3599\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("Aggregation without size", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  aggregation_functions: Avg\n", &[(S::ProcessingPolicy, "Value error, time_window_size is required")]),
    ("Aggregation without function", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 60\n", &[(S::ProcessingPolicy, "Value error, aggregation_functions is required for AGGREGATION")]),
    ("Aggregation bad size and no function", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 61\n", &[(S::ProcessingPolicy, "Value error, Invalid time_window_size. Must be one of: [60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400]")]),
    ("Aggregation Avg", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 600\n  aggregation_functions: Avg\n", &[]),
    ("Aggregation Min", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 600\n  aggregation_functions: Min\n", &[]),
    ("Aggregation Max", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 600\n  aggregation_functions: Max\n", &[]),
    ("Aggregation Sum", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: Aggregation\n  time_window_size: 600\n  aggregation_functions: Sum\n", &[]),
    ("LastValue ignores the rest", "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n  n_records_count: 5000\n  time_window_size: 7\n", &[]),
    ("errors in every section", "active_period:\n  type: FromDate\nfilters:\n  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n  type_value_threshold: Max\ntransformations:\n  round_decimal_point: 9\nprocessing_policy:\n  policy_type: NRecords\n", &[(S::ActivePeriod, "Value error, start must be provided for FROM_DATE"), (S::Filters, "Value error, threshold_max is required for MAX threshold"), (S::Transformations, "Input should be less than or equal to 7"), (S::ProcessingPolicy, "Value error, n_records_count is required for N_RECORDS")]),
];

#[test]
fn upstream_messages() {
    let mut failed = Vec::new();
    for (name, text, expected) in UPSTREAM {
        let want: Vec<(DataPipeStage, String)> =
            expected.iter().map(|(s, m)| (*s, m.to_string())).collect();
        let got = errors(text);
        if got != want {
            failed.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn doc(ap: &str, filters: &str, transformations: Option<&str>, policy: &str) -> String {
    let mut out = format!("active_period:\n{ap}filters:\n{filters}");
    if let Some(t) = transformations {
        out.push_str(&format!("transformations:\n{t}"));
    }
    out.push_str(&format!("processing_policy:\n{policy}"));
    out
}

const AP: &str = "  type: Permanent\n";
const F: &str = "  type_input_value: Text\n  max_rate: 5\n  max_size: 100\n";
const NUM: &str = "  type_input_value: Number\n  max_rate: 5\n  max_size: 100\n";
const PP: &str = "  policy_type: LastValue\n";
const AGG: &str =
    "  policy_type: Aggregation\n  time_window_size: 3600\n  aggregation_functions: Avg\n";

fn with_policy(policy: &str) -> String {
    doc(AP, F, None, policy)
}

/// Our additions and the texts upstream cannot answer (500s): one case each.
#[test]
fn our_additions() {
    let deep = format!("active_period: {}1{}\n", "[".repeat(40), "]".repeat(40));
    let many = format!(
        "active_period:\n  type: Permanent\n  start: [{}]\n",
        vec!["1"; 10_001].join(", ")
    );
    type Case = (&'static str, String, Vec<(DataPipeStage, &'static str)>);
    let cases: Vec<Case> = vec![
        ("unknown key in a section", doc(AP, &format!("{F}  max_rat: 5\n"), None, PP), vec![(
            S::Filters,
            "Unknown key 'max_rat' in filters: its keys are type_input_value, type_value_filtering, filtering_values, type_value_threshold, threshold_min, threshold_max, max_rate, last_unique_check, max_size",
        )]),
        ("unknown key stops the section's rules", doc("  type: FromDate\n  begin: 2024-01-01\n", F, None, PP), vec![(
            S::ActivePeriod,
            "Unknown key 'begin' in active_period: its keys are type, start, end",
        )]),
        ("unknown key in transformations", doc(AP, F, Some("  ratio: 2\n"), PP), vec![(
            S::Transformations,
            "Unknown key 'ratio' in transformations: its keys are multiplication_ratio, round_decimal_point, slice_start, slice_end",
        )]),
        ("a YAML 1.1 boolean key is not a field", doc(AP, &format!("{F}  on: 5\n"), None, PP), vec![(
            S::Filters,
            "Unknown key 'True' in filters: its keys are type_input_value, type_value_filtering, filtering_values, type_value_threshold, threshold_min, threshold_max, max_rate, last_unique_check, max_size",
        )]),
        ("misspelt section", format!("active_period:\n{AP}filter:\n{F}processing_policy:\n{PP}"), vec![
            (S::Filters, "Field required"),
            (S::Filters, "Unknown section 'filter': a data pipe config has the sections active_period, filters, transformations, processing_policy"),
        ]),
        ("a field at the top level", format!("{}max_rate: 5\n", with_policy(PP)), vec![(
            S::Filters,
            "Unknown section 'max_rate': a data pipe config has the sections active_period, filters, transformations, processing_policy",
        )]),
        ("an unrelated top-level key", format!("{}colour: red\n", with_policy(PP)), vec![(
            S::ActivePeriod,
            "Unknown section 'colour': a data pipe config has the sections active_period, filters, transformations, processing_policy",
        )]),
        ("processingpolicy", format!("{}processingpolicy: 1\n", with_policy(PP)), vec![(
            S::ProcessingPolicy,
            "Unknown section 'processingpolicy': a data pipe config has the sections active_period, filters, transformations, processing_policy",
        )]),
        ("empty file", String::new(), vec![(
            S::ActivePeriod,
            "The file is empty: a data pipe config is a YAML mapping with the sections active_period, filters, transformations (optional) and processing_policy",
        )]),
        ("only comments", "# nothing\n\n".into(), vec![(
            S::ActivePeriod,
            "The file is empty: a data pipe config is a YAML mapping with the sections active_period, filters, transformations (optional) and processing_policy",
        )]),
        ("a null document", "---\n~\n".into(), vec![(
            S::ActivePeriod,
            "The file is empty: a data pipe config is a YAML mapping with the sections active_period, filters, transformations (optional) and processing_policy",
        )]),
        ("a list", "- 1\n- 2\n".into(), vec![(S::ActivePeriod, "Input should be a valid dictionary or instance of DataPipeConfig")]),
        ("a scalar", "hello\n".into(), vec![(S::ActivePeriod, "Input should be a valid dictionary or instance of DataPipeConfig")]),
        ("not YAML at the start", "active_period: [1\n".into(), vec![(
            S::ActivePeriod,
            "The file is not valid YAML: while parsing a flow sequence, expected ',' or ']' (line 2, column 1)",
        )]),
        ("not YAML inside filters", format!("active_period:\n{AP}filters:\n  max_rate: 'x\n"), vec![(
            S::Filters,
            "The file is not valid YAML: while scanning a quoted scalar, found unexpected end of stream (line 4, column 13)",
        )]),
        ("a tab for indentation", "active_period:\n\ttype: Permanent\n".into(), vec![(
            S::ActivePeriod,
            "The file is not valid YAML: tabs disallowed within this context (block indentation) (line 2, column 2)",
        )]),
        ("duplicate key in a section", doc(AP, &format!("{F}  max_rate: 6\n"), None, PP), vec![(
            S::Filters,
            "Duplicate key 'max_rate' (line 7)",
        )]),
        ("duplicate section", format!("{}filters:\n{F}", with_policy(PP)), vec![(
            S::Filters,
            "Duplicate key 'filters' (line 9)",
        )]),
        ("an alias", format!("active_period: &a\n{AP}filters: *a\nprocessing_policy:\n{PP}"), vec![(
            S::Filters,
            "YAML aliases (*name) are not supported in a data pipe config (line 3)",
        )]),
        ("two documents", format!("{}---\n{}", with_policy(PP), with_policy(PP)), vec![(
            S::ProcessingPolicy,
            "The file holds more than one YAML document (line 9); a data pipe config is one",
        )]),
        ("a custom tag", doc(AP, F, Some("  multiplication_ratio: !python/object 2\n"), PP), vec![(
            S::Transformations,
            "The YAML tag '!python/object' is not supported (line 8)",
        )]),
        ("a bad !!int", doc(AP, F, Some("  slice_start: !!int abc\n"), PP), vec![(
            S::Transformations,
            "'abc' is not a valid !!int (line 8)",
        )]),
        ("a complex key", format!("{}? [a]\n: 1\n", with_policy(PP)), vec![(
            S::ActivePeriod,
            "A mapping key must be a plain value, not a list or mapping (line 9)",
        )]),
        ("nesting", deep, vec![(
            S::ActivePeriod,
            "The document nests deeper than 16 levels; a data pipe config needs 3 (line 1)",
        )]),
        ("too many values", many, vec![(
            S::ActivePeriod,
            "The document has more than 10000 values; a data pipe config needs a few dozen (line 3)",
        )]),
        ("NaN in filtering_values", doc(AP, &format!("{NUM}  filtering_values: [1, .nan, .inf]\n"), None, PP), vec![
            (S::Filters, "Input should be a finite number"),
            (S::Filters, "Input should be a finite number"),
        ]),
        ("infinite ratio", doc(AP, F, Some("  multiplication_ratio: -.inf\n"), PP), vec![(S::Transformations, "Input should be a finite number")]),
        ("ratio from 'nan'", doc(AP, F, Some("  multiplication_ratio: 'NaN'\n"), PP), vec![(S::Transformations, "Input should be a finite number")]),
        ("ratio over f64", doc(AP, F, Some("  multiplication_ratio: 1.0e+400\n"), PP), vec![(S::Transformations, "Input should be a finite number")]),
        ("threshold beyond i64", doc(AP, &format!("{NUM}  threshold_min: 9223372036854775808\n"), None, PP), vec![(
            S::Filters,
            "Input should be less than or equal to 9223372036854775807",
        )]),
        ("slice beyond i64", doc(AP, F, Some("  slice_end: -9223372036854775809\n"), PP), vec![(
            S::Transformations,
            "Input should be greater than or equal to -9223372036854775808",
        )]),
        ("list value beyond i64", doc(AP, &format!("{NUM}  filtering_values: [18446744073709551615]\n"), None, PP), vec![(
            S::Filters,
            "Input should be less than or equal to 9223372036854775807",
        )]),
        ("max_size beyond u32 without a limit is still refused by the limit", doc(AP, "  type_input_value: Text\n  max_rate: 5\n  max_size: 99999999999\n", None, PP), vec![(
            S::Filters,
            "Value error, max_size must be <= 262144",
        )]),
        ("n_records_count beyond u32 for LastValue", with_policy("  policy_type: LastValue\n  n_records_count: 4294967296\n"), vec![(
            S::ProcessingPolicy,
            "Input should be less than or equal to 4294967295",
        )]),
        ("step for TimeWindow", with_policy("  policy_type: TimeWindow\n  time_window_size: 3600\n  time_window_step: 60\n"), vec![(
            S::ProcessingPolicy,
            "Value error, time_window_step is only allowed for AGGREGATION",
        )]),
        ("step 0", with_policy(&format!("{AGG}  time_window_step: 0\n")), vec![(S::ProcessingPolicy, "Input should be greater than or equal to 1")]),
        ("step 86401", with_policy(&format!("{AGG}  time_window_step: 86401\n")), vec![(S::ProcessingPolicy, "Input should be less than or equal to 86400")]),
        ("step not dividing", with_policy(&format!("{AGG}  time_window_step: 7\n")), vec![(
            S::ProcessingPolicy,
            "Value error, time_window_step must divide time_window_size",
        )]),
        ("step larger than the window", with_policy(&format!("{AGG}  time_window_step: 7200\n")), vec![(
            S::ProcessingPolicy,
            "Value error, time_window_step must divide time_window_size",
        )]),
        ("too many steps", with_policy("  policy_type: Aggregation\n  time_window_size: 86400\n  time_window_step: 50\n  aggregation_functions: Sum\n"), vec![(
            S::ProcessingPolicy,
            "Value error, time_window_size / time_window_step must be at most 1440",
        )]),
        ("upstream's rules come first", with_policy("  policy_type: Aggregation\n  time_window_size: 3600\n  time_window_step: 7\n"), vec![(
            S::ProcessingPolicy,
            "Value error, aggregation_functions is required for AGGREGATION",
        )]),
        ("a YAML timestamp that is no date", doc("  type: FromDate\n  start: 2024-13-01 10:00:00\n", F, None, PP), vec![(
            S::ActivePeriod,
            "Input should be a valid datetime, month must be in 1..12",
        )]),
        ("year 0", doc("  type: FromDate\n  start: '0000-01-01'\n", F, None, PP), vec![(
            S::ActivePeriod,
            "Input should be a valid datetime, year 0 is out of range",
        )]),
    ];
    let mut failed = Vec::new();
    for (name, text, expected) in cases {
        let want: Vec<(DataPipeStage, String)> =
            expected.iter().map(|(s, m)| (*s, m.to_string())).collect();
        let got = errors(&text);
        if got != want {
            failed.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn steps_that_fit() {
    for (size, step) in [
        (3600, 60),
        (3600, 3600),
        (86400, 60),
        (60, 1),
        (60, 60),
        (1440, 1),
    ] {
        let policy = format!(
            "  policy_type: Aggregation\n  time_window_size: {size}\n  time_window_step: {step}\n  aggregation_functions: Max\n"
        );
        let got = DataPipeConfig::parse_yaml(&with_policy(&policy), LIMIT);
        if WINDOW_SIZES.contains(&size) {
            let c = got.unwrap_or_else(|e| panic!("{size}/{step}: {e:?}"));
            assert_eq!(c.processing_policy.time_window_step, Some(step));
            let stored = c.to_stored_json();
            assert!(stored.ends_with(&format!(
                "\"aggregation_functions\": \"Max\", \"time_window_step\": {step}}}}}"
            )));
            assert_eq!(DataPipeConfig::from_stored_json(&stored).unwrap(), c);
        } else {
            assert!(got.is_err());
        }
    }
}

use crate::domain::datapipe::WINDOW_SIZES;

const DEFAULT_STORED: &str = r#"{"active_period": {"type": "Permanent", "start": null, "end": null}, "filters": {"type_input_value": "Text", "type_value_filtering": null, "filtering_values": null, "type_value_threshold": null, "threshold_min": null, "threshold_max": null, "max_rate": 5, "last_unique_check": false, "max_size": 100}, "transformations": null, "processing_policy": {"policy_type": "LastValue", "n_records_count": null, "time_window_size": null, "aggregation_functions": null}}"#;

#[test]
fn default_is_upstreams_string() {
    let c = DataPipeConfig::default_last_value();
    assert_eq!(c.to_stored_json(), DEFAULT_STORED);
    assert_eq!(DataPipeConfig::from_stored_json(DEFAULT_STORED).unwrap(), c);
    assert_eq!(
        c.to_yaml(),
        "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Text\n  max_rate: 5\n  last_unique_check: false\n  max_size: 100\nprocessing_policy:\n  policy_type: LastValue\n"
    );
    assert_eq!(DataPipeConfig::parse_yaml(&c.to_yaml(), LIMIT).unwrap(), c);
}

const G0_SRC: &str = r##"active_period:
  type: DateRange
  start: 2024-01-01
  end: 2024-01-02 10:00:00.5
filters:
  type_input_value: Number
  type_value_filtering: WhiteList
  filtering_values: [1, 2.5, -0.0, 0.00001, 1.0e+16, 100.0, 0.1, 123456789.125, true]
  type_value_threshold: Range
  threshold_min: -5
  threshold_max: 10
  max_rate: 0
  last_unique_check: yes
  max_size: 262144
transformations:
  multiplication_ratio: 2
  round_decimal_point: 3
  slice_start: -5
  slice_end: 10
processing_policy:
  policy_type: Aggregation
  time_window_size: 3600
  aggregation_functions: Avg
"##;
const G0_JSON: &str = r##"{"active_period": {"type": "DateRange", "start": "2024-01-01T00:00:00", "end": "2024-01-02T10:00:00.500000"}, "filters": {"type_input_value": "Number", "type_value_filtering": "WhiteList", "filtering_values": [1, 2.5, -0.0, 1e-05, 1e+16, 100.0, 0.1, 123456789.125, 1], "type_value_threshold": "Range", "threshold_min": -5, "threshold_max": 10, "max_rate": 0, "last_unique_check": true, "max_size": 262144}, "transformations": {"multiplication_ratio": 2.0, "round_decimal_point": 3, "slice_start": -5, "slice_end": 10}, "processing_policy": {"policy_type": "Aggregation", "n_records_count": null, "time_window_size": 3600, "aggregation_functions": "Avg"}}"##;
const G0_YAML: &str = r##"active_period:
  type: DateRange
  start: '2024-01-01T00:00:00'
  end: '2024-01-02T10:00:00.500000'
filters:
  type_input_value: Number
  type_value_filtering: WhiteList
  filtering_values:
  - 1
  - 2.5
  - -0.0
  - 1.0e-05
  - 1.0e+16
  - 100.0
  - 0.1
  - 123456789.125
  - 1
  type_value_threshold: Range
  threshold_min: -5
  threshold_max: 10
  max_rate: 0
  last_unique_check: true
  max_size: 262144
transformations:
  multiplication_ratio: 2.0
  round_decimal_point: 3
  slice_start: -5
  slice_end: 10
processing_policy:
  policy_type: Aggregation
  time_window_size: 3600
  aggregation_functions: Avg
"##;
const G1_SRC: &str = r##"active_period:
  type: ToDate
  end: "2030-12-31T23:59:59"
filters:
  type_input_value: Text
  type_value_filtering: BlackList
  filtering_values: ["a b", "yes", "", "1", "x: y", "it's", "null", "~", "-", "é", " lead", "trail ", "#c", "2024-01-01", "1e5", "0x10", "1:30", "'q'", "\"dq\"", "a#b", "a #b", "a:b", "-a", "- a", "?", "Yes", "y", ".5", "1.", ".inf", "017", "09", "x\\y", "a,b", "---", "Ünïcödé ✓", "tab\there", "\u0001", "\ufeff", "😀", "{x", "[x]", "!x", "&x", "*x", "|", ">", "%x", "@x", "`x", "a  b", "TRUE", "Null", "NULL", "1_000", "+1", "-1", "1.5e+3", "12:30:00", "0b11", "=", "<<"]
  max_rate: 86400
  max_size: 0
transformations: {}
processing_policy:
  policy_type: NRecords
  n_records_count: 1024
"##;
const G1_JSON: &str = r##"{"active_period": {"type": "ToDate", "start": null, "end": "2030-12-31T23:59:59"}, "filters": {"type_input_value": "Text", "type_value_filtering": "BlackList", "filtering_values": ["a b", "yes", "", "1", "x: y", "it's", "null", "~", "-", "\u00e9", " lead", "trail ", "#c", "2024-01-01", "1e5", "0x10", "1:30", "'q'", "\"dq\"", "a#b", "a #b", "a:b", "-a", "- a", "?", "Yes", "y", ".5", "1.", ".inf", "017", "09", "x\\y", "a,b", "---", "\u00dcn\u00efc\u00f6d\u00e9 \u2713", "tab\there", "\u0001", "\ufeff", "\ud83d\ude00", "{x", "[x]", "!x", "&x", "*x", "|", ">", "%x", "@x", "`x", "a  b", "TRUE", "Null", "NULL", "1_000", "+1", "-1", "1.5e+3", "12:30:00", "0b11", "=", "<<"], "type_value_threshold": null, "threshold_min": null, "threshold_max": null, "max_rate": 86400, "last_unique_check": false, "max_size": 0}, "transformations": {"multiplication_ratio": null, "round_decimal_point": null, "slice_start": null, "slice_end": null}, "processing_policy": {"policy_type": "NRecords", "n_records_count": 1024, "time_window_size": null, "aggregation_functions": null}}"##;
const G1_YAML: &str = r##"active_period:
  type: ToDate
  end: '2030-12-31T23:59:59'
filters:
  type_input_value: Text
  type_value_filtering: BlackList
  filtering_values:
  - a b
  - 'yes'
  - ''
  - '1'
  - 'x: y'
  - it's
  - 'null'
  - '~'
  - '-'
  - é
  - ' lead'
  - 'trail '
  - '#c'
  - '2024-01-01'
  - 1e5
  - '0x10'
  - '1:30'
  - '''q'''
  - '"dq"'
  - a#b
  - 'a #b'
  - a:b
  - -a
  - '- a'
  - '?'
  - 'Yes'
  - y
  - '.5'
  - '1.'
  - '.inf'
  - '017'
  - 09
  - x\y
  - a,b
  - '---'
  - Ünïcödé ✓
  - "tab\there"
  - "\x01"
  - "\uFEFF"
  - 😀
  - '{x'
  - '[x]'
  - '!x'
  - '&x'
  - '*x'
  - '|'
  - '>'
  - '%x'
  - '@x'
  - '`x'
  - a  b
  - 'TRUE'
  - 'Null'
  - 'NULL'
  - '1_000'
  - '+1'
  - '-1'
  - '1.5e+3'
  - '12:30:00'
  - '0b11'
  - '='
  - '<<'
  max_rate: 86400
  last_unique_check: false
  max_size: 0
transformations: {}
processing_policy:
  policy_type: NRecords
  n_records_count: 1024
"##;
const G2_SRC: &str = r##"active_period:
  type: FromDate
  start: 2024-06-30 23:59:59.123456
filters:
  type_input_value: Text
  type_value_filtering: WhiteList
  filtering_values: []
  type_value_threshold: Min
  max_rate: 1
  max_size: 1
transformations:
  multiplication_ratio: -1234567890123456.0
processing_policy:
  policy_type: TimeWindow
  time_window_size: 86400
"##;
const G2_JSON: &str = r##"{"active_period": {"type": "FromDate", "start": "2024-06-30T23:59:59.123456", "end": null}, "filters": {"type_input_value": "Text", "type_value_filtering": "WhiteList", "filtering_values": [], "type_value_threshold": "Min", "threshold_min": null, "threshold_max": null, "max_rate": 1, "last_unique_check": false, "max_size": 1}, "transformations": {"multiplication_ratio": -1234567890123456.0, "round_decimal_point": null, "slice_start": null, "slice_end": null}, "processing_policy": {"policy_type": "TimeWindow", "n_records_count": null, "time_window_size": 86400, "aggregation_functions": null}}"##;
const G2_YAML: &str = r##"active_period:
  type: FromDate
  start: '2024-06-30T23:59:59.123456'
filters:
  type_input_value: Text
  type_value_filtering: WhiteList
  filtering_values: []
  type_value_threshold: Min
  max_rate: 1
  last_unique_check: false
  max_size: 1
transformations:
  multiplication_ratio: -1234567890123456.0
processing_policy:
  policy_type: TimeWindow
  time_window_size: 86400
"##;

/// Stored JSON and YAML out byte for byte as upstream writes them.
#[test]
fn golden_stored_json_and_yaml() {
    for (src, json, yaml) in [
        (G0_SRC, G0_JSON, G0_YAML),
        (G1_SRC, G1_JSON, G1_YAML),
        (G2_SRC, G2_JSON, G2_YAML),
    ] {
        let c = DataPipeConfig::parse_yaml(src, LIMIT).unwrap();
        assert_eq!(c.to_stored_json(), json);
        assert_eq!(c.to_yaml(), yaml);
        assert_eq!(DataPipeConfig::from_stored_json(json).unwrap(), c);
        assert_eq!(DataPipeConfig::parse_yaml(yaml, LIMIT).unwrap(), c);
    }
    let g0 = DataPipeConfig::parse_yaml(G0_SRC, LIMIT).unwrap();
    assert_eq!(
        g0.filters.filtering_values.as_deref().unwrap()[..3],
        [
            FilterValue::Integer(1),
            FilterValue::Number(2.5),
            FilterValue::Number(-0.0)
        ]
    );
    assert_eq!(g0.active_period.end, Some(dt("2024-01-02 10:00:00.5")));
    assert!(g0.filters.last_unique_check);
}

/// Strings upstream stored (offsets kept, from newer versions with extra keys) read back.
#[test]
fn upstream_stored_strings() {
    let with = |start: &str, extra: &str| {
        format!(
            r#"{{"active_period": {{"type": "FromDate", "start": {start}, "end": null}}, "filters": {{"type_input_value": "Number", "type_value_filtering": null, "filtering_values": null, "type_value_threshold": null, "threshold_min": null, "threshold_max": null, "max_rate": 5, "last_unique_check": false, "max_size": 100{extra}}}, "transformations": {{"multiplication_ratio": 1e-05, "round_decimal_point": null, "slice_start": null, "slice_end": null}}, "processing_policy": {{"policy_type": "LastValue", "n_records_count": null, "time_window_size": null, "aggregation_functions": null}}}}"#
        )
    };
    for (start, want) in [
        ("\"2023-11-14T22:13:20+00:00\"", "2023-11-14 22:13:20"),
        (
            "\"2024-01-02T10:00:00.500000+03:00\"",
            "2024-01-02 07:00:00.5",
        ),
        ("\"2024-01-01T00:30:00-01:30\"", "2024-01-01 02:00:00"),
        ("\"2024-01-01T10:00:00\"", "2024-01-01 10:00:00"),
        (
            "\"2023-11-14T22:13:20.123000+00:00\"",
            "2023-11-14 22:13:20.123",
        ),
    ] {
        let c = DataPipeConfig::from_stored_json(&with(start, "")).unwrap();
        assert_eq!(c.active_period.start, Some(dt(want)), "{start}");
        assert_eq!(c.transformations.unwrap().multiplication_ratio, Some(1e-5));
    }
    // a newer upstream's field is ignored in stored configs, refused in uploads
    let newer = with("\"2024-01-01T10:00:00\"", ", \"max_queue\": 7");
    assert!(DataPipeConfig::from_stored_json(&newer).is_ok());
    let e = DataPipeConfig::from_stored_json("{\"active_period\": ").unwrap_err();
    assert_eq!(e[0].stage, S::ActivePeriod);
    assert!(
        e[0].message.starts_with("The stored config is not JSON"),
        "{e:?}"
    );
    // the broker's limit is not applied again to a stored config
    let big = DEFAULT_STORED.replace("\"max_size\": 100", "\"max_size\": 999999");
    assert_eq!(
        DataPipeConfig::from_stored_json(&big)
            .unwrap()
            .filters
            .max_size,
        999_999
    );
    // our own output of an offset datetime: naive UTC
    let c = DataPipeConfig::parse_yaml(
        &doc(
            "  type: FromDate\n  start: 2024-01-02T10:00:00+03:00\n",
            F,
            None,
            PP,
        ),
        LIMIT,
    )
    .unwrap();
    assert!(c
        .to_stored_json()
        .contains("\"start\": \"2024-01-02T07:00:00\""));
}

/// Datetimes people write, as pydantic reads them, stored as naive UTC.
#[test]
fn datetime_forms() {
    let cases = [
        ("2024-01-01", "2024-01-01 00:00:00"),
        ("'2024-01-01'", "2024-01-01 00:00:00"),
        ("2024-01-01 10:00:00", "2024-01-01 10:00:00"),
        ("2024-01-01T10:00:00", "2024-01-01 10:00:00"),
        ("2024-01-01t10:00:00z", "2024-01-01 10:00:00"),
        ("'2024-01-01 10:00'", "2024-01-01 10:00:00"),
        ("'2024-01-01_10:00'", "2024-01-01 10:00:00"),
        ("'2024-01-01T10:00Z'", "2024-01-01 10:00:00"),
        ("2024-01-01T10:00:00Z", "2024-01-01 10:00:00"),
        ("2024-01-01T10:00:00+03:00", "2024-01-01 07:00:00"),
        ("'2024-01-01T10:00:00+0330'", "2024-01-01 06:30:00"),
        ("'2024-01-01T10:00:00-00:00'", "2024-01-01 10:00:00"),
        ("2024-01-01 10:00:00 -2", "2024-01-01 12:00:00"),
        ("2024-1-2 3:04:05", "2024-01-02 03:04:05"),
        ("2024-01-01T23:30:00-01:00", "2024-01-02 00:30:00"),
        (
            "2024-01-01 10:00:00.123456789",
            "2024-01-01 10:00:00.123456",
        ),
        ("'2024-01-01T10:00:00,5'", "2024-01-01 10:00:00.5"),
        (
            "'2024-01-01T10:00:00.1234567'",
            "2024-01-01 10:00:00.123456",
        ),
        ("1700000000", "2023-11-14 22:13:20"),
        ("'1700000000'", "2023-11-14 22:13:20"),
        ("1700000000.5", "2023-11-14 22:13:20.5"),
        ("1700000000123", "2023-11-14 22:13:20.123"),
        ("'20240101'", "1970-08-23 06:15:01"),
        ("1599-12-31", "1599-12-31 00:00:00"),
        ("-20000000000", "1336-03-23 12:26:40"),
    ];
    for (text, want) in cases {
        let c = DataPipeConfig::parse_yaml(
            &doc(&format!("  type: FromDate\n  start: {text}\n"), F, None, PP),
            LIMIT,
        )
        .unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(c.active_period.start, Some(dt(want)), "{text}");
    }
}

/// PyYAML's YAML 1.1 typing, which pydantic then converts.
#[test]
fn yaml_one_one_scalars() {
    let filters = |rate: &str, unique: &str| {
        format!("  type_input_value: Text\n  max_rate: {rate}\n  max_size: 100\n  last_unique_check: {unique}\n")
    };
    for (rate, want) in [
        ("0x1F", 31),
        ("017", 15),
        ("1:30", 90),
        ("1_000", 1000),
        ("0b101", 5),
        ("+7", 7),
        ("'7'", 7),
        ("7.0", 7),
        ("true", 1),
    ] {
        let c = DataPipeConfig::parse_yaml(&doc(AP, &filters(rate, "false"), None, PP), LIMIT)
            .unwrap_or_else(|e| panic!("{rate}: {e:?}"));
        assert_eq!(c.filters.max_rate, want, "{rate}");
    }
    for (unique, want) in [
        ("yes", true),
        ("On", true),
        ("NO", false),
        ("off", false),
        ("'y'", true),
        ("'f'", false),
        ("1", true),
        ("0.0", false),
        ("!!bool 'true'", true),
    ] {
        let c = DataPipeConfig::parse_yaml(&doc(AP, &filters("5", unique), None, PP), LIMIT)
            .unwrap_or_else(|e| panic!("{unique}: {e:?}"));
        assert_eq!(c.filters.last_unique_check, want, "{unique}");
    }
    // `1e5` is a string for PyYAML (no dot), `1.0e+5` a float, `09` a string
    let values = "  filtering_values: [1e5, 1.0e+5, 09, 1.5, '2', !!str 3, !!float 4, .5, 1.]\n";
    let c = DataPipeConfig::parse_yaml(&doc(AP, &format!("{F}{values}"), None, PP), LIMIT).unwrap();
    assert_eq!(
        c.filters.filtering_values.unwrap(),
        vec![
            FilterValue::Text("1e5".into()),
            FilterValue::Number(100000.0),
            FilterValue::Text("09".into()),
            FilterValue::Number(1.5),
            FilterValue::Text("2".into()),
            FilterValue::Text("3".into()),
            FilterValue::Number(4.0),
            FilterValue::Number(0.5),
            FilterValue::Number(1.0),
        ]
    );
    // block scalars and quoted scalars are strings
    let c = DataPipeConfig::parse_yaml(
        &doc(
            AP,
            &format!("{F}  filtering_values:\n  - |\n    a\n    b\n  - \"5\"\n"),
            None,
            PP,
        ),
        LIMIT,
    )
    .unwrap();
    assert_eq!(
        c.filters.filtering_values.unwrap(),
        vec![
            FilterValue::Text("a\nb\n".into()),
            FilterValue::Text("5".into())
        ]
    );
}

#[test]
fn python_float_reprs() {
    for (f, want) in [
        (5.0, "5.0"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (1e16, "1e+16"),
        (1234567890123456.0, "1234567890123456.0"),
        (1.2345678901234568e17, "1.2345678901234568e+17"),
        (0.1, "0.1"),
        (2.5e-300, "2.5e-300"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (123456789.125, "123456789.125"),
        (-1.5, "-1.5"),
        (100.0, "100.0"),
        // a tie between two shortest strings: Python takes the even digit
        (-1363803842504314.2, "-1363803842504314.2"),
        (1363803842504314.3, "1363803842504314.2"),
        (1e23, "1e+23"),
        (9007199254740993.0, "9007199254740992.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1.0 / 3.0, "0.3333333333333333"),
        (1.5e-323, "1.5e-323"),
    ] {
        assert_eq!(py_float_repr(f), want);
    }
}

#[test]
fn filter_values_compare_like_upstream() {
    assert_eq!(FilterValue::Integer(5).as_text(), "5");
    assert_eq!(FilterValue::Number(5.0).as_text(), "5.0");
    assert_eq!(FilterValue::Number(5.0).as_f64(), Some(5.0));
    assert_eq!(FilterValue::Integer(5).as_f64(), Some(5.0));
    assert_eq!(FilterValue::Text("5".into()).as_f64(), None);
}

/// Hostile texts end quickly with a refusal.
#[test]
fn hostile_texts_are_refused() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
    let e = DataPipeConfig::parse_yaml(laughs, LIMIT).unwrap_err();
    assert!(e[0].message.starts_with("YAML aliases"), "{e:?}");
    for text in [
        "[".repeat(200_000),
        "{a: ".repeat(100_000),
        "- ".repeat(100_000),
        format!("a: [{}]", "1,".repeat(200_000)),
        "a:\n".to_string() + &"  b:\n".repeat(1000),
    ] {
        let e = DataPipeConfig::parse_yaml(&text, LIMIT).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
    }
}

prop_compose! {
    fn datetime()(secs in 0i64..4_102_444_800, micro in prop_oneof![Just(0u32), 0u32..1_000_000]) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(secs, micro * 1000).unwrap().naive_utc()
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ]{0,12}",
        any::<String>(),
        prop::sample::select(vec![
            "yes",
            "null",
            "~",
            "",
            " a",
            "a ",
            "1",
            "0x1F",
            "1:30",
            "1.",
            ".5",
            "=",
            "<<",
            "2024-01-01",
            "a: b",
            "a #b",
            "- a",
            "#",
            "'",
            "\"",
            "\t",
            "\r\n",
            "\u{85}",
            "\u{2028}",
            "\u{feff}",
            "\u{a0}",
            "é😀",
            "---",
            "...",
            "?",
            "a\\b",
            "@",
            "%",
        ])
        .prop_map(String::from),
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![0.0, -0.0, 5.0, 0.1, 1e16, 1e-5, 1e300, 5e-324]),
    ]
}

fn filter_value(number: bool) -> impl Strategy<Value = FilterValue> {
    if number {
        prop_oneof![
            finite().prop_map(FilterValue::Number),
            any::<i64>().prop_map(FilterValue::Integer)
        ]
        .boxed()
    } else {
        text().prop_map(FilterValue::Text).boxed()
    }
}

fn config() -> impl Strategy<Value = DataPipeConfig> {
    let period = (0usize..4, datetime(), 1i64..100_000_000).prop_map(|(k, start, len)| {
        let kind = ActivePeriodType::ALL[k];
        let end = start + chrono::Duration::seconds(len);
        ActivePeriod {
            kind,
            start: matches!(
                kind,
                ActivePeriodType::FromDate | ActivePeriodType::DateRange
            )
            .then_some(start),
            end: matches!(kind, ActivePeriodType::ToDate | ActivePeriodType::DateRange)
                .then_some(end),
        }
    });
    let filters = any::<bool>().prop_flat_map(|number| {
        (
            prop::option::of(prop::sample::select(FilterTypeValueFiltering::ALL)),
            prop::option::of(prop::collection::vec(filter_value(number), 0..6)),
            prop::option::of(prop::sample::select(FilterTypeValueThreshold::ALL)),
            (-1000i64..1000, 1i64..1000),
            0u32..=86_400,
            any::<bool>(),
            0u32..=LIMIT,
        )
            .prop_map(
                move |(filtering, values, threshold, (lo, gap), max_rate, unique, max_size)| {
                    Filters {
                        type_input_value: if number {
                            TypeInputValue::Number
                        } else {
                            TypeInputValue::Text
                        },
                        type_value_filtering: filtering,
                        filtering_values: values,
                        type_value_threshold: threshold,
                        threshold_min: Some(lo),
                        threshold_max: Some(lo + gap),
                        max_rate,
                        last_unique_check: unique,
                        max_size,
                    }
                },
            )
    });
    let transformations = prop::option::of((
        prop::option::of(finite()),
        prop::option::of(0u8..=7),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
    ))
    .prop_map(|t| {
        t.map(
            |(multiplication_ratio, round_decimal_point, slice_start, slice_end)| Transformations {
                multiplication_ratio,
                round_decimal_point,
                slice_start,
                slice_end,
            },
        )
    });
    let policy = (
        0usize..4,
        1u32..=1024,
        prop::sample::select(WINDOW_SIZES),
        0usize..4,
        prop::option::of(0usize..8),
    )
        .prop_map(|(p, n, size, function, step)| {
            let policy_type = ProcessingPolicyType::ALL[p];
            let steps: Vec<u32> = (1..=size)
                .filter(|s| size % s == 0 && size / s <= MAX_STEPS_PER_WINDOW)
                .collect();
            ProcessingPolicy {
                policy_type,
                n_records_count: (policy_type == ProcessingPolicyType::NRecords).then_some(n),
                time_window_size: matches!(
                    policy_type,
                    ProcessingPolicyType::TimeWindow | ProcessingPolicyType::Aggregation
                )
                .then_some(size),
                aggregation_functions: (policy_type == ProcessingPolicyType::Aggregation)
                    .then_some(AggregationFunction::ALL[function]),
                time_window_step: step
                    .filter(|_| policy_type == ProcessingPolicyType::Aggregation)
                    .map(|i| steps[i % steps.len()]),
            }
        });
    (period, filters, transformations, policy).prop_map(
        |(active_period, filters, transformations, processing_policy)| DataPipeConfig {
            active_period,
            filters,
            transformations,
            processing_policy,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every valid config survives YAML out and in, and the stored form.
    #[test]
    fn forms_round_trip(c in config()) {
        let yaml = c.to_yaml();
        prop_assert_eq!(DataPipeConfig::parse_yaml(&yaml, LIMIT), Ok(c.clone()), "{}", yaml);
        let stored = c.to_stored_json();
        prop_assert_eq!(DataPipeConfig::from_stored_json(&stored), Ok(c.clone()), "{}", stored);
    }

    /// Arbitrary text never panics and answers at least one message when refused.
    #[test]
    fn any_text(text in any::<String>()) {
        if let Err(e) = DataPipeConfig::parse_yaml(&text, LIMIT) {
            prop_assert!(!e.is_empty());
        }
    }

    /// YAML-ish mappings: known and unknown keys, odd scalars, nesting.
    #[test]
    fn yamlish_mappings(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["active_period", "filters", "transformations", "processing_policy", "type", "max_rate", "x"]),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["type", "start", "end", "type_input_value", "max_rate", "max_size", "policy_type", "filtering_values", "time_window_size", "multiplication_ratio", "zz"]),
                        prop_oneof![
                            text().prop_map(|s| format!("{s:?}")),
                            "[-+.0-9a-zA-Z:_ ]{0,10}",
                            Just("[1, a, .inf, ~]".to_string()),
                            Just("{a: [b, {c: d}]}".to_string()),
                            Just("&x 1".to_string()),
                            Just("*x".to_string()),
                        ],
                    ),
                    0..6,
                ),
            ),
            0..6,
        )
    ) {
        let mut text = String::new();
        for (section, fields) in &entries {
            text.push_str(section);
            text.push_str(":\n");
            for (k, v) in fields {
                text.push_str(&format!("  {k}: {v}\n"));
            }
        }
        if let Err(e) = DataPipeConfig::parse_yaml(&text, LIMIT) {
            prop_assert!(!e.is_empty());
        }
    }
}

#[test]
fn dates_in_the_table_are_real() {
    // the helpers above must agree with chrono
    assert_eq!(
        dt("2024-01-02 10:00:00.5"),
        NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_milli_opt(10, 0, 0, 500)
            .unwrap()
    );
}

/// PyYAML's choice of style for characters outside ASCII (golden from PyYAML 6.0).
#[test]
fn yaml_styles_beyond_ascii() {
    let values = [
        "a\u{a0}b",
        "\u{a0}",
        "\t\u{a0}",
        "\u{1F600}\t",
        "\u{fffe}",
        "\u{10fffd}\t",
        "a\u{2029}b\t",
    ];
    let mut c = DataPipeConfig::default_last_value();
    c.filters.filtering_values = Some(
        values
            .iter()
            .map(|v| FilterValue::Text(v.to_string()))
            .collect(),
    );
    let yaml = c.to_yaml();
    let want = "  filtering_values:\n  - a\u{a0}b\n  - \u{a0}\n  - \"\\t\u{a0}\"\n  - \"\\U0001F600\\t\"\n  - \"\\uFFFE\"\n  - \"\\U0010FFFD\\t\"\n  - \"a\\Pb\\t\"\n";
    assert!(yaml.contains(want), "{yaml}");
    assert_eq!(DataPipeConfig::parse_yaml(&yaml, LIMIT).unwrap(), c);
    // a line break: double-quoted here (PyYAML folds a single-quoted block); reads back the same
    c.filters.filtering_values = Some(vec![FilterValue::Text("a\nb \r\u{85}\u{2028}".into())]);
    let yaml = c.to_yaml();
    assert!(yaml.contains("  - \"a\\nb \\r\\N\\L\"\n"), "{yaml}");
    assert_eq!(DataPipeConfig::parse_yaml(&yaml, LIMIT).unwrap(), c);
}

/// Files from Windows editors: a BOM and CRLF line ends.
#[test]
fn bom_and_crlf() {
    let text = format!("\u{feff}{}", with_policy(PP).replace('\n', "\r\n"));
    assert_eq!(
        DataPipeConfig::parse_yaml(&text, LIMIT).unwrap(),
        DataPipeConfig::default_last_value()
    );
}
