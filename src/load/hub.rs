//! `pepeunit load hub`: indexing speed and query latency of the federated hub index.
//!
//! Self-contained: generates a synthetic catalogue of public Repos and Units from `--seed`
//! (same seed, same documents and queries), indexes it with `Hub::rebuild` in `--dir` or a
//! temporary directory, then runs `--queries` searches one after another, cycling through a
//! fixed mix of query classes, and prints latency percentiles per class and overall.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use pepeunit_federation::hub::{Hub, HubDoc, HubKind, HubQuery};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Args, Debug, Clone)]
pub struct HubLoad {
    /// Documents to generate and index (1..=10000000).
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: usize,
    /// Searches to run after indexing (1..=1000000).
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// Results per page (1..=100).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Seed of the synthetic catalogue and of the queries.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the index in PATH/index (replacing what is there) instead of a temporary
    /// directory removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --dir: search the index an earlier run left there (same --docs and --seed)
    /// instead of building it again.
    #[arg(long, requires = "dir")]
    pub reuse: bool,
}

pub async fn run_hub(args: HubLoad) -> anyhow::Result<()> {
    if !(1..=10_000_000).contains(&args.docs) {
        anyhow::bail!("--docs must be between 1 and 10000000");
    }
    if !(1..=1_000_000).contains(&args.queries) {
        anyhow::bail!("--queries must be between 1 and 1000000");
    }
    if !(1..=100).contains(&args.limit) {
        anyhow::bail!("--limit must be between 1 and 100");
    }
    if let Some(dir) = &args.dir {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!("--dir {} is not a directory", dir.display());
        }
    }
    tokio::task::spawn_blocking(move || {
        let temporary = args.dir.is_none();
        let dir = args.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "pepeunit-load-hub-{}",
                uuid::Uuid::new_v4().simple()
            ))
        });
        let result = measure(&args, &dir);
        if temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    })
    .await?
}

fn measure(args: &HubLoad, dir: &Path) -> anyhow::Result<()> {
    let catalogue = Catalogue::new(args.seed);

    let hub = Hub::open(dir)?;
    if args.reuse {
        let found = hub.len()?;
        if found != args.docs as u64 || hub.needs_rebuild() {
            anyhow::bail!(
                "--reuse: {} holds {found} documents, not {}",
                dir.display(),
                args.docs
            );
        }
        println!(
            "searching {found} documents indexed earlier in {}",
            dir.display()
        );
    } else {
        index(&hub, &catalogue, args.docs, dir)?;
    }
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed_0f9e_71e5);
    let mut per_class: Vec<(Class, Vec<Duration>, usize)> =
        Class::ALL.iter().map(|&c| (c, Vec::new(), 0)).collect();
    let mut all = Vec::with_capacity(args.queries);
    let started = Instant::now();
    for i in 0..args.queries {
        let slot = i % Class::ALL.len();
        let query = catalogue.query(Class::ALL[slot], args.limit, &mut rng);
        let t = Instant::now();
        let page = hub.search(&query)?;
        let took = t.elapsed();
        all.push(took);
        per_class[slot].1.push(took);
        per_class[slot].2 += page.count;
    }
    let elapsed = started.elapsed();
    println!(
        "{} queries in {:.2} s: {:.0} queries/s, one at a time (limit {})",
        args.queries,
        elapsed.as_secs_f64(),
        args.queries as f64 / elapsed.as_secs_f64(),
        args.limit,
    );
    println!(
        "{:<11} {:>7} {:>11} {:>8} {:>8} {:>8} {:>8}",
        "class", "queries", "mean count", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for (class, mut latencies, matched) in per_class {
        if latencies.is_empty() {
            continue;
        }
        let n = latencies.len();
        print_row(class.name(), &mut latencies, Some(matched / n));
    }
    print_row("all", &mut all, None);
    Ok(())
}

fn index(hub: &Hub, catalogue: &Catalogue, docs: usize, dir: &Path) -> anyhow::Result<()> {
    // what generating costs on its own, so that the indexing rate can be read
    let started = Instant::now();
    let generated = catalogue.docs(docs).map(|d| d.readme.len()).sum::<usize>();
    let generating = started.elapsed();
    std::hint::black_box(generated);

    println!(
        "indexing {docs} documents into {} ({} cores)",
        dir.join("index").display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let started = Instant::now();
    let mut loaded = None;
    let total = hub.rebuild(catalogue.docs(docs), |n| {
        // the last call comes after the commit, before the merge
        loaded = Some(started.elapsed());
        if n % 100_000 == 0 {
            let s = started.elapsed().as_secs_f64();
            eprintln!("  {n} documents, {s:.1} s, {:.0} docs/s", n as f64 / s);
        }
    })?;
    let indexing = started.elapsed();
    let loading = loaded.unwrap_or(indexing);
    let size = dir_size(&dir.join("index"))?;
    println!(
        "indexed {total} documents in {:.1} s ({:.1} s adding and committing, {:.1} s merging into one segment): {:.0} docs/s; generating them alone takes {:.1} s",
        indexing.as_secs_f64(),
        loading.as_secs_f64(),
        (indexing - loading).as_secs_f64(),
        total as f64 / indexing.as_secs_f64(),
        generating.as_secs_f64(),
    );
    println!(
        "index {:.1} MiB on disk, {:.0} bytes/document",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / total as f64,
    );
    Ok(())
}

fn print_row(name: &str, latencies: &mut [Duration], mean_count: Option<usize>) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{:<11} {:>7} {:>11} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        name,
        latencies.len(),
        mean_count.map_or(String::from("-"), |c| c.to_string()),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
    );
}

fn dir_size(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The query mix, run in this order round-robin.
#[derive(Clone, Copy, Debug)]
enum Class {
    /// One of the ten most frequent words (matches most documents).
    Common,
    /// One word from the rare half of the vocabulary.
    Rare,
    /// Two mid-frequency words (both must match).
    TwoWords,
    /// Two of the ten most frequent words: most documents have both.
    CommonPair,
    /// The start of a name word, as typed ("weath").
    Prefix,
    /// A frequent word, Repos or Units only.
    Kind,
    /// A frequent word on one instance.
    Instance,
    /// No words: everything by name, a page at offset 0..=1000.
    Blank,
    /// No words, Repos or Units only, by name.
    BlankKind,
    /// Query-language fragments, punctuation, unicode, 10 KB of text.
    Garbage,
}

impl Class {
    const ALL: [Class; 10] = [
        Class::Common,
        Class::Rare,
        Class::TwoWords,
        Class::CommonPair,
        Class::Prefix,
        Class::Kind,
        Class::Instance,
        Class::Blank,
        Class::BlankKind,
        Class::Garbage,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Common => "common",
            Class::Rare => "rare",
            Class::TwoWords => "two words",
            Class::CommonPair => "common pair",
            Class::Prefix => "prefix",
            Class::Kind => "kind",
            Class::Instance => "instance",
            Class::Blank => "blank",
            Class::BlankKind => "blank kind",
            Class::Garbage => "garbage",
        }
    }
}

/// Words an IoT catalogue is made of, most frequent first; the synthetic tail follows.
const WORDS: &[&str] = &[
    "sensor",
    "temperature",
    "data",
    "mqtt",
    "esp32",
    "humidity",
    "control",
    "device",
    "home",
    "light",
    "monitor",
    "firmware",
    "wifi",
    "station",
    "weather",
    "relay",
    "micropython",
    "power",
    "smart",
    "pump",
    "water",
    "soil",
    "moisture",
    "garden",
    "greenhouse",
    "air",
    "quality",
    "pressure",
    "led",
    "strip",
    "display",
    "button",
    "motor",
    "servo",
    "door",
    "window",
    "alarm",
    "camera",
    "energy",
    "meter",
    "battery",
    "solar",
    "panel",
    "charger",
    "thermostat",
    "heater",
    "fan",
    "valve",
    "irrigation",
    "level",
    "tank",
    "flow",
    "gas",
    "smoke",
    "co2",
    "dust",
    "pm25",
    "noise",
    "motion",
    "presence",
    "radar",
    "distance",
    "ultrasonic",
    "gps",
    "tracker",
    "lora",
    "zigbee",
    "bluetooth",
    "ble",
    "ethernet",
    "gateway",
    "bridge",
    "node",
    "hub",
    "controller",
    "switch",
    "socket",
    "plug",
    "dimmer",
    "rgb",
    "matrix",
    "clock",
    "timer",
    "scheduler",
    "logger",
    "counter",
    "scale",
    "weight",
    "aquarium",
    "pool",
    "boiler",
    "kitchen",
    "garage",
    "barn",
    "farm",
    "beehive",
    "chicken",
    "coop",
    "feeder",
    "pet",
    "bird",
    "rain",
    "wind",
    "speed",
    "direction",
    "uv",
    "lux",
    "dht22",
    "bme280",
    "ds18b20",
    "sht31",
    "ina219",
    "mpu6050",
    "hx711",
    "ads1115",
    "esp8266",
    "rp2040",
    "pico",
    "stm32",
    "arduino",
    "raspberry",
    "nrf52",
    "attiny",
    "board",
    "shield",
    "module",
    "driver",
    "library",
    "example",
    "demo",
    "test",
    "project",
    "simple",
    "minimal",
    "advanced",
    "remote",
    "local",
    "wireless",
    "low",
    "high",
    "deep",
    "sleep",
    "update",
    "ota",
    "config",
    "setup",
    "state",
    "value",
    "input",
    "output",
    "topic",
    "publish",
    "subscribe",
    "message",
    "payload",
    "json",
    "schema",
    "env",
    "telemetry",
    "dashboard",
    "grafana",
    "alert",
    "notify",
    "telegram",
    "bot",
    "api",
    "server",
    "client",
    "cloud",
    "edge",
    "network",
    "mesh",
    "signal",
    "antenna",
    "range",
    "reading",
    "measure",
    "calibration",
    "offset",
    "filter",
    "average",
    "threshold",
    "interval",
    "period",
    "minute",
    "hour",
    "day",
    "night",
    "room",
    "office",
    "lab",
    "school",
    "street",
    "city",
    "field",
    "river",
    "lake",
    "forest",
    "mountain",
    "roof",
    "basement",
    "attic",
    "hallway",
    "bedroom",
    "bathroom",
    "window",
    "curtain",
    "blind",
    "shutter",
    "lock",
    "key",
    "card",
    "rfid",
    "nfc",
    "fingerprint",
    "keypad",
    "touch",
    "capacitive",
    "infrared",
    "ir",
    "remote",
    "tv",
    "audio",
    "speaker",
    "microphone",
    "voice",
    "buzzer",
    "vibration",
    "shock",
    "tilt",
    "angle",
    "accelerometer",
    "gyroscope",
    "compass",
    "magnet",
    "hall",
    "current",
    "voltage",
    "ac",
    "dc",
    "inverter",
    "generator",
    "wind",
    "turbine",
    "hydro",
    "heat",
    "cool",
    "freezer",
    "fridge",
    "oven",
    "coffee",
    "machine",
    "robot",
    "arm",
    "car",
    "rover",
    "drone",
    "boat",
    "buoy",
    "weatherproof",
];

const BOARDS: &[&str] = &[
    "esp32", "esp8266", "rp2040", "pico", "stm32", "arduino", "rpi", "nrf52", "esp32c3", "esp32s3",
];

const GARBAGE: &[&str] = &[
    "\"(((",
    "AND",
    "name:",
    "name:sensor OR description:",
    "*",
    "sensor~2^3",
    "+-!():^[]\"{}~*?\\/",
    "ünïcødé 温度 датчик 🌡️",
    "\u{0}\u{1}\u{7f}",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "ze", "po", "gra", "tek", "lin", "mor", "dex",
    "qua", "fir", "bel", "sun", "wan",
];

struct Catalogue {
    seed: u64,
    vocabulary: Vec<String>,
    /// Cumulative Zipf (s = 1) weights over `vocabulary`.
    cdf: Vec<f64>,
    instances: Vec<String>,
    instance_cdf: Vec<f64>,
}

impl Catalogue {
    const VOCABULARY: usize = 4000;
    const INSTANCES: usize = 100;

    fn new(seed: u64) -> Catalogue {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut vocabulary: Vec<String> = Vec::with_capacity(Self::VOCABULARY);
        for w in WORDS {
            if !vocabulary.iter().any(|v| v == w) {
                vocabulary.push(w.to_string());
            }
        }
        while vocabulary.len() < Self::VOCABULARY {
            let n = rng.gen_range(2..=4);
            let word: String = (0..n)
                .map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())])
                .collect();
            if !vocabulary.contains(&word) {
                vocabulary.push(word);
            }
        }
        let instances: Vec<String> = (0..Self::INSTANCES)
            .map(|i| {
                let host = format!(
                    "{}.{}.example",
                    vocabulary[rng.gen_range(200..2000)],
                    vocabulary[rng.gen_range(200..2000)]
                );
                if i % 10 == 9 {
                    format!("{host}:{}", 8000 + i)
                } else {
                    host
                }
            })
            .collect();
        Catalogue {
            seed,
            cdf: zipf_cdf(vocabulary.len(), 1.0),
            instance_cdf: zipf_cdf(instances.len(), 0.8),
            vocabulary,
            instances,
        }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        &self.vocabulary[pick(&self.cdf, rng)]
    }

    fn sentence(&self, rng: &mut StdRng, words: usize) -> String {
        let mut s = String::with_capacity(words * 8);
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word(rng));
        }
        s
    }

    fn docs(&self, n: usize) -> impl Iterator<Item = HubDoc> + '_ {
        let mut rng = StdRng::seed_from_u64(self.seed);
        (0..n).map(move |i| self.doc(i, &mut rng))
    }

    fn doc(&self, i: usize, rng: &mut StdRng) -> HubDoc {
        let kind = if rng.gen_bool(0.3) {
            HubKind::Unit
        } else {
            HubKind::Repo
        };
        let board = BOARDS[rng.gen_range(0..BOARDS.len())];
        let (a, b) = (
            &self.vocabulary[rng.gen_range(0..600)],
            &self.vocabulary[rng.gen_range(0..600)],
        );
        let name = match rng.gen_range(0..4) {
            0 => format!("{board}-{a}_{b}"),
            1 => format!("{a}-{b}"),
            2 => format!("{a}_{b}_{}", rng.gen_range(1..100)),
            _ => format!("{}-{a}-{board}", self.word(rng)),
        };
        let words = rng.gen_range(6..=30);
        let description = self.sentence(rng, words);
        let (readme, topics, platform) = match kind {
            HubKind::Repo => {
                let readme = if rng.gen_bool(0.6) {
                    let words = rng.gen_range(50..=400);
                    self.sentence(rng, words)
                } else {
                    String::new()
                };
                let topics = (0..rng.gen_range(0..=3))
                    .map(|_| self.word(rng).to_string())
                    .collect();
                let platform = match rng.gen_range(0..20) {
                    0 => "",
                    1..=9 => "Github",
                    _ => "Gitlab",
                };
                (readme, topics, platform.to_string())
            }
            HubKind::Unit => {
                let topics = (0..rng.gen_range(1..=6))
                    .map(|_| {
                        let side = if rng.gen_bool(0.5) { "output" } else { "input" };
                        format!("{side}_{}", self.word(rng))
                    })
                    .collect();
                (String::new(), topics, String::new())
            }
        };
        let instance = self.instances[pick(&self.instance_cdf, rng)].clone();
        let uuid = uuid::Uuid::from_u128(rng.gen()).to_string();
        let path = match kind {
            HubKind::Repo => "repos",
            HubKind::Unit => "units",
        };
        HubDoc {
            kind,
            url: format!("https://{instance}/pepeunit/{path}/{uuid}/{i}"),
            uuid,
            name,
            description,
            readme,
            topics,
            platform,
            instance,
        }
    }

    fn query(&self, class: Class, limit: usize, rng: &mut StdRng) -> HubQuery {
        let v = &self.vocabulary;
        let mut query = HubQuery {
            limit,
            ..HubQuery::default()
        };
        match class {
            Class::Common => query.q = v[rng.gen_range(0..10)].clone(),
            Class::Rare => query.q = v[rng.gen_range(v.len() / 2..v.len())].clone(),
            Class::TwoWords => {
                query.q = format!(
                    "{} {}",
                    v[rng.gen_range(10..500)],
                    v[rng.gen_range(10..500)]
                )
            }
            Class::CommonPair => {
                let first = rng.gen_range(0..10);
                let second = (first + rng.gen_range(1..10)) % 10;
                query.q = format!("{} {}", v[first], v[second]);
            }
            Class::Prefix => {
                let word = &v[rng.gen_range(0..600)];
                let end = word.char_indices().nth(4).map_or(word.len(), |(i, _)| i);
                query.q = word[..end].to_string();
            }
            Class::Kind => {
                query.q = v[rng.gen_range(0..100)].clone();
                query.kind = Some(if rng.gen_bool(0.5) {
                    HubKind::Unit
                } else {
                    HubKind::Repo
                });
            }
            Class::Instance => {
                query.q = v[rng.gen_range(0..200)].clone();
                query.instance =
                    Some(self.instances[rng.gen_range(0..self.instances.len())].clone());
            }
            Class::Blank => query.offset = rng.gen_range(0..=50) * 20,
            Class::BlankKind => {
                query.offset = rng.gen_range(0..=50) * 20;
                query.kind = Some(if rng.gen_bool(0.5) {
                    HubKind::Unit
                } else {
                    HubKind::Repo
                });
            }
            Class::Garbage => {
                query.q = match rng.gen_range(0..=GARBAGE.len()) {
                    n if n < GARBAGE.len() => GARBAGE[n].to_string(),
                    _ => self.sentence(rng, 1500).chars().take(10 * 1024).collect(),
                }
            }
        }
        query
    }
}

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|rank| {
            acc += 1.0 / (rank as f64).powf(s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn pick(cdf: &[f64], rng: &mut StdRng) -> usize {
    let x: f64 = rng.gen();
    cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
}
