//! The deployment's proxy (`deploy/nginx.conf`, used by docker-compose.yml) in front of a real
//! instance and a stand-in for the web frontend: one origin serves the frontend at `/`, the
//! root document, REST, GraphQL (queries, uploads and WebSocket subscriptions) and federation
//! discovery, as the official frontend expects. Runs Debian's nginx (`PU_TEST_NGINX`, installed
//! by scripts/test.sh); the upstream host names of the compose file are pointed at loopback.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use common::graphql::{connect, next, subscribe};
use common::{free_port, Backend, StaticServer, TestInstance};

/// nginx, stopped when dropped: SIGTERM to the master, which stops its workers (SIGKILL would
/// leave them running).
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<String> {
    match std::env::var("PU_TEST_NGINX") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if common::require_all() => panic!("PU_TEST_NGINX is not set but PU_TEST_REQUIRE_ALL=1"),
        _ => None,
    }
}

/// deploy/nginx.conf with its upstreams on loopback, listening on `port`, running unprivileged
/// paths under `dir`.
fn config(
    instance: &str,
    frontend: &str,
    grafana: &str,
    port: u16,
    dir: &std::path::Path,
) -> String {
    let conf = std::fs::read_to_string("deploy/nginx.conf").expect("deploy/nginx.conf");
    for needle in [
        "server pepeunit:5291;",
        "http://frontend:80",
        "http://grafana:3000",
        "listen 80;",
    ] {
        assert!(
            conf.contains(needle),
            "deploy/nginx.conf no longer has {needle:?}"
        );
    }
    let d = dir.display();
    let conf = conf
        .replace("server pepeunit:5291;", &format!("server {instance};"))
        .replace("http://frontend:80", frontend)
        .replace("http://grafana:3000", grafana)
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "http {",
            &format!(
                "http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
            ),
        );
    // root runs the workers as root here (the test's temp files are its own)
    let user = if nix_root() { "user root;\n" } else { "" };
    format!("{user}daemon off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n{conf}")
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_serves_frontend_api_graphql_and_subscriptions() {
    let Some(nginx) = nginx_binary() else {
        eprintln!("skipped: PU_TEST_NGINX not set");
        return;
    };
    let inst = TestInstance::start(Backend::Sqlite).await;
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>Pepeunit frontend</title>",
    )
    .unwrap();
    let frontend = StaticServer::start(site.path().to_path_buf()).await;
    // Grafana serves from its sub-path: the proxy passes /grafana/... unchanged
    let grafana_site = tempfile::tempdir().unwrap();
    std::fs::create_dir(grafana_site.path().join("grafana")).unwrap();
    std::fs::write(
        grafana_site.path().join("grafana/index.html"),
        "<!doctype html><title>Grafana</title>",
    )
    .unwrap();
    let grafana = StaticServer::start(grafana_site.path().to_path_buf()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let instance_addr = inst.base.trim_start_matches("http://").to_string();
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(
        &conf_path,
        config(
            &instance_addr,
            &frontend.base,
            &grafana.base,
            port,
            dir.path(),
        ),
    )
    .unwrap();
    let check = Command::new(&nginx)
        .args(["-t", "-q", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .output()
        .expect("run nginx -t");
    assert!(
        check.status.success(),
        "nginx refuses deploy/nginx.conf: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{origin}/pepeunit")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "nginx did not come up on {origin}");

    // the frontend at /, the root document and REST under /pepeunit
    let page = http
        .get(format!("{origin}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("Pepeunit frontend"));
    let page = http
        .get(format!("{origin}/grafana/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<title>Grafana</title>"));
    let root: serde_json::Value = http
        .get(format!("{origin}/pepeunit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["name"], "pepeunit", "{root}");
    let nodeinfo = http
        .get(format!("{origin}/.well-known/nodeinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(nodeinfo.status().as_u16(), 200);

    // GraphQL through the proxy: a user, a token, a query
    let gql = |query: &str, vars: serde_json::Value, token: Option<String>| {
        let mut req = http
            .post(format!("{origin}/pepeunit/graphql"))
            .json(&json!({"query": query, "variables": vars}));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        async move {
            let v: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            v
        }
    };
    let v = gql(
        "mutation { createUser(user: {login: \"owner\", password: \"password-1\"}) { uuid } }",
        json!({}),
        None,
    )
    .await;
    assert!(v.get("errors").is_none(), "{v}");
    let v = gql(
        "query { getToken(data: {credentials: \"owner\", password: \"password-1\"}) }",
        json!({}),
        None,
    )
    .await;
    let token = v["data"]["getToken"].as_str().unwrap().to_string();
    let v = gql(
        "{ getBaseMetrics { userCount } }",
        json!({}),
        Some(token.clone()),
    )
    .await;
    assert_eq!(v["data"]["getBaseMetrics"]["userCount"], 1, "{v}");

    // a subscription through the proxy: the WebSocket upgrade passes, the feed starts (and
    // is refused for a unit that does not exist, with REST's text)
    let mut ws = connect(&origin, Some(&token)).await;
    subscribe(
        &mut ws,
        "s",
        "subscription($u: UUID!) { unitState(uuid: $u) { unitUuid } }",
        json!({"u": uuid::Uuid::new_v4()}),
    )
    .await;
    let m = next(&mut ws, Duration::from_secs(10))
        .await
        .expect("an answer through the proxy");
    assert!(m.to_string().contains("404: 2: Validation Error"), "{m}");
    drop(ws);
    inst.stop().await;
}
