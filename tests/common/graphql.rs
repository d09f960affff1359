//! Calling `/pepeunit/graphql` in tests: JSON operations, multipart uploads (the GraphQL
//! multipart request spec, as apollo-upload-client sends it), raw bodies, and WebSocket
//! subscriptions (`graphql-transport-ws`).

use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

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

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` connection to `{base}/pepeunit/graphql`, initialised with `token`.
pub async fn connect(base: &str, token: Option<&str>) -> Socket {
    let url = format!("{}/pepeunit/graphql", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("ws");
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let payload = match token {
        Some(t) => json!({"x-auth-token": t}),
        None => json!({}),
    };
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    let ack = next(&mut ws, Duration::from_secs(10)).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

pub async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

pub async fn subscribe(ws: &mut Socket, id: &str, query: &str, variables: Value) {
    send(
        ws,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// The next protocol message (pings answered), or None after `wait`.
pub async fn next(ws: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ping" {
                    send(ws, json!({"type": "pong"})).await;
                    continue;
                }
                return Some(v);
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// camelCase of a REST snake_case key.
pub fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// snake_case of a GraphQL camelCase key.
pub fn snake(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `rest` in GraphQL's spelling when it is a REST enum value (`Public`, `RequestSent`) and
/// GraphQL answered an enum value (`PUBLIC`, `REQUEST_SENT`).
fn enum_spelling(rest: &Value, graphql: &Value) -> Value {
    match rest {
        Value::String(s)
            if s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && graphql.as_str().is_some_and(|g| {
                    g.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                }) =>
        {
            let mut up = String::new();
            for (i, c) in s.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    up.push('_');
                }
                up.extend(c.to_uppercase());
            }
            Value::String(up)
        }
        other => other.clone(),
    }
}

/// Every field REST answers equals GraphQL's (enum values compared in GraphQL's spelling).
#[track_caller]
pub fn same_object(rest: &Value, graphql: &Value, skip: &[&str]) {
    for (k, v) in rest.as_object().expect("a REST object") {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let g = &graphql[camel(k)];
        assert_eq!(g, &enum_spelling(v, g), "field {k}: REST {v}, GraphQL {g}");
    }
}

/// Every field GraphQL answered (what the operation selected) has a REST counterpart of the
/// same value, nested objects and lists included; `skip` names GraphQL keys (camelCase, at
/// any depth) that legitimately differ.
#[track_caller]
pub fn same_fields(rest: &Value, graphql: &Value, skip: &[&str]) {
    same_fields_at("", rest, graphql, skip)
}

#[track_caller]
fn same_fields_at(at: &str, rest: &Value, graphql: &Value, skip: &[&str]) {
    match (rest, graphql) {
        (Value::Object(r), Value::Object(g)) => {
            for (k, gv) in g {
                if skip.contains(&k.as_str()) || k == "__typename" {
                    continue;
                }
                let rv = r.get(&snake(k)).unwrap_or_else(|| {
                    panic!(
                        "{at}.{k}: GraphQL answered it, REST has no `{}` in {rest}",
                        snake(k)
                    )
                });
                same_fields_at(&format!("{at}.{k}"), rv, gv, skip);
            }
        }
        (Value::Array(r), Value::Array(g)) => {
            assert_eq!(r.len(), g.len(), "{at}: REST {rest}, GraphQL {graphql}");
            for (i, (rv, gv)) in r.iter().zip(g).enumerate() {
                same_fields_at(&format!("{at}[{i}]"), rv, gv, skip);
            }
        }
        _ => assert_eq!(
            graphql,
            &enum_spelling(rest, graphql),
            "{at}: REST {rest}, GraphQL {graphql}"
        ),
    }
}
