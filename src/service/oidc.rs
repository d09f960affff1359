//! Sign-in to Grafana with the Pepeunit account (issue 19): an OpenID Connect provider at
//! upstream's paths (`/grafana/oidc/authorize`, `token`, `userinfo`, plus the discovery
//! document and JWKS Grafana's generic OAuth can use) and the `PepeunitGrafana` cookie.
//!
//! Identity at authorize comes from the cookie that `setGrafanaCookies` sets (a `Grafana` JWT,
//! upstream's). The rules are in `domain::oidc`; this module holds the state:
//! - codes and access tokens live **in this process's memory** (bounded: `domain::oidc::MAX_CODES`
//!   codes, `MAX_ACCESS_TOKENS` tokens), so a restart signs nobody out of Grafana (Grafana keeps
//!   its own session) but voids codes and tokens in flight; instances behind one load balancer
//!   would need sticky routing for the three calls of one sign-in;
//! - the RS256 signing key is a row of `fed_keys` (name `oidc`, the instance's RSA keys), made
//!   on first use, so id_tokens verify across restarts and across processes sharing the DB.
//!
//! Everything answers FeatureDisabled (405) while `PU_FF_GRAFANA_INTEGRATION_ENABLE` is off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Agent, Instance};
use crate::domain::dashboard as dash;
use crate::domain::oidc::{
    self as rules, AccessTokens, Client, Codes, Grant, IdTokenClaims, OidcError, Refusal,
    TokenResponse, UserClaims,
};
use crate::domain::{AgentType, UserStatus};
use crate::error::{AppError, AppResult};
use crate::store;
use crate::token::IdTokenKey;

/// The name of the signing key's row in `fed_keys`.
const KEY_NAME: &str = "oidc";

/// The provider's state, shared by the clones of an `Instance`.
#[derive(Default)]
pub struct OidcProvider {
    key: OnceCell<Arc<IdTokenKey>>,
    codes: Mutex<Codes>,
    tokens: Mutex<AccessTokens>,
    /// Users whose Grafana organisation was made sure of at sign-in, and when: within
    /// [`PROVISION_INTERVAL`] a sign-in does not ask Grafana again (each time is 4 to 5 admin
    /// calls, and authorize can be called in a loop).
    provisioned: Mutex<HashMap<Uuid, Instant>>,
}

/// How long a sign-in's Grafana provisioning is trusted for the next sign-ins.
pub const PROVISION_INTERVAL: Duration = Duration::from_secs(60);
/// Users remembered as provisioned, at most.
const MAX_PROVISIONED: usize = 10_000;

/// Why an OIDC call failed: a protocol error (RFC 6749 form) or the instance's own error
/// (FeatureDisabled, internal).
#[derive(Debug)]
pub enum OidcFailure {
    Protocol(OidcError),
    App(AppError),
}

impl From<OidcError> for OidcFailure {
    fn from(e: OidcError) -> Self {
        OidcFailure::Protocol(e)
    }
}

impl From<AppError> for OidcFailure {
    fn from(e: AppError) -> Self {
        OidcFailure::App(e)
    }
}

pub type OidcResult<T> = Result<T, OidcFailure>;

fn random_token() -> String {
    crate::crypto::random_hex(32)
}

impl Instance {
    /// FeatureDisabled unless `PU_FF_GRAFANA_INTEGRATION_ENABLE`.
    pub fn oidc_enabled(&self) -> AppResult<()> {
        if self.config.ff_grafana {
            Ok(())
        } else {
            Err(AppError::feature_disabled())
        }
    }

    fn oidc_client(&self) -> Client<'_> {
        let c = &self.config.grafana_oidc;
        Client {
            id: &c.client_id,
            secret: &c.client_secret,
            redirect_uris: &c.redirect_uris,
            require_pkce: c.require_pkce,
        }
    }

    /// `{origin}{prefix}/grafana/oidc`: the issuer, and the base of the endpoints.
    pub fn oidc_issuer(&self) -> String {
        let c = &self.config;
        format!(
            "{}{}{}/grafana/oidc",
            c.origin(),
            c.app_prefix,
            c.api_prefix
        )
    }

    /// The signing key, loaded from `fed_keys` or made (once) on first use.
    async fn oidc_key(&self) -> AppResult<Arc<IdTokenKey>> {
        self.oidc
            .key
            .get_or_try_init(|| async {
                let pool = self.pool();
                let private = match store::federation::key(pool, KEY_NAME).await? {
                    Some((private, _)) => private,
                    None => {
                        let (private, public) = tokio::task::spawn_blocking(IdTokenKey::generate)
                            .await
                            .map_err(|e| AppError::internal(e.to_string()))?
                            .map_err(AppError::internal)?;
                        // two processes at once: the first row wins, both read it back
                        store::federation::insert_key(pool, KEY_NAME, &private, &public).await?;
                        store::federation::key(pool, KEY_NAME)
                            .await?
                            .ok_or_else(|| AppError::internal("the OIDC key vanished"))?
                            .0
                    }
                };
                let key = IdTokenKey::from_pem(&private)
                    .map_err(|e| AppError::internal(format!("stored OIDC key: {e}")))?;
                Ok::<_, AppError>(Arc::new(key))
            })
            .await
            .cloned()
    }

    /// `GET /grafana/oidc/.well-known/openid-configuration`.
    pub fn oidc_discovery(&self) -> AppResult<Value> {
        self.oidc_enabled()?;
        Ok(rules::discovery(&self.oidc_issuer()))
    }

    /// `GET /grafana/oidc/jwks`.
    pub async fn oidc_jwks(&self) -> AppResult<Value> {
        self.oidc_enabled()?;
        Ok(json!({"keys": [self.oidc_key().await?.jwk()]}))
    }

    /// `GET /grafana/oidc/authorize?{query}` with the `PepeunitGrafana` cookie's token: the
    /// Location to send the browser to (the code, or an error for the client, both with the
    /// state), or a protocol error answered directly when the client or its redirect URI is
    /// not verified.
    pub async fn oidc_authorize(&self, query: &str, cookie: Option<&str>) -> OidcResult<String> {
        self.oidc_enabled()?;
        let params = rules::single_params(query)?;
        let request = match rules::check_authorize(&params, self.oidc_client()) {
            Ok(r) => r,
            Err(Refusal::Direct(e)) => return Err(e.into()),
            Err(Refusal::Redirect {
                redirect_uri,
                error,
                description,
                state,
            }) => {
                return Ok(Refusal::location(
                    &redirect_uri,
                    error,
                    &description,
                    state.as_deref(),
                ))
            }
        };
        let refuse = |error: &str, description: &str| {
            Ok(Refusal::location(
                &request.redirect_uri,
                error,
                description,
                request.state.as_deref(),
            ))
        };
        let now = chrono::Utc::now().timestamp();
        let user =
            match cookie.map(|t| self.tokens.decode(t, now)) {
                None => {
                    return refuse(
                        "login_required",
                        "no PepeunitGrafana cookie: sign in to Pepeunit first",
                    )
                }
                Some(Err(_)) => return refuse(
                    "login_required",
                    "the PepeunitGrafana cookie is invalid or expired: sign in to Pepeunit again",
                ),
                Some(Ok(claims)) => {
                    let uuid = claims
                        .uuid
                        .as_deref()
                        .and_then(|u| Uuid::parse_str(u).ok())
                        .filter(|_| claims.agent_type == AgentType::Grafana.as_str());
                    let Some(uuid) = uuid else {
                        return refuse("login_required", "the cookie is not a Grafana token");
                    };
                    match store::users::get(self.pool(), uuid)
                        .await
                        .map_err(AppError::from)?
                    {
                        Some(u) if u.status != UserStatus::Blocked => u,
                        _ => return refuse("access_denied", "the account is blocked or deleted"),
                    }
                }
            };
        // upstream's `create_org_if_not_exists`: the user's Grafana organisation, user,
        // membership and datasource, so that Grafana's sign-in lands in them. A Grafana that
        // cannot be reached does not stop the sign-in: the next dashboard sync tries again.
        let recent = self
            .oidc
            .provisioned
            .lock()
            .expect("provisioned lock")
            .get(&user.uuid)
            .is_some_and(|at| at.elapsed() < PROVISION_INTERVAL);
        if !recent {
            match self.provision_grafana_user(&user).await {
                Ok(_) => {
                    let mut done = self.oidc.provisioned.lock().expect("provisioned lock");
                    if done.len() >= MAX_PROVISIONED {
                        done.retain(|_, at| at.elapsed() < PROVISION_INTERVAL);
                        if done.len() >= MAX_PROVISIONED {
                            done.clear();
                        }
                    }
                    done.insert(user.uuid, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(user = %user.uuid, error = %e.message(), "Grafana provisioning at sign-in failed")
                }
            }
        }
        let claims = UserClaims {
            sub: user.uuid.to_string(),
            name: dash::grafana_login(user.uuid),
            email: dash::grafana_login(user.uuid),
            preferred_username: user.login.clone(),
            role: rules::GRAFANA_ROLE.to_string(),
            organization: user.grafana_org_name.to_string(),
        };
        let code = random_token();
        let at = Instant::now();
        let grant = Grant {
            client_id: self.config.grafana_oidc.client_id.clone(),
            request: request.clone(),
            claims,
            auth_time: now,
            expires: at + Duration::from_secs(self.config.grafana_oidc.code_ttl_secs),
        };
        let kept = self
            .oidc
            .codes
            .lock()
            .expect("codes lock")
            .insert(code.clone(), grant, at);
        if !kept {
            return refuse(
                "temporarily_unavailable",
                "too many sign-ins in progress; try again in a minute",
            );
        }
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = &request.state {
            pairs.push(("state", s));
        }
        Ok(rules::redirect_with(&request.redirect_uri, &pairs))
    }

    /// `POST /grafana/oidc/token` (form): the authorization code grant. `basic`: the client's
    /// id and secret from `Authorization: Basic` (client_secret_basic), else they are in the
    /// form (client_secret_post).
    pub async fn oidc_token(
        &self,
        form: &str,
        basic: Option<(String, String)>,
    ) -> OidcResult<TokenResponse> {
        self.oidc_enabled()?;
        let params = rules::single_params(form)?;
        let client_id = self.authenticate_client(&params, basic)?;
        match params.get("grant_type").map(String::as_str) {
            None => return Err(OidcError::invalid_request("grant_type is required").into()),
            Some("authorization_code") => {}
            Some(_) => {
                return Err(OidcError::new(
                    400,
                    "unsupported_grant_type",
                    "only grant_type=authorization_code is supported",
                )
                .into())
            }
        }
        let Some(code) = params.get("code") else {
            return Err(OidcError::invalid_request("code is required").into());
        };
        // loaded before the code is taken, so a failure here does not burn the code
        let key = self.oidc_key().await?;
        let at = Instant::now();
        // taken whatever follows: a code gets one exchange, good or bad
        let grant = self
            .oidc
            .codes
            .lock()
            .expect("codes lock")
            .take(code, at)
            .ok_or_else(|| OidcError::invalid_grant("the code is unknown, used or expired"))?;
        rules::check_exchange(
            &grant,
            &client_id,
            params.get("redirect_uri").map(String::as_str),
            params.get("code_verifier").map(String::as_str),
        )?;
        let ttl = self.config.grafana_oidc.token_ttl_secs;
        let now = chrono::Utc::now().timestamp();
        let issuer = self.oidc_issuer();
        let c = &grant.claims;
        let id_token = key.sign(&IdTokenClaims {
            iss: &issuer,
            sub: &c.sub,
            aud: &client_id,
            exp: now + ttl as i64,
            iat: now,
            auth_time: grant.auth_time,
            nonce: grant.request.nonce.as_deref(),
            name: &c.name,
            email: &c.email,
            preferred_username: &c.preferred_username,
            role: &c.role,
            organization: &c.organization,
        });
        let access_token = random_token();
        self.oidc.tokens.lock().expect("tokens lock").insert(
            access_token.clone(),
            grant.claims.clone(),
            at + Duration::from_secs(ttl),
            at,
        );
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            id_token,
            scope: grant.request.scope,
        })
    }

    /// The client's id once its secret checks (RFC 6749 §2.3.1: one method per request).
    fn authenticate_client(
        &self,
        params: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<String, OidcError> {
        let post = params.get("client_secret").cloned();
        let posted_id = params.get("client_id").cloned();
        let (id, secret) =
            match (basic, post) {
                (Some(_), Some(_)) => {
                    return Err(OidcError::invalid_request(
                        "use one client authentication method, not both",
                    ))
                }
                (Some((id, secret)), None) => {
                    // a client_id in the form too must name the same client
                    if posted_id.as_ref().is_some_and(|p| *p != id) {
                        return Err(OidcError::invalid_request(
                            "client_id differs from the Authorization header's",
                        ));
                    }
                    (id, secret)
                }
                (None, Some(secret)) => match posted_id {
                    Some(id) => (id, secret),
                    None => return Err(OidcError::invalid_request("client_id is required")),
                },
                (None, None) => return Err(OidcError::invalid_client(
                    "client authentication is required (client_secret_basic or client_secret_post)",
                )),
            };
        let client = self.oidc_client();
        let id_ok = crate::crypto::constant_time_eq(id.as_bytes(), client.id.as_bytes());
        let secret_ok =
            crate::crypto::constant_time_eq(secret.as_bytes(), client.secret.as_bytes());
        if id_ok && secret_ok && !client.secret.is_empty() {
            Ok(id)
        } else {
            Err(OidcError::invalid_client("unknown client or wrong secret"))
        }
    }

    /// `GET /grafana/oidc/userinfo` with `Authorization: Bearer <access token>`.
    pub fn oidc_userinfo(&self, bearer: Option<&str>) -> OidcResult<UserClaims> {
        self.oidc_enabled()?;
        let Some(token) = bearer else {
            return Err(OidcError::invalid_token("a Bearer access token is required").into());
        };
        self.oidc
            .tokens
            .lock()
            .expect("tokens lock")
            .get(token, Instant::now())
            .ok_or_else(|| {
                OidcError::invalid_token("the access token is unknown or expired").into()
            })
    }

    /// `setGrafanaCookies`: the `Set-Cookie` value carrying the caller's Grafana token (USER
    /// tokens only; FeatureDisabled while the integration is off).
    pub fn grafana_cookie(&self, agent: &Agent) -> AppResult<String> {
        self.oidc_enabled()?;
        agent.require(&[AgentType::User])?;
        let uuid = agent.uuid().expect("a user has a uuid");
        let exp = chrono::Utc::now().timestamp() + self.config.auth_token_expiration;
        let token = self.tokens.grafana_token(uuid, exp);
        Ok(rules::set_cookie(&token, self.config.http_type == "https"))
    }

    /// `deleteUserCookies`: the `Set-Cookie` value clearing it (anyone may, as upstream).
    pub fn grafana_cookie_cleared(&self) -> String {
        rules::clear_cookie()
    }
}
