//! What the soak asks of the instance's public API: its units (found or created, with their
//! tokens and node topics), log counts, the MQTT core's counters and its resident memory.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

/// A REST client for one user on one instance.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    /// `{origin}{prefix}`
    pub base: String,
    /// `{origin}`
    pub origin: String,
    pub token: String,
}

/// One unit as the soak uses it.
#[derive(Clone, Debug)]
pub struct SoakUnit {
    pub uuid: Uuid,
    pub name: String,
    pub repo: Uuid,
    /// Its Output node whose topic ends with `/pepeunit` (values the platform processes).
    pub node: Uuid,
    pub node_topic: String,
    /// What the instance stores now (for the checks at the end).
    pub unit_state: Value,
    pub node_state: Value,
}

/// A unit's device settings, from its env.json.
#[derive(Clone, Debug)]
pub struct DeviceEnv {
    pub token: String,
    pub domain: String,
    pub mqtt: String,
    pub commit: String,
    pub state_interval: u64,
}

/// Prefix of every unit the soak creates (names are at most 20 characters).
pub const UNIT_PREFIX: &str = "soak_";

impl Api {
    pub fn new(origin: &str, prefix: &str, token: &str) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()?;
        let origin = origin.trim_end_matches('/').to_string();
        Ok(Api {
            client,
            base: format!("{origin}{prefix}"),
            origin,
            token: token.to_string(),
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self
            .client
            .request(method.clone(), url)
            .header("x-auth-token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The uuid of the token's user (the `uuid` claim; the token is checked by the first
    /// request that needs it).
    pub fn user_uuid(&self) -> anyhow::Result<Uuid> {
        let payload = self
            .token
            .split('.')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("--token is not a JWT"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| anyhow::anyhow!("--token is not a JWT"))?;
        let claims: Value = serde_json::from_slice(&bytes)?;
        if claims["type"] != "User" {
            anyhow::bail!("--token must be a user's token (POST /users/auth)");
        }
        claims["uuid"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--token has no user uuid"))
    }

    /// The MQTT core's report (`GET /metrics/mqtt`, admins only).
    pub async fn mqtt_report(&self) -> anyhow::Result<Value> {
        self.get("/metrics/mqtt").await
    }

    /// Resident memory from the instance's own Prometheus text (admins).
    pub async fn prometheus_rss(&self) -> Option<u64> {
        let resp = self
            .client
            .get(format!("{}/pepeunit/metrics", self.origin))
            .header("x-auth-token", &self.token)
            .send()
            .await
            .ok()?;
        let text = resp.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("pepeunit_process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Every unit of `creator` named `soak_*`, with its Output node that takes values, by name.
    pub async fn soak_units(&self, creator: Uuid) -> anyhow::Result<Vec<SoakUnit>> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .get(&format!(
                    "/units?creator_uuid={creator}&search_string={UNIT_PREFIX}&is_include_output_unit_nodes=true&unit_node_type=Output&order_by_unit_name=asc&offset={offset}&limit={PAGE}"
                ))
                .await?;
            let units = page["units"].as_array().cloned().unwrap_or_default();
            for u in &units {
                let name = u["name"].as_str().unwrap_or_default();
                if !name.starts_with(UNIT_PREFIX) {
                    continue;
                }
                let node = u["unit_nodes"].as_array().and_then(|nodes| {
                    nodes.iter().find(|n| {
                        n["topic_name"]
                            .as_str()
                            .is_some_and(|t| t.ends_with("/pepeunit"))
                    })
                });
                let Some(node) = node else {
                    anyhow::bail!(
                        "unit {name} has no Output topic ending in /pepeunit: the firmware's schema_example.json must declare one"
                    );
                };
                out.push(SoakUnit {
                    uuid: parse_uuid(&u["uuid"])?,
                    name: name.to_string(),
                    repo: parse_uuid(&u["repo_uuid"])?,
                    node: parse_uuid(&node["uuid"])?,
                    node_topic: node["topic_name"].as_str().unwrap_or_default().to_string(),
                    unit_state: u["unit_state"].clone(),
                    node_state: node["state"].clone(),
                });
            }
            if units.len() < PAGE {
                break;
            }
            offset += PAGE;
        }
        Ok(out)
    }

    /// A registry on `firmware` (or the user's existing one for that URL) and a new repo on
    /// it; the repo's uuid.
    pub async fn create_repo(&self, firmware: &str, tag: &str) -> anyhow::Result<Uuid> {
        use reqwest::Method;
        let registry = match self
            .call(
                Method::POST,
                "/repository_registry",
                Some(json!({"platform": "Gitlab", "repository_url": firmware, "is_public_repository": true})),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.to_string().contains("not unique") => {
                let list = self
                    .get(&format!(
                        "/repository_registry?search_string={}&limit=100",
                        urlencode(firmware)
                    ))
                    .await?;
                list["repositories_registry"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["repository_url"] == firmware))
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("registry {firmware} exists but is not visible"))?
            }
            Err(e) => return Err(e),
        };
        if registry["sync_status"] != "Updated" {
            anyhow::bail!(
                "the registry on {firmware} did not sync: {}",
                registry["sync_error"]
            );
        }
        let repo = self
            .call(
                Method::POST,
                "/repos",
                Some(json!({"repository_registry_uuid": registry["uuid"], "default_branch": "main", "visibility_level": "Public", "name": format!("soak_{tag}"), "is_compilable_repo": false})),
            )
            .await?;
        parse_uuid(&repo["uuid"])
    }

    pub async fn create_unit(&self, repo: Uuid, name: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "/units",
            Some(json!({"repo_uuid": repo, "visibility_level": "Public", "name": name, "is_auto_update_from_repo_unit": true})),
        )
        .await?;
        Ok(())
    }

    /// The unit's env.json, as its device would download it.
    pub async fn device_env(&self, unit: Uuid) -> anyhow::Result<DeviceEnv> {
        let env = self.get(&format!("/units/env/{unit}")).await?;
        let text = |k: &str| -> anyhow::Result<String> {
            match &env[k] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => anyhow::bail!("env.json of {unit} has no {k}"),
            }
        };
        Ok(DeviceEnv {
            token: text("PU_AUTH_TOKEN")?,
            domain: text("PU_DOMAIN")?,
            mqtt: format!("{}:{}", text("PU_MQTT_HOST")?, text("PU_MQTT_PORT")?),
            commit: text("PU_COMMIT_VERSION").unwrap_or_else(|_| "0".repeat(40)),
            state_interval: text("PU_STATE_SEND_INTERVAL")?.parse().unwrap_or(60),
        })
    }

    /// Log lines of a unit the instance holds (`count` of its log list).
    pub async fn log_count(&self, unit: Uuid) -> anyhow::Result<u64> {
        let page = self
            .get(&format!("/units/log_list/?uuid={unit}&limit=1"))
            .await?;
        page["count"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("log list of {unit} has no count: {page}"))
    }
}

fn parse_uuid(v: &Value) -> anyhow::Result<Uuid> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("expected a uuid, got {v}"))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs `f` over `items` with at most `n` at once, in order of the results.
pub async fn bounded<T, R, F, Fut>(items: Vec<T>, n: usize, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    use futures_util::stream::{self, StreamExt};
    stream::iter(items.into_iter().map(f))
        .buffered(n)
        .collect()
        .await
}
