//! The OIDC provider's rules (issue 19; docs/research/GRAFANA-UPSTREAM.md §4 and §6), pure:
//! authorization requests checked (RFC 6749 §4.1, OpenID Connect Core §3.1.2), PKCE S256
//! (RFC 7636), the bounded stores of codes and access tokens with the clock passed in, the
//! discovery document and the `PepeunitGrafana` cookie's `Set-Cookie` values.
//!
//! Upstream's provider checks nothing but the cookie; ours keeps its paths, its claim names
//! (`sub, name, email, role, organization`) and its cookie, and adds what the RFCs ask: exact
//! redirect URIs, `response_type=code`, PKCE, single-use short-lived codes bound to the client
//! and redirect URI, an echoed state and a nonce carried into the id_token.

use std::collections::HashMap;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The cookie `setGrafanaCookies` sets and the authorize endpoint reads (upstream's name).
pub const COOKIE: &str = "PepeunitGrafana";
/// Every Pepeunit user is an Editor of their own Grafana organisation (upstream).
pub const GRAFANA_ROLE: &str = "Editor";
/// Codes waiting for their exchange, at most (each lives `PU_GRAFANA_OIDC_CODE_TTL`).
pub const MAX_CODES: usize = 10_000;
/// Live codes of one user, at most; a new one replaces the oldest, so that one account cannot
/// fill the store and stop everyone else's sign-in.
pub const MAX_CODES_PER_USER: usize = 10;
/// Live access tokens, at most; past it, the one closest to its expiry goes first.
pub const MAX_ACCESS_TOKENS: usize = 20_000;
/// Longest `state`, `nonce` or `scope` accepted (they are kept with the code).
pub const MAX_PARAM_LEN: usize = 1024;

/// What the userinfo endpoint answers, upstream's claims: `sub` the user's uuid, `name` and
/// `email` the user's Grafana login (upstream's grafana.ini makes `name` the Grafana login and
/// upstream sends the Pepeunit login in both; ours is the account's uuid, see
/// `dashboard::grafana_login`), `role` always Editor, `organization` the user's Grafana
/// organisation name; ours adds `preferred_username`, the Pepeunit login, for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserClaims {
    pub sub: String,
    pub name: String,
    pub email: String,
    pub preferred_username: String,
    pub role: String,
    pub organization: String,
}

/// An error in RFC 6749 §5.2 form (`{"error", "error_description"}`) with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OidcError {
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        OidcError {
            status,
            error,
            description: description.into(),
        }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_client", description)
    }
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_token", description)
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// The registered client (Grafana): `PU_GRAFANA_OIDC_*`.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub redirect_uris: &'a [String],
    pub require_pkce: bool,
}

/// A checked authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The S256 challenge, when the client sent one.
    pub code_challenge: Option<String>,
}

/// Why an authorization request gets no code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client or its redirect URI is not verified: answered here, never redirected
    /// (RFC 6749 §4.1.2.1), so nobody can use us as an open redirector.
    Direct(OidcError),
    /// Sent back to the verified redirect URI as `?error=...&error_description=...&state=...`.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

/// Form or query parameters, each at most once (RFC 6749 §3.1: "MUST NOT be included more than
/// once").
pub fn single_params(raw: &str) -> Result<HashMap<String, String>, OidcError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OidcError::invalid_request(format!(
                "parameter {k} is repeated"
            )));
        }
    }
    Ok(out)
}

/// Checks an authorization request against the client, in the order RFC 6749 §4.1.2.1 asks:
/// first the client and redirect URI (refused directly), then the rest (refused by redirect).
pub fn check_authorize(
    params: &HashMap<String, String>,
    client: Client<'_>,
) -> Result<AuthRequest, Refusal> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let direct = |e| Err(Refusal::Direct(e));
    match get("client_id") {
        None => return direct(OidcError::invalid_request("client_id is required")),
        Some(id) if id != client.id => {
            return direct(OidcError::new(
                400,
                "invalid_client",
                "client_id is not a registered client",
            ))
        }
        Some(_) => {}
    }
    let redirect_uri = match get("redirect_uri") {
        None => return direct(OidcError::invalid_request("redirect_uri is required")),
        Some(uri) if !client.redirect_uris.iter().any(|r| r == uri) => {
            return direct(OidcError::invalid_request(
                "redirect_uri is not registered for this client (exact match)",
            ))
        }
        Some(uri) => uri.to_string(),
    };
    for k in ["state", "nonce", "scope", "code_challenge"] {
        if get(k).is_some_and(|v| v.len() > MAX_PARAM_LEN) {
            return direct(OidcError::invalid_request(format!(
                "{k} is longer than {MAX_PARAM_LEN} bytes"
            )));
        }
    }
    let state = get("state").map(str::to_string);
    let refuse = |error: &'static str, description: &str| {
        Err(Refusal::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_string(),
            state: state.clone(),
        })
    };
    match get("response_type") {
        None => return refuse("invalid_request", "response_type is required"),
        Some("code") => {}
        Some(_) => {
            return refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    let scope = get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return refuse("invalid_scope", "scope must include openid");
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, Some(_)) => {
            return refuse(
                "invalid_request",
                "code_challenge_method without code_challenge",
            )
        }
        (None, None) if client.require_pkce => {
            return refuse(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            )
        }
        (None, None) => None,
        (Some(_), None | Some("plain")) => {
            return refuse(
                "invalid_request",
                "only code_challenge_method=S256 is supported",
            )
        }
        (Some(_), Some(m)) if m != "S256" => {
            return refuse("invalid_request", "unknown code_challenge_method")
        }
        (Some(c), Some(_)) if !is_pkce_value(c) => {
            return refuse(
                "invalid_request",
                "code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]",
            )
        }
        (Some(c), Some(_)) => Some(c.to_string()),
    };
    Ok(AuthRequest {
        redirect_uri,
        scope: scope.to_string(),
        state,
        nonce: get("nonce").map(str::to_string),
        code_challenge,
    })
}

/// A code verifier or challenge: 43 to 128 unreserved characters (RFC 7636 §4.1).
fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `BASE64URL(SHA256(verifier)) == challenge` (RFC 7636 §4.6), in constant time.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    if !is_pkce_value(verifier) {
        return false;
    }
    let computed = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `redirect_uri` with `pairs` added to its query (keeping the query it has).
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        // registered URIs are checked at start; a request's URI matched one of them
        Err(_) => return redirect_uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

impl Refusal {
    /// The Location of a redirected refusal.
    pub fn location(
        redirect_uri: &str,
        error: &str,
        description: &str,
        state: Option<&str>,
    ) -> String {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        redirect_with(redirect_uri, &pairs)
    }
}

/// What a code stands for until its exchange.
#[derive(Clone, Debug)]
pub struct Grant {
    pub client_id: String,
    pub request: AuthRequest,
    pub claims: UserClaims,
    /// When the user was authenticated (unix seconds), the id_token's `auth_time`.
    pub auth_time: i64,
    pub expires: Instant,
}

/// The authorization codes: single use (taken on their first exchange, good or bad), dead at
/// `expires`, at most [`MAX_CODES`] and [`MAX_CODES_PER_USER`] of one user (`sub`).
#[derive(Debug, Default)]
pub struct Codes(HashMap<String, Grant>);

impl Codes {
    /// Keeps `grant` under `code`, dropping the user's oldest code when they hold
    /// [`MAX_CODES_PER_USER`]; `false` when the store is full of live codes.
    pub fn insert(&mut self, code: String, grant: Grant, now: Instant) -> bool {
        let sub = grant.claims.sub.as_str();
        let mine: Vec<(&String, Instant)> = self
            .0
            .iter()
            .filter(|(_, g)| g.claims.sub == sub)
            .map(|(c, g)| (c, g.expires))
            .collect();
        if mine.len() >= MAX_CODES_PER_USER {
            if let Some(oldest) = mine
                .iter()
                .min_by_key(|(_, e)| *e)
                .map(|(c, _)| (*c).clone())
            {
                self.0.remove(&oldest);
            }
        }
        if self.0.len() >= MAX_CODES {
            self.0.retain(|_, g| g.expires > now);
            if self.0.len() >= MAX_CODES {
                return false;
            }
        }
        self.0.insert(code, grant);
        true
    }

    /// The grant of `code`, removed; `None` for an unknown, used or expired code.
    pub fn take(&mut self, code: &str, now: Instant) -> Option<Grant> {
        self.0.remove(code).filter(|g| g.expires > now)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The token request's checks against the code's grant (RFC 6749 §4.1.3, RFC 7636 §4.6). The
/// client is already authenticated as `client_id`.
pub fn check_exchange(
    grant: &Grant,
    client_id: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<(), OidcError> {
    if grant.client_id != client_id {
        return Err(OidcError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if redirect_uri != Some(grant.request.redirect_uri.as_str()) {
        return Err(OidcError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    if let Some(challenge) = &grant.request.code_challenge {
        match code_verifier {
            None => return Err(OidcError::invalid_grant("code_verifier is required (PKCE)")),
            Some(v) if !pkce_s256_matches(v, challenge) => {
                return Err(OidcError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Live access tokens (opaque) with the claims userinfo answers, at most
/// [`MAX_ACCESS_TOKENS`]: a full store drops its expired tokens, then the one closest to expiry.
#[derive(Debug, Default)]
pub struct AccessTokens(HashMap<String, (UserClaims, Instant)>);

impl AccessTokens {
    pub fn insert(&mut self, token: String, claims: UserClaims, expires: Instant, now: Instant) {
        if self.0.len() >= MAX_ACCESS_TOKENS {
            self.0.retain(|_, (_, e)| *e > now);
        }
        if self.0.len() >= MAX_ACCESS_TOKENS {
            if let Some(first) = self
                .0
                .iter()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(k, _)| k.clone())
            {
                self.0.remove(&first);
            }
        }
        self.0.insert(token, (claims, expires));
    }

    /// The claims of a live token.
    pub fn get(&mut self, token: &str, now: Instant) -> Option<UserClaims> {
        match self.0.get(token) {
            Some((claims, expires)) if *expires > now => Some(claims.clone()),
            Some(_) => {
                self.0.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The id_token's claims (OpenID Connect Core §2), with upstream's userinfo claims.
#[derive(Debug, Serialize)]
pub struct IdTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a str>,
    pub name: &'a str,
    pub email: &'a str,
    pub preferred_username: &'a str,
    pub role: &'a str,
    pub organization: &'a str,
}

/// A successful token response (RFC 6749 §5.1 with OpenID Connect's `id_token`).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    pub scope: String,
}

/// The discovery document (OpenID Connect Discovery 1.0 §3) of the provider at `issuer`,
/// whose endpoints are `{issuer}/authorize`, `/token`, `/userinfo` and `/jwks`.
pub fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
            "name", "email", "role", "organization"
        ],
    })
}

/// The `Set-Cookie` value of `setGrafanaCookies`: a session cookie (as upstream: no Max-Age;
/// the token inside expires), HttpOnly, SameSite=Lax so Grafana's top-level redirect to the
/// authorize endpoint carries it, Path=/ so it reaches `/pepeunit/...`, Secure over https.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/{secure}")
}

/// The `Set-Cookie` value of `deleteUserCookies`: empty, expired (as Starlette's
/// `delete_cookie`).
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax")
}

/// The `PepeunitGrafana` value among `Cookie` header values (`a=1; b=2`).
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 Appendix B
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn uris() -> Vec<String> {
        vec!["https://iot.example.com/grafana/login/generic_oauth".to_string()]
    }

    fn client(uris: &[String]) -> Client<'_> {
        Client {
            id: "grafana-client",
            secret: "s3cret-s3cret-s3cret",
            redirect_uris: uris,
            require_pkce: true,
        }
    }

    fn params(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut p: HashMap<String, String> = [
            ("response_type", "code"),
            ("client_id", "grafana-client"),
            (
                "redirect_uri",
                "https://iot.example.com/grafana/login/generic_oauth",
            ),
            ("scope", "openid profile email"),
            ("state", "st"),
            ("nonce", "nn"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            if v.is_empty() {
                p.remove(*k);
            } else {
                p.insert(k.to_string(), v.to_string());
            }
        }
        p
    }

    fn redirected(r: Result<AuthRequest, Refusal>) -> &'static str {
        match r {
            Err(Refusal::Redirect { error, state, .. }) => {
                assert_eq!(state.as_deref(), Some("st"), "state echoed");
                error
            }
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn pkce_s256_is_rfc7636s_example() {
        assert!(pkce_s256_matches(VERIFIER, CHALLENGE));
        assert!(!pkce_s256_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
        assert!(!pkce_s256_matches("short", CHALLENGE));
    }

    #[test]
    fn a_good_request_is_accepted() {
        let u = uris();
        let r = check_authorize(&params(&[]), client(&u)).unwrap();
        assert_eq!(r.state.as_deref(), Some("st"));
        assert_eq!(r.nonce.as_deref(), Some("nn"));
        assert_eq!(r.code_challenge.as_deref(), Some(CHALLENGE));
    }

    #[test]
    fn unverified_clients_and_uris_are_never_redirected() {
        let u = uris();
        for extra in [
            ("client_id", ""),
            ("client_id", "other"),
            ("redirect_uri", ""),
            ("redirect_uri", "https://evil.example/cb"),
            // exact match: no prefix, no trailing slash, no extra query
            (
                "redirect_uri",
                "https://iot.example.com/grafana/login/generic_oauth/",
            ),
            (
                "redirect_uri",
                "https://iot.example.com/grafana/login/generic_oauth?x=1",
            ),
        ] {
            match check_authorize(&params(&[extra]), client(&u)) {
                Err(Refusal::Direct(e)) => assert_eq!(e.status, 400, "{extra:?}"),
                other => panic!("{extra:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_faults_go_back_to_the_client_with_the_state() {
        let u = uris();
        let c = client(&u);
        assert_eq!(
            redirected(check_authorize(&params(&[("response_type", "token")]), c)),
            "unsupported_response_type"
        );
        assert_eq!(
            redirected(check_authorize(&params(&[("response_type", "")]), c)),
            "invalid_request"
        );
        assert_eq!(
            redirected(check_authorize(&params(&[("scope", "profile")]), c)),
            "invalid_scope"
        );
        for extra in [
            [("code_challenge", ""), ("code_challenge_method", "")],
            [("code_challenge_method", "plain"), ("nonce", "x")],
            [("code_challenge_method", ""), ("nonce", "x")],
            [("code_challenge", "too-short"), ("nonce", "x")],
        ] {
            assert_eq!(
                redirected(check_authorize(&params(&extra), c)),
                "invalid_request",
                "{extra:?}"
            );
        }
        // PKCE may be optional by configuration
        let lax = Client {
            require_pkce: false,
            ..c
        };
        let r = check_authorize(
            &params(&[("code_challenge", ""), ("code_challenge_method", "")]),
            lax,
        )
        .unwrap();
        assert_eq!(r.code_challenge, None);
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(single_params("a=1&b=2").is_ok());
        assert_eq!(
            single_params("a=1&a=2").unwrap_err().error,
            "invalid_request"
        );
    }

    fn grant(expires: Instant) -> Grant {
        grant_for("u", expires)
    }

    fn grant_for(sub: &str, expires: Instant) -> Grant {
        let u = uris();
        Grant {
            client_id: "grafana-client".into(),
            request: check_authorize(&params(&[]), client(&u)).unwrap(),
            claims: UserClaims {
                sub: sub.into(),
                name: "n".into(),
                email: "n".into(),
                preferred_username: "l".into(),
                role: GRAFANA_ROLE.into(),
                organization: "o".into(),
            },
            auth_time: 0,
            expires,
        }
    }

    #[test]
    fn codes_are_single_use_and_expire() {
        let t0 = Instant::now();
        let mut codes = Codes::default();
        assert!(codes.insert("c1".into(), grant(t0 + secs(60)), t0));
        assert!(codes.take("c1", t0 + secs(59)).is_some());
        assert!(codes.take("c1", t0 + secs(59)).is_none(), "single use");
        assert!(codes.insert("c2".into(), grant(t0 + secs(60)), t0));
        assert!(codes.take("c2", t0 + secs(60)).is_none(), "expired at 60 s");
        assert!(codes.is_empty(), "an expired code is removed too");
    }

    #[test]
    fn a_full_code_store_drops_expired_codes_then_refuses() {
        let t0 = Instant::now();
        let mut codes = Codes::default();
        for i in 0..MAX_CODES {
            let sub = format!("u{}", i / MAX_CODES_PER_USER);
            assert!(codes.insert(format!("c{i}"), grant_for(&sub, t0 + secs(1)), t0));
        }
        assert!(!codes.insert("late".into(), grant_for("new", t0 + secs(60)), t0));
        assert!(codes.insert("later".into(), grant(t0 + secs(60)), t0 + secs(2)));
        assert_eq!(codes.len(), 1);
    }

    #[test]
    fn one_user_holds_at_most_ten_codes_and_loses_the_oldest() {
        let t0 = Instant::now();
        let mut codes = Codes::default();
        for i in 0..MAX_CODES_PER_USER + 2 {
            assert!(codes.insert(format!("c{i}"), grant(t0 + secs(60 + i as u64)), t0));
        }
        assert_eq!(codes.len(), MAX_CODES_PER_USER);
        assert!(codes.take("c0", t0).is_none(), "the oldest went first");
        assert!(codes.take("c1", t0).is_none());
        assert!(codes.take("c2", t0).is_some());
        assert!(codes.insert("other".into(), grant_for("v", t0 + secs(60)), t0));
        assert!(
            codes.take("other", t0).is_some(),
            "another user is untouched"
        );
    }

    #[test]
    fn exchanges_are_bound_to_client_uri_and_verifier() {
        let g = grant(Instant::now());
        let uri = g.request.redirect_uri.clone();
        assert!(check_exchange(&g, "grafana-client", Some(&uri), Some(VERIFIER)).is_ok());
        for (client, uri, verifier) in [
            ("other", Some(uri.as_str()), Some(VERIFIER)),
            ("grafana-client", None, Some(VERIFIER)),
            (
                "grafana-client",
                Some("https://iot.example.com/x"),
                Some(VERIFIER),
            ),
            ("grafana-client", Some(uri.as_str()), None),
            (
                "grafana-client",
                Some(uri.as_str()),
                Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX"),
            ),
        ] {
            let e = check_exchange(&g, client, uri, verifier).unwrap_err();
            assert_eq!(e.error, "invalid_grant", "{client} {uri:?} {verifier:?}");
        }
    }

    #[test]
    fn access_tokens_live_until_expiry_and_stay_bounded() {
        let t0 = Instant::now();
        let mut tokens = AccessTokens::default();
        let claims = grant(t0).claims;
        tokens.insert("a".into(), claims.clone(), t0 + secs(10), t0);
        assert_eq!(tokens.get("a", t0 + secs(9)), Some(claims.clone()));
        assert_eq!(tokens.get("a", t0 + secs(10)), None);
        assert!(tokens.is_empty());
        for i in 0..MAX_ACCESS_TOKENS {
            tokens.insert(
                format!("t{i}"),
                claims.clone(),
                t0 + secs(100 + i as u64),
                t0,
            );
        }
        tokens.insert("new".into(), claims.clone(), t0 + secs(10_000_000), t0);
        assert_eq!(tokens.len(), MAX_ACCESS_TOKENS);
        assert_eq!(tokens.get("t0", t0), None, "the soonest to expire went");
        assert!(tokens.get("t1", t0).is_some());
        assert!(tokens.get("new", t0).is_some());
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("abc", false),
            "PepeunitGrafana=abc; HttpOnly; SameSite=Lax; Path=/"
        );
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
        assert_eq!(cookie_value(["a=1; PepeunitGrafana=tok; b=2"]), Some("tok"));
        assert_eq!(cookie_value(["a=1", "PepeunitGrafana=tok"]), Some("tok"));
        assert_eq!(cookie_value(["XPepeunitGrafana=tok"]), None);
        assert_eq!(cookie_value(["PepeunitGrafana=\"\""]), None);
    }

    #[test]
    fn refusal_locations_keep_the_query_and_echo_the_state() {
        let l = Refusal::location(
            "https://g.example/cb?x=1",
            "login_required",
            "no cookie",
            Some("s t"),
        );
        assert_eq!(
            l,
            "https://g.example/cb?x=1&error=login_required&error_description=no+cookie&state=s+t"
        );
    }
}
