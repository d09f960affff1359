//! Access configuration EMQX must hold (SPEC §2), applied by [`EmqxAdmin`]:
//!
//! 1. authentication: an HTTP authenticator (`password_based:http`) POSTing
//!    `{"username":"${username}","clientid":"${clientid}"}` to our `/units/mqtt_authn`;
//! 2. authorization: an `http` source POSTing
//!    `{"token":"${username}","topic":"${topic}","action":"${action}"}` to our `/units/auth`,
//!    first in the chain; every other source disabled; `no_match = deny`,
//!    `deny_action = ignore`, a short ACL cache;
//! 3. limits: `max_connections` of the `tcp:default` listener, `mqtt.max_packet_size`.
//!
//! Only the fields listed above are compared; everything else an admin tuned in EMQX (pool
//! sizes, TLS, timeouts, other listeners) is kept: updates read the object, change our fields
//! and write the whole object back, as EMQX's dashboard does.
//!
//! Why every other authorization source is disabled: EMQX treats an HTTP source that does not
//! answer, or answers anything but 200/204, as "no decision" and asks the next source
//! (`emqx_authz_http.erl`), and the `file` source EMQX ships with ends in `{allow, all}`
//! (`apps/emqx_auth/etc/acl.conf`). With Pepeunit's source alone and `no_match = deny`, an
//! outage of our endpoint closes the broker instead of opening it. Upstream Pepeunit replaces
//! the chain for the same reason (`app/configs/emqx.py`).
//!
//! Why `deny_action = ignore` rather than `disconnect`: a device whose `schema.json` is stale
//! (a link was just removed) subscribes to a topic it may no longer read; with `disconnect` it
//! would be thrown out, reconnect, resubscribe and loop until it fetched the new schema. With
//! `ignore` that one subscription fails (SUBACK 0x80) and the rest of the device keeps working;
//! a denied publish is dropped.
//!
//! Why the ACL cache lives one minute (EMQX's default) with 64 entries: decisions depend on
//! links and visibility that users change; one minute bounds how long a revoked link stays
//! usable by a connected client, and 64 entries hold a unit's base and node topics.
//!
//! Where each request shape comes from (emqx/emqx on GitHub, EMQX 5.x):
//! - `GET/POST /authentication`, `PUT /authentication/{id}`:
//!   `apps/emqx_auth/src/emqx_authn/emqx_authn_api.erl` (POST answers 200 with the config,
//!   PUT 204, GET lists the raw configs with defaults plus `id` = `password_based:http`);
//!   fields from `apps/emqx_auth_http/src/emqx_authn_http_schema.erl` (`mechanism`, `backend`,
//!   `method` get|post, `url`, `body` map, `headers`, `request_timeout`); the answer our
//!   endpoint gives (`{"result":"allow"|"deny"}`) from docs.emqx.com
//!   `/en/emqx/latest/access-control/authn/http.html`.
//! - `GET/POST /authorization/sources`, `PUT /authorization/sources/{type}`,
//!   `POST /authorization/sources/{type}/move` with `{"position":"front"}`:
//!   `apps/emqx_auth/src/emqx_authz/emqx_authz_api_sources.erl` (GET answers
//!   `{"sources":[...]}` in chain order, POST prepends and answers 204, PUT needs the body's
//!   `type` to match the path); fields from `apps/emqx_auth_http/src/emqx_authz_http_schema.erl`
//!   and `emqx_authz_schema.erl` (`type`, `enable`).
//! - `GET/PUT /authorization/settings`: `apps/emqx_auth/src/emqx_authz/emqx_authz_api_settings.erl`
//!   (PUT needs `no_match`, `deny_action` and `cache`, answers 200) and `emqx_schema.erl`
//!   `authz_fields/0`, `fields("authz_cache")` (`enable`, `max_size`, `ttl`, `excludes`).
//! - `GET/PUT /listeners/{id}`: `apps/emqx_management/src/emqx_mgmt_api_listeners.erl` (PUT
//!   needs `type` and `id`, merges into the stored listener, answers 200 with it;
//!   `max_connections` is `"infinity"` or an integer).
//! - `GET/PUT /configs/global_zone`: `apps/emqx_management/src/emqx_mgmt_api_configs.erl`.
//!   There is no `/configs/mqtt`: `mqtt` is a root of the global zone; PUT updates each root
//!   whose value differs and answers 200. `max_packet_size` is a byte size (`"1MB"`).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::{differing, error_code, invalid, merge, ok_or_api, EmqxAdmin, EmqxError};
use super::worker::ApplyReport;

/// The id EMQX gives the HTTP password authenticator.
pub const AUTHN_ID: &str = "password_based:http";
/// The listener whose `max_connections` is managed.
pub const LISTENER_ID: &str = "tcp:default";
/// ACL cache of EMQX: how long a decision is reused, and how many per client.
pub const AUTHZ_CACHE_TTL: &str = "1m";
pub const AUTHZ_CACHE_MAX_SIZE: u64 = 64;
/// How long EMQX waits for our auth endpoints (its defaults: 5 s authn, 30 s authz; a stuck
/// backend must not hold every publish for 30 s).
const AUTH_REQUEST_TIMEOUT: &str = "5s";

impl EmqxAdmin {
    pub(super) async fn apply_authentication(
        &self,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let what = format!("authentication {AUTHN_ID}");
        let ours = json!({
            "mechanism": "password_based",
            "backend": "http",
            "enable": true,
            "method": "post",
            "url": self.settings.authn_url,
            "body": {"username": "${username}", "clientid": "${clientid}"},
        });
        let list = self.expect(Method::GET, "/authentication", None).await?;
        let list = list.as_array().ok_or_else(|| {
            invalid(
                Method::GET,
                "/authentication",
                "not a list of authenticators",
            )
        })?;
        let current = list.iter().find(|a| {
            a["id"] == AUTHN_ID || (a["mechanism"] == "password_based" && a["backend"] == "http")
        });
        match current {
            None => {
                let mut create = ours.clone();
                merge(
                    &mut create,
                    &json!({
                        "headers": {"content-type": "application/json"},
                        "request_timeout": AUTH_REQUEST_TIMEOUT,
                    }),
                );
                self.expect(Method::POST, "/authentication", Some(&create))
                    .await?;
                report.changed.push(format!("{what}: created"));
            }
            Some(current) => {
                let differs = differing(current, &ours);
                if differs.is_empty() {
                    report.unchanged.push(what);
                } else {
                    let mut update = current.clone();
                    if let Some(o) = update.as_object_mut() {
                        o.remove("id");
                    }
                    merge(&mut update, &ours);
                    let path = format!("/authentication/{AUTHN_ID}");
                    self.expect(Method::PUT, &path, Some(&update)).await?;
                    report
                        .changed
                        .push(format!("{what}: updated {}", differs.join(", ")));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn apply_authorization_sources(
        &self,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let what = "authorization source http";
        let ours = json!({
            "type": "http",
            "enable": true,
            "method": "post",
            "url": self.settings.auth_url,
            "body": {"token": "${username}", "topic": "${topic}", "action": "${action}"},
        });
        let mut sources = self.sources().await?;
        match sources.iter().find(|s| s["type"] == "http") {
            None => {
                let mut create = ours.clone();
                merge(
                    &mut create,
                    &json!({
                        "headers": {"content-type": "application/json"},
                        "request_timeout": AUTH_REQUEST_TIMEOUT,
                    }),
                );
                self.expect(Method::POST, "/authorization/sources", Some(&create))
                    .await?;
                report.changed.push(format!("{what}: created"));
                sources = self.sources().await?;
            }
            Some(current) => {
                let differs = differing(current, &ours);
                if differs.is_empty() {
                    report.unchanged.push(what.to_string());
                } else {
                    let mut update = current.clone();
                    merge(&mut update, &ours);
                    self.expect(Method::PUT, "/authorization/sources/http", Some(&update))
                        .await?;
                    report
                        .changed
                        .push(format!("{what}: updated {}", differs.join(", ")));
                }
            }
        }

        if sources.first().is_some_and(|s| s["type"] == "http") {
            report.unchanged.push(format!("{what} first"));
        } else {
            self.expect(
                Method::POST,
                "/authorization/sources/http/move",
                Some(&json!({"position": "front"})),
            )
            .await?;
            report.changed.push(format!("{what}: moved to the front"));
        }

        for source in &sources {
            let Some(kind) = source["type"].as_str() else {
                continue;
            };
            if kind == "http" || source["enable"] == false {
                continue;
            }
            if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    Method::GET,
                    "/authorization/sources",
                    &format!("source type {kind:?}"),
                ));
            }
            let mut disabled = source.clone();
            disabled["enable"] = json!(false);
            let path = format!("/authorization/sources/{kind}");
            self.expect(Method::PUT, &path, Some(&disabled)).await?;
            tracing::warn!(
                source = kind,
                "disabled EMQX authorization source {kind}: EMQX would ask it whenever Pepeunit's \
                 authorization endpoint fails"
            );
            report
                .changed
                .push(format!("authorization source {kind}: disabled"));
        }
        Ok(())
    }

    async fn sources(&self) -> Result<Vec<Value>, EmqxError> {
        let path = "/authorization/sources";
        let answer = self.expect(Method::GET, path, None).await?;
        match answer.get("sources").and_then(Value::as_array) {
            Some(list) => Ok(list.clone()),
            None => Err(invalid(Method::GET, path, "no \"sources\" list")),
        }
    }

    pub(super) async fn apply_authorization_settings(
        &self,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let what = "authorization settings";
        let path = "/authorization/settings";
        let current = self.expect(Method::GET, path, None).await?;
        let cache = &current["cache"];
        let mut differs = Vec::new();
        if current["no_match"] != "deny" {
            differs.push("no_match");
        }
        if current["deny_action"] != "ignore" {
            differs.push("deny_action");
        }
        if cache["enable"] != true {
            differs.push("cache.enable");
        }
        if cache["max_size"].as_u64() != Some(AUTHZ_CACHE_MAX_SIZE) {
            differs.push("cache.max_size");
        }
        if duration_ms(&cache["ttl"]) != duration_ms(&json!(AUTHZ_CACHE_TTL)) {
            differs.push("cache.ttl");
        }
        if differs.is_empty() {
            report.unchanged.push(what.to_string());
            return Ok(());
        }
        let mut cache = match cache {
            Value::Object(_) => cache.clone(),
            _ => json!({}),
        };
        merge(
            &mut cache,
            &json!({"enable": true, "max_size": AUTHZ_CACHE_MAX_SIZE, "ttl": AUTHZ_CACHE_TTL}),
        );
        let update = json!({"no_match": "deny", "deny_action": "ignore", "cache": cache});
        self.expect(Method::PUT, path, Some(&update)).await?;
        report
            .changed
            .push(format!("{what}: updated {}", differs.join(", ")));
        Ok(())
    }

    /// The listener's `max_connections` and per-client `messages_rate` (each only when set).
    pub(super) async fn apply_listener(
        &self,
        max: Option<u64>,
        rate: Option<u32>,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let path = format!("/listeners/{LISTENER_ID}");
        let (status, current) = self.request(Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(EmqxError::Api {
                method: "GET".into(),
                path,
                status: 404,
                code: error_code(&current),
                message: format!(
                    "EMQX has no {LISTENER_ID} listener to apply PU_MQTT_MAX_CONNECTIONS or PU_THROTTLE_CLIENT_RATE to"
                ),
            });
        }
        let current = ok_or_api(Method::GET, &path, status, current)?;
        let mut ours = json!({"id": LISTENER_ID, "type": "tcp"});
        let mut changed = Vec::new();
        if let Some(max) = max {
            let what = format!("listener {LISTENER_ID} max_connections");
            if count(&current["max_connections"]) == Some(max) {
                report.unchanged.push(what);
            } else {
                ours["max_connections"] = json!(max);
                changed.push(format!("{what}: set to {max}"));
            }
        }
        if let Some(rate) = rate {
            let what = format!("listener {LISTENER_ID} messages_rate");
            let want = if rate == 0 {
                "infinity".to_string()
            } else {
                format!("{rate}/s")
            };
            if messages_rate(&current["messages_rate"]) == Some(u64::from(rate)) {
                report.unchanged.push(what);
            } else {
                changed.push(format!("{what}: set to {want}"));
                ours["messages_rate"] = json!(want);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut update = current.clone();
        if let Some(o) = update.as_object_mut() {
            // read-only fields of the GET answer
            o.remove("running");
            o.remove("current_connections");
        }
        merge(&mut update, &ours);
        self.expect(Method::PUT, &path, Some(&update)).await?;
        report.changed.extend(changed);
        Ok(())
    }

    pub(super) async fn apply_mqtt(
        &self,
        size: u64,
        report: &mut ApplyReport,
    ) -> Result<(), EmqxError> {
        let what = "mqtt max_packet_size";
        let path = "/configs/global_zone";
        let current = self.expect(Method::GET, path, None).await?;
        if !current["mqtt"].is_object() {
            return Err(invalid(Method::GET, path, "no \"mqtt\" object"));
        }
        if bytes(&current["mqtt"]["max_packet_size"]) == Some(size) {
            report.unchanged.push(what.to_string());
            return Ok(());
        }
        let mut update = current.clone();
        update["mqtt"]["max_packet_size"] = byte_size(size);
        self.expect(Method::PUT, path, Some(&update)).await?;
        report.changed.push(format!("{what}: set to {size} bytes"));
        Ok(())
    }
}

/// A per-second rate as EMQX writes it: `"N/s"` (also `"N/1s"`), `"infinity"` or absent (0),
/// else `None` (a rate over another period is ours to rewrite).
fn messages_rate(v: &Value) -> Option<u64> {
    match v {
        Value::Null => Some(0),
        Value::String(s) if s == "infinity" => Some(0),
        Value::String(s) => {
            let (n, per) = s.split_once('/')?;
            matches!(per, "s" | "1s").then(|| n.trim().parse().ok())?
        }
        _ => None,
    }
}

/// A count as EMQX writes it: an integer, or `"infinity"` (None).
fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A byte size as EMQX writes it: an integer, or digits with `KB`, `MB` or `GB` (binary
/// multiples, any case), as hocon's `bytesize` parses it.
fn bytes(v: &Value) -> Option<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// How a byte size is written to EMQX: `"NMB"` / `"NKB"` when exact, else the bare integer.
fn byte_size(size: u64) -> Value {
    if size.is_multiple_of(1 << 20) {
        json!(format!("{}MB", size >> 20))
    } else if size.is_multiple_of(1 << 10) {
        json!(format!("{}KB", size >> 10))
    } else {
        json!(size)
    }
}

/// A duration as EMQX writes it (`"1m"`, `"60s"`, `"500ms"`, `"1h"`, `"1d"`, or a number of
/// milliseconds), in milliseconds.
pub(super) fn duration_ms(v: &Value) -> Option<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::emqx::client::MAX_MQTT_PACKET_SIZE;

    #[test]
    fn byte_sizes_read_and_write() {
        assert_eq!(bytes(&json!("1MB")), Some(1 << 20));
        assert_eq!(bytes(&json!("256kb")), Some(256 << 10));
        assert_eq!(bytes(&json!(1000)), Some(1000));
        assert_eq!(bytes(&json!("1000")), Some(1000));
        assert_eq!(bytes(&json!("1TB")), None);
        assert_eq!(byte_size(1 << 20), json!("1MB"));
        assert_eq!(byte_size(3 << 10), json!("3KB"));
        assert_eq!(byte_size(1000), json!(1000));
        for n in [
            1,
            1000,
            1024,
            65_536,
            1 << 20,
            5 << 20,
            MAX_MQTT_PACKET_SIZE,
        ] {
            assert_eq!(bytes(&byte_size(n)), Some(n));
        }
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(duration_ms(&json!("1m")), Some(60_000));
        assert_eq!(duration_ms(&json!("60s")), Some(60_000));
        assert_eq!(duration_ms(&json!("60000ms")), Some(60_000));
        assert_eq!(duration_ms(&json!(60000)), Some(60_000));
        assert_eq!(duration_ms(&json!("soon")), None);
        assert_eq!(count(&json!("infinity")), None);
        assert_eq!(count(&json!(1024)), Some(1024));
    }

    #[test]
    fn message_rates() {
        assert_eq!(messages_rate(&json!("100/s")), Some(100));
        assert_eq!(messages_rate(&json!("100/1s")), Some(100));
        assert_eq!(messages_rate(&json!("infinity")), Some(0));
        assert_eq!(messages_rate(&Value::Null), Some(0));
        assert_eq!(messages_rate(&json!("6000/1m")), None);
        assert_eq!(messages_rate(&json!("fast/s")), None);
    }
}
