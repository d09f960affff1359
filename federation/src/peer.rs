//! Signed requests between two Pepeunit instances that are not activities: moving a Unit,
//! issuing bridge credentials. The caller signs as its instance actor (the same key and
//! draft-cavage signature as deliveries); the callee checks the signature with
//! [`Federation::verify_peer`] and learns which instance asked. URLs go through the same
//! scheme, address and domain-policy checks as every other outgoing request.

use serde_json::Value;
use url::Url;

use crate::backend::LocalRef;
use crate::core::{error_chain, read_limited, FedError, FedResult, Federation};
use crate::documents::domain_of;
use crate::inbox::InboxReply;
use crate::signing::{main_key_id, sign, SignedRequest};

/// Largest answer read from a peer.
pub const MAX_PEER_REPLY: usize = 4 * 1024 * 1024;

/// A peer's answer: status and its JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct PeerReply {
    pub status: u16,
    pub body: Value,
}

impl PeerReply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The peer's own error text (`detail` or `error`), else the status.
    pub fn reason(&self) -> String {
        let text = ["detail", "error", "message"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_default();
        if text.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {text}", self.status)
        }
    }
}

/// The instance that signed a request.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `host[:port]`.
    pub domain: String,
    /// Its instance actor id.
    pub actor: Url,
}

impl Federation {
    /// The REST base of another Pepeunit instance (`{scheme}://{domain}{prefix}/api/v1`),
    /// found through its instance actor (WebFinger), so a peer with another path prefix works.
    pub async fn peer_api_base(&self, domain: &str) -> FedResult<Url> {
        let actor = self.resolve_instance_actor(domain).await?;
        let path = actor.path();
        let Some(prefix) = path.strip_suffix("/ap/instance") else {
            return Err(FedError::Remote(format!(
                "{domain} is not a Pepeunit instance (its instance actor is {actor})"
            )));
        };
        let mut base = actor.clone();
        base.set_path(&format!("{prefix}/api/v1"));
        base.set_query(None);
        base.set_fragment(None);
        Ok(base)
    }

    /// Sends a request signed as this instance's actor. `body` is sent as JSON.
    pub async fn peer_request(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&Value>,
    ) -> FedResult<PeerReply> {
        self.check_remote_url(url)?;
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut builder = self
            .client()
            .request(method, url.clone())
            .header("accept", "application/json");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let me = self.actor_id(LocalRef::Instance);
        let request = sign(builder, url, main_key_id(&me), bytes, self.key().clone())
            .await
            .map_err(|e| FedError::Invalid(e.to_string()))?;
        let response = self
            .client()
            .execute(request)
            .await
            .map_err(|e| FedError::Remote(format!("{url}: {}", error_chain(&e))))?;
        let status = response.status().as_u16();
        let raw = read_limited(response, MAX_PEER_REPLY).await?;
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(PeerReply { status, body })
    }

    /// Checks that a request was signed by another instance's actor (not a user, Repo or
    /// Unit) on a permitted domain, and says which.
    pub async fn verify_peer(&self, req: &SignedRequest<'_>) -> Result<Peer, InboxReply> {
        let actor = self.verify_request(req).await?;
        if actor.actor.kind != "Application" {
            return Err(InboxReply {
                status: 403,
                message: format!(
                    "only an instance actor may ask this, not a {}",
                    actor.actor.kind
                ),
            });
        }
        let domain = domain_of(&actor.id).unwrap_or_default();
        Ok(Peer {
            domain,
            actor: actor.id,
        })
    }
}
