//! Grafana's HTTP API, as the dashboard sync uses it (issue 19; upstream's
//! `grafana_repository.py`, docs/research/GRAFANA-UPSTREAM.md §2): organisations, users, org
//! membership, the Infinity datasource (re-pointed when our address changed) and dashboards, with the admin's Basic auth and
//! `X-Grafana-Org-Id` for org-scoped calls. A connection that fails is tried 3 times, 1 s apart;
//! an answer Grafana refuses is an error that names the call, the status and Grafana's message.
//! This module speaks HTTP only; which calls a sync makes is the service layer's.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Attempts of a call whose connection fails.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    #[error("Grafana is unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Grafana refused {call}: {status} {message}")]
    Refused {
        call: String,
        status: u16,
        message: String,
    },
    #[error("Grafana answered {call} with something unexpected: {reason}")]
    Unexpected { call: String, reason: String },
}

pub type GrafanaResult<T> = Result<T, GrafanaError>;

/// A dashboard Grafana stored: its path (`/grafana/d/<uid>/<slug>` behind a sub-path) and version.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedDashboard {
    pub url: String,
    pub version: i64,
}

#[derive(Clone)]
pub struct GrafanaApi {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

impl GrafanaApi {
    /// `base` is Grafana's root URL (`http://grafana:3000`, or a sub-path such as
    /// `https://example.org/grafana`).
    pub fn new(base: &str, user: &str, password: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(15))
            .build()
            .expect("a client without custom TLS builds");
        GrafanaApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// One call: `(status, JSON body or Null)`. Statuses are the caller's to judge.
    async fn call(
        &self,
        method: Method,
        path: &str,
        org: Option<i64>,
        body: Option<&Value>,
    ) -> GrafanaResult<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(&self.user, Some(&self.password))
                .header("accept", "application/json");
            if let Some(org) = org {
                req = req.header("x-grafana-org-id", org.to_string());
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = resp.bytes().await.map_err(|e| GrafanaError::Unexpected {
                        call: format!("{method} {path}"),
                        reason: e.to_string(),
                    })?;
                    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    return Ok((status, value));
                }
                Err(e) if e.is_connect() || (e.is_timeout() && attempt + 1 < ATTEMPTS) => {
                    last = e.to_string();
                }
                Err(e) => {
                    return Err(GrafanaError::Unreachable {
                        url,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Err(GrafanaError::Unreachable { url, reason: last })
    }

    /// A call whose answer must be one of `ok`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        org: Option<i64>,
        body: Option<&Value>,
        ok: &[StatusCode],
    ) -> GrafanaResult<(StatusCode, Value)> {
        let (status, value) = self.call(method.clone(), path, org, body).await?;
        if ok.contains(&status) {
            Ok((status, value))
        } else {
            Err(GrafanaError::Refused {
                call: format!("{method} {path}"),
                status: status.as_u16(),
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect(),
            })
        }
    }

    /// The name of organisation `id`, or None when it does not exist.
    pub async fn org_name(&self, id: i64) -> GrafanaResult<Option<String>> {
        let path = format!("/api/orgs/{id}");
        let (status, v) = self
            .expect(
                Method::GET,
                &path,
                None,
                None,
                &[StatusCode::OK, StatusCode::NOT_FOUND],
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(v.get("name").and_then(Value::as_str).map(str::to_string))
    }

    /// The id of the organisation named `name`, created when missing. When another call
    /// created it in between (a sign-in and a sync at once: 409 `Organization name taken`),
    /// that one is looked up again.
    pub async fn ensure_org(&self, name: &str) -> GrafanaResult<i64> {
        let lookup = format!("/api/orgs/name/{}", crate::platform::encode_component(name));
        let find = || async {
            let (status, v) = self
                .expect(
                    Method::GET,
                    &lookup,
                    None,
                    None,
                    &[StatusCode::OK, StatusCode::NOT_FOUND],
                )
                .await?;
            match status {
                StatusCode::OK => int_field(&v, "id", &lookup).map(Some),
                _ => Ok(None),
            }
        };
        if let Some(id) = find().await? {
            return Ok(id);
        }
        let (status, v) = self
            .expect(
                Method::POST,
                "/api/orgs",
                None,
                Some(&json!({ "name": name })),
                &[StatusCode::OK, StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::OK {
            return int_field(&v, "orgId", "POST /api/orgs");
        }
        find().await?.ok_or_else(|| GrafanaError::Unexpected {
            call: "POST /api/orgs".into(),
            reason: format!("409, but {lookup} finds no organisation named {name:?}"),
        })
    }

    /// Creates a Grafana user with this login (and email, as upstream) and display `name`; an
    /// existing one is kept.
    pub async fn ensure_user(&self, login: &str, name: &str, password: &str) -> GrafanaResult<()> {
        self.expect(
            Method::POST,
            "/api/admin/users",
            None,
            Some(&json!({"name": name, "email": login, "login": login, "password": password})),
            // Grafana answers 412 for a login or email that exists (newer versions 409)
            &[
                StatusCode::OK,
                StatusCode::PRECONDITION_FAILED,
                StatusCode::CONFLICT,
            ],
        )
        .await?;
        Ok(())
    }

    /// Makes the user a member of the organisation with `role`; a member already is kept.
    pub async fn ensure_member(&self, org: i64, login: &str, role: &str) -> GrafanaResult<()> {
        self.expect(
            Method::POST,
            &format!("/api/orgs/{org}/users"),
            None,
            Some(&json!({"loginOrEmail": login, "role": role})),
            &[StatusCode::OK, StatusCode::CONFLICT],
        )
        .await?;
        Ok(())
    }

    /// Adds the Infinity datasource to the organisation. One of the same name is kept, and
    /// pointed at `url` again when it reads somewhere else (the instance's address changed).
    pub async fn ensure_datasource(
        &self,
        org: i64,
        name: &str,
        plugin: &str,
        url: &str,
        health_url: &str,
    ) -> GrafanaResult<()> {
        let mut body = json!({
            "name": name,
            "type": plugin,
            "access": "proxy",
            "url": url,
            "jsonData": {"auth_method": null, "customHealthCheckEnabled": true, "customHealthCheckUrl": health_url},
        });
        let (status, _) = self
            .expect(
                Method::POST,
                "/api/datasources",
                Some(org),
                Some(&body),
                &[StatusCode::OK, StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::OK {
            return Ok(());
        }
        let lookup = format!(
            "/api/datasources/name/{}",
            crate::platform::encode_component(name)
        );
        let (_, existing) = self
            .expect(Method::GET, &lookup, Some(org), None, &[StatusCode::OK])
            .await?;
        let same = existing["url"] == body["url"]
            && existing["jsonData"]["customHealthCheckUrl"]
                == body["jsonData"]["customHealthCheckUrl"];
        if same {
            return Ok(());
        }
        let uid = existing["uid"]
            .as_str()
            .ok_or_else(|| GrafanaError::Unexpected {
                call: format!("GET {lookup}"),
                reason: "no uid".into(),
            })?
            .to_string();
        body["uid"] = Value::String(uid.clone());
        self.expect(
            Method::PUT,
            &format!(
                "/api/datasources/uid/{}",
                crate::platform::encode_component(&uid)
            ),
            Some(org),
            Some(&body),
            &[StatusCode::OK],
        )
        .await?;
        Ok(())
    }

    /// Stores a dashboard (`POST /api/dashboards/db`) in the organisation.
    pub async fn save_dashboard(&self, org: i64, body: &Value) -> GrafanaResult<SavedDashboard> {
        let call = "POST /api/dashboards/db";
        let (_, v) = self
            .expect(
                Method::POST,
                "/api/dashboards/db",
                Some(org),
                Some(body),
                &[StatusCode::OK],
            )
            .await?;
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| GrafanaError::Unexpected {
                call: call.into(),
                reason: "no url".into(),
            })?
            .to_string();
        Ok(SavedDashboard {
            url,
            version: int_field(&v, "version", call)?,
        })
    }
}

fn int_field(v: &Value, key: &str, call: &str) -> GrafanaResult<i64> {
    v.get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| GrafanaError::Unexpected {
            call: call.to_string(),
            reason: format!("no integer {key:?}"),
        })
}
