//! MQTT bridges between instances (SPEC §11): a link from an Output node on instance A to an
//! Input node on instance B; messages flow A -> B.
//!
//! 1. The owner of the Input node asks B (`POST /federation/bridges`). B checks the caller may
//!    bridge into that node, stores the bridge as Pending and issues a Bridge credential (a JWT
//!    the broker accepts only for publishing to this bridge's topic).
//! 2. B asks A with a request signed as its instance actor (`POST /federation/peer/bridges`),
//!    giving the credential and B's MQTT address (what env.json gives B's devices). A checks
//!    the Output node is Public, stores its side and answers the topic, which only A can spell
//!    (`{A}/{node}` or `{A}/{node}/pepeunit`).
//! 3. B marks the bridge Active, lists the topic in the Input unit's schema.json and sends it
//!    SchemaUpdate. A's carrier (`crate::mqtt::bridge`: the built-in task, or EMQX objects)
//!    republishes every message of the topic to B's broker.
//!
//! If A refuses or answers garbage, B keeps nothing and answers 422 with A's reason. Deleting
//! on either side deletes that side at once and tells the other with a signed DELETE (best
//! effort: a peer that cannot be reached keeps a row whose credential no longer works).
//!
//! Who may bridge: into an Input node, its creator or a user holding a permission on it
//! (stricter than local links, which only need visibility: the data comes from outside this
//! instance). Out of an Output node: any instance the federation policy permits, when the node
//! is `Public` (A has no accounts of B's users to check Internal or Private against).

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::{self, BackendTopicCommand, Topic, UnitNodeType, VisibilityLevel};
use crate::error::{AppError, AppResult};
pub use crate::store::bridges::Bridge;
use crate::store::bridges::{BridgeRole, BridgeState};
use crate::store::{self};

/// How long a peer-side delete waits for the carrier to stop using the credential.
const CARRIER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Body of `POST /federation/bridges`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeCreate {
    /// The instance holding the Output node, `host[:port]`.
    pub output_domain: String,
    /// The Output node on that instance.
    pub output_node_uuid: Uuid,
    /// The local Input node that receives the messages.
    pub input_node_uuid: Uuid,
}

/// A bridge as `GET /federation/bridges` shows it.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct BridgeRead {
    pub uuid: Uuid,
    /// `Input` when this instance receives (it holds the Input node), `Output` when it sends.
    pub role: BridgeRole,
    pub state: BridgeState,
    pub last_error: Option<String>,
    /// The other instance.
    pub peer_domain: String,
    pub output_domain: String,
    pub output_node_uuid: Uuid,
    /// The local Input node (Input side only).
    pub input_node_uuid: Option<Uuid>,
    /// The MQTT topic carried: `{output_domain}/{output_node_uuid}[/pepeunit]`.
    pub topic: String,
    pub create_datetime: String,
    pub last_update_datetime: String,
}

impl From<Bridge> for BridgeRead {
    fn from(b: Bridge) -> Self {
        BridgeRead {
            uuid: b.uuid,
            role: b.role,
            state: b.state,
            last_error: b.last_error,
            peer_domain: b.peer_domain,
            output_domain: b.output_domain,
            output_node_uuid: b.output_node_uuid,
            input_node_uuid: (b.role == BridgeRole::Input).then_some(b.local_node_uuid),
            topic: b.topic,
            create_datetime: b.create_datetime,
            last_update_datetime: b.last_update_datetime,
        }
    }
}

/// Body of the signed `POST /federation/peer/bridges` (B to A).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerBridgeOffer {
    pub uuid: Uuid,
    pub output_node_uuid: Uuid,
    /// B's broker as B's devices reach it.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// The Bridge credential: the MQTT username, password empty.
    pub credential: String,
}

/// A's answer to an offer.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct PeerBridgeAccepted {
    pub uuid: Uuid,
    pub topic: String,
}

impl Instance {
    /// Tells the bridge carrier that the set of bridges changed.
    pub fn bridges_changed(&self) {
        self.bridges.changed();
    }

    /// `POST /federation/bridges`: the Input side creates a bridge and asks the Output side.
    pub async fn create_bridge(&self, agent: &Agent, data: BridgeCreate) -> AppResult<BridgeRead> {
        let user = agent.user()?.clone();
        let input = self.unit_node(data.input_node_uuid).await?;
        if input.node_type != UnitNodeType::Input {
            return Err(AppError::unit_node(
                "A bridge links a remote Output node to a local Input node",
            ));
        }
        if user.uuid != input.creator_uuid
            && !store::permissions::exists(self.pool(), user.uuid, input.uuid).await?
        {
            return Err(AppError::no_access(
                "Only the creator of the Input node, or a user with a permission on it, may bridge into it",
            ));
        }
        let domain = peer_domain(&data.output_domain)?;
        if domain == self.config.domain {
            return Err(AppError::unit_node(
                "The Output node is on this instance: link it with /unit_nodes/create_unit_node_edge",
            ));
        }
        if !self.federation.permits(&domain) {
            return Err(AppError::validation(format!(
                "Domain {domain} is refused by this instance's federation policy"
            )));
        }
        if store::bridges::link_exists(
            self.pool(),
            BridgeRole::Input,
            input.uuid,
            &domain,
            data.output_node_uuid,
        )
        .await?
        {
            return Err(AppError::unit_node("Bridge exist"));
        }
        let links = store::unit_nodes::count_edges(self.pool(), input.uuid, false).await?
            + store::bridges::count_for_node(self.pool(), input.uuid).await?;
        if links >= input.max_connections {
            return Err(AppError::unit_node(
                "The input node has reached max_connections",
            ));
        }
        let now = domain::now();
        let mut bridge = Bridge {
            uuid: Uuid::new_v4(),
            role: BridgeRole::Input,
            local_node_uuid: input.uuid,
            peer_domain: domain.clone(),
            output_domain: domain.clone(),
            output_node_uuid: data.output_node_uuid,
            // until the Output side says how the topic is spelled
            topic: format!("{domain}/{}", data.output_node_uuid),
            creator_uuid: Some(user.uuid),
            mqtt_host: None,
            mqtt_port: None,
            credential: None,
            state: BridgeState::Pending,
            last_error: None,
            create_datetime: now.clone(),
            last_update_datetime: now,
        };
        store::bridges::insert(self.pool(), &bridge).await?;
        let topic = match self.offer_bridge(&bridge).await {
            Ok(topic) => topic,
            Err(e) => {
                // B keeps nothing of a bridge A did not accept
                store::bridges::delete(self.pool(), bridge.uuid).await?;
                return Err(e);
            }
        };
        store::bridges::activate(self.pool(), bridge.uuid, &topic).await?;
        bridge.topic = topic;
        bridge.state = BridgeState::Active;
        self.send_command_quietly(input.unit_uuid, BackendTopicCommand::SchemaUpdate)
            .await;
        Ok(store::bridges::get(self.pool(), bridge.uuid)
            .await?
            .unwrap_or(bridge)
            .into())
    }

    /// Sends the offer to the Output side; answers the topic it accepted.
    async fn offer_bridge(&self, bridge: &Bridge) -> AppResult<String> {
        let domain = &bridge.peer_domain;
        let base = self
            .federation
            .peer_api_base(domain)
            .await
            .map_err(|e| bridge_refused(domain, &e.to_string()))?;
        let url = peer_url(&base, "/federation/peer/bridges", None);
        let offer = PeerBridgeOffer {
            uuid: bridge.uuid,
            output_node_uuid: bridge.output_node_uuid,
            mqtt_host: self.config.mqtt_host.clone(),
            mqtt_port: self.config.mqtt_port,
            credential: self.tokens.bridge_token(bridge.uuid),
        };
        let body = serde_json::to_value(&offer).map_err(AppError::internal)?;
        let reply = self
            .federation
            .peer_request(Method::POST, &url, Some(&body))
            .await
            .map_err(|e| bridge_refused(domain, &e.to_string()))?;
        if !reply.ok() {
            return Err(bridge_refused(domain, &reply.reason()));
        }
        let accepted: Option<PeerBridgeAccepted> = serde_json::from_value(reply.body).ok();
        // the Output node's topic on this side's domain, with or without the suffix
        let is_output_topic = |topic: &str| {
            matches!(Topic::parse(topic), Ok(Topic::Node { domain: d, node, .. })
                if d == domain && node == bridge.output_node_uuid)
        };
        match accepted {
            Some(a) if a.uuid == bridge.uuid && is_output_topic(&a.topic) => Ok(a.topic),
            _ => {
                // it may have stored something: tell it to forget the bridge
                self.tell_peer_deleted(bridge).await;
                Err(bridge_refused(
                    domain,
                    "its answer is not a bridge acceptance for this Output node",
                ))
            }
        }
    }

    /// `GET /federation/bridges`: the caller's bridges on this instance, both roles.
    pub async fn list_bridges(&self, agent: &Agent) -> AppResult<Vec<BridgeRead>> {
        let user = agent.user()?;
        Ok(store::bridges::by_user(self.pool(), user.uuid)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// `DELETE /federation/bridges/{uuid}`: removes this side at once, then tells the peer.
    pub async fn delete_bridge(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let user = agent.user()?;
        let bridge = store::bridges::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let node = self.unit_node(bridge.local_node_uuid).await?;
        let owner = node.creator_uuid == user.uuid
            || (bridge.role == BridgeRole::Input && bridge.creator_uuid == Some(user.uuid));
        if !owner {
            return Err(AppError::no_access("The current user is not the creator"));
        }
        self.remove_bridge(&bridge, node.unit_uuid).await?;
        self.tell_peer_deleted(&bridge).await;
        Ok(())
    }

    async fn remove_bridge(&self, bridge: &Bridge, node_unit: Uuid) -> AppResult<()> {
        store::bridges::delete(self.pool(), bridge.uuid).await?;
        match bridge.role {
            BridgeRole::Input => {
                self.send_command_quietly(node_unit, BackendTopicCommand::SchemaUpdate)
                    .await
            }
            BridgeRole::Output => {
                self.bridges_changed();
                // the peer revokes the credential next: make sure it is no longer in use
                self.bridges
                    .wait_stopped(bridge.uuid, CARRIER_STOP_WAIT)
                    .await;
            }
        }
        Ok(())
    }

    /// Best effort: a signed DELETE to the peer; failures are logged, never returned.
    async fn tell_peer_deleted(&self, bridge: &Bridge) {
        let domain = &bridge.peer_domain;
        let result = async {
            let base = self.federation.peer_api_base(domain).await?;
            let url = peer_url(&base, "/federation/peer/bridges", Some(bridge.uuid));
            self.federation
                .peer_request(Method::DELETE, &url, None)
                .await
        }
        .await;
        match result {
            Ok(r) if r.ok() || r.status == 404 => {}
            Ok(r) => {
                tracing::warn!(bridge = %bridge.uuid, peer = %domain, "the peer did not delete its side of the bridge: {}", r.reason())
            }
            Err(e) => {
                tracing::warn!(bridge = %bridge.uuid, peer = %domain, error = %e, "the peer could not be told the bridge is deleted")
            }
        }
    }

    /// Signed `POST /federation/peer/bridges`: the Output side accepts or refuses an offer.
    pub async fn accept_peer_bridge(
        &self,
        peer: &str,
        offer: PeerBridgeOffer,
    ) -> AppResult<PeerBridgeAccepted> {
        if peer == self.config.domain {
            return Err(AppError::unit_node("An instance cannot bridge to itself"));
        }
        let node = self.unit_node(offer.output_node_uuid).await?;
        if node.node_type != UnitNodeType::Output {
            return Err(AppError::unit_node(
                "Only an Output node can be the source of a bridge",
            ));
        }
        if node.visibility_level != VisibilityLevel::Public {
            return Err(AppError::no_access(
                "Only Public Output nodes can be bridged to another instance",
            ));
        }
        self.check_peer_broker(&offer.mqtt_host, offer.mqtt_port)
            .await?;
        if offer.credential.is_empty()
            || offer.credential.len() > 8192
            || offer.credential.chars().any(char::is_control)
        {
            return Err(AppError::validation("The bridge credential is invalid"));
        }
        if store::bridges::get(self.pool(), offer.uuid)
            .await?
            .is_some()
        {
            return Err(AppError::unit_node("Bridge exist"));
        }
        let links = store::unit_nodes::count_edges(self.pool(), node.uuid, true).await?
            + store::bridges::count_for_node(self.pool(), node.uuid).await?;
        if links >= node.max_connections {
            return Err(AppError::unit_node(
                "The output node has reached max_connections",
            ));
        }
        let topic = self.node_topic(node.uuid, &node.topic_name);
        let now = domain::now();
        let bridge = Bridge {
            uuid: offer.uuid,
            role: BridgeRole::Output,
            local_node_uuid: node.uuid,
            peer_domain: peer.to_string(),
            output_domain: self.config.domain.clone(),
            output_node_uuid: node.uuid,
            topic: topic.clone(),
            creator_uuid: None,
            mqtt_host: Some(offer.mqtt_host),
            mqtt_port: Some(offer.mqtt_port.into()),
            credential: Some(self.cipher.encrypt(&offer.credential)?),
            state: BridgeState::Pending,
            last_error: None,
            create_datetime: now.clone(),
            last_update_datetime: now,
        };
        store::bridges::insert(self.pool(), &bridge)
            .await
            .map_err(|e| AppError::from(e).on_conflict(|| AppError::unit_node("Bridge exist")))?;
        self.bridges_changed();
        Ok(PeerBridgeAccepted {
            uuid: bridge.uuid,
            topic,
        })
    }

    /// Signed `DELETE /federation/peer/bridges/{uuid}`: the peer removed its side.
    pub async fn delete_peer_bridge(&self, peer: &str, uuid: Uuid) -> AppResult<()> {
        let bridge = store::bridges::get(self.pool(), uuid)
            .await?
            .filter(|b| b.peer_domain == peer)
            .ok_or_else(AppError::not_found)?;
        let unit = self.unit_node(bridge.local_node_uuid).await?.unit_uuid;
        self.remove_bridge(&bridge, unit).await
    }

    /// Where a peer's broker may be: a host name or address and a port. Loopback, private and
    /// link-local addresses only with `PU_ALLOW_LOCAL_NETWORK` (otherwise a peer could make
    /// this instance connect into its own network): every address the name resolves to now is
    /// checked (`net`), and again when the carrier connects.
    async fn check_peer_broker(&self, host: &str, port: u16) -> AppResult<()> {
        let bad = || AppError::validation(format!("The MQTT host {host:?} is invalid"));
        if host.is_empty()
            || host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        {
            return Err(bad());
        }
        if port == 0 {
            return Err(AppError::validation("The MQTT port is invalid"));
        }
        crate::net::resolve_checked(host, port, self.config.allow_local_network)
            .await
            .map_err(|e| AppError::validation(format!("The MQTT host is refused: {e}")))?;
        Ok(())
    }

    /// The bridged topics of a unit's Input nodes: `(input node, topic)`, for schema.json.
    pub async fn bridged_topics(&self, unit: Uuid) -> AppResult<Vec<(Uuid, String)>> {
        Ok(store::bridges::active_topics_of_unit(self.pool(), unit).await?)
    }

    /// The Output-side bridges the carrier runs, with their credentials decrypted.
    pub async fn carried_bridges(&self) -> AppResult<Vec<(Bridge, String)>> {
        let mut out = Vec::new();
        for b in store::bridges::by_role(self.pool(), BridgeRole::Output).await? {
            let Some(cred) = b.credential.as_deref() else {
                continue;
            };
            match self.cipher.decrypt(cred) {
                Ok(plain) => out.push((b, plain)),
                Err(e) => {
                    tracing::error!(bridge = %b.uuid, error = %e, "bridge credential unreadable")
                }
            }
        }
        Ok(out)
    }

    /// Records what the carrier sees (Output side), when it changed.
    pub async fn set_bridge_state(&self, uuid: Uuid, state: BridgeState, last_error: Option<&str>) {
        if let Err(e) = store::bridges::set_state(self.pool(), uuid, state, last_error).await {
            tracing::warn!(bridge = %uuid, error = %e, "bridge state not recorded");
        }
    }
}

/// `host[:port]`, lowercase, as federation names instances.
fn peer_domain(raw: &str) -> AppResult<String> {
    let d = raw.trim().to_ascii_lowercase();
    let bad = || {
        AppError::validation(format!(
            "output_domain {raw:?} is not an instance domain (host[:port])"
        ))
    };
    if d.is_empty() || d.len() > 260 {
        return Err(bad());
    }
    let url = url::Url::parse(&format!("https://{d}/")).map_err(|_| bad())?;
    // anything with a path, user or query, or spelled otherwise than its parse, is refused
    if pepeunit_federation::documents::domain_of(&url).as_deref() != Some(d.as_str()) {
        return Err(bad());
    }
    Ok(d)
}

fn peer_url(base: &url::Url, path: &str, id: Option<Uuid>) -> url::Url {
    let mut url = base.clone();
    let mut p = format!("{}{path}", base.path().trim_end_matches('/'));
    if let Some(id) = id {
        p.push_str(&format!("/{id}"));
    }
    url.set_path(&p);
    url
}

fn bridge_refused(domain: &str, reason: &str) -> AppError {
    AppError::validation(format!(
        "The instance {domain} did not accept the bridge: {reason}"
    ))
}
