//! Grafana dashboards' vocabulary (issue 19, SPEC §9): panel types with upstream's values (the
//! Grafana panel plugin ids), and the dashboard JSON a sync pushes to Grafana's
//! `POST /api/dashboards/db`, built the way upstream's `grafana_repository.py` builds it
//! (docs/research/GRAFANA-UPSTREAM.md §2C): one panel per dashboard panel, one Infinity target
//! per linked node, each reading our `grafana/datasource/` with that link's token. Pure: the
//! caller gives the tokens and a sample of each node's data.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::datapipe::ProcessingPolicyType;

/// The name of the Infinity datasource a sync provisions in the user's Grafana organisation;
/// targets refer to it by name, as upstream's do.
pub const DATASOURCE_NAME: &str = "InfinityAPI";

/// A user's Grafana login and email: the account's uuid, which never changes and is never
/// given to anyone else. Upstream uses the Pepeunit login, which can be renamed and then
/// registered by someone else, who would inherit the old Grafana user, its organisation
/// memberships and the dashboards' datasource tokens in them.
pub fn grafana_login(user: Uuid) -> String {
    user.to_string()
}
/// The Infinity plugin's id (Grafana's datasource `type`).
pub const INFINITY_PLUGIN: &str = "yesoreyeram-infinity-datasource";

macro_rules! panel_types {
    ($($variant:ident = $value:literal),+ $(,)?) => {
        /// A panel's Grafana plugin id (upstream's `DashboardPanelTypeEnum`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum PanelType {
            $(#[serde(rename = $value)] $variant),+
        }

        impl PanelType {
            pub const ALL: &'static [PanelType] = &[$(PanelType::$variant),+];

            /// The plugin id, as stored and sent to Grafana.
            pub fn as_str(self) -> &'static str {
                match self { $(PanelType::$variant => $value),+ }
            }

            pub fn parse(s: &str) -> Option<PanelType> {
                match s { $($value => Some(PanelType::$variant),)+ _ => None }
            }
        }
    };
}

panel_types! {
    TimeSeries = "timeseries",
    BarChart = "barchart",
    Stat = "stat",
    Gauge = "gauge",
    BarGauge = "bargauge",
    Table = "table",
    PieChart = "piechart",
    StateTimeline = "state-timeline",
    Heatmap = "heatmap",
    StatusHistory = "status-history",
    Histogram = "histogram",
    Text = "text",
    AlertList = "alertlist",
    DashboardList = "dashlist",
    News = "news",
    AnnotationList = "annolist",
    Candlestick = "candlestick",
    Canvas = "canvas",
    FlameGraph = "flamegraph",
    Geomap = "geomap",
    Logs = "logs",
    HourlyHeatmap = "marcusolsson-hourly-heatmap-panel",
    NodeGraph = "nodeGraph",
    Traces = "traces",
    Trend = "trend",
    XyChart = "xychart",
}

/// Dashboard names and panel titles: 4 to 100 characters after trimming, no control
/// characters (upstream refuses one-letter names; its exact rule is not public).
pub fn is_valid_title(s: &str) -> bool {
    let t = s.trim();
    (4..=100).contains(&t.chars().count()) && !t.chars().any(char::is_control)
}

/// The type of one column of a node's data, as Infinity reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Number,
    Text,
}

impl ColumnKind {
    fn infinity(self) -> &'static str {
        match self {
            ColumnKind::Number => "number",
            ColumnKind::Text => "string",
        }
    }
}

/// What one sample value of a node looks like; it decides the target's columns.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// No data yet: the time column only.
    Empty,
    Scalar(ColumnKind),
    /// A value read as a JSON object (the link's `is_forced_to_json`): one column per key.
    Object(Vec<(String, ColumnKind)>),
}

impl Sample {
    /// Types a datasource value (`DatasourcePoint::value`): numbers, strings, objects whose
    /// number and string members become columns (other members are left out, as upstream).
    pub fn of(value: &Value) -> Sample {
        match value {
            Value::Number(_) => Sample::Scalar(ColumnKind::Number),
            Value::String(_) => Sample::Scalar(ColumnKind::Text),
            Value::Object(map) => Sample::Object(
                map.iter()
                    .filter_map(|(k, v)| match v {
                        Value::Number(_) => Some((k.clone(), ColumnKind::Number)),
                        Value::String(_) => Some((k.clone(), ColumnKind::Text)),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Sample::Empty,
        }
    }
}

/// One node of a panel, as the generator needs it.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    /// The link's `GrafanaUnitNode` token, sent by Infinity in `x-auth-token`.
    pub token: String,
    pub policy: ProcessingPolicyType,
    /// A TimeWindow pipeline's window, seconds.
    pub time_window_size: Option<u64>,
    pub sample: Sample,
}

#[derive(Clone, Debug)]
pub struct PanelSpec {
    pub panel_type: PanelType,
    pub title: String,
    pub targets: Vec<TargetSpec>,
}

/// Grafana's query ids: A .. Z, AA, AB, .. (bijective base 26).
pub fn ref_id(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

fn target(i: usize, t: &TargetSpec) -> Value {
    let mut params = vec![
        json!({"key": "format", "value": "timeseries"}),
        json!({"key": "order_by_create_date", "value": "asc"}),
    ];
    let relative = match t.policy {
        ProcessingPolicyType::TimeWindow => t.time_window_size.map(|s| format!("{s}s")),
        ProcessingPolicyType::Aggregation => Some("30d".to_string()),
        _ => None,
    };
    if let Some(r) = relative {
        params.push(json!({"key": "relative_time", "value": r}));
    }
    let mut columns = vec![json!({"selector": "time", "text": "", "type": "timestamp_epoch"})];
    let mut root_selector = "";
    match &t.sample {
        Sample::Empty => {}
        Sample::Scalar(kind) => {
            columns.push(json!({"selector": "value", "text": "", "type": kind.infinity()}))
        }
        Sample::Object(members) => {
            root_selector = "value";
            for (key, kind) in members {
                columns.push(json!({"selector": key, "text": "", "type": kind.infinity()}));
            }
        }
    }
    json!({
        "datasource": DATASOURCE_NAME,
        "refId": ref_id(i),
        "type": "json",
        "source": "url",
        "root_selector": root_selector,
        "format": "timeseries",
        "parser": "backend",
        "json": {"type": "json", "parser": "JSONata", "rootSelector": "$"},
        "url": "",
        "url_options": {
            "method": "GET",
            "data": "",
            "headers": [{"key": "x-auth-token", "value": t.token}],
            "params": params,
        },
        "columns": columns,
    })
}

/// The body of `POST /api/dashboards/db`: the dashboard with uid `uid`, replacing any earlier
/// version (`overwrite`). Panels are stacked full-width, 8 rows high, in the order given.
pub fn dashboard_json(uid: Uuid, title: &str, panels: &[PanelSpec]) -> Value {
    let panels: Vec<Value> = panels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "id": i + 1,
                "type": p.panel_type.as_str(),
                "title": p.title,
                "gridPos": {"x": 0, "y": i * 8, "w": 24, "h": 8},
                "options": {},
                "fieldConfig": {"defaults": {"custom": {"invertPalette": true}}, "overrides": []},
                "targets": p.targets.iter().enumerate().map(|(j, t)| target(j, t)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "dashboard": {
            "id": null,
            "uid": uid.to_string(),
            "title": title,
            "tags": [title],
            "timezone": "browser",
            "schemaVersion": 30,
            "refresh": "1m",
            "time": {"from": "now-30d", "to": "now"},
            "panels": panels,
        },
        "overwrite": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_ids_are_bijective_base_26() {
        assert_eq!(ref_id(0), "A");
        assert_eq!(ref_id(25), "Z");
        assert_eq!(ref_id(26), "AA");
        assert_eq!(ref_id(27), "AB");
        assert_eq!(ref_id(51), "AZ");
        assert_eq!(ref_id(52), "BA");
        assert_eq!(ref_id(701), "ZZ");
        assert_eq!(ref_id(702), "AAA");
    }

    #[test]
    fn panel_types_round_trip_with_upstream_values() {
        assert_eq!(PanelType::ALL.len(), 26);
        for t in PanelType::ALL {
            assert_eq!(PanelType::parse(t.as_str()), Some(*t));
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, Value::String(t.as_str().into()));
        }
        assert_eq!(
            PanelType::parse("marcusolsson-hourly-heatmap-panel"),
            Some(PanelType::HourlyHeatmap)
        );
        assert_eq!(PanelType::parse("TimeSeries"), None);
    }

    #[test]
    fn samples_type_columns() {
        assert_eq!(Sample::of(&json!(1.5)), Sample::Scalar(ColumnKind::Number));
        assert_eq!(Sample::of(&json!("on")), Sample::Scalar(ColumnKind::Text));
        assert_eq!(
            Sample::of(&json!({"t": 20.5, "room": "hall", "deep": {"x": 1}, "b": true})),
            Sample::Object(vec![
                ("t".into(), ColumnKind::Number),
                ("room".into(), ColumnKind::Text),
            ])
        );
        assert_eq!(Sample::of(&Value::Null), Sample::Empty);
    }

    #[test]
    fn dashboard_json_has_one_target_per_node_with_its_token_and_params() {
        let uid = Uuid::new_v4();
        let panels = vec![PanelSpec {
            panel_type: PanelType::TimeSeries,
            title: "Temperatures".into(),
            targets: vec![
                TargetSpec {
                    token: "tok-a".into(),
                    policy: ProcessingPolicyType::TimeWindow,
                    time_window_size: Some(600),
                    sample: Sample::Scalar(ColumnKind::Number),
                },
                TargetSpec {
                    token: "tok-b".into(),
                    policy: ProcessingPolicyType::Aggregation,
                    time_window_size: None,
                    sample: Sample::Object(vec![("t".into(), ColumnKind::Number)]),
                },
            ],
        }];
        let v = dashboard_json(uid, "Home", &panels);
        assert_eq!(v["overwrite"], true);
        let d = &v["dashboard"];
        assert_eq!(d["uid"], uid.to_string());
        assert_eq!(d["title"], "Home");
        let p = &d["panels"][0];
        assert_eq!(p["type"], "timeseries");
        let a = &p["targets"][0];
        assert_eq!(a["refId"], "A");
        assert_eq!(a["datasource"], DATASOURCE_NAME);
        assert_eq!(a["url_options"]["headers"][0]["value"], "tok-a");
        assert_eq!(a["url_options"]["params"][2]["value"], "600s");
        assert_eq!(a["columns"][1]["type"], "number");
        assert_eq!(a["root_selector"], "");
        let b = &p["targets"][1];
        assert_eq!(b["refId"], "B");
        assert_eq!(b["url_options"]["params"][2]["value"], "30d");
        assert_eq!(b["root_selector"], "value");
        assert_eq!(b["columns"][1]["selector"], "t");
    }
}
