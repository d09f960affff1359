//! Incoming Move: a remote Unit moved to another instance and leaves the hub here.

use serde_json::Value;
use url::Url;

use super::InboxReply;
use crate::core::{ApActor, FedError, Federation};
use crate::documents::id_of;

impl Federation {
    pub(super) async fn on_move(
        &self,
        actor: &ApActor,
        activity: &Value,
    ) -> Result<InboxReply, FedError> {
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
