//! The EMQX objects this worker owns beyond access control: for each Output-side bridge an
//! MQTT connector, action and rule named [`BRIDGE_PREFIX`]`<uuid>` ([`EmqxBridge`]), and the
//! alert forwarding connector, action and rule [`ALERTS_NAME`] ([`EmqxAlerts`], EMQX 5.4+).
//! [`EmqxAdmin`] creates, updates and removes them; objects without our names are never
//! touched.

use std::sync::atomic::Ordering;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::client::{differing, invalid, ok_or_api, EmqxAdmin, EmqxError};
use super::worker::ApplyReport;

impl EmqxAdmin {
    /// The bridges EMQX must carry from now on (the next apply makes it so).
    pub fn set_bridges(&self, bridges: Vec<EmqxBridge>) {
        *self.bridges.lock().expect("bridges lock") = Some(bridges);
    }

    /// Creates, updates and removes our connectors, actions and rules (all named
    /// [`BRIDGE_PREFIX`]...). Objects without the prefix are never touched. Order: connectors
    /// before the actions using them before the rules using those; removal the other way.
    pub(super) async fn apply_bridges(
        &self,
        bridges: &[EmqxBridge],
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        if bridges.is_empty() {
            // nothing to carry: only old objects of ours to remove, and an EMQX before 5.4
            // (no connectors API) cannot hold any
            let (status, _) = self.request(Method::GET, "/connectors", None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(());
            }
        }
        let connectors = self.list(Method::GET, "/connectors").await?;
        let actions = self.list(Method::GET, "/actions").await?;
        let rules_answer = self.expect(Method::GET, "/rules?limit=1000", None).await?;
        let rules = rules_answer
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| invalid(Method::GET, "/rules", "no \"data\" list"))?;
        let find = |list: &[Value], key: &str, name: &str| {
            list.iter()
                .find(|o| o[key] == name && (key == "id" || o["type"] == "mqtt"))
                .cloned()
        };
        for b in bridges {
            let name = b.name();
            // compared: the fields that carry the bridge (EMQX masks the password and fills
            // in defaults, so whole objects would always differ)
            let kinds = [
                (
                    "connector",
                    "/connectors",
                    &connectors,
                    "name",
                    b.connector(),
                    &["enable", "server", "username"][..],
                ),
                (
                    "action",
                    "/actions",
                    &actions,
                    "name",
                    b.action(),
                    &["enable", "connector", "parameters"][..],
                ),
                (
                    "rule",
                    "/rules",
                    &rules,
                    "id",
                    b.rule(),
                    &["enable", "sql", "actions"][..],
                ),
            ];
            for (kind, path, list, key, ours, compared) in kinds {
                let what = format!("bridge {kind} {name}");
                let id = if kind == "rule" {
                    name.clone()
                } else {
                    format!("mqtt:{name}")
                };
                let current = find(list, key, &name);
                let object = Owned {
                    what,
                    path,
                    id: &id,
                    ours,
                    compared,
                };
                self.ensure_object(object, current, |_| true, report)
                    .await?;
            }
        }
        let wanted: Vec<String> = bridges.iter().map(EmqxBridge::name).collect();
        let stale = |list: &[Value], key: &str| -> Vec<String> {
            list.iter()
                .filter_map(|o| o[key].as_str())
                .filter(|n| n.starts_with(BRIDGE_PREFIX) && !wanted.iter().any(|w| w == n))
                .map(str::to_string)
                .collect()
        };
        for (kind, path, names) in [
            ("rule", "/rules", stale(&rules, "id")),
            ("action", "/actions", stale(&actions, "name")),
            ("connector", "/connectors", stale(&connectors, "name")),
        ] {
            for name in names {
                let id = if kind == "rule" {
                    name.clone()
                } else {
                    format!("mqtt:{name}")
                };
                let path = format!("{path}/{id}");
                let (status, body) = self.request(Method::DELETE, &path, None).await?;
                if status != StatusCode::NOT_FOUND {
                    ok_or_api(Method::DELETE, &path, status, body)?;
                }
                report
                    .changed
                    .push(format!("bridge {kind} {name}: removed"));
            }
        }
        Ok(())
    }

    /// The alert rule: an `http` connector to our REST base, an `http` action POSTing each
    /// matching message to `/units/alerts/emqx` with the webhook secret, and a rule selecting
    /// the devices' log topics. Without alerts, removes ours (an EMQX before 5.4 has no
    /// connectors API and so none of ours).
    pub(super) async fn apply_alerts(&self, report: &mut ApplyReport) -> Result<(), EmqxError> {
        let installed = &self.settings.alerts_rule;
        let (status, _) = self.request(Method::GET, "/connectors", None).await?;
        if status == StatusCode::NOT_FOUND {
            installed.store(false, Ordering::Relaxed);
            if self.settings.alerts.is_some() {
                report.changed.push(
                    "alerts rule: skipped (EMQX before 5.4 has no connectors API; the MQTT core feeds alerts)"
                        .into(),
                );
            }
            return Ok(());
        }
        let connectors = self.list(Method::GET, "/connectors").await?;
        let actions = self.list(Method::GET, "/actions").await?;
        let rules_answer = self.expect(Method::GET, "/rules?limit=1000", None).await?;
        let rules = rules_answer
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| invalid(Method::GET, "/rules", "no \"data\" list"))?;
        let find = |list: &[Value], key: &str| {
            list.iter()
                .find(|o| o[key] == ALERTS_NAME && (key == "id" || o["type"] == "http"))
                .cloned()
        };
        let Some(alerts) = &self.settings.alerts else {
            installed.store(false, Ordering::Relaxed);
            for (kind, path, present) in [
                ("rule", format!("/rules/{ALERTS_NAME}"), find(&rules, "id")),
                (
                    "action",
                    format!("/actions/http:{ALERTS_NAME}"),
                    find(&actions, "name"),
                ),
                (
                    "connector",
                    format!("/connectors/http:{ALERTS_NAME}"),
                    find(&connectors, "name"),
                ),
            ] {
                if present.is_some() {
                    let (status, body) = self.request(Method::DELETE, &path, None).await?;
                    if status != StatusCode::NOT_FOUND {
                        ok_or_api(Method::DELETE, &path, status, body)?;
                    }
                    report.changed.push(format!("alerts {kind}: removed"));
                }
            }
            return Ok(());
        };
        let kinds = [
            (
                "connector",
                "/connectors",
                &connectors,
                "name",
                alerts.connector(),
                &["enable", "url"][..],
            ),
            (
                "action",
                "/actions",
                &actions,
                "name",
                alerts.action(),
                &["enable", "connector", "description", "parameters"][..],
            ),
            (
                "rule",
                "/rules",
                &rules,
                "id",
                alerts.rule(),
                &["enable", "sql", "actions"][..],
            ),
        ];
        for (kind, path, list, key, ours, compared) in kinds {
            let what = format!("alerts {kind}");
            let id = if kind == "rule" {
                ALERTS_NAME.to_string()
            } else {
                format!("http:{ALERTS_NAME}")
            };
            let object = Owned {
                what,
                path,
                id: &id,
                ours,
                compared,
            };
            // EMQX masks header values it returns: the action's parameters count as different
            // only when what it shows (path, method) differs
            let shown = |field: &str| {
                !field.starts_with("parameters")
                    || alerts.shown_differs(&find(list, key).unwrap_or_default())
            };
            if let Err(e) = self
                .ensure_object(object, find(list, key), shown, report)
                .await
            {
                installed.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        installed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates `object` when `current` is None, else PUTs it when a compared field differs
    /// (`counts` can discount differences EMQX's masking makes up).
    async fn ensure_object(
        &self,
        object: Owned<'_>,
        current: Option<Value>,
        counts: impl Fn(&str) -> bool,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let Owned {
            what,
            path,
            id,
            ours,
            compared,
        } = object;
        let Some(current) = current else {
            self.expect(Method::POST, path, Some(&ours)).await?;
            report.changed.push(format!("{what}: created"));
            return Ok(());
        };
        let owned: Map<String, Value> = compared
            .iter()
            .map(|k| (k.to_string(), ours[*k].clone()))
            .collect();
        let mut differs = differing(&current, &Value::Object(owned));
        differs.retain(|d| counts(d));
        if differs.is_empty() {
            report.unchanged.push(what);
            return Ok(());
        }
        // PUT takes the object without its identity fields
        let mut update = ours;
        if let Some(o) = update.as_object_mut() {
            o.remove("type");
            o.remove("name");
            o.remove("id");
        }
        self.expect(Method::PUT, &format!("{path}/{id}"), Some(&update))
            .await?;
        report
            .changed
            .push(format!("{what}: updated {}", differs.join(", ")));
        Ok(())
    }
}

/// One EMQX object this worker owns: its report name, collection path, id and our version
/// with the fields compared.
struct Owned<'a> {
    what: String,
    path: &'a str,
    id: &'a str,
    ours: Value,
    compared: &'a [&'a str],
}

/// Name of the connector, action and rule that forward log messages for alerts.
pub const ALERTS_NAME: &str = "pepeunit_alerts";

/// The alert forwarding EMQX carries (SPEC §4): every message on a device `log` topic of this
/// instance is POSTed to the backend, which keeps the lines at or above the unit's alert
/// level. Shapes from emqx/emqx 5.4+: the `http` connector
/// (`apps/emqx_bridge_http/src/emqx_bridge_http_connector.erl`: `url`, `headers`,
/// `connect_timeout`, `pool_size`, `enable_pipelining`), the `http` action's `parameters`
/// (`emqx_bridge_http_schema.erl`: `path` appended to the connector's URL, `method`, `headers`;
/// no `body`, so EMQX sends the rule's selected fields as one JSON object), and the rule
/// selecting `id`, `topic` and `payload`. Not verified against a running EMQX (none runs
/// here); the unit tests pin the JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct EmqxAlerts {
    /// Our REST base as EMQX reaches it, e.g. `http://backend:5291/pepeunit/api/v1`.
    pub backend_api: String,
    /// Sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// `{domain}/output_base_topic/+/log/pepeunit`.
    pub topic: String,
}

impl EmqxAlerts {
    pub fn connector(&self) -> Value {
        json!({
            "type": "http",
            "name": ALERTS_NAME,
            "enable": true,
            "description": "Pepeunit: device log messages to the backend, for alerts",
            "url": self.backend_api,
            "connect_timeout": "15s",
            "pool_size": 8,
            "enable_pipelining": 100,
            "ssl": {"enable": self.backend_api.starts_with("https://")},
        })
    }

    pub fn action(&self) -> Value {
        json!({
            "type": "http",
            "name": ALERTS_NAME,
            "enable": true,
            "connector": ALERTS_NAME,
            // EMQX masks the authorization header it returns: a fingerprint of the secret in
            // a compared field makes a changed secret (new PU_SECRET_KEY) rewrite the action
            "description": format!(
                "Pepeunit: device log messages to the backend, for alerts (key {})",
                self.secret_fingerprint()
            ),
            "parameters": {
                "path": "/units/alerts/emqx",
                "method": "post",
                "headers": {
                    "content-type": "application/json",
                    "authorization": format!("Bearer {}", self.secret),
                },
            },
        })
    }

    pub fn rule(&self) -> Value {
        json!({
            "id": ALERTS_NAME,
            "name": ALERTS_NAME,
            "enable": true,
            "description": "Pepeunit: device log messages to the backend, for alerts",
            "sql": format!("SELECT id, topic, payload FROM \"{}\"", self.topic),
            "actions": [format!("http:{ALERTS_NAME}")],
        })
    }

    /// The first 8 hex digits of the secret's SHA-256: tells secrets apart, reveals nothing.
    fn secret_fingerprint(&self) -> String {
        use sha2::Digest;
        crate::crypto::hex(&sha2::Sha256::digest(self.secret.as_bytes())[..4])
    }

    /// Whether the action's visible parameters (path, method) differ from ours; header values
    /// come back masked (a changed secret shows in the compared `description` instead).
    fn shown_differs(&self, current: &Value) -> bool {
        let ours = self.action();
        let p = &current["parameters"];
        p["path"] != ours["parameters"]["path"] || p["method"] != ours["parameters"]["method"]
    }
}

/// Names of the EMQX objects this worker owns for bridges: `pepeunit_bridge_<uuid simple>`.
pub const BRIDGE_PREFIX: &str = "pepeunit_bridge_";

/// One bridge as EMQX carries it: an MQTT connector to the peer's broker authenticated with
/// the Bridge credential, an `mqtt` action publishing to the same topic there (QoS 1, not
/// retained, payload unchanged), and a rule feeding the topic's messages to the action.
///
/// Shapes from emqx/emqx (5.4 and later): the connector's fields from
/// `apps/emqx_bridge_mqtt/src/emqx_bridge_mqtt_connector_schema.erl` (`server_configs`:
/// `server` "host:port", `username`, `password`, `proto_ver`, `clean_start`, `keepalive`,
/// `clientid_prefix`; `pool_size`), the action's `parameters` from
/// `emqx_bridge_mqtt_pubsub_schema.erl` (the egress fields minus `pool_size` and `local`:
/// `remote.topic`, `remote.qos`, `remote.retain`, `remote.payload`), both addressed as
/// `mqtt:<name>` (`/connectors/{type}:{name}`, `/actions/{type}:{name}`); the rule from
/// `emqx_rule_engine_schema.erl` `fields("rules")` (`sql`, `actions` as `"<type>:<name>"`,
/// `enable`, `description`) with the `id` the POST accepts in its body. Not verified against a
/// running EMQX (none runs here); the unit tests pin the JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmqxBridge {
    pub uuid: uuid::Uuid,
    pub peer_domain: String,
    pub host: String,
    pub port: u16,
    pub credential: String,
    pub topic: String,
}

impl EmqxBridge {
    /// From an Output-side bridge row and its decrypted credential; None when the row lacks the
    /// peer's broker.
    pub fn new(b: &crate::service::bridges::Bridge, credential: &str) -> Option<EmqxBridge> {
        Some(EmqxBridge {
            uuid: b.uuid,
            peer_domain: b.peer_domain.clone(),
            host: b.mqtt_host.clone()?,
            port: u16::try_from(b.mqtt_port?).ok()?,
            credential: credential.to_string(),
            topic: b.topic.clone(),
        })
    }

    pub fn name(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.uuid.simple())
    }

    /// `POST /connectors`.
    pub fn connector(&self) -> Value {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        json!({
            "type": "mqtt",
            "name": self.name(),
            "enable": true,
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "server": format!("{host}:{}", self.port),
            "username": self.credential,
            "password": "",
            "proto_ver": "v4",
            "clean_start": true,
            "keepalive": "30s",
            "clientid_prefix": "pepeunit-bridge",
            "pool_size": 1,
            "ssl": {"enable": false},
        })
    }

    /// `POST /actions`.
    pub fn action(&self) -> Value {
        json!({
            "type": "mqtt",
            "name": self.name(),
            "enable": true,
            "connector": self.name(),
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "parameters": {
                "remote": {
                    "topic": self.topic,
                    "qos": 1,
                    "retain": false,
                    "payload": "${payload}",
                }
            },
        })
    }

    /// `POST /rules`.
    pub fn rule(&self) -> Value {
        json!({
            "id": self.name(),
            "name": self.name(),
            "enable": true,
            "description": format!("Pepeunit bridge {} to {}", self.uuid, self.peer_domain),
            "sql": format!("SELECT * FROM \"{}\"", self.topic),
            "actions": [format!("mqtt:{}", self.name())],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::emqx::access::duration_ms;

    fn bridge(host: &str) -> EmqxBridge {
        EmqxBridge {
            uuid: uuid::Uuid::parse_str("6f1c3a52-9d7e-4b8a-a1f0-0c2d3e4f5a6b").unwrap(),
            peer_domain: "b.example".into(),
            host: host.into(),
            port: 1883,
            credential: "eyJ.cred.sig".into(),
            topic: "a.example/0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00/pepeunit".into(),
        }
    }

    /// What `emqx_connector_schema:api_fields("post_connector", mqtt, ...)` and the MQTT
    /// connector's `server_configs` take (see [`EmqxBridge`]).
    #[test]
    fn bridge_connector_json() {
        let b = bridge("mqtt.b.example");
        let name = b.name();
        assert_eq!(name, "pepeunit_bridge_6f1c3a529d7e4b8aa1f00c2d3e4f5a6b");
        // EMQX resource names: ^[0-9a-zA-Z][_a-zA-Z0-9-]*$ (emqx_resource:validate_name)
        assert!(name.chars().next().unwrap().is_ascii_alphanumeric());
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let c = b.connector();
        assert_eq!(c["type"], "mqtt");
        assert_eq!(c["name"], name.as_str());
        assert_eq!(c["enable"], true);
        assert_eq!(c["server"], "mqtt.b.example:1883");
        assert_eq!(c["username"], "eyJ.cred.sig");
        assert_eq!(c["password"], "");
        assert_eq!(c["proto_ver"], "v4");
        assert_eq!(c["clean_start"], true);
        assert_eq!(c["pool_size"], 1);
        assert_eq!(c["ssl"]["enable"], false);
        assert_eq!(duration_ms(&c["keepalive"]), Some(30_000));
        // an IPv6 literal is bracketed so the port stays separate
        assert_eq!(bridge("::1").connector()["server"], "[::1]:1883");
    }

    /// `POST /actions` of type mqtt: `parameters` are the egress fields without `pool_size`
    /// and `local` (`emqx_bridge_mqtt_pubsub_schema:fields(action_parameters)`).
    #[test]
    fn bridge_action_and_rule_json() {
        let b = bridge("mqtt.b.example");
        let a = b.action();
        assert_eq!(a["type"], "mqtt");
        assert_eq!(a["name"], b.name().as_str());
        assert_eq!(a["connector"], b.name().as_str());
        assert_eq!(a["enable"], true);
        assert_eq!(
            a["parameters"],
            json!({"remote": {"topic": b.topic, "qos": 1, "retain": false, "payload": "${payload}"}})
        );
        assert!(a["parameters"].get("local").is_none());
        assert!(a["parameters"].get("pool_size").is_none());
        let r = b.rule();
        assert_eq!(r["id"], b.name().as_str());
        assert_eq!(
            r["sql"],
            "SELECT * FROM \"a.example/0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00/pepeunit\""
        );
        assert_eq!(r["actions"], json!([format!("mqtt:{}", b.name())]));
        assert_eq!(r["enable"], true);
    }
}
