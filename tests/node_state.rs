//! Node state analysis (SPEC §6): request counters, the admin report, the Prometheus text and
//! the error tracker fed by internal errors. Throttling, eviction and /proc parsing are unit
//! tests in `src/observe`.

mod common;

use common::{assert_detail, Backend, TestInstance};
use pepeunit::observe::{Channel, Node};
use reqwest::StatusCode;

fn node(inst: &TestInstance) -> &Node {
    &inst.running.as_ref().unwrap().instance.node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_report_counts_requests_and_refuses_others() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    let (_, admin) = inst.user("admin1").await; // the first user is the admin
    let (_, user) = inst.user("user1").await;

    let (s, before) = inst.get("/metrics/node", Some(&admin)).await;
    assert_eq!(s, StatusCode::OK, "{before}");
    for channel in ["mqtt", "graphql", "rest", "telegram", "activitypub"] {
        let c = &before["channels"][channel];
        assert!(c["total"].is_u64(), "{channel}: {before}");
        assert!(
            c["rate_1m"].is_number() && c["rate_5m"].is_number(),
            "{before}"
        );
    }
    for key in ["cpu_percent", "rss_bytes", "threads", "uptime_secs"] {
        assert!(before["process"].get(key).is_some(), "{key}: {before}");
    }
    for key in [
        "cpu_percent",
        "mem_total_bytes",
        "mem_available_bytes",
        "load_1",
        "load_5",
        "load_15",
    ] {
        assert!(before["machine"].get(key).is_some(), "{key}: {before}");
    }
    if cfg!(target_os = "linux") {
        assert!(before["process"]["rss_bytes"].as_u64().unwrap() > 0);
        assert!(before["process"]["threads"].as_u64().unwrap() > 0);
        assert!(before["machine"]["mem_total_bytes"].as_u64().unwrap() > 0);
    }
    assert!(before["errors"].is_array(), "{before}");
    assert!(before["mqtt"]["counters"]["received"].is_u64(), "{before}");

    let rest = before["channels"]["rest"]["total"].as_u64().unwrap();
    for _ in 0..3 {
        assert_eq!(inst.get("/metrics", None).await.0, StatusCode::OK);
    }
    node(&inst).count(Channel::Telegram);
    let (_, after) = inst.get("/metrics/node", Some(&admin)).await;
    // three requests and this report's own
    assert_eq!(after["channels"]["rest"]["total"], rest + 4, "{after}");
    assert_eq!(after["channels"]["telegram"]["total"], 1);
    assert_eq!(after["channels"]["graphql"]["total"], 0);

    assert_detail(&inst.get("/metrics/node", Some(&user)).await, 403, "Admin");
    assert_eq!(
        inst.get("/metrics/node", None).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = inst
        .get("/metrics/node?order=asc&limit=1", Some(&admin))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = inst.get("/metrics/node?order=sideways", Some(&admin)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, doc) = inst.get("/openapi.json", None).await;
    assert!(
        doc["paths"]["/metrics/node"]["get"].is_object(),
        "generated from the handler"
    );
    inst.stop().await;
}

/// A parsed sample line: name, labels (unescaped), value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the text exposition strictly: `# HELP`/`# TYPE` comments, and `name{labels} value`
/// lines whose family was declared before.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let name_end = line.find(['{', ' ']).expect("name");
        let name = &line[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(name), "no TYPE before {line}");
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.chars();
            loop {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("closing quote") {
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            c => panic!("bad escape {c:?} in {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    c => panic!("unexpected {c:?} in {line}"),
                }
            }
            rest = chars.as_str();
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_parses_and_is_guarded() {
    let token = "scrape-token-0123456789";
    let inst = TestInstance::start_with(Backend::Sqlite, &[("PU_METRICS_TOKEN", token)]).await;
    let (_, admin) = inst.user("admin1").await;
    let (_, user) = inst.user("user1").await;
    let odd_kind = "quote \" backslash \\ newline \n end";
    node(&inst).error(odd_kind, "detail");

    let url = format!("{}/pepeunit/metrics", inst.base);
    let get = |auth: Option<(&'static str, String)>| {
        let mut req = inst.http.get(&url);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send()
    };
    let resp = get(Some(("authorization", format!("Bearer {token}"))))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.unwrap();
    let samples = parse_exposition(&text);
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    };
    assert!(find("pepeunit_requests_total", Some(("channel", "rest"))).unwrap() >= 1.0);
    assert_eq!(
        find("pepeunit_requests_total", Some(("channel", "graphql"))),
        Some(0.0)
    );
    assert_eq!(
        find("pepeunit_errors_total", Some(("kind", odd_kind))),
        Some(1.0),
        "{text}"
    );
    assert!(
        find("pepeunit_mqtt_received_total", None).is_some(),
        "{text}"
    );
    assert!(find("pepeunit_uptime_seconds", None).is_some(), "{text}");
    if cfg!(target_os = "linux") {
        assert!(find("pepeunit_process_resident_memory_bytes", None).unwrap() > 0.0);
        assert!(find("pepeunit_machine_memory_total_bytes", None).unwrap() > 0.0);
    }

    let status = |r: reqwest::Result<reqwest::Response>| r.unwrap().status();
    assert_eq!(
        status(get(Some(("authorization", format!("Bearer {admin}")))).await),
        StatusCode::FORBIDDEN,
        "a user token is not the metrics token"
    );
    assert_eq!(
        status(
            get(Some((
                "authorization",
                "Bearer wrong-token-0123456789".into()
            )))
            .await
        ),
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(get(None).await), StatusCode::FORBIDDEN);
    assert_eq!(
        status(get(Some(("x-auth-token", user))).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(get(Some(("x-auth-token", admin))).await),
        StatusCode::OK
    );

    let (_, root) = inst.get(&format!("{}/pepeunit", inst.base), None).await;
    assert_eq!(root["feature_flags"]["pu_ff_prometheus_enable"], true);
    inst.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_shows_in_the_tracker() {
    let inst = TestInstance::start(Backend::Sqlite).await;
    // a closed pool makes every database read fail: a 500 without a test-only path
    inst.running
        .as_ref()
        .unwrap()
        .instance
        .db
        .pool
        .close()
        .await;
    let (s, body) = inst.get("/metrics", None).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "Internal Server Error", "nothing leaks to the client");
    let errors = node(&inst).errors(false, 0);
    let internal: Vec<_> = errors
        .iter()
        .filter(|e| e.kind.starts_with("internal: "))
        .collect();
    assert_eq!(internal.len(), 1, "{errors:?}");
    assert_eq!(internal[0].count, 1);
    assert!(!internal[0].last_detail.is_empty());
    inst.stop().await;
}
