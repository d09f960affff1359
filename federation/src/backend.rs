//! The narrow interface through which federation reaches the server's storage. The server crate
//! implements [`Backend`] over its database; federation never sees SQL or the server's rows.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hub::HubKind;
use crate::policy::{DomainList, ListKind};

pub type BackendResult<T> = Result<T, BackendError>;

#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct BackendError(pub String);

/// A local actor, named by kind and uuid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalRef {
    Instance,
    User(uuid::Uuid),
    Repo(uuid::Uuid),
    Unit(uuid::Uuid),
}

/// What a public Repo publishes (a ForgeFed `Repository`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoData {
    pub uuid: uuid::Uuid,
    pub name: String,
    pub description: String,
    pub readme: String,
    /// Empty for a private registry.
    pub clone_url: String,
    pub platform: String,
    pub default_branch: Option<String>,
    pub creator: uuid::Uuid,
    pub created: String,
    pub updated: String,
}

/// One node topic of a Unit, as summarised on its actor.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeSummary {
    pub topic: String,
    /// `Input` or `Output`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a public Unit publishes (a `Service` actor).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnitData {
    pub uuid: uuid::Uuid,
    pub name: String,
    pub description: String,
    /// The Repo it runs, when that Repo is Public too.
    pub repo: Option<uuid::Uuid>,
    /// The Repo's name and platform, for the hub.
    pub repo_name: String,
    pub platform: String,
    pub firmware_version: Option<String>,
    pub nodes: Vec<NodeSummary>,
    pub creator: uuid::Uuid,
    pub created: String,
    pub updated: String,
    /// The Unit's actor on the instance it moved to (`movedTo`).
    pub moved_to: Option<String>,
}

/// Public data of a local actor. Repos and Units exist here only while they are Public.
#[derive(Clone, Debug)]
pub enum LocalObject {
    Instance {
        name: String,
        summary: String,
    },
    User {
        uuid: uuid::Uuid,
        login: String,
        created: String,
    },
    Repo(RepoData),
    Unit(UnitData),
}

impl LocalObject {
    pub fn hub_kind(&self) -> Option<HubKind> {
        match self {
            LocalObject::Repo(_) => Some(HubKind::Repo),
            LocalObject::Unit(_) => Some(HubKind::Unit),
            _ => None,
        }
    }
}

/// A remote actor we fetched: the fields we use plus the whole document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteActor {
    pub id: String,
    pub kind: String,
    pub domain: String,
    pub inbox: String,
    pub shared_inbox: Option<String>,
    pub public_key_pem: String,
    pub document: serde_json::Value,
    /// RFC 3339.
    pub fetched_at: String,
}

/// A remote public Repo or Unit known to the hub.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteObject {
    pub id: String,
    pub kind: HubKind,
    pub domain: String,
    pub document: serde_json::Value,
    pub updated_at: String,
}

/// A follow this instance (or one of its users) made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Following {
    pub follower: String,
    pub target: String,
    pub target_domain: String,
    pub inbox: String,
    pub follow_id: String,
    /// `Pending`, `Accepted` or `Rejected`.
    pub state: String,
    pub created_at: String,
}

/// One queued delivery of an activity to an inbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub activity_id: String,
    /// The actor whose key id signs the request.
    pub actor: String,
    pub inbox: String,
    pub domain: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    /// `Pending` or `Dead`.
    pub state: String,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// Counts behind NodeInfo.
#[derive(Clone, Debug, Default)]
pub struct UsageCounts {
    pub users: i64,
    pub public_repos: i64,
    pub public_units: i64,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The actor's public data; `None` when it does not exist or is not public.
    async fn local_object(&self, r: LocalRef) -> BackendResult<Option<LocalObject>>;
    async fn user_by_login(&self, login: &str) -> BackendResult<Option<uuid::Uuid>>;
    /// Public Repos and Units in a stable order, `offset`..`offset+limit`, and their total.
    async fn public_objects(
        &self,
        offset: i64,
        limit: i64,
    ) -> BackendResult<(i64, Vec<LocalObject>)>;
    async fn usage(&self) -> BackendResult<UsageCounts>;

    /// The instance key pair (PKCS#8 private PEM, SPKI public PEM), if one was stored.
    async fn instance_key(&self) -> BackendResult<Option<(String, String)>>;
    /// Stores the key pair unless one exists; returns the one that is stored.
    async fn store_instance_key(
        &self,
        private: &str,
        public: &str,
    ) -> BackendResult<(String, String)>;

    /// The fingerprint of a local object's document as last federated, or `None`.
    async fn published(&self, actor: &str) -> BackendResult<Option<String>>;
    async fn set_published(&self, actor: &str, mark: Option<&str>) -> BackendResult<()>;
    /// Actor ids of every published local object (for the reconcile sweep).
    async fn published_all(&self) -> BackendResult<Vec<String>>;

    /// Records a follower; `true` when it was not following `local` before.
    async fn add_follower(
        &self,
        local: &str,
        follower: &str,
        inbox: &str,
        follow_id: &str,
    ) -> BackendResult<bool>;
    async fn remove_follower(&self, local: &str, follower: &str) -> BackendResult<()>;
    /// Removes the follow `follow_id` made by `follower`; `false` when there is none.
    async fn remove_follow(&self, follower: &str, follow_id: &str) -> BackendResult<bool>;
    async fn followers(
        &self,
        local: &str,
        offset: i64,
        limit: i64,
    ) -> BackendResult<(i64, Vec<String>)>;
    /// Distinct inboxes of the followers of any of `locals`.
    async fn follower_inboxes(&self, locals: &[String]) -> BackendResult<Vec<String>>;
    /// Removes every follower on exactly this domain; returns how many.
    async fn remove_followers_on(&self, domain: &str) -> BackendResult<u64>;
    /// Distinct domains of all followers.
    async fn follower_domains(&self) -> BackendResult<Vec<String>>;

    async fn upsert_following(&self, f: &Following) -> BackendResult<()>;
    async fn following(&self, follower: &str, target: &str) -> BackendResult<Option<Following>>;
    async fn set_following_state(&self, follow_id: &str, state: &str) -> BackendResult<bool>;
    /// Sets the answer of a Pending follow of `target`; `false` when there is no such follow.
    async fn answer_follow(
        &self,
        follow_id: &str,
        target: &str,
        state: &str,
    ) -> BackendResult<bool>;
    async fn following_list(&self, follower: &str) -> BackendResult<Vec<Following>>;
    /// Follows of a remote actor by any local actor.
    async fn followers_of_remote(&self, target: &str) -> BackendResult<Vec<Following>>;

    async fn remote_actor(&self, id: &str) -> BackendResult<Option<RemoteActor>>;
    async fn store_remote_actor(&self, actor: &RemoteActor) -> BackendResult<()>;

    async fn upsert_remote_object(&self, object: &RemoteObject) -> BackendResult<()>;
    async fn remove_remote_object(&self, id: &str) -> BackendResult<bool>;
    async fn remove_remote_objects_on(&self, domain: &str) -> BackendResult<u64>;
    async fn remote_objects(&self, offset: i64, limit: i64) -> BackendResult<Vec<RemoteObject>>;

    /// Records an incoming activity id; `false` when it was seen before.
    async fn first_sight(&self, activity_id: &str) -> BackendResult<bool>;
    /// Forgets an activity id whose handling failed, so a redelivery is handled again.
    async fn forget_sight(&self, activity_id: &str) -> BackendResult<()>;

    async fn enqueue(&self, deliveries: &[Delivery]) -> BackendResult<()>;
    /// Pending deliveries due at `now` (RFC 3339), oldest first.
    async fn due_deliveries(&self, now: &str, limit: i64) -> BackendResult<Vec<Delivery>>;
    async fn delivered(&self, id: &str) -> BackendResult<()>;
    async fn retry_later(
        &self,
        id: &str,
        attempts: i64,
        next: &str,
        error: &str,
    ) -> BackendResult<()>;
    async fn dead_letter(&self, id: &str, attempts: i64, error: &str) -> BackendResult<()>;
    /// Dead-letters every pending delivery to exactly this domain.
    async fn dead_letter_domain(&self, domain: &str, error: &str) -> BackendResult<u64>;
    async fn deliveries(&self, state: Option<&str>, limit: i64) -> BackendResult<Vec<Delivery>>;

    async fn domain_list(&self, kind: ListKind) -> BackendResult<DomainList>;
}
