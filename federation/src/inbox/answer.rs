//! Incoming Accept and Reject: a remote actor's answer to a follow we sent.

use serde_json::Value;

use super::InboxReply;
use crate::core::{ApActor, FedError, Federation};
use crate::documents::{self, id_of};

impl Federation {
    pub(super) async fn on_answer(
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
    pub(super) async fn after_answer(&self, target: &str, state: &str) -> Result<(), FedError> {
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
}
