//! Readers during the soak: REST and GraphQL requests a user's dashboard would make, open
//! loop at a fixed rate each (latency from the scheduled send time, so a stalled server shows
//! as queueing), over random units of the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::api::Api;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// `GET /units/{uuid}`
    RestUnit,
    /// `GET /units?limit=20&offset=...`
    RestUnits,
    /// `GET /units/log_list/?uuid=...&limit=20` (newest first)
    RestLogs,
    /// `GET /unit_nodes/{uuid}`
    RestNode,
    /// `getUnit(uuid)`
    GraphqlUnit,
    /// `getUnits(filters: {limit: 20})`
    GraphqlUnits,
}

pub const REST: [ReadKind; 4] = [
    ReadKind::RestUnit,
    ReadKind::RestUnits,
    ReadKind::RestLogs,
    ReadKind::RestNode,
];
pub const GRAPHQL: [ReadKind; 2] = [ReadKind::GraphqlUnit, ReadKind::GraphqlUnits];

impl ReadKind {
    pub fn is_rest(self) -> bool {
        REST.contains(&self)
    }
}

/// One request's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Read {
    pub kind: ReadKind,
    /// Scheduled send time, milliseconds since the readers started.
    pub at_ms: u64,
    pub micros: u32,
    pub ok: bool,
}

#[derive(Default)]
pub struct Reads {
    pub all: Mutex<Vec<Read>>,
    pub first_error: Mutex<Option<String>>,
}

/// Latency figures of a set of reads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of<'a>(reads: impl Iterator<Item = &'a Read>) -> Latency {
        let mut micros = Vec::new();
        let mut errors = 0;
        for r in reads {
            micros.push(r.micros);
            if !r.ok {
                errors += 1;
            }
        }
        micros.sort_unstable();
        let pct = |p: f64| -> f64 {
            if micros.is_empty() {
                return 0.0;
            }
            let i = ((micros.len() as f64 * p).ceil() as usize).clamp(1, micros.len()) - 1;
            (micros[i] as f64 / 10.0).round() / 100.0
        };
        Latency {
            requests: micros.len() as u64,
            errors,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        }
    }
}

struct Target {
    api: Api,
    graphql: String,
    units: Vec<(Uuid, Uuid)>,
}

impl Target {
    async fn send(
        &self,
        kind: ReadKind,
        unit: Uuid,
        node: Uuid,
        offset: usize,
    ) -> Result<(), String> {
        let c = &self.api.client;
        let base = &self.api.base;
        let req = match kind {
            ReadKind::RestUnit => c.get(format!("{base}/units/{unit}")),
            ReadKind::RestUnits => c.get(format!("{base}/units?limit=20&offset={offset}")),
            ReadKind::RestLogs => c.get(format!(
                "{base}/units/log_list/?uuid={unit}&limit=20&order_by_create_date=desc"
            )),
            ReadKind::RestNode => c.get(format!("{base}/unit_nodes/{node}")),
            ReadKind::GraphqlUnit => c.post(&self.graphql).json(&json!({
                "query": "query ($uuid: UUID!) { getUnit(uuid: $uuid) { uuid name lastUpdateDatetime unitState { millis memFree puCommitVersion } } }",
                "variables": {"uuid": unit},
            })),
            ReadKind::GraphqlUnits => c.post(&self.graphql).json(&json!({
                "query": format!("{{ getUnits(filters: {{limit: 20, offset: {offset}}}) {{ count units {{ uuid name unitState {{ millis }} }} }} }}"),
            })),
        };
        let resp = req
            .header("x-auth-token", &self.api.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "{kind:?}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if !kind.is_rest() && body.windows(8).any(|w| w == b"\"errors\"") {
            return Err(format!("{kind:?}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }
}

/// Sends `rate` requests per second of `kinds` (in turn) until `stop` turns true.
async fn open_loop(
    target: Arc<Target>,
    reads: Arc<Reads>,
    kinds: &'static [ReadKind],
    rate: u64,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut i = 0usize;
    loop {
        let scheduled = tokio::select! {
            t = tick.tick() => t,
            _ = stop.wait_for(|s| *s) => break,
        };
        let kind = kinds[i % kinds.len()];
        i += 1;
        let (unit, node) = target.units[rng.gen_range(0..target.units.len())];
        let offset = rng.gen_range(0..target.units.len().max(20) - 19);
        let (target, reads) = (target.clone(), reads.clone());
        let at_ms = scheduled.into_std().duration_since(started).as_millis() as u64;
        in_flight.spawn(async move {
            let result = target.send(kind, unit, node, offset).await;
            let micros = scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
            if let Err(e) = &result {
                let mut first = reads.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.clone());
            }
            reads
                .all
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Read {
                    kind,
                    at_ms,
                    micros,
                    ok: result.is_ok(),
                });
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Starts the REST and GraphQL readers; they run until `stop` turns true, and the returned
/// task ends once their last answers are in.
pub fn start(
    api: &Api,
    graphql: String,
    units: Vec<(Uuid, Uuid)>,
    (rest_rate, graphql_rate): (u64, u64),
    stop: watch::Receiver<bool>,
    started: Instant,
    seed: u64,
) -> (Arc<Reads>, tokio::task::JoinHandle<()>) {
    let reads = Arc::new(Reads::default());
    let target = Arc::new(Target {
        api: api.clone(),
        graphql,
        units,
    });
    let mut loops = Vec::new();
    if rest_rate > 0 {
        loops.push(tokio::spawn(open_loop(
            target.clone(),
            reads.clone(),
            &REST,
            rest_rate,
            started,
            stop.clone(),
            seed,
        )));
    }
    if graphql_rate > 0 {
        loops.push(tokio::spawn(open_loop(
            target,
            reads.clone(),
            &GRAPHQL,
            graphql_rate,
            started,
            stop,
            seed ^ 1,
        )));
    }
    let all = tokio::spawn(async move {
        for l in loops {
            let _ = l.await;
        }
    });
    (reads, all)
}
