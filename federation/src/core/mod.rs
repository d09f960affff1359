//! [`Federation`]: this instance as an ActivityPub server. It names local actors, publishes
//! changes of public Repos and Units to followers (through the durable delivery queue), follows
//! other instances, keeps the hub index in step, and applies the domain policy.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use activitypub_federation::config::{Data, FederationConfig, UrlVerifier};
use activitypub_federation::error::Error as ApError;
use activitypub_federation::fetch::object_id::ObjectId;
use activitypub_federation::http_signatures::generate_actor_keypair;
use activitypub_federation::traits::{Actor, Object};
use async_trait::async_trait;
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use url::Url;

use crate::backend::{
    Backend, BackendError, Delivery, Following, LocalObject, LocalRef, RemoteActor,
};
use crate::documents::{self, domain_of, str_field, ActorUrls, PUBLIC};
use crate::hub::{Hub, HubError, HubPage, HubQuery};
use crate::policy::{DomainList, ListKind};

mod follows;
mod publish;

/// What the server tells federation about itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http(s)://host[:port]`, no trailing slash.
    pub origin: String,
    /// `host[:port]`.
    pub domain: String,
    /// Path prefix of the application (`/pepeunit`).
    pub prefix: String,
    /// Allow `http:`, loopback and private addresses and explicit ports (tests, local trials).
    pub allow_local: bool,
    /// The server's rule for addresses outgoing requests may not reach (the class of a local
    /// address, None for a global one): applied to every address a peer's name resolves to,
    /// unless `allow_local`. The request then connects to the checked addresses.
    pub local_address: fn(std::net::IpAddr) -> Option<&'static str>,
    /// Require signatures on GETs of actors and collections too.
    pub authorized_fetch: bool,
    /// First retry delay of a failed delivery; doubles per attempt, capped at six hours.
    pub retry_base: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: i64,
    pub software_version: String,
    pub instance_name: String,
    /// The instance's public `load_limit` report (capacity and grade), linked from NodeInfo's
    /// metadata and the instance actor; None: not linked.
    pub load_limit_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("hub: {0}")]
    Hub(#[from] HubError),
    #[error("{0}")]
    Remote(String),
    #[error("domain {0} is refused by this instance's federation policy")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<ApError> for FedError {
    fn from(e: ApError) -> Self {
        FedError::Remote(e.to_string())
    }
}

pub type FedResult<T> = Result<T, FedError>;

pub(crate) struct Inner {
    pub settings: Settings,
    pub backend: Arc<dyn Backend>,
    pub hub: Hub,
    pub key: RsaPrivateKey,
    pub public_pem: String,
    pub policy: Arc<RwLock<DomainList>>,
    pub config: FederationConfig<Store>,
    pub client: reqwest::Client,
    pub changes: mpsc::UnboundedSender<LocalRef>,
    pub changes_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<LocalRef>>>,
    pub queue_wakeup: Notify,
}

/// The app data handed to activitypub_federation's fetches.
#[derive(Clone)]
pub struct Store(pub Arc<dyn Backend>);

/// This instance as an ActivityPub server. Cheap to clone.
#[derive(Clone)]
pub struct Federation(pub(crate) Arc<Inner>);

/// Refuses URLs of denied domains inside activitypub_federation's fetches.
#[derive(Clone)]
struct PolicyVerifier(Arc<RwLock<DomainList>>);

#[async_trait]
impl UrlVerifier for PolicyVerifier {
    async fn verify(&self, url: &Url) -> Result<(), ApError> {
        let domain = domain_of(url).unwrap_or_default();
        if self.0.read().expect("policy lock").permits(&domain) {
            Ok(())
        } else {
            Err(ApError::UrlVerificationError("domain is denied by policy"))
        }
    }
}

/// The instance actor as activitypub_federation needs it for signed fetches.
#[derive(Debug)]
struct Signer {
    id: Url,
    public: String,
    private: String,
}

#[async_trait]
impl Object for Signer {
    type DataType = Store;
    type Kind = Value;
    type Error = ApError;
    fn id(&self) -> &Url {
        &self.id
    }
    async fn read_from_id(_: Url, _: &Data<Store>) -> Result<Option<Self>, ApError> {
        Ok(None)
    }
    async fn into_json(self, _: &Data<Store>) -> Result<Value, ApError> {
        Ok(json!({"id": self.id}))
    }
    async fn verify(_: &Value, _: &Url, _: &Data<Store>) -> Result<(), ApError> {
        Err(ApError::NotFound)
    }
    async fn from_json(_: Value, _: &Data<Store>) -> Result<Self, ApError> {
        Err(ApError::NotFound)
    }
}

impl Actor for Signer {
    fn public_key_pem(&self) -> &str {
        &self.public
    }
    fn private_key_pem(&self) -> Option<String> {
        Some(self.private.clone())
    }
    fn inbox(&self) -> Url {
        self.id.clone()
    }
}

/// A remote actor fetched (signed) through activitypub_federation and cached by the backend.
#[derive(Debug, Clone)]
pub struct ApActor {
    pub id: Url,
    pub actor: RemoteActor,
}

#[async_trait]
impl Object for ApActor {
    type DataType = Store;
    type Kind = Value;
    type Error = ApError;

    fn id(&self) -> &Url {
        &self.id
    }

    fn last_refreshed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.actor.fetched_at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    async fn read_from_id(id: Url, data: &Data<Store>) -> Result<Option<Self>, ApError> {
        let found = data
            .app_data()
            .0
            .remote_actor(id.as_str())
            .await
            .map_err(|e| ApError::Other(e.to_string()))?;
        Ok(found.and_then(ApActor::new))
    }

    async fn into_json(self, _: &Data<Store>) -> Result<Value, ApError> {
        Ok(self.actor.document)
    }

    async fn verify(json: &Value, expected_domain: &Url, _: &Data<Store>) -> Result<(), ApError> {
        let id = Url::parse(str_field(json, "id")).map_err(|_| ApError::NotFound)?;
        if id.host_str() != expected_domain.host_str() || id.port() != expected_domain.port() {
            return Err(ApError::UrlVerificationError(
                "actor id is on another domain",
            ));
        }
        let key = json
            .get("publicKey")
            .ok_or(ApError::Other("actor has no publicKey".into()))?;
        let owner = str_field(key, "owner");
        if !owner.is_empty() && owner != id.as_str() {
            return Err(ApError::Other("publicKey owner is not the actor".into()));
        }
        if str_field(key, "publicKeyPem").is_empty() || str_field(json, "inbox").is_empty() {
            return Err(ApError::Other("actor lacks publicKeyPem or inbox".into()));
        }
        Ok(())
    }

    async fn from_json(json: Value, data: &Data<Store>) -> Result<Self, ApError> {
        let id = Url::parse(str_field(&json, "id")).map_err(|_| ApError::NotFound)?;
        let inbox = Url::parse(str_field(&json, "inbox"))
            .map_err(|_| ApError::Other("inbox is not a URL".into()))?;
        let shared_inbox = json
            .get("endpoints")
            .map(|e| str_field(e, "sharedInbox"))
            .and_then(|s| Url::parse(s).ok())
            .filter(|u| u.host_str() == id.host_str() && u.port() == id.port())
            .map(|u| u.to_string());
        if inbox.host_str() != id.host_str() || inbox.port() != id.port() {
            return Err(ApError::UrlVerificationError("inbox is on another domain"));
        }
        let actor = RemoteActor {
            id: id.to_string(),
            kind: str_field(&json, "type").to_string(),
            domain: domain_of(&id).unwrap_or_default(),
            inbox: inbox.to_string(),
            shared_inbox,
            public_key_pem: json
                .get("publicKey")
                .map(|k| str_field(k, "publicKeyPem"))
                .unwrap_or_default()
                .to_string(),
            document: json,
            fetched_at: chrono::Utc::now().to_rfc3339(),
        };
        data.app_data()
            .0
            .store_remote_actor(&actor)
            .await
            .map_err(|e| ApError::Other(e.to_string()))?;
        Ok(ApActor { id, actor })
    }
}

impl Actor for ApActor {
    fn public_key_pem(&self) -> &str {
        &self.actor.public_key_pem
    }
    fn private_key_pem(&self) -> Option<String> {
        None
    }
    fn inbox(&self) -> Url {
        Url::parse(&self.actor.inbox).expect("checked when stored")
    }
}

impl ApActor {
    fn new(actor: RemoteActor) -> Option<Self> {
        let id = Url::parse(&actor.id).ok()?;
        Url::parse(&actor.inbox).ok()?;
        Some(ApActor { id, actor })
    }

    /// The inbox deliveries should go to (shared if offered).
    pub fn delivery_inbox(&self) -> &str {
        self.actor
            .shared_inbox
            .as_deref()
            .unwrap_or(&self.actor.inbox)
    }
}

impl Federation {
    /// Loads (or creates) the instance key, the federation policy and the HTTP client.
    pub async fn start(
        settings: Settings,
        backend: Arc<dyn Backend>,
        hub: Hub,
    ) -> FedResult<Federation> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (private_pem, public_pem) = match backend.instance_key().await? {
            Some(pair) => pair,
            None => {
                let pair = tokio::task::spawn_blocking(generate_actor_keypair)
                    .await
                    .map_err(|e| FedError::Invalid(e.to_string()))?
                    .map_err(|e| FedError::Invalid(e.to_string()))?;
                backend
                    .store_instance_key(&pair.private_key, &pair.public_key)
                    .await?
            }
        };
        let key = RsaPrivateKey::from_pkcs8_pem(&private_pem)
            .map_err(|e| FedError::Invalid(format!("stored instance key: {e}")))?;
        let policy = Arc::new(RwLock::new(
            backend.domain_list(ListKind::Federation).await?,
        ));
        let client = http_client(&settings)?;
        let instance_id = Url::parse(&format!(
            "{}{}/ap/instance",
            settings.origin, settings.prefix
        ))
        .map_err(|e| FedError::Invalid(format!("instance actor id: {e}")))?;
        let signer = Signer {
            id: instance_id,
            public: public_pem.clone(),
            private: private_pem.clone(),
        };
        let config = FederationConfig::builder()
            .domain(settings.domain.clone())
            .app_data(Store(backend.clone()))
            .client(client.clone().into())
            .debug(settings.allow_local)
            .http_fetch_limit(50)
            .request_timeout(Duration::from_secs(10))
            .url_verifier(Box::new(PolicyVerifier(policy.clone())))
            .http_signature_compat(true)
            .signed_fetch_actor(&signer)
            .build()
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Federation(Arc::new(Inner {
            settings,
            backend,
            hub,
            key,
            public_pem,
            policy,
            config,
            client,
            changes: tx,
            changes_rx: std::sync::Mutex::new(Some(rx)),
            queue_wakeup: Notify::new(),
        })))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.0.backend
    }

    pub(crate) fn data(&self) -> Data<Store> {
        self.0.config.to_request_data()
    }

    fn base(&self) -> String {
        format!("{}{}/ap", self.0.settings.origin, self.0.settings.prefix)
    }

    /// The id of a local actor.
    pub fn actor_id(&self, r: LocalRef) -> Url {
        let base = self.base();
        let s = match r {
            LocalRef::Instance => format!("{base}/instance"),
            LocalRef::User(u) => format!("{base}/users/{u}"),
            LocalRef::Repo(u) => format!("{base}/repos/{u}"),
            LocalRef::Unit(u) => format!("{base}/units/{u}"),
        };
        Url::parse(&s).expect("origin was validated")
    }

    /// The local actor an id names, if it is one of ours.
    pub fn local_ref(&self, id: &str) -> Option<LocalRef> {
        let rest = id.strip_prefix(&self.base())?.strip_prefix('/')?;
        if rest == "instance" {
            return Some(LocalRef::Instance);
        }
        let (kind, uuid) = rest.split_once('/')?;
        let uuid = uuid::Uuid::parse_str(uuid).ok()?;
        match kind {
            "users" => Some(LocalRef::User(uuid)),
            "repos" => Some(LocalRef::Repo(uuid)),
            "units" => Some(LocalRef::Unit(uuid)),
            _ => None,
        }
    }

    pub fn shared_inbox(&self) -> Url {
        Url::parse(&format!("{}/inbox", self.base())).expect("origin was validated")
    }

    pub(crate) fn new_activity_id(&self) -> Url {
        Url::parse(&format!(
            "{}/activities/{}",
            self.base(),
            uuid::Uuid::now_v7()
        ))
        .expect("origin was validated")
    }

    /// The actor document of a local actor, or `None` when it is missing or not public.
    pub async fn actor_document(&self, r: LocalRef) -> FedResult<Option<Value>> {
        let Some(obj) = self.0.backend.local_object(r).await? else {
            return Ok(None);
        };
        Ok(Some(self.document_of(r, &obj)))
    }

    fn document_of(&self, r: LocalRef, obj: &LocalObject) -> Value {
        let id = self.actor_id(r);
        let shared = self.shared_inbox();
        let (owner, repo) = match obj {
            LocalObject::Repo(repo) => (Some(self.actor_id(LocalRef::User(repo.creator))), None),
            LocalObject::Unit(unit) => (
                Some(self.actor_id(LocalRef::User(unit.creator))),
                unit.repo.map(|r| self.actor_id(LocalRef::Repo(r))),
            ),
            _ => (None, None),
        };
        let mut doc = documents::actor_document(
            obj,
            ActorUrls {
                id: &id,
                shared_inbox: &shared,
            },
            &self.0.public_pem,
            owner.as_ref(),
            repo.as_ref(),
            &self.0.settings.domain,
        );
        // the instance actor links the instance's capacity and grade for federated peers
        if let (LocalObject::Instance { .. }, Some(url), Some(map)) =
            (obj, &self.0.settings.load_limit_url, doc.as_object_mut())
        {
            map.insert("loadLimit".into(), Value::String(url.clone()));
        }
        doc
    }

    /// Whether the federation policy lets `domain` federate with us.
    pub fn permits(&self, domain: &str) -> bool {
        self.0.policy.read().expect("policy lock").permits(domain)
    }

    /// Re-reads the federation list after an admin changed it, and drops what a newly denied
    /// domain left behind (hub entries, remote objects, followers, pending deliveries).
    pub async fn reload_policy(&self) -> FedResult<()> {
        let list = self.0.backend.domain_list(ListKind::Federation).await?;
        *self.0.policy.write().expect("policy lock") = list;
        let b = &self.0.backend;
        let mut domains: Vec<String> = Vec::new();
        for f in b
            .following_list(self.actor_id(LocalRef::Instance).as_str())
            .await?
        {
            domains.push(f.target_domain);
        }
        domains.extend(b.follower_domains().await?);
        let mut offset = 0;
        loop {
            let page = b.remote_objects(offset, 500).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            domains.extend(page.into_iter().map(|o| o.domain));
        }
        domains.sort();
        domains.dedup();
        for d in domains.into_iter().filter(|d| !self.permits(d)) {
            self.purge_domain(&d).await?;
        }
        Ok(())
    }

    async fn purge_domain(&self, domain: &str) -> FedResult<()> {
        let b = &self.0.backend;
        b.remove_remote_objects_on(domain).await?;
        b.remove_followers_on(domain).await?;
        b.dead_letter_domain(domain, "domain denied by policy")
            .await?;
        let hub = self.0.hub.clone();
        let d = domain.to_string();
        tokio::task::spawn_blocking(move || hub.remove_instance(&d))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??;
        Ok(())
    }

    /// Fetches a remote actor (signed with the instance key), from the cache when fresh.
    pub async fn fetch_actor(&self, id: &Url) -> FedResult<ApActor> {
        self.check_remote_url(id)?;
        let actor = ObjectId::<ApActor>::from(id.clone())
            .dereference(&self.data())
            .await?;
        Ok(actor)
    }

    /// Fetches a remote actor again, bypassing the cache (after a signature failed with a
    /// cached key: the key may have been rotated).
    pub async fn refetch_actor(&self, id: &Url) -> FedResult<ApActor> {
        self.check_remote_url(id)?;
        let actor = ObjectId::<ApActor>::from(id.clone())
            .dereference_forced(&self.data())
            .await?;
        Ok(actor)
    }

    /// Scheme, host and port rules for URLs we are about to contact, plus the domain policy.
    pub fn check_remote_url(&self, url: &Url) -> FedResult<String> {
        let local = self.0.settings.allow_local;
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            _ => {
                return Err(FedError::Invalid(format!(
                    "{url}: only https URLs federate (set PU_ALLOW_LOCAL_NETWORK=true for local trials)"
                )))
            }
        }
        if url.domain().is_none() && !local {
            return Err(FedError::Invalid(format!(
                "{url}: an IP address is not an instance domain (PU_ALLOW_LOCAL_NETWORK=true allows it for local trials)"
            )));
        }
        if url.port().is_some() && !local {
            return Err(FedError::Invalid(format!(
                "{url}: explicit ports only federate with PU_ALLOW_LOCAL_NETWORK=true"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FedError::Invalid(format!(
                "{url}: credentials in URLs are refused"
            )));
        }
        let domain = domain_of(url).ok_or_else(|| FedError::Invalid(format!("{url}: no host")))?;
        if !self.permits(&domain) {
            return Err(FedError::Denied(domain));
        }
        Ok(domain)
    }

    /// Searches the hub index.
    pub async fn search(&self, q: HubQuery) -> FedResult<HubPage> {
        let hub = self.0.hub.clone();
        Ok(tokio::task::spawn_blocking(move || hub.search(&q))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??)
    }

    /// Rebuilds the hub index from local public objects and stored remote objects.
    pub async fn reindex(
        &self,
        mut progress: impl FnMut(usize) + Send + 'static,
    ) -> FedResult<usize> {
        let b = &self.0.backend;
        let mut docs = Vec::new();
        let mut offset = 0;
        loop {
            let (_, page) = b.public_objects(offset, 1000).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            for obj in &page {
                let r = match obj {
                    LocalObject::Repo(x) => LocalRef::Repo(x.uuid),
                    LocalObject::Unit(x) => LocalRef::Unit(x.uuid),
                    _ => continue,
                };
                let id = self.actor_id(r);
                docs.extend(documents::local_hub_doc(obj, &id, &self.0.settings.domain));
            }
        }
        let mut offset = 0;
        loop {
            let page = b.remote_objects(offset, 1000).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as i64;
            docs.extend(
                page.iter()
                    .filter(|o| self.permits(&o.domain))
                    .filter_map(|o| documents::hub_doc(&o.document)),
            );
        }
        let hub = self.0.hub.clone();
        Ok(
            tokio::task::spawn_blocking(move || hub.rebuild(docs.into_iter(), &mut progress))
                .await
                .map_err(|e| FedError::Invalid(e.to_string()))??,
        )
    }

    pub(crate) fn key(&self) -> &RsaPrivateKey {
        &self.0.key
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.0.client
    }

    pub(crate) fn queue_wakeup(&self) -> &Notify {
        &self.0.queue_wakeup
    }
}

/// Resolves peers' names and refuses local addresses (`Settings::local_address`), naming the
/// address class; reqwest connects only to the addresses it returns (no second lookup).
struct PolicyResolver(fn(std::net::IpAddr) -> Option<&'static str>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let classify = self.0;
        let host = name.as_str().trim_end_matches('.').to_string();
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            let addrs: Vec<std::net::SocketAddr> =
                tokio::time::timeout(Duration::from_secs(5), lookup)
                    .await
                    .map_err(|_| FedError::Remote(format!("{host}: DNS timed out")))??
                    .collect();
            for a in &addrs {
                if let Some(class) = classify(a.ip()) {
                    return Err(FedError::Invalid(format!(
                        "{host} resolves to {}, a {class} address (PU_ALLOW_LOCAL_NETWORK=true allows local addresses for trials)",
                        a.ip()
                    ))
                    .into());
                }
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn http_client(settings: &Settings) -> FedResult<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!(
            "Pepeunit/",
            env!("CARGO_PKG_VERSION"),
            " (ActivityPub)"
        ));
    if !settings.allow_local {
        // a proxy would resolve names itself, past the resolver that refuses local addresses
        builder = builder
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(settings.local_address)));
    }
    builder
        .build()
        .map_err(|e| FedError::Invalid(format!("HTTP client: {e}")))
}

/// A digest of an actor document without its `updated` time: equal digests mean followers
/// have nothing new to learn.
fn fingerprint(document: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut doc = document.clone();
    if let Some(map) = doc.as_object_mut() {
        map.remove("updated");
    }
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// An error with its causes (reqwest's own message hides why a connection was refused).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads at most `max` bytes of a response body.
pub(crate) async fn read_limited(mut res: reqwest::Response, max: usize) -> FedResult<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| FedError::Remote(e.to_string()))?
    {
        if out.len() + chunk.len() > max {
            return Err(FedError::Remote(format!(
                "response larger than {max} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
