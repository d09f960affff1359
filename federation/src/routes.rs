//! The ActivityPub HTTP surface: WebFinger, NodeInfo 2.1, actor documents, inboxes and the
//! outbox / followers / following collections (paged). Mounted by the server next to its API.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{LocalObject, LocalRef};
use crate::core::Federation;
use crate::documents::{self, collection, collection_page, CONTENT_TYPE, PAGE_SIZE, PUBLIC};
use crate::inbox::{reply_body, InboxReply};
use crate::signing::SignedRequest;

/// Routes of the federation surface; `prefix` is the application prefix (`/pepeunit`).
pub fn router(fed: Federation) -> Router {
    let prefix = fed.settings().prefix.clone();
    let ap = Router::new()
        .route("/nodeinfo/2.1", get(nodeinfo))
        .route("/inbox", axum::routing::post(inbox))
        .route("/instance", get(instance_actor))
        .route("/instance/inbox", axum::routing::post(inbox))
        .route("/instance/{collection}", get(instance_collection))
        .route("/{kind}/{uuid}", get(actor))
        .route("/{kind}/{uuid}/inbox", axum::routing::post(inbox))
        .route("/{kind}/{uuid}/{collection}", get(actor_collection));
    Router::new()
        .route("/.well-known/webfinger", get(webfinger))
        .route("/.well-known/nodeinfo", get(nodeinfo_links))
        .nest(&format!("{prefix}/ap"), ap)
        .with_state(fed)
}

fn json_response(status: StatusCode, content_type: &'static str, body: Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    res
}

fn ap(body: Value) -> Response {
    json_response(StatusCode::OK, CONTENT_TYPE, body)
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let reply = InboxReply {
        status,
        message: message.into(),
    };
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        "application/json",
        reply_body(&reply),
    )
}

/// A refused request: status and reason.
struct Refusal(u16, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("federation: {e}");
    error(500, "internal error")
}

fn parse_ref(fed: &Federation, kind: &str, uuid: &str) -> Option<LocalRef> {
    let uuid = uuid::Uuid::parse_str(uuid).ok()?;
    let _ = fed;
    match kind {
        "users" => Some(LocalRef::User(uuid)),
        "repos" => Some(LocalRef::Repo(uuid)),
        "units" => Some(LocalRef::Unit(uuid)),
        _ => None,
    }
}

/// Signature rules for GETs: a signature from a denied domain is refused; with authorized
/// fetch on, an unsigned or badly signed GET is refused.
async fn guard_get(
    fed: &Federation,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = SignedRequest {
        method: method.as_str(),
        path_and_query: path,
        headers,
        body: None,
    };
    let signed = headers.contains_key("signature");
    if fed.settings().authorized_fetch {
        if !signed {
            return Err(Refusal(401, "this instance requires signed fetches".into()));
        }
        return fed
            .verify_request(&req)
            .await
            .map(|_| ())
            .map_err(|r| Refusal(r.status, r.message));
    }
    if signed {
        if let Ok(owner) = req.key_owner() {
            let domain = documents::domain_of(&owner).unwrap_or_default();
            if !fed.permits(&domain) {
                return Err(Refusal(403, format!("domain {domain} is denied")));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct WebfingerQuery {
    resource: Option<String>,
}

async fn webfinger(State(fed): State<Federation>, Query(q): Query<WebfingerQuery>) -> Response {
    let Some(resource) = q.resource else {
        return error(400, "resource is required");
    };
    let domain = &fed.settings().domain;
    let target = if let Some(acct) = resource.strip_prefix("acct:") {
        let Some((name, host)) = acct.rsplit_once('@') else {
            return error(400, "resource must be acct:name@domain");
        };
        if !host.eq_ignore_ascii_case(domain) {
            return error(404, "not an account of this instance");
        }
        if name.eq_ignore_ascii_case(domain) {
            Some(LocalRef::Instance)
        } else {
            match fed.backend().user_by_login(name).await {
                Ok(u) => u.map(LocalRef::User),
                Err(e) => return internal(e),
            }
        }
    } else {
        fed.local_ref(&resource)
    };
    let Some(target) = target else {
        return error(404, "no such actor");
    };
    match fed.backend().local_object(target).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(404, "no such actor"),
        Err(e) => return internal(e),
    }
    let id = fed.actor_id(target);
    json_response(
        StatusCode::OK,
        "application/jrd+json",
        json!({
            "subject": resource,
            "aliases": [id],
            "links": [
                {"rel": "self", "type": CONTENT_TYPE, "href": id},
                {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": id}
            ]
        }),
    )
}

async fn nodeinfo_links(State(fed): State<Federation>) -> Response {
    let s = fed.settings();
    json_response(
        StatusCode::OK,
        "application/json",
        json!({"links": [{
            "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1",
            "href": format!("{}{}/ap/nodeinfo/2.1", s.origin, s.prefix)
        }]}),
    )
}

async fn nodeinfo(State(fed): State<Federation>) -> Response {
    let usage = match fed.backend().usage().await {
        Ok(u) => u,
        Err(e) => return internal(e),
    };
    let s = fed.settings();
    json_response(
        StatusCode::OK,
        "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/2.1#\"",
        json!({
            "version": "2.1",
            "software": {
                "name": "pepeunit",
                "version": s.software_version,
                "homepage": "https://pepeunit.com"
            },
            "protocols": ["activitypub"],
            "services": {"inbound": [], "outbound": []},
            "openRegistrations": true,
            "usage": {
                "users": {"total": usage.users},
                "localPosts": usage.public_repos + usage.public_units
            },
            "metadata": {
                "nodeName": s.instance_name,
                "publicRepos": usage.public_repos,
                "publicUnits": usage.public_units,
                "authorizedFetch": s.authorized_fetch,
                "loadLimit": s.load_limit_url
            }
        }),
    )
}

/// The instance actor is readable by anyone, signed or not, denied or not: peers need its key
/// to verify our signed fetches, and a denied peer learns nothing else from it.
async fn instance_actor(State(fed): State<Federation>) -> Response {
    serve_actor(&fed, LocalRef::Instance).await
}

async fn actor(
    State(fed): State<Federation>,
    Path((kind, uuid)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let Some(r) = parse_ref(&fed, &kind, &uuid) else {
        return error(404, "no such actor");
    };
    if let Err(r) = guard_get(&fed, &method, &uri, &headers).await {
        return r.into_response();
    }
    serve_actor(&fed, r).await
}

async fn serve_actor(fed: &Federation, r: LocalRef) -> Response {
    match fed.actor_document(r).await {
        Ok(Some(doc)) => ap(doc),
        Ok(None) => error(404, "no such actor"),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<String>,
}

fn page_number(q: &PageQuery) -> Result<Option<i64>, Refusal> {
    match &q.page {
        None => Ok(None),
        Some(p) => match p.parse::<i64>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(Some(n)),
            _ => Err(Refusal(400, "page must be an integer from 1".into())),
        },
    }
}

async fn instance_collection(
    State(fed): State<Federation>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = guard_get(&fed, &method, &uri, &headers).await {
        return r.into_response();
    }
    serve_collection(&fed, LocalRef::Instance, &name, &q).await
}

async fn actor_collection(
    State(fed): State<Federation>,
    Path((kind, uuid, name)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let Some(r) = parse_ref(&fed, &kind, &uuid) else {
        return error(404, "no such actor");
    };
    if let Err(r) = guard_get(&fed, &method, &uri, &headers).await {
        return r.into_response();
    }
    serve_collection(&fed, r, &name, &q).await
}

async fn serve_collection(fed: &Federation, r: LocalRef, name: &str, q: &PageQuery) -> Response {
    match fed.backend().local_object(r).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(404, "no such actor"),
        Err(e) => return internal(e),
    }
    let page = match page_number(q) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let me = fed.actor_id(r);
    let id = format!("{me}/{name}");
    let offset = page.map(|p| (p - 1) * PAGE_SIZE).unwrap_or(0);
    let result = match name {
        "followers" => fed
            .backend()
            .followers(me.as_str(), offset, PAGE_SIZE)
            .await
            .map(|(total, items)| (total, items.into_iter().map(Value::from).collect())),
        "following" => fed.backend().following_list(me.as_str()).await.map(|all| {
            let accepted: Vec<Value> = all
                .into_iter()
                .filter(|f| f.state == "Accepted")
                .map(|f| Value::from(f.target))
                .collect();
            let total = accepted.len() as i64;
            (
                total,
                accepted
                    .into_iter()
                    .skip(offset as usize)
                    .take(PAGE_SIZE as usize)
                    .collect(),
            )
        }),
        "outbox" if r == LocalRef::Instance => {
            match fed.backend().public_objects(offset, PAGE_SIZE).await {
                Ok((total, objects)) => {
                    let followers = format!("{me}/followers");
                    let items = objects
                        .iter()
                        .filter_map(|obj| {
                            let r = match obj {
                                LocalObject::Repo(x) => LocalRef::Repo(x.uuid),
                                LocalObject::Unit(x) => LocalRef::Unit(x.uuid),
                                _ => return None,
                            };
                            Some(r)
                        })
                        .collect::<Vec<_>>();
                    let mut docs = Vec::new();
                    for r in items {
                        if let Ok(Some(doc)) = fed.actor_document(r).await {
                            let object_id = fed.actor_id(r);
                            let create_id = url::Url::parse(&format!("{object_id}#create"))
                                .expect("actor ids are URLs");
                            docs.push(documents::activity(
                                "Create",
                                &create_id,
                                &me,
                                doc,
                                &[PUBLIC, &followers],
                            ));
                        }
                    }
                    Ok((total, docs))
                }
                Err(e) => Err(e),
            }
        }
        "outbox" => Ok((0, Vec::new())),
        _ => return error(404, "no such collection"),
    };
    match result {
        Ok((total, items)) => match page {
            None => ap(collection(&id, total)),
            Some(p) => ap(collection_page(&id, p, total, items)),
        },
        Err(e) => internal(e),
    }
}

async fn inbox(
    State(fed): State<Federation>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = SignedRequest {
        method: method.as_str(),
        path_and_query: path,
        headers: &headers,
        body: Some(&body),
    };
    let reply = fed.receive(req).await;
    if reply.status >= 400 {
        tracing::info!("inbox refused ({}): {}", reply.status, reply.message);
    }
    error(reply.status, reply.message)
}
