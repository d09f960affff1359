//! `pepeunit load soak` runs end to end, short and small, against a test instance: on the
//! embedded default (SQLite, embedded broker) and on mosquitto with PostgreSQL and ClickHouse.
//! It creates its units through the API, drives devices that reconnect abruptly and send again
//! what was in flight, reads through REST and GraphQL meanwhile, and must find every
//! acknowledged log line stored once and every unit's final state and node value. No timing
//! is asserted; the report's fields are checked for being filled in.

mod common;

use common::clickhouse::ClickHouse;
use common::fixtures::FirmwareRepo;
use common::mosquitto::Mosquitto;
use common::{Backend, TestInstance};
use pepeunit::load::soak::{print_report, soak, SoakLoad, SoakReport};

fn args(inst: &TestInstance, token: &str, firmware: Option<String>) -> SoakLoad {
    SoakLoad {
        url: inst.base.clone(),
        token: token.to_string(),
        firmware_url: firmware,
        devices: 100,
        duration: 20,
        mqtt: None,
        pid: Some(std::process::id()),
        broker_pid: None,
        state_interval: 1,
        log_interval: 2,
        log_lines: 2,
        node_interval: 1,
        // 100 devices x 40% per minute over 20 s: about 13 abrupt reconnects
        reconnect_percent: 40.0,
        max_inflight: 32,
        connect_concurrency: 50,
        rest_rate: 20,
        graphql_rate: 5,
        sample_interval: 2,
        drain_timeout: 120,
        seed: Some(16),
        json: None,
        progress: false,
        prefix: "/pepeunit/api/v1".into(),
        graphql_path: "/pepeunit/graphql".into(),
    }
}

/// An admin on `inst` (its token), and a soak that creates its units on a new firmware
/// repository.
async fn fresh_soak(inst: &TestInstance) -> (String, SoakReport) {
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("soakadmin").await;
    inst.wait_mqtt_ready().await;
    let report = soak(&args(inst, &admin, Some(firmware.url())))
        .await
        .expect("the soak runs");
    (admin, report)
}

fn assert_complete(r: &SoakReport, devices: usize) {
    print_report(r);
    let m = &r.messages;
    assert!(r.passed(), "{:?} {:?}", r.problems, m);
    assert!(m.equal);
    assert!(
        m.log_lines_sent > 0 && m.log_lines_sent == m.log_lines_stored,
        "{m:?}"
    );
    assert_eq!(m.log_lines_sent, m.log_messages_sent * 2);
    assert!(m.states_sent > 0 && m.node_values_sent > 0, "{m:?}");
    assert_eq!(m.final_states_matched, devices);
    assert_eq!(m.final_node_values_matched, devices);
    assert_eq!(m.log_units_mismatched, 0);
    let d = &r.device_stats;
    assert_eq!((d.devices, d.failed), (devices, 0));
    assert!(d.reconnects > 0, "{d:?}");
    // every acknowledged message (the final ones included) reached the core at least once
    let received = r.core["received"].as_i64().unwrap();
    let sent = m.states_sent + m.log_messages_sent + m.node_values_sent;
    assert!(
        received >= sent as i64,
        "core received {received}, devices sent {sent}"
    );
    let mem = &r.memory;
    assert!(mem.idle_kib > 0 && mem.connected_kib > 0 && mem.end_of_run_kib > 0);
    assert!(mem.series.iter().any(|s| s.phase == "run"));
    assert!(mem.series.iter().any(|s| s.connected == devices));
    for l in [&r.reading.rest, &r.reading.graphql] {
        assert!(l.requests > 0 && l.errors == 0, "{l:?}");
        assert!(l.max_ms >= l.p99_ms && l.p99_ms >= l.p50_ms, "{l:?}");
    }
    assert!(!r.reading.rest_p99_ms_per_minute.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_the_embedded_default() {
    let inst = TestInstance::start_with(Backend::Sqlite, &[("PU_STATE_SEND_INTERVAL", "1")]).await;
    let (admin, report) = fresh_soak(&inst).await;
    assert_eq!(report.mode, "embedded");
    assert_eq!(report.units_created, 100);
    assert_complete(&report, 100);

    // a second, shorter run reuses the units (no --firmware-url), without reconnects
    let mut again = args(&inst, &admin, None);
    again.devices = 40;
    again.duration = 5;
    again.reconnect_percent = 0.0;
    let report = soak(&again).await.expect("the second soak runs");
    assert_eq!(report.units_created, 0);
    assert!(
        report.passed(),
        "{:?} {:?}",
        report.problems,
        report.messages
    );
    assert_eq!(report.messages.final_states_matched, 40);

    // flags are checked before anything is done
    let (_, user) = inst.user("notadmin").await;
    for (change, needle) in [
        (
            Box::new(|a: &mut SoakLoad| a.devices = 0) as Box<dyn Fn(&mut SoakLoad)>,
            "--devices",
        ),
        (Box::new(|a| a.duration = 100_000), "--duration"),
        (
            Box::new(|a| a.url = "http://192.0.2.1:80".into()),
            "loopback",
        ),
        (
            Box::new(|a| a.mqtt = Some("192.0.2.1:1883".into())),
            "loopback",
        ),
        (Box::new(|a| a.mqtt = Some("nohost".into())), "HOST:PORT"),
        (
            Box::new(|a| a.reconnect_percent = 101.0),
            "--reconnect-percent",
        ),
        (Box::new(|a| a.pid = Some(u32::MAX)), "--pid"),
        (Box::new(move |a| a.token = user.clone()), "admin"),
        (Box::new(|a| a.token = "x.y.z".into()), "JWT"),
    ] {
        let mut a = args(&inst, &admin, None);
        change(&mut a);
        let err = soak(&a).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err} lacks {needle:?}");
    }
    // more devices than units, and nothing to create them from
    let mut a = args(&inst, &admin, None);
    a.devices = 101;
    let err = soak(&a).await.unwrap_err().to_string();
    assert!(err.contains("--firmware-url"), "{err}");
    inst.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_mosquitto_postgres_clickhouse() {
    if common::postgres_admin_url().is_none() {
        eprintln!("skipped: PU_TEST_POSTGRES_URL not set");
        return;
    }
    let Some(broker) = Mosquitto::start().await else {
        return;
    };
    let Some(ch) = ClickHouse::start().await else {
        return;
    };
    let port = broker.port.to_string();
    let url = ch.url();
    let inst = TestInstance::start_with(
        Backend::Postgres,
        &[
            ("PU_MQTT_MODE", "external"),
            ("PU_MQTT_BACKEND_HOST", "127.0.0.1"),
            ("PU_MQTT_BACKEND_PORT", &port),
            ("PU_MQTT_PORT", &port),
            ("PU_CLICKHOUSE_URL", &url),
            ("PU_CLICKHOUSE_DATABASE", "soak"),
            ("PU_STATE_SEND_INTERVAL", "1"),
        ],
    )
    .await;
    let (_, report) = fresh_soak(&inst).await;
    assert_eq!(report.mode, "external");
    assert_complete(&report, 100);
    inst.stop().await;
}
