//! Scraper tokens (SPEC §7, issue 18 part 5): bearer tokens an admin generates for
//! Prometheus and monitoring, and revokes. A scraper token reads the metrics (the Prometheus
//! text, the MQTT core's and the node's reports), the load reports of every Unit, Repo and
//! user, and `load_limit`; nothing else accepts it, and it changes nothing. The token is shown
//! once, when it is made; only its SHA-256 is stored. `PU_METRICS_TOKEN`, when set, is a
//! scraper token of the config (it cannot be revoked over REST).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::scrapers::ScraperRow;

/// Scraper tokens an instance keeps at most.
pub const MAX_SCRAPERS: i64 = 100;
/// The prefix of every generated token (so a leaked one is recognisable).
pub const PREFIX: &str = "pus_";

/// A scraper token, without the token.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScraperToken {
    pub uuid: Uuid,
    pub name: String,
    pub creator_uuid: Option<Uuid>,
    pub create_datetime: String,
    /// When it last read something (null: never).
    pub last_used_datetime: Option<String>,
}

impl From<ScraperRow> for ScraperToken {
    fn from(r: ScraperRow) -> Self {
        ScraperToken {
            uuid: r.uuid,
            name: r.name,
            creator_uuid: r.creator_uuid,
            create_datetime: r.create_datetime,
            last_used_datetime: r.last_used_datetime,
        }
    }
}

/// A new token: `token` is shown this once.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NewScraperToken {
    pub token: String,
    #[serde(flatten)]
    pub scraper: ScraperToken,
}

/// `POST /scraper_tokens`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScraperTokenCreate {
    /// What reads with it (e.g. `prometheus`): 1 to 100 printable characters.
    pub name: String,
}

/// Who reads metrics or load: a signed-in agent, or a scraper.
pub enum Reader {
    Agent(Agent),
    Scraper,
}

/// A reader, borrowed: what the load reports take (`&Agent` converts).
#[derive(Clone, Copy)]
pub enum Viewer<'a> {
    Agent(&'a Agent),
    Scraper,
}

impl<'a> From<&'a Agent> for Viewer<'a> {
    fn from(agent: &'a Agent) -> Self {
        Viewer::Agent(agent)
    }
}

impl<'a> From<&'a Reader> for Viewer<'a> {
    fn from(reader: &'a Reader) -> Self {
        match reader {
            Reader::Agent(agent) => Viewer::Agent(agent),
            Reader::Scraper => Viewer::Scraper,
        }
    }
}

/// What a viewer sees of the load: everything (admins, scrapers) or one user's.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scope {
    pub user: Option<Uuid>,
    pub all: bool,
}

impl Scope {
    pub fn sees(&self, creator: Uuid) -> bool {
        self.all || self.user == Some(creator)
    }
}

impl Viewer<'_> {
    pub(super) fn scope(&self) -> AppResult<Scope> {
        match self {
            Viewer::Scraper => Ok(Scope {
                user: None,
                all: true,
            }),
            Viewer::Agent(agent) => Ok(Scope {
                user: Some(agent.user()?.uuid),
                all: agent.is_admin(),
            }),
        }
    }
}

impl Reader {
    /// Admins and scrapers.
    pub fn require_admin_or_scraper(&self) -> AppResult<()> {
        match self {
            Reader::Scraper => Ok(()),
            Reader::Agent(agent) => agent.require_admin().map(|_| ()),
        }
    }
}

fn sha256_hex(token: &str) -> String {
    crate::crypto::hex(&Sha256::digest(token.as_bytes()))
}

impl Instance {
    /// The reader of a metrics or load request: a bearer token (`Authorization: Bearer`)
    /// must be a live scraper token or `PU_METRICS_TOKEN` (403 otherwise); without one, the
    /// `x-auth-token` agent.
    pub async fn reader(
        &self,
        bearer: Option<&str>,
        auth_token: Option<&str>,
    ) -> AppResult<Reader> {
        let Some(bearer) = bearer else {
            return Ok(Reader::Agent(self.agent_from_token(auth_token).await?));
        };
        if let Some(token) = &self.config.metrics_token {
            if crate::crypto::constant_time_eq(bearer.as_bytes(), token.as_bytes()) {
                return Ok(Reader::Scraper);
            }
        }
        // a short or oddly shaped bearer is never looked up
        if bearer.starts_with(PREFIX) && bearer.len() == PREFIX.len() + 64 {
            let found = store::scrapers::use_scraper(
                self.pool(),
                &sha256_hex(bearer),
                &crate::domain::now(),
            )
            .await?;
            if found.is_some() {
                return Ok(Reader::Scraper);
            }
        }
        Err(AppError::no_access("Scraper token is invalid or revoked"))
    }

    /// `POST /scraper_tokens` (admins): a new token, shown this once.
    pub async fn create_scraper_token(
        &self,
        agent: &Agent,
        input: &ScraperTokenCreate,
    ) -> AppResult<NewScraperToken> {
        let admin = agent.require_admin()?;
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AppError::validation(
                "name: 1 to 100 characters, no control characters",
            ));
        }
        let _settings = self.admin_settings.lock().await;
        if store::scrapers::count_scrapers(self.pool()).await? >= MAX_SCRAPERS {
            return Err(AppError::validation(format!(
                "at most {MAX_SCRAPERS} scraper tokens; revoke one first"
            )));
        }
        let token = format!("{PREFIX}{}", crate::crypto::random_hex(32));
        let row = ScraperRow {
            uuid: Uuid::new_v4(),
            name: name.to_string(),
            creator_uuid: Some(admin.uuid),
            create_datetime: crate::domain::now(),
            last_used_datetime: None,
        };
        store::scrapers::insert_scraper(self.pool(), &row, &sha256_hex(&token)).await?;
        Ok(NewScraperToken {
            token,
            scraper: row.into(),
        })
    }

    /// `GET /scraper_tokens` (admins).
    pub async fn scraper_tokens(&self, agent: &Agent) -> AppResult<Vec<ScraperToken>> {
        agent.require_admin()?;
        Ok(store::scrapers::scrapers(self.pool())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// `DELETE /scraper_tokens/{uuid}` (admins): the token stops working at once.
    pub async fn revoke_scraper_token(&self, agent: &Agent, uuid: Uuid) -> AppResult<()> {
        agent.require_admin()?;
        if store::scrapers::delete_scraper(self.pool(), uuid).await? == 0 {
            return Err(AppError::not_found());
        }
        Ok(())
    }
}
