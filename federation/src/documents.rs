//! The JSON documents we publish: actors (Application, Person, ForgeFed Repository, Service),
//! activities and paged collections, and the parts of remote documents we read.

use serde_json::{json, Map, Value};
use url::Url;

use crate::backend::{LocalObject, NodeSummary};
use crate::hub::{HubDoc, HubKind};
use crate::signing::main_key_id;

pub const PUBLIC: &str = "https://www.w3.org/ns/activitystreams#Public";
pub const CONTENT_TYPE: &str = "application/activity+json";
/// Items per collection page.
pub const PAGE_SIZE: i64 = 50;

/// `@context` of every document: ActivityStreams, security (keys), ForgeFed terms and ours.
pub fn context() -> Value {
    json!([
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {
            "forge": "https://forgefed.org/ns#",
            "Repository": "forge:Repository",
            "cloneUri": {"@id": "forge:cloneUri", "@type": "@id"},
            "pepeunit": "https://pepeunit.com/ns#",
            "platform": "pepeunit:platform",
            "topics": "pepeunit:topics",
            "readme": "pepeunit:readme",
            "repository": {"@id": "pepeunit:repository", "@type": "@id"},
            "firmwareVersion": "pepeunit:firmwareVersion",
            "nodes": "pepeunit:nodes",
            "creator": {"@id": "pepeunit:creator", "@type": "@id"},
            "movedTo": {"@id": "as:movedTo", "@type": "@id"},
            "loadLimit": {"@id": "pepeunit:loadLimit", "@type": "@id"}
        }
    ])
}

/// Where an actor's endpoints live, given its id.
pub struct ActorUrls<'a> {
    pub id: &'a Url,
    pub shared_inbox: &'a Url,
}

fn endpoint(id: &Url, suffix: &str) -> String {
    format!("{}/{suffix}", id.as_str().trim_end_matches('/'))
}

/// The actor document of a local object. `owner` is the creator's actor id (Repos, Units);
/// `repo_id` the Repo's actor id (Units).
pub fn actor_document(
    obj: &LocalObject,
    urls: ActorUrls<'_>,
    public_key_pem: &str,
    owner: Option<&Url>,
    repo_id: Option<&Url>,
    domain: &str,
) -> Value {
    let id = urls.id;
    let mut doc = Map::new();
    doc.insert("@context".into(), context());
    doc.insert("id".into(), json!(id));
    let (kind, username, name, summary) = match obj {
        LocalObject::Instance { name, summary } => {
            ("Application", domain.to_string(), name, summary.clone())
        }
        LocalObject::User { login, .. } => ("Person", login.clone(), login, String::new()),
        LocalObject::Repo(r) => ("Repository", r.name.clone(), &r.name, r.description.clone()),
        LocalObject::Unit(u) => ("Service", u.name.clone(), &u.name, u.description.clone()),
    };
    doc.insert("type".into(), json!(kind));
    doc.insert("preferredUsername".into(), json!(username));
    doc.insert("name".into(), json!(name));
    doc.insert("summary".into(), json!(summary));
    doc.insert("url".into(), json!(id));
    doc.insert("inbox".into(), json!(endpoint(id, "inbox")));
    doc.insert("outbox".into(), json!(endpoint(id, "outbox")));
    doc.insert("followers".into(), json!(endpoint(id, "followers")));
    doc.insert("following".into(), json!(endpoint(id, "following")));
    doc.insert(
        "endpoints".into(),
        json!({"sharedInbox": urls.shared_inbox}),
    );
    doc.insert("manuallyApprovesFollowers".into(), json!(false));
    doc.insert(
        "publicKey".into(),
        json!({"id": main_key_id(id), "owner": id, "publicKeyPem": public_key_pem}),
    );
    if let Some(owner) = owner {
        // not `attributedTo`: on a Create, servers take that for the author of the object
        // and drop the activity when it is not the activity's actor
        doc.insert("creator".into(), json!(owner));
    }
    match obj {
        LocalObject::Repo(r) => {
            if !r.clone_url.is_empty() {
                doc.insert("cloneUri".into(), json!(r.clone_url));
            }
            doc.insert("platform".into(), json!(r.platform));
            doc.insert("readme".into(), json!(r.readme));
            doc.insert("topics".into(), json!([]));
            doc.insert("published".into(), json!(r.created));
            doc.insert("updated".into(), json!(r.updated));
        }
        LocalObject::Unit(u) => {
            if let Some(repo) = repo_id {
                doc.insert("repository".into(), json!(repo));
            }
            doc.insert("platform".into(), json!(u.platform));
            doc.insert("firmwareVersion".into(), json!(u.firmware_version));
            doc.insert("nodes".into(), json!(u.nodes));
            doc.insert(
                "topics".into(),
                json!(u.nodes.iter().map(|n| n.topic.clone()).collect::<Vec<_>>()),
            );
            doc.insert("published".into(), json!(u.created));
            doc.insert("updated".into(), json!(u.updated));
            if let Some(to) = &u.moved_to {
                doc.insert("movedTo".into(), json!(to));
            }
        }
        LocalObject::User { created, .. } => {
            doc.insert("published".into(), json!(created));
        }
        LocalObject::Instance { .. } => {}
    }
    Value::Object(doc)
}

/// An activity document.
pub fn activity(kind: &str, id: &Url, actor: &Url, object: Value, to: &[&str]) -> Value {
    json!({
        "@context": context(),
        "id": id,
        "type": kind,
        "actor": actor,
        "object": object,
        "to": to,
        "published": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// `OrderedCollection` head pointing at its first page.
pub fn collection(id: &str, total: i64) -> Value {
    let mut doc = json!({
        "@context": context(),
        "id": id,
        "type": "OrderedCollection",
        "totalItems": total,
    });
    if total > 0 {
        doc["first"] = json!(format!("{id}?page=1"));
        let last = (total + PAGE_SIZE - 1) / PAGE_SIZE;
        doc["last"] = json!(format!("{id}?page={last}"));
    }
    doc
}

/// One page (1-based) of an `OrderedCollection`.
pub fn collection_page(id: &str, page: i64, total: i64, items: Vec<Value>) -> Value {
    let mut doc = json!({
        "@context": context(),
        "id": format!("{id}?page={page}"),
        "type": "OrderedCollectionPage",
        "partOf": id,
        "totalItems": total,
        "orderedItems": items,
    });
    if page * PAGE_SIZE < total {
        doc["next"] = json!(format!("{id}?page={}", page + 1));
    }
    if page > 1 {
        doc["prev"] = json!(format!("{id}?page={}", page - 1));
    }
    doc
}

/// The id of a field that may be a bare IRI or an embedded object with an `id`.
pub fn id_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(m) => m.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// Whether any string or key of a document holds a NUL character (`\u0000`): no ActivityPub
/// document needs one, and PostgreSQL's TEXT refuses it wherever it would be stored or
/// compared.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub fn str_field<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `host[:port]` of a URL, lowercase: how instances are named.
pub fn domain_of(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Reads a remote Repository or Service document into a hub document. `None` when it is not
/// one of ours to index or lacks the fields a hub entry needs.
pub fn hub_doc(doc: &Value) -> Option<HubDoc> {
    let kind = match str_field(doc, "type") {
        "Repository" => HubKind::Repo,
        "Service" => HubKind::Unit,
        _ => return None,
    };
    let id = Url::parse(str_field(doc, "id")).ok()?;
    let instance = domain_of(&id)?;
    let uuid = id
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .unwrap_or_default();
    let text =
        |key: &str, max: usize| -> String { str_field(doc, key).chars().take(max).collect() };
    let name = text("name", 200);
    let name = if name.is_empty() {
        text("preferredUsername", 200)
    } else {
        name
    };
    let topics = doc
        .get("topics")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(200)
                .map(|s| s.chars().take(200).collect())
                .collect()
        })
        .unwrap_or_default();
    Some(HubDoc {
        kind,
        uuid,
        name,
        description: text("summary", 2000),
        readme: text("readme", 64 * 1024),
        topics,
        platform: text("platform", 50),
        instance,
        url: id.to_string(),
    })
}

/// The hub document of a local Repo or Unit.
pub fn local_hub_doc(obj: &LocalObject, id: &Url, domain: &str) -> Option<HubDoc> {
    match obj {
        LocalObject::Repo(r) => Some(HubDoc {
            kind: HubKind::Repo,
            uuid: r.uuid.to_string(),
            name: r.name.clone(),
            description: r.description.clone(),
            readme: r.readme.clone(),
            topics: Vec::new(),
            platform: r.platform.clone(),
            instance: domain.to_string(),
            url: id.to_string(),
        }),
        LocalObject::Unit(u) if u.moved_to.is_some() => None,
        LocalObject::Unit(u) => Some(HubDoc {
            kind: HubKind::Unit,
            uuid: u.uuid.to_string(),
            name: u.name.clone(),
            description: u.description.clone(),
            readme: String::new(),
            topics: u
                .nodes
                .iter()
                .map(|n: &NodeSummary| n.topic.clone())
                .collect(),
            platform: u.platform.clone(),
            instance: domain.to_string(),
            url: id.to_string(),
        }),
        _ => None,
    }
}
