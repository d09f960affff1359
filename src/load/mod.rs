//! `pepeunit load`: load generators (SPEC §7's console load tool). The `rest` scenario hammers
//! the device endpoints (env, schema, state storage) of a running instance and reports
//! throughput and latency percentiles. It targets whatever URL it is given; keep it on loopback
//! or on machines you own. `graphql` compares the GraphQL front door with REST for the same
//! objects on a running instance (loopback only). `soak` drives many simulated devices and
//! readers against a running instance on loopback for a bounded time. `mqtt`, `hub`,
//! `transfer`, `logs`, `meter` and `chart` are self-contained (see their modules).

pub mod chart;
pub mod graphql;
pub mod hub;
pub mod logs;
pub mod meter;
pub mod mqtt;
pub mod ramp;
pub mod soak;
pub mod transfer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct RestLoad {
    /// Instance origin, e.g. http://127.0.0.1:5291
    #[arg(long)]
    pub url: String,
    /// Unit uuid whose endpoints are requested.
    #[arg(long)]
    pub unit: uuid::Uuid,
    /// The unit's token (PU_AUTH_TOKEN of its env.json).
    #[arg(long)]
    pub token: String,
    /// Concurrent connections (closed loop); ignored with --rate.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run (1..=600).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Open loop: requests per second to send at a fixed pace (latency measured from the
    /// scheduled send time, so queueing shows up).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Comma-separated endpoints: env, schema, get_state, set_state.
    #[arg(long, default_value = "env,schema,get_state,set_state")]
    pub endpoints: String,
    /// API prefix.
    #[arg(long, default_value = "/pepeunit/api/v1")]
    pub prefix: String,
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Env,
    Schema,
    GetState,
    SetState,
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
}

pub async fn run_rest(args: RestLoad) -> anyhow::Result<()> {
    if !(1..=600).contains(&args.duration) {
        anyhow::bail!("--duration must be between 1 and 600 seconds");
    }
    if args.concurrency == 0 || args.concurrency > 4096 {
        anyhow::bail!("--concurrency must be between 1 and 4096");
    }
    if args.rate == Some(0) {
        anyhow::bail!("--rate must be positive");
    }
    let endpoints: Vec<Endpoint> = args
        .endpoints
        .split(',')
        .map(|e| match e.trim() {
            "env" => Ok(Endpoint::Env),
            "schema" => Ok(Endpoint::Schema),
            "get_state" => Ok(Endpoint::GetState),
            "set_state" => Ok(Endpoint::SetState),
            other => Err(anyhow::anyhow!("unknown endpoint {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        anyhow::bail!("--endpoints is empty");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let target = Arc::new(Target {
        client,
        base: format!("{}{}", args.url.trim_end_matches('/'), args.prefix),
        unit: args.unit,
        token: args.token.clone(),
    });
    // fail fast with a readable error before measuring
    for e in &endpoints {
        target
            .request(*e)
            .await
            .map_err(|err| anyhow::anyhow!("probe {e:?}: {err}"))?;
    }
    let stats = Arc::new(Stats::default());
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut latencies: Vec<u32> = match args.rate {
        None => closed_loop(&target, &endpoints, &stats, args.concurrency, deadline).await,
        Some(rate) => open_loop(&target, &endpoints, &stats, rate, deadline).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let ok = stats.ok.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    println!(
        "mode={} endpoints={} duration={:.1}s requests={} failed={} rate={:.0} req/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        match args.rate {
            Some(r) => format!("open-loop@{r}/s"),
            None => format!("closed-loop x{}", args.concurrency),
        },
        args.endpoints,
        elapsed,
        ok + failed,
        failed,
        (ok + failed) as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
    if failed > 0 {
        anyhow::bail!("{failed} requests failed");
    }
    Ok(())
}

struct Target {
    client: reqwest::Client,
    base: String,
    unit: uuid::Uuid,
    token: String,
}

impl Target {
    async fn request(&self, e: Endpoint) -> Result<(), String> {
        let c = &self.client;
        let req = match e {
            Endpoint::Env => c.get(format!("{}/units/env/{}", self.base, self.unit)),
            Endpoint::Schema => c.get(format!(
                "{}/units/get_current_schema/{}",
                self.base, self.unit
            )),
            Endpoint::GetState => c.get(format!(
                "{}/units/get_state_storage/{}",
                self.base, self.unit
            )),
            Endpoint::SetState => c
                .post(format!(
                    "{}/units/set_state_storage/{}",
                    self.base, self.unit
                ))
                .json(&serde_json::json!({"state": "{\"load\":true}"})),
        };
        let resp = req
            .header("x-auth-token", &self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

async fn closed_loop(
    target: &Arc<Target>,
    endpoints: &[Endpoint],
    stats: &Arc<Stats>,
    concurrency: usize,
    deadline: Instant,
) -> Vec<u32> {
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let target = target.clone();
        let stats = stats.clone();
        let endpoints = endpoints.to_vec();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut i = w;
            while Instant::now() < deadline {
                let e = endpoints[i % endpoints.len()];
                i += 1;
                let t = Instant::now();
                match target.request(e).await {
                    Ok(()) => stats.ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
                };
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    all
}

async fn open_loop(
    target: &Arc<Target>,
    endpoints: &[Endpoint],
    stats: &Arc<Stats>,
    rate: u64,
    deadline: Instant,
) -> Vec<u32> {
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut i = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        let scheduled = tick.tick().await;
        let e = endpoints[i % endpoints.len()];
        i += 1;
        let (target, stats, tx) = (target.clone(), stats.clone(), tx.clone());
        in_flight.spawn(async move {
            match target.request(e).await {
                Ok(()) => stats.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
            let _ = tx.send(scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32);
        });
        while in_flight.try_join_next().is_some() {}
    }
    drop(tx);
    while in_flight.join_next().await.is_some() {}
    let mut all = Vec::new();
    while let Some(l) = rx.recv().await {
        all.push(l);
    }
    all
}
