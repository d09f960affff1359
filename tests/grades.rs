//! Instance grades (SPEC §7, issue 18 part 3): the defaults of a fresh instance, an admin's
//! changes over REST and GraphQL read back through both, validation errors naming the field,
//! and refusals for non-admins. Every test runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use serde_json::{json, Value};

use common::graphql::{data, error, gql};
use common::{Backend, TestInstance};

const GRADE_FIELDS: &str =
    "freeMpsPerUser pricePerMps freeAggregatedTopics pricePerAggregatedTopic currency updateDatetime";

/// The 422 `detail` list's first entry names `field` in the body.
#[track_caller]
fn assert_names_field(got: &(StatusCode, Value), field: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    let first = &got.1["detail"][0];
    assert_eq!(first["loc"], json!(["body", field]), "{}", got.1);
    assert!(
        first["msg"].as_str().unwrap_or_default().contains(field),
        "{}",
        got.1
    );
}

async fn grade_round_trip(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, admin) = inst.user("gradeadmin").await; // the first user is the Admin
    let (_, user) = inst.user("gradeuser").await;

    // a fresh instance: everything free, USD; readable without a token
    let (s, fresh) = inst.get("/grade", None).await;
    assert_eq!(s, StatusCode::OK, "{fresh}");
    assert_eq!(
        fresh,
        json!({
            "free_mps_per_user": 1000.0, "price_per_mps": 0.0, "free_aggregated_topics": 1000,
            "price_per_aggregated_topic": 0.0, "currency": "USD", "update_datetime": null
        })
    );

    // REST: an admin's partial change keeps the other fields
    let (s, g) = inst
        .patch(
            "/grade",
            Some(&admin),
            json!({"free_mps_per_user": 2.5, "price_per_mps": 0.75, "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["free_mps_per_user"], 2.5);
    assert_eq!(g["price_per_mps"], 0.75);
    assert_eq!(g["currency"], "EUR");
    assert_eq!(g["free_aggregated_topics"], 1000);
    assert!(g["update_datetime"].is_string(), "{g}");
    let (_, read) = inst.get("/grade", Some(&user)).await;
    assert_eq!(read, g);

    // GraphQL reads what REST wrote, and writes what REST reads
    let got = gql(
        &inst,
        None,
        &format!("{{ getGrade {{ {GRADE_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    let gg = &data(&got)["getGrade"];
    assert_eq!(gg["freeMpsPerUser"], 2.5);
    assert_eq!(gg["pricePerMps"], 0.75);
    assert_eq!(gg["currency"], "EUR");
    let got = gql(
        &inst,
        Some(&admin),
        &format!("mutation ($g: GradeInput!) {{ updateGrade(grade: $g) {{ {GRADE_FIELDS} }} }}"),
        json!({"g": {"freeAggregatedTopics": 3, "pricePerAggregatedTopic": 1.25}}),
    )
    .await;
    let gm = &data(&got)["updateGrade"];
    assert_eq!(gm["freeAggregatedTopics"], 3);
    assert_eq!(gm["freeMpsPerUser"], 2.5);
    let (_, read) = inst.get("/grade", None).await;
    assert_eq!(read["free_aggregated_topics"], 3);
    assert_eq!(read["price_per_aggregated_topic"], 1.25);
    assert_eq!(read["currency"], "EUR");

    // validation: each bad field is named, and nothing is written
    for (body, field) in [
        (json!({"free_mps_per_user": -1}), "free_mps_per_user"),
        (json!({"price_per_mps": 1e12}), "price_per_mps"),
        (
            json!({"free_aggregated_topics": -5}),
            "free_aggregated_topics",
        ),
        (
            json!({"price_per_aggregated_topic": -0.01}),
            "price_per_aggregated_topic",
        ),
        (json!({"currency": "eur"}), "currency"),
        (json!({"currency": "EURO"}), "currency"),
        (json!({"price_per_mps": 1, "currency": "U$D"}), "currency"),
    ] {
        let got = inst.patch("/grade", Some(&admin), body.clone()).await;
        assert_names_field(&got, field);
    }
    // a fractional topic count and an unknown field are refused by the parser
    let (s, v) = inst
        .patch(
            "/grade",
            Some(&admin),
            json!({"free_aggregated_topics": 1.5}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = inst
        .patch("/grade", Some(&admin), json!({"free_mps": 1}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, after) = inst.get("/grade", None).await;
    assert_eq!(after, read, "a refused change wrote nothing");
    let got = gql(
        &inst,
        Some(&admin),
        "mutation { updateGrade(grade: {currency: \"usd\"}) { currency } }",
        json!({}),
    )
    .await;
    assert!(error(&got).contains("currency"), "{}", got.1);

    // non-admins are refused over both
    let (s, v) = inst
        .patch("/grade", Some(&user), json!({"price_per_mps": 9}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = inst
        .patch("/grade", None, json!({"price_per_mps": 9}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let got = gql(
        &inst,
        Some(&user),
        "mutation { updateGrade(grade: {pricePerMps: 9}) { pricePerMps } }",
        json!({}),
    )
    .await;
    assert!(error(&got).contains("Admin"), "{}", got.1);
    let (_, after) = inst.get("/grade", None).await;
    assert_eq!(after["price_per_mps"], 0.75);
    inst.stop().await;
}

/// Concurrent PATCHes of different fields: each one's change survives (the read-modify-write
/// is serialised), round after round.
async fn concurrent_patches_keep_every_field(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, admin) = inst.user("gradeadmin").await;
    for round in 1..=10 {
        let r = round as f64;
        let patches = [
            json!({"free_mps_per_user": r}),
            json!({"price_per_mps": r + 0.5}),
            json!({"free_aggregated_topics": round}),
            json!({"price_per_aggregated_topic": r + 0.25}),
            json!({"currency": if round % 2 == 0 { "EUR" } else { "RUB" }}),
        ];
        let answers = futures_util::future::join_all(
            patches
                .iter()
                .map(|p| inst.patch("/grade", Some(&admin), p.clone())),
        )
        .await;
        for (s, v) in &answers {
            assert_eq!(*s, StatusCode::OK, "{v}");
        }
        let (_, got) = inst.get("/grade", None).await;
        assert_eq!(got["free_mps_per_user"], r, "round {round}: {got}");
        assert_eq!(got["price_per_mps"], r + 0.5, "round {round}: {got}");
        assert_eq!(got["free_aggregated_topics"], round, "round {round}: {got}");
        assert_eq!(
            got["price_per_aggregated_topic"],
            r + 0.25,
            "round {round}: {got}"
        );
        assert_eq!(
            got["currency"],
            if round % 2 == 0 { "EUR" } else { "RUB" },
            "round {round}: {got}"
        );
    }
    inst.stop().await;
}

both_backends!(grade_round_trip, concurrent_patches_keep_every_field);
