//! `pepeunit load graphql`: the GraphQL front door against REST for the same objects, back to
//! back in one run. Three scenarios, each as the GraphQL operation and the equivalent REST
//! request:
//!
//! - `get_unit`: `getUnit(uuid)` selecting every field `GET /units/{uuid}` returns;
//! - `get_units`: `getUnits(filters: {limit: 20})` with nested `unitNodes` against
//!   `GET /units?is_include_output_unit_nodes=true&limit=20` (same order parameters);
//! - `set_state`: `setStateStorage(uuid, state)` against `POST /units/set_state_storage/{uuid}`.
//!
//! Each runs closed loop (`--concurrency` clients for `--duration` seconds: throughput and the
//! GraphQL/REST ratio) and open loop (a fixed `--rate`: latency from the scheduled send time).
//! Before measuring, both answers are fetched once and compared (same units, same fields, same
//! nodes), so the two sides serve the same objects.
//!
//! It targets a running instance on loopback (`--url`) as the user of `--token`; with
//! `--firmware-url` it first creates its own registry, repo and `--units` units (each with the
//! nodes its schema declares), otherwise it uses the units the user already sees.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Args, Debug, Clone)]
pub struct GraphqlLoad {
    /// Instance origin on loopback, e.g. http://127.0.0.1:5291
    #[arg(long)]
    pub url: String,
    /// A user's token (POST /users/auth).
    #[arg(long)]
    pub token: String,
    /// Set up data first: a registry on this firmware git repository (must be reachable by the
    /// instance), a repo and `--units` units. Without it the user's existing units are used.
    #[arg(long)]
    pub firmware_url: Option<String>,
    /// Units to create with --firmware-url (1..=200).
    #[arg(long, default_value_t = 20)]
    pub units: usize,
    /// The unit of `get_unit` and `set_state` (default: the first unit of the list).
    #[arg(long)]
    pub unit: Option<Uuid>,
    /// Concurrent clients of the closed loop (1..=1024).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds per measurement (0.1..=120); a run makes 12 measurements (3 scenarios, closed
    /// and open loop, GraphQL and REST).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of unmeasured closed-loop warm-up over all requests before measuring (0..=60).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Requests per second of the open loop (1..=20000).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Comma-separated scenarios: get_unit, get_units, set_state.
    #[arg(long, default_value = "get_unit,get_units,set_state")]
    pub scenarios: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// API prefix of REST (GraphQL is at the application prefix + /graphql).
    #[arg(long, default_value = "/pepeunit/api/v1")]
    pub prefix: String,
    /// GraphQL endpoint path.
    #[arg(long, default_value = "/pepeunit/graphql")]
    pub graphql_path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    GetUnit,
    GetUnits,
    SetState,
}

impl Scenario {
    fn parse(s: &str) -> anyhow::Result<Scenario> {
        Ok(match s.trim() {
            "get_unit" => Scenario::GetUnit,
            "get_units" => Scenario::GetUnits,
            "set_state" => Scenario::SetState,
            other => anyhow::bail!("unknown scenario {other:?}"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::GetUnit => "get_unit",
            Scenario::GetUnits => "get_units",
            Scenario::SetState => "set_state",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Graphql,
    Rest,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// GraphQL and REST for one scenario in one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub graphql: Measurement,
    pub rest: Measurement,
    /// GraphQL requests/s over REST requests/s.
    pub ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub graphql: String,
    pub rest: String,
    pub closed_loop: Pair,
    pub open_loop: Pair,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub duration_s: f64,
    pub rate: u64,
    pub unit: Uuid,
    /// Units and nodes of the `get_units` page.
    pub page_units: usize,
    pub page_nodes: usize,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    pub fn errors(&self) -> u64 {
        self.scenarios
            .iter()
            .flat_map(|s| [&s.closed_loop, &s.open_loop])
            .map(|p| p.graphql.errors + p.rest.errors)
            .sum()
    }
}

pub async fn run_graphql(args: GraphqlLoad) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let errors = report.errors();
    if errors > 0 {
        anyhow::bail!(
            "{errors} requests failed; first: {}",
            first_error(&report).unwrap_or_default()
        );
    }
    Ok(())
}

/// Sets up (if asked), checks that both sides answer the same objects, and measures.
pub async fn measure(args: &GraphqlLoad) -> anyhow::Result<Report> {
    if !(0.1..=120.0).contains(&args.duration) {
        anyhow::bail!("--duration must be between 0.1 and 120 seconds");
    }
    if !(0.0..=60.0).contains(&args.warmup) {
        anyhow::bail!("--warmup must be between 0 and 60 seconds");
    }
    if !(1..=1024).contains(&args.concurrency) {
        anyhow::bail!("--concurrency must be between 1 and 1024");
    }
    if !(1..=20_000).contains(&args.rate) {
        anyhow::bail!("--rate must be between 1 and 20000");
    }
    if !(1..=200).contains(&args.units) {
        anyhow::bail!("--units must be between 1 and 200");
    }
    let scenarios: Vec<Scenario> = args
        .scenarios
        .split(',')
        .map(Scenario::parse)
        .collect::<Result<_, _>>()?;
    if scenarios.is_empty() {
        anyhow::bail!("--scenarios is empty");
    }
    let origin = reqwest::Url::parse(&args.url)?;
    if !is_loopback(&origin) {
        anyhow::bail!("--url must be a loopback address (127.0.0.0/8, ::1 or localhost)");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let origin = args.url.trim_end_matches('/').to_string();
    let api = format!("{origin}{}", args.prefix);
    let graphql = format!("{origin}{}", args.graphql_path);
    let setup = Setup {
        client: &client,
        api: &api,
        token: &args.token,
    };
    if let Some(firmware) = &args.firmware_url {
        setup.create(firmware, args.units).await?;
    }
    let unit = match args.unit {
        Some(u) => u,
        None => setup.first_unit().await?,
    };

    let target = Arc::new(Target {
        client,
        token: args.token.clone(),
    });
    let mut reports = Vec::new();
    let mut page = (0, 0);
    let mut prepared = Vec::new();
    for &scenario in &scenarios {
        let (gql, rest) = requests(scenario, &graphql, &api, unit);
        let seen = check_same(&target, scenario, &gql, &rest).await?;
        if scenario == Scenario::GetUnits {
            page = seen;
        }
        prepared.push((scenario, gql, rest));
    }
    if args.warmup > 0.0 {
        let all: Vec<Req> = prepared
            .iter()
            .flat_map(|(_, g, r)| [g.clone(), r.clone()])
            .collect();
        let _ = closed_loop(&target, &all, args.concurrency, secs(args.warmup)).await;
    }
    for (scenario, gql, rest) in prepared {
        let run = |req: Req, open: bool| {
            let target = target.clone();
            async move {
                let reqs = [req];
                if open {
                    open_loop(&target, &reqs[0], args.rate, secs(args.duration)).await
                } else {
                    closed_loop(&target, &reqs, args.concurrency, secs(args.duration)).await
                }
            }
        };
        let closed_g = run(gql.clone(), false).await;
        let closed_r = run(rest.clone(), false).await;
        let open_g = run(gql.clone(), true).await;
        let open_r = run(rest.clone(), true).await;
        reports.push(ScenarioReport {
            scenario,
            graphql: gql.label.clone(),
            rest: rest.label.clone(),
            closed_loop: pair(closed_g, closed_r),
            open_loop: pair(open_g, open_r),
        });
    }
    Ok(Report {
        concurrency: args.concurrency,
        duration_s: args.duration,
        rate: args.rate,
        unit,
        page_units: page.0,
        page_nodes: page.1,
        scenarios: reports,
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The first failure of a report, for the error message.
fn first_error(r: &Report) -> Option<String> {
    r.scenarios
        .iter()
        .flat_map(|s| [&s.closed_loop, &s.open_loop])
        .flat_map(|p| [&p.graphql, &p.rest])
        .find_map(|m| m.first_error.clone())
}

fn pair(graphql: Measurement, rest: Measurement) -> Pair {
    let ratio = if rest.rate > 0.0 {
        graphql.rate / rest.rate
    } else {
        0.0
    };
    Pair {
        graphql,
        rest,
        ratio,
    }
}

fn print_table(r: &Report) {
    println!(
        "unit={} get_units page: {} units, {} nodes; closed loop x{}, open loop at {}/s, {:.1}s each",
        r.unit, r.page_units, r.page_nodes, r.concurrency, r.rate, r.duration_s
    );
    println!(
        "{:<10} {:<8} {:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>6}",
        "scenario",
        "mode",
        "protocol",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ratio"
    );
    for s in &r.scenarios {
        for (mode, p) in [("closed", &s.closed_loop), ("open", &s.open_loop)] {
            for (proto, m) in [("graphql", &p.graphql), ("rest", &p.rest)] {
                println!(
                    "{:<10} {:<8} {:<8} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>6}",
                    s.scenario.name(),
                    mode,
                    proto,
                    m.requests,
                    m.errors,
                    m.rate,
                    m.p50_ms,
                    m.p99_ms,
                    m.max_ms,
                    if proto == "graphql" {
                        format!("{:.2}", p.ratio)
                    } else {
                        String::new()
                    },
                );
            }
        }
    }
}

/// Creating the data and finding the unit, through REST as the user.
struct Setup<'a> {
    client: &'a reqwest::Client,
    api: &'a str,
    token: &'a str,
}

impl Setup<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.api))
            .header("x-auth-token", self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, firmware: &str, units: usize) -> anyhow::Result<()> {
        use reqwest::Method;
        let tag = Uuid::new_v4().simple().to_string();
        let tag = &tag[..8];
        let registry = self
            .call(
                Method::POST,
                "/repository_registry",
                Some(json!({"platform": "Gitlab", "repository_url": firmware, "is_public_repository": true})),
            )
            .await?;
        let repo = self
            .call(
                Method::POST,
                "/repos",
                Some(json!({"repository_registry_uuid": registry["uuid"], "default_branch": "main", "visibility_level": "Public", "name": format!("load_{tag}"), "is_compilable_repo": false})),
            )
            .await?;
        for i in 0..units {
            self.call(
                Method::POST,
                "/units",
                Some(json!({"repo_uuid": repo["uuid"], "visibility_level": "Public", "name": format!("load_{tag}_{i:03}"), "is_auto_update_from_repo_unit": true})),
            )
            .await?;
        }
        Ok(())
    }

    async fn first_unit(&self) -> anyhow::Result<Uuid> {
        let list = self
            .call(
                reqwest::Method::GET,
                "/units?limit=1&order_by_unit_name=asc",
                None,
            )
            .await?;
        list["units"][0]["uuid"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!("the user sees no unit: give --firmware-url to create some")
            })
    }
}

/// A prepared request: everything but the connection is built once.
#[derive(Clone)]
pub(crate) struct Req {
    pub(crate) label: String,
    method: reqwest::Method,
    url: String,
    body: Option<Bytes>,
    graphql: bool,
}

const UNIT_FIELDS: &str = "uuid visibilityLevel name createDatetime isAutoUpdateFromRepoUnit \
    targetFirmwarePlatform repoBranch repoCommit \
    unitState { ifconfig millis memFree memAlloc freq statvfs puCommitVersion } \
    currentCommitVersion lastUpdateDatetime creatorUuid repoUuid firmwareUpdateStatus \
    firmwareUpdateError lastFirmwareUpdateDatetime alertLogLevel alertsMutedUntil";

const NODE_FIELDS: &str = "uuid type visibilityLevel isRewritableInput maxConnections topicName \
    lastUpdateDatetime isDataPipeActive dataPipeYml dataPipeStatus dataPipeError createDatetime \
    state unitUuid creatorUuid";

/// The same ordering on both sides (GraphQL's defaults, spelled out for REST).
const PAGE_ORDER: &str =
    "order_by_unit_name=asc&order_by_create_date=desc&order_by_last_update=desc";

pub(crate) fn requests(scenario: Scenario, graphql: &str, api: &str, unit: Uuid) -> (Req, Req) {
    let gql = |label: &str, query: String, variables: Value| Req {
        label: label.to_string(),
        method: reqwest::Method::POST,
        url: graphql.to_string(),
        body: Some(Bytes::from(
            json!({"query": query, "variables": variables}).to_string(),
        )),
        graphql: true,
    };
    let rest = |label: String, method: reqwest::Method, path: String, body: Option<Value>| Req {
        label,
        method,
        url: format!("{api}{path}"),
        body: body.map(|b| Bytes::from(b.to_string())),
        graphql: false,
    };
    match scenario {
        Scenario::GetUnit => (
            gql(
                "getUnit(uuid)",
                format!("query ($uuid: UUID!) {{ getUnit(uuid: $uuid) {{ {UNIT_FIELDS} }} }}"),
                json!({"uuid": unit}),
            ),
            rest(
                "GET /units/{uuid}".into(),
                reqwest::Method::GET,
                format!("/units/{unit}"),
                None,
            ),
        ),
        Scenario::GetUnits => (
            gql(
                "getUnits(limit 20) { units { unitNodes } }",
                format!(
                    "{{ getUnits(filters: {{limit: 20}}) {{ count units {{ {UNIT_FIELDS} unitNodes {{ {NODE_FIELDS} }} }} }} }}"
                ),
                json!({}),
            ),
            rest(
                "GET /units?is_include_output_unit_nodes=true&limit=20".into(),
                reqwest::Method::GET,
                format!("/units?is_include_output_unit_nodes=true&limit=20&{PAGE_ORDER}"),
                None,
            ),
        ),
        Scenario::SetState => (
            gql(
                "setStateStorage(uuid, state)",
                "mutation ($uuid: UUID!, $state: String!) { setStateStorage(uuid: $uuid, state: $state) { isNone } }".to_string(),
                json!({"uuid": unit, "state": "{\"load\":true}"}),
            ),
            rest(
                "POST /units/set_state_storage/{uuid}".into(),
                reqwest::Method::POST,
                format!("/units/set_state_storage/{unit}"),
                Some(json!({"state": "{\"load\":true}"})),
            ),
        ),
    }
}

pub(crate) struct Target {
    pub(crate) client: reqwest::Client,
    pub(crate) token: String,
}

impl Target {
    /// Sends `req`; the answer's bytes when it succeeded (GraphQL: HTTP 200 without `errors`).
    pub(crate) async fn send(&self, req: &Req) -> Result<Bytes, String> {
        let mut r = self
            .client
            .request(req.method.clone(), &req.url)
            .header("x-auth-token", &self.token);
        if let Some(body) = &req.body {
            r = r
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let resp = r.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        // an operation error is HTTP 200 with an `errors` member; our own names never contain it
        if req.graphql && memchr_find(&bytes, b"\"errors\"") {
            return Err(format!(
                "GraphQL errors: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok(bytes)
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Both sides answer once; the same objects, or an error. For `get_units`: (units, nodes).
async fn check_same(
    target: &Target,
    scenario: Scenario,
    gql: &Req,
    rest: &Req,
) -> anyhow::Result<(usize, usize)> {
    let g = target
        .send(gql)
        .await
        .map_err(|e| anyhow::anyhow!("probe {}: {e}", gql.label))?;
    let r = target
        .send(rest)
        .await
        .map_err(|e| anyhow::anyhow!("probe {}: {e}", rest.label))?;
    let parse = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let (g, r) = (parse(&g), parse(&r));
    let differ =
        |what: &str| anyhow::anyhow!("{}: GraphQL and REST differ ({what})", scenario.name());
    match scenario {
        Scenario::GetUnit => {
            let g = &g["data"]["getUnit"];
            same_unit(g, &r, false).map_err(|w| differ(&w))?;
            Ok((1, 0))
        }
        Scenario::GetUnits => {
            let g = &g["data"]["getUnits"];
            if g["count"] != r["count"] {
                return Err(differ("count"));
            }
            let (gu, ru) = (
                g["units"].as_array().cloned().unwrap_or_default(),
                r["units"].as_array().cloned().unwrap_or_default(),
            );
            if gu.len() != ru.len() || gu.is_empty() {
                return Err(differ(&format!("{} units against {}", gu.len(), ru.len())));
            }
            let mut nodes = 0;
            for (g, r) in gu.iter().zip(&ru) {
                same_unit(g, r, true).map_err(|w| differ(&w))?;
                nodes += r["unit_nodes"].as_array().map_or(0, Vec::len);
            }
            Ok((gu.len(), nodes))
        }
        Scenario::SetState => {
            if g["data"]["setStateStorage"]["isNone"] != json!(true) {
                return Err(differ("setStateStorage did not answer isNone"));
            }
            Ok((0, 0))
        }
    }
}

/// Same uuid, same field names (camelCase against snake_case), same nodes when `with_nodes`.
fn same_unit(g: &Value, r: &Value, with_nodes: bool) -> Result<(), String> {
    if g["uuid"] != r["uuid"] || g["uuid"].is_null() {
        return Err(format!("unit {} against {}", g["uuid"], r["uuid"]));
    }
    let skip = if with_nodes { "" } else { "unit_nodes" };
    same_keys(g, r, skip)?;
    if with_nodes {
        let (gn, rn) = (&g["unitNodes"], &r["unit_nodes"]);
        let uuids = |v: &Value| -> Vec<Value> {
            v.as_array()
                .map(|a| a.iter().map(|n| n["uuid"].clone()).collect())
                .unwrap_or_default()
        };
        if uuids(gn) != uuids(rn) {
            return Err(format!("nodes of unit {}", r["uuid"]));
        }
        for (g, r) in gn
            .as_array()
            .into_iter()
            .flatten()
            .zip(rn.as_array().into_iter().flatten())
        {
            same_keys(g, r, "")?;
        }
    }
    Ok(())
}

fn same_keys(g: &Value, r: &Value, skip: &str) -> Result<(), String> {
    let keys = |v: &Value, snake: bool| -> BTreeSet<String> {
        v.as_object()
            .map(|o| {
                o.keys()
                    .map(|k| if snake { snake_case(k) } else { k.clone() })
                    .filter(|k| k != skip)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (gk, rk) = (keys(g, true), keys(r, false));
    if gk != rk {
        let only_g: Vec<_> = gk.difference(&rk).collect();
        let only_r: Vec<_> = rk.difference(&gk).collect();
        return Err(format!(
            "fields only in GraphQL {only_g:?}, only in REST {only_r:?}"
        ));
    }
    Ok(())
}

fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) first_error: std::sync::Mutex<Option<String>>,
}

impl Counts {
    fn record(&self, result: Result<Bytes, String>) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(e);
            }
        }
    }
}

pub(crate) fn summarise(counts: &Counts, mut latencies: Vec<u32>, seconds: f64) -> Measurement {
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let ok = counts.ok.load(Ordering::Relaxed);
    let errors = counts.failed.load(Ordering::Relaxed);
    let requests = ok + errors;
    let first_error = counts
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    Measurement {
        requests,
        errors,
        first_error,
        seconds,
        rate: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    }
}

pub(crate) fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// `concurrency` clients, each sending the next of `reqs` as soon as the last answered.
async fn closed_loop(
    target: &Arc<Target>,
    reqs: &[Req],
    concurrency: usize,
    duration: Duration,
) -> Measurement {
    let counts = Arc::new(Counts::default());
    let reqs: Arc<[Req]> = reqs.to_vec().into();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (target, counts, reqs) = (target.clone(), counts.clone(), reqs.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut i = w;
            while Instant::now() < deadline {
                let req = &reqs[i % reqs.len()];
                i += 1;
                let t = Instant::now();
                counts.record(target.send(req).await);
                lat.push(micros(t.elapsed()));
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    summarise(&counts, all, started.elapsed().as_secs_f64())
}

/// `rate` requests per second at a fixed pace, whatever the answers; latency is counted from
/// the scheduled send time, so queueing shows. At most `rate * duration` requests.
pub(crate) async fn open_loop(
    target: &Arc<Target>,
    req: &Req,
    rate: u64,
    duration: Duration,
) -> Measurement {
    let req = Arc::new(req.clone());
    let counts = Arc::new(Counts::default());
    let total = ((rate as f64) * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut in_flight = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..total {
        let scheduled = tick.tick().await;
        let (target, counts, tx, req) = (target.clone(), counts.clone(), tx.clone(), req.clone());
        in_flight.spawn(async move {
            counts.record(target.send(&req).await);
            let _ = tx.send(micros(scheduled.elapsed()));
        });
        while in_flight.try_join_next().is_some() {}
    }
    drop(tx);
    while in_flight.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Vec::with_capacity(total as usize);
    while let Some(l) = rx.recv().await {
        all.push(l);
    }
    summarise(&counts, all, seconds)
}
