//! `pepeunit load graphql` runs end to end against a real instance: it creates its own data
//! (registry on a served git repository, repo, units with nodes), checks that GraphQL and REST
//! answer the same objects, and measures every scenario in both modes without a failed request.
//! No timing is asserted: only that it completed, counted, and wrote what it claims to write.

mod common;

use common::fixtures::FirmwareRepo;
use common::{Backend, TestInstance};
use pepeunit::load::graphql::{measure, GraphqlLoad, Scenario};

fn args(inst: &TestInstance, token: &str, firmware: Option<String>) -> GraphqlLoad {
    GraphqlLoad {
        url: inst.base.clone(),
        token: token.to_string(),
        firmware_url: firmware,
        units: 3,
        unit: None,
        concurrency: 4,
        duration: 0.2,
        warmup: 0.0,
        rate: 200,
        scenarios: "get_unit,get_units,set_state".into(),
        json: false,
        prefix: "/pepeunit/api/v1".into(),
        graphql_path: "/pepeunit/graphql".into(),
    }
}

async fn load_graphql_runs(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let firmware = FirmwareRepo::create().await;
    let (_, token) = inst.user("loader").await;

    let report = measure(&args(&inst, &token, Some(firmware.url())))
        .await
        .expect("the load run completes");
    // three units, each with the four nodes of the fixture's schema (two inputs, two outputs)
    assert_eq!((report.page_units, report.page_nodes), (3, 12));
    let scenarios: Vec<Scenario> = report.scenarios.iter().map(|s| s.scenario).collect();
    assert_eq!(
        scenarios,
        [Scenario::GetUnit, Scenario::GetUnits, Scenario::SetState]
    );
    for s in &report.scenarios {
        for (mode, pair) in [("closed", &s.closed_loop), ("open", &s.open_loop)] {
            for (proto, m) in [("graphql", &pair.graphql), ("rest", &pair.rest)] {
                let what = format!("{:?} {mode} {proto}: {m:?}", s.scenario);
                assert_eq!(m.errors, 0, "{what}");
                assert!(m.requests > 0, "{what}");
                assert!(
                    m.rate > 0.0 && m.max_ms >= m.p99_ms && m.p99_ms >= m.p50_ms,
                    "{what}"
                );
            }
            assert!(pair.ratio > 0.0);
        }
    }
    assert_eq!(report.errors(), 0);
    // the mutation really wrote the unit's state storage
    let (s, state) = inst
        .get(
            &format!("/units/get_state_storage/{}", report.unit),
            Some(&token),
        )
        .await;
    assert_eq!(s, 200, "{state}");
    assert_eq!(state, "{\"load\":true}");

    // a second run on the data already there (no --firmware-url) works too
    let mut again = args(&inst, &token, None);
    again.scenarios = "get_units".into();
    let report = measure(&again).await.expect("second run");
    assert_eq!((report.page_units, report.page_nodes), (3, 12));

    // refusals: a token that is not valid fails the probe, a remote URL is not targeted
    let err = measure(&args(&inst, "not-a-token", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 4"), "{err}");
    let mut remote = args(&inst, &token, None);
    remote.url = "http://192.0.2.1:80".into();
    let err = measure(&remote).await.unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    inst.stop().await;
}

both_backends!(load_graphql_runs);
