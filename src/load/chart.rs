//! `pepeunit load chart`: how long drawing a `/chart` picture takes and how large the PNG is,
//! for series of `--points` values each (issue 19 part 6). In process, no network: the same
//! `domain::chart::render_png` the bot's charts go through, on a synthetic day of values (a
//! slow wave, noise and a few spikes from `--seed`), timed over `--rounds` renders after one
//! warm-up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::chart::{self, ChartSpec, Line};

#[derive(Args, Debug, Clone)]
pub struct ChartLoad {
    /// Comma-separated series lengths to draw (each 1..=10,000,000).
    #[arg(long, default_value = "1000,100000")]
    pub points: String,
    /// Timed renders per length (1..=1000).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Seed of the synthetic values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write each length's picture to DIR/chart-<points>.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn series(n: usize, seed: u64, from: chrono::NaiveDateTime) -> Line {
    let mut rng = StdRng::seed_from_u64(seed);
    let step = 86_400_000 / n.max(1) as i64;
    let points = (0..n)
        .map(|i| {
            let at = from + chrono::Duration::milliseconds(step * i as i64);
            let wave = (i as f64 / n as f64 * std::f64::consts::TAU * 3.0).sin() * 5.0;
            let spike = if rng.gen_ratio(1, 5000) { 15.0 } else { 0.0 };
            (at, 20.0 + wave + rng.gen_range(-0.5..0.5) + spike)
        })
        .collect();
    Line {
        name: "temp/pepeunit".into(),
        points,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run_chart(args: ChartLoad) -> anyhow::Result<()> {
    let lengths: Vec<usize> = args
        .points
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--points is a comma-separated list of numbers"))?;
    if lengths.is_empty() || lengths.iter().any(|n| !(1..=10_000_000).contains(n)) {
        anyhow::bail!("--points must each be between 1 and 10000000");
    }
    if !(1..=1000).contains(&args.rounds) {
        anyhow::bail!("--rounds must be between 1 and 1000");
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
    }
    tokio::task::spawn_blocking(move || {
        println!(
            "chart {}x{} PNG, {} rounds each",
            chart::WIDTH,
            chart::HEIGHT,
            args.rounds
        );
        println!("| points | p50 | p90 | max | PNG bytes |");
        println!("|---|---|---|---|---|");
        let from = chrono::DateTime::from_timestamp(1_765_000_000, 0)
            .expect("a fixed time")
            .naive_utc();
        for n in lengths {
            let lines = [series(n, args.seed, from)];
            let spec = ChartSpec {
                title: "bench_unit / temp/pepeunit",
                x_label: "Time, UTC",
                y_label: "Value",
                from,
                to: from + chrono::Duration::days(1),
                lines: &lines,
                width: chart::WIDTH,
                height: chart::HEIGHT,
            };
            let png = chart::render_png(&spec)?;
            let mut times: Vec<Duration> = (0..args.rounds)
                .map(|_| {
                    let t = Instant::now();
                    let png = chart::render_png(&spec);
                    let took = t.elapsed();
                    png.map(|_| took)
                })
                .collect::<Result<_, _>>()?;
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            println!(
                "| {n} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
                ms(at(0.5)),
                ms(at(0.9)),
                ms(at(1.0)),
                png.len()
            );
            if let Some(dir) = &args.out {
                std::fs::write(dir.join(format!("chart-{n}.png")), &png)?;
            }
        }
        Ok(())
    })
    .await?
}
