//! At least once, end to end, across `kill -9` (issue 16, part 1): devices publish QoS 1 log
//! lines to an external broker (Debian's mosquitto) while the instance, a separate `pepeunit
//! serve` process in external mode, is killed with SIGKILL mid-stream twice and started again
//! on the same data. Every line a device was acknowledged for must be stored exactly once: on
//! SQLite and PostgreSQL, with the log lines in the SQL store and in ClickHouse.
//!
//! Checked to fail when log lines carry no key (duplicates). Not caught here: a core that
//! acknowledges on receipt. It keeps up with mosquitto in this test, so little is in its
//! queues at the kill, and SIGKILL resets the connection, so the broker never reads the last
//! acknowledgements and delivers those messages again anyway.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::clickhouse::ClickHouse;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mosquitto::Mosquitto;
use common::{Backend, TestInstance};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const DEVICES: usize = 4;
const LINES: u64 = 5_000;
/// A bound for the whole stream to be stored after the last restart (a failure, not a goal).
const SETTLE: Duration = Duration::from_secs(240);

/// The instance as its own process, so that it can be killed for real.
struct Server {
    child: tokio::process::Child,
}

impl Server {
    async fn start(inst: &TestInstance, run: usize) -> Server {
        let log = std::fs::File::create(inst.data.path().join(format!("serve-{run}.log"))).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(inst.vars.iter().cloned())
            .env("PU_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pepeunit serve starts");
        let server = Server { child };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = inst
                .http
                .get(format!("{}/pepeunit", inst.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the instance did not come up: {}",
                logs(inst.data.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown path runs.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for run in 0..4 {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("serve-{run}.log"))) {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("\n--- run {run} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// One device: `LINES` QoS 1 log lines with its own microsecond timestamps, as the official
/// client sends them; counts the broker's PUBACKs.
fn device(
    port: u16,
    d: usize,
    topic: String,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut o = MqttOptions::new(format!("crash-device-{d}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(50);
        let (client, mut events) = AsyncClient::new(o, 100);
        let counter = acked.clone();
        let poller = tokio::spawn(async move {
            while counter.load(Relaxed) < LINES {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for i in 0..LINES {
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let line = json!({"level": "Info", "text": format!("{d}-{i}"), "create_datetime": at});
            client
                .publish(&topic, QoS::AtLeastOnce, false, line.to_string())
                .await
                .unwrap();
        }
        let _ = tokio::time::timeout(Duration::from_secs(120), poller).await;
    })
}

async fn log_count(inst: &TestInstance, token: &str, unit: &str) -> i64 {
    let url = inst.url(&format!("/units/log_list/?uuid={unit}&limit=1"));
    match inst
        .http
        .get(url)
        .header("x-auth-token", token)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap()["count"]
            .as_i64()
            .unwrap_or(0),
        _ => 0,
    }
}

async fn killed_mid_stream(backend: Backend, clickhouse: bool) {
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let ch = if clickhouse {
        match ClickHouse::start().await {
            Some(ch) => Some(ch),
            None => return,
        }
    } else {
        None
    };
    let port = broker.port.to_string();
    let mut vars = vec![
        ("PU_MQTT_MODE", "external".to_string()),
        ("PU_MQTT_BACKEND_HOST", "127.0.0.1".to_string()),
        ("PU_MQTT_BACKEND_PORT", port.clone()),
        ("PU_MQTT_PORT", port),
    ];
    if let Some(ch) = &ch {
        vars.push(("PU_CLICKHOUSE_URL", ch.url()));
        vars.push(("PU_CLICKHOUSE_DATABASE", "crash".to_string()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // set up in-process: users, a repo and the units; the core's persistent session at the
    // broker (its subscriptions) exists from here on
    let mut inst = TestInstance::start_with(backend, &vars).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, repo, unit) = registry_repo_unit(&inst, &owner, &firmware, "crash", "Private").await;
    let mut units = vec![unit["uuid"].as_str().unwrap().to_string()];
    for d in 1..DEVICES {
        let (s, u) = inst
            .post(
                "/units",
                Some(&owner),
                json!({"repo_uuid": repo["uuid"], "visibility_level": "Private", "name": format!("crash_unit_{d}"), "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s.as_u16(), 201, "{u}");
        units.push(u["uuid"].as_str().unwrap().to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !inst
        .running
        .as_ref()
        .unwrap()
        .instance
        .outbox
        .is_connected()
    {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    inst.running.take().unwrap().stop().await.unwrap();

    let acked: Vec<Arc<AtomicU64>> = (0..DEVICES).map(|_| Arc::default()).collect();
    let devices: Vec<_> = units
        .iter()
        .enumerate()
        .map(|(d, u)| {
            let topic = format!("{}/output_base_topic/{u}/log/pepeunit", inst.domain);
            device(broker.port, d, topic, acked[d].clone())
        })
        .collect();
    // the lines wait at the broker before the instance starts: the backlog keeps the core
    // busy (messages in its queues and batches) when it is killed
    let deadline = tokio::time::Instant::now() + SETTLE;
    while acked.iter().any(|a| a.load(Relaxed) < LINES) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the devices stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = Server::start(&inst, 0).await;
    // kill -9 twice while lines stream in, each time once some more are stored
    for (run, at_least) in [(1, LINES as i64 / 10), (2, LINES as i64 / 2)] {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while log_count(&inst, &owner, &units[0]).await < at_least {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ingest never reached {at_least}: {}",
                logs(inst.data.path())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::start(&inst, run).await;
    }
    for d in devices {
        d.await.unwrap();
    }
    let acked: Vec<u64> = acked.iter().map(|a| a.load(Relaxed)).collect();
    assert!(
        acked.iter().all(|&n| n == LINES),
        "every line acknowledged by the broker: {acked:?}"
    );

    // everything the broker acknowledged arrives; then nothing more
    let deadline = tokio::time::Instant::now() + SETTLE;
    for u in &units {
        while log_count(&inst, &owner, u).await < LINES as i64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every line was stored: {}",
                logs(inst.data.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (d, u) in units.iter().enumerate() {
        let (s, v) = inst
            .get(
                &format!(
                    "/units/log_list/?uuid={u}&limit={}&order_by_create_date=asc",
                    LINES * 2
                ),
                Some(&owner),
            )
            .await;
        assert_eq!(s.as_u16(), 200, "{v}");
        let texts: Vec<&str> = v["unit_logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..LINES).map(|i| format!("{d}-{i}")).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        want.sort();
        assert_eq!(
            v["count"].as_i64(),
            Some(LINES as i64),
            "unit {d}: every line exactly once"
        );
        assert_eq!(sorted, want, "unit {d}: every line exactly once");
        assert_eq!(
            texts,
            expected.iter().map(String::as_str).collect::<Vec<_>>(),
            "unit {d}: in the device's order"
        );
    }
    let (_, m) = inst.get("/metrics/mqtt", Some(&admin)).await;
    eprintln!("after the last restart: {}", m["counters"]);
    server.kill().await;
    inst.stop().await;
    drop(ch);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sql_logs() {
    killed_mid_stream(Backend::Sqlite, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sql_logs() {
    if common::postgres_admin_url().is_none() {
        return;
    }
    killed_mid_stream(Backend::Postgres, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_clickhouse_logs() {
    killed_mid_stream(Backend::Sqlite, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clickhouse_logs() {
    if common::postgres_admin_url().is_none() {
        return;
    }
    killed_mid_stream(Backend::Postgres, true).await
}
