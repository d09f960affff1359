//! A unit's env over HTTP: `PATCH /units/env/{uuid}` with hostile `env_json_string`, then the
//! env.json a device downloads.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{check, hostile_string, json_bytes, json_value, Tally};
use crate::common::fixtures::{registry_repo_unit, FirmwareRepo, ENV_EXAMPLE};
use crate::common::{Backend, TestInstance};

/// The example's keys (which must be resolved), reserved keys and strangers, with values of
/// every type.
fn env_shape() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "WIFI_SSID", "WIFI_PASS", "SENSOR_PERIOD", "PU_DOMAIN", "PU_AUTH_TOKEN",
            "PU_COMMIT_VERSION", "PU_SECRET_KEY", "PU_MQTT_PORT",
        ])
        .prop_map(str::to_string),
        1 => hostile_string(),
    ];
    let example = serde_json::from_str::<Value>(ENV_EXAMPLE).unwrap();
    (
        any::<bool>(),
        prop::collection::vec(
            (
                key,
                prop_oneof![3 => hostile_string().prop_map(Value::String), 1 => json_value()],
            ),
            0..8,
        ),
    )
        .prop_map(move |(complete, kv)| {
            let mut m = if complete {
                example.as_object().unwrap().clone()
            } else {
                Default::default()
            };
            m.extend(kv);
            Value::Object(m)
        })
}

async fn env_json(backend: Backend) {
    let rt = tokio::runtime::Handle::current();
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("owner").await;
    let (_, _, unit) = registry_repo_unit(&inst, &token, &firmware, "envs", "Public").await;
    let path = format!("/units/env/{}", unit["uuid"].as_str().unwrap());
    let inst_ref = &inst;
    let text = json_bytes(env_shape()).prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    let tally = Tally::default();
    tokio::task::block_in_place(|| {
        check(256, text, |text| {
            let (patched, got) = rt.block_on(async {
                let patched = inst_ref
                    .patch(&path, Some(&token), json!({"env_json_string": text}))
                    .await;
                (patched, inst_ref.get(&path, Some(&token)).await)
            });
            let (status, body) = &patched;
            tally.saw(if status.is_success() {
                "saved"
            } else {
                "refused"
            });
            prop_assert!(
                status.as_u16() == 204 || (400..500).contains(&status.as_u16()),
                "{status} {body} for {text:?}"
            );
            if !status.is_success() {
                prop_assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
            }
            // the stored env (the last accepted one) still makes a whole env.json
            prop_assert_eq!(got.0.as_u16(), 200, "{}", got.1);
            let env = got.1.as_object().unwrap();
            prop_assert!(
                !env.contains_key("PU_COMMIT_VERSION") || env["PU_COMMIT_VERSION"].is_string()
            );
            for key in ["WIFI_SSID", "WIFI_PASS", "SENSOR_PERIOD", "PU_AUTH_TOKEN"] {
                prop_assert!(
                    env.get(key).is_some_and(|v| !v.is_null()),
                    "{key} in {}",
                    got.1
                );
            }
            if status.is_success() {
                let sent: Value = serde_json::from_str(&text).unwrap();
                for (k, v) in sent.as_object().unwrap() {
                    if ["WIFI_SSID", "WIFI_PASS", "SENSOR_PERIOD"].contains(&k.as_str())
                        && !v.is_null()
                    {
                        prop_assert_eq!(&env[k], v);
                    } else if !k.starts_with("PU_") {
                        prop_assert!(!env.contains_key(k), "{k} is not an env key");
                    }
                }
            }
            Ok(())
        })
    });
    tally.expect(&["saved", "refused"]);
    inst.stop().await;
}

crate::both_backends!(env_json);
