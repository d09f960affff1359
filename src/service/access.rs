//! Agents and the access rules every front door shares (API.md §0: agents, creator, vis).

use uuid::Uuid;

use super::Instance;
use crate::domain::{AgentType, PermissionEntities, UserRole, VisibilityLevel};
use crate::error::{AppError, AppResult};
use crate::store::units::Unit;
use crate::store::users::User;
use crate::store::{self, VisibilityScope};
use crate::token::TokenError;

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Agent {
    /// No token.
    Bot,
    User(Box<User>),
    Unit(Box<Unit>),
    Backend {
        domain: String,
    },
}

impl Agent {
    pub fn agent_type(&self) -> AgentType {
        match self {
            Agent::Bot => AgentType::Bot,
            Agent::User(_) => AgentType::User,
            Agent::Unit(_) => AgentType::Unit,
            Agent::Backend { .. } => AgentType::Backend,
        }
    }

    /// The uuid permissions are granted to (users and units).
    pub fn uuid(&self) -> Option<Uuid> {
        match self {
            Agent::User(u) => Some(u.uuid),
            Agent::Unit(u) => Some(u.uuid),
            _ => None,
        }
    }

    fn class_name(&self) -> &'static str {
        match self {
            Agent::Bot => "AgentBot",
            Agent::User(_) => "AgentUser",
            Agent::Unit(_) => "AgentUnit",
            Agent::Backend { .. } => "AgentBackend",
        }
    }

    /// Refuses agents whose type is not listed.
    pub fn require(&self, allowed: &[AgentType]) -> AppResult<()> {
        if allowed.contains(&self.agent_type()) {
            return Ok(());
        }
        let list: Vec<String> = allowed
            .iter()
            .map(|a| {
                format!(
                    "<AgentType.{}: '{}'>",
                    a.as_str().to_uppercase(),
                    a.as_str()
                )
            })
            .collect();
        Err(AppError::no_access(format!(
            "{} access not allowed, only for [{}]",
            self.class_name(),
            list.join(", ")
        )))
    }

    pub fn user(&self) -> AppResult<&User> {
        match self {
            Agent::User(u) => Ok(u),
            _ => {
                self.require(&[AgentType::User])?;
                unreachable!()
            }
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Agent::User(u) if u.role == UserRole::Admin)
    }

    pub fn require_admin(&self) -> AppResult<&User> {
        let user = self.user()?;
        if user.role != UserRole::Admin {
            return Err(AppError::no_access("Only an Admin has access"));
        }
        Ok(user)
    }

    /// A User that created the entity.
    pub fn require_creator(&self, creator: Option<Uuid>) -> AppResult<&User> {
        let user = self.user()?;
        if Some(user.uuid) != creator {
            return Err(AppError::no_access("The current user is not the creator"));
        }
        Ok(user)
    }

    /// The creator User, or the Unit itself (`U creator, N self`).
    pub fn require_creator_or_self(&self, unit: &Unit) -> AppResult<()> {
        match self {
            Agent::Unit(u) if u.uuid == unit.uuid => Ok(()),
            Agent::Unit(_) => Err(AppError::no_access("A Unit has access only to itself")),
            Agent::User(_) => self.require_creator(Some(unit.creator_uuid)).map(|_| ()),
            _ => self.require(&[AgentType::User, AgentType::Unit]),
        }
    }

    pub fn permission_entity(&self) -> Option<PermissionEntities> {
        match self {
            Agent::User(_) => Some(PermissionEntities::User),
            Agent::Unit(_) => Some(PermissionEntities::Unit),
            _ => None,
        }
    }
}

impl Instance {
    /// Resolves the `x-auth-token` header into an agent (API.md §2).
    pub async fn agent_from_token(&self, token: Option<&str>) -> AppResult<Agent> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Agent::Bot);
        };
        let claims = self
            .tokens
            .decode(token, chrono::Utc::now().timestamp())
            .map_err(|e| match e {
                TokenError::Invalid => AppError::no_access("Token is invalid"),
                TokenError::Expired => AppError::no_access("Token expired"),
            })?;
        let uuid = || {
            claims
                .uuid
                .as_deref()
                .and_then(|u| Uuid::parse_str(u).ok())
                .ok_or_else(|| AppError::no_access("Token is invalid"))
        };
        match claims.agent_type.as_str() {
            "User" => {
                let user = store::users::get(&self.db.pool, uuid()?)
                    .await?
                    .ok_or_else(|| AppError::no_access("User not found"))?;
                super::chat::user_agent(user)
            }
            "Unit" => {
                let unit = match self.unit(uuid()?).await {
                    Ok(u) => u,
                    Err(AppError::NotFound) => return Err(AppError::no_access("Unit not found")),
                    Err(e) => return Err(e),
                };
                // a token from before the unit's last rotation
                if claims.gen.unwrap_or(0) != unit.token_generation {
                    return Err(AppError::no_access("Token is invalid"));
                }
                Ok(Agent::Unit(Box::new(unit)))
            }
            "Backend" => match claims.domain {
                Some(d) if d == self.config.domain => Ok(Agent::Backend { domain: d }),
                _ => Err(AppError::no_access("Token is invalid")),
            },
            _ => Err(AppError::no_access("Invalid agent type")),
        }
    }

    /// The `vis` qualifier: may this agent see a resource of this visibility?
    pub async fn check_visibility(
        &self,
        agent: &Agent,
        resource: Uuid,
        level: VisibilityLevel,
    ) -> AppResult<()> {
        match (agent, level) {
            (Agent::Backend { .. }, _) | (_, VisibilityLevel::Public) => Ok(()),
            (Agent::User(_) | Agent::Unit(_), VisibilityLevel::Internal) => Ok(()),
            (Agent::User(u), VisibilityLevel::Private) if u.uuid == resource => Ok(()),
            (Agent::User(_) | Agent::Unit(_), VisibilityLevel::Private) => {
                let who = agent.uuid().expect("users and units have uuids");
                if who == resource
                    || store::permissions::exists(&self.db.pool, who, resource).await?
                {
                    Ok(())
                } else {
                    Err(AppError::no_access(
                        "Private visibility level is not allowed",
                    ))
                }
            }
            (_, VisibilityLevel::Internal) => Err(AppError::no_access(
                "Internal visibility level is not allowed",
            )),
            (_, VisibilityLevel::Private) => Err(AppError::no_access(
                "Private visibility level is not allowed",
            )),
        }
    }

    /// Which levels a list returns to this agent, narrowed to the requested ones.
    pub fn visibility_scope(
        &self,
        agent: &Agent,
        requested: &[VisibilityLevel],
    ) -> VisibilityScope {
        let requested: Vec<VisibilityLevel> = if requested.is_empty() {
            VisibilityLevel::ALL.to_vec()
        } else {
            requested.to_vec()
        };
        match agent {
            Agent::Backend { .. } => VisibilityScope {
                levels: requested,
                private_agent: None,
            },
            Agent::Bot => VisibilityScope {
                levels: requested
                    .into_iter()
                    .filter(|l| *l == VisibilityLevel::Public)
                    .collect(),
                private_agent: None,
            },
            Agent::User(_) | Agent::Unit(_) => VisibilityScope {
                levels: requested,
                private_agent: agent.uuid(),
            },
        }
    }
}

/// Visibility ordering: a child must be at least as strict as its parent.
pub fn check_child_visibility(
    parent: VisibilityLevel,
    parent_name: &str,
    child: VisibilityLevel,
    child_name: &str,
) -> AppResult<()> {
    if child.strictness() < parent.strictness() {
        return Err(AppError::validation(format!(
            "The visibility level of the parent object {parent_name} is lower than that of the child object {child_name}"
        )));
    }
    Ok(())
}

/// Unit tokens that stopped being valid (the unit was deleted or its token rotated), told to
/// whoever keeps sessions or answers opened with them: the embedded broker forgets its cached
/// answers and disconnects those sessions. Sent after the change is committed and the row
/// cache invalidated; nobody listening (an external broker) is fine.
#[derive(Clone)]
pub struct Revocations(tokio::sync::broadcast::Sender<Uuid>);

impl Default for Revocations {
    fn default() -> Self {
        Revocations(tokio::sync::broadcast::channel(1024).0)
    }
}

impl Revocations {
    /// The tokens of this unit issued so far may be dead now.
    pub fn revoke(&self, unit: Uuid) {
        let _ = self.0.send(unit);
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.0.subscribe()
    }
}
