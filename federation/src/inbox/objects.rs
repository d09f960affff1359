//! Incoming Create, Update and Delete of remote Repos and Units: whether this instance wants
//! the object (it follows the domain, or a user follows the actor), and keeping or dropping
//! its document and hub entry.

use serde_json::Value;
use url::Url;

use super::InboxReply;
use crate::backend::{Following, LocalRef, RemoteObject};
use crate::core::{ApActor, FedError, Federation};
use crate::documents::{self, domain_of, id_of};
use crate::hub::HubDoc;

impl Federation {
    pub(super) async fn store_remote(&self, doc: HubDoc, document: Value) -> Result<(), FedError> {
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
    pub(super) async fn follows_domain(&self, domain: &str) -> Result<bool, FedError> {
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
    pub(super) async fn someone_follows(&self, actor: &str) -> Result<bool, FedError> {
        Ok(self
            .backend()
            .followers_of_remote(actor)
            .await?
            .iter()
            .any(|f| f.state == "Accepted"))
    }

    pub(super) async fn on_upsert(
        &self,
        actor: &ApActor,
        activity: &Value,
    ) -> Result<InboxReply, FedError> {
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

    pub(super) async fn on_delete(
        &self,
        actor: &ApActor,
        activity: &Value,
    ) -> Result<InboxReply, FedError> {
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
    pub(super) async fn forget_remote(&self, key: String) -> Result<(), FedError> {
        self.backend().remove_remote_object(&key).await?;
        let hub = self.hub().clone();
        tokio::task::spawn_blocking(move || hub.remove(&key))
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))??;
        Ok(())
    }
}
