//! Incoming activities. Order of checks: the signature's key owner is on a permitted domain,
//! the owner's key verifies the signature over the request (and the digest the body), the
//! activity's actor is the key owner, then the activity is read. Answers are 2xx, or a 4xx
//! that says what was wrong; storage failures are the only 5xx.
//!
//! One file per incoming activity kind: `follow` (Follow, and the Undo of a Follow),
//! `answer` (Accept and Reject of our follows), `objects` (Create, Update and Delete of remote
//! Repos and Units), `moves` (Move of a remote Unit). This file checks the request and
//! dispatches.

mod answer;
mod follow;
mod moves;
mod objects;

use serde_json::{json, Value};
use url::Url;

use crate::core::{ApActor, FedError, Federation};
use crate::documents::{domain_of, has_nul, id_of, str_field};
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
        if has_nul(&activity) {
            return InboxReply::new(400, "activity contains a NUL character");
        }
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
}

/// `{"error": ...}` body of a reply.
pub fn reply_body(reply: &InboxReply) -> Value {
    json!({ "detail": reply.message })
}
