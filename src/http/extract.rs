//! Request extractors: the calling agent, and JSON / query / path parsing whose failures are
//! 422 answers with a FastAPI-like `detail` list instead of axum's plain-text rejections.

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::service::{Agent, Instance};

/// Largest JSON body we parse (env and state storage are capped at 1M characters).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The agent behind `x-auth-token` (anonymous Bot without the header).
pub struct Caller(pub Agent);

impl FromRequestParts<Instance> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Instance,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get("x-auth-token") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| AppError::no_access("Token is invalid"))?,
            ),
        };
        Ok(Caller(state.agent_from_token(token).await?))
    }
}

/// Who reads metrics or load: `Authorization: Bearer <scraper token>` (403 when it is not a
/// live one; the scheme's case does not matter, RFC 9110 §11.1), else the agent behind
/// `x-auth-token`. Another scheme (a proxy's Basic auth) is not ours and is ignored.
pub struct Reading(pub crate::service::scrapers::Reader);

impl FromRequestParts<Instance> for Reading {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Instance,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| -> AppResult<Option<&str>> {
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(Some)
                    .map_err(|_| AppError::no_access("Token is invalid")),
            }
        };
        let bearer = header("authorization")?.and_then(|v| {
            let (scheme, token) = v.trim_start().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        Ok(Reading(
            state.reader(bearer, header("x-auth-token")?).await?,
        ))
    }
}

/// A JSON body.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Instance> for Json<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &Instance) -> Result<Self, Self::Rejection> {
        // the body is parsed as JSON whatever Content-Type says: some device clients send none
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                AppError::request(
                    "body",
                    None,
                    format!("Body is larger than {MAX_BODY} bytes"),
                )
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let name = (path != ".").then_some(path);
            AppError::request("body", name.as_deref(), e.inner().to_string())
        })?;
        de.end()
            .map_err(|e| AppError::request("body", None, e.to_string()))?;
        Ok(Json(value))
    }
}

/// Query parameters; repeated keys fill lists (`?uuids=a&uuids=b`).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Instance> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &Instance,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_html_form::from_str(query)
            .map(Query)
            .map_err(|e| AppError::request("query", None, e.to_string()))
    }
}

/// The `{uuid}` path parameter.
pub struct PathUuid(pub Uuid);

impl FromRequestParts<Instance> for PathUuid {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Instance,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|e| AppError::request("path", Some("uuid"), e.body_text()))?;
        Uuid::parse_str(&raw).map(PathUuid).map_err(|_| {
            AppError::request(
                "path",
                Some("uuid"),
                format!("Input should be a valid UUID, got {raw:?}"),
            )
        })
    }
}

/// How much of an oversized upload is read (and thrown away) before answering: a client
/// still sending would otherwise see a reset connection instead of the error.
pub const UPLOAD_DRAIN: usize = 4 * 1024 * 1024;

/// The bytes of the multipart field `name`; a missing field (or a body that is not
/// `multipart/form-data`) is upstream's 422 `Field required` on `["body", name]`.
/// A body longer than `max` bytes is `too_large()` (read on up to [`UPLOAD_DRAIN`] first).
pub async fn multipart_field(
    request: Request,
    state: &Instance,
    name: &str,
    max: usize,
    too_large: impl FnOnce() -> AppError,
) -> AppResult<Vec<u8>> {
    let missing = |msg: String| AppError::request("body", Some(name), msg);
    let (parts, body) = request.into_parts();
    let Some(body) = read_capped(body, max, max.saturating_mul(2).max(UPLOAD_DRAIN)).await? else {
        return Err(too_large());
    };
    let request = Request::from_parts(parts, Body::from(body));
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|e| missing(format!("Field required: {}", e.body_text())))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| missing(e.body_text()))?
    {
        if field.name() == Some(name) {
            let bytes = field.bytes().await.map_err(|e| missing(e.body_text()))?;
            return Ok(bytes.to_vec());
        }
    }
    Err(missing("Field required".into()))
}

/// The body when it has at most `keep` bytes, None when it is longer. A longer body is read
/// on, without keeping it, up to `drain` bytes: answering while the client still sends would
/// make it see a reset connection rather than the error.
async fn read_capped(mut body: Body, keep: usize, drain: usize) -> AppResult<Option<Vec<u8>>> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| AppError::request("body", None, e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > drain {
            break;
        }
        if total <= keep {
            kept.extend_from_slice(&data);
        }
    }
    Ok((total <= keep).then_some(kept))
}
