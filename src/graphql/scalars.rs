//! The contract's own scalar: `DateTime` ("Date with time (isoformat)"). `UUID` is
//! async-graphql's (the `uuid` feature), `Upload` async-graphql's multipart upload.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A naive UTC instant as the REST API writes it (`2026-11-28T12:00:00.000000`); input also
/// takes RFC 3339 with an offset, as the REST filters do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateTime(pub String);

/// Date with time (isoformat)
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(s) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        let naive = crate::domain::parse_time(s)
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.naive_utc())
            })
            .ok_or_else(|| {
                InputValueError::custom(format!(
                    "{s:?} is not a date with time (2026-11-28T12:00:00[.ffffff], or RFC 3339)"
                ))
            })?;
        Ok(DateTime(crate::domain::format_time(naive)))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}
