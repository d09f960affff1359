//! HTTP signatures (draft-cavage, RSA-SHA256) on our outgoing requests and checks on incoming
//! ones. Outgoing requests sign `(request-target) host date digest` as Mastodon does, which
//! every fediverse server accepts. Incoming requests must sign `(request-target)`, `host`,
//! `date` (or `(created)`), and `digest` on requests with a body; the digest must match the
//! body; the signature may be at most one hour old and `Date` at most five minutes ahead.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as Base64;
use base64::Engine;
use http_signature_normalization_reqwest::prelude::{Config, DefaultSpawner, SignExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Request, RequestBuilder};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use url::Url;

/// How old a signature may be.
pub const SIGNATURE_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// How far in the future a `Date` header may be (clock skew).
pub const DATE_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

static SIGN_CONFIG: LazyLock<Config<DefaultSpawner>> = LazyLock::new(|| {
    Config::new()
        .mastodon_compat()
        .set_expiration(SIGNATURE_MAX_AGE)
});

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("request is not signed")]
    Missing,
    #[error("signature header is malformed: {0}")]
    Malformed(String),
    #[error("signature does not cover {0}")]
    Uncovered(&'static str),
    #[error("signature has expired or Date is out of range")]
    Expired,
    #[error("body digest does not match the body")]
    Digest,
    #[error("signature does not verify with the actor's key")]
    Invalid,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// `{actor}#main-key`, the key id every local actor publishes.
pub fn main_key_id(actor: &Url) -> String {
    format!("{actor}#main-key")
}

/// Signs a request (`body` empty for GET) as `key_id` and returns it ready to execute.
pub async fn sign(
    builder: RequestBuilder,
    url: &Url,
    key_id: String,
    body: Vec<u8>,
    key: RsaPrivateKey,
) -> Result<Request, SignatureError> {
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "host",
        HeaderValue::from_str(&host).map_err(|e| SignatureError::Sign(e.to_string()))?,
    );
    headers.insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            .map_err(|e| SignatureError::Sign(e.to_string()))?,
    );
    builder
        .headers(headers)
        .signature_with_digest(
            SIGN_CONFIG.clone(),
            key_id,
            Sha256::new(),
            body,
            move |signing_string| {
                let signature = key
                    .sign(
                        Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(signing_string.as_bytes()),
                    )
                    .map_err(|e| SignError(e.to_string()))?;
                Ok(Base64.encode(signature))
            },
        )
        .await
        .map_err(|e: SignError| SignatureError::Sign(e.0))
}

struct SignError(String);
impl From<http_signature_normalization_reqwest::SignError> for SignError {
    fn from(e: http_signature_normalization_reqwest::SignError) -> Self {
        SignError(e.to_string())
    }
}
impl From<reqwest::Error> for SignError {
    fn from(e: reqwest::Error) -> Self {
        SignError(e.to_string())
    }
}

/// The parts of an incoming request a signature check needs.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `None` for requests without a body (GET).
    pub body: Option<&'a [u8]>,
}

impl SignedRequest<'_> {
    /// The actor named by the signature's `keyId` (the key id without its fragment).
    pub fn key_owner(&self) -> Result<Url, SignatureError> {
        let header = self
            .headers
            .get("signature")
            .ok_or(SignatureError::Missing)?
            .to_str()
            .map_err(|_| SignatureError::Malformed("not ASCII".into()))?;
        let key_id = header
            .split(',')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(k, _)| k.trim() == "keyId")
            .map(|(_, v)| v.trim().trim_matches('"'))
            .ok_or_else(|| SignatureError::Malformed("no keyId".into()))?;
        let mut url = Url::parse(key_id)
            .map_err(|_| SignatureError::Malformed("keyId is not a URL".into()))?;
        url.set_fragment(None);
        Ok(url)
    }

    /// The checks that need no key: one Signature header naming the covered headers
    /// (`(request-target)`, `host`, `date` or `(created)`, and `digest` with a body), the
    /// digest matching the body, `Host` being `our_domain`, and `Date` within its window.
    /// Run before the signer's key is fetched, so junk never makes us fetch anything.
    pub fn precheck(&self, our_domain: &str) -> Result<(), SignatureError> {
        let mut signatures = self.headers.get_all("signature").iter();
        let header = signatures.next().ok_or(SignatureError::Missing)?;
        if signatures.next().is_some() {
            return Err(SignatureError::Malformed(
                "more than one Signature header".into(),
            ));
        }
        let header = header
            .to_str()
            .map_err(|_| SignatureError::Malformed("not ASCII".into()))?;
        // `verify` hands the library one value per header: every header it may read must
        // have exactly the one value checked here (a second Host or Digest would otherwise
        // be what the signature covers while the first is what was checked)
        if self.headers.contains_key("authorization") {
            return Err(SignatureError::Malformed(
                "an Authorization header beside the Signature".into(),
            ));
        }
        for name in ["host", "date", "digest"] {
            if self.headers.get_all(name).iter().count() > 1 {
                return Err(SignatureError::Malformed(format!(
                    "more than one {name} header"
                )));
            }
        }
        let mut covered = None;
        let mut seen = Vec::new();
        for part in header.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(SignatureError::Malformed(
                    "parameter without a value".into(),
                ));
            };
            let k = k.trim();
            if seen.contains(&k) {
                return Err(SignatureError::Malformed(format!("{k} given twice")));
            }
            seen.push(k);
            if k == "headers" {
                covered = Some(v.trim().trim_matches('"').to_ascii_lowercase());
            }
        }
        let covered = covered.unwrap_or_else(|| "date".to_string());
        let covered: Vec<&str> = covered.split_whitespace().collect();
        for name in covered.iter().filter(|n| !n.starts_with('(')) {
            if self.headers.get_all(*name).iter().count() > 1 {
                return Err(SignatureError::Malformed(format!(
                    "more than one {name} header"
                )));
            }
        }
        for needed in ["(request-target)", "host"] {
            if !covered.contains(&needed) {
                return Err(SignatureError::Uncovered(needed));
            }
        }
        if !covered.contains(&"date") && !covered.contains(&"(created)") {
            return Err(SignatureError::Uncovered("date"));
        }
        let host = self
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !host.eq_ignore_ascii_case(our_domain) {
            return Err(SignatureError::Malformed(format!(
                "signed for host {host:?}, this is {our_domain}"
            )));
        }
        if let Some(body) = self.body {
            if !covered.contains(&"digest") {
                return Err(SignatureError::Uncovered("digest"));
            }
            let digest = self.headers.get("digest").and_then(|d| d.to_str().ok());
            check_digest(digest, body)?;
        }
        if let Some(date) = self.headers.get("date") {
            let date = date
                .to_str()
                .ok()
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .ok_or(SignatureError::Expired)?;
            let now = SystemTime::now();
            if date > now + DATE_MAX_SKEW || date + SIGNATURE_MAX_AGE < now {
                return Err(SignatureError::Expired);
            }
        }
        Ok(())
    }

    /// Checks the signature against the owner's public key (PEM, SPKI). Call
    /// [`SignedRequest::precheck`] first.
    pub fn verify(&self, public_key_pem: &str) -> Result<(), SignatureError> {
        let mut headers = BTreeMap::new();
        for (name, value) in self.headers {
            if let Ok(v) = value.to_str() {
                headers.insert(name.as_str().to_string(), v.to_string());
            }
        }
        let config = http_signature_normalization::Config::new().set_expiration(SIGNATURE_MAX_AGE);
        let unverified = config
            .begin_verify(self.method, self.path_and_query, headers)
            .map_err(|e| match e {
                http_signature_normalization::PrepareVerifyError::Validate(_) => {
                    SignatureError::Expired
                }
                other => SignatureError::Malformed(other.to_string()),
            })?;
        let key = RsaPublicKey::from_public_key_pem(public_key_pem)
            .map_err(|_| SignatureError::Invalid)?;
        let ok = unverified.verify(|signature, signing_string| {
            let Ok(signature) = Base64.decode(signature) else {
                return false;
            };
            key.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(signing_string.as_bytes()),
                &signature,
            )
            .is_ok()
        });
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

fn check_digest(header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Digest)?;
    let expected = Base64.encode(Sha256::digest(body));
    let mut saw_sha256 = false;
    for part in header.split(',') {
        if let Some((alg, value)) = part.trim().split_once('=') {
            if alg.eq_ignore_ascii_case("SHA-256") {
                saw_sha256 = true;
                if value != expected {
                    return Err(SignatureError::Digest);
                }
            }
        }
    }
    if saw_sha256 {
        Ok(())
    } else {
        Err(SignatureError::Digest)
    }
}
