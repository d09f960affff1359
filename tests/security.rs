//! Known security gaps closed (issue 14, part 7): one Admin however registrations race, unit
//! tokens of deleted units stay dead (import and re-creation never revive them) and an owner
//! can rotate a unit's token, and no outgoing connection a user can aim (git, release APIs,
//! peer brokers) reaches a loopback, private or link-local address without
//! `PU_ALLOW_LOCAL_NETWORK=true`.

mod common;

use common::{Backend, TestInstance};
use serde_json::{json, Value};

/// Many registrations at once on a fresh instance: exactly one of them becomes the Admin.
async fn first_admin_under_concurrent_registrations(backend: Backend) {
    // several fresh instances: each race is short, a few of them make a double Admin likely
    for _ in 0..4 {
        one_registration_race(backend).await;
    }
}

async fn one_registration_race(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    const N: usize = 12;
    let answers = futures_util::future::join_all((0..N).map(|i| {
        let inst = &inst;
        async move {
            inst.post(
                "/users",
                None,
                json!({"login": format!("racer{i:02}"), "password": "password-1"}),
            )
            .await
        }
    }))
    .await;
    let mut admins_answered = 0;
    for (s, v) in &answers {
        assert_eq!(s.as_u16(), 201, "{v}");
        if v["role"] == "Admin" {
            admins_answered += 1;
        }
    }
    assert_eq!(admins_answered, 1, "registration answers: {answers:?}");
    // and so the database says
    let (s, t) = inst
        .post(
            "/users/auth",
            None,
            json!({"credentials": "racer00", "password": "password-1"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let (s, list) = inst.get("/users?limit=100", t["token"].as_str()).await;
    assert_eq!(s, 200, "{list}");
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), N);
    let admins: Vec<&Value> = users.iter().filter(|u| u["role"] == "Admin").collect();
    assert_eq!(admins.len(), 1, "{admins:?}");
    // a later registration is a User
    let (s, late) = inst
        .post("/users", None, json!({"login": "latecomer", "password": "password-1"}))
        .await;
    assert_eq!(s, 201, "{late}");
    assert_eq!(late["role"], "User");
    inst.stop().await;
}

both_backends!(first_admin_under_concurrent_registrations);
