//! GraphQL over HTTP (issue 15): the same rules and the same error texts as REST, pagination
//! bounds, uploads, feature flags, and bad input answered as GraphQL errors that write nothing.
//! Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use serde_json::{json, Value};

use common::fixtures::FirmwareRepo;
use common::graphql::{data, error, gql, raw, same_object, upload};
use common::{Backend, TestInstance};

const UNIT_FIELDS: &str = "uuid visibilityLevel name createDatetime isAutoUpdateFromRepoUnit \
    targetFirmwarePlatform repoBranch repoCommit currentCommitVersion lastUpdateDatetime \
    creatorUuid repoUuid firmwareUpdateStatus firmwareUpdateError lastFirmwareUpdateDatetime \
    alertLogLevel alertsMutedUntil \
    unitState { ifconfig millis memFree memAlloc freq statvfs puCommitVersion }";

/// Users, tokens, registries, repos and units through GraphQL give what REST gives.
async fn the_main_objects_match_rest(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;

    // a user created over GraphQL signs in over GraphQL and REST alike
    let got = gql(
        &inst,
        None,
        "mutation($u: UserCreateInput!) { createUser(user: $u) { uuid login role status grafanaOrgName createDatetime } }",
        json!({"u": {"login": "owner", "password": "password-1"}}),
    )
    .await;
    let me = data(&got)["createUser"].clone();
    assert_eq!(me["role"], "ADMIN", "the first user is the admin: {me}");
    let got = gql(
        &inst,
        None,
        "query($d: UserAuthInput!) { getToken(data: $d) }",
        json!({"d": {"credentials": "owner", "password": "password-1"}}),
    )
    .await;
    let token = data(&got)["getToken"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    let (_, rest_me) = inst
        .get(&format!("/users/{}", me["uuid"].as_str().unwrap()), t)
        .await;
    same_object(&rest_me, &me, &[]);

    let got = gql(
        &inst,
        t,
        "mutation($r: RepositoryRegistryCreateInput!) { createRepositoryRegistry(repositoryRegistry: $r) { uuid platform repositoryUrl isPublicRepository releasesData localRepositorySize syncStatus syncError syncLastDatetime createDatetime lastUpdateDatetime creatorUuid branches } }",
        json!({"r": {"platform": "GITLAB", "repositoryUrl": firmware.url(), "isPublicRepository": true}}),
    )
    .await;
    let registry = data(&got)["createRepositoryRegistry"].clone();
    assert_eq!(registry["syncStatus"], "UPDATED", "{registry}");
    let reg_uuid = registry["uuid"].as_str().unwrap();
    let (_, rest) = inst
        .get(&format!("/repository_registry/{reg_uuid}"), t)
        .await;
    same_object(&rest, &registry, &[]);

    let got = gql(
        &inst,
        t,
        "mutation($r: RepoCreateInput!) { createRepo(repo: $r) { uuid visibilityLevel name createDatetime defaultBranch isAutoUpdateRepo defaultCommit isOnlyTagUpdate isCompilableRepo lastUpdateDatetime creatorUuid repositoryRegistryUuid } }",
        json!({"r": {"repositoryRegistryUuid": reg_uuid, "defaultBranch": "main", "visibilityLevel": "PRIVATE", "name": "fan_repo", "isCompilableRepo": false}}),
    )
    .await;
    let repo = data(&got)["createRepo"].clone();
    let repo_uuid = repo["uuid"].as_str().unwrap();
    let (_, rest) = inst.get(&format!("/repos/{repo_uuid}"), t).await;
    same_object(&rest, &repo, &[]);

    let got = gql(
        &inst,
        t,
        &format!("mutation($u: UnitCreateInput!) {{ createUnit(unit: $u) {{ {UNIT_FIELDS} }} }}"),
        json!({"u": {"repoUuid": repo_uuid, "visibilityLevel": "PRIVATE", "name": "fan_unit", "isAutoUpdateFromRepoUnit": true}}),
    )
    .await;
    let unit = data(&got)["createUnit"].clone();
    let unit_uuid = unit["uuid"].as_str().unwrap().to_string();
    let (_, rest_unit) = inst.get(&format!("/units/{unit_uuid}"), t).await;
    same_object(&rest_unit, &unit, &["unit_nodes", "unit_state"]);

    // getUnits with nested unitNodes: the nodes REST includes, in one answer
    let got = gql(
        &inst,
        t,
        &format!("query($f: UnitFilterInput!) {{ getUnits(filters: $f) {{ count units {{ {UNIT_FIELDS} unitNodes {{ uuid type visibilityLevel isRewritableInput maxConnections topicName lastUpdateDatetime isDataPipeActive dataPipeYml dataPipeStatus dataPipeError createDatetime state unitUuid creatorUuid }} }} }} }}"),
        json!({"f": {"limit": 10}}),
    )
    .await;
    let units = data(&got)["getUnits"].clone();
    assert_eq!(units["count"], 1, "{units}");
    let (_, rest_units) = inst
        .get("/units?is_include_output_unit_nodes=true&limit=10", t)
        .await;
    let rest_nodes = rest_units["units"][0]["unit_nodes"].as_array().unwrap();
    let nodes = units["units"][0]["unitNodes"].as_array().unwrap();
    assert_eq!(nodes.len(), rest_nodes.len(), "{units}");
    assert!(
        nodes.len() >= 4,
        "the schema's topics became nodes: {units}"
    );
    for (r, g) in rest_nodes.iter().zip(nodes) {
        same_object(r, g, &["type"]);
        assert_eq!(g["type"], r["type"].as_str().unwrap().to_uppercase());
    }
    // a single unit loads its own nodes when asked
    let got = gql(
        &inst,
        t,
        "query($u: UUID!) { getUnit(uuid: $u) { unitNodes { uuid } } }",
        json!({"u": unit_uuid}),
    )
    .await;
    assert_eq!(
        data(&got)["getUnit"]["unitNodes"].as_array().unwrap().len(),
        nodes.len()
    );

    // env and schema are JSON text, equal to REST's documents
    let got = gql(
        &inst,
        t,
        "query($u: UUID!) { getUnitEnv(uuid: $u) getUnitCurrentSchema(uuid: $u) getTargetVersion(uuid: $u) { commit tag } }",
        json!({"u": unit_uuid}),
    )
    .await;
    let d = data(&got);
    let mut env: Value = serde_json::from_str(d["getUnitEnv"].as_str().unwrap()).unwrap();
    let (_, mut rest_env) = inst.get(&format!("/units/env/{unit_uuid}"), t).await;
    // each env document carries freshly generated device secrets
    for secret in ["PU_SECRET_KEY", "PU_ENCRYPT_KEY"] {
        assert_eq!(env[secret].as_str().unwrap().len(), 44, "{env}");
        env[secret] = Value::Null;
        rest_env[secret] = Value::Null;
    }
    assert_eq!(env, rest_env);
    let schema: Value = serde_json::from_str(d["getUnitCurrentSchema"].as_str().unwrap()).unwrap();
    let (_, rest_schema) = inst
        .get(&format!("/units/get_current_schema/{unit_uuid}"), t)
        .await;
    assert_eq!(schema, rest_schema);
    let (_, rest_target) = inst
        .get(&format!("/units/get_target_version/{unit_uuid}"), t)
        .await;
    same_object(&rest_target, &d["getTargetVersion"], &[]);

    // a unit's own token works as upstream allows it (its env, itself) and is refused the same
    // way as over REST elsewhere
    let unit_token = env["PU_AUTH_TOKEN"].as_str().unwrap().to_string();
    let got = gql(
        &inst,
        Some(&unit_token),
        "query($u: UUID!) { getUnit(uuid: $u) { uuid name } getUnitEnv(uuid: $u) }",
        json!({"u": unit_uuid}),
    )
    .await;
    assert_eq!(data(&got)["getUnit"]["uuid"], unit_uuid.as_str());
    let rest = inst.get("/users", Some(&unit_token)).await;
    let got = gql(
        &inst,
        Some(&unit_token),
        "{ getUsers(filters: {}) { count } }",
        json!({}),
    )
    .await;
    assert_eq!(
        common::graphql::error(&got),
        rest.1["detail"].as_str().unwrap(),
        "{}",
        rest.1
    );

    // writes without a result answer NoneType; the change is visible over REST
    let got = gql(
        &inst,
        t,
        "mutation($u: UUID!) { setStateStorage(uuid: $u, state: \"{\\\"a\\\": 1}\") { isNone } }",
        json!({"u": unit_uuid}),
    )
    .await;
    assert_eq!(data(&got)["setStateStorage"]["isNone"], true);
    let (_, stored) = inst
        .get(&format!("/units/get_state_storage/{unit_uuid}"), t)
        .await;
    assert_eq!(stored, "{\"a\": 1}");
    let got = gql(
        &inst,
        t,
        "mutation($u: UUID!) { deleteUnit(uuid: $u) { isNone } }",
        json!({"u": unit_uuid}),
    )
    .await;
    assert_eq!(data(&got)["deleteUnit"]["isNone"], true);
    let (status, _) = inst.get(&format!("/units/{unit_uuid}"), t).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    inst.stop().await;
}

/// Errors are HTTP 200 with `errors[].message` the REST detail text; the same rules refuse the
/// same callers.
async fn errors_are_the_rest_details(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let (_, _, unit) =
        common::fixtures::registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let unit_uuid = unit["uuid"].as_str().unwrap();

    let cases: Vec<(Option<&str>, &str, String)> = vec![
        // another user's private unit
        (Some(&other), "GET", format!("/units/{unit_uuid}")),
        // nobody's unit
        (
            Some(&owner),
            "GET",
            format!("/units/{}", uuid::Uuid::new_v4()),
        ),
        // no token
        (None, "GET", format!("/units/env/{unit_uuid}")),
        // a bad token
        (Some("not-a-token"), "GET", format!("/units/{unit_uuid}")),
    ];
    let queries = [
        "query($u: UUID!) { getUnit(uuid: $u) { uuid } }",
        "query($u: UUID!) { getUnit(uuid: $u) { uuid } }",
        "query($u: UUID!) { getUnitEnv(uuid: $u) }",
        "query($u: UUID!) { getUnit(uuid: $u) { uuid } }",
    ];
    for ((token, method, path), query) in cases.into_iter().zip(queries) {
        let rest = inst.call(method, &path, token, None).await;
        let id = path.rsplit('/').next().unwrap();
        let got = gql(&inst, token, query, json!({"u": id})).await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert!(got.1["data"].is_null(), "{}", got.1);
        assert_eq!(
            error(&got),
            rest.1["detail"].as_str().unwrap(),
            "{path} as {token:?}"
        );
    }

    // whether two nodes are linked is not told to a stranger: no link and someone else's
    // nodes give the same refusal
    let nodes = |who: &'static str| {
        let (inst, owner) = (&inst, owner.clone());
        async move {
            let (_, v) = inst
                .get(&format!("/unit_nodes?unit_uuid={unit_uuid}"), Some(&owner))
                .await;
            v["unit_nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["type"] == who)
                .unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (input, output) = (nodes("Input").await, nodes("Output").await);
    let unlink = "mutation($i: UUID!, $o: UUID!) { deleteUnitNodeEdge(inputUuid: $i, outputUuid: $o) { isNone } }";
    let got = gql(
        &inst,
        Some(&other),
        unlink,
        json!({"i": input, "o": output}),
    )
    .await;
    assert!(error(&got).starts_with("403: 1: No Access"), "{}", got.1);
    // the nodes' creator learns that there is no such link
    let got = gql(
        &inst,
        Some(&owner),
        unlink,
        json!({"i": input, "o": output}),
    )
    .await;
    assert!(error(&got).starts_with("404: 2:"), "{}", got.1);

    // validation errors of the service: the same text as REST's 422
    let rest = inst
        .post(
            "/users",
            None,
            json!({"login": "a b", "password": "password-1"}),
        )
        .await;
    let got = gql(
        &inst,
        None,
        "mutation { createUser(user: {login: \"a b\", password: \"password-1\"}) { uuid } }",
        json!({}),
    )
    .await;
    assert_eq!(error(&got), rest.1["detail"].as_str().unwrap());

    // pagination: offset < 0 and limit > 500 are refused, 500 is fine
    for (filters, expected) in [
        (json!({"offset": -1}), Some("offset must be >= 0")),
        (json!({"limit": 501}), Some("limit must be <= 500")),
        (json!({"limit": -1}), Some("limit must be >= 0")),
        (json!({"limit": 500, "offset": 0}), None),
    ] {
        for query in [
            "query($f: UnitFilterInput!) { getUnits(filters: $f) { count } }",
            "query($f: RepoFilterInput!) { getRepos(filters: $f) { count } }",
            "query($f: UserFilterInput!) { getUsers(filters: $f) { count } }",
        ] {
            let got = gql(&inst, Some(&owner), query, json!({"f": filters})).await;
            match expected {
                Some(e) => assert!(error(&got).contains(e), "{filters} {query}: {}", got.1),
                None => {
                    data(&got);
                }
            }
        }
    }

    // features not built yet answer upstream's feature-flag error; GET /pepeunit says so
    let flag = "405: 15: Feature Flag Error: This feature has been disabled by the instance Owner";
    for query in [
        "query($u: UUID!) { getDashboard(uuid: $u) { uuid } }",
        "mutation { createDashboard(dashboard: {name: \"home\"}) { uuid } }",
        "mutation { setGrafanaCookies { isNone } }",
    ] {
        let got = gql(&inst, Some(&owner), query, json!({"u": unit_uuid})).await;
        assert_eq!(error(&got), flag, "{query}");
    }
    let (_, root) = inst
        .call("GET", &format!("{}/pepeunit", inst.base), None, None)
        .await;
    // data pipes exist (tests/data_pipes.rs): a uuid that is no node is a 404 there
    assert_eq!(root["feature_flags"]["pu_ff_datapipe_enable"], true);
    for query in [
        "query($u: UUID!) { getDataPipeConfig(uuid: $u) }",
        "query($u: UUID!) { getPipeData(filters: {uuid: $u, type: LAST_VALUE}) { count } }",
        "mutation($u: UUID!) { deleteDataPipeData(uuid: $u) { isNone } }",
    ] {
        let got = gql(&inst, Some(&owner), query, json!({"u": unit_uuid})).await;
        assert_eq!(
            error(&got),
            "404: 2: Validation Error: The object does not exist",
            "{query}"
        );
    }
    assert_eq!(
        root["feature_flags"]["pu_ff_grafana_integration_enable"],
        false
    );
    inst.stop().await;
}

/// Uploads follow the GraphQL multipart request spec; files past their cap are refused.
async fn uploads_follow_the_multipart_spec(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("owner").await;
    let toml = b"[general]\nname = \"Fan\"\ndescription = \"A fan controller\"\n";
    let query = "query($file: Upload!) { getConvertTomlToMd(file: $file) }";
    let got = upload(&inst, Some(&token), query, json!({}), "readme.toml", toml).await;
    let md = data(&got)["getConvertTomlToMd"]
        .as_str()
        .unwrap()
        .to_string();
    // REST converts the same file to the same Markdown
    let boundary = "rest-boundary";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pepeunit.toml\"\r\n\r\n").into_bytes();
    form.extend_from_slice(toml);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let rest = inst
        .http
        .post(inst.url("/units/convert_toml_to_md"))
        .header("x-auth-token", &token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 200);
    assert_eq!(rest.text().await.unwrap(), md);

    let big = vec![b'#'; 64 * 1024 + 1];
    let got = upload(&inst, Some(&token), query, json!({}), "big.toml", &big).await;
    assert!(
        error(&got).contains("is larger than 65536 bytes"),
        "{}",
        got.1
    );
    let got = upload(
        &inst,
        Some(&token),
        "query($file: Upload!) { checkDataPipeConfig(file: $file) { stage message } }",
        json!({}),
        "pipe.yml",
        b"policy: {}\n",
    )
    .await;
    // a query with an Upload: the list of {stage, message}, not an error
    let problems = data(&got)["checkDataPipeConfig"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        problems
            .iter()
            .any(|p| p["stage"] == "ACTIVE_PERIOD" && p["message"] == "Field required"),
        "{problems:?}"
    );
    // a request past the multipart cap is refused before it is read whole
    let huge = vec![b'x'; 17 * 1024 * 1024 + 1];
    let got = upload(&inst, Some(&token), query, json!({}), "huge.toml", &huge).await;
    assert_eq!(got.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", got.1);
    assert!(error(&got).contains("larger than"), "{}", got.1);
    inst.stop().await;
}

/// Garbage is a GraphQL error with a clear message, never a 5xx, and writes nothing.
async fn bad_input_is_refused_clearly(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("owner").await;
    let t = Some(token.as_str());
    let users = || async {
        let (_, v) = inst.get("/users", t).await;
        v["count"].clone()
    };
    let before = users().await;

    let mut answers = Vec::new();
    // not JSON, not a GraphQL request
    answers.push((
        "not json",
        raw(&inst, t, "application/json", b"{nope".to_vec()).await,
        "not a GraphQL request",
    ));
    answers.push((
        "no query",
        raw(
            &inst,
            t,
            "application/json",
            b"{\"variables\": {}}".to_vec(),
        )
        .await,
        "not a GraphQL request",
    ));
    // syntax, unknown field, wrong variable type, missing variable
    answers.push((
        "syntax",
        gql(
            &inst,
            t,
            "mutation { createUser(user: {login: \"x\" ",
            json!({}),
        )
        .await,
        "expected",
    ));
    answers.push((
        "unknown field",
        gql(
            &inst,
            t,
            "{ getUnits(filters: {}) { count nope } }",
            json!({}),
        )
        .await,
        "Unknown field \"nope\"",
    ));
    answers.push((
        "variable type",
        gql(
            &inst,
            t,
            "mutation($u: UserCreateInput!) { createUser(user: $u) { uuid } }",
            json!({"u": {"login": 5, "password": "password-1"}}),
        )
        .await,
        "Invalid value for argument",
    ));
    answers.push((
        "bad uuid",
        gql(&inst, t, "{ getUnit(uuid: \"nope\") { uuid } }", json!({})).await,
        "Failed to parse \"UUID\"",
    ));
    // deep nesting and wide documents
    let nested_ok = "{ getUnits(filters: {}) { units { unitNodes { uuid } } } }";
    answers.push(("depth ok", gql(&inst, t, nested_ok, json!({})).await, ""));
    let nested = format!(
        "query {{ {} }}",
        "__schema { types { fields { type { ofType { ".repeat(3) + &" name } } } } }".repeat(3)
    );
    answers.push((
        "too deep",
        gql(&inst, t, &nested, json!({})).await,
        "Query is nested too deep",
    ));
    let wide = format!(
        "{{ getUnits(filters: {{}}) {{ units {{ {} }} }} }}",
        (0..1200)
            .map(|i| format!("a{i}: name"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    answers.push((
        "too complex",
        gql(&inst, t, &wide, json!({})).await,
        "Query is too complex",
    ));
    let recursion = format!(
        "{{ getUnits(filters: {}) {{ count }} }}",
        "[".repeat(5000) + &"]".repeat(5000)
    );
    answers.push((
        "recursion",
        gql(&inst, t, &recursion, json!({})).await,
        "nested too deeply",
    ));
    // a comment ended by a bare CR does not hide brackets from the check (the parser would
    // overflow its stack and abort the process)
    let hidden = format!(
        "#\r{{ getUnits(filters: {}) {{ count }} }}",
        "[".repeat(20000) + &"]".repeat(20000)
    );
    answers.push((
        "comment with CR",
        gql(&inst, t, &hidden, json!({})).await,
        "nested too deeply",
    ));
    // fragments spreading each other 4 times, 30 deep: 4^30 fields once expanded
    let mut bomb = String::from("query { ...F0 }\n");
    for i in 0..30 {
        bomb.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    bomb.push_str("fragment F30 on Query { __typename }\n");
    answers.push((
        "fragment bomb",
        gql(&inst, t, &bomb, json!({})).await,
        "expands to more than",
    ));
    // aliases: many root fields, or several password checks in one request
    let roots = format!(
        "{{ {} }}",
        (0..21)
            .map(|i| format!("a{i}: getBaseMetrics {{ userCount }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    answers.push((
        "root fields",
        gql(&inst, t, &roots, json!({})).await,
        "at most 20 root fields",
    ));
    let guesses = "{ a: getToken(data: {credentials: \"owner\", password: \"guess-1\"}) b: getToken(data: {credentials: \"owner\", password: \"guess-2\"}) }";
    answers.push((
        "token guesses",
        gql(&inst, t, guesses, json!({})).await,
        "getToken once",
    ));
    let huge = format!(
        "{{ getUnits(filters: {{searchString: \"{}\"}}) {{ count }} }}",
        "x".repeat(1024 * 1024)
    );
    answers.push(("huge", gql(&inst, t, &huge, json!({})).await, "larger than"));
    // a write with one bad argument writes nothing
    answers.push((
        "bad write",
        gql(&inst, t, "mutation { a: createUser(user: {login: \"good_login\", password: \"password-1\"}) { uuid } b: createUser(user: {login: 1}) { uuid } }", json!({})).await,
        "Invalid value",
    ));

    for (what, got, needle) in &answers {
        assert!(got.0.as_u16() < 500, "{what}: {} {}", got.0, got.1);
        if needle.is_empty() {
            assert!(got.1.get("errors").is_none(), "{what}: {}", got.1);
            continue;
        }
        let message = error(got);
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: {message:?} lacks {needle:?}"
        );
    }
    assert_eq!(users().await, before, "nothing was written");
    inst.stop().await;
}

/// GET runs queries (not mutations); a browser gets GraphiQL; the schema is introspectable.
async fn get_graphiql_and_introspection(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let url = common::graphql::endpoint(&inst);
    let resp = inst
        .http
        .get(&url)
        .query(&[("query", "{ getBaseMetrics { userCount } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"]["getBaseMetrics"]["userCount"], 0, "{v}");
    let resp = inst
        .http
        .get(&url)
        .query(&[("query", "mutation { bulkUpdate { isNone } }")])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("GET"),
        "{v}"
    );
    let resp = inst
        .http
        .get(&url)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("GraphiQL") && page.contains("/pepeunit/graphql"));
    let got = gql(
        &inst,
        None,
        "{ __schema { queryType { name } mutationType { name } subscriptionType { name } } __type(name: \"NoneType\") { fields { name } } }",
        json!({}),
    )
    .await;
    let d = data(&got);
    assert_eq!(d["__schema"]["queryType"]["name"], "Query");
    assert_eq!(d["__schema"]["subscriptionType"]["name"], "Subscription");
    assert_eq!(d["__type"]["fields"][0]["name"], "isNone");
    // requests are counted on the graphql channel
    let (_, token) = inst.user("admin").await;
    let (_, node) = inst.get("/metrics/node", Some(&token)).await;
    assert!(
        node["channels"]["graphql"]["total"].as_u64().unwrap() >= 4,
        "{node}"
    );
    inst.stop().await;
}

/// The server keeps parsed documents by their text: the same text must still be validated and
/// executed for each request, with its own variables and token.
async fn a_repeated_document_is_checked_each_time(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    let (_, other) = inst.user("other").await;
    let (_, repo, first) =
        common::fixtures::registry_repo_unit(&inst, &owner, &firmware, "fan", "Private").await;
    let repo = repo["uuid"].as_str().unwrap();
    let second = common::api::unit(&inst, &owner, repo, "pump_unit", "Private").await;
    let first = first["uuid"].as_str().unwrap();

    let query = "query($u: UUID!) { getUnit(uuid: $u) { uuid name } }";
    for _ in 0..2 {
        for (uuid, name) in [(first, "fan_unit"), (second.as_str(), "pump_unit")] {
            let got = gql(&inst, Some(&owner), query, json!({"u": uuid})).await;
            assert_eq!(data(&got)["getUnit"]["name"], name);
        }
        // the same text under another token: that caller's answer
        let got = gql(&inst, Some(&other), query, json!({"u": first})).await;
        assert!(error(&got).contains("403"), "{}", got.1);
        // a document that parses but does not validate is refused every time
        let got = gql(
            &inst,
            Some(&owner),
            "{ getUnit(uuid: \"x\") { noSuchField } }",
            json!({}),
        )
        .await;
        assert!(error(&got).contains("noSuchField"), "{}", got.1);
        // a document that does not parse is refused every time
        let got = gql(&inst, Some(&owner), "{ getUnit(uuid: ", json!({})).await;
        assert!(got.1["errors"][0]["message"].is_string(), "{}", got.1);
        assert!(got.1["data"].is_null(), "{}", got.1);
    }
    inst.stop().await;
}

both_backends!(
    the_main_objects_match_rest,
    errors_are_the_rest_details,
    uploads_follow_the_multipart_spec,
    bad_input_is_refused_clearly,
    get_graphiql_and_introspection,
    a_repeated_document_is_checked_each_time,
);
