//! Unit logs: `GET /units/log_list/` over HTTP and the service/store calls MQTT ingest uses
//! (API.md §3 UnitLogRead, §4 units). Until ingest exists, logs are written through the library.

mod common;

use chrono::NaiveDateTime;
use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{assert_detail, Backend, TestInstance};
use pepeunit::domain::{format_time, parse_time, LogLevel, Order};
use pepeunit::service::Instance;
use pepeunit::store::unit_logs::{self, NewUnitLog};
use serde_json::{json, Value};
use uuid::Uuid;

/// An instance with one user and one unit of theirs on the fixture firmware.
struct World {
    inst: TestInstance,
    _firmware: FirmwareRepo,
    token: String,
    repo: Value,
    unit: Uuid,
}

impl World {
    async fn new(backend: Backend) -> World {
        Self::with(backend, &[]).await
    }

    async fn with(backend: Backend, extra: &[(&str, &str)]) -> World {
        let inst = TestInstance::start_with(backend, extra).await;
        let firmware = FirmwareRepo::create().await;
        let (_, token) = inst.user("owner1").await;
        let (_, repo, unit) = registry_repo_unit(&inst, &token, &firmware, "fan", "Public").await;
        let unit = unit["uuid"].as_str().unwrap().parse().unwrap();
        World {
            inst,
            _firmware: firmware,
            token,
            repo,
            unit,
        }
    }

    fn instance(&self) -> &Instance {
        &self.inst.running.as_ref().unwrap().instance
    }

    /// Another unit of the owner on the same repo.
    async fn add_unit(&self, name: &str) -> Uuid {
        let (s, unit) = self
            .inst
            .post(
                "/units",
                Some(&self.token),
                json!({"repo_uuid": self.repo["uuid"], "visibility_level": "Public", "name": name, "is_auto_update_from_repo_unit": true}),
            )
            .await;
        assert_eq!(s, 201, "{unit}");
        unit["uuid"].as_str().unwrap().parse().unwrap()
    }

    /// A unit's own token, as a device gets it from its env.json.
    async fn unit_token(&self, unit: Uuid) -> String {
        let (s, env) = self
            .inst
            .get(&format!("/units/env/{unit}"), Some(&self.token))
            .await;
        assert_eq!(s, 200, "{env}");
        env["PU_AUTH_TOKEN"].as_str().unwrap().to_string()
    }

    async fn list(&self, query: &str, token: Option<&str>) -> (axum::http::StatusCode, Value) {
        self.inst
            .get(&format!("/units/log_list/?{query}"), token)
            .await
    }

    /// `(count, texts in answer order)` of a successful list as the owner.
    async fn texts(&self, query: &str) -> (i64, Vec<String>) {
        let (s, v) = self.list(query, Some(&self.token)).await;
        assert_eq!(s, 200, "{query}: {v}");
        let texts = v["unit_logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect();
        (v["count"].as_i64().unwrap(), texts)
    }

    async fn stop(self) {
        self.inst.stop().await;
    }
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

/// `n` logs of `unit`, `line 0` oldest, one second apart, levels cycling Debug..Critical,
/// expiring `lifetime_secs` from now (negative: already expired).
fn logs(unit: Uuid, n: usize, prefix: &str, lifetime_secs: i64) -> Vec<NewUnitLog> {
    let start = now() - chrono::Duration::minutes(30);
    let expiration = format_time(now() + chrono::Duration::seconds(lifetime_secs));
    (0..n)
        .map(|i| NewUnitLog {
            uuid: Uuid::new_v4(),
            unit_uuid: unit,
            level: LEVELS[i % LEVELS.len()],
            text: format!("{prefix} {i}"),
            create_datetime: format_time(start + chrono::Duration::seconds(i as i64)),
            expiration_datetime: expiration.clone(),
        })
        .collect()
}

fn lines(prefix: &str, indexes: impl IntoIterator<Item = usize>) -> Vec<String> {
    indexes
        .into_iter()
        .map(|i| format!("{prefix} {i}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------

async fn list_fields_levels_order_and_paging(backend: Backend) {
    let w = World::new(backend).await;
    let unit = w.unit;
    let mine = logs(unit, 10, "line", 86_400);
    assert_eq!(
        w.instance().store_unit_logs(mine.clone()).await.unwrap(),
        10
    );
    // another unit's logs never show up
    let other = w.add_unit("pump_unit").await;
    w.instance()
        .store_unit_logs(logs(other, 3, "pump", 86_400))
        .await
        .unwrap();

    // exact fields; newest first by default
    let (s, got) = w.list(&format!("uuid={unit}"), Some(&w.token)).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["count"], 10, "{got}");
    let newest = &mine[9];
    assert_eq!(
        got["unit_logs"][0],
        json!({
            "uuid": newest.uuid.to_string(),
            "level": "Critical",
            "unit_uuid": unit.to_string(),
            "text": "line 9",
            "create_datetime": newest.create_datetime,
            "expiration_datetime": newest.expiration_datetime,
        })
    );
    let keys: Vec<&String> = got["unit_logs"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "uuid",
            "level",
            "unit_uuid",
            "text",
            "create_datetime",
            "expiration_datetime"
        ]
    );
    assert_eq!(got["unit_logs"].as_array().unwrap().len(), 10);

    // the path without the trailing slash is the same route (not /units/{uuid})
    let (s, plain) = w
        .inst
        .get(&format!("/units/log_list?uuid={unit}"), Some(&w.token))
        .await;
    assert_eq!(s, 200, "{plain}");
    assert_eq!(plain, got);

    // order
    let (_, desc) = w
        .texts(&format!("uuid={unit}&order_by_create_date=desc"))
        .await;
    assert_eq!(desc, lines("line", (0..10).rev()));
    let (_, asc) = w
        .texts(&format!("uuid={unit}&order_by_create_date=asc"))
        .await;
    assert_eq!(asc, lines("line", 0..10));

    // levels: line i has LEVELS[i % 5]
    let (count, texts) = w
        .texts(&format!("uuid={unit}&level=Error&order_by_create_date=asc"))
        .await;
    assert_eq!((count, texts), (2, lines("line", [3, 8])));
    let (count, texts) = w
        .texts(&format!(
            "uuid={unit}&level=Error&level=Debug&order_by_create_date=asc"
        ))
        .await;
    assert_eq!((count, texts), (4, lines("line", [0, 3, 5, 8])));
    let (s, got) = w
        .list(&format!("uuid={unit}&level=Critical"), Some(&w.token))
        .await;
    assert_eq!(s, 200);
    assert!(got["unit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["level"] == "Critical"));
    assert_eq!(got["count"], 2);

    // paging: count is the total before paging
    let (count, texts) = w
        .texts(&format!(
            "uuid={unit}&order_by_create_date=asc&offset=2&limit=3"
        ))
        .await;
    assert_eq!((count, texts), (10, lines("line", [2, 3, 4])));
    let (count, texts) = w.texts(&format!("uuid={unit}&offset=8")).await;
    assert_eq!((count, texts), (10, lines("line", [1, 0])));
    let (count, texts) = w.texts(&format!("uuid={unit}&limit=0")).await;
    assert_eq!((count, texts.len()), (10, 10));
    let (count, texts) = w.texts(&format!("uuid={unit}&offset=50&limit=5")).await;
    assert_eq!((count, texts.len()), (10, 0));
    let (count, texts) = w
        .texts(&format!("uuid={unit}&level=Info&offset=1&limit=1"))
        .await;
    assert_eq!((count, texts), (2, lines("line", [1])));
    let got = w
        .list(&format!("uuid={unit}&offset=-1"), Some(&w.token))
        .await;
    assert_eq!(got.0, 422, "{}", got.1);
    assert_eq!(got.1, json!({"detail": "offset must be >= 0"}));
    let got = w
        .list(&format!("uuid={unit}&limit=-1"), Some(&w.token))
        .await;
    assert_eq!(got.1, json!({"detail": "limit must be >= 0"}));

    // a unit without logs
    let empty = w.add_unit("empty_unit").await;
    let (count, texts) = w.texts(&format!("uuid={empty}")).await;
    assert_eq!((count, texts.len()), (0, 0));

    // documented in the OpenAPI document like its neighbours
    let (_, doc) = w.inst.get("/openapi.json", None).await;
    let params: Vec<&str> = doc["paths"]["/units/log_list"]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", doc["paths"]))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "uuid",
            "topic",
            "level",
            "start_create_datetime",
            "end_create_datetime",
            "order_by_create_date",
            "offset",
            "limit"
        ]
    );
    assert!(doc["components"]["schemas"]["UnitLog"].is_object());
    w.stop().await;
}

async fn expired_logs_are_hidden_and_purged(backend: Backend) {
    let w = World::with(backend, &[("PU_UNIT_LOG_EXPIRATION", "120")]).await;
    let unit = w.unit;
    let inst = w.instance();
    inst.store_unit_logs(logs(unit, 3, "live", 3_600))
        .await
        .unwrap();
    inst.store_unit_logs(logs(unit, 2, "expired", -1))
        .await
        .unwrap();

    let (count, mut texts) = w.texts(&format!("uuid={unit}")).await;
    texts.sort();
    assert_eq!((count, texts), (3, lines("live", 0..3)));
    let (count, _) = w.texts(&format!("uuid={unit}&level=Debug")).await;
    assert_eq!(count, 1, "the expired Debug line is not counted");

    assert_eq!(inst.purge_expired_unit_logs().await.unwrap(), 2);
    assert_eq!(inst.purge_expired_unit_logs().await.unwrap(), 0);
    let (count, _) = w.texts(&format!("uuid={unit}")).await;
    assert_eq!(count, 3);

    // a line received now expires after PU_UNIT_LOG_EXPIRATION
    let log = inst.new_unit_log(unit, LogLevel::Warning, "fresh".into());
    assert_eq!(log.unit_uuid, unit);
    assert_eq!(log.level, LogLevel::Warning);
    assert_eq!(log.create_datetime.len(), 26);
    let created = parse_time(&log.create_datetime).unwrap();
    let expires = parse_time(&log.expiration_datetime).unwrap();
    assert_eq!((expires - created).num_seconds(), 120);
    assert!((now() - created).num_seconds().abs() < 60);
    inst.store_unit_logs(vec![log.clone()]).await.unwrap();
    let (s, got) = w
        .list(
            &format!("uuid={unit}&order_by_create_date=desc&limit=1"),
            Some(&w.token),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["count"], 4);
    assert_eq!(got["unit_logs"][0]["uuid"], log.uuid.to_string());
    assert_eq!(got["unit_logs"][0]["level"], "Warning");
    assert_eq!(
        got["unit_logs"][0]["expiration_datetime"],
        log.expiration_datetime
    );
    w.stop().await;
}

async fn access(backend: Backend) {
    let w = World::new(backend).await;
    let unit = w.unit;
    w.instance()
        .store_unit_logs(logs(unit, 2, "line", 86_400))
        .await
        .unwrap();
    let query = format!("uuid={unit}");

    // the creator and the unit itself
    let (s, got) = w.list(&query, Some(&w.token)).await;
    assert_eq!((s.as_u16(), got["count"].as_i64()), (200, Some(2)), "{got}");
    let own = w.unit_token(unit).await;
    let (s, got) = w.list(&query, Some(&own)).await;
    assert_eq!((s.as_u16(), got["count"].as_i64()), (200, Some(2)), "{got}");

    // nobody else
    let (_, other_user) = w.inst.user("other1").await;
    assert_detail(
        &w.list(&query, Some(&other_user)).await,
        403,
        "403: 1: No Access: The current user is not the creator",
    );
    let second = w.add_unit("pump_unit").await;
    let second_token = w.unit_token(second).await;
    assert_detail(
        &w.list(&query, Some(&second_token)).await,
        403,
        "403: 1: No Access: A Unit has access only to itself",
    );
    assert_detail(
        &w.list(&query, None).await,
        403,
        "403: 1: No Access: AgentBot access not allowed",
    );
    // refused the same way as env.json, the other "creator or self" read
    let env = w
        .inst
        .get(&format!("/units/env/{unit}"), Some(&second_token))
        .await;
    assert_eq!(w.list(&query, Some(&second_token)).await, env);

    // missing unit, malformed input
    let missing = format!("uuid={}", Uuid::new_v4());
    assert_detail(
        &w.list(&missing, Some(&w.token)).await,
        404,
        "404: 2: Validation Error: The object does not exist",
    );
    assert_detail(
        &w.list(&missing, Some(&own)).await,
        404,
        "The object does not exist",
    );
    for bad in [
        "uuid=not-a-uuid".to_string(),
        String::new(),
        format!("uuid={unit}&level=Loud"),
        format!("uuid={unit}&level=error"),
        format!("uuid={unit}&level=Error&level=Nope"),
        format!("uuid={unit}&order_by_create_date=newest"),
    ] {
        let (s, got) = w.list(&bad, Some(&w.token)).await;
        assert_eq!(s, 422, "{bad}: {got}");
        let detail = got["detail"].as_array().unwrap_or_else(|| panic!("{got}"));
        assert_eq!(detail[0]["loc"][0], "query", "{bad}: {got}");
        assert!(detail[0]["msg"].is_string(), "{got}");
    }
    w.stop().await;
}

async fn deleting_a_unit_clears_its_logs(backend: Backend) {
    let w = World::new(backend).await;
    let inst = w.instance();
    let doomed = w.add_unit("doomed_unit").await;
    let kept = w.unit;
    inst.store_unit_logs(logs(doomed, 4, "doomed", 86_400))
        .await
        .unwrap();
    inst.store_unit_logs(logs(kept, 3, "kept", 86_400))
        .await
        .unwrap();
    let stored = |unit: Uuid| async move {
        let (count, _) = unit_logs::list(
            inst.pool(),
            unit,
            &[],
            None,
            None,
            Order::Desc,
            0,
            0,
            &pepeunit::domain::now(),
        )
        .await
        .unwrap();
        count
    };
    assert_eq!(stored(doomed).await, 4);

    let (s, v) = w
        .inst
        .delete(&format!("/units/{doomed}"), Some(&w.token))
        .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(stored(doomed).await, 0);
    assert_detail(
        &w.list(&format!("uuid={doomed}"), Some(&w.token)).await,
        404,
        "The object does not exist",
    );
    assert_eq!(stored(kept).await, 3);

    // clear_unit_logs (the LogSync command) empties one unit only
    inst.store_unit_logs(logs(doomed, 2, "orphan", 86_400))
        .await
        .unwrap();
    assert_eq!(inst.clear_unit_logs(kept).await.unwrap(), 3);
    assert_eq!(inst.clear_unit_logs(kept).await.unwrap(), 0);
    let (count, _) = w.texts(&format!("uuid={kept}")).await;
    assert_eq!(count, 0);
    assert_eq!(stored(doomed).await, 2);
    w.stop().await;
}

/// A batch larger than one statement may carry goes in whole, or not at all.
async fn store_batch_insert(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let pool = inst.running.as_ref().unwrap().instance.pool().clone();
    let unit = Uuid::new_v4();
    let batch = logs(unit, 5_000, "bulk", 86_400);
    assert_eq!(unit_logs::insert_batch(&pool, &batch).await.unwrap(), 5_000);
    let now = pepeunit::domain::now();
    let (count, page) = unit_logs::list(&pool, unit, &[], None, None, Order::Asc, 4_998, 10, &now)
        .await
        .unwrap();
    assert_eq!(count, 5_000);
    assert_eq!(
        page.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["bulk 4998", "bulk 4999"]
    );
    let (count, _) = unit_logs::list(
        &pool,
        unit,
        &[LogLevel::Critical],
        None,
        None,
        Order::Desc,
        0,
        1,
        &now,
    )
    .await
    .unwrap();
    assert_eq!(count, 1_000);
    assert_eq!(unit_logs::insert_batch(&pool, &[]).await.unwrap(), 0);

    // a line's uuid is its key: one stored already is skipped, not an error (a message
    // the broker delivers again), in the last (partial) statement as in full ones
    let other = Uuid::new_v4();
    let mut again = logs(other, 5_050, "again", 86_400);
    again[5_049].uuid = again[0].uuid;
    assert_eq!(unit_logs::insert_batch(&pool, &again).await.unwrap(), 5_049);
    assert_eq!(unit_logs::insert_batch(&pool, &again).await.unwrap(), 0);
    let (count, _) = unit_logs::list(&pool, other, &[], None, None, Order::Asc, 0, 1, &now)
        .await
        .unwrap();
    assert_eq!(count, 5_049);

    assert_eq!(
        unit_logs::delete_for_unit(&pool, unit).await.unwrap(),
        5_000
    );
    inst.stop().await;
}

both_backends!(
    list_fields_levels_order_and_paging,
    expired_logs_are_hidden_and_purged,
    access,
    deleting_a_unit_clears_its_logs,
    store_batch_insert,
);
