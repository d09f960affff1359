//! Calling `/pepeunit/graphql` in tests: JSON operations, multipart uploads (the GraphQL
//! multipart request spec, as apollo-upload-client sends it) and raw bodies.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::TestInstance;

pub fn endpoint(inst: &TestInstance) -> String {
    format!("{}/pepeunit/graphql", inst.base)
}

/// Runs one operation; returns the HTTP status and the whole answer (`data`, `errors`).
pub async fn gql(
    inst: &TestInstance,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
    let mut req = inst
        .http
        .post(endpoint(inst))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    answer(req).await
}

/// The `data` of an operation that must succeed.
#[track_caller]
pub fn data(got: &(StatusCode, Value)) -> &Value {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert!(got.1.get("errors").is_none(), "errors: {}", got.1);
    &got.1["data"]
}

/// The first error's message of an operation that must fail (HTTP 200 for operation errors).
#[track_caller]
pub fn error(got: &(StatusCode, Value)) -> String {
    let message = got.1["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", got.1));
    message.to_string()
}

/// Sends `body` with `content_type` as is.
pub async fn raw(
    inst: &TestInstance,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = inst
        .http
        .post(endpoint(inst))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    answer(req).await
}

/// One operation with one file, bound to the variable `file` (the multipart request spec:
/// `operations`, `map`, then the file part).
pub async fn upload(
    inst: &TestInstance,
    token: Option<&str>,
    query: &str,
    mut variables: Value,
    file_name: &str,
    content: &[u8],
) -> (StatusCode, Value) {
    variables["file"] = Value::Null;
    let boundary = "----pepeunit-test-boundary-7MA4YWxkTrZu0gW";
    let operations = json!({"query": query, "variables": variables}).to_string();
    let mut body = Vec::new();
    let mut part = |headers: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "Content-Disposition: form-data; name=\"operations\"",
        operations.as_bytes(),
    );
    part(
        "Content-Disposition: form-data; name=\"map\"",
        br#"{"0": ["variables.file"]}"#,
    );
    part(
        &format!(
            "Content-Disposition: form-data; name=\"0\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream"
        ),
        content,
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    raw(
        inst,
        token,
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
    .await
}

async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request sent");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}
