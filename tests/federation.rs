//! Federation between two instances of our server on loopback (SPEC §11, issue 4): follows,
//! the hub following Creates, Updates and Deletes, domain policy both ways, the durable
//! delivery queue across restarts, and the refusal of local peers without
//! PU_FEDERATION_ALLOW_LOCAL.

mod common;

use std::time::Duration;

use common::fixtures::{registry_repo_unit, FirmwareRepo};
use common::{Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};

const LOCAL: &[(&str, &str)] = &[
    ("PU_FEDERATION_ALLOW_LOCAL", "true"),
    ("PU_FEDERATION_RETRY_BASE", "1"),
];

async fn start(backend: Backend, extra: &[(&str, &str)]) -> TestInstance {
    let mut vars = LOCAL.to_vec();
    vars.extend_from_slice(extra);
    TestInstance::start_with(backend, &vars).await
}

/// Polls `probe` every 100 ms for up to 20 s until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
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

async fn search(inst: &TestInstance, query: &str) -> Value {
    let (s, v) = inst.get(&format!("/hub/search?{query}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

async fn follow_and_wait(follower: &TestInstance, admin: &str, followed: &TestInstance) {
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

async fn hub_sees(inst: &TestInstance, query: &str, name: &str) -> Value {
    eventually(&format!("{name} in the hub of {}", inst.domain), || async {
        let page = search(inst, query).await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
    })
    .await
}

async fn hub_lacks(inst: &TestInstance, query: &str, name: &str) {
    eventually(
        &format!("{name} gone from the hub of {}", inst.domain),
        || async {
            let page = search(inst, query).await;
            (!names(&page).iter().any(|n| n == name)).then_some(())
        },
    )
    .await
}

async fn two_instances_share_public_repos_and_units(backend: Backend) {
    let a = start(backend, &[]).await;
    let b = start(backend, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let (_, b_admin) = b.user("bobby").await;
    let firmware = FirmwareRepo::create().await;

    // created before the follow: reaches B through the backfill after Accept
    let (_, repo, unit) = registry_repo_unit(&a, &a_admin, &firmware, "weather", "Public").await;
    // private ones never leave A
    let (s, hidden) = a
        .post(
            "/repos",
            Some(&a_admin),
            json!({"repository_registry_uuid": repo["repository_registry_uuid"], "default_branch": "main", "visibility_level": "Private", "name": "secret_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hidden}");

    follow_and_wait(&b, &b_admin, &a).await;
    let hit = hub_sees(&b, "q=weather&kind=Repo", "weather_repo").await;
    let repo_url = format!(
        "http://{}/pepeunit/ap/repos/{}",
        a.domain,
        repo["uuid"].as_str().unwrap()
    );
    assert_eq!(hit["url"], repo_url);
    assert_eq!(hit["instance"], a.domain);
    assert_eq!(hit["kind"], "Repo");
    assert_eq!(hit["uuid"], repo["uuid"]);
    let hit = hub_sees(&b, "q=weather&kind=Unit", "weather_unit").await;
    assert_eq!(hit["kind"], "Unit");
    assert_eq!(
        hit["url"],
        format!(
            "http://{}/pepeunit/ap/units/{}",
            a.domain,
            unit["uuid"].as_str().unwrap()
        )
    );
    let all = search(&b, &format!("instance={}", a.domain)).await;
    assert!(!names(&all).contains(&"secret_repo".to_string()), "{all}");
    // A's own search sees its public objects too
    hub_sees(&a, "q=weather", "weather_repo").await;

    // created after the follow: a Create
    let (s, later) = a
        .post(
            "/repos",
            Some(&a_admin),
            json!({"repository_registry_uuid": repo["repository_registry_uuid"], "default_branch": "main", "visibility_level": "Public", "name": "greenhouse_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{later}");
    hub_sees(&b, "q=greenhouse", "greenhouse_repo").await;

    // an Update: renamed
    let later_uuid = later["uuid"].as_str().unwrap();
    let (s, v) = a
        .patch(
            &format!("/repos/{later_uuid}"),
            Some(&a_admin),
            json!({"name": "orchard_repo"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    hub_sees(&b, "q=orchard", "orchard_repo").await;
    hub_lacks(&b, "q=greenhouse", "greenhouse_repo").await;

    // a Unit made Private: a Delete
    let unit_uuid = unit["uuid"].as_str().unwrap();
    let (s, v) = a
        .patch(
            &format!("/units/{unit_uuid}"),
            Some(&a_admin),
            json!({"visibility_level": "Private"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    hub_lacks(&b, "q=weather&kind=Unit", "weather_unit").await;
    hub_lacks(&a, "q=weather&kind=Unit", "weather_unit").await;

    // a Repo deleted: a Delete
    let (s, v) = a
        .delete(&format!("/repos/{later_uuid}"), Some(&a_admin))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    hub_lacks(&b, "q=orchard", "orchard_repo").await;

    // nothing is left in A's queue: everything was delivered
    let (_, queued) = a.get("/federation/deliveries", Some(&a_admin)).await;
    assert_eq!(queued, json!([]), "{queued}");

    // unfollow drops what B learned from A
    let (s, _) = b
        .delete(&format!("/federation/follow/{}", a.domain), Some(&b_admin))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    hub_lacks(&b, "q=weather", "weather_repo").await;

    a.stop().await;
    b.stop().await;
}

both_backends!(two_instances_share_public_repos_and_units);

// ---------------------------------------------------------------------------------------------
// Signatures: requests are signed by hand here (not with our signing code), as another server
// would, so the checks are tested against the draft-cavage format itself.

mod signed {
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
                let digest = format!("SHA-256={}", B64.encode(Sha256::digest(body)));
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

async fn instance_key(inst: &TestInstance) -> String {
    let pool = inst.running.as_ref().unwrap().instance.pool().clone();
    pepeunit::store::federation::key(&pool, "instance")
        .await
        .unwrap()
        .unwrap()
        .0
}

fn instance_actor(inst: &TestInstance) -> String {
    format!("http://{}/pepeunit/ap/instance", inst.domain)
}

/// POSTs `body` to A's shared inbox with the given headers; returns status and detail.
async fn post_inbox(
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

fn follow_activity(from: &TestInstance, actor: &str, object: &str) -> Vec<u8> {
    json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("http://{}/pepeunit/ap/activities/{}", from.domain, uuid::Uuid::new_v4()),
        "type": "Follow",
        "actor": actor,
        "object": object,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_checks_signatures_before_anything_else() {
    let a = start(Backend::Sqlite, &[]).await;
    let b = start(Backend::Sqlite, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let b_actor = instance_actor(&b);
    let a_actor = instance_actor(&a);
    let inbox = format!("http://{}/pepeunit/ap/inbox", a.domain);
    let signer = signed::Signer::from_pem(format!("{b_actor}#main-key"), &instance_key(&b).await);
    let now = std::time::SystemTime::now();

    // a correct Follow from B's instance actor is accepted; its redelivery is recognised
    let body = follow_activity(&b, &b_actor, &a_actor);
    let ok = post_inbox(
        &a,
        signer.headers("POST", &inbox, Some(&body), now),
        body.clone(),
    )
    .await;
    assert_eq!(ok.0, 202, "{ok:?}");
    let again = post_inbox(&a, signer.headers("POST", &inbox, Some(&body), now), body).await;
    assert_eq!(again, (202, "already received".to_string()));

    // unsigned
    let body = follow_activity(&b, &b_actor, &a_actor);
    let r = post_inbox(&a, vec![], body).await;
    assert_eq!(r.0, 401, "{r:?}");

    // tampered body: signed digest of one body, another body sent
    let body = follow_activity(&b, &b_actor, &a_actor);
    let other = follow_activity(&b, &b_actor, &a_actor);
    let r = post_inbox(&a, signer.headers("POST", &inbox, Some(&body), now), other).await;
    assert_eq!(r.0, 401, "{r:?}");
    assert!(r.1.contains("digest"), "{r:?}");

    // forged: B's key id, another key
    let forger = signed::Signer {
        key_id: format!("{b_actor}#main-key"),
        key: rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap(),
    };
    let body = follow_activity(&b, &b_actor, &a_actor);
    let r = post_inbox(&a, forger.headers("POST", &inbox, Some(&body), now), body).await;
    assert_eq!(r.0, 401, "{r:?}");

    // unknown key: an actor nobody serves
    let nobody = "http://localhost:9/pepeunit/ap/instance";
    let stranger = signed::Signer {
        key_id: format!("{nobody}#main-key"),
        key: forger.key.clone(),
    };
    let body = follow_activity(&b, nobody, &a_actor);
    let r = post_inbox(&a, stranger.headers("POST", &inbox, Some(&body), now), body).await;
    assert_eq!(r.0, 401, "{r:?}");

    // stale and future Date
    for date in [
        now - Duration::from_secs(2 * 3600),
        now + Duration::from_secs(3600),
    ] {
        let body = follow_activity(&b, &b_actor, &a_actor);
        let r = post_inbox(&a, signer.headers("POST", &inbox, Some(&body), date), body).await;
        assert_eq!(r.0, 401, "{r:?}");
    }

    // signed by B's instance, claiming another actor
    let body = follow_activity(
        &b,
        &format!(
            "http://{}/pepeunit/ap/users/{}",
            b.domain,
            uuid::Uuid::new_v4()
        ),
        &a_actor,
    );
    let r = post_inbox(&a, signer.headers("POST", &inbox, Some(&body), now), body).await;
    assert_eq!(r, (401, "activity actor is not the signer".to_string()));

    // after the signature: garbage and unknown types are 400, never 500
    let garbage = b"{not json".to_vec();
    let r = post_inbox(
        &a,
        signer.headers("POST", &inbox, Some(&garbage), now),
        garbage,
    )
    .await;
    assert_eq!(r.0, 400, "{r:?}");
    let like = json!({"id": format!("http://{}/x/{}", b.domain, uuid::Uuid::new_v4()), "type": "Like", "actor": b_actor, "object": a_actor}).to_string().into_bytes();
    let r = post_inbox(&a, signer.headers("POST", &inbox, Some(&like), now), like).await;
    assert_eq!(r.0, 400, "{r:?}");
    assert!(r.1.contains("Like"), "{r:?}");

    // a denied domain is refused before its key is even fetched, inbox and GETs alike
    let (s, v) = a
        .call(
            "PUT",
            "/federation/domains/federation",
            Some(&a_admin),
            Some(json!({"mode": "deny", "domains": [b.domain]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = follow_activity(&b, &b_actor, &a_actor);
    let r = post_inbox(&a, signer.headers("POST", &inbox, Some(&body), now), body).await;
    assert_eq!(r.0, 403, "{r:?}");
    let mut req = a
        .http
        .get(&a_actor)
        .header("accept", "application/activity+json");
    for (k, v) in signer.headers("GET", &a_actor, None, now) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::FORBIDDEN);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_fetch_requires_signed_gets() {
    let a = start(
        Backend::Sqlite,
        &[("PU_FEDERATION_AUTHORIZED_FETCH", "true")],
    )
    .await;
    let b = start(Backend::Sqlite, &[]).await;
    let (_, token) = a.user("alice").await;
    let firmware = FirmwareRepo::create().await;
    let (_, repo, _) = registry_repo_unit(&a, &token, &firmware, "fetch", "Public").await;
    let repo_actor = format!(
        "http://{}/pepeunit/ap/repos/{}",
        a.domain,
        repo["uuid"].as_str().unwrap()
    );
    let get = |url: String, headers: Vec<(String, String)>| {
        let mut req = a
            .http
            .get(url)
            .header("accept", "application/activity+json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        get(repo_actor.clone(), vec![]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("{repo_actor}/followers"), vec![]).await,
        StatusCode::UNAUTHORIZED
    );
    // the instance actor, WebFinger and NodeInfo stay readable: peers need them to verify us
    assert_eq!(get(instance_actor(&a), vec![]).await, StatusCode::OK);
    assert_eq!(
        get(format!("{}/.well-known/nodeinfo", a.base), vec![]).await,
        StatusCode::OK
    );
    let b_actor = instance_actor(&b);
    let signer = signed::Signer::from_pem(format!("{b_actor}#main-key"), &instance_key(&b).await);
    let now = std::time::SystemTime::now();
    let signed = signer.headers("GET", &repo_actor, None, now);
    assert_eq!(get(repo_actor.clone(), signed).await, StatusCode::OK);
    // a signature over another path does not open this one
    let elsewhere = signer.headers("GET", &instance_actor(&a), None, now);
    assert_eq!(
        get(repo_actor.clone(), elsewhere).await,
        StatusCode::UNAUTHORIZED
    );
    // and B itself (no authorized fetch) follows A: B's signed fetches get through
    let (_, b_admin) = b.user("bobby").await;
    follow_and_wait(&b, &b_admin, &a).await;
    hub_sees(&b, "q=fetch", "fetch_repo").await;
    a.stop().await;
    b.stop().await;
}
