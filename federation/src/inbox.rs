//! Incoming activities. Order of checks: the signature's key owner is on a permitted domain,
//! the owner's key verifies the signature over the request (and the digest the body), the
//! activity's actor is the key owner, then the activity is read. Answers are 2xx, or a 4xx
//! that says what was wrong; storage failures are the only 5xx.

use serde_json::{json, Value};
use url::Url;

use crate::backend::{Following, LocalRef, RemoteObject};
use crate::core::{ApActor, FedError, Federation};
use crate::documents::{self, domain_of, id_of, str_field};
use crate::hub::HubDoc;
use crate::signing::{SignatureError, SignedRequest};

/// An inbox answer: status and a short reason.
#[derive(Debug)]
pub struct InboxReply {
    pub status: u16,
    pub message: String,
}

impl InboxReply {
    fn new(status: u16, message: impl Into<String>) -> Self {
        InboxReply {
            status,
            message: message.into(),
        }
    }
}

impl From<FedError> for InboxReply {
    fn from(e: FedError) -> Self {
        match e {
            FedError::Backend(_) | FedError::Hub(_) => {
                tracing::error!("inbox: {e}");
                InboxReply::new(500, "internal error")
            }
            FedError::Denied(_) => InboxReply::new(403, e.to_string()),
            FedError::Remote(_) | FedError::Invalid(_) => InboxReply::new(400, e.to_string()),
        }
    }
}

/// Largest activity we read.
pub const MAX_ACTIVITY_BYTES: usize = 256 * 1024;

impl Federation {
    /// Checks who signed a request; returns the verified actor. Used by the inbox (with the
    /// body) and by authorized fetch (GETs, without).
    pub async fn verify_request(&self, req: &SignedRequest<'_>) -> Result<ApActor, InboxReply> {
        let owner = req
            .key_owner()
            .map_err(|e| InboxReply::new(401, e.to_string()))?;
        let domain = domain_of(&owner).unwrap_or_default();
        if !self.permits(&domain) {
            return Err(InboxReply::new(403, format!("domain {domain} is denied")));
        }
        if self.local_ref(owner.as_str()).is_some() {
            return Err(InboxReply::new(401, "signature claims a local key"));
        }
        // everything that needs no key first, so that junk never makes us fetch anything
        req.precheck(&self.settings().domain)
            .map_err(|e| InboxReply::new(401, e.to_string()))?;
        let actor = self
            .fetch_actor(&owner)
            .await
            .map_err(|e| InboxReply::new(401, format!("signer's key cannot be fetched: {e}")))?;
        match req.verify(&actor.actor.public_key_pem) {
            Ok(()) => Ok(actor),
            Err(SignatureError::Invalid) => {
                // The key may have been rotated since we cached the actor.
                let fresh = self.refetch_actor(&owner).await.map_err(|e| {
                    InboxReply::new(401, format!("signer's key cannot be fetched: {e}"))
                })?;
                req.verify(&fresh.actor.public_key_pem)
                    .map_err(|e| InboxReply::new(401, e.to_string()))?;
                Ok(fresh)
            }
            Err(e) => Err(InboxReply::new(401, e.to_string())),
        }
    }

    /// Handles one POST to an inbox.
    pub async fn receive(&self, req: SignedRequest<'_>) -> InboxReply {
        let body = req.body.unwrap_or_default();
        if body.len() > MAX_ACTIVITY_BYTES {
            return InboxReply::new(413, "activity too large");
        }
        let actor = match self.verify_request(&req).await {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let activity: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return InboxReply::new(400, "activity must be a JSON object"),
            Err(e) => return InboxReply::new(400, format!("activity is not JSON: {e}")),
        };
        if id_of(activity.get("actor").unwrap_or(&Value::Null)) != Some(actor.actor.id.as_str()) {
            return InboxReply::new(401, "activity actor is not the signer");
        }
        let activity_id = str_field(&activity, "id").to_string();
        match Url::parse(&activity_id) {
            Ok(u) if domain_of(&u).as_deref() == Some(actor.actor.domain.as_str()) => {}
            _ => return InboxReply::new(400, "activity id must be a URL on the actor's domain"),
        }
        let kind = str_field(&activity, "type").to_string();
        if !matches!(
            kind.as_str(),
            "Follow" | "Accept" | "Reject" | "Undo" | "Create" | "Update" | "Delete" | "Move"
        ) {
            return InboxReply::new(400, format!("unsupported activity type {kind:?}"));
        }
        match self.backend().first_sight(&activity_id).await {
            Ok(true) => {}
            Ok(false) => return InboxReply::new(202, "already received"),
            Err(e) => return FedError::from(e).into(),
        }
        let result = match kind.as_str() {
            "Follow" => self.on_follow(&actor, &activity).await,
            "Undo" => self.on_undo(&actor, &activity).await,
            "Accept" | "Reject" => self.on_answer(&actor, &activity, &kind).await,
            "Create" | "Update" => self.on_upsert(&actor, &activity).await,
            "Move" => self.on_move(&actor, &activity).await,
            _ => self.on_delete(&actor, &activity).await,
        };
        let reply = result.unwrap_or_else(InboxReply::from);
        if reply.status >= 400 {
            // refused or failed: a redelivery (after the cause is gone) is handled afresh
            if let Err(e) = self.backend().forget_sight(&activity_id).await {
                tracing::warn!("inbox: {e}");
            }
        }
        reply
    }

    async fn on_follow(&self, actor: &ApActor, activity: &Value) -> Result<InboxReply, FedError> {
        let object = id_of(activity.get("object").unwrap_or(&Value::Null)).unwrap_or_default();
        let Some(target) = self.local_ref(object) else {
            return Ok(InboxReply::new(
                422,
                "Follow object is not an actor of this instance",
            ));
        };
        let me = self.actor_id(target);
        let exists = self.backend().local_object(target).await?.is_some();
        let follower = actor.actor.id.clone();
        let reply_to = [actor.delivery_inbox().to_string()];
        let mut new_follower = false;
        // one backfill per receiving server: a domain whose inbox already follows the
        // instance has had it (N actors of one server must not cost N walks over everything)
        let inbox_host = |i: &str| Url::parse(i).ok().and_then(|u| domain_of(&u));
        let served_before = target == LocalRef::Instance
            && self
                .backend()
                .follower_inboxes(&[me.to_string()])
                .await?
                .iter()
                .any(|i| {
                    inbox_host(i).is_some() && inbox_host(i) == inbox_host(actor.delivery_inbox())
                });
        let kind = if exists && !matches!(target, LocalRef::Unit(_)) {
            let follow_id = str_field(activity, "id");
            new_follower = self
                .backend()
                .add_follower(me.as_str(), &follower, actor.delivery_inbox(), follow_id)
                .await?;
            "Accept"
        } else {
            "Reject"
        };
        let answer = documents::activity(
            kind,
            &self.new_activity_id(),
            &me,
            activity.clone(),
            &[follower.as_str()],
        );
        self.enqueue(&me, &answer, &reply_to).await?;
        if new_follower && target == LocalRef::Instance && !served_before {
            // in the background: the request must not wait for (or be able to cut short) a
            // walk over every public object; a repeated Follow does not start another one
            let fed = self.clone();
            let inbox = reply_to[0].clone();
            tokio::spawn(async move {
                if let Err(e) = fed.backfill(&inbox).await {
                    tracing::warn!("federation: backfill to {inbox} failed: {e}");
                }
            });
        }
        Ok(InboxReply::new(202, kind))
    }

    /// Sends a new instance follower a Create for every public Repo and Unit.
    async fn backfill(&self, inbox: &str) -> Result<(), FedError> {
        let me = self.actor_id(LocalRef::Instance);
        let followers = format!("{me}/followers");
        let mut offset = 0;
        loop {
            let (_, page) = self.backend().public_objects(offset, 200).await?;
            if page.is_empty() {
                return Ok(());
            }
            offset += page.len() as i64;
            for obj in page {
                let r = match &obj {
                    crate::backend::LocalObject::Repo(x) => LocalRef::Repo(x.uuid),
                    crate::backend::LocalObject::Unit(x) => LocalRef::Unit(x.uuid),
                    _ => continue,
                };
                let doc = self.actor_document(r).await?.unwrap_or(Value::Null);
                if doc.is_null() {
                    continue;
                }
                let create = documents::activity(
                    "Create",
                    &self.new_activity_id(),
                    &me,
                    doc,
                    &[documents::PUBLIC, &followers],
                );
                self.enqueue(&me, &create, &[inbox.to_string()]).await?;
            }
        }
    }

    async fn on_undo(&self, actor: &ApActor, activity: &Value) -> Result<InboxReply, FedError> {
        let object = activity.get("object").unwrap_or(&Value::Null);
        if let Value::String(follow_id) = object {
            // Undo naming the Follow by id (bovine does this)
            let removed = self
                .backend()
                .remove_follow(&actor.actor.id, follow_id)
                .await?;
            return Ok(if removed {
                InboxReply::new(202, "unfollowed")
            } else {
                InboxReply::new(422, "Undo of an activity we do not know")
            });
        }
        if str_field(object, "type") != "Follow" {
            return Ok(InboxReply::new(422, "only Undo of a Follow is supported"));
        }
        if id_of(object.get("actor").unwrap_or(&Value::Null)) != Some(actor.actor.id.as_str()) {
            return Ok(InboxReply::new(403, "cannot undo another actor's Follow"));
        }
        let target = id_of(object.get("object").unwrap_or(&Value::Null)).unwrap_or_default();
        if self.local_ref(target).is_none() {
            return Ok(InboxReply::new(
                422,
                "Follow object is not an actor of this instance",
            ));
        }
        self.backend()
            .remove_follower(target, &actor.actor.id)
            .await?;
        Ok(InboxReply::new(202, "unfollowed"))
    }

    async fn on_answer(
        &self,
        actor: &ApActor,
        activity: &Value,
        kind: &str,
    ) -> Result<InboxReply, FedError> {
        let object = activity.get("object").unwrap_or(&Value::Null);
        let follow_id = id_of(object).unwrap_or_default();
        let state = if kind == "Accept" {
            "Accepted"
        } else {
            "Rejected"
        };
        let signer = actor.actor.id.as_str();
        // only the followed actor may answer, and only a follow still waiting for its answer
        if self
            .backend()
            .answer_follow(follow_id, signer, state)
            .await?
        {
            self.after_answer(signer, state).await?;
            return Ok(InboxReply::new(202, state));
        }
        // Some servers answer with a new id for our Follow: match on who follows whom.
        let follower = id_of(object.get("actor").unwrap_or(&Value::Null)).unwrap_or_default();
        if self.local_ref(follower).is_some() {
            if let Some(f) = self.backend().following(follower, signer).await? {
                if self
                    .backend()
                    .answer_follow(&f.follow_id, signer, state)
                    .await?
                {
                    self.after_answer(signer, state).await?;
                    return Ok(InboxReply::new(202, state));
                }
            }
        }
        Ok(InboxReply::new(
            422,
            format!("{kind} of no pending Follow of ours"),
        ))
    }

    /// After a remote actor accepted a user's follow of a Repo: the Repo joins the hub.
    async fn after_answer(&self, target: &str, state: &str) -> Result<(), FedError> {
        if state != "Accepted" {
            return Ok(());
        }
        let Some(actor) = self.backend().remote_actor(target).await? else {
            return Ok(());
        };
        let Some(doc) = documents::hub_doc(&actor.document) else {
            return Ok(());
        };
        self.store_remote(doc, actor.document).await
    }

    /// Keeps a remote Repo or Unit: its document in the store, its entry in the hub.
    async fn store_remote(&self, doc: HubDoc, document: Value) -> Result<(), FedError> {
        let remote = RemoteObject {
            id: doc.url.clone(),
            kind: doc.kind,
            domain: doc.instance.clone(),
            document,
            updated_at: chrono::Utc::now().to_rfc3339(),
        };
        self.backend().upsert_remote_object(&remote).await?;
        let hub = self.hub().clone();
        tokio::task::spawn_blocking(move || hub.upsert(doc))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??;
        Ok(())
    }

    /// Whether this instance follows (or waits to follow) `domain`'s hub feed. Pending counts:
    /// the backfill may overtake the Accept.
    async fn follows_domain(&self, domain: &str) -> Result<bool, FedError> {
        let me = self.actor_id(LocalRef::Instance);
        Ok(self
            .backend()
            .following_list(me.as_str())
            .await?
            .iter()
            .any(|f: &Following| {
                f.target_domain == domain && (f.state == "Accepted" || f.state == "Pending")
            }))
    }

    /// Whether a user of ours follows `actor` (users follow remote Repos).
    async fn someone_follows(&self, actor: &str) -> Result<bool, FedError> {
        Ok(self
            .backend()
            .followers_of_remote(actor)
            .await?
            .iter()
            .any(|f| f.state == "Accepted"))
    }

    async fn on_upsert(&self, actor: &ApActor, activity: &Value) -> Result<InboxReply, FedError> {
        let object = activity.get("object").unwrap_or(&Value::Null);
        let Some(doc) = documents::hub_doc(object) else {
            return Ok(InboxReply::new(
                422,
                "only Repository and Service objects with an id are accepted",
            ));
        };
        if doc.instance != actor.actor.domain {
            return Ok(InboxReply::new(403, "object is not on the actor's domain"));
        }
        // a user's follow of a Repo admits that Repo's own document only; an instance follow
        // admits every object of the instance
        let followed_object =
            doc.url == actor.actor.id && self.someone_follows(&actor.actor.id).await?;
        if !followed_object && !self.follows_domain(&doc.instance).await? {
            return Ok(InboxReply::new(
                403,
                "neither this instance nor its users follow the sender",
            ));
        }
        if object.get("movedTo").is_some() {
            // a moved Unit is found at its new instance, not here
            self.forget_remote(doc.url.clone()).await?;
            return Ok(InboxReply::new(202, "moved"));
        }
        self.store_remote(doc, object.clone()).await?;
        Ok(InboxReply::new(202, "stored"))
    }

    async fn on_delete(&self, actor: &ApActor, activity: &Value) -> Result<InboxReply, FedError> {
        let object = id_of(activity.get("object").unwrap_or(&Value::Null)).unwrap_or_default();
        let Ok(url) = Url::parse(object) else {
            return Ok(InboxReply::new(400, "Delete object must be an id"));
        };
        if domain_of(&url).as_deref() != Some(actor.actor.domain.as_str()) {
            return Ok(InboxReply::new(403, "object is not on the actor's domain"));
        }
        let key = url.to_string();
        self.forget_remote(key).await?;
        Ok(InboxReply::new(202, "deleted"))
    }

    /// Drops a remote object: its stored document and its hub entry.
    async fn forget_remote(&self, key: String) -> Result<(), FedError> {
        self.backend().remove_remote_object(&key).await?;
        let hub = self.hub().clone();
        tokio::task::spawn_blocking(move || hub.remove(&key))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??;
        Ok(())
    }

    /// A remote Unit moved to another instance: it leaves the hub here (its new instance
    /// publishes it from there). Only the moving actor itself may say so.
    async fn on_move(&self, actor: &ApActor, activity: &Value) -> Result<InboxReply, FedError> {
        let object = id_of(activity.get("object").unwrap_or(&Value::Null)).unwrap_or_default();
        if object != actor.actor.id {
            return Ok(InboxReply::new(403, "only an actor can move itself"));
        }
        if id_of(activity.get("target").unwrap_or(&Value::Null))
            .and_then(|t| Url::parse(t).ok())
            .is_none()
        {
            return Ok(InboxReply::new(400, "Move needs a target URL"));
        }
        let key = object.to_string();
        self.forget_remote(key).await?;
        Ok(InboxReply::new(202, "moved"))
    }
}

/// `{"error": ...}` body of a reply.
pub fn reply_body(reply: &InboxReply) -> Value {
    json!({ "detail": reply.message })
}
