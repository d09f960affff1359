//! ActivityPub: remote documents read into hub entries, the Signature header's checks, and
//! the inbox over HTTP (hostile signatures, and hostile activities signed by a real peer).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pepeunit_federation::documents::{domain_of, hub_doc};
use pepeunit_federation::signing::SignedRequest;
use proptest::prelude::*;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{check, hostile_string, json_value, object_with, Tally};
use crate::common::federation::{
    follow_and_wait, instance_actor, instance_key, post_inbox, signed,
};
use crate::common::{Backend, TestInstance};

const DOC_KEYS: [&str; 9] = [
    "type",
    "id",
    "name",
    "preferredUsername",
    "summary",
    "readme",
    "topics",
    "platform",
    "movedTo",
];

fn url_text(domain: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z0-9/_.-]{0,40}".prop_map(move |p| json!(format!("http://{domain}/pepeunit/ap/{p}"))),
        1 => "[a-zA-Z][a-zA-Z0-9+.-]{0,8}:[^ ]{0,40}".prop_map(Value::String),
        1 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ]
}

/// A Repository or Service document with every field present or not, of the right type or
/// not, strings hostile and long.
fn object_document(domain: &'static str) -> impl Strategy<Value = Value> {
    (
        object_with(&DOC_KEYS),
        prop::sample::select(vec!["Repository", "Service", "Note", ""]),
        prop::option::of(url_text(domain)),
        prop::option::of(prop::collection::vec(hostile_string(), 0..300)),
    )
        .prop_map(|(mut m, kind, id, topics)| {
            m.insert("type".into(), json!(kind));
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            if let Some(t) = topics {
                m.insert("topics".into(), json!(t));
            }
            Value::Object(m)
        })
}

/// A remote document becomes a hub entry only with its fields cut to their bounds.
#[test]
fn remote_documents_into_hub_entries() {
    let doc = prop_oneof![4 => object_document("peer.example"), 1 => json_value()];
    let tally = Tally::default();
    check(512, doc, |doc| {
        let Some(h) = hub_doc(&doc) else {
            tally.saw("not indexed");
            return Ok(());
        };
        tally.saw("indexed");
        prop_assert!(matches!(
            doc["type"].as_str(),
            Some("Repository" | "Service")
        ));
        prop_assert!(h.name.chars().count() <= 200);
        prop_assert!(h.description.chars().count() <= 2000);
        prop_assert!(h.readme.chars().count() <= 64 * 1024);
        prop_assert!(h.platform.chars().count() <= 50);
        prop_assert!(h.topics.len() <= 200);
        prop_assert!(h.topics.iter().all(|t| t.chars().count() <= 200));
        let url = url::Url::parse(&h.url).unwrap();
        prop_assert_eq!(domain_of(&url), Some(h.instance));
        Ok(())
    });
    tally.expect(&["not indexed", "indexed"]);
}

const DOMAIN: &str = "ours.example";

/// A Signature header: the four parameters a real one has (in any order, sometimes one
/// repeated, changed or left out, sometimes with a stranger), or any list of `k=v`, or text.
fn signature_header() -> impl Strategy<Value = String> {
    let covered = prop::sample::select(vec![
        "(request-target) host date digest",
        "(request-target) host date digest",
        "(request-target) host (created) digest",
        "(request-target) host date",
        "(request-target) HOST Date Digest",
        "host date digest",
        "",
    ]);
    let param = (
        prop::sample::select(vec![
            "keyId",
            "algorithm",
            "headers",
            "signature",
            "created",
            "x",
        ]),
        "[ -~]{0,20}",
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    let real = (
        covered,
        "[A-Za-z0-9+/]{0,64}={0,2}",
        prop::collection::vec(param.clone(), 0..2),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(covered, sig, extra, rotate, drop, spaces)| {
            let mut params = vec![
                "keyId=\"https://peer.example/actor#main-key\"".to_string(),
                "algorithm=\"rsa-sha256\"".to_string(),
                format!("headers=\"{covered}\""),
                format!("signature=\"{sig}\""),
            ];
            params.extend(extra);
            let n = params.len();
            params.rotate_left(rotate.index(n));
            if drop.index(8) == 0 {
                params.remove(drop.index(n));
            }
            params.join(if spaces { ", " } else { "," })
        });
    prop_oneof![
        4 => real,
        1 => prop::collection::vec(param, 0..8).prop_map(|p| p.join(",")),
        1 => "[ -~]{0,200}",
    ]
}

fn header_value() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop::sample::select(vec![
        "host",
        "date",
        "digest",
        "signature",
        "authorization",
        "x-other",
    ]);
    let value = prop_oneof![
        Just(DOMAIN.as_bytes().to_vec()),
        Just(DOMAIN.to_uppercase().into_bytes()),
        (-8000i64..8000).prop_map(|s| {
            let t = SystemTime::now()
                .checked_add(Duration::from_secs(s.unsigned_abs()))
                .filter(|_| s >= 0)
                .unwrap_or_else(|| SystemTime::now() - Duration::from_secs(s.unsigned_abs()));
            httpdate::fmt_http_date(t).into_bytes()
        }),
        signature_header().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    (name.prop_map(str::to_string), value)
}

fn request_parts() -> impl Strategy<Value = (HeaderMap, Option<Vec<u8>>)> {
    (
        signature_header(),
        prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(header_value(), 0..4)],
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        0u8..3,
    )
        .prop_map(|(signature, extra, with_host, body, digest)| {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&signature) {
                headers.append("signature", v);
            }
            if with_host {
                headers.append("host", HeaderValue::from_static(DOMAIN));
            }
            headers.append(
                "date",
                HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
            );
            if let Some(b) = &body {
                let digest = match digest {
                    0 => format!("SHA-256={}", B64.encode(Sha256::digest(b))),
                    1 => format!("sha-512=x, SHA-256={}", B64.encode(Sha256::digest(b))),
                    _ => "SHA-256=AAAA".to_string(),
                };
                headers.append("digest", HeaderValue::from_str(&digest).unwrap());
            }
            for (k, v) in extra {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v);
                }
            }
            (headers, body)
        })
}

/// One test key pair; no generated signature may verify with it.
static KEY: LazyLock<String> = LazyLock::new(|| {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    key.to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
});

/// The Signature header checks: a reason for every refusal; a precheck passes only with one
/// signature covering what must be covered, our host, and a digest of the body; a generated
/// signature never verifies.
#[test]
fn signature_headers() {
    let tally = Tally::default();
    check(1024, request_parts(), |(headers, body)| {
        let req = SignedRequest {
            method: "post",
            path_and_query: "/pepeunit/ap/inbox",
            headers: &headers,
            body: body.as_deref(),
        };
        match req.key_owner() {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(_) => tally.saw("key owner"),
        }
        match req.precheck(DOMAIN) {
            Err(e) => {
                tally.saw("refused");
                prop_assert!(!e.to_string().is_empty())
            }
            Ok(()) => {
                tally.saw(if body.is_some() {
                    "passed with a body"
                } else {
                    "passed"
                });
                prop_assert_eq!(headers.get_all("signature").iter().count(), 1);
                prop_assert!(headers.get_all("host").iter().count() == 1);
                prop_assert!(headers["host"]
                    .as_bytes()
                    .eq_ignore_ascii_case(DOMAIN.as_bytes()));
                prop_assert!(!headers.contains_key("authorization"));
                if let Some(b) = &body {
                    let expected = B64.encode(Sha256::digest(b));
                    let digest = headers["digest"].to_str().unwrap();
                    prop_assert!(digest.contains(&format!("SHA-256={expected}")), "{digest}");
                }
                prop_assert!(req.verify(&KEY).is_err());
            }
        }
        Ok(())
    });
    tally.expect(&["key owner", "refused", "passed", "passed with a body"]);
}

/// What a peer's instance actor sends: activities of every kind with hostile fields and
/// objects, the actor and id mostly right so that they get past the first checks.
fn activity(peer: &'static str, actor: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "Follow", "Undo", "Accept", "Reject", "Create", "Update", "Delete", "Move", "Like",
        ]),
        prop_oneof![4 => Just(json!(actor)), 1 => Just(json!({"id": actor})), 1 => json_value()],
        prop_oneof![
            4 => "[a-z0-9]{1,16}".prop_map(move |s| json!(format!("http://{peer}/pepeunit/ap/activities/{s}"))),
            1 => url_text(peer),
        ],
        prop_oneof![3 => object_document(peer), 1 => url_text(peer)],
        // a quarter without hostile extra fields, so that more cases get all the way in
        // (with them always present, a run once saw no case accepted in 256)
        prop_oneof![
            3 => object_with(&["to", "cc", "target", "origin", "published"]),
            1 => Just(Map::new()),
        ],
    )
        .prop_map(|(kind, actor, id, object, extra)| {
            let mut m = Map::new();
            m.insert("@context".into(), json!("https://www.w3.org/ns/activitystreams"));
            m.extend(extra);
            m.insert("type".into(), json!(kind));
            m.insert("actor".into(), actor);
            m.insert("id".into(), id);
            m.insert("object".into(), object);
            Value::Object(m)
        })
}

fn without_nul(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', "")),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nul).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.replace('\0', ""), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

async fn inbox(backend: Backend) {
    let rt = tokio::runtime::Handle::current();
    let local = &[("PU_FEDERATION_ALLOW_LOCAL", "true")];
    let a = TestInstance::start_with(backend, local).await;
    let b = TestInstance::start_with(backend, local).await;
    let (_, a_admin) = a.user("admin").await;
    // A follows B's hub feed, so B's Creates and Updates reach A's storage and hub index
    follow_and_wait(&a, &a_admin, &b).await;
    let b_actor = leak(instance_actor(&b));
    let signer = signed::Signer::from_pem(format!("{b_actor}#main-key"), &instance_key(&b).await);
    let inbox_url = format!("http://{}/pepeunit/ap/inbox", a.domain);
    let peer = leak(b.domain.clone());
    // NUL anywhere is refused at once: half the cases go without, to get further
    let cases = (
        prop_oneof![
            activity(peer, b_actor),
            activity(peer, b_actor).prop_map(without_nul)
        ],
        prop::option::weighted(0.2, signature_header()),
    );
    let a_ref = &a;
    let tally = Tally::default();
    tokio::task::block_in_place(|| {
        // 512: about 1 case in 100 gets all the way in, and the tally below must see one
        check(512, cases, |(activity, forged)| {
            let body = activity.to_string().into_bytes();
            let mut headers = signer.headers("POST", &inbox_url, Some(&body), SystemTime::now());
            if let Some(f) = forged {
                // a hostile Signature header instead of the real one: refused before any fetch
                headers.retain(|(k, _)| k != "signature");
                headers.push(("signature".into(), f));
            }
            let (status, detail) = rt.block_on(post_inbox(a_ref, headers, body));
            tally.saw(match status {
                200..=299 => "accepted",
                401 => "unauthorized",
                _ => "refused after the signature",
            });
            prop_assert!(status < 500, "{status} {detail} for {activity}");
            if status >= 400 {
                prop_assert!(!detail.is_empty(), "{status} without a reason");
            }
            Ok(())
        })
    });
    tally.expect(&["accepted", "unauthorized", "refused after the signature"]);
    // still serving
    let (s, _) = a.get("/federation/follow", Some(&a_admin)).await;
    assert_eq!(s.as_u16(), 200);
    a.stop().await;
    b.stop().await;
}

crate::both_backends!(inbox);

/// Regression: an Accept whose object id held a NUL character reached a PostgreSQL query and
/// answered 500 ("invalid byte sequence for encoding UTF8: 0x00"); now refused with a 400.
async fn an_activity_with_nul_is_refused(backend: Backend) {
    let local = &[("PU_FEDERATION_ALLOW_LOCAL", "true")];
    let a = TestInstance::start_with(backend, local).await;
    let b = TestInstance::start_with(backend, local).await;
    let b_actor = instance_actor(&b);
    let signer = signed::Signer::from_pem(format!("{b_actor}#main-key"), &instance_key(&b).await);
    let body = json!({
        "id": format!("http://{}/pepeunit/ap/activities/1", b.domain),
        "type": "Accept",
        "actor": b_actor,
        "object": {"id": "a\u{0}b"},
    })
    .to_string()
    .into_bytes();
    let inbox_url = format!("http://{}/pepeunit/ap/inbox", a.domain);
    let headers = signer.headers("POST", &inbox_url, Some(&body), SystemTime::now());
    let got = post_inbox(&a, headers, body).await;
    assert_eq!(got, (400, "activity contains a NUL character".to_string()));
    a.stop().await;
    b.stop().await;
}

mod nul {
    crate::both_backends!(an_activity_with_nul_is_refused);
    use super::an_activity_with_nul_is_refused;
}
