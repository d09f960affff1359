//! `pepeunit load logs`: log ingest throughput of the telemetry store, through the same call
//! the MQTT log writer makes (`Instance::store_unit_logs`, one call per batch). Self-contained:
//! a temporary instance on a temporary SQLite file (or `--database-url`), measured on the
//! embedded store and, with `--clickhouse-url`, on ClickHouse (a fresh database, dropped at the
//! end). Only the store calls are timed; building the lines is not.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{self, LogLevel, Order};
use crate::service::Instance;
use crate::store::unit_logs::NewUnitLog;
use crate::telemetry::{LogQuery, LogStore};

#[derive(Args, Debug, Clone)]
pub struct LogsLoad {
    /// Lines to store into each store (1..=20000000).
    #[arg(long, default_value_t = 500_000)]
    pub lines: usize,
    /// Lines per batch (one store call; 1..=1000000).
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Units the lines are spread over (1..=100000).
    #[arg(long, default_value_t = 100)]
    pub units: usize,
    /// Bytes of text per line (1..=4096; ingest caps texts at PU_MAX_LOG_LENGTH, default 64).
    #[arg(long, default_value_t = 64)]
    pub text_len: usize,
    /// Relational database of the embedded store instead of a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Skip the embedded store (measure ClickHouse only).
    #[arg(long)]
    pub skip_embedded: bool,
    /// Also measure ClickHouse at this URL (http://host:8123).
    #[arg(long)]
    pub clickhouse_url: Option<String>,
    #[arg(long)]
    pub clickhouse_user: Option<String>,
    #[arg(long)]
    pub clickhouse_password: Option<String>,
}

pub async fn run_logs(args: LogsLoad) -> anyhow::Result<()> {
    if !(1..=20_000_000).contains(&args.lines) {
        anyhow::bail!("--lines must be between 1 and 20000000");
    }
    if !(1..=1_000_000).contains(&args.batch) {
        anyhow::bail!("--batch must be between 1 and 1000000");
    }
    if !(1..=100_000).contains(&args.units) {
        anyhow::bail!("--units must be between 1 and 100000");
    }
    if !(1..=4096).contains(&args.text_len) {
        anyhow::bail!("--text-len must be between 1 and 4096");
    }
    if args.skip_embedded && args.clickhouse_url.is_none() {
        anyhow::bail!("--skip-embedded needs --clickhouse-url");
    }
    if !args.skip_embedded {
        let mut vars = Vec::new();
        if let Some(url) = &args.database_url {
            vars.push(("PU_DATABASE_URL".to_string(), url.clone()));
        }
        measure_in(&args, vars).await?;
    }
    if let Some(url) = &args.clickhouse_url {
        let mut vars = vec![
            ("PU_CLICKHOUSE_URL".to_string(), url.clone()),
            (
                "PU_CLICKHOUSE_DATABASE".to_string(),
                format!("pepeunit_load_{}", Uuid::new_v4().simple()),
            ),
        ];
        if let Some(u) = &args.clickhouse_user {
            vars.push(("PU_CLICKHOUSE_USER".into(), u.clone()));
        }
        if let Some(p) = &args.clickhouse_password {
            vars.push(("PU_CLICKHOUSE_PASSWORD".into(), p.clone()));
        }
        measure_in(&args, vars).await?;
    }
    Ok(())
}

/// A temporary instance with `vars`, measured, then removed (with its ClickHouse database).
async fn measure_in(args: &LogsLoad, extra: Vec<(String, String)>) -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("pepeunit-load-{}", Uuid::new_v4().simple()));
    let mut vars = vec![("PU_DATA_DIR".to_string(), data.display().to_string())];
    vars.extend(extra);
    let instance = Instance::open(Config::from_vars(vars)?).await?;
    let result = measure(&instance, args).await;
    if let LogStore::ClickHouse(c) = &instance.logs {
        if let Err(e) = c.drop_database().await {
            eprintln!("could not drop the load database: {}", e);
        }
    }
    let hub = instance.federation.hub().clone();
    let _ = tokio::task::spawn_blocking(move || hub.close()).await;
    instance.db.pool.close().await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn measure(instance: &Instance, args: &LogsLoad) -> anyhow::Result<()> {
    let units: Vec<Uuid> = (0..args.units).map(|_| Uuid::now_v7()).collect();
    let text: String = "load line ".chars().cycle().take(args.text_len).collect();
    let mut stored = 0usize;
    let mut spent = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    while stored < args.lines {
        let n = (args.lines - stored).min(args.batch);
        let batch: Vec<NewUnitLog> = (0..n)
            .map(|i| {
                let unit = units[(stored + i) % units.len()];
                instance.new_unit_log(unit, LogLevel::ALL[i % LogLevel::ALL.len()], text.clone())
            })
            .collect();
        let start = Instant::now();
        instance.store_unit_logs(batch).await?;
        let took = start.elapsed();
        spent += took;
        slowest = slowest.max(took);
        stored += n;
    }
    // one read of a unit's newest page, as the REST list does it
    let start = Instant::now();
    let (count, page) = instance
        .logs
        .query(
            &LogQuery {
                unit_uuid: units[0],
                levels: vec![],
                since: None,
                until: None,
                order: Order::Desc,
                offset: 0,
                limit: 50,
            },
            chrono::Utc::now().naive_utc(),
        )
        .await?;
    let read_ms = start.elapsed().as_secs_f64() * 1000.0;
    let expected = args.lines.div_ceil(args.units).min(args.lines);
    if count as usize != expected || page.is_empty() {
        anyhow::bail!("read back {count} lines of unit 0, expected {expected}");
    }
    let secs = spent.as_secs_f64();
    println!(
        "{}",
        json!({
            "store": instance.logs.kind(),
            "lines": stored,
            "batch": args.batch,
            "units": args.units,
            "text_len": args.text_len,
            "seconds": (secs * 100.0).round() / 100.0,
            "lines_per_s": (stored as f64 / secs).round(),
            "slowest_batch_ms": (slowest.as_secs_f64() * 10_000.0).round() / 10.0,
            "read_page_ms": (read_ms * 10.0).round() / 10.0,
            "at": domain::now(),
        })
    );
    Ok(())
}
