//! Registration, login, profile changes, blocking (API.md §5.1).

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::crypto;
use crate::domain::{self, AgentType, UserRole, UserStatus};
use crate::error::{AppError, AppResult};
use crate::store;
pub use crate::store::users::{User, UserFilter};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// 4 to 20 of `A-Z a-z 0-9 _ . -`.
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub login: String,
    /// 8 to 100 printable ASCII characters, no spaces.
    #[schema(min_length = 8, max_length = 100, pattern = r"^[\x21-\x7E]{8,100}$")]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserAuth {
    /// Login or linked Telegram chat id.
    pub credentials: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[schema(min_length = 4, max_length = 20, pattern = r"^[A-Za-z0-9_.-]{4,20}$")]
    pub login: Option<String>,
    #[schema(min_length = 8, max_length = 100, pattern = r"^[\x21-\x7E]{8,100}$")]
    pub password: Option<String>,
}

fn check_login(login: &str) -> AppResult<()> {
    if domain::is_valid_name(login) {
        Ok(())
    } else {
        Err(AppError::user("Login is not correct"))
    }
}

fn check_password(password: &str) -> AppResult<()> {
    if domain::is_valid_password(password) {
        Ok(())
    } else {
        Err(AppError::user("Password is not correct"))
    }
}

impl Instance {
    async fn hash(&self, password: String) -> AppResult<crypto::PasswordHash> {
        let salt = self.config.static_salt.clone();
        tokio::task::spawn_blocking(move || crypto::hash_password(&password, &salt))
            .await
            .map_err(AppError::internal)
    }

    pub async fn create_user(&self, agent: &Agent, data: UserCreate) -> AppResult<User> {
        agent.require(&[AgentType::Bot])?;
        check_login(&data.login)?;
        check_password(&data.password)?;
        if store::users::login_taken(self.pool(), &data.login, None).await? {
            return Err(AppError::user("Login is not unique"));
        }
        let hash = self.hash(data.password).await?;
        let mut user = User {
            uuid: Uuid::new_v4(),
            role: UserRole::User,
            status: UserStatus::Unverified,
            login: data.login,
            grafana_org_name: Uuid::new_v4(),
            grafana_org_id: None,
            create_datetime: domain::now(),
            hashed_password: hash.hash,
            cipher_dynamic_salt: self.cipher.encrypt(&hash.dynamic_salt)?,
            telegram_chat_id: None,
            telegram_language: None,
        };
        // the first registration becomes the Admin: decided by one claimed row in the same
        // transaction (not by counting users first, which concurrent registrations all pass)
        let mut tx = self.pool().begin().await?;
        store::users::insert(&mut *tx, &user)
            .await
            .map_err(|e| AppError::from(e).on_conflict(|| AppError::user("Login is not unique")))?;
        if store::users::claim_first_admin(&mut *tx, user.uuid, &user.create_datetime).await? {
            store::users::set_role(&mut *tx, user.uuid, UserRole::Admin).await?;
            user.role = UserRole::Admin;
        }
        tx.commit().await?;
        Ok(user)
    }

    pub async fn authenticate(&self, agent: &Agent, data: UserAuth) -> AppResult<String> {
        agent.require(&[AgentType::Bot])?;
        if data.credentials.len() > 100 || data.password.len() > 100 {
            return Err(AppError::no_access("Password hash mismatched"));
        }
        let user = store::users::get_by_credentials(self.pool(), &data.credentials)
            .await?
            .ok_or_else(AppError::not_found)?;
        if user.status == UserStatus::Blocked {
            return Err(AppError::no_access("Agent is blocked or not found"));
        }
        let dynamic_salt = self.cipher.decrypt(&user.cipher_dynamic_salt)?;
        let static_salt = self.config.static_salt.clone();
        let hash = user.hashed_password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            crypto::verify_password(&data.password, &dynamic_salt, &static_salt, &hash)
        })
        .await
        .map_err(AppError::internal)?;
        if !ok {
            return Err(AppError::no_access("Password hash mismatched"));
        }
        let exp = chrono::Utc::now().timestamp() + self.config.auth_token_expiration;
        Ok(self.tokens.user_token(user.uuid, exp))
    }

    pub async fn get_user(&self, agent: &Agent, uuid: Uuid) -> AppResult<User> {
        agent.require(&[AgentType::User, AgentType::Grafana])?;
        store::users::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)
    }

    /// Updates the caller (the path uuid is ignored, as upstream). Empty strings keep the value.
    pub async fn update_user(&self, agent: &Agent, data: UserUpdate) -> AppResult<User> {
        let mut user = agent.user()?.clone();
        if let Some(login) = data.login.filter(|l| !l.is_empty()) {
            check_login(&login)?;
            if store::users::login_taken(self.pool(), &login, Some(user.uuid)).await? {
                return Err(AppError::user("Login is not unique"));
            }
            user.login = login;
        }
        if let Some(password) = data.password.filter(|p| !p.is_empty()) {
            check_password(&password)?;
            let hash = self.hash(password).await?;
            user.hashed_password = hash.hash;
            user.cipher_dynamic_salt = self.cipher.encrypt(&hash.dynamic_salt)?;
        }
        store::users::update_credentials(self.pool(), &user)
            .await
            .map_err(|e| AppError::from(e).on_conflict(|| AppError::user("Login is not unique")))?;
        Ok(user)
    }

    pub async fn set_user_blocked(
        &self,
        agent: &Agent,
        uuid: Uuid,
        blocked: bool,
    ) -> AppResult<()> {
        let admin = agent.require_admin()?;
        let user = store::users::get(self.pool(), uuid)
            .await?
            .ok_or_else(AppError::not_found)?;
        if blocked && user.uuid == admin.uuid {
            return Err(AppError::user("An Admin cannot block themselves"));
        }
        let status = if blocked {
            UserStatus::Blocked
        } else if user.telegram_chat_id.is_some() {
            UserStatus::Verified
        } else {
            UserStatus::Unverified
        };
        store::users::set_status(self.pool(), uuid, status).await?;
        self.live.access_changed();
        Ok(())
    }

    pub async fn list_users(
        &self,
        agent: &Agent,
        filter: UserFilter,
    ) -> AppResult<(i64, Vec<User>)> {
        agent.require(&[AgentType::User])?;
        Ok(store::users::list(self.pool(), &filter).await?)
    }
}
