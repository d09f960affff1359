//! `pepeunit load soak`: many simulated devices against a running instance for a bounded
//! time, with REST and GraphQL readers at the same time (issue 16, part 4).
//!
//! 1. Setup through the public REST API as an admin user (`--token`): the user's units named
//!    `soak_*` are used; missing ones are created (a registry on `--firmware-url`, a repo, the
//!    units); each unit's env.json gives its device token and broker address.
//! 2. Memory: the instance's resident memory (`/proc/PID/status` of `--pid`, or the
//!    instance's Prometheus text) before any device connects, then with every device
//!    connected and idle: the difference over the devices is the memory per connection.
//! 3. Run: every device publishes QoS 1 (`device.rs`: states, log lines with device times,
//!    node values, abrupt reconnects with resends), the readers (`readers.rs`) request at
//!    fixed rates, the memory is sampled every `--sample-interval` seconds.
//! 4. End: devices stop and wait for their acknowledgements, the instance drains (its
//!    `/metrics/mqtt` queues empty and counters still), then every device sends a final state
//!    and node value (after `PU_STATE_SEND_INTERVAL`, so it is never throttled).
//! 5. Checks, through the public API: every unit holds exactly the log lines its device had
//!    acknowledged (its log count, against the count before the run), its state is the final
//!    one, its node the final value. States in between are thinned by the instance's state
//!    throttle and node values coalesced per batch (both last-value writes), so their
//!    counts are reported from the core's counters, not compared.
//!
//! Exits non-zero when a check fails (sent != stored), a device gave up, a reader got an
//! error or the core refused a message. Loopback only; everything is bounded by the flags.

mod api;
mod device;
mod readers;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use api::{bounded, Api, SoakUnit, UNIT_PREFIX};
use device::{DeviceResult, DeviceSpec, Live, Phase, Plan};
pub use readers::{Latency, ReadKind};

#[derive(Args, Debug, Clone)]
pub struct SoakLoad {
    /// Instance origin on loopback, e.g. http://127.0.0.1:5291
    #[arg(long)]
    pub url: String,
    /// An admin's token (POST /users/auth; the first user of an instance is its admin).
    #[arg(long)]
    pub token: String,
    /// Create the missing units on this firmware git repository (reachable by the instance;
    /// its schema_example.json needs an output topic ending in /pepeunit). Without it, the
    /// admin's existing `soak_*` units are used.
    #[arg(long)]
    pub firmware_url: Option<String>,
    /// Simulated devices, one unit each (1..=10000).
    #[arg(long, default_value_t = 2000)]
    pub devices: usize,
    /// Seconds of publishing (5..=7200).
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Broker HOST:PORT on loopback (default: PU_MQTT_HOST:PU_MQTT_PORT of the units' env.json).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// The instance's process id: memory from /proc/PID/status (default: the instance's
    /// Prometheus text at {url}/pepeunit/metrics).
    #[arg(long)]
    pub pid: Option<u32>,
    /// An external broker's process id, whose memory is sampled as well.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Seconds between two states of a device (1..=3600).
    #[arg(long, default_value_t = 1)]
    pub state_interval: u64,
    /// Seconds between two log messages of a device (1..=3600).
    #[arg(long, default_value_t = 5)]
    pub log_interval: u64,
    /// Lines per log message (1..=20).
    #[arg(long, default_value_t = 2)]
    pub log_lines: usize,
    /// Seconds between two node values of a device (1..=3600).
    #[arg(long, default_value_t = 2)]
    pub node_interval: u64,
    /// Percent of the devices that drop their connection (abruptly, messages in flight) per
    /// minute, and connect again (0..=100).
    #[arg(long, default_value_t = 10.0)]
    pub reconnect_percent: f64,
    /// QoS 1 messages a device has in flight at most (1..=1000).
    #[arg(long, default_value_t = 32)]
    pub max_inflight: usize,
    /// Devices connecting at the same time while they come up (1..=2000).
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// REST reads per second during the run (0..=2000).
    #[arg(long, default_value_t = 20)]
    pub rest_rate: u64,
    /// GraphQL reads per second during the run (0..=2000).
    #[arg(long, default_value_t = 5)]
    pub graphql_rate: u64,
    /// Seconds between two memory samples (1..=60).
    #[arg(long, default_value_t = 5)]
    pub sample_interval: u64,
    /// Seconds the instance may take to store everything after the devices stop (1..=3600).
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
    /// Seed of the devices' randomness (phases, reconnects); default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print progress lines to stderr while running.
    #[arg(long)]
    pub progress: bool,
    /// API prefix of REST.
    #[arg(long, default_value = "/pepeunit/api/v1")]
    pub prefix: String,
    /// GraphQL endpoint path.
    #[arg(long, default_value = "/pepeunit/graphql")]
    pub graphql_path: String,
}

/// One memory sample.
#[derive(Clone, Debug, Serialize)]
pub struct RssSample {
    /// Seconds since the first device started connecting.
    pub t_s: f64,
    pub rss_kib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_kib: Option<u64>,
    pub connected: usize,
    /// Messages acknowledged to the devices so far.
    pub acked: u64,
    pub phase: &'static str,
    /// The machine's 1-minute load average (other work on the machine shows here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// Where the figures come from: `/proc/PID/status` or the instance's Prometheus text.
    pub source: String,
    pub idle_kib: u64,
    /// Every device connected and idle.
    pub connected_kib: u64,
    /// (connected - idle) / devices.
    pub per_device_bytes: u64,
    /// The last sample of the run.
    pub end_of_run_kib: u64,
    /// (end of run - idle) / devices: connections plus everything the load made grow.
    pub per_device_under_load_bytes: u64,
    /// Growth over the last third of the run, from a least-squares line through its samples.
    pub last_third_growth_kib: i64,
    pub last_third_growth_percent: f64,
    /// The last third grew by less than 5% of its own mean.
    pub levels_off: bool,
    pub broker_idle_kib: Option<u64>,
    pub broker_connected_kib: Option<u64>,
    /// (broker connected - broker idle) / devices: where the connections live in external mode.
    pub broker_per_device_bytes: Option<u64>,
    pub broker_end_of_run_kib: Option<u64>,
    pub series: Vec<RssSample>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Messages {
    /// QoS 1 messages the broker acknowledged to the devices (each counted once, however
    /// often it was sent).
    pub states_sent: u64,
    pub log_messages_sent: u64,
    pub log_lines_sent: u64,
    pub node_values_sent: u64,
    /// Log lines the instance holds for the run's units, beyond what they held before.
    pub log_lines_stored: u64,
    /// Units whose stored log lines differ from what their device sent.
    pub log_units_mismatched: usize,
    /// Units whose stored state is their device's final one, and nodes whose value is.
    pub final_states_matched: usize,
    pub final_node_values_matched: usize,
    /// sent == stored: every unit's lines, final state and final node value.
    pub equal: bool,
    /// A few mismatches, for the reader.
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Devices {
    pub devices: usize,
    pub connect_s: f64,
    /// Connections dropped on purpose, lost otherwise, messages sent again after either.
    pub reconnects: u64,
    pub lost: u64,
    pub resent: u64,
    /// Ticks whose message was not sent because the device's window was full.
    pub skipped: u64,
    pub failed: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Reading {
    pub rest: Latency,
    pub graphql: Latency,
    pub by_kind: Vec<(ReadKind, Latency)>,
    /// REST p99 per minute of the run (does latency drift?).
    pub rest_p99_ms_per_minute: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    pub mode: String,
    pub devices: usize,
    pub duration_s: u64,
    pub state_interval_s: u64,
    pub log_interval_s: u64,
    pub log_lines: usize,
    pub node_interval_s: u64,
    pub reconnect_percent_per_minute: f64,
    /// The instance's `PU_STATE_SEND_INTERVAL` (from env.json).
    pub instance_state_interval_s: u64,
    pub units_created: usize,
    pub setup_s: f64,
    pub drain_s: f64,
    /// Offered messages per second over all devices (what the settings ask for).
    pub offered_per_s: f64,
    pub messages: Messages,
    pub memory: Memory,
    pub reading: Reading,
    pub device_stats: Devices,
    /// The machine's 1-minute load average over the run's samples: mean and highest (the
    /// load generator and the instance share the machine, and so may other work).
    pub load1_mean: f64,
    pub load1_max: f64,
    /// The MQTT core's counters over the run (`GET /metrics/mqtt`, after minus before).
    pub core: serde_json::Map<String, Value>,
    /// What failed; empty when the run passed.
    pub problems: Vec<String>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.messages.equal && self.problems.is_empty()
    }
}

pub async fn run_soak(args: SoakLoad) -> anyhow::Result<()> {
    let report = soak(&args).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    print_report(&report);
    if !report.passed() {
        anyhow::bail!(
            "soak failed: {}",
            if report.problems.is_empty() {
                "sent != stored".to_string()
            } else {
                report.problems.join("; ")
            }
        );
    }
    Ok(())
}

fn validate(a: &SoakLoad) -> anyhow::Result<()> {
    let range = |name: &str, v: u64, lo: u64, hi: u64| -> anyhow::Result<()> {
        if !(lo..=hi).contains(&v) {
            anyhow::bail!("--{name} must be between {lo} and {hi}");
        }
        Ok(())
    };
    range("devices", a.devices as u64, 1, 10_000)?;
    range("duration", a.duration, 5, 7200)?;
    range("state-interval", a.state_interval, 1, 3600)?;
    range("log-interval", a.log_interval, 1, 3600)?;
    range("log-lines", a.log_lines as u64, 1, 20)?;
    range("node-interval", a.node_interval, 1, 3600)?;
    range("max-inflight", a.max_inflight as u64, 1, 1000)?;
    range("connect-concurrency", a.connect_concurrency as u64, 1, 2000)?;
    range("rest-rate", a.rest_rate, 0, 2000)?;
    range("graphql-rate", a.graphql_rate, 0, 2000)?;
    range("sample-interval", a.sample_interval, 1, 60)?;
    range("drain-timeout", a.drain_timeout, 1, 3600)?;
    if !(0.0..=100.0).contains(&a.reconnect_percent) {
        anyhow::bail!("--reconnect-percent must be between 0 and 100");
    }
    let url = reqwest::Url::parse(&a.url).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
    if !super::graphql::is_loopback(&url) {
        anyhow::bail!("--url must be a loopback address (127.0.0.0/8, ::1 or localhost)");
    }
    if let Some(m) = &a.mqtt {
        check_broker(m, "--mqtt")?;
    }
    for (flag, pid) in [("--pid", a.pid), ("--broker-pid", a.broker_pid)] {
        if let Some(pid) = pid {
            if proc_rss(pid).is_none() {
                anyhow::bail!("{flag} {pid}: no readable /proc/{pid}/status with VmRSS");
            }
        }
    }
    Ok(())
}

/// `HOST:PORT` with a loopback host.
fn check_broker(addr: &str, what: &str) -> anyhow::Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{what} must be HOST:PORT, got {addr:?}"))?;
    port.parse::<u16>()
        .map_err(|_| anyhow::anyhow!("{what}: bad port in {addr:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        anyhow::bail!("{what} must be on loopback, got {addr:?}");
    }
    Ok(())
}

/// The 1-minute load average of the machine.
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Where the instance's memory is read.
#[derive(Clone)]
enum RssSource {
    Proc(u32),
    Prometheus(Api),
}

impl RssSource {
    async fn kib(&self) -> Option<u64> {
        match self {
            RssSource::Proc(pid) => proc_rss(*pid),
            RssSource::Prometheus(api) => api.prometheus_rss().await.map(|b| b / 1024),
        }
    }

    fn describe(&self) -> String {
        match self {
            RssSource::Proc(pid) => format!("/proc/{pid}/status VmRSS"),
            RssSource::Prometheus(_) => "pepeunit_process_resident_memory_bytes".into(),
        }
    }

    /// The median of three samples a second apart.
    async fn settled(&self) -> anyhow::Result<u64> {
        let mut v = Vec::new();
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            v.push(
                self.kib()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot read the instance's memory"))?,
            );
        }
        v.sort_unstable();
        Ok(v[1])
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// Runs the whole soak and returns its report (errors only for setup failures).
pub async fn soak(args: &SoakLoad) -> anyhow::Result<SoakReport> {
    validate(args)?;
    let api = Api::new(&args.url, &args.prefix, &args.token)?;
    let me = api.user_uuid()?;
    let before = api
        .mqtt_report()
        .await
        .map_err(|e| anyhow::anyhow!("GET /metrics/mqtt (the token must be an admin's): {e}"))?;
    let mode = before["mode"].as_str().unwrap_or("?").to_string();
    let rss = match args.pid {
        Some(pid) => RssSource::Proc(pid),
        None => RssSource::Prometheus(api.clone()),
    };
    rss.kib().await.ok_or_else(|| {
        anyhow::anyhow!(
            "cannot read the instance's memory ({}): give --pid",
            rss.describe()
        )
    })?;
    let broker_rss = |pid: Option<u32>| pid.and_then(proc_rss);

    // setup: units, their devices' settings, the log counts before the run
    let setup_started = Instant::now();
    let (units, created) = units(&api, me, args).await?;
    let envs: Vec<_> = bounded(units.clone(), 16, |u| {
        let api = api.clone();
        async move { api.device_env(u.uuid).await }
    })
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let broker = match &args.mqtt {
        Some(m) => m.clone(),
        None => {
            let m = envs[0].mqtt.clone();
            check_broker(
                &m,
                "the broker address of env.json (PU_MQTT_HOST:PU_MQTT_PORT); give --mqtt",
            )?;
            m
        }
    };
    let instance_state_interval = envs.iter().map(|e| e.state_interval).max().unwrap_or(60);
    let logs_before: Vec<u64> = bounded(units.clone(), 16, |u| {
        let api = api.clone();
        async move { api.log_count(u.uuid).await }
    })
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let setup_s = secs(setup_started.elapsed());
    wait_backend(&api).await?;
    let idle_kib = rss.settled().await?;
    let broker_idle_kib = broker_rss(args.broker_pid);

    // devices
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let plan = Arc::new(Plan {
        broker,
        state_every: args.state_interval,
        log_every: args.log_interval,
        log_lines: args.log_lines,
        node_every: args.node_interval,
        reconnect_per_s: args.reconnect_percent / 100.0 / 60.0,
        max_inflight: args.max_inflight,
        seed,
        final_millis: 1_000_000_000 + seed % 1_000_000_000,
    });
    let specs: Vec<DeviceSpec> = units
        .iter()
        .zip(&envs)
        .enumerate()
        .map(|(index, (u, env))| {
            use crate::domain::topic::Topic;
            DeviceSpec {
                index,
                unit: u.uuid,
                token: env.token.clone(),
                commit: env.commit.clone(),
                state_topic: Topic::state(&env.domain, u.uuid).to_string(),
                log_topic: Topic::log(&env.domain, u.uuid).to_string(),
                node_topic: Topic::node(&env.domain, u.node, &u.node_topic).to_string(),
            }
        })
        .collect();
    let live = Arc::new(Live::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let ramp = Arc::new(Semaphore::new(args.connect_concurrency));
    let connect_started = Instant::now();
    let tasks: Vec<_> = specs
        .iter()
        .cloned()
        .map(|spec| {
            tokio::spawn(device::run(
                spec,
                plan.clone(),
                live.clone(),
                phase_rx.clone(),
                ramp.clone(),
            ))
        })
        .collect();
    let (sample_stop, sample_stop_rx) = watch::channel(false);
    let (phase_name_tx, phase_name) = watch::channel("connect");
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample(
        samples.clone(),
        rss.clone(),
        args.broker_pid,
        live.clone(),
        Duration::from_secs(args.sample_interval),
        connect_started,
        phase_name,
        sample_stop_rx,
        args.progress,
    ));
    let n = specs.len();
    let everyone = wait_until(Duration::from_secs(300), || {
        live.connected.load(Relaxed) + live.finished.load(Relaxed) >= n
    })
    .await;
    let connect_s = secs(connect_started.elapsed());
    let mut problems = Vec::new();
    if !everyone || live.finished.load(Relaxed) > 0 {
        problems.push(format!(
            "only {} of {n} devices connected",
            live.connected.load(Relaxed)
        ));
    }
    let _ = phase_name_tx.send("idle");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connected_kib = rss.settled().await?;
    let broker_connected_kib = broker_rss(args.broker_pid);

    // the run, with the readers
    let _ = phase_name_tx.send("run");
    let _ = phase_tx.send(Phase::Run);
    let run_started = Instant::now();
    let (readers_stop, readers_stop_rx) = watch::channel(false);
    let (reads, readers) = readers::start(
        &api,
        format!("{}{}", api.origin, args.graphql_path),
        units.iter().map(|u| (u.uuid, u.node)).collect(),
        (args.rest_rate, args.graphql_rate),
        readers_stop_rx,
        run_started,
        seed,
    );
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let _ = readers_stop.send(true);
    let end_of_run_kib = rss.kib().await.unwrap_or(connected_kib);
    let broker_end_of_run_kib = broker_rss(args.broker_pid);

    // the end: acknowledgements, the instance drains, the final messages
    let _ = phase_name_tx.send("drain");
    let _ = phase_tx.send(Phase::Drain);
    let drain_started = Instant::now();
    let drain_for = Duration::from_secs(args.drain_timeout);
    if !wait_until(Duration::from_secs(120), || live.drained.load(Relaxed) >= n).await {
        problems.push(format!(
            "{} devices still had unacknowledged messages 120 s after the run",
            n - live.drained.load(Relaxed)
        ));
    }
    let _ = readers.await;
    core_idle(&api, drain_for).await;
    tokio::time::sleep(Duration::from_secs(instance_state_interval + 1)).await;
    let _ = phase_name_tx.send("final");
    let _ = phase_tx.send(Phase::Final);
    let mut results: Vec<DeviceResult> = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| DeviceResult {
            error: Some(format!("device task: {e}")),
            ..DeviceResult::default()
        }));
    }
    core_idle(&api, drain_for).await;

    // the checks, repeated while the instance may still be storing (bounded)
    let mut messages = check(&api, me, &units, &results, &logs_before, &plan, &specs).await?;
    while !messages.equal && drain_started.elapsed() < drain_for {
        tokio::time::sleep(Duration::from_secs(2)).await;
        messages = check(&api, me, &units, &results, &logs_before, &plan, &specs).await?;
    }
    let drain_s = secs(drain_started.elapsed());
    let _ = sample_stop.send(true);
    if let Err(e) = sampler.await {
        problems.push(format!("the memory sampler stopped: {e}"));
    }
    let series = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));

    let after = api.mqtt_report().await?;
    let core = counter_delta(&before["counters"], &after["counters"]);
    for key in ["invalid", "oversized", "batch_errors"] {
        if core.get(key).and_then(Value::as_i64).unwrap_or(0) > 0 {
            problems.push(format!("the core counted {key}: {}", core[key]));
        }
    }
    let failed: Vec<&DeviceResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if let Some(first) = failed.first() {
        problems.push(format!(
            "{} devices failed; first: {}",
            failed.len(),
            first.error.as_deref().unwrap_or_default()
        ));
    }
    let first_error = reads
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let reads = reads.all.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let reading = reading(&reads, first_error);
    if reading.rest.errors + reading.graphql.errors > 0 {
        problems.push(format!(
            "{} reads failed; first: {}",
            reading.rest.errors + reading.graphql.errors,
            reading.first_error.clone().unwrap_or_default()
        ));
    }
    let sum = |f: fn(&DeviceResult) -> u64| results.iter().map(f).sum::<u64>();
    let per_s = |every: u64| n as f64 / every as f64;
    let loads: Vec<f64> = series
        .iter()
        .filter(|s| s.phase == "run")
        .filter_map(|s| s.load1)
        .collect();
    let load1_mean = if loads.is_empty() {
        0.0
    } else {
        (loads.iter().sum::<f64>() / loads.len() as f64 * 100.0).round() / 100.0
    };
    let load1_max = loads.iter().copied().fold(0.0, f64::max);
    let memory = memory(
        rss.describe(),
        (idle_kib, connected_kib, end_of_run_kib),
        (broker_idle_kib, broker_connected_kib, broker_end_of_run_kib),
        n,
        series,
    );
    Ok(SoakReport {
        mode,
        devices: n,
        duration_s: args.duration,
        state_interval_s: args.state_interval,
        log_interval_s: args.log_interval,
        log_lines: args.log_lines,
        node_interval_s: args.node_interval,
        reconnect_percent_per_minute: args.reconnect_percent,
        instance_state_interval_s: instance_state_interval,
        units_created: created,
        setup_s,
        drain_s,
        offered_per_s: per_s(args.state_interval)
            + per_s(args.log_interval)
            + per_s(args.node_interval),
        messages,
        memory,
        reading,
        device_stats: Devices {
            devices: n,
            connect_s,
            reconnects: sum(|r| r.reconnects),
            lost: sum(|r| r.lost),
            resent: sum(|r| r.resent),
            skipped: sum(|r| r.skipped),
            failed: failed.len(),
        },
        load1_mean,
        load1_max,
        core,
        problems,
    })
}

/// The first `--devices` `soak_*` units of the user, created as needed; (units, created).
async fn units(api: &Api, me: Uuid, args: &SoakLoad) -> anyhow::Result<(Vec<SoakUnit>, usize)> {
    let mut units = api.soak_units(me).await?;
    let missing = args.devices.saturating_sub(units.len());
    if missing > 0 {
        let Some(firmware) = &args.firmware_url else {
            anyhow::bail!(
                "the user has {} units named {UNIT_PREFIX}*, the soak needs {}: give --firmware-url to create them",
                units.len(),
                args.devices
            );
        };
        let tag = Uuid::new_v4().simple().to_string()[..6].to_string();
        let repo = match units.first() {
            Some(u) => u.repo,
            None => api.create_repo(firmware, &tag).await?,
        };
        let names: Vec<String> = (0..missing)
            .map(|i| format!("{UNIT_PREFIX}{tag}_{i:05}"))
            .collect();
        bounded(names, 8, |name| {
            let api = api.clone();
            async move { api.create_unit(repo, &name).await }
        })
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        units = api.soak_units(me).await?;
        if units.len() < args.devices {
            anyhow::bail!("created the units, but only {} are listed", units.len());
        }
    }
    units.truncate(args.devices);
    Ok((units, missing))
}

/// Waits (bounded) until the instance's MQTT core is connected and subscribed.
async fn wait_backend(api: &Api) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.mqtt_report().await?;
        if r["backend_connected"] == true {
            return Ok(());
        }
        if Instant::now() > until {
            anyhow::bail!("the instance's MQTT core is not connected to its broker");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Waits until the core's queues are empty and its counters stood still for a second
/// (bounded by `limit`).
async fn core_idle(api: &Api, limit: Duration) {
    let until = Instant::now() + limit;
    let mut last: Option<Value> = None;
    while Instant::now() < until {
        if let Ok(r) = api.mqtt_report().await {
            let empty = r["queue_depths"]
                .as_array()
                .is_some_and(|q| q.iter().all(|d| d == 0));
            if empty && last.as_ref() == Some(&r["counters"]) {
                return;
            }
            last = Some(r["counters"].clone());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn counter_delta(before: &Value, after: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(a) = after.as_object() {
        for (k, v) in a {
            let d = v.as_i64().unwrap_or(0) - before[k].as_i64().unwrap_or(0);
            out.insert(k.clone(), Value::from(d));
        }
    }
    out
}

/// Compares what the devices had acknowledged with what the instance holds.
async fn check(
    api: &Api,
    me: Uuid,
    units: &[SoakUnit],
    results: &[DeviceResult],
    logs_before: &[u64],
    plan: &Plan,
    specs: &[DeviceSpec],
) -> anyhow::Result<Messages> {
    let counts: Vec<u64> = bounded(units.to_vec(), 16, |u| {
        let api = api.clone();
        async move { api.log_count(u.uuid).await }
    })
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let now: std::collections::HashMap<Uuid, SoakUnit> = api
        .soak_units(me)
        .await?
        .into_iter()
        .map(|u| (u.uuid, u))
        .collect();
    let mut m = Messages::default();
    for (i, r) in results.iter().enumerate() {
        m.states_sent += r.states_acked;
        m.log_messages_sent += r.logs_acked;
        m.log_lines_sent += r.lines_acked;
        m.node_values_sent += r.nodes_acked;
        let name = &units[i].name;
        let stored = counts[i].saturating_sub(logs_before[i]);
        m.log_lines_stored += stored;
        if stored != r.lines_acked {
            m.log_units_mismatched += 1;
            if m.examples.len() < 5 {
                m.examples.push(format!(
                    "{name}: {} log lines sent, {stored} stored",
                    r.lines_acked
                ));
            }
        }
        let Some(held) = now.get(&units[i].uuid) else {
            m.examples.push(format!("{name}: no longer listed"));
            continue;
        };
        if r.final_acked && held.unit_state["millis"].as_f64() == Some(plan.final_millis as f64) {
            m.final_states_matched += 1;
        } else if m.examples.len() < 5 {
            m.examples.push(format!(
                "{name}: state {} is not the final one (millis {})",
                held.unit_state, plan.final_millis
            ));
        }
        let value = specs[i].final_value(plan);
        if r.final_acked && held.node_state.as_str() == Some(value.as_str()) {
            m.final_node_values_matched += 1;
        } else if m.examples.len() < 5 {
            m.examples.push(format!(
                "{name}: node value {} is not the final one ({value})",
                held.node_state
            ));
        }
    }
    m.equal = m.log_units_mismatched == 0
        && m.log_lines_stored == m.log_lines_sent
        && m.final_states_matched == units.len()
        && m.final_node_values_matched == units.len();
    Ok(m)
}

/// Samples memory into `out` until `stop` (kept outside the task, so that nothing sampled is
/// lost whatever happens to it).
#[allow(clippy::too_many_arguments)]
async fn sample(
    out: Arc<std::sync::Mutex<Vec<RssSample>>>,
    rss: RssSource,
    broker_pid: Option<u32>,
    live: Arc<Live>,
    every: Duration,
    started: Instant,
    phase: watch::Receiver<&'static str>,
    mut stop: watch::Receiver<bool>,
    progress: bool,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let Some(kib) = rss.kib().await else { continue };
        let s = RssSample {
            t_s: secs(started.elapsed()),
            rss_kib: kib,
            broker_rss_kib: broker_pid.and_then(proc_rss),
            connected: live.connected.load(Relaxed),
            acked: live.acked.load(Relaxed),
            phase: *phase.borrow(),
            load1: load1(),
        };
        if progress {
            use std::io::Write;
            // a full disk or a closed terminal must not end the sampling
            let _ = writeln!(
                std::io::stderr(),
                "soak: t={:.0}s phase={} connected={} acked={} reconnects={} rss={:.1} MiB load={}",
                s.t_s,
                s.phase,
                s.connected,
                s.acked,
                live.reconnects.load(Relaxed),
                s.rss_kib as f64 / 1024.0,
                s.load1.map_or("?".into(), |l| format!("{l:.2}"))
            );
        }
        out.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }
}

fn reading(reads: &[readers::Read], first_error: Option<String>) -> Reading {
    let rest = Latency::of(reads.iter().filter(|r| r.kind.is_rest()));
    let graphql = Latency::of(reads.iter().filter(|r| !r.kind.is_rest()));
    let by_kind = readers::REST
        .iter()
        .chain(readers::GRAPHQL.iter())
        .map(|k| (*k, Latency::of(reads.iter().filter(|r| r.kind == *k))))
        .filter(|(_, l)| l.requests > 0)
        .collect();
    let minutes = reads
        .iter()
        .map(|r| r.at_ms / 60_000)
        .max()
        .map_or(0, |m| m + 1);
    let rest_p99_ms_per_minute = (0..minutes)
        .map(|m| {
            Latency::of(
                reads
                    .iter()
                    .filter(|r| r.kind.is_rest() && r.at_ms / 60_000 == m),
            )
            .p99_ms
        })
        .collect();
    Reading {
        rest,
        graphql,
        by_kind,
        rest_p99_ms_per_minute,
        first_error,
    }
}

fn memory(
    source: String,
    (idle, connected, end): (u64, u64, u64),
    (b_idle, b_connected, b_end): (Option<u64>, Option<u64>, Option<u64>),
    devices: usize,
    series: Vec<RssSample>,
) -> Memory {
    let per = |kib: u64| (kib.saturating_sub(idle) * 1024) / devices.max(1) as u64;
    // the last third of the run phase, as a least-squares line
    let run: Vec<&RssSample> = series.iter().filter(|s| s.phase == "run").collect();
    let (mut growth, mut percent) = (0i64, 0.0);
    if run.len() >= 3 {
        let t0 = run[0].t_s;
        let t_end = run[run.len() - 1].t_s;
        let from = t0 + (t_end - t0) * 2.0 / 3.0;
        let last: Vec<(f64, f64)> = run
            .iter()
            .filter(|s| s.t_s >= from)
            .map(|s| (s.t_s, s.rss_kib as f64))
            .collect();
        if last.len() >= 2 {
            let n = last.len() as f64;
            let (mt, mr) = (
                last.iter().map(|p| p.0).sum::<f64>() / n,
                last.iter().map(|p| p.1).sum::<f64>() / n,
            );
            let cov: f64 = last.iter().map(|p| (p.0 - mt) * (p.1 - mr)).sum();
            let var: f64 = last.iter().map(|p| (p.0 - mt).powi(2)).sum();
            let slope = if var > 0.0 { cov / var } else { 0.0 };
            let span = last[last.len() - 1].0 - last[0].0;
            growth = (slope * span).round() as i64;
            percent = ((growth as f64 / mr) * 1000.0).round() / 10.0;
        }
    }
    Memory {
        source,
        idle_kib: idle,
        connected_kib: connected,
        per_device_bytes: per(connected),
        end_of_run_kib: end,
        per_device_under_load_bytes: per(end),
        last_third_growth_kib: growth,
        last_third_growth_percent: percent,
        levels_off: percent < 5.0,
        broker_idle_kib: b_idle,
        broker_connected_kib: b_connected,
        broker_per_device_bytes: b_idle
            .zip(b_connected)
            .map(|(i, c)| c.saturating_sub(i) * 1024 / devices.max(1) as u64),
        broker_end_of_run_kib: b_end,
        series,
    }
}

pub fn print_report(r: &SoakReport) {
    let m = &r.messages;
    let mem = &r.memory;
    let d = &r.device_stats;
    println!(
        "soak: {} mode, {} devices for {} s (state every {} s, {} log lines every {} s, node value every {} s: {:.0} messages/s offered; {}% reconnect per minute); instance PU_STATE_SEND_INTERVAL {} s",
        r.mode, r.devices, r.duration_s, r.state_interval_s, r.log_lines, r.log_interval_s,
        r.node_interval_s, r.offered_per_s, r.reconnect_percent_per_minute, r.instance_state_interval_s
    );
    println!(
        "setup {:.1} s ({} units created), connect {:.1} s, drain and checks {:.1} s; machine load average during the run {:.2} (highest {:.2})",
        r.setup_s, r.units_created, d.connect_s, r.drain_s, r.load1_mean, r.load1_max
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "messages (QoS 1, acknowledged)", "sent", "stored"
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "log lines", m.log_lines_sent, m.log_lines_stored
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "final states (one per device)", r.devices, m.final_states_matched
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "final node values", r.devices, m.final_node_values_matched
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "states (stored, coalesced; throttled)",
        m.states_sent,
        core_sum(&r.core, &["states_stored", "states_throttled"])
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "node values (coalesced per batch)",
        m.node_values_sent,
        core_sum(&r.core, &["node_values_stored"])
    );
    println!("{:<34} {:>12}", "log messages", m.log_messages_sent);
    println!(
        "sent == stored: {}{}",
        if m.equal { "yes" } else { "NO" },
        if m.examples.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.examples.join("; "))
        }
    );
    println!(
        "devices: {} reconnects on purpose, {} connections lost, {} messages resent, {} ticks skipped (window full), {} failed",
        d.reconnects, d.lost, d.resent, d.skipped, d.failed
    );
    println!(
        "memory ({}): idle {:.1} MiB, {} devices connected {:.1} MiB = {:.1} KiB per device; end of run {:.1} MiB ({:.1} KiB per device); last third {:+} KiB ({:+.1}%): {}",
        mem.source,
        mem.idle_kib as f64 / 1024.0,
        r.devices,
        mem.connected_kib as f64 / 1024.0,
        mem.per_device_bytes as f64 / 1024.0,
        mem.end_of_run_kib as f64 / 1024.0,
        mem.per_device_under_load_bytes as f64 / 1024.0,
        mem.last_third_growth_kib,
        mem.last_third_growth_percent,
        if mem.levels_off { "levels off" } else { "still growing" }
    );
    if let (Some(i), Some(c), Some(e)) = (
        mem.broker_idle_kib,
        mem.broker_connected_kib,
        mem.broker_end_of_run_kib,
    ) {
        println!(
            "broker memory: idle {:.1} MiB, connected {:.1} MiB = {:.1} KiB per device, end of run {:.1} MiB",
            i as f64 / 1024.0,
            c as f64 / 1024.0,
            mem.broker_per_device_bytes.unwrap_or(0) as f64 / 1024.0,
            e as f64 / 1024.0
        );
    }
    println!(
        "{:<16} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "reads", "requests", "errors", "p50 ms", "p99 ms", "max ms"
    );
    let rd = &r.reading;
    for (name, l) in [("REST", &rd.rest), ("GraphQL", &rd.graphql)]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l))
        .chain(rd.by_kind.iter().map(|(k, l)| (format!("  {k:?}"), l)))
    {
        println!(
            "{:<16} {:>9} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            name, l.requests, l.errors, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    println!("REST p99 per minute (ms): {:?}", rd.rest_p99_ms_per_minute);
    let keys = [
        "received",
        "processed",
        "redelivered",
        "log_duplicates_skipped",
        "queue_full",
        "batches",
        "log_writes",
        "acked",
    ];
    println!(
        "core: {}",
        keys.iter()
            .map(|k| format!("{k} {}", r.core.get(*k).cloned().unwrap_or(Value::Null)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
}

fn core_sum(core: &serde_json::Map<String, Value>, keys: &[&str]) -> i64 {
    keys.iter()
        .map(|k| core.get(*k).and_then(Value::as_i64).unwrap_or(0))
        .sum()
}
