//! Federation helpers: polling, instance follows, requests signed by hand as another server
//! would sign them, and POSTs to an inbox.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::TestInstance;

/// Polls `probe` every 100 ms for up to 20 s until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn follow_and_wait(follower: &TestInstance, admin: &str, followed: &TestInstance) {
    let (s, v) = follower
        .post(
            "/federation/follow",
            Some(admin),
            json!({"domain": followed.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "Pending");
    assert_eq!(v["domain"], followed.domain);
    eventually("the follow to be accepted", || async {
        let (_, v) = follower.get("/federation/follow", Some(admin)).await;
        (v[0]["state"] == "Accepted").then_some(())
    })
    .await;
}

/// Requests signed by hand (not with our signing code), as another server would, so the
/// checks are tested against the draft-cavage format itself.
pub mod signed {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};
    use sha2::{Digest, Sha256};
    use std::time::SystemTime;

    pub struct Signer {
        pub key_id: String,
        pub key: RsaPrivateKey,
    }

    /// The `Digest` header value of a body.
    pub fn digest(body: &[u8]) -> String {
        format!("SHA-256={}", B64.encode(Sha256::digest(body)))
    }

    impl Signer {
        pub fn from_pem(key_id: String, pem: &str) -> Signer {
            Signer {
                key_id,
                key: RsaPrivateKey::from_pkcs8_pem(pem).unwrap(),
            }
        }

        /// Headers of a signed request to `url` (`body` None for GET).
        pub fn headers(
            &self,
            method: &str,
            url: &str,
            body: Option<&[u8]>,
            date: SystemTime,
        ) -> Vec<(String, String)> {
            let url = url::Url::parse(url).unwrap();
            let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
            let target = match url.query() {
                Some(q) => format!("{} {}?{q}", method.to_lowercase(), url.path()),
                None => format!("{} {}", method.to_lowercase(), url.path()),
            };
            let date = httpdate::fmt_http_date(date);
            let mut lines = vec![
                format!("(request-target): {target}"),
                format!("host: {host}"),
                format!("date: {date}"),
            ];
            let mut names = "(request-target) host date".to_string();
            let mut out = vec![("host".to_string(), host), ("date".to_string(), date)];
            if let Some(body) = body {
                let digest = digest(body);
                lines.push(format!("digest: {digest}"));
                names.push_str(" digest");
                out.push(("digest".into(), digest));
            }
            let signature = self
                .key
                .sign(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(lines.join("\n").as_bytes()),
                )
                .unwrap();
            out.push((
                "signature".into(),
                format!(
                    "keyId=\"{}\",algorithm=\"rsa-sha256\",headers=\"{names}\",signature=\"{}\"",
                    self.key_id,
                    B64.encode(signature)
                ),
            ));
            out
        }
    }
}

pub async fn instance_key(inst: &TestInstance) -> String {
    let pool = inst.running.as_ref().unwrap().instance.pool().clone();
    pepeunit::store::federation::key(&pool, "instance")
        .await
        .unwrap()
        .unwrap()
        .0
}

pub fn instance_actor(inst: &TestInstance) -> String {
    format!("http://{}/pepeunit/ap/instance", inst.domain)
}

/// POSTs `body` to A's shared inbox with the given headers; returns status and detail.
pub async fn post_inbox(
    a: &TestInstance,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut req = a
        .http
        .post(format!("{}/pepeunit/ap/inbox", a.base))
        .header("content-type", "application/activity+json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.body(body).send().await.unwrap();
    let status = res.status().as_u16();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    (status, v["detail"].as_str().unwrap_or_default().to_string())
}
