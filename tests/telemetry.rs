//! The telemetry (unit log) store, the same scenarios on every implementation: the embedded
//! SQL table (SQLite, and PostgreSQL with `PU_TEST_POSTGRES_URL`) and ClickHouse (a server per
//! test from `PU_TEST_CLICKHOUSE`). Lines arrive through the real path (a device publishing on
//! its `log` topic over the embedded broker) and as direct batches; they are read back through
//! `GET /units/log_list/`, by uuid and by topic.

mod common;

use std::time::Duration;

use chrono::NaiveDateTime;
use common::clickhouse::ClickHouse;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::mqtt::{base_topic, unit_token, MqttDevice};
use common::{Backend, TestInstance};
use pepeunit::domain::{format_time, LogLevel};
use pepeunit::service::transfer::{collect, ExportOptions, ExportScope};
use pepeunit::service::Instance;
use pepeunit::store::unit_logs::NewUnitLog;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Which log store a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
    ClickHouse,
}

/// An instance on `store` with one user and one unit; keeps its ClickHouse alive.
struct World {
    inst: TestInstance,
    ch: Option<ClickHouse>,
    _firmware: FirmwareRepo,
    token: String,
    owner: String,
    unit: Value,
    uuid: Uuid,
}

impl World {
    /// None when the store cannot run here (the test then skips).
    async fn new(store: Store, extra: &[(&str, &str)]) -> Option<World> {
        let ch = match store {
            Store::ClickHouse => Some(ClickHouse::start().await?),
            _ => None,
        };
        let inst = start(store, ch.as_ref(), "pepeunit", extra).await?;
        let firmware = FirmwareRepo::create().await;
        let (owner, token) = inst.user("owner1").await;
        let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Private").await;
        let uuid = unit["uuid"].as_str().unwrap().parse().unwrap();
        Some(World {
            inst,
            ch,
            _firmware: firmware,
            token,
            owner,
            unit,
            uuid,
        })
    }

    fn instance(&self) -> &Instance {
        instance(&self.inst)
    }

    async fn list(&self, query: &str) -> (u16, Value) {
        let (s, v) = self
            .inst
            .get(&format!("/units/log_list/?{query}"), Some(&self.token))
            .await;
        (s.as_u16(), v)
    }

    /// `(count, texts in answer order)` of a successful list.
    async fn texts(&self, query: &str) -> (i64, Vec<String>) {
        let (s, v) = self.list(query).await;
        assert_eq!(s, 200, "{query}: {v}");
        (v["count"].as_i64().unwrap(), texts(&v))
    }

    /// Polls the list until `done` holds (bounded, no timing asserted).
    async fn wait_list(&self, query: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (s, v) = self.list(query).await;
            assert_eq!(s, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never held: {query}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.inst.stop().await;
        drop(self.ch);
    }
}

async fn start(
    store: Store,
    ch: Option<&ClickHouse>,
    database: &str,
    extra: &[(&str, &str)],
) -> Option<TestInstance> {
    let mut vars: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let backend = match store {
        Store::Postgres => {
            if common::postgres_admin_url().is_none() {
                eprintln!("skipped: PU_TEST_POSTGRES_URL not set");
                return None;
            }
            Backend::Postgres
        }
        _ => Backend::Sqlite,
    };
    if let Some(ch) = ch {
        vars.push(("PU_CLICKHOUSE_URL", ch.url()));
        vars.push(("PU_CLICKHOUSE_DATABASE", database.to_string()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = TestInstance::start_with(backend, &vars).await;
    assert_eq!(
        instance(&inst).logs.kind(),
        if ch.is_some() { "clickhouse" } else { "sql" }
    );
    Some(inst)
}

fn instance(inst: &TestInstance) -> &Instance {
    &inst.running.as_ref().unwrap().instance
}

fn texts(v: &Value) -> Vec<String> {
    v["unit_logs"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

const LEVELS: [LogLevel; 5] = [
    LogLevel::Debug,
    LogLevel::Info,
    LogLevel::Warning,
    LogLevel::Error,
    LogLevel::Critical,
];

/// `n` lines of `unit` created one second apart from `start` (`{prefix} 0` oldest), levels
/// cycling Debug..Critical, expiring at `expires`.
fn batch(
    unit: Uuid,
    n: usize,
    prefix: &str,
    start: NaiveDateTime,
    expires: NaiveDateTime,
) -> Vec<NewUnitLog> {
    (0..n)
        .map(|i| NewUnitLog {
            uuid: Uuid::now_v7(),
            unit_uuid: unit,
            level: LEVELS[i % LEVELS.len()],
            text: format!("{prefix} {i}"),
            create_datetime: format_time(start + chrono::Duration::seconds(i as i64)),
            expiration_datetime: format_time(expires),
        })
        .collect()
}

fn lines(prefix: &str, indexes: impl IntoIterator<Item = usize>) -> Vec<String> {
    indexes
        .into_iter()
        .map(|i| format!("{prefix} {i}"))
        .collect()
}

fn enc(s: &str) -> String {
    s.replace(':', "%3A")
        .replace('/', "%2F")
        .replace('+', "%2B")
}

// ---------------------------------------------------------------------------------------------

/// Ingest over MQTT and as batches; by uuid and by topic; levels, time range, order, paging.
async fn ingest_and_query(store: Store) {
    let Some(w) = World::new(store, &[]).await else {
        return;
    };
    let unit = w.uuid;
    // the real path: a device publishes on its log topic
    let port = w.inst.config.mqtt_bind.port();
    let dev = MqttDevice::connect(port, &unit.to_string(), &unit_token(&w.inst, &w.unit))
        .await
        .unwrap();
    let topic = base_topic(&w.inst, &w.unit, "output_base_topic", "log");
    dev.publish(
        &topic,
        json!({"level": "Error", "text": "sensor failed"}).to_string(),
    )
    .await;
    dev.publish(
        &topic,
        json!([
            {"level": "Info", "text": "boot", "create_datetime": "2026-01-01T00:00:00"},
            {"level": "Warning", "text": "hot"}
        ])
        .to_string(),
    )
    .await;
    let by_uuid = w
        .wait_list(&format!("uuid={unit}&order_by_create_date=asc"), |v| {
            v["count"] == 3
        })
        .await;
    assert_eq!(texts(&by_uuid)[0], "boot", "{by_uuid}");
    let boot = &by_uuid["unit_logs"][0];
    assert_eq!(boot["level"], "Info");
    assert_eq!(boot["create_datetime"], "2026-01-01T00:00:00.000000");
    assert_eq!(boot["unit_uuid"], unit.to_string());
    // the same through the topic
    let (s, by_topic) = w
        .list(&format!("topic={}&order_by_create_date=asc", enc(&topic)))
        .await;
    assert_eq!(s, 200, "{by_topic}");
    assert_eq!(by_topic, by_uuid);

    // a direct batch: 20 lines one second apart, an hour ago
    let other = Uuid::new_v4();
    let t0 = now() - chrono::Duration::hours(1);
    let expires = now() + chrono::Duration::hours(2);
    let mine = batch(unit, 20, "line", t0, expires);
    assert_eq!(
        w.instance().store_unit_logs(mine.clone()).await.unwrap(),
        20
    );
    w.instance()
        .store_unit_logs(batch(other, 5, "other", t0, expires))
        .await
        .unwrap();
    // exact wire fields, microseconds kept
    let (_, got) = w
        .list(&format!(
            "uuid={unit}&level=Critical&order_by_create_date=asc&limit=1"
        ))
        .await;
    let l4 = &mine[4];
    assert_eq!(
        got["unit_logs"][0],
        json!({
            "uuid": l4.uuid.to_string(),
            "level": "Critical",
            "unit_uuid": unit.to_string(),
            "text": "line 4",
            "create_datetime": l4.create_datetime,
            "expiration_datetime": l4.expiration_datetime,
        })
    );
    assert_eq!(got["count"], 4);

    // levels (line i has LEVELS[i % 5]; "sensor failed" is an Error too)
    let (count, t) = w
        .texts(&format!(
            "uuid={unit}&level=Error&level=Debug&order_by_create_date=asc&start_create_datetime={}",
            enc(&format_time(t0))
        ))
        .await;
    assert_eq!(
        (count, t),
        (
            9,
            [
                lines("line", [0, 3, 5, 8, 10, 13, 15, 18]),
                vec!["sensor failed".into()]
            ]
            .concat()
        )
    );
    // time range, both ends inclusive, microsecond precision
    let from = &mine[5].create_datetime;
    let to = &mine[9].create_datetime;
    let (count, t) = w
        .texts(&format!(
            "uuid={unit}&start_create_datetime={}&end_create_datetime={}",
            enc(from),
            enc(to)
        ))
        .await;
    assert_eq!((count, t), (5, lines("line", (5..10).rev())));
    // an RFC 3339 instant with an offset means the same UTC instant
    let shifted = (mine[18].create_datetime.clone(), "+02:00");
    let local = chrono::NaiveDateTime::parse_from_str(&shifted.0, "%Y-%m-%dT%H:%M:%S%.f").unwrap()
        + chrono::Duration::hours(2);
    let (count, _) = w
        .texts(&format!(
            "uuid={unit}&start_create_datetime={}{}",
            enc(&format_time(local)),
            enc(shifted.1)
        ))
        .await;
    assert_eq!(count, 2 + 2, "lines 18, 19 and the two live MQTT lines");
    // order and paging: count is the total before paging, pages are stable
    let (count, t) = w
        .texts(&format!(
            "uuid={unit}&end_create_datetime={}&order_by_create_date=asc&offset=2&limit=3",
            enc(&mine[19].create_datetime)
        ))
        .await;
    assert_eq!((count, t), (21, lines("line", [1, 2, 3])));
    let (count, t) = w.texts(&format!("uuid={unit}&offset=20&limit=5")).await;
    assert_eq!(count, 23);
    assert_eq!(t, ["line 1", "line 0", "boot"]);
    let mut all = Vec::new();
    for page in 0..5 {
        let (_, t) = w
            .texts(&format!("uuid={unit}&offset={}&limit=5", page * 5))
            .await;
        all.extend(t);
    }
    assert_eq!(all.len(), 23);
    assert_eq!(
        all[2..23],
        {
            let mut l = lines("line", (0..20).rev());
            l.push("boot".into());
            l
        }[..]
    );

    // refusals: clear 422s
    let foreign = topic.replacen(&w.inst.domain, "other.example.com", 1);
    let state = base_topic(&w.inst, &w.unit, "output_base_topic", "state");
    for (query, needle) in [
        (format!("topic={}", enc(&foreign)), "another instance"),
        (format!("topic={}", enc(&state)), "not the log topic"),
        ("topic=garbage".to_string(), "topic must be"),
        (
            format!("topic={}", enc(&topic.replace(&unit.to_string(), "nope"))),
            "not a uuid",
        ),
        (format!("uuid={unit}&topic={}", enc(&topic)), "not both"),
        (String::new(), "uuid or topic"),
        (
            format!("uuid={unit}&start_create_datetime=yesterday"),
            "start_create_datetime",
        ),
        (
            format!("uuid={unit}&end_create_datetime=2026-13-01T00:00:00"),
            "end_create_datetime",
        ),
    ] {
        let (s, v) = w.list(&query).await;
        assert_eq!(s, 422, "{query}: {v}");
        assert!(v.to_string().contains(needle), "{query}: {v}");
    }
    drop(dev);
    w.stop().await;
}

/// LogSync and unit deletion hide a unit's lines at once; a device's re-sent lines (old
/// timestamps) show again.
async fn clear_hides_at_once(store: Store) {
    let Some(w) = World::new(store, &[]).await else {
        return;
    };
    let unit = w.uuid;
    let inst = w.instance();
    let t0 = now() - chrono::Duration::minutes(10);
    let expires = now() + chrono::Duration::hours(1);
    inst.store_unit_logs(batch(unit, 6, "old", t0, expires))
        .await
        .unwrap();
    let second = {
        let (s, v) = w
            .inst
            .post(
                "/units",
                Some(&w.token),
                json!({"repo_uuid": w.unit["repo_uuid"], "visibility_level": "Private", "name": "pump_unit", "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["uuid"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    inst.store_unit_logs(batch(second, 4, "pump", t0, expires))
        .await
        .unwrap();
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 6);

    // LogSync: the command clears the stored lines, then the device sends its own again
    let (s, v) = w
        .inst
        .post(
            &format!("/units/send_command_to_input_base_topic/{unit}?command=LogSync"),
            Some(&w.token),
            json!({}),
        )
        .await;
    assert_eq!(s.as_u16(), 204, "{v}");
    assert_eq!(w.texts(&format!("uuid={unit}")).await, (0, vec![]));
    assert_eq!(w.texts(&format!("uuid={second}")).await.0, 4);
    let port = w.inst.config.mqtt_bind.port();
    let dev = MqttDevice::connect(port, &unit.to_string(), &unit_token(&w.inst, &w.unit))
        .await
        .unwrap();
    let topic = base_topic(&w.inst, &w.unit, "output_base_topic", "log");
    dev.publish(
        &topic,
        json!([{"level": "Info", "text": "resent", "create_datetime": format_time(t0)}])
            .to_string(),
    )
    .await;
    let v = w
        .wait_list(&format!("uuid={unit}"), |v| v["count"] == 1)
        .await;
    assert_eq!(texts(&v), ["resent"]);
    // clear_unit_logs answers how many lines were visible
    assert_eq!(inst.clear_unit_logs(unit).await.unwrap(), 1);
    assert_eq!(inst.clear_unit_logs(unit).await.unwrap(), 0);
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 0);

    // deleting a unit clears its lines (listing it is a 404 now, the store has none visible)
    let (s, v) = w
        .inst
        .delete(&format!("/units/{second}"), Some(&w.token))
        .await;
    assert_eq!(s.as_u16(), 204, "{v}");
    assert_eq!(inst.clear_unit_logs(second).await.unwrap(), 0);

    // ClickHouse: the mutation removes the rows for real, eventually
    if let Some(ch) = &w.ch {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = ch
                .sql(&format!(
                    "SELECT count() FROM pepeunit.unit_logs WHERE unit_uuid IN (toUUID('{unit}'), toUUID('{second}'))"
                ))
                .await;
            if left.trim() == "0" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{left} rows left");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(dev);
    w.stop().await;
}

/// A device that sends a message again (its PUBACK was lost with its connection) reaches the
/// core as a new message, without DUP: its keyed lines are stored once on every store, in the
/// same batch as the first copy or in a later one, also when this process first sees the unit
/// after the lines were stored (ClickHouse reads the unit's newest line then); lines hidden by
/// LogSync count as gone, so the device's own copies show again afterwards.
async fn repeats_stored_once(store: Store) {
    let Some(mut w) = World::new(store, &[]).await else {
        return;
    };
    let unit = w.uuid;
    let port = w.inst.config.mqtt_bind.port();
    let dev = MqttDevice::connect(port, &unit.to_string(), &unit_token(&w.inst, &w.unit))
        .await
        .unwrap();
    let topic = base_topic(&w.inst, &w.unit, "output_base_topic", "log");
    let t0 = now() - chrono::Duration::minutes(5);
    let message = |i: i64| {
        let at = format_time(t0 + chrono::Duration::seconds(i));
        json!([{"level": "Info", "text": format!("line {i}a"), "create_datetime": at},
               {"level": "Warning", "text": format!("line {i}b"), "create_datetime": at}])
        .to_string()
    };
    // message 0, then 0 again (a later batch), then 1 and its repeat back to back, then 2
    dev.publish(&topic, message(0)).await;
    w.wait_list(&format!("uuid={unit}"), |v| v["count"] == 2)
        .await;
    for m in [0, 1, 1, 2] {
        dev.publish(&topic, message(m)).await;
    }
    w.wait_list(&format!("uuid={unit}"), |v| v["count"].as_i64() >= Some(6))
        .await;
    // an older repeat after a newer line, and a new line after everything, in one go
    dev.publish(&topic, message(1)).await;
    dev.publish(&topic, message(3)).await;
    let v = w
        .wait_list(&format!("uuid={unit}"), |v| v["count"].as_i64() >= Some(8))
        .await;
    let all = |i: std::ops::Range<i64>| -> Vec<String> {
        i.flat_map(|i| [format!("line {i}a"), format!("line {i}b")])
            .collect()
    };
    assert_eq!(settled_texts(&w).await, (8, all(0..4)), "{v}");

    // a restart on the same data: a repeat of the newest line is still stored once
    drop(dev);
    w.inst.restart(Duration::ZERO).await;
    w.inst.wait_mqtt_ready().await;
    let dev = MqttDevice::connect(port, &unit.to_string(), &unit_token(&w.inst, &w.unit))
        .await
        .unwrap();
    dev.publish(&topic, message(3)).await;
    dev.publish(&topic, message(2)).await;
    dev.publish(&topic, message(4)).await;
    w.wait_list(&format!("uuid={unit}"), |v| v["count"].as_i64() >= Some(10))
        .await;
    assert_eq!(settled_texts(&w).await, (10, all(0..5)));

    // LogSync hides them all; the device's copies come back once each
    assert_eq!(w.instance().clear_unit_logs(unit).await.unwrap(), 10);
    for m in [3, 4, 4] {
        dev.publish(&topic, message(m)).await;
    }
    w.wait_list(&format!("uuid={unit}"), |v| v["count"].as_i64() >= Some(4))
        .await;
    assert_eq!(settled_texts(&w).await, (4, all(3..5)));
    drop(dev);
    w.stop().await;
}

/// The unit's lines after a moment without news (nothing more must arrive), sorted: lines of
/// one message share their time, so their order is the uuid's.
async fn settled_texts(w: &World) -> (i64, Vec<String>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n, mut t) = w.texts(&format!("uuid={}", w.uuid)).await;
    t.sort();
    (n, t)
}

/// Lines vanish from the listing when they expire; the purge (ClickHouse: the partition
/// janitor) frees their space and never changes what is listed.
async fn expiry_and_janitor(store: Store) {
    let Some(w) = World::new(store, &[("PU_UNIT_LOG_EXPIRATION", "2")]).await else {
        return;
    };
    let unit = w.uuid;
    let inst = w.instance();
    // a line received now lives PU_UNIT_LOG_EXPIRATION seconds
    let fresh = inst.new_unit_log(unit, LogLevel::Info, "short-lived".into());
    inst.store_unit_logs(vec![fresh]).await.unwrap();
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 1);
    w.wait_list(&format!("uuid={unit}"), |v| v["count"] == 0)
        .await;

    // lines that expired yesterday and three days ago, and lines living until the day after
    // tomorrow
    let n = now();
    let day = chrono::Duration::days(1);
    let t0 = n - chrono::Duration::days(5);
    inst.store_unit_logs(batch(unit, 3, "yesterday", t0, n - day))
        .await
        .unwrap();
    inst.store_unit_logs(batch(unit, 2, "long ago", t0, n - day * 3))
        .await
        .unwrap();
    inst.store_unit_logs(batch(unit, 4, "live", t0, n + day * 2))
        .await
        .unwrap();
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 4);
    let day_of = |t: NaiveDateTime| t.format("%Y%m%d").to_string();
    if let Some(ch) = &w.ch {
        let before = partitions(ch).await;
        for t in [n - day * 3, n - day, n + day * 2] {
            assert!(before.contains(&day_of(t)), "{before:?}");
        }
    }
    // the janitor as of now: the two past days go (5 lines; the short-lived line of today
    // stays in ClickHouse until its day is over, the SQL store deletes it now)
    let purged = inst.purge_expired_unit_logs_at(now()).await.unwrap();
    match store {
        Store::ClickHouse => assert_eq!(purged, 5),
        _ => assert_eq!(purged, 6),
    }
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 4);
    if let Some(ch) = &w.ch {
        let after = partitions(ch).await;
        assert!(!after.contains(&day_of(n - day)), "{after:?}");
        assert!(!after.contains(&day_of(n - day * 3)), "{after:?}");
        assert!(after.contains(&day_of(n + day * 2)), "{after:?}");
    }
    // as of four days later everything is gone, and nothing is listed meanwhile
    let later = now() + day * 4;
    let purged = inst.purge_expired_unit_logs_at(later).await.unwrap();
    match store {
        Store::ClickHouse => assert_eq!(purged, 1 + 4),
        _ => assert_eq!(purged, 4),
    }
    if let Some(ch) = &w.ch {
        assert_eq!(partitions(ch).await, Vec::<String>::new());
    }
    assert_eq!(inst.purge_expired_unit_logs_at(later).await.unwrap(), 0);
    assert_eq!(w.texts(&format!("uuid={unit}")).await.0, 0);
    w.stop().await;
}

/// An account's logs leave through export (paged unit by unit, more than one archive member)
/// and arrive through import in the other instance's store; a second import remaps them.
async fn export_import_roundtrip(store: Store) {
    let Some(a) = World::new(store, &[]).await else {
        return;
    };
    let b = start(store, a.ch.as_ref(), "pepeunit_b", &[])
        .await
        .unwrap();
    let unit = a.uuid;
    let t0 = now() - chrono::Duration::hours(3);
    let expires = now() + chrono::Duration::hours(3);
    // 20,000 lines per archive member: 25,003 lines make two members
    let mut all = batch(unit, 25_000, "bulk", t0, expires);
    // lines sharing one create_datetime are ordered by uuid across pages
    let same = batch(unit, 3, "same", t0, expires);
    all.extend(same.into_iter().map(|mut l| {
        l.create_datetime = all_time(t0);
        l
    }));
    for chunk in all.chunks(5000) {
        instance(&a.inst)
            .store_unit_logs(chunk.to_vec())
            .await
            .unwrap();
    }
    let export = |inst: Instance, owner: Uuid| async move {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(async move {
            inst.export_archive(
                ExportScope::Account(owner),
                &ExportOptions::default(),
                tx,
                &|_| {},
            )
            .await
        });
        let bytes = collect(rx).await;
        let summary = task.await.unwrap().unwrap();
        (bytes, summary)
    };
    let owner: Uuid = a.owner.parse().unwrap();
    let (archive, summary) = export(instance(&a.inst).clone(), owner).await;
    assert_eq!(summary.records["unit_logs"], 25_003, "{summary:?}");

    let (target, _) = b.user("newowner").await;
    let target: Uuid = target.parse().unwrap();
    let report = instance(&b)
        .import_archive(target, archive.clone(), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.created["unit_logs"], 25_003, "{report:?}");
    assert!(report.remapped.is_empty(), "{report:?}");
    // every line, field by field, through B's listing
    let a_inst = instance(&a.inst);
    let b_inst = instance(&b);
    let q = |unit| pepeunit::telemetry::LogQuery {
        unit_uuid: unit,
        levels: vec![],
        since: None,
        until: None,
        order: pepeunit::domain::Order::Asc,
        offset: 0,
        limit: 0,
    };
    let (na, la) = a_inst.logs.query(&q(unit), now()).await.unwrap();
    let (nb, lb) = b_inst.logs.query(&q(unit), now()).await.unwrap();
    assert_eq!((na, nb), (25_003, 25_003));
    assert_eq!(la, lb);

    // again: the uuids are taken now, the copy's lines get new ones under the copied unit
    let again = b_inst
        .import_archive(target, archive, None, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.created["unit_logs"], 25_003);
    let log_remaps = again
        .remapped
        .iter()
        .filter(|r| r.table == "unit_logs")
        .count();
    assert_eq!(log_remaps, 25_003);
    let copy: Uuid = again.map[&unit.to_string()].parse().unwrap();
    assert_ne!(copy, unit);
    let (nc, lc) = b_inst.logs.query(&q(copy), now()).await.unwrap();
    assert_eq!(nc, 25_003);
    // (the three lines sharing a create_datetime are ordered by their new uuids)
    let sorted = |l: &[pepeunit::store::unit_logs::UnitLog]| {
        let mut t: Vec<_> = l.iter().map(|l| l.text.clone()).collect();
        t.sort();
        t
    };
    assert_eq!(sorted(&lc), sorted(&la));
    b.stop().await;
    a.stop().await;
}

/// The active partitions (expiry days) of the log table.
async fn partitions(ch: &ClickHouse) -> Vec<String> {
    ch.sql(
        "SELECT DISTINCT partition FROM system.parts WHERE database = 'pepeunit' AND table = 'unit_logs' AND active ORDER BY partition FORMAT TSV",
    )
    .await
    .lines()
    .map(|l| l.trim_matches('\'').to_string())
    .collect()
}

fn all_time(t: NaiveDateTime) -> String {
    format_time(t + chrono::Duration::milliseconds(500))
}

macro_rules! every_store {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Store::Sqlite).await }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Store::Postgres).await }
            )+
        }
        mod clickhouse {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Store::ClickHouse).await }
            )+
        }
    };
}

every_store!(
    ingest_and_query,
    clear_hides_at_once,
    repeats_stored_once,
    expiry_and_janitor,
    export_import_roundtrip,
);
