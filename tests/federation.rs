//! Federation between two instances of our server on loopback (SPEC §11, issue 4): follows,
//! the hub following Creates, Updates and Deletes, domain policy both ways, the durable
//! delivery queue across restarts, and the refusal of local peers without
//! PU_ALLOW_LOCAL_NETWORK (here through its older name PU_FEDERATION_ALLOW_LOCAL).

mod common;

use std::time::Duration;

use common::federation::{
    eventually, follow_and_wait, instance_actor, instance_key, post_inbox, signed,
};
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
    // the README (fixture: "# Fan controller") is searchable and gives the description
    let hit = hub_sees(&b, "q=fan%20controller&kind=Repo", "weather_repo").await;
    assert_eq!(hit["description"], "Fan controller", "{hit}");

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
    let (alice_uuid, a_admin) = a.user("alice").await;
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

    // a second Digest header in front: the first matches the body sent, the signed one is
    // another body's (a replayed signature); one value per covered header or nothing
    let body = follow_activity(&b, &b_actor, &a_actor);
    let other = follow_activity(&b, &b_actor, &a_actor);
    let mut headers = vec![("digest".to_string(), signed::digest(&other))];
    headers.extend(signer.headers("POST", &inbox, Some(&body), now));
    let r = post_inbox(&a, headers, other).await;
    assert_eq!(r.0, 401, "{r:?}");
    assert!(r.1.contains("more than one digest"), "{r:?}");

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
    let alice_actor = format!("http://{}/pepeunit/ap/users/{alice_uuid}", a.domain);
    let mut req = a
        .http
        .get(&alice_actor)
        .header("accept", "application/activity+json");
    for (k, v) in signer.headers("GET", &alice_actor, None, now) {
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

async fn set_list(inst: &TestInstance, admin: &str, list: &str, mode: &str, domains: &[&str]) {
    let (s, v) = inst
        .call(
            "PUT",
            &format!("/federation/domains/{list}"),
            Some(admin),
            Some(json!({"mode": mode, "domains": domains})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Waits until `inst` has a dead-lettered delivery whose error contains `needle`.
async fn dead_letter(inst: &TestInstance, admin: &str, needle: &str) -> Value {
    eventually(&format!("a dead letter with {needle:?}"), || async {
        let (_, v) = inst
            .get("/federation/deliveries?state=Dead", Some(admin))
            .await;
        v.as_array()?
            .iter()
            .find(|d| {
                d["last_error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(needle)
            })
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_policy_refuses_both_ways_and_allow_list_keeps_strangers_out() {
    let a = start(Backend::Sqlite, &[]).await;
    let b = start(Backend::Sqlite, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let (_, b_admin) = b.user("bobby").await;
    let firmware = FirmwareRepo::create().await;
    registry_repo_unit(&a, &a_admin, &firmware, "policy", "Public").await;

    // A denies B: B's Follow is refused at A's inbox (dead-lettered at B with the reason),
    // and A cannot follow B either
    set_list(&a, &a_admin, "federation", "deny", &[&b.domain]).await;
    let (s, v) = b
        .post(
            "/federation/follow",
            Some(&b_admin),
            json!({"domain": a.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dead = dead_letter(&b, &b_admin, "HTTP 403").await;
    assert_eq!(dead["domain"], a.domain, "{dead}");
    let (s, v) = a
        .post(
            "/federation/follow",
            Some(&a_admin),
            json!({"domain": b.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("policy"), "{v}");

    // allow-list mode with only a friend: B is still a stranger
    set_list(&a, &a_admin, "federation", "allow", &["friend.example"]).await;
    let (s, _) = b
        .post(
            "/federation/follow",
            Some(&b_admin),
            json!({"domain": a.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    eventually("a second 403", || async {
        let (_, v) = b
            .get("/federation/deliveries?state=Dead", Some(&b_admin))
            .await;
        (v.as_array()?.len() >= 2).then_some(())
    })
    .await;
    let (_, follows) = b.get("/federation/follow", Some(&b_admin)).await;
    assert_eq!(follows[0]["state"], "Pending", "{follows}");

    // admitted: the next Follow is accepted and the hub fills
    let (s, v) = a
        .post(
            "/federation/domains/federation/domains",
            Some(&a_admin),
            json!({"domain": b.domain}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "allow");
    follow_and_wait(&b, &b_admin, &a).await;
    hub_sees(&b, "q=policy", "policy_repo").await;

    // B now denies A: what came from A is dropped from B's hub and store
    set_list(&b, &b_admin, "federation", "deny", &[&a.domain]).await;
    hub_lacks(&b, "q=policy", "policy_repo").await;
    let (s, v) = b
        .get(&format!("/hub/search?instance={}", a.domain), None)
        .await;
    assert_eq!((s, v["count"].clone()), (StatusCode::OK, json!(0)), "{v}");

    a.stop().await;
    b.stop().await;
}

async fn new_repo(a: &TestInstance, token: &str, registry: &Value, name: &str) {
    let (s, v) = a
        .post(
            "/repos",
            Some(token),
            json!({"repository_registry_uuid": registry["uuid"], "default_branch": "main", "visibility_level": "Public", "name": name, "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_restarts_and_dead_letter_after_the_last_try() {
    let mut a = start(Backend::Sqlite, &[("PU_FEDERATION_MAX_ATTEMPTS", "4")]).await;
    let mut b = start(Backend::Sqlite, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let (_, b_admin) = b.user("bobby").await;
    let firmware = FirmwareRepo::create().await;
    let (registry, _, _) = registry_repo_unit(&a, &a_admin, &firmware, "queue", "Public").await;
    follow_and_wait(&b, &b_admin, &a).await;
    hub_sees(&b, "q=queue", "queue_repo").await;
    eventually("the backfill to be delivered", || async {
        let (_, v) = a.get("/federation/deliveries", Some(&a_admin)).await;
        (v == json!([])).then_some(())
    })
    .await;

    // B is down: the Create is retried, survives a restart of A, and arrives when B is back
    b.running.take().unwrap().stop().await.unwrap();
    new_repo(&a, &a_admin, &registry, "offline_repo").await;
    let pending = eventually("a failed attempt", || async {
        let (_, v) = a
            .get("/federation/deliveries?state=Pending", Some(&a_admin))
            .await;
        v.as_array()?
            .iter()
            .find(|d| d["attempts"].as_i64() >= Some(1))
            .cloned()
    })
    .await;
    assert!(pending["last_error"].as_str().is_some(), "{pending}");
    a.restart(Duration::from_millis(100)).await;
    let (_, v) = a
        .get("/federation/deliveries?state=Pending", Some(&a_admin))
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    b.restart(Duration::ZERO).await;
    hub_sees(&b, "q=offline", "offline_repo").await;
    eventually("A's queue to drain", || async {
        let (_, v) = a.get("/federation/deliveries", Some(&a_admin)).await;
        (v == json!([])).then_some(())
    })
    .await;

    // B down for good: after the fourth attempt the delivery is dead, with the reason
    b.running.take().unwrap().stop().await.unwrap();
    new_repo(&a, &a_admin, &registry, "lost_repo").await;
    let dead = dead_letter(&a, &a_admin, "gave up after 4 attempts").await;
    assert_eq!(dead["attempts"], 4, "{dead}");
    assert_eq!(dead["domain"], b.domain);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_peers_are_refused_without_allow_local() {
    // no PU_ALLOW_LOCAL_NETWORK: production rules
    let a = TestInstance::start_with(Backend::Sqlite, &[("PU_ALLOW_LOCAL_NETWORK", "false")]).await;
    let b = start(Backend::Sqlite, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    for (domain, reason) in [
        (b.domain.as_str(), "PU_ALLOW_LOCAL_NETWORK"),
        // resolves to 127.0.0.1: refused by the resolver, before any connection
        ("localhost", "loopback"),
        ("127.0.0.1", "IP address"),
        ("10.0.0.1", "IP address"),
    ] {
        let (s, v) = a
            .post(
                "/federation/follow",
                Some(&a_admin),
                json!({"domain": domain}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{domain}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(reason),
            "{domain}: {v}"
        );
    }
    let (_, v) = a
        .post(
            "/federation/follow",
            Some(&a_admin),
            json!({"domain": b.domain}),
        )
        .await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("PU_ALLOW_LOCAL_NETWORK"),
        "{v}"
    );
    // a correctly signed Follow from a loopback peer: A will not fetch its key
    let b_actor = instance_actor(&b);
    let signer = signed::Signer::from_pem(format!("{b_actor}#main-key"), &instance_key(&b).await);
    let inbox = format!("http://{}/pepeunit/ap/inbox", a.domain);
    let body = follow_activity(&b, &b_actor, &instance_actor(&a));
    let r = post_inbox(
        &a,
        signer.headers("POST", &inbox, Some(&body), std::time::SystemTime::now()),
        body,
    )
    .await;
    assert_eq!(r.0, 401, "{r:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_and_paged_collections() {
    let a = start(Backend::Sqlite, &[]).await;
    let (alice_uuid, token) = a.user("alice").await;
    let firmware = FirmwareRepo::create().await;
    let (_, repo, unit) = registry_repo_unit(&a, &token, &firmware, "disco", "Public").await;
    let (_, private_repo, private_unit) = registry_repo_unit(
        &a,
        &token,
        &FirmwareRepo::create().await,
        "hidden",
        "Internal",
    )
    .await;
    let ap = |url: String| {
        let req = a
            .http
            .get(url)
            .header("accept", "application/activity+json");
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let ct = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, ct, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let origin = format!("http://{}", a.domain);

    // WebFinger: the instance actor and users
    let (s, _, v) = ap(format!(
        "{}/.well-known/webfinger?resource=acct:{}@{}",
        a.base, a.domain, a.domain
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["links"][0]["href"],
        format!("{origin}/pepeunit/ap/instance")
    );
    let (s, _, v) = ap(format!(
        "{}/.well-known/webfinger?resource=acct:alice@{}",
        a.base, a.domain
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["links"][0]["href"],
        format!("{origin}/pepeunit/ap/users/{alice_uuid}")
    );
    for bad in ["acct:nobody@x", "acct:ghost@DOMAIN", "nonsense"] {
        let (s, _, _) = ap(format!(
            "{}/.well-known/webfinger?resource={}",
            a.base,
            bad.replace("DOMAIN", &a.domain)
        ))
        .await;
        assert!(s.is_client_error(), "{bad}: {s}");
    }

    // NodeInfo 2.1
    let (s, _, v) = ap(format!("{}/.well-known/nodeinfo", a.base)).await;
    assert_eq!(s, StatusCode::OK);
    let href = v["links"][0]["href"]
        .as_str()
        .unwrap()
        .replace(&origin, &a.base);
    let (s, ct, v) = ap(href).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        ct.contains("nodeinfo.diaspora.software/ns/schema/2.1"),
        "{ct}"
    );
    assert_eq!(v["version"], "2.1");
    assert_eq!(v["software"]["name"], "pepeunit");
    assert_eq!(v["protocols"], json!(["activitypub"]));
    assert_eq!(v["usage"]["users"]["total"], 1);
    assert_eq!(v["metadata"]["publicRepos"], 1);
    assert_eq!(v["metadata"]["publicUnits"], 1);

    // actor documents of public objects; Internal and Private ones do not exist outside
    let repo_id = format!(
        "{origin}/pepeunit/ap/repos/{}",
        repo["uuid"].as_str().unwrap()
    );
    let (s, ct, v) = ap(repo_id.replace(&origin, &a.base)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/activity+json");
    assert_eq!(v["type"], "Repository");
    assert_eq!(v["id"], repo_id);
    assert_eq!(v["cloneUri"], firmware.url());
    assert_eq!(v["platform"], "Gitlab");
    assert_eq!(v["publicKey"]["owner"], repo_id);
    assert_eq!(
        v["endpoints"]["sharedInbox"],
        format!("{origin}/pepeunit/ap/inbox")
    );
    let unit_id = format!(
        "{origin}/pepeunit/ap/units/{}",
        unit["uuid"].as_str().unwrap()
    );
    let (_, _, v) = ap(unit_id.replace(&origin, &a.base)).await;
    assert_eq!(v["type"], "Service");
    assert_eq!(v["repository"], repo_id);
    assert!(v["nodes"].as_array().is_some(), "{v}");
    let (_, _, v) = ap(format!("{}/pepeunit/ap/users/{alice_uuid}", a.base)).await;
    assert_eq!(v["type"], "Person");
    assert_eq!(v["preferredUsername"], "alice");
    for hidden in [
        format!(
            "{}/pepeunit/ap/repos/{}",
            a.base,
            private_repo["uuid"].as_str().unwrap()
        ),
        format!(
            "{}/pepeunit/ap/units/{}",
            a.base,
            private_unit["uuid"].as_str().unwrap()
        ),
        format!("{}/pepeunit/ap/repos/{}", a.base, uuid::Uuid::new_v4()),
        format!("{}/pepeunit/ap/gadgets/{}", a.base, uuid::Uuid::new_v4()),
        format!("{}/pepeunit/ap/repos/not-a-uuid", a.base),
    ] {
        let (s, _, _) = ap(hidden.clone()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{hidden}");
    }

    // the instance outbox pages Creates of public objects only
    let (_, _, v) = ap(format!("{}/pepeunit/ap/instance/outbox", a.base)).await;
    assert_eq!(v["type"], "OrderedCollection");
    assert_eq!(v["totalItems"], 2);
    let (_, _, v) = ap(format!("{}/pepeunit/ap/instance/outbox?page=1", a.base)).await;
    let items = v["orderedItems"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["type"] == "Create"), "{v}");
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["object"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&repo_id.as_str()) && ids.contains(&unit_id.as_str()),
        "{ids:?}"
    );
    let (s, _, _) = ap(format!("{}/pepeunit/ap/instance/outbox?page=0", a.base)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = ap(format!("{}/pepeunit/ap/instance/likes", a.base)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // followers are paged 50 at a time
    let pool = a.running.as_ref().unwrap().instance.pool().clone();
    for i in 0..120 {
        let follower = format!("https://f{i}.example/actor");
        pepeunit::store::federation::add_follower(
            &pool,
            &repo_id,
            &follower,
            &format!("f{i}.example"),
            &format!("{follower}/inbox"),
            &format!("{follower}/follow/1"),
        )
        .await
        .unwrap();
    }
    let followers = format!(
        "{}/pepeunit/ap/repos/{}/followers",
        a.base,
        repo["uuid"].as_str().unwrap()
    );
    let (_, _, v) = ap(followers.clone()).await;
    assert_eq!(v["totalItems"], 120);
    assert_eq!(v["first"], format!("{repo_id}/followers?page=1"));
    assert_eq!(v["last"], format!("{repo_id}/followers?page=3"));
    let (_, _, p1) = ap(format!("{followers}?page=1")).await;
    assert_eq!(p1["orderedItems"].as_array().unwrap().len(), 50);
    assert_eq!(p1["next"], format!("{repo_id}/followers?page=2"));
    let (_, _, p3) = ap(format!("{followers}?page=3")).await;
    assert_eq!(p3["orderedItems"].as_array().unwrap().len(), 20);
    assert!(p3.get("next").is_none(), "{p3}");
    assert_eq!(p3["prev"], format!("{repo_id}/followers?page=2"));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_lists_are_admin_only_validated_and_csv_round_trips() {
    let a = start(Backend::Sqlite, &[]).await;
    let (_, admin) = a.user("alice").await;
    let (_, user) = a.user("plainuser").await;
    for (method, path) in [
        ("GET", "/federation/domains/federation"),
        ("GET", "/federation/follow"),
        ("GET", "/federation/deliveries"),
        ("GET", "/federation/domains/git_hosts/csv"),
    ] {
        let (s, _) = a.call(method, path, Some(&user), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        let (s, _) = a.call(method, path, None, None).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
            "{path}: {s}"
        );
    }
    let (s, _) = a
        .call("GET", "/federation/domains/nonsense", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = a.get("/federation/domains/federation", Some(&admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"list": "federation", "mode": "deny", "domains": []})
    );

    // an invalid domain or mode changes nothing
    set_list(
        &a,
        &admin,
        "federation",
        "deny",
        &["spam.example", "*.bad.example"],
    )
    .await;
    let (s, v) = a
        .call(
            "PUT",
            "/federation/domains/federation",
            Some(&admin),
            Some(json!({"mode": "deny", "domains": ["ok.example", "not a domain"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = a
        .call(
            "PUT",
            "/federation/domains/federation",
            Some(&admin),
            Some(json!({"mode": "sometimes", "domains": []})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, v) = a.get("/federation/domains/federation", Some(&admin)).await;
    assert_eq!(v["domains"], json!(["bad.example", "spam.example"]));

    // CSV export, then import: a bad line is named and nothing changes
    let (s, csv) = a
        .call_raw(
            "GET",
            "/federation/domains/federation/csv",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "domain\nbad.example\nspam.example\n"
    );
    let import = |body: &'static str, replace: bool| {
        let req = a
            .http
            .post(a.url(&format!(
                "/federation/domains/federation/csv?replace={replace}"
            )))
            .header("x-auth-token", admin.clone())
            .header("content-type", "text/csv")
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = import("domain\nfine.example\nno way\n", false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["detail"].as_str().unwrap().contains("line 3"), "{v}");
    let (_, v) = a.get("/federation/domains/federation", Some(&admin)).await;
    assert_eq!(v["domains"], json!(["bad.example", "spam.example"]));
    let (s, v) = import("# peers we refuse\nnew.example\n", false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["domains"],
        json!(["bad.example", "new.example", "spam.example"])
    );
    let (s, v) = import("domain\nonly.example\n", true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["domains"], json!(["only.example"]));
    let (s, v) = a
        .delete(
            "/federation/domains/federation/domains/only.example",
            Some(&admin),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["domains"], json!([]));
    let (s, _) = a
        .delete(
            "/federation/domains/federation/domains/only.example",
            Some(&admin),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // git hosts: registries may only come from permitted hosts
    let firmware = FirmwareRepo::create().await;
    set_list(&a, &admin, "git_hosts", "deny", &["127.0.0.1"]).await;
    let registry = json!({"platform": "Gitlab", "repository_url": firmware.url(), "is_public_repository": true, "credentials": null});
    let (s, v) = a
        .post("/repository_registry", Some(&admin), registry.clone())
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    set_list(
        &a,
        &admin,
        "git_hosts",
        "allow",
        &["gitlab.com", "github.com"],
    )
    .await;
    let (s, _) = a
        .post("/repository_registry", Some(&admin), registry.clone())
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    set_list(
        &a,
        &admin,
        "git_hosts",
        "allow",
        &["github.com", "127.0.0.1"],
    )
    .await;
    let (s, created) = a.post("/repository_registry", Some(&admin), registry).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    // denied later: no new repos from that registry
    set_list(&a, &admin, "git_hosts", "deny", &["127.0.0.1"]).await;
    let (s, v) = a
        .post(
            "/repos",
            Some(&admin),
            json!({"repository_registry_uuid": created["uuid"], "default_branch": "main", "visibility_level": "Public", "name": "late_repo", "is_compilable_repo": false}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("not permitted"),
        "{v}"
    );

    // hub search input checks
    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "kind=Gadget",
        "instance=not%20a%20domain",
    ] {
        let (s, v) = a.get(&format!("/hub/search?{bad}"), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let long = "x".repeat(501);
    let (s, _) = a.get(&format!("/hub/search?q={long}"), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_follow_remote_repos() {
    let a = start(Backend::Sqlite, &[]).await;
    let b = start(Backend::Sqlite, &[]).await;
    let (_, a_admin) = a.user("alice").await;
    let (_, _b_admin) = b.user("bobby").await;
    let (_, b_user) = b.user("carol").await;
    let firmware = FirmwareRepo::create().await;
    let (_, repo, _) = registry_repo_unit(&a, &a_admin, &firmware, "sensor", "Public").await;
    let repo_uuid = repo["uuid"].as_str().unwrap();
    let repo_id = format!("http://{}/pepeunit/ap/repos/{repo_uuid}", a.domain);

    // a plain user (not an admin) follows A's Repo by its id; it joins B's hub at once
    let (s, v) = b
        .post(
            "/federation/repos/follow",
            Some(&b_user),
            json!({"url": repo_id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["actor"], repo_id);
    hub_sees(&b, "q=sensor", "sensor_repo").await;
    eventually("the Repo to accept", || async {
        let (_, v) = b.get("/federation/repos/follow", Some(&b_user)).await;
        (v[0]["state"] == "Accepted").then_some(())
    })
    .await;
    let followers_url = format!("{}/pepeunit/ap/repos/{repo_uuid}/followers?page=1", a.base);
    let (_, v) = a.get(&followers_url, None).await;
    assert_eq!(v["orderedItems"].as_array().unwrap().len(), 1, "{v}");

    // the Repo's Update reaches B (from the Repo actor) without any instance follow
    let (s, v) = a
        .patch(
            &format!("/repos/{repo_uuid}"),
            Some(&a_admin),
            json!({"name": "thermo_repo"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    hub_sees(&b, "q=thermo", "thermo_repo").await;

    // bad input
    let (s, _) = b
        .post(
            "/federation/repos/follow",
            Some(&b_user),
            json!({"url": "not a url"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = b
        .post("/federation/repos/follow", None, json!({"url": repo_id}))
        .await;
    assert!(s.is_client_error());

    // unfollow: Undo reaches A, the follower is gone
    let (s, v) = b
        .post(
            "/federation/repos/unfollow",
            Some(&b_user),
            json!({"url": repo_id}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    eventually("the follower to leave", || async {
        let (_, v) = a.get(&followers_url, None).await;
        v["orderedItems"].as_array()?.is_empty().then_some(())
    })
    .await;
    let (s, _) = b
        .post(
            "/federation/repos/unfollow",
            Some(&b_user),
            json!({"url": repo_id}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_the_hub_from_the_database() {
    let mut a = start(Backend::Sqlite, &[]).await;
    let (_, token) = a.user("alice").await;
    let firmware = FirmwareRepo::create().await;
    registry_repo_unit(&a, &token, &firmware, "rebuild", "Public").await;
    hub_sees(&a, "q=rebuild", "rebuild_repo").await;
    a.running.take().unwrap().stop().await.unwrap();
    // lose the index entirely, then rebuild it with the CLI
    let hub_dir = a.data.path().join("hub");
    if hub_dir.exists() {
        std::fs::remove_dir_all(&hub_dir).unwrap();
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"));
    cmd.arg("reindex")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in [
        ("PU_DATA_DIR", a.data.path().display().to_string()),
        ("PU_DOMAIN", a.domain.clone()),
        ("PU_HTTP_BIND", a.config.http_bind.to_string()),
    ] {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("hub index rebuilt: 2 documents"),
        "{stdout}"
    );
    a.restart(Duration::ZERO).await;
    hub_sees(&a, "q=rebuild&kind=Unit", "rebuild_unit").await;
    a.stop().await;
}
