//! `pepeunit load ramp`: the capacity finder (SPEC §7; issue 18 part 4). Against a running
//! instance it steps the offered rate up, open loop (requests sent on a fixed schedule whatever
//! the answers, latency counted from the scheduled time so queueing shows), from `--start-rate`
//! by `--factor` per step of `--step-seconds`, until a step's p99 latency passes `--p99-ms` or
//! its error share passes `--max-error-percent`, or `--max-rate` / `--max-steps` is reached.
//! The capacity of the channel is the highest offered rate whose step stayed within both bounds.
//!
//! Channels: `--rest` requests `GET /units?is_include_output_unit_nodes=true&limit=20` and
//! `--graphql` the same page as `getUnits(filters: {limit: 20})` with its `unitNodes` (the
//! requests of `pepeunit load graphql`'s `get_units`, sent by its open loop), as the user of
//! `--token`: what a page of the user's units costs, so the figures depend on how many units
//! that user sees (up to 20). `--mqtt --unit UUID` reads the unit's env.json (the token's user
//! must be allowed to) and publishes QoS 1 values on its first Output node whose topic ends in
//! `/pepeunit` (the unit's `state` when it has none) over `--connections` connections, round
//! robin: the embedded broker handles one connection's QoS 1 messages one at a time and sends
//! the PUBACK only after the batch holding the message is committed, so the latency measured,
//! from the scheduled send to the PUBACK, is publish-to-stored (with an external broker it is
//! the broker's acknowledgement). A publish the client cannot queue (its request channel of
//! 10,000 full) is a drop; drops and publishes unacknowledged 10 s after the step are errors.
//! With throttling (issue 18 part 2) the admin lifts the topic limits for a run: a message the
//! instance drops for its topic's limit is still acknowledged (MQTT 3.1.1 has no refusal), so
//! each step reads the unit's `throttled_last_hour` (`GET /metrics/load/units/{uuid}`) before
//! and after and counts the difference as errors ("throttled by the instance"). The report is
//! a table on the terminal, the JSON of [`LoadReport`] (`--json FILE`) and a self-contained
//! HTML page with inline SVG charts (`--html FILE`). `--publish` stores it on the instance (an
//! admin's token), where `GET /load_limit` serves it publicly with the grade.
//!
//! Bounded: at most `--max-steps` steps (<= 100) of at most 120 s, at most 20,000 requests/s,
//! every request with a 10 s timeout; only the given URL (and for MQTT the broker its env.json
//! names) is contacted, and it must be on loopback unless `--allow-remote` says the instance
//! is yours.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::graphql::{
    is_loopback, micros, open_loop, requests, summarise, Counts, Measurement, Scenario, Target,
};
use crate::service::grades::{LoadBounds, LoadMachine, LoadReport, LoadStep};

/// Largest offered rate accepted (requests per second).
pub const MAX_RATE: u64 = 20_000;
/// Timeout of one request: a step drains within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct RampLoad {
    /// Instance origin, e.g. http://127.0.0.1:5291 (loopback unless --allow-remote).
    #[arg(long)]
    pub url: String,
    /// A user's token (POST /users/auth); an admin's for --publish (and for the machine's
    /// cores and memory in the report).
    #[arg(long)]
    pub token: String,
    /// Ramp the REST API (GET /units?limit=20 with nodes).
    #[arg(long, required_unless_present_any = ["graphql", "mqtt"], conflicts_with_all = ["graphql", "mqtt"])]
    pub rest: bool,
    /// Ramp GraphQL (getUnits(filters: {limit: 20}) with unitNodes).
    #[arg(long, required_unless_present_any = ["rest", "mqtt"], conflicts_with = "mqtt")]
    pub graphql: bool,
    /// Ramp MQTT: QoS 1 states of --unit on the instance's broker, publish to PUBACK (the
    /// embedded broker acknowledges after the commit: PUBACK means stored).
    #[arg(long, requires = "unit")]
    pub mqtt: bool,
    /// The unit whose state --mqtt publishes (the token's user must read its env.json).
    #[arg(long)]
    pub unit: Option<uuid::Uuid>,
    /// MQTT connections the offered rate is spread over, round robin (1..=64): the broker
    /// handles one connection's QoS 1 messages one at a time.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Stop once a step's p99 latency passes this many milliseconds (0.1..=60000).
    #[arg(long, default_value_t = 100.0)]
    pub p99_ms: f64,
    /// Stop once a step's failed requests pass this percentage (0..=100).
    #[arg(long, default_value_t = 1.0)]
    pub max_error_percent: f64,
    /// Seconds per step (0.1..=120).
    #[arg(long, default_value_t = 5.0)]
    pub step_seconds: f64,
    /// Offered rate of the first step, requests per second (1..=max-rate).
    #[arg(long, default_value_t = 50)]
    pub start_rate: u64,
    /// Factor from one step's rate to the next (1.05..=10; at least +1/s).
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Highest offered rate (1..=20000): the ramp stops after the step that reached it.
    #[arg(long, default_value_t = 5000)]
    pub max_rate: u64,
    /// Most steps (1..=100).
    #[arg(long, default_value_t = 30)]
    pub max_steps: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page with charts to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Store the report on the instance (POST /load_limit; an admin's token).
    #[arg(long)]
    pub publish: bool,
    /// Allow a URL that is not on loopback (an instance you run).
    #[arg(long)]
    pub allow_remote: bool,
    /// Hide the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// API prefix of REST.
    #[arg(long, default_value = "/pepeunit/api/v1")]
    pub prefix: String,
    /// GraphQL endpoint path.
    #[arg(long, default_value = "/pepeunit/graphql")]
    pub graphql_path: String,
}

impl RampLoad {
    fn channel(&self) -> &'static str {
        if self.graphql {
            "graphql"
        } else if self.mqtt {
            "mqtt"
        } else {
            "rest"
        }
    }

    /// Every flag in range, with a message naming it.
    pub fn validate(&self) -> anyhow::Result<()> {
        let check = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{msg}"))
            }
        };
        check(
            [self.rest, self.graphql, self.mqtt]
                .into_iter()
                .filter(|c| *c)
                .count()
                == 1,
            "give exactly one channel: --rest, --graphql or --mqtt",
        )?;
        check(
            !self.mqtt || self.unit.is_some(),
            "--mqtt needs --unit (the unit whose state it publishes)",
        )?;
        check(
            (1..=64).contains(&self.connections),
            "--connections must be between 1 and 64",
        )?;
        check(
            self.p99_ms.is_finite() && (0.1..=60_000.0).contains(&self.p99_ms),
            "--p99-ms must be between 0.1 and 60000",
        )?;
        check(
            self.max_error_percent.is_finite() && (0.0..=100.0).contains(&self.max_error_percent),
            "--max-error-percent must be between 0 and 100",
        )?;
        check(
            self.step_seconds.is_finite() && (0.1..=120.0).contains(&self.step_seconds),
            "--step-seconds must be between 0.1 and 120",
        )?;
        check(
            self.factor.is_finite() && (1.05..=10.0).contains(&self.factor),
            "--factor must be between 1.05 and 10",
        )?;
        check(
            (1..=MAX_RATE).contains(&self.max_rate),
            "--max-rate must be between 1 and 20000",
        )?;
        check(
            (1..=self.max_rate).contains(&self.start_rate),
            "--start-rate must be between 1 and --max-rate",
        )?;
        check(
            (1..=100).contains(&self.max_steps),
            "--max-steps must be between 1 and 100",
        )?;
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("--url is not a URL: {e}"))?;
        check(
            matches!(url.scheme(), "http" | "https"),
            "--url must be http:// or https://",
        )?;
        check(
            self.allow_remote || is_loopback(&url),
            "--url must be a loopback address (127.0.0.0/8, ::1 or localhost) unless --allow-remote says the instance is yours",
        )?;
        Ok(())
    }

    /// The offered rates of the planned steps: start, then times the factor (at least +1),
    /// the last one capped at --max-rate.
    pub fn planned_rates(&self) -> Vec<u64> {
        let mut rates = vec![self.start_rate];
        while rates.len() < self.max_steps {
            let last = *rates.last().expect("one rate");
            if last >= self.max_rate {
                break;
            }
            let next = ((last as f64) * self.factor).ceil() as u64;
            rates.push(next.max(last + 1).min(self.max_rate));
        }
        rates
    }
}

pub async fn run_ramp(args: RampLoad) -> anyhow::Result<()> {
    let report = ramp(&args).await?;
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html(&report))
            .map_err(|e| anyhow::anyhow!("--html {}: {e}", path.display()))?;
    }
    if args.publish {
        let stored = publish(&args, &report).await?;
        println!(
            "published: GET {}{}/load_limit (capacity {})",
            args.url.trim_end_matches('/'),
            args.prefix,
            stored
                .capacity
                .map(|c| format!("{:.0}/s at p99 {:.2} ms", c.offered_rate, c.p99_ms))
                .unwrap_or_else(|| "none within bounds".into())
        );
    }
    Ok(())
}

/// Runs the ramp and returns its report (nothing written or published).
pub async fn ramp(args: &RampLoad) -> anyhow::Result<LoadReport> {
    args.validate()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let origin = args.url.trim_end_matches('/').to_string();
    let api = format!("{origin}{}", args.prefix);
    let (gql, rest) = requests(
        Scenario::GetUnits,
        &format!("{origin}{}", args.graphql_path),
        &api,
        uuid::Uuid::nil(),
    );
    let req = if args.graphql { gql } else { rest };
    let target = Arc::new(Target {
        client: client.clone(),
        token: args.token.clone(),
    });
    // fail fast with a readable error before measuring
    let (operation, mqtt) = match args.unit.filter(|_| args.mqtt) {
        Some(unit) => {
            let m = MqttTarget::connect(args, &client, &api, unit).await?;
            (m.operation(), Some(m))
        }
        None => {
            target
                .send(&req)
                .await
                .map_err(|e| anyhow::anyhow!("probe {}: {e}", req.label))?;
            (req.label.clone(), None)
        }
    };
    let machine = machine(&client, &api, &args.token).await;

    let bounds = LoadBounds {
        p99_ms: args.p99_ms,
        max_error_percent: args.max_error_percent,
    };
    let rates = args.planned_rates();
    let bar = progress_bar(args, rates.len());
    let started = now();
    let mut steps = Vec::new();
    let mut stop_reason = String::new();
    for (i, &rate) in rates.iter().enumerate() {
        bar.set_message(format!("step {}: offering {rate}/s", i + 1));
        let duration = Duration::from_secs_f64(args.step_seconds);
        let m = match &mqtt {
            Some(mqtt) => mqtt.step(rate, duration).await,
            None => open_loop(&target, &req, rate, duration).await,
        };
        let error_percent = if m.requests > 0 {
            m.errors as f64 * 100.0 / m.requests as f64
        } else {
            0.0
        };
        let mut step = LoadStep {
            offered_rate: rate as f64,
            achieved_rate: m.rate,
            requests: m.requests,
            errors: m.errors,
            error_percent,
            p50_ms: m.p50_ms,
            p99_ms: m.p99_ms,
            max_ms: m.max_ms,
            seconds: m.seconds,
            within_bounds: false,
        };
        step.within_bounds = step.within(&bounds);
        let within = step.within_bounds;
        steps.push(step);
        bar.inc(1);
        bar.println(format!(
            "step {:>3}: offered {rate:>6}/s  achieved {:>8.1}/s  p99 {:>8.2} ms  errors {:>5.2}%{}",
            i + 1,
            m.rate,
            m.p99_ms,
            error_percent,
            if within { "" } else { "  (beyond bounds)" }
        ));
        if m.p99_ms > args.p99_ms {
            stop_reason = format!(
                "p99 {:.2} ms passed --p99-ms {} at {rate}/s",
                m.p99_ms, args.p99_ms
            );
        } else if error_percent > args.max_error_percent {
            stop_reason = format!(
                "errors {error_percent:.2}% passed --max-error-percent {} at {rate}/s (first: {})",
                args.max_error_percent,
                m.first_error.unwrap_or_default()
            );
        }
        if !stop_reason.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();
    if let Some(mqtt) = mqtt {
        mqtt.close().await;
    }
    if stop_reason.is_empty() {
        let last = *rates.last().expect("one rate");
        stop_reason = if last >= args.max_rate {
            format!("reached --max-rate {} within bounds", args.max_rate)
        } else {
            format!("reached --max-steps {} within bounds", args.max_steps)
        };
    }
    let mut report = LoadReport {
        channel: args.channel().to_string(),
        operation,
        started,
        finished: now(),
        bounds,
        machine,
        steps,
        stop_reason,
        capacity: None,
    };
    report.capacity = report.capacity_step();
    Ok(report)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn progress_bar(args: &RampLoad, steps: usize) -> indicatif::ProgressBar {
    if args.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} ramp {prefix} [{bar:30}] {pos}/{len} steps, {elapsed} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(args.channel());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The instance's cores and memory, when the token may read `GET /metrics/node` (admins).
async fn machine(client: &reqwest::Client, api: &str, token: &str) -> LoadMachine {
    let Ok(resp) = client
        .get(format!("{api}/metrics/node?limit=1"))
        .header("x-auth-token", token)
        .send()
        .await
    else {
        return LoadMachine::default();
    };
    if !resp.status().is_success() {
        return LoadMachine::default();
    }
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    LoadMachine {
        cpus: v["machine"]["cpus"].as_u64(),
        mem_total_bytes: v["machine"]["mem_total_bytes"].as_u64(),
    }
}

/// Stores the report on the instance; the stored report (capacity computed by the instance).
pub async fn publish(args: &RampLoad, report: &LoadReport) -> anyhow::Result<LoadReport> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(format!(
            "{}{}/load_limit",
            args.url.trim_end_matches('/'),
            args.prefix
        ))
        .header("x-auth-token", &args.token)
        .json(report)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("--publish: HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

fn print_table(r: &LoadReport) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ramp {} ({}), bounds p99 <= {} ms, errors <= {}%",
        r.channel, r.operation, r.bounds.p99_ms, r.bounds.max_error_percent
    );
    let _ = writeln!(
        out,
        "{:>4} {:>9} {:>10} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9}  within",
        "step",
        "offered/s",
        "achieved/s",
        "requests",
        "errors",
        "err%",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (i, s) in r.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>4} {:>9.0} {:>10.1} {:>9} {:>7} {:>7.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            i + 1,
            s.offered_rate,
            s.achieved_rate,
            s.requests,
            s.errors,
            s.error_percent,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            if s.within_bounds { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "stopped: {}", r.stop_reason);
    let _ = match &r.capacity {
        Some(c) => writeln!(
            out,
            "capacity: {:.0}/s offered ({:.1}/s achieved) at p99 {:.2} ms, {:.2}% errors",
            c.offered_rate, c.achieved_rate, c.p99_ms, c.error_percent
        ),
        None => writeln!(out, "capacity: no step stayed within the bounds"),
    };
}

// ---------------------------------------------------------------------------------------------
// the MQTT channel: QoS 1 publishes of a unit's state, latency from the scheduled time to PUBACK

/// What one connection has scheduled, sent and had acknowledged.
#[derive(Default)]
struct Pending {
    /// Scheduled times of publishes handed to the client, not yet written (in order).
    queued: std::collections::VecDeque<std::time::Instant>,
    /// Written publishes by packet id, waiting for their PUBACK.
    sent: std::collections::HashMap<u16, std::time::Instant>,
    latencies: Vec<u32>,
    acked: u64,
    error: Option<String>,
}

struct MqttConn {
    client: rumqttc::AsyncClient,
    pending: Arc<std::sync::Mutex<Pending>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the MQTT ramp publishes.
enum Payload {
    /// A value on an Output node's `/pepeunit` topic (stored as the node's state, and by its
    /// data pipe if it has one).
    NodeValue,
    /// A `state` with this commit (a unit without such a node; the instance stores one state
    /// per `PU_STATE_SEND_INTERVAL` and acknowledges the rest without storing them).
    State(String),
}

impl Payload {
    fn nth(&self, i: u64) -> String {
        match self {
            Payload::NodeValue => (20 + i % 17).to_string(),
            Payload::State(commit) => serde_json::json!({
                "pu_commit_version": commit, "millis": i, "mem_free": 100_000, "mem_alloc": 20_000, "freq": 240
            })
            .to_string(),
        }
    }
}

/// The unit's first Output node whose topic ends in `/pepeunit`: (uuid, topic name).
async fn output_node(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    unit: uuid::Uuid,
) -> anyhow::Result<Option<(uuid::Uuid, String)>> {
    let resp = client
        .get(format!(
            "{api}/unit_nodes?unit_uuid={unit}&type=Output&limit=100"
        ))
        .header("x-auth-token", token)
        .send()
        .await?;
    let status = resp.status();
    let list: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!("probe the nodes of {unit}: HTTP {status}: {list}");
    }
    Ok(list["unit_nodes"].as_array().and_then(|nodes| {
        nodes.iter().find_map(|n| {
            let name = n["topic_name"].as_str()?;
            let uuid = n["uuid"].as_str()?.parse().ok()?;
            name.ends_with("/pepeunit")
                .then(|| (uuid, name.to_string()))
        })
    }))
}

/// `--connections` connections as the unit, publishing on one of its topics.
struct MqttTarget {
    conns: Vec<MqttConn>,
    topic: String,
    payload: Payload,
    /// Where the unit's throttled count is read: (client, load URL, token).
    load: (reqwest::Client, String, String),
}

fn lock(p: &std::sync::Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl MqttTarget {
    /// Reads the unit's env.json, connects and has one message acknowledged per connection.
    async fn connect(
        args: &RampLoad,
        client: &reqwest::Client,
        api: &str,
        unit: uuid::Uuid,
    ) -> anyhow::Result<MqttTarget> {
        let resp = client
            .get(format!("{api}/units/env/{unit}"))
            .header("x-auth-token", &args.token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("probe env.json of {unit}: {e}"))?;
        let status = resp.status();
        let env: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("probe env.json of {unit}: HTTP {status}: {env}");
        }
        let text = |k: &str| match &env[k] {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(anyhow::anyhow!("env.json of {unit} has no {k}")),
        };
        let (host, port) = (text("PU_MQTT_HOST")?, text("PU_MQTT_PORT")?);
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("env.json of {unit}: bad PU_MQTT_PORT {port}"))?;
        // parsed as http: only special schemes parse IP hosts
        let broker = reqwest::Url::parse(&format!("http://{host}:{port}"))?;
        if !args.allow_remote && !is_loopback(&broker) {
            anyhow::bail!(
                "the broker {host}:{port} is not on loopback: --allow-remote if it is yours"
            );
        }
        let domain = text("PU_DOMAIN")?;
        let (topic, payload) = match output_node(client, api, &args.token, unit).await? {
            Some((node, name)) => (
                crate::domain::Topic::node(&domain, node, &name).to_string(),
                Payload::NodeValue,
            ),
            None => (
                crate::domain::Topic::state(&domain, unit).to_string(),
                Payload::State(text("PU_COMMIT_VERSION").unwrap_or_else(|_| "0".repeat(40))),
            ),
        };
        let token = text("PU_AUTH_TOKEN")?;
        let mut conns = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let mut o = rumqttc::MqttOptions::new(format!("ramp-{i}-{unit}"), host.clone(), port);
            o.set_credentials(token.clone(), "");
            o.set_keep_alive(Duration::from_secs(30));
            o.set_inflight(100);
            let (client, eventloop) = rumqttc::AsyncClient::new(o, 10_000);
            let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
            let task = tokio::spawn(drive(eventloop, pending.clone()));
            conns.push(MqttConn {
                client,
                pending,
                task,
            });
        }
        let target = MqttTarget {
            conns,
            topic,
            payload,
            load: (
                client.clone(),
                format!("{api}/metrics/load/units/{unit}"),
                args.token.clone(),
            ),
        };
        // one message per connection, acknowledged within the timeout, before measuring
        let probe = target
            .step(args.connections as u64, Duration::from_secs(1))
            .await;
        if probe.errors > 0 {
            target.close().await;
            anyhow::bail!(
                "probe MQTT {host}:{port} as unit {unit}: {}",
                probe.first_error.unwrap_or_else(|| "no PUBACK".into())
            );
        }
        Ok(target)
    }

    fn operation(&self) -> String {
        format!(
            "QoS 1 PUBLISH {} to PUBACK over {} connections",
            self.topic,
            self.conns.len()
        )
    }

    /// The unit's messages dropped by the instance's throttle in the last hour; `None` when
    /// the instance does not say (load metering off, an older instance).
    async fn throttled(&self) -> Option<u64> {
        let (client, url, token) = &self.load;
        let resp = client
            .get(url)
            .header("x-auth-token", token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<Value>().await.ok()?["throttled_last_hour"].as_u64()
    }

    /// `rate` publishes per second for `duration`, round robin over the connections; each
    /// acknowledged within [`REQUEST_TIMEOUT`] of the end counts, the rest are errors (a
    /// publish the client could not even queue is a drop, counted as an error at once), and
    /// so are those the instance dropped for the topic's limit (acknowledged all the same).
    async fn step(&self, rate: u64, duration: Duration) -> Measurement {
        let throttled_before = self.throttled().await;
        for c in &self.conns {
            let mut p = lock(&c.pending);
            p.queued.clear();
            p.sent.clear();
            p.latencies.clear();
            p.acked = 0;
        }
        let counts = Counts::default();
        let total = ((rate as f64) * duration.as_secs_f64()).ceil().max(1.0) as u64;
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = std::time::Instant::now();
        let mut dropped = 0u64;
        for i in 0..total {
            let scheduled = tick.tick().await.into_std();
            let c = &self.conns[i as usize % self.conns.len()];
            let payload = self.payload.nth(i);
            let mut p = lock(&c.pending);
            p.queued.push_back(scheduled);
            if let Err(e) =
                c.client
                    .try_publish(&self.topic, rumqttc::QoS::AtLeastOnce, false, payload)
            {
                p.queued.pop_back();
                dropped += 1;
                counts
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(format!("dropped: {e}"));
            }
        }
        let acked = || {
            self.conns
                .iter()
                .map(|c| lock(&c.pending).acked)
                .sum::<u64>()
        };
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
        while acked() + dropped < total && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        for c in &self.conns {
            let mut p = lock(&c.pending);
            latencies.append(&mut p.latencies);
            if let Some(e) = p.error.take() {
                counts
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
        let mut acked = acked();
        if let (Some(before), Some(after)) = (throttled_before, self.throttled().await) {
            let throttled = after.saturating_sub(before).min(acked);
            if throttled > 0 {
                acked -= throttled;
                counts
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(format!(
                        "throttled by the instance: {throttled} messages (lift the topic's limit for the run: PUT /throttle)"
                    ));
            }
        }
        counts.ok.store(acked, std::sync::atomic::Ordering::Relaxed);
        counts.failed.store(
            total.saturating_sub(acked),
            std::sync::atomic::Ordering::Relaxed,
        );
        summarise(&counts, latencies, seconds)
    }

    async fn close(self) {
        for c in self.conns {
            let _ = c.client.try_disconnect();
            c.task.abort();
        }
    }
}

/// Polls one connection's event loop: pairs written publishes with their scheduled times and
/// PUBACKs with those. A connection error is kept for the report; rumqttc reconnects on the
/// next poll.
async fn drive(mut eventloop: rumqttc::EventLoop, pending: Arc<std::sync::Mutex<Pending>>) {
    use rumqttc::{Event, Outgoing, Packet};
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut p = lock(&pending);
                if let Some(t) = p.queued.pop_front() {
                    p.sent.insert(pkid, t);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut p = lock(&pending);
                if let Some(t) = p.sent.remove(&ack.pkid) {
                    p.latencies.push(micros(t.elapsed()));
                    p.acked += 1;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                lock(&pending).error.get_or_insert(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the HTML report: one self-contained page, charts as inline SVG, no external assets

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart: its name, colour and points (x, y).
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    /// Dashed, drawn over the others (the offered rate, which the achieved one hides when
    /// they are equal).
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

/// A line chart as an SVG element; `limit` draws a dashed horizontal line (a bound).
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    limit: Option<f64>,
) -> String {
    const W: f64 = 640.0;
    const H: f64 = 320.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 36.0;
    const B: f64 = 48.0;
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = nice_max(all.clone().map(|p| p.0).fold(0.0, f64::max));
    let y_max = nice_max(all.map(|p| p.1).chain(limit).fold(0.0, f64::max));
    let x = |v: f64| L + v / x_max * (W - L - R);
    let y = |v: f64| H - B - v / y_max * (H - T - B);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" font-family="sans-serif"><title>{t}</title><rect width="{W}" height="{H}" fill="#fff"/><text x="{cx}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{t}</text>"##,
        t = escape(title),
        cx = W / 2.0
    );
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (gx, gy) = (x(f * x_max), y(f * y_max));
        svg += &format!(
            r##"<line x1="{L}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text><text x="{gx:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            W - R,
            L - 6.0,
            gy + 4.0,
            short(f * y_max),
            H - B + 16.0,
            short(f * x_max),
        );
    }
    svg += &format!(
        r##"<line x1="{L}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{L}" y1="{T}" x2="{L}" y2="{b}" stroke="#333"/><text x="{cx}" y="{xl}" text-anchor="middle" font-size="12">{xlab}</text><text x="14" y="{cy}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {cy})">{ylab}</text>"##,
        b = H - B,
        r = W - R,
        cx = (L + W - R) / 2.0,
        xl = H - 10.0,
        cy = (T + H - B) / 2.0,
        xlab = escape(x_label),
        ylab = escape(y_label),
    );
    if let Some(l) = limit {
        svg += &format!(
            r##"<line x1="{L}" y1="{ly:.1}" x2="{r}" y2="{ly:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{r}" y="{ty:.1}" text-anchor="end" font-size="11" fill="#c00">bound {}</text>"##,
            short(l),
            ly = y(l),
            r = W - R,
            ty = y(l) - 4.0
        );
    }
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        svg += &format!(
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" "),
            c = s.color,
            dash = if s.dashed {
                r#" stroke-dasharray="5 4""#
            } else {
                ""
            }
        );
        for &(px, py) in &s.points {
            svg += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {} at {}/s</title></circle>"#,
                x(px),
                y(py),
                escape(s.name),
                short(py),
                short(px),
                c = s.color
            );
        }
        svg += &format!(
            r#"<rect x="{lx}" y="{ly}" width="12" height="4" fill="{c}"/><text x="{tx}" y="{ty}" font-size="11">{}</text>"#,
            escape(s.name),
            lx = L + 10.0 + 150.0 * k as f64,
            ly = T + 4.0,
            tx = L + 26.0 + 150.0 * k as f64,
            ty = T + 9.0,
            c = s.color
        );
    }
    svg + "</svg>"
}

fn short(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e9) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The self-contained HTML page of a report.
pub fn html(r: &LoadReport) -> String {
    let pts = |f: fn(&LoadStep) -> f64| -> Vec<(f64, f64)> {
        r.steps.iter().map(|s| (s.offered_rate, f(s))).collect()
    };
    let rate = chart(
        "Rate: offered vs achieved",
        "offered per second",
        "per second",
        &[
            Series {
                name: "achieved",
                color: "#1f6feb",
                dashed: false,
                points: pts(|s| s.achieved_rate),
            },
            Series {
                name: "offered",
                color: "#666",
                dashed: true,
                points: pts(|s| s.offered_rate),
            },
        ],
        None,
    );
    let latency = chart(
        "Latency vs offered rate",
        "offered per second",
        "milliseconds",
        &[
            Series {
                name: "p50",
                dashed: false,
                color: "#2da44e",
                points: pts(|s| s.p50_ms),
            },
            Series {
                name: "p99",
                dashed: false,
                color: "#bf8700",
                points: pts(|s| s.p99_ms),
            },
        ],
        Some(r.bounds.p99_ms),
    );
    let errors = chart(
        "Errors and drops vs offered rate",
        "offered per second",
        "percent of requests",
        &[Series {
            name: "errors %",
            dashed: false,
            color: "#cf222e",
            points: pts(|s| s.error_percent),
        }],
        Some(r.bounds.max_error_percent),
    );
    let mut rows = String::new();
    for (i, s) in r.steps.iter().enumerate() {
        let within = s.within(&r.bounds);
        rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>\n",
            if within { "ok" } else { "over" },
            i + 1,
            s.offered_rate,
            s.achieved_rate,
            s.requests,
            s.errors,
            s.error_percent,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            if within { "yes" } else { "no" }
        );
    }
    let capacity = match &r.capacity {
        Some(c) => format!(
            "{:.0} per second offered ({:.1} achieved) at p99 {:.2} ms and {:.2}% errors",
            c.offered_rate, c.achieved_rate, c.p99_ms, c.error_percent
        ),
        None => "no step stayed within the bounds".into(),
    };
    let machine = match (r.machine.cpus, r.machine.mem_total_bytes) {
        (None, None) => "unknown (an admin's token reads it from the instance)".to_string(),
        (c, m) => format!(
            "{} cores, {} MiB memory",
            c.map_or("?".into(), |c| c.to_string()),
            m.map_or("?".into(), |m| (m / (1024 * 1024)).to_string())
        ),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pepeunit load ramp: {channel}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
tr.over td {{ background: #fde8e8; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head><body>
<h1>Load ramp: {channel}</h1>
<p>Operation: <code>{operation}</code><br>From {started} to {finished}<br>
Bounds: p99 &le; {p99} ms, errors &le; {err}%<br>Machine: {machine}</p>
<p><strong>Capacity: {capacity}</strong><br>Stopped: {stop}</p>
<figure>{rate}</figure>
<figure>{latency}</figure>
<figure>{errors}</figure>
<table><thead><tr><th>step</th><th>offered/s</th><th>achieved/s</th><th>requests</th><th>errors</th><th>errors %</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>within bounds</th></tr></thead>
<tbody>
{rows}</tbody></table>
</body></html>
"#,
        channel = escape(&r.channel),
        operation = escape(&r.operation),
        started = escape(&r.started),
        finished = escape(&r.finished),
        p99 = r.bounds.p99_ms,
        err = r.bounds.max_error_percent,
        machine = escape(&machine),
        capacity = escape(&capacity),
        stop = escape(&r.stop_reason),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ramp: RampLoad,
    }

    fn parse(args: &[&str]) -> Result<RampLoad, clap::Error> {
        let mut all = vec!["ramp", "--url", "http://127.0.0.1:1", "--token", "t"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.ramp)
    }

    #[test]
    fn exactly_one_channel_and_mqtt_needs_a_unit() {
        assert!(parse(&["--rest"]).is_ok());
        assert!(parse(&["--graphql"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--rest", "--graphql"]).is_err());
        assert!(parse(&["--rest", "--mqtt", "--unit", &uuid::Uuid::nil().to_string()]).is_err());
        assert!(parse(&["--mqtt"]).is_err());
        let m = parse(&["--mqtt", "--unit", &uuid::Uuid::nil().to_string()]).unwrap();
        assert_eq!(m.channel(), "mqtt");
        m.validate().unwrap();
    }

    #[test]
    fn planned_rates_grow_by_the_factor_at_least_one_and_stop_at_the_cap() {
        let mut a = parse(&[
            "--rest",
            "--start-rate",
            "1",
            "--factor",
            "1.5",
            "--max-rate",
            "10",
        ])
        .unwrap();
        assert_eq!(a.planned_rates(), [1, 2, 3, 5, 8, 10]);
        a.max_steps = 3;
        assert_eq!(a.planned_rates(), [1, 2, 3]);
        a.max_steps = 30;
        a.start_rate = 10;
        assert_eq!(a.planned_rates(), [10]);
    }

    fn step(offered: f64, p99: f64, errors: f64) -> LoadStep {
        LoadStep {
            offered_rate: offered,
            achieved_rate: offered,
            requests: 10,
            errors: 0,
            error_percent: errors,
            p50_ms: p99,
            p99_ms: p99,
            max_ms: p99,
            seconds: 1.0,
            within_bounds: true,
        }
    }

    fn report(steps: Vec<LoadStep>) -> LoadReport {
        LoadReport {
            channel: "rest".into(),
            operation: "GET <units> & \"more\"".into(),
            started: "a".into(),
            finished: "b".into(),
            bounds: LoadBounds {
                p99_ms: 50.0,
                max_error_percent: 1.0,
            },
            machine: LoadMachine::default(),
            steps,
            stop_reason: "test".into(),
            capacity: None,
        }
    }

    #[test]
    fn capacity_is_the_highest_step_within_both_bounds() {
        let r = report(vec![
            step(10.0, 5.0, 0.0),
            step(20.0, 50.0, 1.0),
            step(40.0, 50.1, 0.0),
            step(80.0, 5.0, 1.5),
        ]);
        assert_eq!(r.capacity_step().unwrap().offered_rate, 20.0);
        assert_eq!(report(vec![step(10.0, 99.0, 0.0)]).capacity_step(), None);
    }

    #[test]
    fn the_page_escapes_text_and_draws_three_charts() {
        let page = html(&report(vec![step(10.0, 5.0, 0.0), step(20.0, 60.0, 0.0)]));
        assert!(page.contains("GET &lt;units&gt; &amp; &quot;more&quot;"));
        assert!(!page.contains("<units>"));
        assert_eq!(page.matches("<svg ").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
        assert!(page.contains("<tr class=\"over\"><td>2</td>"));
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
