//! `pepeunit load meter`: what the load meter costs (SPEC §7, issue 18 part 1). Fills a fresh
//! `LoadMeter` with `--topics` topics (10 per Unit, a realistic mix of unit base and node
//! topic names) for `--seconds` of simulated traffic, then reports its own accounting, the
//! process's resident memory before and after, and how fast it records and reports. In
//! process, no network.

use std::time::Instant;

use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::service::load::LoadMeter;

#[derive(Args, Debug, Clone)]
pub struct MeterLoad {
    /// Topics to meter (1..=2,000,000).
    #[arg(long, default_value_t = 100_000)]
    pub topics: usize,
    /// Seconds of traffic to simulate, one message per topic per second (1..=3600).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    crate::observe::system::field(&status, "VmRSS")
}

pub async fn run_meter(args: MeterLoad) -> anyhow::Result<()> {
    if !(1..=2_000_000).contains(&args.topics) {
        anyhow::bail!("--topics must be between 1 and 2000000");
    }
    if !(1..=3600).contains(&args.seconds) {
        anyhow::bail!("--seconds must be between 1 and 3600");
    }
    let domain = "pepeunit.example.com";
    let topics: Vec<(String, Uuid)> = (0..args.topics.div_ceil(10))
        .flat_map(|_| {
            let unit = Uuid::new_v4();
            let mut t = vec![
                (
                    format!("{domain}/output_base_topic/{unit}/state/pepeunit"),
                    unit,
                ),
                (
                    format!("{domain}/output_base_topic/{unit}/log/pepeunit"),
                    unit,
                ),
            ];
            t.extend((0..8).map(|_| (format!("{domain}/{}/pepeunit", Uuid::new_v4()), unit)));
            t
        })
        .take(args.topics)
        .collect();
    let rss_before = rss_bytes();
    let meter = LoadMeter::default();
    let start = 1_765_000_000u64;
    let t0 = Instant::now();
    for s in 0..args.seconds {
        for (topic, unit) in &topics {
            meter.record(topic, *unit, start + s, 1);
        }
    }
    let record_secs = t0.elapsed().as_secs_f64();
    let recorded = args.topics as u64 * args.seconds;
    let rss_after = rss_bytes();
    let t1 = Instant::now();
    let by_unit = meter.by_unit(start + args.seconds);
    let report_ms = t1.elapsed().as_secs_f64() * 1000.0;
    let bytes = meter.memory_bytes();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "topics": meter.topics(),
            "units": by_unit.len(),
            "simulated_seconds": args.seconds,
            "records": recorded,
            "records_per_s": (recorded as f64 / record_secs).round(),
            "meter_memory_bytes": bytes,
            "meter_bytes_per_topic": bytes / args.topics.max(1),
            "rss_mib_before": rss_before.map(|b| b / (1 << 20)),
            "rss_mib_after": rss_after.map(|b| b / (1 << 20)),
            "rss_bytes_per_topic": rss_before.zip(rss_after).map(|(a, b)| b.saturating_sub(a) / args.topics as u64),
            "report_all_units_ms": (report_ms * 10.0).round() / 10.0,
        }))?
    );
    // the topic names themselves (held by the caller here) are not the meter's
    drop(topics);
    Ok(())
}
