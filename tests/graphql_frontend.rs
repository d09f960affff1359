//! The official frontend works unchanged (issue 15): its 70 operations (tests/graphql/frontend,
//! see the README there) validate against our schema, exercise every upstream root field, and
//! each one runs on a seeded instance with real variables, its answer compared with REST's for
//! the same objects. Every test that needs a server runs on SQLite and PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use serde_json::{json, Value};

use common::fixtures::FirmwareRepo;
use common::graphql::{gql, same_fields, upload};
use common::mqtt::{base_topic, unit_token, MqttDevice};
use common::telegram::{FakeTelegram, BOT_USERNAME};
use common::{Backend, TestInstance};
use pepeunit::domain::LogLevel;

/// Upstream's answer for the Grafana features while they are disabled.
const FLAG: &str =
    "405: 15: Feature Flag Error: This feature has been disabled by the instance Owner";

/// The pepeunit.toml getConvertTomlToMd converts.
const PEPEUNIT_TOML: &[u8] = b"[general]\nname = \"Fan\"\ndescription = \"A fan controller\"\n";

/// One operation of the corpus.
#[derive(Clone, Debug)]
struct Op {
    file: String,
    /// `query` or `mutation`
    kind: String,
    name: String,
    root: String,
    /// `(name, type)` of each variable, in order
    variables: Vec<(String, String)>,
    text: String,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/graphql/frontend")
}

/// Every `.graphql` file of the corpus, in file order.
fn corpus() -> Vec<Op> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graphql"))
        .collect();
    files.sort();
    files.iter().map(|p| parse_op(p.as_path())).collect()
}

/// Reads the header of one operation: kind, name, variables and its (single) root field.
fn parse_op(path: &Path) -> Op {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut words = body.split_whitespace();
    let kind = words.next().unwrap().to_string();
    assert!(kind == "query" || kind == "mutation", "{path:?}: {kind}");
    let name: String = words
        .next()
        .unwrap()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let open = body.find('{').unwrap();
    let header = &body[..open];
    let variables = header
        .split('$')
        .skip(1)
        .map(|v| {
            let (n, t) = v.split_once(':').expect("a typed variable");
            let t = t.trim().trim_end_matches(')').trim();
            (n.trim().to_string(), t.to_string())
        })
        .collect();
    let root: String = body[open + 1..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    Op {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        kind,
        name,
        root,
        variables,
        text,
    }
}

/// The root fields of the upstream schema's Query and Mutation types (`Query.getUser`, ...).
fn upstream_roots() -> BTreeSet<String> {
    let schema = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/graphql/upstream-schema.graphql"),
    )
    .unwrap();
    let mut roots = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in schema.lines() {
        match line.trim() {
            "type Query {" => current = Some("Query"),
            "type Mutation {" => current = Some("Mutation"),
            "}" => current = None,
            field => {
                if let Some(t) = current {
                    let name: String = field
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        roots.insert(format!("{t}.{name}"));
                    }
                }
            }
        }
    }
    roots
}

/// The corpus is whole: at least the 70 operations, unique names, one root field each, and
/// together they call every root field upstream's Query and Mutation have.
#[test]
fn the_corpus_covers_every_upstream_root_field() {
    let ops = corpus();
    assert!(ops.len() >= 70, "{} operations", ops.len());
    let names: BTreeSet<&str> = ops.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), ops.len(), "operation names are unique");
    let covered: BTreeSet<String> = ops
        .iter()
        .map(|o| {
            let t = if o.kind == "query" {
                "Query"
            } else {
                "Mutation"
            };
            format!("{t}.{}", o.root)
        })
        .collect();
    let roots = upstream_roots();
    assert!(roots.len() >= 60, "parsed {roots:?}");
    assert!(roots.contains("Query.getUnits") && roots.contains("Mutation.createUser"));
    let missing: Vec<&String> = roots.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "no frontend operation calls {missing:?}"
    );
    let unknown: Vec<&String> = covered.difference(&roots).collect();
    assert!(unknown.is_empty(), "not upstream root fields: {unknown:?}");
}

/// A value of the right type for a required variable (nullable ones are left out).
fn placeholder(ty: &str) -> Value {
    match ty.trim_end_matches('!') {
        "UUID" => json!(uuid::Uuid::new_v4()),
        "String" => json!("x"),
        "Boolean" => json!(false),
        "Int" => json!(1),
        "VisibilityLevel" => json!("PUBLIC"),
        "PermissionEntities" => json!("UNIT"),
        "DashboardPanelTypeEnum" => json!("TIME_SERIES"),
        "GitPlatform" => json!("GITLAB"),
        "BackendTopicCommand" => json!("ENV_UPDATE"),
        "ProcessingPolicyType" => json!("N_RECORDS"),
        "CredentialsInput" => json!({"username": "u", "patToken": "p"}),
        other => panic!("no placeholder for a required {other}: add one"),
    }
}

/// Sends `op` with `variables`, as a multipart upload when it takes a file.
async fn send(
    inst: &TestInstance,
    token: Option<&str>,
    op: &Op,
    variables: Value,
) -> (StatusCode, Value) {
    if op.variables.iter().any(|(_, t)| t.starts_with("Upload")) {
        let (file, content): (&str, &[u8]) = match op.name.as_str() {
            "getConvertTomlToMd" => ("pepeunit.toml", PEPEUNIT_TOML),
            "setDataPipeDataCsv" => ("data.csv", b"create_datetime,state\n"),
            _ => ("data_pipe.yml", b"policy:\n  type: LastValue\n"),
        };
        upload(inst, token, &op.text, variables, file, content).await
    } else {
        gql(inst, token, &op.text, variables).await
    }
}

/// Every operation parses and validates against our running schema: whatever it answers, no
/// error is a document or variable error (those carry no `path`; errors of resolvers, such as
/// not found or the feature flag, carry the field's path).
async fn every_operation_validates_against_our_schema(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("owner").await;
    // the check can fail: a field or argument our schema lacks, or a missing required
    // argument, is an error without a path
    for bad in [
        "query getUser($uuid: UUID!) { getUser(uuid: $uuid) { uuid nope } }",
        "query getUser($uuid: UUID!) { getUser(uuid: $uuid, nope: 1) { uuid } }",
        "query getUser($uuid: UUID!) { getUser(uuid: $uuid) { uuid } getUnit { uuid } }",
    ] {
        let (_, answer) = gql(
            &inst,
            Some(&token),
            bad,
            json!({"uuid": uuid::Uuid::new_v4()}),
        )
        .await;
        assert!(answer["errors"][0]["message"].is_string(), "{answer}");
        assert!(answer["errors"][0].get("path").is_none(), "{answer}");
    }
    for op in corpus() {
        let mut variables = json!({});
        for (name, ty) in &op.variables {
            if ty.ends_with('!') && !ty.starts_with("Upload") {
                variables[name] = placeholder(ty);
            }
        }
        let (status, answer) = send(&inst, Some(&token), &op, variables).await;
        assert_eq!(status, StatusCode::OK, "{}: {answer}", op.file);
        for e in answer["errors"].as_array().into_iter().flatten() {
            assert!(
                e["path"].as_array().is_some_and(|p| !p.is_empty()),
                "{}: a validation error: {e}",
                op.file
            );
            let message = e["message"].as_str().unwrap_or_default();
            for needle in [
                "Unknown field",
                "Unknown argument",
                "Unknown type",
                "Invalid value",
            ] {
                assert!(!message.contains(needle), "{}: {e}", op.file);
            }
        }
        if answer.get("errors").is_none() {
            assert!(!answer["data"][&op.root].is_null() || op.root == "getCredentials");
        }
    }
    inst.stop().await;
}

/// Runs corpus operations by name and remembers which ran.
struct Frontend<'a> {
    inst: &'a TestInstance,
    ops: BTreeMap<String, Op>,
    ran: BTreeSet<String>,
}

impl Frontend<'_> {
    async fn send(
        &mut self,
        name: &str,
        token: Option<&str>,
        variables: Value,
    ) -> (StatusCode, Value) {
        let op = self
            .ops
            .get(name)
            .unwrap_or_else(|| panic!("no operation {name} in the corpus"))
            .clone();
        for key in variables.as_object().unwrap().keys() {
            assert!(
                op.variables.iter().any(|(n, _)| n == key),
                "{name} has no variable ${key}"
            );
        }
        self.ran.insert(name.to_string());
        let got = send(self.inst, token, &op, variables).await;
        assert_eq!(got.0, StatusCode::OK, "{name}: {}", got.1);
        got
    }

    /// The root field's answer of an operation that must succeed.
    async fn ok(&mut self, name: &str, token: &str, variables: Value) -> Value {
        let got = self.send(name, Some(token), variables).await;
        assert!(got.1.get("errors").is_none(), "{name}: {}", got.1);
        let root = self.ops[name].root.clone();
        got.1["data"][root].clone()
    }

    /// A write answering `NoneType`.
    async fn done(&mut self, name: &str, token: &str, variables: Value) {
        let got = self.ok(name, token, variables).await;
        assert_eq!(got, json!({"isNone": true}), "{name}");
    }

    /// An operation of a disabled feature: upstream's feature-flag error, no data.
    async fn flag(&mut self, name: &str, token: &str, variables: Value) {
        let got = self.send(name, Some(token), variables).await;
        assert_eq!(got.1["errors"][0]["message"], FLAG, "{name}: {}", got.1);
        assert!(got.1["data"].is_null(), "{name}: {}", got.1);
    }

    async fn rest(&self, path: &str, token: &str) -> Value {
        let (status, v) = self.inst.get(path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        v
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// A seeded instance (two users, a registry on a local git repository, a repo, two units with
/// the nodes their schema makes, an edge, a permission, unit logs, state storage, node
/// values), then every corpus operation with real variables: reads, updates, deletes last.
async fn every_operation_runs_with_real_data(backend: Backend) {
    let tg = FakeTelegram::start().await;
    let env: Vec<(&str, String)> = tg.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = TestInstance::start_with(backend, &env).await;
    let firmware = FirmwareRepo::create().await;
    let mut fe = Frontend {
        inst: &inst,
        ops: corpus().into_iter().map(|o| (o.name.clone(), o)).collect(),
        ran: BTreeSet::new(),
    };

    // --- users: the first one registered is the admin; getToken signs in
    let got = fe
        .send(
            "createUser",
            None,
            json!({"login": "owner", "password": "password-1"}),
        )
        .await;
    assert!(got.1.get("errors").is_none(), "{}", got.1);
    let me = got.1["data"]["createUser"].clone();
    assert_eq!(me["role"], "ADMIN", "{me}");
    let got = fe
        .send(
            "getToken",
            None,
            json!({"credentials": "owner", "password": "password-1"}),
        )
        .await;
    assert!(got.1.get("errors").is_none(), "{}", got.1);
    let token = s(&got.1["data"]["getToken"]);
    // the token works over REST, and the user REST answers is the one GraphQL created
    let me_uuid = s(&me["uuid"]);
    same_fields(
        &fe.rest(&format!("/users/{me_uuid}"), &token).await,
        &me,
        &[],
    );
    // a wrong password is REST's refusal
    let got = gql(
        &inst,
        None,
        &fe.ops["getToken"].text,
        json!({"credentials": "owner", "password": "wrong-password"}),
    )
    .await;
    let rest = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "owner", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(got.1["errors"][0]["message"], rest.1["detail"], "{}", got.1);
    let t = token.as_str();
    let (other_uuid, other_token) = inst.user("other").await;

    // --- registry, repo, two units
    let registry = fe
        .ok(
            "createRepositoryRegistry",
            t,
            json!({"platform": "GITLAB", "repositoryUrl": firmware.url(), "isPublicRepository": true, "credentials": null}),
        )
        .await;
    assert_eq!(registry["syncStatus"], "UPDATED", "{registry}");
    let reg_uuid = s(&registry["uuid"]);
    let rest_registry = fe
        .rest(&format!("/repository_registry/{reg_uuid}"), t)
        .await;
    same_fields(&rest_registry, &registry, &[]);

    // a private registry (another repository: URLs are unique), with credentials
    let private_firmware = FirmwareRepo::create().await;
    let private = fe
        .ok(
            "createRepositoryRegistry",
            t,
            json!({"platform": "GITLAB", "repositoryUrl": private_firmware.url(), "isPublicRepository": false, "credentials": {"username": "owner", "patToken": "glpat-first"}}),
        )
        .await;
    let private_uuid = s(&private["uuid"]);
    same_fields(
        &fe.rest(&format!("/repository_registry/{private_uuid}"), t)
            .await,
        &private,
        &[],
    );

    let repo = fe
        .ok(
            "createRepo",
            t,
            json!({"repositoryRegistryUuid": reg_uuid, "defaultBranch": "main", "visibilityLevel": "PUBLIC", "name": "fan_repo", "isCompilableRepo": false}),
        )
        .await;
    let repo_uuid = s(&repo["uuid"]);
    same_fields(
        &fe.rest(&format!("/repos/{repo_uuid}"), t).await,
        &repo,
        &[],
    );

    let mut units = Vec::new();
    for name in ["fan_unit", "pump_unit"] {
        let unit = fe
            .ok(
                "createUnit",
                t,
                json!({"repoUuid": repo_uuid, "visibilityLevel": "PUBLIC", "name": name, "isAutoUpdateFromRepoUnit": true, "repoBranch": null, "repoCommit": null, "targetFirmwarePlatform": null}),
            )
            .await;
        let uuid = s(&unit["uuid"]);
        same_fields(&fe.rest(&format!("/units/{uuid}"), t).await, &unit, &[]);
        units.push(uuid);
    }
    let (fan, pump) = (units[0].clone(), units[1].clone());

    // the nodes the schema made: fan's output `current_temp`, pump's input `set_fan_state`
    let node = |list: &Value, topic: &str| -> String {
        let found = list["unit_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["topic_name"] == topic)
            .unwrap_or_else(|| panic!("no node {topic} in {list}"));
        s(&found["uuid"])
    };
    let fan_nodes = fe.rest(&format!("/unit_nodes?unit_uuid={fan}"), t).await;
    let pump_nodes = fe.rest(&format!("/unit_nodes?unit_uuid={pump}"), t).await;
    let output = node(&fan_nodes, "current_temp/pepeunit");
    let input = node(&pump_nodes, "set_fan_state/pepeunit");

    // --- node settings and values, the edge, a permission, logs, state storage
    let updated = fe
        .ok(
            "updateUnitNode",
            t,
            json!({"uuid": input, "isRewritableInput": true, "isDataPipeActive": false, "maxConnections": 10}),
        )
        .await;
    assert_eq!(updated["isRewritableInput"], true, "{updated}");
    assert_eq!(updated["maxConnections"], 10, "{updated}");
    same_fields(
        &fe.rest(&format!("/unit_nodes/{input}"), t).await,
        &updated,
        &[],
    );
    let valued = fe
        .ok(
            "setStateUnitNodeInput",
            t,
            json!({"uuid": input, "state": "42"}),
        )
        .await;
    assert_eq!(valued["state"], "42", "{valued}");
    // the answer is the node as stored by the write; the MQTT core then records the value it
    // saw published on the node's topic again, with its own time (REST's PATCH does the same):
    // wait for that, so the reads below compare a settled node
    let written = s(&valued["lastUpdateDatetime"]);
    for _ in 0..50 {
        let now = fe.rest(&format!("/unit_nodes/{input}"), t).await;
        if now["last_update_datetime"] != written.as_str() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    same_fields(
        &fe.rest(&format!("/unit_nodes/{input}"), t).await,
        &valued,
        &["lastUpdateDatetime"],
    );

    let edge = fe
        .ok(
            "createUnitNodeEdge",
            t,
            json!({"nodeOutputUuid": output, "nodeInputUuid": input}),
        )
        .await;
    assert_eq!(edge["nodeOutputUuid"], output.as_str(), "{edge}");
    assert_eq!(edge["nodeInputUuid"], input.as_str(), "{edge}");
    assert!(edge["uuid"].is_string(), "{edge}");
    let linked = fe
        .rest(&format!("/unit_nodes?output_uuid={output}"), t)
        .await;
    assert_eq!(linked["count"], 1, "{linked}");
    assert_eq!(linked["unit_nodes"][0]["uuid"], input.as_str());

    let permission = fe
        .ok(
            "createPermission",
            t,
            json!({"agentUuid": other_uuid, "agentType": "USER", "resourceUuid": fan, "resourceType": "UNIT"}),
        )
        .await;
    let agents = fe
        .rest(
            &format!("/permission/get_resource_agents?resource_uuid={fan}&resource_type=Unit&agent_type=User"),
            t,
        )
        .await;
    let rest_permission = agents["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uuid"] == permission["uuid"])
        .unwrap_or_else(|| panic!("{permission} not in {agents}"));
    same_fields(rest_permission, &permission, &[]);

    let service = &inst.running.as_ref().unwrap().instance;
    let lines = vec![
        service.new_unit_log(fan.parse().unwrap(), LogLevel::Info, "booted".into()),
        service.new_unit_log(fan.parse().unwrap(), LogLevel::Error, "sensor lost".into()),
        service.new_unit_log(fan.parse().unwrap(), LogLevel::Debug, "tick".into()),
    ];
    assert_eq!(service.store_unit_logs(lines).await.unwrap(), 3);

    fe.done(
        "setStateStorage",
        t,
        json!({"uuid": fan, "state": "{\"counter\": 1}"}),
    )
    .await;

    // --- reads
    let metrics = fe.ok("getBaseMetrics", t, json!({})).await;
    assert_eq!(metrics["unitCount"], 2, "{metrics}");
    assert_eq!(metrics["unitNodeEdgeCount"], 1, "{metrics}");
    same_fields(&fe.rest("/metrics", t).await, &metrics, &[]);

    let got = fe
        .ok(
            "getResourceAgents",
            t,
            json!({"resourceUuid": fan, "resourceType": "UNIT", "offset": 0, "limit": 10}),
        )
        .await;
    let rest = fe
        .rest(
            &format!("/permission/get_resource_agents?resource_uuid={fan}&resource_type=Unit&offset=0&limit=10"),
            t,
        )
        .await;
    assert!(got["count"].as_i64().unwrap() >= 1, "{got}");
    same_fields(&rest, &got, &[]);

    let got = fe.ok("getRepo", t, json!({"uuid": repo_uuid})).await;
    same_fields(&fe.rest(&format!("/repos/{repo_uuid}"), t).await, &got, &[]);
    let got = fe
        .ok(
            "getRepos",
            t,
            json!({"repositoryRegistryUuid": reg_uuid, "visibilityLevel": ["PUBLIC", "INTERNAL", "PRIVATE"], "orderByCreateDate": "desc", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 1, "{got}");
    let rest = fe
        .rest(
            &format!("/repos?repository_registry_uuid={reg_uuid}&visibility_level=Public&visibility_level=Internal&visibility_level=Private&order_by_create_date=desc&offset=0&limit=10"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    let got = fe
        .ok(
            "getAvailablePlatforms",
            t,
            json!({"uuid": repo_uuid, "targetTag": null, "targetCommit": null}),
        )
        .await;
    let rest = fe
        .rest(&format!("/repos/available_platforms/{repo_uuid}"), t)
        .await;
    same_fields(&rest, &got, &[]);
    let got = fe.ok("getVersions", t, json!({"uuid": repo_uuid})).await;
    assert_eq!(got["unitCount"], 2, "{got}");
    let mut rest = fe.rest(&format!("/repos/versions/{repo_uuid}"), t).await;
    // units that never reported a version: REST's commit is null, GraphQL's `commit: String!`
    // answers "" (src/graphql/types.rs RepoVersionsType)
    for v in rest["versions"].as_array_mut().unwrap() {
        if v["commit"].is_null() {
            v["commit"] = json!("");
        }
    }
    same_fields(&rest, &got, &[]);

    let got = fe
        .ok("getRepositoryRegistry", t, json!({"uuid": reg_uuid}))
        .await;
    same_fields(
        &fe.rest(&format!("/repository_registry/{reg_uuid}"), t)
            .await,
        &got,
        &[],
    );
    let got = fe
        .ok(
            "getBranchCommits",
            t,
            json!({"uuid": reg_uuid, "repoBranch": "main", "onlyTag": false, "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got[0]["commit"], firmware.head("main"), "{got}");
    let rest = fe
        .rest(
            &format!("/repository_registry/branch_commits/{reg_uuid}?repo_branch=main&only_tag=false&offset=0&limit=10"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    // a public registry has no credentials: REST's refusal, word for word
    let got = fe
        .send("getCredentials", Some(t), json!({"uuid": reg_uuid}))
        .await;
    let (status, rest) = inst
        .get(
            &format!("/repository_registry/get_credentials/{reg_uuid}"),
            Some(t),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{rest}");
    assert_eq!(got.1["errors"][0]["message"], rest["detail"], "{}", got.1);
    let got = fe
        .ok("getCredentials", t, json!({"uuid": private_uuid}))
        .await;
    assert_eq!(got["credentials"]["username"], "owner", "{got}");
    let rest = fe
        .rest(
            &format!("/repository_registry/get_credentials/{private_uuid}"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    let got = fe
        .ok(
            "getRepositoriesRegistry",
            t,
            json!({"orderByCreateDate": "desc", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 2, "{got}");
    let rest = fe
        .rest(
            "/repository_registry?order_by_create_date=desc&offset=0&limit=10",
            t,
        )
        .await;
    same_fields(
        &rest,
        &got,
        // REST's list key is `repositories_registry` too
        &[],
    );

    let got = fe.ok("getUnit", t, json!({"uuid": fan})).await;
    same_fields(&fe.rest(&format!("/units/{fan}"), t).await, &got, &[]);
    let got = fe
        .ok(
            "getUnits",
            t,
            json!({"repoUuid": repo_uuid, "searchString": null, "visibilityLevel": ["PUBLIC", "INTERNAL", "PRIVATE"], "orderByUnitName": "asc", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 2, "{got}");
    assert_eq!(got["units"][0]["name"], "fan_unit", "{got}");
    let rest = fe
        .rest(
            &format!("/units?repo_uuid={repo_uuid}&visibility_level=Public&visibility_level=Internal&visibility_level=Private&order_by_unit_name=asc&offset=0&limit=10"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    let got = fe
        .ok(
            "getUnitsWithUnitNodes",
            t,
            json!({"uuids": [fan], "unitNodeType": ["OUTPUT", "INPUT"], "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 1, "{got}");
    assert!(
        got["units"][0]["unitNodes"].as_array().unwrap().len() >= 4,
        "{got}"
    );
    let rest = fe
        .rest(
            &format!("/units?uuids={fan}&unit_node_type=Output&unit_node_type=Input&is_include_output_unit_nodes=true&offset=0&limit=10"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    let got = fe
        .ok(
            "getUnitsOutputByInput",
            t,
            json!({"unitNodeInputUuid": input, "searchString": null, "orderByUnitName": "asc", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 1, "{got}");
    assert_eq!(got["units"][0]["uuid"], fan.as_str(), "{got}");
    let rest = fe
        .rest(
            &format!("/units?unit_node_input_uuid={input}&order_by_unit_name=asc&is_include_output_unit_nodes=true&offset=0&limit=10"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);

    let got = fe
        .ok(
            "getUnitLogs",
            t,
            json!({"uuid": fan, "level": ["INFO", "ERROR"], "orderByCreateDate": "desc", "offset": 0, "limit": 50}),
        )
        .await;
    assert_eq!(got["count"], 2, "{got}");
    let rest = fe
        .rest(
            &format!("/units/log_list?uuid={fan}&level=Info&level=Error&order_by_create_date=desc&offset=0&limit=50"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);

    let got = fe.ok("getUnitEnv", t, json!({"uuid": fan})).await;
    let mut env: Value = serde_json::from_str(&s(&got)).unwrap();
    let mut rest_env = fe.rest(&format!("/units/env/{fan}"), t).await;
    // each env document carries freshly generated device secrets
    for secret in ["PU_SECRET_KEY", "PU_ENCRYPT_KEY"] {
        assert_eq!(env[secret].as_str().unwrap().len(), 44, "{env}");
        env[secret] = Value::Null;
        rest_env[secret] = Value::Null;
    }
    assert_eq!(env, rest_env);
    let got = fe.ok("getUnitCurrentSchema", t, json!({"uuid": fan})).await;
    let schema: Value = serde_json::from_str(&s(&got)).unwrap();
    assert_eq!(
        schema,
        fe.rest(&format!("/units/get_current_schema/{fan}"), t)
            .await
    );
    let got = fe.ok("getTargetVersion", t, json!({"uuid": fan})).await;
    assert_eq!(got["commit"], firmware.head("main"), "{got}");
    same_fields(
        &fe.rest(&format!("/units/get_target_version/{fan}"), t)
            .await,
        &got,
        &[],
    );
    let got = fe.ok("getStateStorage", t, json!({"uuid": fan})).await;
    assert_eq!(got, "{\"counter\": 1}");
    assert_eq!(
        got,
        fe.rest(&format!("/units/get_state_storage/{fan}"), t).await
    );
    let md = fe.ok("getConvertTomlToMd", t, json!({})).await;
    assert!(s(&md).contains("A fan controller"), "{md}");
    // REST converts the same file to the same Markdown
    let boundary = "rest-boundary";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pepeunit.toml\"\r\n\r\n").into_bytes();
    form.extend_from_slice(PEPEUNIT_TOML);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let rest = inst
        .http
        .post(inst.url("/units/convert_toml_to_md"))
        .header("x-auth-token", t)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 200);
    assert_eq!(rest.text().await.unwrap(), s(&md));

    let got = fe.ok("getUnitNode", t, json!({"uuid": input})).await;
    assert_eq!(got["state"], "42", "{got}");
    same_fields(
        &fe.rest(&format!("/unit_nodes/{input}"), t).await,
        &got,
        &[],
    );
    let got = fe
        .ok(
            "getUnitNodes",
            t,
            json!({"unitUuid": pump, "type": ["INPUT"], "offset": 0, "limit": 50}),
        )
        .await;
    assert_eq!(got["count"], 2, "{got}");
    let rest = fe
        .rest(
            &format!("/unit_nodes?unit_uuid={pump}&type=Input&offset=0&limit=50"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);

    let got = fe.ok("getUser", t, json!({"uuid": other_uuid})).await;
    assert_eq!(got["login"], "other");
    same_fields(
        &fe.rest(&format!("/users/{other_uuid}"), t).await,
        &got,
        &[],
    );
    let got = fe
        .ok(
            "getUsers",
            t,
            json!({"searchString": null, "role": ["USER", "ADMIN"], "status": ["UNVERIFIED", "VERIFIED"], "orderByCreateDate": "desc", "offset": 0, "limit": 10}),
        )
        .await;
    assert_eq!(got["count"], 2, "{got}");
    let rest = fe
        .rest(
            "/users?role=User&role=Admin&status=Unverified&status=Verified&order_by_create_date=desc&offset=0&limit=10",
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    // a Telegram bot is configured (the local fake): a link to it with a fresh code, as REST
    let got = fe.ok("getVerificationUser", t, json!({})).await;
    let rest = fe.rest("/users/generate_verification_link", t).await;
    let prefix = format!("https://t.me/{BOT_USERNAME}?start=");
    for link in [&got, &rest] {
        assert!(s(link).starts_with(&prefix), "{link}");
        assert!(s(link).len() > prefix.len(), "{link}");
    }

    // data pipes: the frontend's documents run (tests/data_pipes.rs has them with values)
    let got = fe
        .ok(
            "getPipeData",
            t,
            json!({"uuid": output, "type": "N_RECORDS", "orderByCreateDate": "desc", "offset": 0, "limit": 100}),
        )
        .await;
    assert_eq!(got, json!({"count": 0, "pipeData": []}));
    let got = fe.ok("checkDataPipeConfig", t, json!({})).await;
    assert!(
        got.as_array()
            .unwrap()
            .iter()
            .any(|e| e["stage"] == "ACTIVE_PERIOD" && e["message"] == "Field required"),
        "{got}"
    );
    fe.done("deleteDataPipeData", t, json!({"uuid": output}))
        .await;
    for (name, refusal) in [
        ("getDataPipeConfig", "Data pipe config is not set"),
        ("setDataPipeConfig", "Data pipe is not active for this node"),
        ("setDataPipeDataCsv", "Data pipe config is not set"),
    ] {
        let got = fe.send(name, Some(t), json!({"uuid": output})).await;
        let message = got.1["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(refusal), "{name}: {}", got.1);
    }

    // disabled features: Grafana
    for (name, variables) in [
        ("getDashboard", json!({"uuid": uuid::Uuid::new_v4()})),
        (
            "getDashboards",
            json!({"searchString": null, "orderByCreateDate": "desc", "offset": 0, "limit": 10}),
        ),
        ("getDashboardPanels", json!({"uuid": uuid::Uuid::new_v4()})),
        ("createDashboard", json!({"name": "My dashboard"})),
        (
            "createDashboardPanel",
            json!({"dashboardUuid": uuid::Uuid::new_v4(), "title": "Temperature", "type": "TIME_SERIES"}),
        ),
        (
            "linkUnitNodeToPanel",
            json!({"unitNodeUuid": output, "dashboardPanelsUuid": uuid::Uuid::new_v4(), "isLastData": false, "isForcedToJson": false}),
        ),
        ("syncDashboard", json!({"uuid": uuid::Uuid::new_v4()})),
        (
            "deleteLink",
            json!({"unitNodeUuid": output, "dashboardPanelUuid": uuid::Uuid::new_v4()}),
        ),
        ("deletePanel", json!({"uuid": uuid::Uuid::new_v4()})),
        ("deleteDashboard", json!({"uuid": uuid::Uuid::new_v4()})),
        ("setGrafanaCookies", json!({})),
    ] {
        fe.flag(name, t, variables).await;
    }
    // clearing the Grafana cookie needs no flag and no session (it answers Set-Cookie Max-Age=0)
    fe.done("deleteUserCookies", t, json!({})).await;

    // --- updates
    let got = fe
        .ok(
            "updateUser",
            &other_token,
            json!({"login": "other_renamed"}),
        )
        .await;
    assert_eq!(got["login"], "other_renamed", "{got}");
    same_fields(
        &fe.rest(&format!("/users/{other_uuid}"), t).await,
        &got,
        &[],
    );
    let status = fe.rest(&format!("/users/{other_uuid}"), t).await["status"].clone();
    fe.done("blockUser", t, json!({"uuid": other_uuid})).await;
    assert_eq!(
        fe.rest(&format!("/users/{other_uuid}"), t).await["status"],
        "Blocked"
    );
    fe.done("unblockUser", t, json!({"uuid": other_uuid})).await;
    assert_eq!(
        fe.rest(&format!("/users/{other_uuid}"), t).await["status"],
        status
    );

    let got = fe
        .ok(
            "updateRepo",
            t,
            json!({"uuid": repo_uuid, "isAutoUpdateRepo": true, "defaultBranch": "main", "isOnlyTagUpdate": false}),
        )
        .await;
    assert_eq!(
        got["name"], "fan_repo",
        "omitted variables change nothing: {got}"
    );
    same_fields(&fe.rest(&format!("/repos/{repo_uuid}"), t).await, &got, &[]);
    fe.done(
        "setCredentials",
        t,
        json!({"uuid": private_uuid, "data": {"username": "pepe", "patToken": "glpat-xxxxxxxx"}}),
    )
    .await;
    let got = fe
        .ok("getCredentials", t, json!({"uuid": private_uuid}))
        .await;
    assert_eq!(got["credentials"]["username"], "pepe", "{got}");
    let rest = fe
        .rest(
            &format!("/repository_registry/get_credentials/{private_uuid}"),
            t,
        )
        .await;
    same_fields(&rest, &got, &[]);
    fe.done("updateLocalRepository", t, json!({"uuid": reg_uuid}))
        .await;
    let rest = fe
        .rest(&format!("/repository_registry/{reg_uuid}"), t)
        .await;
    assert!(rest["sync_last_datetime"].is_string(), "{rest}");
    fe.done("updateUnitsFirmware", t, json!({"uuid": repo_uuid}))
        .await;
    fe.done("bulkUpdate", t, json!({})).await;

    let head = firmware.head("main");
    let got = fe
        .ok(
            "updateUnit",
            t,
            json!({"uuid": fan, "isAutoUpdateFromRepoUnit": false, "repoBranch": "main", "repoCommit": head}),
        )
        .await;
    assert_eq!(got["repoCommit"], head.as_str(), "{got}");
    assert_eq!(got["name"], "fan_unit", "{got}");
    same_fields(&fe.rest(&format!("/units/{fan}"), t).await, &got, &[]);
    fe.done(
        "updateUnitEnv",
        t,
        json!({"uuid": fan, "envJsonStr": "{\"WIFI_SSID\": \"home\", \"WIFI_PASS\": \"secret\"}"}),
    )
    .await;
    let rest_env = fe.rest(&format!("/units/env/{fan}"), t).await;
    assert_eq!(rest_env["WIFI_SSID"], "home", "{rest_env}");
    fe.done("resetUnitEnv", t, json!({"uuid": fan})).await;
    let rest_env = fe.rest(&format!("/units/env/{fan}"), t).await;
    assert_ne!(rest_env["WIFI_SSID"], "home", "{rest_env}");
    // the command reaches the device on its env_update topic
    let mut device =
        MqttDevice::connect(inst.config.mqtt_bind.port(), &fan, &unit_token(&inst, &fan))
            .await
            .unwrap();
    let env_topic = base_topic(&inst, &fan, "input_base_topic", "env_update");
    assert!(device.subscribe(&env_topic).await);
    fe.done(
        "sendCommandToInputBaseTopic",
        t,
        json!({"uuid": fan, "command": "ENV_UPDATE"}),
    )
    .await;
    let command = device
        .recv_on(&env_topic, std::time::Duration::from_secs(10))
        .await
        .expect("the command arrives");
    let command: Value = serde_json::from_slice(&command).unwrap();
    assert_eq!(command["COMMAND"], "EnvUpdate", "{command}");
    drop(device);

    // --- deletes
    fe.done(
        "deleteUnitNodeEdge",
        t,
        json!({"inputUuid": input, "outputUuid": output}),
    )
    .await;
    let linked = fe
        .rest(&format!("/unit_nodes?output_uuid={output}"), t)
        .await;
    assert_eq!(linked["count"], 0, "{linked}");
    fe.done(
        "deletePermission",
        t,
        json!({"agentUuid": other_uuid, "resourceUuid": fan}),
    )
    .await;
    let agents = fe
        .rest(
            &format!("/permission/get_resource_agents?resource_uuid={fan}&resource_type=Unit&agent_type=User"),
            t,
        )
        .await;
    assert!(
        !agents["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["agent_uuid"] == other_uuid.as_str()),
        "{agents}"
    );
    for unit in [&fan, &pump] {
        fe.done("deleteUnit", t, json!({"uuid": unit})).await;
        let (status, _) = inst.get(&format!("/units/{unit}"), Some(t)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    fe.done("deleteRepo", t, json!({"uuid": repo_uuid})).await;
    let (status, _) = inst.get(&format!("/repos/{repo_uuid}"), Some(t)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for registry in [&reg_uuid, &private_uuid] {
        fe.done("deleteRepositoryRegistry", t, json!({"uuid": registry}))
            .await;
        let (status, _) = inst
            .get(&format!("/repository_registry/{registry}"), Some(t))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    // every operation of the corpus ran
    let all: BTreeSet<String> = fe.ops.keys().cloned().collect();
    let missing: Vec<&String> = all.difference(&fe.ran).collect();
    assert!(missing.is_empty(), "not run: {missing:?}");
    assert_eq!(fe.ran.len(), corpus().len());
    inst.stop().await;
}

both_backends!(
    every_operation_validates_against_our_schema,
    every_operation_runs_with_real_data,
);
