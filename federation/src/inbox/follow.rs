//! Incoming Follow (of the instance's hub feed, a Repo or a Unit), with the backfill a new
//! instance follower gets, and the Undo of a Follow.

use serde_json::Value;
use url::Url;

use super::InboxReply;
use crate::backend::LocalRef;
use crate::core::{ApActor, FedError, Federation};
use crate::documents::{self, domain_of, id_of, str_field};

impl Federation {
    pub(super) async fn on_follow(
        &self,
        actor: &ApActor,
        activity: &Value,
    ) -> Result<InboxReply, FedError> {
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
    pub(super) async fn backfill(&self, inbox: &str) -> Result<(), FedError> {
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

    pub(super) async fn on_undo(
        &self,
        actor: &ApActor,
        activity: &Value,
    ) -> Result<InboxReply, FedError> {
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
}
