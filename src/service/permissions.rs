//! Permission grants between agents (users, units) and private resources.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::PermissionEntities;
use crate::error::{AppError, AppResult};
pub use crate::store::permissions::Permission;
use crate::store::{self};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionCreate {
    pub agent_uuid: Uuid,
    pub agent_type: PermissionEntities,
    pub resource_uuid: Uuid,
    pub resource_type: PermissionEntities,
}

impl Instance {
    /// The creator of a resource, or not found.
    async fn resource_creator(&self, uuid: Uuid, kind: PermissionEntities) -> AppResult<Uuid> {
        let db = self.pool();
        let creator = match kind {
            PermissionEntities::Repo => store::repos::get(db, uuid).await?.map(|r| r.creator_uuid),
            PermissionEntities::Unit => store::units::get(db, uuid).await?.map(|u| u.creator_uuid),
            PermissionEntities::UnitNode => store::unit_nodes::get(db, uuid)
                .await?
                .map(|n| n.creator_uuid),
            PermissionEntities::User => {
                return Err(AppError::permission(
                    "Resource type must be Repo, Unit or UnitNode",
                ))
            }
        };
        creator.ok_or_else(AppError::not_found)
    }

    async fn agent_exists(&self, uuid: Uuid, kind: PermissionEntities) -> AppResult<()> {
        let found = match kind {
            PermissionEntities::User => store::users::get(self.pool(), uuid).await?.is_some(),
            PermissionEntities::Unit => store::units::get(self.pool(), uuid).await?.is_some(),
            _ => return Err(AppError::permission("Agent type must be User or Unit")),
        };
        if found {
            Ok(())
        } else {
            Err(AppError::not_found())
        }
    }

    /// Grants access; only the resource's creator may do so (upstream let anyone grant).
    pub async fn create_permission(
        &self,
        agent: &Agent,
        data: PermissionCreate,
    ) -> AppResult<Permission> {
        let user = agent.user()?.clone();
        if !matches!(
            data.agent_type,
            PermissionEntities::User | PermissionEntities::Unit
        ) {
            return Err(AppError::permission("Agent type must be User or Unit"));
        }
        let creator = self
            .resource_creator(data.resource_uuid, data.resource_type)
            .await?;
        self.agent_exists(data.agent_uuid, data.agent_type).await?;
        if creator != user.uuid {
            return Err(AppError::no_access(
                "Only the creator of the resource can grant access",
            ));
        }
        if store::permissions::exists(self.pool(), data.agent_uuid, data.resource_uuid).await? {
            return Err(AppError::permission("Permission is exist"));
        }
        let inserted = store::permissions::insert_grant(
            self.pool(),
            (data.agent_uuid, data.agent_type),
            (data.resource_uuid, data.resource_type),
        )
        .await?;
        if !inserted {
            // a concurrent request granted it between our check and the insert
            return Err(AppError::permission("Permission is exist"));
        }
        store::permissions::get(self.pool(), data.agent_uuid, data.resource_uuid)
            .await?
            .ok_or_else(|| AppError::internal("permission vanished after insert"))
    }

    pub async fn resource_agents(
        &self,
        agent: &Agent,
        resource: Uuid,
        kind: PermissionEntities,
        agent_type: Option<PermissionEntities>,
        offset: i64,
        limit: i64,
    ) -> AppResult<(i64, Vec<Permission>)> {
        let user = agent.user()?;
        let creator = self.resource_creator(resource, kind).await?;
        if creator != user.uuid {
            return Err(AppError::no_access(
                "Only the creator of the resource can list its agents",
            ));
        }
        Ok(
            store::permissions::list_for_resource(self.pool(), resource, agent_type, offset, limit)
                .await?,
        )
    }

    pub async fn delete_permission(
        &self,
        agent: &Agent,
        agent_uuid: Uuid,
        resource_uuid: Uuid,
    ) -> AppResult<()> {
        let user = agent.user()?;
        let grant = store::permissions::get(self.pool(), agent_uuid, resource_uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        let creator = self
            .resource_creator(resource_uuid, grant.resource_type)
            .await?;
        if creator != user.uuid {
            return Err(AppError::no_access(
                "Only the creator of the resource can revoke access",
            ));
        }
        let refuse = |m: &str| Err(AppError::permission(m.to_string()));
        if agent_uuid == resource_uuid {
            return refuse("A resource's access to itself cannot be removed");
        }
        if agent_uuid == creator {
            return refuse("The creator's access cannot be removed");
        }
        if grant.agent_type == PermissionEntities::Unit {
            let own_repo = grant.resource_type == PermissionEntities::Repo
                && store::units::get(self.pool(), agent_uuid)
                    .await?
                    .is_some_and(|u| u.repo_uuid == resource_uuid);
            if own_repo {
                return refuse("A Unit's access to its parent Repo cannot be removed");
            }
            let own_node = grant.resource_type == PermissionEntities::UnitNode
                && store::unit_nodes::get(self.pool(), resource_uuid)
                    .await?
                    .is_some_and(|n| n.unit_uuid == agent_uuid);
            if own_node {
                return refuse("A Unit's access to its own nodes cannot be removed");
            }
        }
        store::permissions::revoke(self.pool(), agent_uuid, resource_uuid).await?;
        self.live.access_changed();
        Ok(())
    }
}
