//! The chat bot's view of the product (SPEC §4, §5): who a chat is, linking a chat to a user,
//! the chat's language, a user's own unit and a visible repo by name, and who receives admin
//! alerts. The bot (`telegram/`) is a front door: it calls these and never the stores.

use uuid::Uuid;

use super::ports::ChatUser;
use super::repos::Repo;
use super::units::Unit;
use super::users::User;
use super::{Agent, Instance};
use crate::domain::UserStatus;
use crate::error::{AppError, AppResult};
use crate::store;

/// Who a chat is.
pub enum ChatAccount {
    /// No user linked this chat.
    Unlinked,
    /// The linked user is blocked: the bot answers nothing but that.
    Blocked(Box<User>),
    /// The linked user, acting through the bot with their own rights.
    Linked(Agent),
}

impl ChatAccount {
    pub fn user(&self) -> Option<&User> {
        match self {
            ChatAccount::Unlinked => None,
            ChatAccount::Blocked(u) => Some(u),
            ChatAccount::Linked(Agent::User(u)) => Some(u),
            ChatAccount::Linked(_) => None,
        }
    }
}

/// The Blocked rule, in one place: a blocked user acts nowhere (tokens, the bot, links) and
/// hears nothing (alerts, admin alerts).
pub fn is_blocked(user: &User) -> bool {
    user.status == UserStatus::Blocked
}

/// A user as an agent, unless the Blocked rule refuses it.
pub fn user_agent(user: User) -> AppResult<Agent> {
    if is_blocked(&user) {
        return Err(AppError::no_access("Agent is blocked or not found"));
    }
    Ok(Agent::User(Box::new(user)))
}

impl Instance {
    /// The account a chat is linked to.
    pub async fn chat_account(&self, chat: i64) -> AppResult<ChatAccount> {
        let user = store::users::by_telegram_chat(self.pool(), &chat.to_string()).await?;
        Ok(match user {
            None => ChatAccount::Unlinked,
            Some(user) if is_blocked(&user) => ChatAccount::Blocked(Box::new(user)),
            Some(user) => ChatAccount::Linked(user_agent(user)?),
        })
    }

    /// Remembers the language a user chose in the chat.
    pub async fn set_chat_language(&self, user: Uuid, language: &str) -> AppResult<()> {
        Ok(store::users::set_telegram_language(self.pool(), user, language).await?)
    }

    /// Links `chat` to `user` (a chat belongs to one user; a user has one chat), from a link
    /// code the bot redeemed. Returns the user, or `None` when it no longer exists.
    pub async fn link_chat(
        &self,
        user: Uuid,
        chat: i64,
        language: &str,
    ) -> AppResult<Option<User>> {
        store::users::link_telegram(self.pool(), user, &chat.to_string(), language).await?;
        Ok(store::users::get(self.pool(), user).await?)
    }

    /// The agent's own unit of that exact name (unit names are unique on an instance).
    pub async fn own_unit_by_name(&self, agent: &Agent, name: &str) -> AppResult<Option<Unit>> {
        let unit = store::units::by_name(self.pool(), name).await?;
        Ok(unit.filter(|u| Some(u.creator_uuid) == agent.uuid()))
    }

    /// The repo of that exact name if the agent may see it; a hidden repo is as absent as a
    /// missing one (the bot must not tell which private names exist).
    pub async fn visible_repo_by_name(&self, agent: &Agent, name: &str) -> AppResult<Option<Repo>> {
        let Some(repo) = store::repos::by_name(self.pool(), name).await? else {
            return Ok(None);
        };
        match self
            .check_visibility(agent, repo.uuid, repo.visibility_level)
            .await
        {
            Ok(()) => Ok(Some(repo)),
            Err(AppError::NoAccess { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The chat of a user who may hear from the instance (not Blocked, chat linked).
    pub fn chat_of(&self, user: &User) -> Option<ChatUser> {
        if is_blocked(user) {
            return None;
        }
        let chat = user.telegram_chat_id.as_deref()?.parse().ok()?;
        Some(ChatUser {
            user: user.uuid,
            chat,
            language: user.telegram_language.clone(),
        })
    }

    /// Admins who receive crash alerts: not Blocked, with a linked chat.
    pub async fn admin_chats(&self) -> AppResult<Vec<ChatUser>> {
        let admins = store::users::admins_with_telegram(self.pool()).await?;
        Ok(admins.iter().filter_map(|a| self.chat_of(a)).collect())
    }

    /// `GET /users/generate_verification_link/`: `https://t.me/<bot>?start=<code>` for the
    /// calling user (not Blocked).
    pub async fn telegram_link(&self, agent: &Agent) -> AppResult<String> {
        let user = agent.user()?;
        let bot = self
            .chat_bot
            .as_ref()
            .ok_or_else(AppError::feature_disabled)?;
        if is_blocked(user) {
            return Err(AppError::no_access("Blocked users cannot link Telegram"));
        }
        let name = bot
            .username()
            .await
            .map_err(|e| AppError::telegram(format!("the Telegram bot is not reachable: {e}")))?;
        Ok(format!(
            "https://t.me/{name}?start={}",
            bot.new_link_code(user.uuid)
        ))
    }

    /// Counts one request that came in over Telegram.
    pub fn count_telegram_request(&self) {
        self.node.count(crate::observe::Channel::Telegram);
    }
}
