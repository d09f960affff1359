//! Unit nodes (a unit's MQTT topics) and edges linking an Output to an Input.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{access, Agent, Instance};
use crate::domain::{
    self, AgentType, BackendTopicCommand, PermissionEntities, UnitNodeType, VisibilityLevel,
};
use crate::error::{AppError, AppResult};
pub use crate::store::unit_nodes::{UnitNode, UnitNodeEdge, UnitNodeFilter};
use crate::store::{self};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UnitNodeUpdate {
    pub visibility_level: Option<VisibilityLevel>,
    pub is_rewritable_input: Option<bool>,
    pub is_data_pipe_active: Option<bool>,
    /// 1 to 100,000.
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_connections: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitNodeSetState {
    pub state: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitNodeEdgeCreate {
    pub node_output_uuid: Uuid,
    pub node_input_uuid: Uuid,
}

impl Instance {
    pub async fn unit_node(&self, uuid: Uuid) -> AppResult<UnitNode> {
        store::unit_nodes::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)
    }

    pub async fn get_unit_node(&self, agent: &Agent, uuid: Uuid) -> AppResult<UnitNode> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let node = self.unit_node(uuid).await?;
        self.check_visibility(agent, node.uuid, node.visibility_level)
            .await?;
        Ok(node)
    }

    pub async fn list_unit_nodes(
        &self,
        agent: &Agent,
        filter: UnitNodeFilter,
        levels: &[VisibilityLevel],
    ) -> AppResult<(i64, Vec<UnitNode>)> {
        agent.require(&[
            AgentType::Bot,
            AgentType::User,
            AgentType::Unit,
            AgentType::Backend,
        ])?;
        let scope = self.visibility_scope(agent, levels);
        Ok(store::unit_nodes::list(self.pool(), &filter, &scope).await?)
    }

    pub async fn update_unit_node(
        &self,
        agent: &Agent,
        uuid: Uuid,
        data: UnitNodeUpdate,
    ) -> AppResult<UnitNode> {
        let mut node = self.unit_node(uuid).await?;
        agent.require_creator(Some(node.creator_uuid))?;
        let unit = self.unit(node.unit_uuid).await?;
        if let Some(v) = data.visibility_level {
            access::check_child_visibility(unit.visibility_level, &unit.name, v, &node.topic_name)?;
            node.visibility_level = v;
        }
        if let Some(r) = data.is_rewritable_input {
            if node.node_type != UnitNodeType::Input {
                return Err(AppError::unit_node("Only Input nodes can be rewritable"));
            }
            node.is_rewritable_input = r;
        }
        let pipe_toggled = data
            .is_data_pipe_active
            .is_some_and(|a| a != node.is_data_pipe_active);
        if let Some(a) = data.is_data_pipe_active {
            if a && !node.topic_name.ends_with("/pepeunit") {
                return Err(AppError::unit_node(
                    "Data pipes work only for topics ending with /pepeunit",
                ));
            }
            node.is_data_pipe_active = a;
        }
        if let Some(m) = data.max_connections {
            if !(1..=100_000).contains(&m) {
                return Err(AppError::unit_node(
                    "max_connections must be between 1 and 100000",
                ));
            }
            node.max_connections = m;
        }
        node.last_update_datetime = domain::now();
        store::unit_nodes::update_settings(self.pool(), &node).await?;
        if pipe_toggled {
            // the shard starts or stops the node's pipeline now
            self.pipes.changed(node.uuid);
        }
        self.live.access_changed();
        Ok(node)
    }

    /// Writing an input's state publishes it to the node topic, then stores it (only `state`
    /// and `last_update_datetime` change; API.md §7 quirk not reproduced).
    pub async fn set_unit_node_state(
        &self,
        agent: &Agent,
        uuid: Uuid,
        data: UnitNodeSetState,
    ) -> AppResult<UnitNode> {
        agent.require(&[AgentType::User, AgentType::Unit])?;
        let node = self.unit_node(uuid).await?;
        self.check_visibility(agent, node.uuid, node.visibility_level)
            .await?;
        if node.node_type != UnitNodeType::Input {
            return Err(AppError::unit_node(
                "The state can be set only on Input nodes",
            ));
        }
        if matches!(agent, Agent::Unit(_)) && !node.is_rewritable_input {
            return Err(AppError::no_access("This input node is not rewritable"));
        }
        if data
            .state
            .as_ref()
            .is_some_and(|s| s.len() > crate::crypto::MAX_CIPHER_LEN)
        {
            return Err(AppError::unit_node("The state is too long"));
        }
        // the device gets the value first; only a value that was published is stored
        let topic = self.node_topic(node.uuid, &node.topic_name);
        self.outbox
            .publish(&topic, data.state.clone().unwrap_or_default())?;
        let now = domain::now();
        store::unit_nodes::set_state(self.pool(), node.uuid, data.state.as_deref(), &now).await?;
        self.unit_node(uuid).await
    }

    pub async fn create_unit_node_edge(
        &self,
        agent: &Agent,
        data: UnitNodeEdgeCreate,
    ) -> AppResult<UnitNodeEdge> {
        let user = agent.user()?.clone();
        let output = self.unit_node(data.node_output_uuid).await?;
        let input = self.unit_node(data.node_input_uuid).await?;
        if output.node_type != UnitNodeType::Output || input.node_type != UnitNodeType::Input {
            return Err(AppError::unit_node(
                "An edge links an Output node to an Input node",
            ));
        }
        self.check_visibility(agent, output.uuid, output.visibility_level)
            .await?;
        self.check_visibility(agent, input.uuid, input.visibility_level)
            .await?;
        if store::unit_nodes::edge_exists(self.pool(), output.uuid, input.uuid).await? {
            return Err(AppError::unit_node("Edge exist"));
        }
        if store::unit_nodes::count_edges(self.pool(), input.uuid, false).await?
            >= input.max_connections
        {
            return Err(AppError::unit_node(
                "The input node has reached max_connections",
            ));
        }
        if store::unit_nodes::count_edges(self.pool(), output.uuid, true).await?
            >= output.max_connections
        {
            return Err(AppError::unit_node(
                "The output node has reached max_connections",
            ));
        }
        let edge = UnitNodeEdge {
            uuid: Uuid::new_v4(),
            node_output_uuid: output.uuid,
            node_input_uuid: input.uuid,
            creator_uuid: user.uuid,
        };
        let mut tx = self.pool().begin().await?;
        store::unit_nodes::insert_edge(&mut *tx, &edge).await?;
        let unit = PermissionEntities::Unit;
        store::permissions::grant(
            &mut *tx,
            (output.unit_uuid, unit),
            (input.uuid, PermissionEntities::UnitNode),
        )
        .await?;
        store::permissions::grant(
            &mut *tx,
            (input.unit_uuid, unit),
            (output.uuid, PermissionEntities::UnitNode),
        )
        .await?;
        store::permissions::grant(&mut *tx, (output.unit_uuid, unit), (input.unit_uuid, unit))
            .await?;
        tx.commit().await?;
        // the input's unit now listens to one more topic
        self.send_command_quietly(input.unit_uuid, BackendTopicCommand::SchemaUpdate)
            .await;
        Ok(edge)
    }

    /// Removes the edge between two nodes (GraphQL names an edge by its ends, REST by uuid).
    pub async fn delete_unit_node_edge_between(
        &self,
        agent: &Agent,
        input: Uuid,
        output: Uuid,
    ) -> AppResult<()> {
        let user = agent.user()?.uuid;
        let edge = store::unit_nodes::find_edge(self.pool(), output, input).await?;
        // Whether two nodes are linked is told only to who may remove the link: the creator of
        // either node, or of the link itself.
        let mut may = edge.as_ref().is_some_and(|e| e.creator_uuid == user);
        for node in [input, output] {
            if !may {
                may = store::unit_nodes::get(self.pool(), node)
                    .await?
                    .is_some_and(|n| n.creator_uuid == user);
            }
        }
        if !may {
            return Err(AppError::no_access("The current user is not the creator"));
        }
        let edge = edge.ok_or_else(AppError::not_found)?;
        self.delete_unit_node_edge(agent, edge.uuid).await
    }

    pub async fn delete_unit_node_edge(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        let edge = store::unit_nodes::get_edge(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let input = self.unit_node(edge.node_input_uuid).await?;
        let output = self.unit_node(edge.node_output_uuid).await?;
        let user = agent.user()?;
        if user.uuid != edge.creator_uuid
            && user.uuid != input.creator_uuid
            && user.uuid != output.creator_uuid
        {
            return Err(AppError::no_access("The current user is not the creator"));
        }
        // Drop the grants the link created unless another link still justifies them, so an
        // unlinked unit keeps no access to the other side. A unit's grants on its own nodes
        // stay whatever happens.
        use store::unit_nodes::LinkEnd::{Node, Unit};
        let (out_unit, in_unit) = (output.unit_uuid, input.unit_uuid);
        let mut tx = self.pool().begin().await?;
        store::unit_nodes::delete_edge(&mut *tx, uuid).await?;
        let grants = [
            (
                out_unit,
                input.uuid,
                in_unit,
                Unit(out_unit),
                Node(input.uuid),
            ),
            (
                in_unit,
                output.uuid,
                out_unit,
                Node(output.uuid),
                Unit(in_unit),
            ),
            (out_unit, in_unit, in_unit, Unit(out_unit), Unit(in_unit)),
        ];
        for (agent_unit, resource, resource_owner, from, to) in grants {
            if agent_unit == resource_owner {
                continue;
            }
            if store::unit_nodes::count_links(&mut *tx, from, to).await? == 0 {
                store::permissions::revoke(&mut *tx, agent_unit, resource).await?;
            }
        }
        tx.commit().await?;
        self.live.access_changed();
        self.send_command_quietly(in_unit, BackendTopicCommand::SchemaUpdate)
            .await;
        Ok(())
    }
}
