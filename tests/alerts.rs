//! Alerts and the Telegram bot against a local fake of the Bot API (tests/common/telegram.rs):
//! linking a chat with a one-time code, a device's error log line reaching its owner's chat
//! once, floods throttled and summarised, mutes, the EMQX webhook path, the bot's commands in
//! both languages, `/chart` (a PNG over sendPhoto), and webhook mode.

mod common;

use std::time::Duration;

use common::fixtures::{
    import_n_records, output_node, pipe_config, registry_repo_unit, FirmwareRepo,
};
use common::mqtt::{base_topic, unit_token, MqttDevice};
use common::telegram::{link, start_instance, FakeTelegram, BOT_USERNAME};
use common::{Backend, TestInstance};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const OWNER_CHAT: i64 = 5_550_001;

async fn start(backend: Backend, tg: &FakeTelegram, extra: &[(&str, &str)]) -> TestInstance {
    start_instance(tg, backend, extra).await
}

/// The unit's device connected over the embedded broker, and its `log` topic.
async fn log_device(inst: &TestInstance, unit: &Value) -> (MqttDevice, String) {
    let uuid = unit["uuid"].as_str().unwrap();
    let dev = MqttDevice::connect(inst.config.mqtt_bind.port(), uuid, &unit_token(inst, unit))
        .await
        .unwrap();
    (dev, base_topic(inst, unit, "output_base_topic", "log"))
}

/// `PATCH /units/alerts/{uuid}` as `token`.
async fn set_alerts(inst: &TestInstance, token: &str, uuid: &str, body: Value) -> (u16, Value) {
    let (s, v) = inst
        .patch(&format!("/units/alerts/{uuid}"), Some(token), body)
        .await;
    (s.as_u16(), v)
}

async fn alert_counters(inst: &TestInstance, admin: &str) -> Value {
    let (s, body) = inst.get("/metrics/alerts", Some(admin)).await;
    assert_eq!(s.as_u16(), 200, "{body}");
    body
}

async fn wait_counter(inst: &TestInstance, admin: &str, key: &str, at_least: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = alert_counters(inst, admin).await;
        if c[key].as_u64().unwrap() >= at_least {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never reached {at_least}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// From a device's MQTT log message to a message at the fake Bot API: once, floods held back
/// and summarised, lines under the threshold ignored, muted units silent.
async fn device_errors_reach_the_owner(backend: Backend) {
    let tg = FakeTelegram::start().await;
    let inst = start(backend, &tg, &[("PU_TELEGRAM_ALERT_INTERVAL", "2")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (owner_uuid, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "boiler", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    assert_eq!(unit["alert_log_level"], "Error", "{unit}");
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    let (_, me) = inst
        .get(&format!("/users/{owner_uuid}"), Some(&owner))
        .await;
    assert_eq!(
        me["status"], "Verified",
        "linking verifies the account: {me}"
    );

    let (dev, log) = log_device(&inst, &unit).await;
    dev.publish(
        &log,
        json!({"level": "Info", "text": "boot ok"}).to_string(),
    )
    .await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "pump <3> & valve stuck"}).to_string(),
    )
    .await;
    let first = tg
        .wait_for(OWNER_CHAT, "pump &lt;3&gt; &amp; valve stuck", WAIT)
        .await;
    assert!(first.text.contains("boiler"), "{first:?}");
    assert_eq!(first.parse_mode.as_deref(), Some("HTML"));

    // a flood within the interval is held back and summarised once the interval is over
    for i in 0..5 {
        let level = if i == 4 { "Critical" } else { "Error" };
        dev.publish(
            &log,
            json!({"level": level, "text": format!("overheat {i}")}).to_string(),
        )
        .await;
    }
    dev.publish(
        &log,
        json!({"level": "Warning", "text": "under threshold"}).to_string(),
    )
    .await;
    let summary = tg.wait_for(OWNER_CHAT, "Held back: 5", WAIT).await;
    assert!(summary.text.contains("4 Error, 1 Critical"), "{summary:?}");
    assert!(
        summary.text.contains("overheat 4"),
        "the last held line is quoted: {summary:?}"
    );
    let alerts: Vec<_> = tg
        .sent_to(OWNER_CHAT)
        .into_iter()
        .filter(|s| s.text.contains("boiler"))
        .collect();
    assert_eq!(alerts.len(), 2, "one alert and one summary: {alerts:#?}");
    assert!(tg
        .sent()
        .iter()
        .all(|s| !s.text.contains("under threshold") && !s.text.contains("boot ok")));
    let c = wait_counter(&inst, &admin, "sent", 2).await;
    assert_eq!(c["held"], 5, "{c}");
    assert_eq!(c["source"], "mqtt core", "{c}");

    // muted: nothing reaches the chat; unmuted: the next line does
    let (s, muted) = set_alerts(&inst, &owner, &uuid, json!({"mute_seconds": 3600})).await;
    assert_eq!(s, 200, "{muted}");
    assert!(muted["alerts_muted_until"].is_string(), "{muted}");
    let before = alert_counters(&inst, &admin).await["undeliverable"]
        .as_u64()
        .unwrap();
    // after the interval, so the line is not merely held back
    tokio::time::sleep(Duration::from_millis(2100)).await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "while muted"}).to_string(),
    )
    .await;
    wait_counter(&inst, &admin, "undeliverable", before + 1).await;
    let (s, _) = set_alerts(&inst, &owner, &uuid, json!({"mute_seconds": 0})).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "after unmute"}).to_string(),
    )
    .await;
    tg.wait_for(OWNER_CHAT, "after unmute", WAIT).await;
    assert!(tg.sent().iter().all(|s| !s.text.contains("while muted")));

    // a blocked owner hears nothing; unblocked, the next line reaches the chat again
    let block = |path: &'static str| {
        let (inst, admin, owner_uuid) = (&inst, &admin, &owner_uuid);
        async move {
            let (s, v) = inst
                .call("PATCH", &format!("{path}{owner_uuid}"), Some(admin), None)
                .await;
            assert_eq!(s.as_u16(), 204, "{path}: {v}");
        }
    };
    block("/users/block/").await;
    let before = alert_counters(&inst, &admin).await["undeliverable"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "while blocked"}).to_string(),
    )
    .await;
    wait_counter(&inst, &admin, "undeliverable", before + 1).await;
    block("/users/unblock/").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "after unblock"}).to_string(),
    )
    .await;
    tg.wait_for(OWNER_CHAT, "after unblock", WAIT).await;
    assert!(tg.sent().iter().all(|s| !s.text.contains("while blocked")));

    // settings: only the creator, only known levels, bounded mutes
    let (_, stranger) = inst.user("stranger").await;
    let (s, _) = set_alerts(&inst, &stranger, &uuid, json!({"alert_log_level": "Debug"})).await;
    assert_eq!(s, 403);
    let (s, _) = set_alerts(&inst, &owner, &uuid, json!({"alert_log_level": "Loud"})).await;
    assert_eq!(s, 422);
    let (s, _) = set_alerts(&inst, &owner, &uuid, json!({"mute_seconds": -5})).await;
    assert_eq!(s, 422);
    let (s, read) = set_alerts(&inst, &owner, &uuid, json!({"alert_log_level": "Critical"})).await;
    assert_eq!(s, 200);
    assert_eq!(read["alert_log_level"], "Critical");
    inst.stop().await;
}

/// EMQX's rule path: authenticated, filtered by the unit's level on the fresh row, and a
/// redelivered message id is not alerted twice.
async fn emqx_webhook(backend: Backend) {
    let tg = FakeTelegram::start().await;
    let inst = start(backend, &tg, &[("PU_TELEGRAM_ALERT_INTERVAL", "0")]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "tank", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    let secret = inst
        .running
        .as_ref()
        .unwrap()
        .instance
        .emqx_webhook_secret();
    let topic = base_topic(&inst, &unit, "output_base_topic", "log");
    let post = |auth: Option<String>, body: Value| {
        let req = inst.http.post(inst.url("/units/alerts/emqx")).json(&body);
        let req = match auth {
            Some(a) => req.header("authorization", a),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let msg = |id: &str, payload: Value| json!({"id": id, "topic": topic, "payload": payload.to_string()});
    let good = Some(format!("Bearer {secret}"));
    assert_eq!(
        post(None, msg("m0", json!({"level":"Error","text":"x"}))).await,
        403
    );
    assert_eq!(
        post(
            Some("Bearer nope".into()),
            msg("m0", json!({"level":"Error","text":"x"}))
        )
        .await,
        403
    );
    let other =
        json!({"id": "m9", "topic": format!("{}/{uuid}/pepeunit", inst.domain), "payload": "{}"});
    assert_eq!(post(good.clone(), other).await, 422);
    let lines = json!([{"level":"Warning","text":"low"},{"level":"Critical","text":"tank burst"}]);
    assert_eq!(post(good.clone(), msg("m1", lines.clone())).await, 204);
    assert_eq!(
        post(good.clone(), msg("m1", lines)).await,
        204,
        "a retry is accepted"
    );
    tg.wait_for(OWNER_CHAT, "tank burst", WAIT).await;
    // the level change applies at once on this path
    let (s, _) = set_alerts(&inst, &owner, &uuid, json!({"alert_log_level": "Warning"})).await;
    assert_eq!(s, 200);
    assert_eq!(
        post(
            good.clone(),
            msg("m2", json!({"level":"Warning","text":"getting low"}))
        )
        .await,
        204
    );
    tg.wait_for(OWNER_CHAT, "getting low", WAIT).await;
    // counted once Telegram answered, a moment after the fake recorded the message
    let c = wait_counter(&inst, &admin, "sent", 2).await;
    assert_eq!(c["duplicates"], 1, "{c}");
    assert_eq!(
        tg.sent_to(OWNER_CHAT)
            .iter()
            .filter(|s| s.text.contains("tank burst"))
            .count(),
        1,
        "no alert twice"
    );
    inst.stop().await;
}

both_backends!(device_errors_reach_the_owner, emqx_webhook);

/// The bot's commands, as the linked owner and as strangers, in English and Russian.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_commands() {
    let tg = FakeTelegram::start().await;
    let inst = start(Backend::Sqlite, &tg, &[]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, _admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "greenhouse", "Private").await;
    let uuid = unit["uuid"].as_str().unwrap().to_string();
    let firmware2 = FirmwareRepo::create().await;
    let (_, _, _other) =
        registry_repo_unit(&inst, &_admin, &firmware2, "admins_unit", "Public").await;

    // an unlinked chat is told how to link; a wrong code is refused
    tg.say(777, "/units", "en");
    tg.wait_for(777, "not linked", WAIT).await;
    tg.say(777, "/start WRONGCOD", "en");
    tg.wait_for(777, "unknown, used or expired", WAIT).await;
    tg.say(777, "/info", "en");
    tg.wait_for(777, "Domain", WAIT).await;

    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    // a code is one-time
    let (_, l) = inst
        .get("/users/generate_verification_link/", Some(&owner))
        .await;
    let code = l.as_str().unwrap().rsplit('=').next().unwrap().to_string();
    tg.say(OWNER_CHAT, &format!("/start {code}"), "en");
    tg.wait_for(OWNER_CHAT, "Linked to", WAIT).await;
    tg.say(888, &format!("/start {code}"), "en");
    tg.wait_for(888, "unknown, used or expired", WAIT).await;

    let (dev, log) = log_device(&inst, &unit).await;
    dev.publish(
        &log,
        json!([{"level":"Info","text":"fan on"},{"level":"Error","text":"soil sensor lost"}])
            .to_string(),
    )
    .await;
    // wait until the lines are stored
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, logs) = inst
            .get(&format!("/units/log_list/?uuid={uuid}"), Some(&owner))
            .await;
        if logs["count"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tg.say(OWNER_CHAT, "/units", "en");
    let units = tg.wait_for(OWNER_CHAT, "Your units", WAIT).await;
    assert!(units.text.contains("greenhouse"), "{units:?}");
    assert!(
        !units.text.contains("admins_unit"),
        "only the caller's units: {units:?}"
    );
    tg.say(OWNER_CHAT, "/unit greenhouse_unit", "en");
    let detail = tg.wait_for(OWNER_CHAT, "Firmware update", WAIT).await;
    assert!(
        detail.text.contains("soil sensor lost") && detail.text.contains("fan on"),
        "{detail:?}"
    );
    tg.say(OWNER_CHAT, "/logs greenhouse_unit error", "en");
    let only_errors = tg
        .wait_for(OWNER_CHAT, "<b>greenhouse_unit</b>\n<code>", WAIT)
        .await;
    assert!(
        only_errors.text.contains("soil sensor lost"),
        "{only_errors:?}"
    );
    assert!(!only_errors.text.contains("fan on"), "{only_errors:?}");
    tg.say(OWNER_CHAT, "/unit admins_unit_unit", "en");
    tg.wait_for(
        OWNER_CHAT,
        "You have no unit named <b>admins_unit_unit</b>",
        WAIT,
    )
    .await;

    // commands reach the device
    let mut dev = dev;
    assert!(
        dev.subscribe(&base_topic(&inst, &unit, "input_base_topic", "log_sync"))
            .await
    );
    tg.say(OWNER_CHAT, "/send greenhouse_unit log_sync", "en");
    tg.wait_for(OWNER_CHAT, "Sent <b>LogSync</b>", WAIT).await;
    assert!(dev
        .recv_on(
            &base_topic(&inst, &unit, "input_base_topic", "log_sync"),
            WAIT
        )
        .await
        .is_some());
    tg.say(OWNER_CHAT, "/send greenhouse_unit selfdestruct", "en");
    tg.wait_for(OWNER_CHAT, "Usage: /send", WAIT).await;

    // alert settings
    tg.say(OWNER_CHAT, "/alerts greenhouse_unit warning", "en");
    tg.wait_for(OWNER_CHAT, "alerts from Warning", WAIT).await;
    tg.say(OWNER_CHAT, "/mute greenhouse_unit 2", "en");
    tg.wait_for(OWNER_CHAT, "muted until", WAIT).await;
    let (_, read) = inst.get(&format!("/units/{uuid}"), Some(&owner)).await;
    assert_eq!(read["alert_log_level"], "Warning");
    assert!(read["alerts_muted_until"].is_string(), "{read}");
    tg.say(OWNER_CHAT, "/unmute greenhouse_unit", "en");
    tg.wait_for(OWNER_CHAT, "are on", WAIT).await;

    // flood control: Telegram's 429 is waited out, the answer still arrives
    tg.flood(1);
    tg.say(OWNER_CHAT, "/help", "en");
    tg.wait_for(OWNER_CHAT, "/units [page]", WAIT).await;

    // Russian, from the Telegram client's language or chosen with /lang
    tg.say(OWNER_CHAT, "/lang ru", "en");
    tg.wait_for(OWNER_CHAT, "Буду писать по-русски", WAIT).await;
    tg.say(OWNER_CHAT, "/units", "en");
    tg.wait_for(OWNER_CHAT, "Ваши юниты", WAIT).await;
    tg.say(999, "/help", "ru");
    tg.wait_for(999, "Бот Pepeunit", WAIT).await;
    tg.say(OWNER_CHAT, "/frobnicate", "en");
    tg.wait_for(OWNER_CHAT, "Неизвестная команда", WAIT).await;

    // the root document names the bot
    let (_, root) = inst
        .call("GET", &format!("{}/pepeunit", inst.base), None, None)
        .await;
    assert_eq!(
        root["telegram_bot"],
        format!("https://t.me/{BOT_USERNAME}"),
        "{root}"
    );
    assert_eq!(root["feature_flags"]["pu_ff_telegram_bot_enable"], true);
    assert!(
        tg.calls().contains(&"deletewebhook".to_string()),
        "polling clears a webhook first"
    );
    inst.stop().await;
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &bytes[..bytes.len().min(16)]
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Turns the node's data pipe on with `yaml` (as its creator).
const N_RECORDS_500: &str = "active_period:
  type: Permanent
filters:
  type_input_value: Number
  max_rate: 0
  max_size: 100
processing_policy:
  policy_type: NRecords
  n_records_count: 500
";

/// `/chart NODE [PERIOD]`: the owner's node data as a PNG over sendPhoto (by name and by
/// uuid, both languages); a LastValue node, a node without a pipe, an unknown node, someone
/// else's private node and bad periods get texts instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_command() {
    let tg = FakeTelegram::start().await;
    let inst = start(Backend::Sqlite, &tg, &[]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner1").await;
    let (_, stranger) = inst.user("stranger1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "greenhouse", "Private").await;
    let node = output_node(&inst, &owner, &unit, "current_temp/pepeunit").await;
    let firmware2 = FirmwareRepo::create().await;
    let (_, _, theirs) =
        registry_repo_unit(&inst, &stranger, &firmware2, "neighbour", "Private").await;
    let their_node = output_node(&inst, &stranger, &theirs, "current_temp/pepeunit").await;
    pipe_config(&inst, &stranger, &their_node, N_RECORDS_500).await;
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    let name = "greenhouse_unit/current_temp/pepeunit";

    // no pipeline yet: nothing to draw, said so
    tg.say(OWNER_CHAT, &format!("/chart {name}"), "en");
    tg.wait_for(OWNER_CHAT, "its data pipe is off or has no config", WAIT)
        .await;

    // 300 values over the last five hours (CSV import, the REST path), one not a number
    pipe_config(&inst, &owner, &node, N_RECORDS_500).await;
    let now = chrono::Utc::now().naive_utc();
    let rows: Vec<_> = (0..300)
        .map(|i| {
            let at = now - chrono::Duration::seconds(60 * (300 - i) - 30);
            (at, format!("{:.2}", 20.0 + (i as f64 / 20.0).sin() * 5.0))
        })
        .collect();
    import_n_records(&inst, &owner, &node, 500, &rows).await;

    tg.say(OWNER_CHAT, &format!("/chart {name}"), "en");
    let photo = tg.wait_for_photo(OWNER_CHAT, 1, WAIT).await;
    assert_eq!(png_size(&photo.bytes), (800, 500));
    let caption = photo.caption.clone().unwrap();
    assert!(
        caption.contains("greenhouse_unit/current_temp/pepeunit")
            && caption.contains("24h")
            && caption.contains("300 values"),
        "{caption}"
    );
    assert_eq!(photo.parse_mode.as_deref(), Some("HTML"));
    // by uuid, a shorter period: the last hour holds 60 values
    tg.say(OWNER_CHAT, &format!("/chart {node} 1h"), "en");
    let photo = tg.wait_for_photo(OWNER_CHAT, 2, WAIT).await;
    assert_eq!(png_size(&photo.bytes), (800, 500));
    let caption = photo.caption.unwrap();
    assert!(
        caption.contains("1h") && caption.contains(" 60 values"),
        "{caption}"
    );

    // refusals, each a clear text and no photo
    tg.say(OWNER_CHAT, "/chart greenhouse_unit/nope", "en");
    tg.wait_for(
        OWNER_CHAT,
        "You have no node you may read named <b>greenhouse_unit/nope</b>",
        WAIT,
    )
    .await;
    tg.say(OWNER_CHAT, &format!("/chart {their_node}"), "en");
    tg.wait_for(OWNER_CHAT, &format!("named <b>{their_node}</b>"), WAIT)
        .await;
    tg.say(
        OWNER_CHAT,
        "/chart neighbour_unit/current_temp/pepeunit",
        "en",
    );
    tg.wait_for(
        OWNER_CHAT,
        "named <b>neighbour_unit/current_temp/pepeunit</b>",
        WAIT,
    )
    .await;
    for bad in ["5x", "0h", "400d", "30s"] {
        let before = tg.sent_to(OWNER_CHAT).len();
        tg.say(OWNER_CHAT, &format!("/chart {name} {bad}"), "en");
        tg.wait_for(
            OWNER_CHAT,
            "Usage: /chart UNIT/TOPIC|NODE_UUID [PERIOD",
            WAIT,
        )
        .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tg.sent_to(OWNER_CHAT).len() == before {
            assert!(tokio::time::Instant::now() < deadline, "{bad}: no answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = tg.sent_to(OWNER_CHAT).pop().unwrap();
        assert!(last.text.starts_with("Usage: /chart"), "{bad}: {last:?}");
    }
    tg.say(OWNER_CHAT, "/chart", "en");
    tg.wait_for(OWNER_CHAT, "Usage: /chart", WAIT).await;
    // an hour with no values
    let (s, _) = inst
        .delete(
            &format!("/unit_nodes/delete_data_pipe_data/{node}"),
            Some(&owner),
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    tg.say(OWNER_CHAT, &format!("/chart {name} 1h"), "en");
    tg.wait_for(OWNER_CHAT, "no numeric values in the last 1h", WAIT)
        .await;
    assert_eq!(tg.photos_to(OWNER_CHAT).len(), 2, "refusals send no photo");

    // LastValue: one value, said as such
    pipe_config(
        &inst,
        &owner,
        &node,
        &N_RECORDS_500.replace(
            "policy_type: NRecords\n  n_records_count: 500",
            "policy_type: LastValue",
        ),
    )
    .await;
    tg.say(OWNER_CHAT, &format!("/chart {name}"), "en");
    tg.wait_for(OWNER_CHAT, "keeps the last value only", WAIT)
        .await;

    // Russian
    tg.say(OWNER_CHAT, "/lang ru", "en");
    tg.wait_for(OWNER_CHAT, "Буду писать по-русски", WAIT).await;
    tg.say(OWNER_CHAT, &format!("/chart {name} 7"), "en");
    tg.wait_for(OWNER_CHAT, "Формат: /chart", WAIT).await;
    tg.say(OWNER_CHAT, "/chart greenhouse_unit/nope", "en");
    tg.wait_for(OWNER_CHAT, "У вас нет доступной ноды", WAIT)
        .await;
    tg.say(OWNER_CHAT, &format!("/chart {name}"), "en");
    tg.wait_for(OWNER_CHAT, "хранит только последнее значение", WAIT)
        .await;
    tg.say(OWNER_CHAT, "/help", "en");
    tg.wait_for(OWNER_CHAT, "/chart ЮНИТ/ТОПИК", WAIT).await;
    inst.stop().await;
}

/// The fake Bot API refuses a sendPhoto as Telegram does: no photo, a file that is no image
/// (a PNG the way the bot sends it is taken).
#[tokio::test]
async fn fake_telegram_refuses_bad_photos() {
    use reqwest::multipart::{Form, Part};
    let tg = FakeTelegram::start().await;
    let url = format!("{}/bot{}/sendPhoto", tg.url, common::telegram::TOKEN);
    let send_photo = |form: Form| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new().post(url).multipart(form).send();
            r.await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let file = |bytes: &[u8]| Part::bytes(bytes.to_vec()).file_name("a.png");
    let no_photo = send_photo(Form::new().text("chat_id", "42")).await;
    assert_eq!(
        no_photo["description"],
        "Bad Request: there is no photo in the request"
    );
    let text = send_photo(
        Form::new()
            .text("chat_id", "42")
            .part("photo", file(b"hello")),
    )
    .await;
    assert_eq!(text["description"], "Bad Request: IMAGE_PROCESS_FAILED");
    assert!(tg.photos_to(42).is_empty());
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend([0, 0, 3, 32, 0, 0, 1, 244]); // 800 x 500
    let form = Form::new()
        .text("chat_id", "42")
        .text("photo", "attach://f1")
        .part("f1", file(&png));
    assert_eq!(send_photo(form).await["ok"], true);
    assert_eq!(tg.photos_to(42)[0].bytes, png);
}

/// Webhook mode: the webhook is registered with a secret; only requests carrying it are
/// handled, and a redelivered update is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode() {
    let tg = FakeTelegram::start().await;
    let inst = start(Backend::Sqlite, &tg, &[("PU_TELEGRAM_MODE", "webhook")]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let (url, secret) = loop {
        if let Some(w) = tg.webhook() {
            break w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "setWebhook never called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(url, format!("http://{}/pepeunit/api/v1/bot", inst.domain));
    assert!(secret.len() >= 32);
    let update = tg.update(4242, "/help", "en");
    let send = |secret: Option<&str>, body: Value| {
        let mut req = inst.http.post(inst.url("/bot")).json(&body);
        if let Some(s) = secret {
            req = req.header("x-telegram-bot-api-secret-token", s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(None, update.clone()).await, 403);
    assert_eq!(send(Some("wrong"), update.clone()).await, 403);
    assert_eq!(send(Some(&secret), json!({"garbage": true})).await, 422);
    assert_eq!(send(Some(&secret), update.clone()).await, 200);
    assert_eq!(send(Some(&secret), update).await, 200);
    tg.wait_for(4242, "/units [page]", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tg.sent_to(4242).len(),
        1,
        "a redelivered update is answered once"
    );
    assert!(!tg.calls().contains(&"getupdates".to_string()));
    inst.stop().await;
}

/// Without a bot token: no link, no webhook, flags off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bot_configured() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let (_, user) = inst.user("admin1").await;
    let (s, _) = inst
        .get("/users/generate_verification_link/", Some(&user))
        .await;
    assert_eq!(s.as_u16(), 405);
    let (s, _) = inst.post("/bot", None, json!({})).await;
    assert_eq!(s.as_u16(), 405);
    let (_, root) = inst
        .call("GET", &format!("{}/pepeunit", inst.base), None, None)
        .await;
    assert_eq!(root["feature_flags"]["pu_ff_telegram_bot_enable"], false);
    assert!(root["telegram_bot"].is_null());
    let c = alert_counters(&inst, &user).await;
    assert_eq!(c["enabled"], false);
    inst.stop().await;
}

/// A lost broker connection is a crash alert: it reaches every linked admin's chat (once per
/// incident, in the admin's language) and shows in the node's error tracker; a linked user
/// who is not an admin hears nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_loss_reaches_the_admins() {
    const ADMIN_CHAT: i64 = 5_550_009;
    let Some(broker) = common::mosquitto::Mosquitto::start().await else {
        eprintln!("skipped: no mosquitto (scripts/test.sh installs it)");
        return;
    };
    let tg = FakeTelegram::start().await;
    let port = broker.port.to_string();
    let inst = start(
        Backend::Sqlite,
        &tg,
        &[
            ("PU_MQTT_MODE", "external"),
            ("PU_MQTT_BACKEND_HOST", "127.0.0.1"),
            ("PU_MQTT_BACKEND_PORT", &port),
            ("PU_MQTT_PORT", &port),
        ],
    )
    .await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    link(&inst, &tg, &admin, ADMIN_CHAT, "ru").await;
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, mqtt) = inst.get("/metrics/mqtt", Some(&admin)).await;
        if mqtt["backend_connected"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never connected: {mqtt}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(broker); // kills mosquitto
    let alert = tg
        .wait_for(ADMIN_CHAT, "mqtt connection lost", Duration::from_secs(30))
        .await;
    assert!(
        alert.text.contains("Проблема узла Pepeunit"),
        "{}",
        alert.text
    );
    assert!(alert.text.contains("случаев: 1"), "{}", alert.text);

    let (s, node) = inst.get("/metrics/node", Some(&admin)).await;
    assert_eq!(s.as_u16(), 200, "{node}");
    let lost = node["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "mqtt connection lost")
        .unwrap_or_else(|| panic!("not tracked: {node}"));
    assert!(lost["count"].as_u64().unwrap() >= 1, "{lost}");
    // the core keeps retrying; the same failure is not announced again
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin_alerts = tg
        .sent_to(ADMIN_CHAT)
        .iter()
        .filter(|m| m.text.contains("mqtt connection lost"))
        .count();
    assert_eq!(admin_alerts, 1, "{:?}", tg.sent_to(ADMIN_CHAT));
    assert!(
        !tg.sent_to(OWNER_CHAT)
            .iter()
            .any(|m| m.text.contains("mqtt connection lost")),
        "only admins get crash alerts"
    );
    inst.stop().await;
}

/// Lines held back by the throttle are not swallowed by a restart: stopping the instance
/// sends their summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lines_are_summarised_when_the_instance_stops() {
    let tg = FakeTelegram::start().await;
    let inst = start(
        Backend::Sqlite,
        &tg,
        &[("PU_TELEGRAM_ALERT_INTERVAL", "3600")],
    )
    .await;
    let firmware = FirmwareRepo::create().await;
    let (_, admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, _, unit) = registry_repo_unit(&inst, &owner, &firmware, "kiln", "Private").await;
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    let (dev, log) = log_device(&inst, &unit).await;
    dev.publish(
        &log,
        json!({"level": "Error", "text": "door open"}).to_string(),
    )
    .await;
    tg.wait_for(OWNER_CHAT, "door open", WAIT).await;
    for text in ["too hot", "much too hot"] {
        dev.publish(&log, json!({"level": "Critical", "text": text}).to_string())
            .await;
    }
    wait_counter(&inst, &admin, "held", 2).await;
    assert!(
        !tg.sent_to(OWNER_CHAT)
            .iter()
            .any(|m| m.text.contains("much too hot")),
        "held within the hour"
    );
    drop(dev);
    inst.stop().await;
    let summary = tg
        .sent_to(OWNER_CHAT)
        .into_iter()
        .find(|m| m.text.contains("Held back: 2"))
        .unwrap_or_else(|| panic!("no summary at stop: {:?}", tg.sent_to(OWNER_CHAT)));
    assert!(summary.text.contains("much too hot"), "{}", summary.text);
}
