//! `pepeunit load mqtt`: throughput of the MQTT core against the broker itself (SPEC §2).
//!
//! Self-contained: starts an instance with the embedded broker in-process on a temporary
//! SQLite database, creates `--units` units (each with one Output node), then runs for
//! `--duration` seconds: one connection per unit publishing as fast as it can, round-robin on
//! its `state`, `log` and node topic (QoS 0, or QoS 1 with `--qos 1`), while a bare subscriber on the core's two topic
//! filters counts what the broker delivers. Reports, for the same window on the same broker:
//! messages published, received by the bare subscriber, and fully processed by the core
//! (parsed, routed, throttled or stored), and their ratio. Everything is on loopback and stops
//! by itself.
//!
//! With `--pipes` every node runs a data pipe (the policies given, round-robin over the nodes)
//! and the report adds what the pipelines accepted, the rows they stored and their memory;
//! `--nodes-per-unit` gives each unit more nodes (e.g. 2,000 units x 5 = 10k pipelines).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{
    self, GitPlatform, Topic, UnitNodeType, UserRole, UserStatus, VisibilityLevel,
};
use crate::server::RunningInstance;
use crate::service::Instance;
use crate::store;

#[derive(Args, Debug, Clone)]
pub struct MqttLoad {
    /// Units (= publishing connections).
    #[arg(long, default_value_t = 32)]
    pub units: usize,
    /// Seconds to publish (1..=300).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Shards of the core (default: cores).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Which topics to publish to, comma-separated: state, log, node.
    #[arg(long, default_value = "state,log,node")]
    pub topics: String,
    /// QoS of the publishes: 0, or 1 (each publisher waits for its PUBACKs, which the
    /// embedded broker sends once the message is committed; rumqttc keeps up to 100 in flight).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Total messages per second over all publishers, paced every 10 ms (default: as fast as
    /// they can, which overloads the broker and makes it drop QoS 0 messages).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Instead of MQTT: store this many log lines straight through the log store (batches of
    /// 2048) and report lines/s, the ceiling of log ingest on this database.
    #[arg(long)]
    pub store_only: Option<usize>,
    /// Nodes per unit (1..=50); the publishers go round-robin over their nodes' topics.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_unit: usize,
    /// Data pipes on every node, comma-separated policies assigned round-robin over the
    /// nodes: last_value, n_records, time_window, aggregation, or `all` for the four.
    #[arg(long)]
    pub pipes: Option<String>,
    /// Store unit logs in ClickHouse at this URL (http://host:8123; a fresh database, dropped
    /// at the end) instead of the temporary SQLite database.
    #[arg(long)]
    pub clickhouse_url: Option<String>,
    /// Per-topic throttling (SPEC §8): `off` (default: the benchmark measures capacity), or
    /// `pass`: the default rules' patterns with limits no run reaches, so every message pays
    /// the lookup and the bucket but none is dropped (the cost of throttling).
    #[arg(long, default_value = "off")]
    pub throttle: String,
    /// Load metering (SPEC §7): `on` (default, as an instance runs) or `off`.
    #[arg(long, default_value = "on")]
    pub metering: String,
}

/// The default rules' patterns with limits no benchmark reaches (`--throttle pass`).
const PASS_RULES: &str = "{domain}/output_base_topic/+/log/pepeunit=1000000:1000000,\
{domain}/+/+/+/pepeunit=1000000:1000000,{domain}/+/pepeunit=1000000:1000000,\
{domain}/+=1000000:1000000";

pub async fn run_mqtt(args: MqttLoad) -> anyhow::Result<()> {
    if !(1..=300).contains(&args.duration) {
        anyhow::bail!("--duration must be between 1 and 300 seconds");
    }
    if args
        .store_only
        .is_some_and(|n| !(1..=10_000_000).contains(&n))
    {
        anyhow::bail!("--store-only must be between 1 and 10000000 lines");
    }
    if args.rate == Some(0) {
        anyhow::bail!("--rate must be positive");
    }
    if args.qos > 1 {
        anyhow::bail!("--qos takes 0 or 1");
    }
    if !(1..=2000).contains(&args.units) {
        anyhow::bail!("--units must be between 1 and 2000");
    }
    let throttle_rules = match args.throttle.as_str() {
        "off" => "off",
        "pass" => PASS_RULES,
        _ => anyhow::bail!("--throttle takes off or pass"),
    };
    let metering = match args.metering.as_str() {
        "on" => "true",
        "off" => "false",
        _ => anyhow::bail!("--metering takes on or off"),
    };
    let kinds: Vec<&str> = args.topics.split(',').map(str::trim).collect();
    if kinds.is_empty() || kinds.iter().any(|k| !["state", "log", "node"].contains(k)) {
        anyhow::bail!("--topics takes state, log and node");
    }
    if !(1..=50).contains(&args.nodes_per_unit) {
        anyhow::bail!("--nodes-per-unit must be between 1 and 50");
    }
    let pipes = match &args.pipes {
        Some(p) => pipe_configs(p)?,
        None => Vec::new(),
    };
    let data = std::env::temp_dir().join(format!("pepeunit-load-{}", Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut vars = vec![
        ("PU_DATA_DIR".to_string(), data.display().to_string()),
        ("PU_HTTP_BIND".into(), "127.0.0.1:0".into()),
        ("PU_MQTT_BIND".into(), format!("127.0.0.1:{port}")),
        ("PU_REGISTRY_SYNC_INTERVAL".into(), "86400".into()),
        ("PU_THROTTLE_RULES".into(), throttle_rules.into()),
        ("PU_LOAD_METERING".into(), metering.into()),
    ];
    if let Some(n) = args.shards {
        vars.push(("PU_MQTT_SHARDS".into(), n.to_string()));
    }
    if let Some(url) = &args.clickhouse_url {
        vars.push(("PU_CLICKHOUSE_URL".into(), url.clone()));
        vars.push((
            "PU_CLICKHOUSE_DATABASE".into(),
            format!("pepeunit_load_{}", Uuid::new_v4().simple()),
        ));
    }
    let config = Config::from_vars(vars)?;
    let running = RunningInstance::start(config).await?;
    let result = match args.store_only {
        Some(lines) => store_only(&running.instance, lines).await,
        None => measure(&running.instance, port, &args, &kinds, &pipes).await,
    };
    let logs = running.instance.logs.clone();
    running.stop().await?;
    if let crate::telemetry::LogStore::ClickHouse(c) = &logs {
        if let Err(e) = c.drop_database().await {
            eprintln!("could not drop the load database: {}", e);
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// The benchmark's data pipe per policy: numbers, no rate limit, so every value reaches the
/// policy (the most work a pipeline does). TimeWindow keeps 10 minutes; Aggregation is a
/// sliding 60 s window moving every 10 s.
const BENCH_PIPES: [(&str, &str); 4] = [
    ("last_value", "policy_type: LastValue"),
    ("n_records", "policy_type: NRecords\n  n_records_count: 100"),
    ("time_window", "policy_type: TimeWindow\n  time_window_size: 600"),
    (
        "aggregation",
        "policy_type: Aggregation\n  time_window_size: 60\n  time_window_step: 10\n  aggregation_functions: Avg",
    ),
];

/// The stored configs (JSON, as the node rows keep them) for `--pipes`.
fn pipe_configs(list: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<&str> = match list.trim() {
        "all" => BENCH_PIPES.iter().map(|(n, _)| *n).collect(),
        l => l.split(',').map(str::trim).collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let Some((_, policy)) = BENCH_PIPES.iter().find(|(n, _)| *n == name) else {
            anyhow::bail!(
                "--pipes takes last_value, n_records, time_window, aggregation or all, not {name:?}"
            );
        };
        let yaml = format!(
            "active_period:\n  type: Permanent\nfilters:\n  type_input_value: Number\n  max_rate: 0\n  max_size: 100\nprocessing_policy:\n  {policy}\n"
        );
        let config = crate::domain::datapipe::config::DataPipeConfig::parse_yaml(&yaml, 65_535)
            .map_err(|e| anyhow::anyhow!("benchmark pipe {name}: {e:?}"))?;
        out.push(config.to_stored_json());
    }
    Ok(out)
}

/// A user, a registry row, a repo and `n` units with one Output node each, straight into the
/// store (no git needed: the benchmark never asks for a version).
pub(crate) async fn seed(instance: &Instance, n: usize) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    Ok(seed_nodes(instance, n, 1, &[])
        .await?
        .into_iter()
        .map(|(unit, nodes)| (unit, nodes[0]))
        .collect())
}

/// [`seed`] with `per_unit` Output nodes per unit (topics `temp{i}/pepeunit`), the `pipes`
/// configs (stored JSON) assigned round-robin over all nodes when there are any.
async fn seed_nodes(
    instance: &Instance,
    n: usize,
    per_unit: usize,
    pipes: &[String],
) -> anyhow::Result<Vec<(Uuid, Vec<Uuid>)>> {
    let now = domain::now();
    let pool = instance.pool();
    let user = store::users::User {
        uuid: Uuid::new_v4(),
        role: UserRole::Admin,
        status: UserStatus::Verified,
        login: "load_admin".into(),
        grafana_org_name: Uuid::new_v4(),
        grafana_org_id: None,
        create_datetime: now.clone(),
        hashed_password: String::new(),
        cipher_dynamic_salt: String::new(),
        telegram_chat_id: None,
        telegram_language: None,
    };
    store::users::insert(pool, &user).await?;
    let registry = store::registries::RepositoryRegistry {
        uuid: Uuid::new_v4(),
        platform: GitPlatform::Gitlab,
        repository_url: "http://127.0.0.1:9/load/firmware.git".into(),
        is_public_repository: true,
        releases_data: None,
        local_repository_size: 0,
        sync_status: None,
        sync_error: None,
        sync_last_datetime: None,
        create_datetime: now.clone(),
        last_update_datetime: now.clone(),
        creator_uuid: Some(user.uuid),
        branches: Vec::new(),
    };
    store::registries::insert(pool, &registry).await?;
    let repo = store::repos::Repo {
        uuid: Uuid::new_v4(),
        visibility_level: VisibilityLevel::Public,
        name: "load_repo".into(),
        create_datetime: now.clone(),
        default_branch: Some("main".into()),
        is_auto_update_repo: false,
        default_commit: None,
        is_only_tag_update: false,
        is_compilable_repo: false,
        last_update_datetime: now.clone(),
        creator_uuid: user.uuid,
        repository_registry_uuid: registry.uuid,
    };
    store::repos::insert(pool, &repo).await?;
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let unit = store::units::Unit {
            uuid: Uuid::new_v4(),
            visibility_level: VisibilityLevel::Public,
            name: format!("load_unit_{i}"),
            create_datetime: now.clone(),
            is_auto_update_from_repo_unit: false,
            target_firmware_platform: None,
            repo_branch: Some("main".into()),
            repo_commit: Some("0".repeat(40)),
            unit_state: None,
            current_commit_version: None,
            last_update_datetime: now.clone(),
            creator_uuid: user.uuid,
            repo_uuid: repo.uuid,
            firmware_update_status: None,
            firmware_update_error: None,
            last_firmware_update_datetime: None,
            alert_log_level: crate::domain::LogLevel::Error,
            alerts_muted_until: None,
            unit_nodes: Vec::new(),
            cipher_env: None,
            cipher_state_storage: None,
            token_generation: 0,
        };
        store::units::insert(&mut *tx, &unit).await?;
        let mut nodes = Vec::with_capacity(per_unit);
        for k in 0..per_unit {
            let pipe = (!pipes.is_empty()).then(|| pipes[(i * per_unit + k) % pipes.len()].clone());
            let node = store::unit_nodes::UnitNode {
                uuid: Uuid::new_v4(),
                node_type: UnitNodeType::Output,
                visibility_level: VisibilityLevel::Public,
                is_rewritable_input: false,
                max_connections: 10,
                topic_name: node_topic_name(k),
                last_update_datetime: now.clone(),
                is_data_pipe_active: pipe.is_some(),
                data_pipe_status: pipe.as_ref().map(|_| {
                    crate::domain::datapipe::DataPipeStatus::Active
                        .as_str()
                        .into()
                }),
                data_pipe_yml: pipe,
                data_pipe_error: None,
                create_datetime: now.clone(),
                state: None,
                unit_uuid: unit.uuid,
                creator_uuid: user.uuid,
            };
            store::unit_nodes::insert(&mut *tx, &node).await?;
            nodes.push(node.uuid);
        }
        out.push((unit.uuid, nodes));
    }
    tx.commit().await?;
    Ok(out)
}

/// The topic name of a unit's `k`-th seeded node (the first is `temp/pepeunit`).
fn node_topic_name(k: usize) -> String {
    match k {
        0 => "temp/pepeunit".into(),
        k => format!("temp{k}/pepeunit"),
    }
}

/// This process's resident memory, from /proc (None elsewhere).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    crate::observe::system::field(&status, "VmRSS")
}

async fn store_only(instance: &Instance, lines: usize) -> anyhow::Result<()> {
    let units = seed(instance, 32).await?;
    let start = Instant::now();
    let mut stored = 0;
    while stored < lines {
        let n = (lines - stored).min(2048);
        let mut batch = crate::service::ingest::IngestBatch::default();
        for i in 0..n {
            let line = crate::domain::payload::ReportedLog {
                level: domain::LogLevel::Info,
                text: format!("load line {}", stored + i),
                create_datetime: None,
            };
            batch.add_logs(instance, units[i % units.len()].0, vec![line], false);
        }
        instance.store_unit_logs(batch.logs.lines).await?;
        stored += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"store_only_lines": lines, "seconds": (secs * 100.0).round() / 100.0, "lines_per_s": (lines as f64 / secs).round()})
    );
    Ok(())
}

fn options(id: &str, port: u16, token: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(token, "");
    o.set_keep_alive(Duration::from_secs(60));
    o.set_request_channel_capacity(1000);
    o
}

async fn measure(
    instance: &Instance,
    port: u16,
    args: &MqttLoad,
    kinds: &[&str],
    pipes: &[String],
) -> anyhow::Result<()> {
    let units = seed_nodes(instance, args.units, args.nodes_per_unit, pipes).await?;
    let rss_before = rss_bytes();
    let domain = instance.config.domain.clone();
    let stop = Arc::new(AtomicBool::new(false));

    // the bare subscriber: same filters as the core, counts and does nothing else
    let bare = Arc::new(AtomicU64::new(0));
    let backend = instance.tokens.backend_token(&domain);
    let (sub, mut sub_loop) =
        AsyncClient::new(options("load-bare-subscriber", port, &backend), 100);
    for f in crate::domain::topic::core_filters(&domain) {
        sub.subscribe(f, QoS::AtMostOnce).await?;
    }
    let bare_count = bare.clone();
    let sub_stop = stop.clone();
    let sub_task = tokio::spawn(async move {
        while !sub_stop.load(Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), sub_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    bare_count.fetch_add(1, Relaxed);
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    eprintln!("bare subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let qos = if args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let mut publishers = Vec::new();
    for (i, (unit, nodes)) in units.iter().enumerate() {
        let token = instance.tokens.unit_token(*unit);
        let (client, mut eventloop) =
            AsyncClient::new(options(&unit.to_string(), port, &token), 1000);
        // (topic, payload); a node's payload is None: a number that changes every time
        let mut topics: Vec<(String, Option<String>)> = Vec::new();
        for k in kinds {
            match *k {
                "state" => topics.push((
                    Topic::state(&domain, *unit).to_string(),
                    Some(
                        json!({"pu_commit_version": "0".repeat(40), "millis": i, "mem_free": 1000})
                            .to_string(),
                    ),
                )),
                "log" => topics.push((
                    Topic::log(&domain, *unit).to_string(),
                    Some(
                        json!({"level": "Info", "text": format!("load line from unit {i}")})
                            .to_string(),
                    ),
                )),
                _ => topics.extend(nodes.iter().enumerate().map(|(k, node)| {
                    (
                        Topic::node(&domain, *node, &node_topic_name(k)).to_string(),
                        None,
                    )
                })),
            }
        }
        let stop = stop.clone();
        let (published, acked) = (published.clone(), acked.clone());
        let (rate, units) = (args.rate, args.units);
        publishers.push(tokio::spawn(async move {
            // the event loop writes what the client queues and counts the PUBACKs
            let driver = tokio::spawn(async move {
                while let Ok(event) = eventloop.poll().await {
                    if let Event::Incoming(Packet::PubAck(_)) = event {
                        acked.fetch_add(1, Relaxed);
                    }
                }
            });
            let mut n = 0usize;
            // messages per 10 ms tick for this publisher (fractions carried over)
            let per_tick = rate.map(|r| r as f64 / units as f64 / 100.0);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut credit = 0.0;
            'run: while !stop.load(Relaxed) {
                let burst = match per_tick {
                    Some(p) => {
                        tick.tick().await;
                        credit += p;
                        let k = credit.floor();
                        credit -= k;
                        k as usize
                    }
                    None => 1,
                };
                for _ in 0..burst {
                    let (topic, payload) = &topics[n % topics.len()];
                    let payload = match payload {
                        Some(p) => p.clone(),
                        None => format!("{}.{}", 20 + i % 10, n % 100),
                    };
                    if client.publish(topic, qos, false, payload).await.is_err() {
                        break 'run;
                    }
                    published.fetch_add(1, Relaxed);
                    n += 1;
                }
            }
            let _ = client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            driver.abort();
        }));
    }

    let processed = || instance.mqtt_stats.counters.processed.load(Relaxed);
    // warm-up: connections and caches
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pipe_figures = || {
        let c = &instance.mqtt_stats.counters;
        (
            c.pipe_values_accepted.load(Relaxed),
            c.pipe_rows_stored.load(Relaxed),
        )
    };
    let cpu_ticks = || {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| crate::observe::system::process_ticks(&s))
    };
    let cpu0 = cpu_ticks();
    let (p0, b0, c0, a0, t0) = (
        published.load(Relaxed),
        bare.load(Relaxed),
        processed(),
        acked.load(Relaxed),
        Instant::now(),
    );
    let pipes0 = pipe_figures();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let secs = t0.elapsed().as_secs_f64();
    // the whole process: the instance, its broker, the publishers and the bare subscriber
    let cpu_secs = cpu0.zip(cpu_ticks()).map(|(a, b)| (b - a) as f64 / 100.0);
    let (p1, b1, c1, a1) = (
        published.load(Relaxed),
        bare.load(Relaxed),
        processed(),
        acked.load(Relaxed),
    );
    let pipes1 = pipe_figures();
    stop.store(true, Relaxed);
    for p in publishers {
        let _ = p.await;
    }
    // how long the core needs to finish what it had queued
    let drain = Instant::now();
    let mut last = processed();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = processed();
        if now == last || drain.elapsed() > Duration::from_secs(30) {
            break;
        }
        last = now;
    }
    let _ = sub_task.await;
    let c = instance.mqtt_stats.counters.snapshot();
    let p = instance.mqtt_stats.pipes.snapshot();
    let rss_after = rss_bytes();
    let rate = |n: u64| n as f64 / secs;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "units": args.units,
            "shards": instance.config.mqtt_shards,
            "topics": kinds,
            "rate_target_per_s": args.rate,
            "qos": args.qos,
            "seconds": (secs * 100.0).round() / 100.0,
            "published_per_s": rate(p1 - p0).round(),
            "acknowledged_per_s": rate(a1 - a0).round(),
            "acknowledged_per_publisher_per_s": (rate(a1 - a0) / args.units as f64).round(),
            "bare_subscriber_per_s": rate(b1 - b0).round(),
            "core_processed_per_s": rate(c1 - c0).round(),
            "core_to_bare_ratio": ((c1 - c0) as f64 / (b1 - b0).max(1) as f64 * 1000.0).round() / 1000.0,
            "core_drain_ms_after_stop": drain.elapsed().as_millis(),
            "process_cpu_per_s": cpu_secs.map(|c| (c / secs * 100.0).round() / 100.0),
            "process_cpu_us_per_message": cpu_secs.map(|c| (c * 1e6 / (c1 - c0).max(1) as f64 * 100.0).round() / 100.0),
            "queue_full_events": c.queue_full,
            "states_stored": c.states_stored,
            "states_throttled": c.states_throttled,
            "logs_stored": c.logs_stored,
            "node_values_stored": c.node_values_stored,
            "invalid": c.invalid,
            "batches": c.batches,
            "batch_errors": c.batch_errors,
            "nodes_per_unit": args.nodes_per_unit,
            "throttle": args.throttle,
            "metering": args.metering,
            "throttled": c.throttled,
            "throttle_topics": instance.throttle.topics(),
            "metered_topics": instance.load.topics(),
            "pipes": args.pipes,
            "pipe_values_accepted_per_s": rate(pipes1.0 - pipes0.0).round(),
            "pipe_values_dropped": c.pipe_values_dropped,
            "pipe_rows_stored_per_s": rate(pipes1.1 - pipes0.1).round(),
            "pipe_rows_stored": c.pipe_rows_stored,
            "pipelines_active": p.active,
            "pipe_memory_bytes": p.memory_bytes,
            "pipe_memory_bytes_per_pipeline": p.memory_bytes.checked_div(p.active),
            "rss_mib_before_publishing": rss_before.map(|b| b / (1 << 20)),
            "rss_mib_after": rss_after.map(|b| b / (1 << 20)),
        }))?
    );
    Ok(())
}
