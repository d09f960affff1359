//! Who may connect to the MQTT broker, and which topics an agent may publish or subscribe to
//! (API.md §5.4; SPEC §1 "Broker access control"). One rule set for every broker: EMQX asks
//! through `POST /units/mqtt_authn` (CONNECT) and `POST /units/auth` (topics); the embedded
//! broker's CONNECT and ACL hooks call the same functions.
//!
//! CONNECT: the MQTT username is a Unit or Backend token (password empty); see
//! [`Instance::broker_authenticate`].
//!
//! Topic shapes:
//! - `{domain}/{input_base_topic|output_base_topic}/{unit_uuid}/{name}/pepeunit`: a unit's base
//!   topics. A unit may use only its own; when the action is known it may subscribe only to
//!   its input base topics (commands) and publish only to its output base topics (state, log).
//! - `{domain}/{node_uuid}` and `{domain}/{node_uuid}/pepeunit`: node topics. The node must
//!   exist and be visible to the unit; publishing needs the node to be the unit's own.
//! - The backend may use everything, including the `+` wildcard in node position.
//! - Bridges (SPEC §11): a Bridge credential (issued by this instance to the peer that holds the
//!   Output node) may connect and publish to exactly its bridge's topic
//!   `{peer domain}/{output_node_uuid}[/pepeunit]`, nothing else, and only while the bridge row
//!   exists. A unit whose Input node has an Active bridge may subscribe to that topic. These
//!   are the only topics with a foreign domain the broker lets through.
//!
//! Deliberate difference from upstream: the domain must be this instance's, and publish and
//! subscribe are told apart when the broker says which one it checks.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::topic::{self, Base, Shape, Topic};
use crate::store::{self, bridges::BridgeRole, bridges::BridgeState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerAction {
    Publish,
    Subscribe,
}

/// The answer EMQX's HTTP authorization source expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerDecision {
    Allow,
    Deny,
}

impl Instance {
    /// May a client with this MQTT username connect? Only a valid Unit token whose unit still
    /// exists, or this instance's Backend token. User tokens, garbage, an empty username and
    /// anything that fails to resolve are refused. The client id is deliberately not checked:
    /// a token is the credential, and the official clients' id (the unit uuid) adds nothing.
    pub async fn broker_authenticate(&self, username: &str) -> bool {
        self.mqtt_connect_role(username).await.is_some()
    }

    /// Decides one topic for the agent behind `token`. Anything unexpected denies.
    pub async fn broker_decision(
        &self,
        token: &str,
        topic: &str,
        action: Option<BrokerAction>,
    ) -> BrokerDecision {
        if let Some(bridge) = self.bridge_claim(token) {
            return if self.bridge_may_publish(bridge, topic, action).await {
                BrokerDecision::Allow
            } else {
                BrokerDecision::Deny
            };
        }
        let allowed = match self.agent_from_token(Some(token)).await {
            Ok(agent) => self.topic_allowed(&agent, topic, action).await,
            Err(_) => false,
        };
        if allowed {
            BrokerDecision::Allow
        } else {
            BrokerDecision::Deny
        }
    }

    /// May this MQTT username (a token) connect? `Some(true)` for this instance's backend (a
    /// superuser: wildcards, no per-topic checks), `Some(false)` for an existing unit, `None`
    /// for everything else (users, bots, garbage, deleted units, other instances' backends).
    pub async fn mqtt_connect_role(&self, token: &str) -> Option<bool> {
        if token.is_empty() {
            return None;
        }
        if let Some(bridge) = self.bridge_claim(token) {
            let row = store::bridges::get(self.pool(), bridge).await.ok()??;
            return (row.role == BridgeRole::Input).then_some(false);
        }
        match self.agent_from_token(Some(token)).await {
            Ok(Agent::Backend { .. }) => Some(true),
            Ok(Agent::Unit(_)) => Some(false),
            _ => None,
        }
    }

    async fn moving_topic_allowed(
        &self,
        agent: &Agent,
        topic: &str,
        action: Option<BrokerAction>,
    ) -> bool {
        let Ok(Topic::UnitBase {
            domain,
            base: Base::Input,
            unit: remote,
            ..
        }) = Topic::parse(topic)
        else {
            return false;
        };
        let Ok(Some(m)) = crate::store::moves::moving_to(self.pool(), domain, remote).await else {
            return false;
        };
        match agent {
            Agent::Backend { .. } => true,
            Agent::Unit(own) => own.uuid == m.unit_uuid && action != Some(BrokerAction::Publish),
            _ => false,
        }
    }

    /// The rule itself, for an already authenticated agent.
    pub async fn topic_allowed(
        &self,
        agent: &Agent,
        topic: &str,
        action: Option<BrokerAction>,
    ) -> bool {
        if topic.is_empty() || topic.len() > 65_535 {
            return false;
        }
        let shape = Shape::of(topic);
        let backend = matches!(agent, Agent::Backend { .. });
        let wildcard = topic::is_filter(topic);
        if topic.split('/').next() != Some(self.config.domain.as_str()) {
            // the backend's subscriptions carry our domain too; a foreign domain is only ever
            // a bridged topic, which a unit reading through an Active bridge may subscribe to,
            // or the new instance's command topics of a unit that is moving there (the device
            // subscribes to them after its SchemaUpdate and is told to restart on them)
            if wildcard {
                return false;
            }
            if let Agent::Unit(own) = agent {
                if action != Some(BrokerAction::Publish)
                    && store::bridges::unit_receives(self.pool(), own.uuid, topic)
                        .await
                        .unwrap_or(false)
                {
                    return true;
                }
            }
            return self.moving_topic_allowed(agent, topic, action).await;
        }
        match shape {
            Shape::UnitBase { .. } => {
                if backend {
                    return true;
                }
                let Agent::Unit(own) = agent else {
                    return false;
                };
                let Ok(Topic::UnitBase { base, unit, .. }) = Topic::parse(topic) else {
                    return false;
                };
                if wildcard || unit != own.uuid {
                    return false;
                }
                matches!(
                    (base, action),
                    (Base::Input, None | Some(BrokerAction::Subscribe))
                        | (Base::Output, None | Some(BrokerAction::Publish))
                )
            }
            Shape::Node { node, .. } => {
                if backend && (node == "+" || node == "#") {
                    return true;
                }
                if wildcard || matches!(agent, Agent::Bot | Agent::User(_)) {
                    return false;
                }
                let Ok(Topic::Node { node, pepeunit, .. }) = Topic::parse(topic) else {
                    return false;
                };
                let Ok(node) = self.unit_node(node).await else {
                    return false;
                };
                // the suffix must match how the node's topic is spelled
                if Topic::node(&self.config.domain, node.uuid, &node.topic_name)
                    != (Topic::Node {
                        domain: &self.config.domain,
                        node: node.uuid,
                        pepeunit,
                    })
                {
                    return false;
                }
                match agent {
                    Agent::Backend { .. } => true,
                    Agent::Unit(own) => {
                        if self
                            .check_visibility(agent, node.uuid, node.visibility_level)
                            .await
                            .is_err()
                        {
                            return false;
                        }
                        action != Some(BrokerAction::Publish) || node.unit_uuid == own.uuid
                    }
                    _ => false,
                }
            }
            Shape::Other => false,
        }
    }

    /// For a broker session opened with `token`: is it a Unit token (of `unit`, when given)
    /// that is no longer valid (its unit deleted or its token rotated since)? Read from the
    /// database, not the row cache, so that a row cached just before the change cannot keep
    /// the session alive. Anything that is not a Unit token is not this function's business.
    pub async fn unit_token_revoked(&self, token: &str, unit: Option<Uuid>) -> bool {
        let Ok(claims) = self.tokens.decode(token, chrono::Utc::now().timestamp()) else {
            return false;
        };
        if claims.agent_type != "Unit" {
            return false;
        }
        let Some(uuid) = claims.uuid.as_deref().and_then(|u| Uuid::parse_str(u).ok()) else {
            return false;
        };
        if unit.is_some_and(|u| u != uuid) {
            return false;
        }
        match store::units::get(self.pool(), uuid).await {
            Ok(Some(row)) => claims.gen.unwrap_or(0) != row.token_generation,
            Ok(None) => true,
            // the database is away: keep the session, the next uncached decision settles it
            Err(_) => false,
        }
    }

    /// The bridge uuid of a Bridge credential signed by this instance.
    pub(super) fn bridge_claim(&self, token: &str) -> Option<Uuid> {
        let claims = self
            .tokens
            .decode(token, chrono::Utc::now().timestamp())
            .ok()?;
        if claims.agent_type != "Bridge" {
            return None;
        }
        claims.uuid.as_deref().and_then(|u| Uuid::parse_str(u).ok())
    }

    /// A Bridge credential publishes to its own bridge's topic only (never subscribes), while
    /// this instance holds the Input side of that bridge and it is not refused.
    async fn bridge_may_publish(
        &self,
        bridge: Uuid,
        topic: &str,
        action: Option<BrokerAction>,
    ) -> bool {
        if action != Some(BrokerAction::Publish) {
            return false;
        }
        match store::bridges::get(self.pool(), bridge).await {
            Ok(Some(row)) => {
                row.role == BridgeRole::Input
                    && row.state == BridgeState::Active
                    && row.topic == topic
            }
            _ => false,
        }
    }
}
