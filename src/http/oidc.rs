//! The OIDC provider Grafana signs in through (issue 19), at upstream's paths under
//! `/grafana/oidc` plus the discovery document and JWKS: parsing and encoding only; the rules
//! are `service::oidc` and `domain::oidc`. Protocol errors are RFC 6749's
//! `{"error", "error_description"}`, not the API's `detail`; FeatureDisabled is the API's 405.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::domain::oidc::{cookie_value, OidcError, UserClaims};
use crate::error::AppResult;
use crate::service::oidc::OidcFailure;
use crate::service::Instance;

pub fn router() -> OpenApiRouter<Instance> {
    OpenApiRouter::new()
        .routes(routes!(discovery))
        .routes(routes!(jwks))
        .routes(routes!(authorize))
        .routes(routes!(token))
        .routes(routes!(userinfo, userinfo_post))
}

/// An OIDC answer: JSON never cached (RFC 6749 §5.1).
fn no_store(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

struct Failure(OidcFailure);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let e = match self.0 {
            OidcFailure::App(e) => return e.into_response(),
            OidcFailure::Protocol(e) => e,
        };
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = no_store(status, e.body());
        let challenge = match e.error {
            "invalid_client" if status == StatusCode::UNAUTHORIZED => {
                Some(r#"Basic realm="pepeunit-oidc""#.to_string())
            }
            "invalid_token" => Some(format!(
                r#"Bearer error="invalid_token", error_description="{}""#,
                e.description.replace('"', "'")
            )),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

impl From<OidcFailure> for Failure {
    fn from(e: OidcFailure) -> Self {
        Failure(e)
    }
}

impl From<OidcError> for Failure {
    fn from(e: OidcError) -> Self {
        Failure(OidcFailure::Protocol(e))
    }
}

/// OpenID Connect Discovery: the issuer is `{origin}/pepeunit/api/v1/grafana/oidc`.
#[utoipa::path(get, path = "/grafana/oidc/.well-known/openid-configuration", tag = "grafana", responses((status = 200, description = "OpenID provider metadata"), (status = 405)))]
async fn discovery(State(instance): State<Instance>) -> AppResult<axum::Json<Value>> {
    Ok(axum::Json(instance.oidc_discovery()?))
}

/// The id_token signing key (RS256) as a JWK set.
#[utoipa::path(get, path = "/grafana/oidc/jwks", tag = "grafana", responses((status = 200, description = "JWK set"), (status = 405)))]
async fn jwks(State(instance): State<Instance>) -> AppResult<axum::Json<Value>> {
    Ok(axum::Json(instance.oidc_jwks().await?))
}

/// The authorization endpoint (code flow, PKCE S256): the caller is the `PepeunitGrafana`
/// cookie's user. Redirects to the client's registered `redirect_uri` with `code` and
/// `state`, or with `error` (e.g. `login_required` without a valid cookie); an unknown client
/// or redirect URI gets a 400 and no redirect.
#[utoipa::path(get, path = "/grafana/oidc/authorize", tag = "grafana", responses((status = 302, description = "back to the client"), (status = 400, description = "client or redirect_uri not verified"), (status = 405)))]
async fn authorize(
    State(instance): State<Instance>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let location = instance
        .oidc_authorize(query.as_deref().unwrap_or(""), cookie_value(cookies))
        .await?;
    let location = HeaderValue::from_str(&location)
        .map_err(|_| OidcError::invalid_request("redirect_uri cannot be a Location"))?;
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The token endpoint (form): `grant_type=authorization_code`, `code`, `redirect_uri`,
/// `code_verifier`; the client authenticates with HTTP Basic or `client_id` +
/// `client_secret` in the form. Answers `access_token`, `token_type`, `expires_in` and a
/// signed `id_token`.
#[utoipa::path(post, path = "/grafana/oidc/token", tag = "grafana", responses((status = 200, description = "tokens"), (status = 400), (status = 401), (status = 405)))]
async fn token(
    State(instance): State<Instance>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Failure> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        // the flag still answers first
        instance.oidc_enabled().map_err(OidcFailure::App)?;
        return Err(OidcError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let answer = instance
        .oidc_token(&body, basic_credentials(&headers)?)
        .await?;
    Ok(no_store(
        StatusCode::OK,
        serde_json::to_value(answer).expect("token response serializes"),
    ))
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OidcError> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || OidcError::invalid_client("malformed Basic credentials");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", s.replace('&', "%26")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The signed-in user's claims (upstream's `sub, name, email, role, organization`).
#[utoipa::path(get, path = "/grafana/oidc/userinfo", tag = "grafana", responses((status = 200, description = "claims"), (status = 401), (status = 405)))]
async fn userinfo(
    State(instance): State<Instance>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let claims: UserClaims = instance.oidc_userinfo(bearer(&headers).as_deref())?;
    Ok(no_store(
        StatusCode::OK,
        serde_json::to_value(claims).expect("claims serialize"),
    ))
}

/// The same by POST (OpenID Connect Core §5.3.1).
#[utoipa::path(post, path = "/grafana/oidc/userinfo", tag = "grafana", responses((status = 200, description = "claims"), (status = 401), (status = 405)))]
async fn userinfo_post(state: State<Instance>, headers: HeaderMap) -> Result<Response, Failure> {
    userinfo(state, headers).await
}
