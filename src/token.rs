//! HS256 JWTs with the exact claims and byte layout of upstream (API.md §2), and the RS256
//! id_tokens of the OIDC provider ([`IdTokenKey`]).
//!
//! Written by hand over `hmac`: the payload must be compact JSON with keys in upstream order so
//! that unit and backend tokens are byte-identical to the ones devices already hold.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Token is invalid")]
    Invalid,
    #[error("Token expired")]
    Expired,
}

/// The decoded payload of any token we accept.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub uuid: Option<String>,
    #[serde(rename = "type")]
    pub agent_type: String,
    pub exp: Option<i64>,
    pub domain: Option<String>,
    /// A unit token's generation (`gen`), absent before the unit's first rotation (0).
    #[serde(default)]
    pub gen: Option<i64>,
    /// A GrafanaUnitNode token's panel (`panel_uuid`).
    #[serde(default)]
    pub panel_uuid: Option<String>,
}

#[derive(Serialize)]
struct UserClaims<'a> {
    uuid: &'a str,
    #[serde(rename = "type")]
    agent_type: &'a str,
    exp: i64,
}

#[derive(Serialize)]
struct UnitClaims<'a> {
    uuid: &'a str,
    #[serde(rename = "type")]
    agent_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gen: Option<i64>,
}

#[derive(Serialize)]
struct GrafanaUnitNodeClaims<'a> {
    uuid: &'a str,
    panel_uuid: &'a str,
    #[serde(rename = "type")]
    agent_type: &'a str,
}

#[derive(Serialize)]
struct BackendClaims<'a> {
    domain: &'a str,
    #[serde(rename = "type")]
    agent_type: &'a str,
}

#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl TokenKey {
    pub fn new(secret_key: &str) -> Self {
        TokenKey {
            key: secret_key.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    fn sign(&self, payload: &impl Serialize) -> String {
        let payload = serde_json::to_vec(payload).expect("claims serialize");
        let signing_input = format!("{}.{}", B64URL.encode(HEADER), B64URL.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signing_input}.{}", B64URL.encode(sig))
    }

    pub fn user_token(&self, uuid: Uuid, exp: i64) -> String {
        self.sign(&UserClaims {
            uuid: &uuid.to_string(),
            agent_type: "User",
            exp,
        })
    }

    /// The `PepeunitGrafana` cookie's token (`{"uuid","type":"Grafana","exp"}`, upstream's):
    /// accepted only by the OIDC provider's authorize endpoint; REST and GraphQL refuse it
    /// (`Invalid agent type`).
    pub fn grafana_token(&self, uuid: Uuid, exp: i64) -> String {
        self.sign(&UserClaims {
            uuid: &uuid.to_string(),
            agent_type: "Grafana",
            exp,
        })
    }

    /// The token of a unit that was never rotated: upstream's, byte for byte.
    pub fn unit_token(&self, uuid: Uuid) -> String {
        self.unit_token_of(uuid, 0)
    }

    /// The token of a unit at a token generation. Generation 0 is upstream's token
    /// (`{"uuid","type"}`); a rotated unit's token carries its generation as a last claim
    /// `"gen"`, which the server compares with the unit's row (the official clients read only
    /// `uuid`).
    pub fn unit_token_of(&self, uuid: Uuid, generation: i64) -> String {
        self.sign(&UnitClaims {
            uuid: &uuid.to_string(),
            agent_type: "Unit",
            gen: (generation != 0).then_some(generation),
        })
    }

    /// The MQTT credential of a bridge (`{"uuid":"<bridge uuid>","type":"Bridge"}`, no expiry):
    /// accepted only by the broker hooks, and only while the bridge row exists. REST refuses it
    /// (`Invalid agent type`).
    pub fn bridge_token(&self, bridge: Uuid) -> String {
        self.sign(&UnitClaims {
            uuid: &bridge.to_string(),
            agent_type: "Bridge",
            gen: None,
        })
    }

    /// What Grafana's Infinity datasource sends for one node of one panel (upstream's
    /// `{"uuid","panel_uuid","type":"GrafanaUnitNode"}`, no expiry): accepted only by
    /// `grafana/datasource/`, and only while the node is linked to the panel.
    pub fn grafana_unit_node_token(&self, node: Uuid, panel: Uuid) -> String {
        self.sign(&GrafanaUnitNodeClaims {
            uuid: &node.to_string(),
            panel_uuid: &panel.to_string(),
            agent_type: "GrafanaUnitNode",
        })
    }

    pub fn backend_token(&self, domain: &str) -> String {
        self.sign(&BackendClaims {
            domain,
            agent_type: "Backend",
        })
    }

    /// Checks the signature (HS256 only, whatever the header claims) and `exp` when present.
    pub fn decode(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > 8192 {
            return Err(TokenError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let header: serde_json::Value = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        let sig = B64URL.decode(s).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = B64URL
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if let Some(exp) = claims.exp {
            if exp <= now {
                return Err(TokenError::Expired);
            }
        }
        Ok(claims)
    }
}

/// The OIDC provider's RS256 signing key: signs id_tokens, published as a JWK whose `kid` is
/// its RFC 7638 thumbprint (so a new key gets a new `kid` by itself).
#[derive(Clone)]
pub struct IdTokenKey {
    key: rsa::RsaPrivateKey,
    kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for IdTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl IdTokenKey {
    /// A new 2048-bit key as (private PKCS#8 PEM, public SPKI PEM). Slow (CPU-bound): call it
    /// off the async threads.
    pub fn generate() -> Result<(String, String), String> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key =
            rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
        let private = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        Ok((private.to_string(), public))
    }

    pub fn from_pem(private_pem: &str) -> Result<Self, String> {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).map_err(|e| e.to_string())?;
        let n = B64URL.encode(key.n().to_bytes_be());
        let e = B64URL.encode(key.e().to_bytes_be());
        // RFC 7638: the required members, lexicographic order, no spaces
        let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = B64URL.encode(<Sha256 as sha2::Digest>::digest(thumbprint.as_bytes()));
        Ok(IdTokenKey { key, kid, n, e })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7517), for the JWKS document.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }

    /// A JWS compact serialisation of `claims`, RS256 (RSASSA-PKCS1-v1_5 with SHA-256).
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let digest = <Sha256 as sha2::Digest>::digest(signing_input.as_bytes());
        let signature = self
            .key
            .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("PKCS#1 v1.5 signing with a valid 2048-bit key cannot fail");
        format!("{signing_input}.{}", B64URL.encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_token_is_upstreams_cookie_token() {
        let key = TokenKey::new("secret");
        let uuid = Uuid::parse_str("0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00").unwrap();
        let t = key.grafana_token(uuid, 1_900_000_000);
        let payload = B64URL.decode(t.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"uuid":"0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00","type":"Grafana","exp":1900000000}"#
        );
        assert_eq!(key.decode(&t, 0).unwrap().agent_type, "Grafana");
    }

    #[test]
    fn id_tokens_verify_with_the_published_key() {
        use rsa::pkcs8::DecodePublicKey;
        let (private, public) = IdTokenKey::generate().unwrap();
        let key = IdTokenKey::from_pem(&private).unwrap();
        assert_eq!(key.kid(), IdTokenKey::from_pem(&private).unwrap().kid());
        assert_eq!(key.kid().len(), 43, "base64url of a SHA-256");
        let t = key.sign(&serde_json::json!({"sub": "x", "aud": "grafana-client"}));
        let parts: Vec<&str> = t.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(key.jwk()["kid"], key.kid());
        let public = rsa::RsaPublicKey::from_public_key_pem(&public).unwrap();
        let digest =
            <Sha256 as sha2::Digest>::digest(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let signature = B64URL.decode(parts[2]).unwrap();
        public
            .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
            .expect("verifies");
        let mut forged = digest.to_vec();
        forged[0] ^= 1;
        assert!(public
            .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &forged, &signature)
            .is_err());
        // the JWK's modulus is the public key's
        use rsa::traits::PublicKeyParts;
        assert_eq!(
            B64URL.decode(key.jwk()["n"].as_str().unwrap()).unwrap(),
            public.n().to_bytes_be()
        );
    }

    #[test]
    fn unit_token_matches_pyjwt_layout() {
        let key = TokenKey::new("secret");
        let uuid = Uuid::parse_str("0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00").unwrap();
        let t = key.unit_token(uuid);
        let payload = B64URL.decode(t.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"uuid":"0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00","type":"Unit"}"#
        );
        assert_eq!(t, key.unit_token(uuid), "unit tokens are deterministic");
        let c = key.decode(&t, 0).unwrap();
        assert_eq!(c.agent_type, "Unit");
        assert_eq!(c.gen, None);
        assert_eq!(
            key.unit_token_of(uuid, 0),
            t,
            "generation 0 is upstream's token"
        );
    }

    #[test]
    fn rotated_unit_tokens_carry_their_generation() {
        let key = TokenKey::new("secret");
        let uuid = Uuid::parse_str("0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00").unwrap();
        let t = key.unit_token_of(uuid, 3);
        let payload = B64URL.decode(t.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"uuid":"0b9e1ee8-1e5a-4f79-a8ee-5e7b8c1b1f00","type":"Unit","gen":3}"#
        );
        assert_eq!(key.decode(&t, 0).unwrap().gen, Some(3));
        assert_ne!(t, key.unit_token(uuid));
    }

    #[test]
    fn rejects_forgeries_and_expiry() {
        let key = TokenKey::new("secret");
        let other = TokenKey::new("other");
        let u = Uuid::new_v4();
        let t = key.user_token(u, 100);
        assert_eq!(key.decode(&t, 50).unwrap().exp, Some(100));
        assert_eq!(key.decode(&t, 100).unwrap_err(), TokenError::Expired);
        assert_eq!(other.decode(&t, 50).unwrap_err(), TokenError::Invalid);
        assert_eq!(key.decode("garbage", 0).unwrap_err(), TokenError::Invalid);
        assert_eq!(key.decode("a.b.c", 0).unwrap_err(), TokenError::Invalid);
        // alg=none with the signature stripped
        let none_header = B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = t.split('.').nth(1).unwrap();
        assert_eq!(
            key.decode(&format!("{none_header}.{payload}."), 0)
                .unwrap_err(),
            TokenError::Invalid
        );
    }
}
