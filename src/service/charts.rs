//! Charts of a node's pipeline data (SPEC §9, issue 19: the bot's `/chart`). The rows are read
//! through [`Instance::get_data_pipe_data`], the same function and access rules as
//! `GET /unit_nodes/get_data_pipe_data/`; the picture is drawn by [`crate::domain::chart`].
//!
//! What is drawn, by the node's processing policy: NRecords and TimeWindow values that read as
//! numbers (text values are left out), Aggregation results one line per function at the end of
//! their window. A LastValue pipeline keeps one value, answered as such; a node without an
//! active pipeline has nothing to draw.

use chrono::Duration;
use uuid::Uuid;

use super::data_pipes::{parse_relative_time, PipeData, PipeDataRequest};
use super::unit_nodes::{UnitNode, UnitNodeFilter};
use super::{Agent, Instance};
use crate::domain::chart::{self, ChartSpec, Line};
use crate::domain::datapipe::{PipeRow, ProcessingPolicyType};
use crate::domain::{Order, VisibilityLevel};
use crate::error::{AppError, AppResult};

/// Most rows one chart reads (the newest of the period).
pub const MAX_CHART_ROWS: i64 = 100_000;
/// Shortest and longest period a chart covers.
pub const MIN_CHART_PERIOD: Duration = Duration::minutes(1);
pub const MAX_CHART_PERIOD: Duration = Duration::days(366);

/// The axis texts, in the reader's language.
pub struct ChartLabels<'a> {
    pub time: &'a str,
    pub value: &'a str,
}

/// A node's chart, or why there is none.
pub enum NodeChart {
    Png {
        png: Vec<u8>,
        unit: String,
        topic: String,
        /// Values drawn (before downsampling).
        points: usize,
    },
    /// A LastValue pipeline keeps the node's latest value only.
    LastValue {
        unit: String,
        topic: String,
        state: Option<String>,
        at: String,
    },
    /// No active pipeline with a config: no data is kept.
    NoPipe { unit: String, topic: String },
    /// No numeric value in the period.
    Empty { unit: String, topic: String },
}

/// A chart period: `relative_time`'s syntax (`30m`, `24h`, `7d`), from a minute to a year.
pub fn parse_chart_period(s: &str) -> AppResult<Duration> {
    let period = parse_relative_time(s)?;
    if (MIN_CHART_PERIOD..=MAX_CHART_PERIOD).contains(&period) {
        Ok(period)
    } else {
        Err(AppError::data_pipe(format!(
            "a chart covers 1m to 366d, not {s}"
        )))
    }
}

/// The lines of a node's rows: numeric values, or one line per aggregation function.
fn lines(topic: &str, rows: &[PipeRow]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let mut line = |name: &str| -> usize {
        match lines.iter().position(|l| l.name == name) {
            Some(i) => i,
            None => {
                lines.push(Line {
                    name: name.to_string(),
                    points: Vec::new(),
                });
                lines.len() - 1
            }
        }
    };
    let mut points = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, at, value) = match row {
            PipeRow::NRecords(r) => (topic, r.create_datetime, r.state.trim().parse().ok()),
            PipeRow::Window(r) => (topic, r.create_datetime, r.state.trim().parse().ok()),
            PipeRow::Aggregation(r) => (
                r.aggregation_type.as_str(),
                r.end_window_datetime,
                Some(r.state),
            ),
        };
        if let Some(v) = value.filter(|v: &f64| v.is_finite()) {
            points.push((line(name), at, v));
        }
    }
    for (i, at, v) in points {
        lines[i].points.push((at, v));
    }
    lines
}

impl Instance {
    /// A node as the bot's user names it: its uuid, or `unit_name/topic_name` of one of their
    /// own units. `None` when there is no such node.
    async fn named_node(&self, agent: &Agent, name: &str) -> AppResult<Option<UnitNode>> {
        if let Ok(uuid) = name.parse::<Uuid>() {
            return match self.unit_node(uuid).await {
                Ok(node) => Ok(Some(node)),
                Err(AppError::NotFound) => Ok(None),
                Err(e) => Err(e),
            };
        }
        // unit names hold no `/`: the first one ends the unit's name
        let Some((unit, topic)) = name.split_once('/') else {
            return Ok(None);
        };
        let Some(unit) = self.own_unit_by_name(agent, unit).await? else {
            return Ok(None);
        };
        let filter = UnitNodeFilter {
            unit_uuid: Some(unit.uuid),
            ..UnitNodeFilter::default()
        };
        let (_, nodes) = self
            .list_unit_nodes(agent, filter, VisibilityLevel::ALL)
            .await?;
        Ok(nodes.into_iter().find(|n| n.topic_name == topic))
    }

    /// The chart of node `name` (see [`Instance::named_node`]) over the last `period`.
    /// A node the agent may not read is `NotFound`, as one that does not exist.
    pub async fn node_chart(
        &self,
        agent: &Agent,
        name: &str,
        period: Duration,
        labels: ChartLabels<'_>,
    ) -> AppResult<NodeChart> {
        let node = self
            .named_node(agent, name)
            .await?
            .ok_or_else(AppError::not_found)?;
        // the REST rule for reading a node's pipeline data, before anything about it is said
        let node = match self.readable_pipe_node(agent, node.uuid).await {
            Err(AppError::NoAccess { .. }) => return Err(AppError::not_found()),
            other => other?,
        };
        let unit = self.unit(node.unit_uuid).await?.name;
        let topic = node.topic_name.clone();
        let config = node
            .is_data_pipe_active
            .then(|| Self::node_pipe_config(&node).ok())
            .flatten();
        let Some(config) = config else {
            return Ok(NodeChart::NoPipe { unit, topic });
        };
        let policy = config.processing_policy.policy_type;
        let request = PipeDataRequest {
            relative: Some(period),
            order: Some(Order::Desc),
            limit: MAX_CHART_ROWS,
            ..PipeDataRequest::all(node.uuid, policy)
        };
        let rows = match self.get_data_pipe_data(agent, request).await?.1 {
            PipeData::LastValue {
                state,
                last_update_datetime,
                ..
            } => {
                return Ok(NodeChart::LastValue {
                    unit,
                    topic,
                    state,
                    at: last_update_datetime,
                })
            }
            PipeData::Rows(rows) => rows,
        };
        debug_assert_ne!(policy, ProcessingPolicyType::LastValue);
        let lines = lines(&topic, &rows);
        let points: usize = lines.iter().map(|l| l.points.len()).sum();
        if points == 0 {
            return Ok(NodeChart::Empty { unit, topic });
        }
        let to = chrono::Utc::now().naive_utc();
        let title = format!("{unit} / {topic}");
        let (time, value) = (labels.time.to_string(), labels.value.to_string());
        // drawing is CPU work (tens of milliseconds for 100k points): off the async threads
        let png = tokio::task::spawn_blocking(move || {
            chart::render_png(&ChartSpec {
                title: &title,
                x_label: &time,
                y_label: &value,
                from: to - period,
                to,
                lines: &lines,
                width: chart::WIDTH,
                height: chart::HEIGHT,
            })
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
        Ok(NodeChart::Png {
            png,
            unit,
            topic,
            points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::datapipe::TypeInputValue;
    use crate::domain::datapipe::{AggregationEntry, AggregationFunction, NRecordsEntry};

    #[test]
    fn periods_are_relative_times_within_bounds() {
        assert_eq!(parse_chart_period("24h").unwrap(), Duration::hours(24));
        assert_eq!(parse_chart_period("7d").unwrap(), Duration::days(7));
        assert_eq!(parse_chart_period("1m").unwrap(), Duration::minutes(1));
        for bad in ["", "h", "0h", "30s", "400d", "2y", "5x", "-1h", "1.5h"] {
            assert!(parse_chart_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numeric_values_and_one_line_per_function() {
        let at = chrono::DateTime::from_timestamp(1_750_000_000, 0)
            .unwrap()
            .naive_utc();
        let node = Uuid::new_v4();
        let value = |state: &str| {
            PipeRow::NRecords(NRecordsEntry {
                unit_node_uuid: node,
                state: state.into(),
                state_type: TypeInputValue::Text,
                create_datetime: at,
                max_count: 10,
                size: 1,
            })
        };
        let got = lines("t/pepeunit", &[value("1.5"), value("on"), value(" 2 ")]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "t/pepeunit");
        assert_eq!(got[0].points, [(at, 1.5), (at, 2.0)]);
        let agg = |f, state| {
            PipeRow::Aggregation(AggregationEntry {
                unit_node_uuid: node,
                state,
                aggregation_type: f,
                time_window_size: 60,
                create_datetime: at,
                start_window_datetime: at,
                end_window_datetime: at,
            })
        };
        let got = lines(
            "t",
            &[
                agg(AggregationFunction::Avg, 1.0),
                agg(AggregationFunction::Max, 3.0),
                agg(AggregationFunction::Avg, 2.0),
            ],
        );
        let names: Vec<&str> = got.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Avg", "Max"]);
        assert_eq!(got[0].points.len(), 2);
    }
}
