//! Sign-in to Grafana with the Pepeunit account (issue 19, part 2): the OIDC provider at
//! `/grafana/oidc/...` and the `PepeunitGrafana` cookie mutations. A real relying party
//! (Python Authlib, `tests/interop/oidc_rp.py`) runs the whole code flow as Grafana would; the
//! refusals are checked here on the wire.

mod common;

use std::time::Duration;

use base64::Engine;
use common::grafana::FakeGrafana;
use common::graphql::{endpoint, error};
use common::{python, Backend, TestInstance};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

const SECRET: &str = "grafana-oidc-secret-for-tests";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oidc_rp.py");
const VERIFIER: &str = "a-verifier-of-the-pkce-kind-that-is-long-enough-0123456789";

async fn start(backend: Backend, extra: &[(&str, &str)]) -> TestInstance {
    // Grafana at its default place (the instance's own origin + /grafana) refuses quickly,
    // so sign-in's provisioning fails fast and the sign-in goes on; tests that check the
    // provisioning pass a fake Grafana's settings in `extra`, which come later and win
    let mut vars = vec![
        ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true"),
        ("PU_GRAFANA_OIDC_CLIENT_SECRET", SECRET),
        ("PU_GRAFANA_ADMIN_USER", "admin"),
        ("PU_GRAFANA_ADMIN_PASSWORD", "secret"),
    ];
    vars.extend_from_slice(extra);
    TestInstance::start_with(backend, &vars).await
}

/// The instance's public origin is `http://{PU_DOMAIN}` (`localhost:PORT` in tests).
fn issuer(inst: &TestInstance) -> String {
    format!("http://{}/pepeunit/api/v1/grafana/oidc", inst.domain)
}

fn redirect_uri(inst: &TestInstance) -> String {
    format!("http://{}/grafana/login/generic_oauth", inst.domain)
}

/// A client that shows redirects instead of following them (the browser's view).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs a mutation; returns its answer's `Set-Cookie` headers and JSON.
async fn cookie_mutation(
    inst: &TestInstance,
    token: Option<&str>,
    field: &str,
) -> (Vec<String>, Value) {
    let mut req = inst
        .http
        .post(endpoint(inst))
        .json(&json!({"query": format!("mutation {{ {field} {{ isNone }} }}")}));
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (cookies, r.json().await.unwrap())
}

/// The `PepeunitGrafana` value `setGrafanaCookies` gives `token`'s user.
async fn grafana_cookie(inst: &TestInstance, token: &str) -> String {
    let (cookies, body) = cookie_mutation(inst, Some(token), "setGrafanaCookies").await;
    assert_eq!(body["data"]["setGrafanaCookies"]["isNone"], true, "{body}");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
    let value = c
        .strip_prefix("PepeunitGrafana=")
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("{c}"));
    value.to_string()
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// Authorize parameters Grafana would send, with `changes` applied (empty value: removed).
fn auth_params(inst: &TestInstance, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = [
        ("response_type", "code".to_string()),
        ("client_id", "grafana-client".to_string()),
        ("redirect_uri", redirect_uri(inst)),
        ("scope", "openid profile email".to_string()),
        ("state", "the-state".to_string()),
        ("nonce", "the-nonce".to_string()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in changes {
        p.retain(|(key, _)| key != k);
        if !v.is_empty() {
            p.push((k.to_string(), v.to_string()));
        }
    }
    p
}

/// GET authorize; returns the status, the Location (if any) and the body.
async fn authorize(
    inst: &TestInstance,
    params: &[(String, String)],
    cookie: Option<&str>,
) -> (StatusCode, Option<url::Url>, Value) {
    let mut req = browser()
        .get(format!("{}/authorize", issuer(inst)))
        .query(params);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("other=1; PepeunitGrafana={c}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, location, body)
}

fn query(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A code for the cookie's user (the authorize step that must succeed).
async fn code(inst: &TestInstance, cookie: &str) -> String {
    let (status, location, body) = authorize(inst, &auth_params(inst, &[]), Some(cookie)).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    let location = location.unwrap();
    assert!(location.as_str().starts_with(&redirect_uri(inst)));
    assert_eq!(query(&location, "state").as_deref(), Some("the-state"));
    query(&location, "code").unwrap_or_else(|| panic!("no code in {location}"))
}

/// POST token with client_secret_post and `changes` applied to the form.
async fn exchange(
    inst: &TestInstance,
    code: &str,
    changes: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form: Vec<(String, String)> = [
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", redirect_uri(inst)),
        ("code_verifier", VERIFIER.to_string()),
        ("client_id", "grafana-client".to_string()),
        ("client_secret", SECRET.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in changes {
        form.retain(|(key, _)| key != k);
        if !v.is_empty() {
            form.push((k.to_string(), v.to_string()));
        }
    }
    let r = inst
        .http
        .post(format!("{}/token", issuer(inst)))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn userinfo(inst: &TestInstance, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = inst.http.get(format!("{}/userinfo", issuer(inst)));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn relying_party(inst: &TestInstance, cookie: &str, auth_method: &str) -> Option<Value> {
    let python = python()?;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(SCRIPT)
        .args([
            &issuer(inst),
            "grafana-client",
            SECRET,
            &redirect_uri(inst),
            cookie,
            auth_method,
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "*")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the relying party finishes within 60 s")
        .expect("python starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the relying party failed:\n{stderr}\n{stdout}"
    );
    let line = stdout.lines().last().expect("a JSON line");
    Some(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{stderr}")))
}

/// The full code flow with Authlib as the relying party, both client authentication methods;
/// the signing key survives a restart.
async fn python_relying_party_signs_in(backend: Backend) {
    let grafana = FakeGrafana::start().await;
    let env = grafana.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut inst = start(backend, &env).await;
    let (uuid, token) = inst.user("grafana1").await;
    let (_, user) = inst.get(&format!("/users/{uuid}"), Some(&token)).await;
    let org = user["grafana_org_name"].as_str().unwrap().to_string();
    let cookie = grafana_cookie(&inst, &token).await;
    let mut kids = Vec::new();
    for method in ["client_secret_basic", "client_secret_post"] {
        let Some(out) = relying_party(&inst, &cookie, method).await else {
            eprintln!("skipped: PU_TEST_PYTHON not set");
            return;
        };
        assert_eq!(
            out["userinfo"],
            json!({"sub": uuid, "name": uuid, "email": uuid, "preferred_username": "grafana1",
                   "role": "Editor", "organization": org}),
            "{out}"
        );
        let id = &out["id_token"];
        assert_eq!(id["iss"], issuer(&inst));
        assert_eq!(id["aud"], "grafana-client");
        assert_eq!(id["sub"], uuid.as_str());
        assert_eq!(id["organization"], org.as_str());
        assert_eq!(out["token"]["token_type"], "Bearer");
        assert_eq!(out["token"]["expires_in"], 3600);
        kids.push(out["kid"].as_str().unwrap().to_string());
    }
    assert_eq!(kids[0], kids[1]);
    // sign-in provisioned the user's Grafana organisation (upstream's create_org_if_not_exists)
    let provisioned = grafana
        .org_named(&org)
        .expect("the user's Grafana organisation");
    assert_eq!(
        provisioned.members.get(uuid.as_str()).map(String::as_str),
        Some("Editor")
    );
    assert_eq!(grafana.datasources(provisioned.id).len(), 1);
    // two sign-ins within a minute asked Grafana once (authorize in a loop must not hammer it)
    let creations = grafana
        .calls()
        .iter()
        .filter(|c| c.as_str() == "POST /api/admin/users")
        .count();
    assert_eq!(creations, 1, "{:?}", grafana.calls());
    inst.restart(Duration::from_millis(10)).await;
    let r = inst
        .http
        .get(format!("{}/jwks", issuer(&inst)))
        .send()
        .await
        .unwrap();
    let jwks: Value = r.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kids[0].as_str(), "the key is kept");
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    inst.stop().await;
}

both_backends!(python_relying_party_signs_in);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_upstreams_paths() {
    let inst = start(Backend::Sqlite, &[]).await;
    let r = inst
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            issuer(&inst)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    let base = format!("http://{}/pepeunit/api/v1/grafana/oidc", inst.domain);
    assert_eq!(d["issuer"], base.as_str());
    for (key, path) in [
        ("authorization_endpoint", "authorize"),
        ("token_endpoint", "token"),
        ("userinfo_endpoint", "userinfo"),
        ("jwks_uri", "jwks"),
    ] {
        assert_eq!(d[key], format!("{base}/{path}"), "{key}");
    }
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    inst.stop().await;
}

/// What authorize refuses, and how: never a redirect before the client and its redirect URI
/// are verified; after, a redirect with the error and the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_refusals() {
    let inst = start(Backend::Sqlite, &[]).await;
    let (_, admin) = inst.user("admin2").await;
    let (_, token) = inst.user("grafana2").await;
    let cookie = grafana_cookie(&inst, &token).await;
    let (blocked_uuid, blocked_token) = inst.user("blocked2").await;
    let blocked_cookie = grafana_cookie(&inst, &blocked_token).await;

    for changes in [
        vec![(
            "redirect_uri",
            "https://evil.example/grafana/login/generic_oauth",
        )],
        vec![("redirect_uri", "")],
        vec![("client_id", "someone-else")],
        vec![("client_id", "")],
    ] {
        let (status, location, body) =
            authorize(&inst, &auth_params(&inst, &changes), Some(&cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changes:?}: {body}");
        assert_eq!(location, None, "{changes:?}: never redirected");
        assert!(body["error"].is_string() && body["error_description"].is_string());
    }
    // a repeated parameter is not guessed at
    let mut twice = auth_params(&inst, &[]);
    twice.push(("redirect_uri".into(), "https://evil.example/cb".into()));
    let (status, location, _) = authorize(&inst, &twice, Some(&cookie)).await;
    assert_eq!((status, location), (StatusCode::BAD_REQUEST, None));

    let refused = |changes: Vec<(&'static str, &'static str)>, cookie: Option<String>| {
        let inst = &inst;
        async move {
            let (status, location, body) =
                authorize(inst, &auth_params(inst, &changes), cookie.as_deref()).await;
            assert_eq!(status, StatusCode::FOUND, "{changes:?}: {body}");
            let location = location.unwrap();
            assert!(location.as_str().starts_with(&redirect_uri(inst)));
            assert_eq!(query(&location, "state").as_deref(), Some("the-state"));
            assert_eq!(query(&location, "code"), None, "{location}");
            query(&location, "error").unwrap()
        }
    };
    let c = Some(cookie.clone());
    assert_eq!(
        refused(
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            c.clone()
        )
        .await,
        "invalid_request",
        "PKCE is required"
    );
    assert_eq!(
        refused(vec![("code_challenge_method", "plain")], c.clone()).await,
        "invalid_request"
    );
    assert_eq!(
        refused(vec![("response_type", "token")], c.clone()).await,
        "unsupported_response_type"
    );
    assert_eq!(
        refused(vec![("scope", "profile email")], c.clone()).await,
        "invalid_scope"
    );
    assert_eq!(refused(vec![], None).await, "login_required", "no cookie");
    // a USER token is not a Grafana token; a forged one is nothing
    assert_eq!(refused(vec![], Some(token.clone())).await, "login_required");
    let mut forged = cookie.clone();
    forged.pop();
    forged.push('A');
    assert_eq!(refused(vec![], Some(forged)).await, "login_required");
    // a blocked user's cookie signs in no more
    let (s, _) = inst
        .patch(
            &format!("/users/block/{blocked_uuid}"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert!(s.is_success(), "{s}");
    assert_eq!(refused(vec![], Some(blocked_cookie)).await, "access_denied");
    inst.stop().await;
}

/// What token refuses: codes are single use, bound to the verifier, the redirect URI and an
/// authenticated client; userinfo wants a live token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_userinfo_refusals() {
    let inst = start(Backend::Sqlite, &[]).await;
    let (uuid, token) = inst.user("grafana3").await;
    let cookie = grafana_cookie(&inst, &token).await;

    // the good exchange, then the same code again
    let c = code(&inst, &cookie).await;
    let (s, t) = exchange(&inst, &c, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let access = t["access_token"].as_str().unwrap().to_string();
    let (s, e) = exchange(&inst, &c, &[]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "reused"
    );
    let (s, info) = userinfo(&inst, Some(&access)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["sub"], uuid.as_str());

    // wrong verifier: refused, and the code is spent
    let c = code(&inst, &cookie).await;
    let wrong = VERIFIER.replace('a', "b");
    let (s, e) = exchange(&inst, &c, &[("code_verifier", &wrong)]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{e}"
    );
    let (s, _) = exchange(&inst, &c, &[]).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a failed exchange spends the code"
    );

    // no verifier, another redirect URI
    for changes in [
        vec![("code_verifier", "")],
        vec![("redirect_uri", "http://elsewhere.example/cb")],
        vec![("redirect_uri", "")],
    ] {
        let c = code(&inst, &cookie).await;
        let (s, e) = exchange(&inst, &c, &changes).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{changes:?}: {e}"
        );
    }

    // client authentication: wrong secret, unknown client, none, Basic with a wrong secret
    let c = code(&inst, &cookie).await;
    for changes in [
        vec![("client_secret", "not-the-secret-0123")],
        vec![("client_id", "someone-else")],
        vec![("client_secret", ""), ("client_id", "")],
    ] {
        let (s, e) = exchange(&inst, &c, &changes).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{changes:?}: {e}"
        );
    }
    let r = inst
        .http
        .post(format!("{}/token", issuer(&inst)))
        .basic_auth("grafana-client", Some("not-the-secret-0123"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", &redirect_uri(&inst)),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    // the client's failures did not spend the code: the right client still gets it
    let (s, t) = exchange(&inst, &c, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, e) = exchange(&inst, &c, &[("grant_type", "password")]).await;
    assert_eq!(e["error"], "unsupported_grant_type", "{s}");

    // userinfo: no token, an unknown one
    let (s, e) = userinfo(&inst, None).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (s, e) = userinfo(&inst, Some("not-a-token")).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    inst.stop().await;
}

/// A code dies after `PU_GRAFANA_OIDC_CODE_TTL` (1 s here); the cookie is Secure over https.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_expire_and_cookies_are_secure_over_https() {
    let inst = start(
        Backend::Sqlite,
        &[("PU_GRAFANA_OIDC_CODE_TTL", "1"), ("PU_HTTP_TYPE", "https")],
    )
    .await;
    let (_, token) = inst.user("grafana4").await;
    let (cookies, _) = cookie_mutation(&inst, Some(&token), "setGrafanaCookies").await;
    assert!(cookies[0].ends_with("; Secure"), "{cookies:?}");
    let cookie = grafana_cookie(&inst, &token).await;
    // the issuer and the registered redirect URI are https here (as configured)
    let https_uri = format!("https://{}/grafana/login/generic_oauth", inst.domain);
    let params = auth_params(&inst, &[("redirect_uri", &https_uri)]);
    let (status, location, body) = authorize(&inst, &params, Some(&cookie)).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    let c = query(&location.unwrap(), "code").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, e) = exchange(&inst, &c, &[("redirect_uri", &https_uri)]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "expired"
    );
    inst.stop().await;
}

/// Off: every OIDC path answers 405 and `setGrafanaCookies` the feature-flag error;
/// `deleteUserCookies` clears the cookie whatever the flag (upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_off_and_cookie_deletion() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let (_, token) = inst.user("grafana5").await;
    let base = issuer(&inst);
    for (method, path) in [
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/jwks"),
        ("GET", "/authorize"),
        ("POST", "/token"),
        ("GET", "/userinfo"),
    ] {
        let req = match method {
            "GET" => browser().get(format!("{base}{path}")),
            _ => browser()
                .post(format!("{base}{path}"))
                .form(&[("grant_type", "authorization_code")]),
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    let (cookies, body) = cookie_mutation(&inst, Some(&token), "setGrafanaCookies").await;
    assert!(cookies.is_empty(), "{cookies:?}");
    let got = (StatusCode::OK, body);
    assert!(error(&got).contains("Feature Flag Error"), "{}", got.1);
    let (cookies, body) = cookie_mutation(&inst, None, "deleteUserCookies").await;
    assert_eq!(body["data"]["deleteUserCookies"]["isNone"], true, "{body}");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("PepeunitGrafana=;"), "{cookies:?}");
    assert!(cookies[0].contains("Max-Age=0") && cookies[0].contains("Path=/"));
    inst.stop().await;
}

/// Only a user gets the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_users_get_the_cookie() {
    let inst = start(Backend::Sqlite, &[]).await;
    let (cookies, body) = cookie_mutation(&inst, None, "setGrafanaCookies").await;
    assert!(cookies.is_empty());
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    inst.stop().await;
}
