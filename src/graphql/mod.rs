//! The GraphQL front door at `{PU_APP_PREFIX}/graphql`: upstream's schema
//! (`../shared/upstream-schema.graphql`, checked by `tests/graphql_schema.rs`) so the official
//! web frontend works, over the same service functions as REST, plus our live subscriptions.
//!
//! - POST (JSON or the multipart request spec for uploads) and GET (`?query=`) run operations;
//!   GET from a browser (`Accept: text/html`) serves GraphiQL; a WebSocket upgrade speaks
//!   `graphql-transport-ws` (and the older `graphql-ws`) for subscriptions.
//! - The caller is the agent of the `x-auth-token` header, as in REST (for WebSockets: the
//!   header or `x-auth-token` in the `connection_init` payload).
//! - Errors are upstream's: HTTP 200 with `errors[].message` the REST `detail` text
//!   (`"<status>: <code>: <Prefix>: <message>"`); a request that is not GraphQL at all (bad
//!   JSON, too large) gets a 400/413 with the same `errors` shape. Internal errors leak nothing
//!   and reach the error tracker.
//! - Limits: depth, complexity, body size and upload size, each with a clear error.

mod documents;
mod inputs;
pub mod limits;
mod mutation;
mod query;
mod scalars;
mod subscription;
mod types;

use async_graphql::http::{MultipartOptions, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::{Context, Data, Error, Schema, ServerError, Upload};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::AppError;
use crate::observe::Channel;
use crate::service::{Agent, Instance};

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type PepeunitSchema = Schema<Query, Mutation, Subscription>;

/// Deepest selection accepted (GraphiQL's introspection query needs 13).
pub const MAX_DEPTH: usize = 15;
/// Most fields in one operation, counted over the whole document.
pub const MAX_COMPLEXITY: usize = 1000;
/// Largest JSON or GET request.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest multipart request (uploads); each resolver caps its own file lower.
pub const MAX_MULTIPART_BODY: usize = 17 * 1024 * 1024;

/// The schema, serving `instance`.
pub fn schema(instance: Instance) -> PepeunitSchema {
    builder().data(instance).finish()
}

/// The schema's SDL (what `tests/graphql_schema.rs` compares with the contract).
pub fn sdl() -> String {
    builder().finish().sdl()
}

fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(16)
}

/// Who calls: the agent of the request's token (or why it is refused) and the token itself.
struct Caller {
    agent: Result<Agent, Error>,
    token: Option<String>,
}

async fn caller(instance: &Instance, token: Option<String>) -> Caller {
    let agent = instance
        .agent_from_token(token.as_deref())
        .await
        .map_err(Error::from);
    Caller { agent, token }
}

/// `request` as the agent of `token` would send it (what the HTTP and WebSocket doors do;
/// public for in-process callers such as tests and the load tool).
pub async fn as_caller(
    instance: &Instance,
    token: Option<String>,
    request: async_graphql::Request,
) -> async_graphql::Request {
    request.data(caller(instance, token).await)
}

pub(crate) fn instance<'a>(ctx: &'a Context<'_>) -> &'a Instance {
    ctx.data_unchecked::<Instance>()
}

/// The calling agent; an invalid token fails each field that needs the agent, as upstream.
pub(crate) fn agent<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Agent> {
    match ctx.data_opt::<Caller>() {
        Some(Caller { agent: Ok(a), .. }) => Ok(a),
        Some(Caller { agent: Err(e), .. }) => Err(e.clone()),
        None => Err(AppError::no_access("Token is invalid").into()),
    }
}

pub(crate) fn token(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<Caller>().and_then(|c| c.token.clone())
}

/// The agent of `token` now (subscriptions resolve it again when access rules change).
pub(crate) async fn watcher_agent(
    instance: &Instance,
    token: Option<&str>,
) -> async_graphql::Result<Agent> {
    Ok(instance.agent_from_token(token).await?)
}

/// An uploaded file's bytes, refused past `max` bytes.
pub(crate) fn upload(
    ctx: &Context<'_>,
    file: &Upload,
    max: usize,
) -> async_graphql::Result<bytes::Bytes> {
    let value = file.value(ctx)?;
    if value.content.len() > max {
        return Err(AppError::request(
            "body",
            Some("file"),
            format!("The file {:?} is larger than {max} bytes", value.filename),
        )
        .into());
    }
    Ok(value.content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(q: &str) -> String {
        upload_queries_as_mutations(async_graphql::Request::new(q)).query
    }

    #[test]
    fn only_the_keyword_of_an_upload_query_is_rewritten() {
        let q = "query Md($file: Upload!) { getConvertTomlToMd(file: $file) }";
        assert_eq!(rewritten(q), q.replacen("query", "mutation", 1));
        // other operations, unicode and CRLF before it stay as they are
        let q = "# ünïcödé query\r\nquery A { getBaseMetrics { userCount } }\r\nquery Md($file: Upload!) { getConvertTomlToMd(file: $file) }";
        let r = rewritten(q);
        assert!(r.contains("query A {") && r.contains("mutation Md("), "{r}");
        assert!(r.starts_with("# ünïcödé query"), "{r}");
        // a bare CR that makes the position ambiguous: left alone, never a comment rewritten
        let q = "#query\r query Q($f: Upload!) { checkDataPipeConfig(file: $f) { stage } }";
        assert_eq!(rewritten(q), q);
        let q = "mutation { bulkUpdate { isNone } }";
        assert_eq!(rewritten(q), q);
    }
}

#[derive(Clone)]
struct Door {
    instance: Instance,
    schema: PepeunitSchema,
    documents: std::sync::Arc<documents::Documents>,
    /// The endpoint's path, for GraphiQL.
    path: String,
}

/// The routes of the GraphQL front door, counted on the `graphql` channel.
pub fn router(instance: Instance) -> Router {
    let path = format!("{}/graphql", instance.config.app_prefix);
    let door = Door {
        schema: schema(instance.clone()),
        documents: Default::default(),
        instance,
        path: path.clone(),
    };
    Router::new()
        .route(&path, get(serve).post(serve))
        .with_state(door)
}

async fn serve(State(door): State<Door>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::GET && parts.headers.contains_key(header::UPGRADE) {
        let protocol = GraphQLProtocol::from_request_parts(&mut parts, &()).await;
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
        return match (protocol, upgrade) {
            (Ok(protocol), Ok(upgrade)) => websocket(door, protocol, upgrade, &parts.headers),
            (Err(e), _) => request_error(StatusCode::BAD_REQUEST, e.to_string()),
            (_, Err(e)) => request_error(StatusCode::BAD_REQUEST, e.body_text()),
        };
    }
    door.instance.node.count(Channel::Graphql);
    let query = parts.uri.query().unwrap_or("");
    if parts.method == Method::GET && !query.contains("query=") && wants_html(&parts.headers) {
        let page = include_str!("../../static/graphiql.html").replace("__ENDPOINT__", &door.path);
        return Html(page).into_response();
    }
    let get = parts.method == Method::GET;
    let mut request = if get {
        match async_graphql::http::parse_query_string(query) {
            Ok(r) => r,
            Err(e) => {
                return request_error(StatusCode::BAD_REQUEST, format!("Bad GET request: {e}"))
            }
        }
    } else {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let multipart = content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("multipart/"));
        let max = if multipart {
            MAX_MULTIPART_BODY
        } else {
            MAX_BODY
        };
        let bytes = match axum::body::to_bytes(body, max).await {
            Ok(b) => b,
            Err(_) => {
                return request_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("The request body is larger than {max} bytes"),
                )
            }
        };
        let options = MultipartOptions::default()
            .max_file_size(max)
            .max_num_files(8);
        match async_graphql::http::receive_body(content_type, &bytes[..], options).await {
            Ok(r) if limits::check(&r.query).is_err() => r,
            Ok(r) if multipart => upload_queries_as_mutations(r),
            Ok(r) => r,
            Err(e) => return request_error(StatusCode::BAD_REQUEST, parse_error(e)),
        }
    };
    if request.query.trim().is_empty() {
        return request_error(
            StatusCode::BAD_REQUEST,
            "The body is not a GraphQL request: it has no `query`".to_string(),
        );
    }
    // no parser may see a document that would overflow its stack
    if let Err(message) = limits::check(&request.query) {
        return request_error(StatusCode::BAD_REQUEST, message);
    }
    // parsed once, measured (fragments expanded) before async-graphql walks it, then reused
    let text = request.query.clone();
    let cached = door.documents.get(&text);
    let parsed = match &cached {
        Some(doc) => Some(doc.clone()),
        None => async_graphql::parser::parse_query(&text)
            .ok()
            .map(std::sync::Arc::new),
    };
    if let (None, Some(doc)) = (&cached, &parsed) {
        if let Err(message) = limits::check_shape(doc) {
            return request_error(StatusCode::OK, message);
        }
    }
    // a link must not change anything (CSRF): GET runs queries only
    if get
        && parsed
            .as_deref()
            .is_some_and(|d| is_mutation(d, &request.operation_name))
    {
        return request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Mutations cannot be sent with GET; use POST".to_string(),
        );
    }
    if let Some(doc) = &parsed {
        request.set_parsed_query(async_graphql::parser::types::ExecutableDocument::clone(doc));
    }
    let token = parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request = as_caller(&door.instance, token, request).await;
    let mut response = door.schema.execute(request).await;
    for e in &response.errors {
        track_internal(&door.instance, e);
    }
    if let (None, Some(doc), true) = (cached, parsed, response.errors.is_empty()) {
        door.documents.keep(&text, doc);
    }
    // headers resolvers added (`setGrafanaCookies`, `deleteUserCookies`: Set-Cookie)
    let headers = std::mem::take(&mut response.http_headers);
    let mut answer = Json(response).into_response();
    for (name, value) in headers.iter() {
        answer.headers_mut().append(name, value.clone());
    }
    answer
}

/// A 500's cause goes to the error tracker; the client saw only "Internal Server Error".
fn track_internal(instance: &Instance, e: &ServerError) {
    if let Some(AppError::Internal(cause)) = e.source::<AppError>() {
        let kind = format!("internal: {}", crate::observe::errors::normalize(cause));
        instance.node.error(&kind, cause);
    }
}

/// Upstream has two queries that take an `Upload` (`getConvertTomlToMd`, `checkDataPipeConfig`)
/// and the frontend sends them as multipart queries, but async-graphql accepts `Upload`
/// variables only in mutations. Such a query runs as a mutation instead, on hidden twins of the
/// two fields; the answer is the same. Only a query that declares an `Upload` variable is
/// rewritten, and only its keyword.
fn upload_queries_as_mutations(mut request: async_graphql::Request) -> async_graphql::Request {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return request;
    };
    let ops: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    };
    let mut starts = Vec::new();
    for op in ops {
        let takes_file = op.node.variable_definitions.iter().any(|v| {
            v.node
                .var_type
                .node
                .to_string()
                .trim_matches(['[', ']', '!'])
                == "Upload"
        });
        if op.node.ty == OperationType::Query && takes_file {
            starts.push(op.pos);
        }
    }
    // from the last to the first, so earlier offsets stay valid
    starts.sort_by_key(|p| std::cmp::Reverse((p.line, p.column)));
    for pos in starts {
        // a bare `\r` makes positions ambiguous: rewrite only an unambiguous keyword
        let found: Vec<usize> = offsets(&request.query, pos)
            .into_iter()
            .filter(|at| request.query[*at..].starts_with("query"))
            .collect();
        if let [at] = found[..] {
            request
                .query
                .replace_range(at..at + "query".len(), "mutation");
        }
    }
    request
}

/// The byte offsets of a parser position: lines end at `\n`, a `\r` starts the column again
/// (async-graphql-parser's own counting, under which a position may name several places).
fn offsets(text: &str, pos: async_graphql::Pos) -> Vec<usize> {
    let (mut line, mut column) = (1, 1);
    let mut found = Vec::new();
    for (i, ch) in text.char_indices() {
        if (line, column) == (pos.line, pos.column) {
            found.push(i);
        }
        match ch {
            '\r' => column = 1,
            '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
    }
    found
}

/// The operation a request naming `operation_name` would run in `doc` is a mutation (with
/// several operations and no name: any of them is).
fn is_mutation(
    doc: &async_graphql::parser::types::ExecutableDocument,
    operation_name: &Option<String>,
) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let mutation = |ty: OperationType| ty == OperationType::Mutation;
    match &doc.operations {
        DocumentOperations::Single(op) => mutation(op.node.ty),
        DocumentOperations::Multiple(ops) => match operation_name {
            Some(name) => ops
                .get(name.as_str())
                .is_some_and(|op| mutation(op.node.ty)),
            None => ops.values().any(|op| mutation(op.node.ty)),
        },
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn parse_error(e: async_graphql::ParseRequestError) -> String {
    use async_graphql::ParseRequestError as P;
    match e {
        P::InvalidRequest(e) => format!("The body is not a GraphQL request: {e}"),
        P::InvalidFilesMap(e) => format!("The multipart `map` is invalid: {e}"),
        P::PayloadTooLarge => "An uploaded file is too large".to_string(),
        P::InvalidMultipart(e) => format!("The multipart body is invalid: {e}"),
        P::MissingOperatorsPart => "The multipart request has no `operations` part".to_string(),
        P::MissingMapPart => "The multipart request has no `map` part".to_string(),
        P::NotUpload => "The multipart request's files do not map to `Upload` variables".into(),
        P::MissingFiles => "The multipart request lacks a file named in `map`".to_string(),
        P::UnsupportedBatch => "Batched requests are not supported".to_string(),
        other => format!("Bad request: {other}"),
    }
}

/// A request that could not become a GraphQL operation, in GraphQL's error shape.
fn request_error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({ "data": null, "errors": [{ "message": message }] })),
    )
        .into_response()
}

fn websocket(
    door: Door,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
) -> Response {
    let header_token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(MAX_BODY)
        .max_frame_size(MAX_BODY)
        .on_upgrade(move |socket| {
            use async_graphql::futures_util::StreamExt;
            let instance = door.instance.clone();
            // a message nested too deeply for the parser, or whose fragments expand too far,
            // closes the connection
            let (sink, stream) = socket.split();
            let stream = stream.take_while(|m| {
                use axum::extract::ws::Message;
                // the protocol reads text and binary frames alike
                let ok = match m {
                    Ok(Message::Text(t)) => limits::check_message(t.as_str()),
                    Ok(Message::Binary(b)) => {
                        std::str::from_utf8(b).is_ok_and(limits::check_message)
                    }
                    _ => true,
                };
                std::future::ready(ok)
            });
            GraphQLWebSocket::new_with_pair(sink, stream, door.schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = payload
                        .get("x-auth-token")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .or(header_token);
                    let mut data = Data::default();
                    data.insert(caller(&instance, token).await);
                    data.insert(subscription::ConnectionSlots::default());
                    Ok(data)
                })
                .serve()
        })
}
