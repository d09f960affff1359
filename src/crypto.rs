//! AES-256-GCM for stored secrets and PBKDF2 password hashing, in the upstream formats.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use crate::error::AppError;

/// Largest plaintext we encrypt, as upstream (`Cipher Error` beyond it).
pub const MAX_CIPHER_LEN: usize = 1_000_000;
const PBKDF2_ROUNDS: u32 = 100_000;

/// Encrypts and decrypts with the instance's `PU_ENCRYPT_KEY`, as `b64(nonce).b64(ciphertext+tag)`.
#[derive(Clone)]
pub struct Cipher {
    aes: Aes256Gcm,
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Cipher {
            aes: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    pub fn encrypt(&self, plaintext: &str) -> Result<String, AppError> {
        if plaintext.chars().count() > MAX_CIPHER_LEN {
            return Err(AppError::cipher(format!(
                "The length of the content exceeds {MAX_CIPHER_LEN} characters"
            )));
        }
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .aes
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| AppError::internal("aes-gcm encryption failed"))?;
        Ok(format!("{}.{}", B64.encode(nonce), B64.encode(ct)))
    }

    pub fn decrypt(&self, data: &str) -> Result<String, AppError> {
        let (nonce, ct) = data
            .split_once('.')
            .ok_or_else(|| AppError::internal("stored ciphertext has no nonce"))?;
        let nonce = B64
            .decode(nonce)
            .map_err(|_| AppError::internal("stored nonce is not base64"))?;
        if nonce.len() != 12 {
            return Err(AppError::internal("stored nonce has a wrong length"));
        }
        let ct = B64
            .decode(ct)
            .map_err(|_| AppError::internal("stored ciphertext is not base64"))?;
        let plain = self
            .aes
            .decrypt(Nonce::from_slice(&nonce), ct.as_ref())
            .map_err(|_| {
                AppError::internal("stored ciphertext does not decrypt with PU_ENCRYPT_KEY")
            })?;
        String::from_utf8(plain).map_err(|_| AppError::internal("decrypted value is not UTF-8"))
    }
}

/// base64 of `n` random bytes: device keys, salts.
pub fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    B64.encode(buf)
}

/// Lowercase hex of `n` random bytes: tokens, codes and generated secrets.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// A stored password: PBKDF2-HMAC-SHA256 over `dynamic_salt + static_salt`.
pub struct PasswordHash {
    pub hash: String,
    pub dynamic_salt: String,
}

pub fn hash_password(password: &str, static_salt: &str) -> PasswordHash {
    let dynamic_salt = random_b64(16);
    let hash = pbkdf2_b64(password, &dynamic_salt, static_salt);
    PasswordHash { hash, dynamic_salt }
}

pub fn verify_password(password: &str, dynamic_salt: &str, static_salt: &str, hash: &str) -> bool {
    let computed = pbkdf2_b64(password, dynamic_salt, static_salt);
    // constant-time comparison of equal-length base64 strings
    computed.len() == hash.len()
        && computed
            .bytes()
            .zip(hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn pbkdf2_b64(password: &str, dynamic_salt: &str, static_salt: &str) -> String {
    let salt = format!("{dynamic_salt}{static_salt}");
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        PBKDF2_ROUNDS,
        &mut out,
    );
    B64.encode(out)
}

/// Compares secrets in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex (checksums in archives, ticket hashes, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hex HMAC of the instance secret for one purpose: a stable secret nobody has to configure
/// (the Telegram webhook's, the EMQX alert webhook's).
pub fn derived_secret(secret_key: &str, purpose: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(purpose);
    hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_round_trips_and_detects_tampering() {
        let c = Cipher::new(&[7u8; 32]);
        let enc = c.encrypt("{\"a\":1}").unwrap();
        assert_eq!(c.decrypt(&enc).unwrap(), "{\"a\":1}");
        let mut tampered = enc.clone();
        tampered.pop();
        tampered.push(if enc.ends_with('A') { 'B' } else { 'A' });
        assert!(c.decrypt(&tampered).is_err());
        assert!(Cipher::new(&[8u8; 32]).decrypt(&enc).is_err());
        assert!(c.encrypt(&"x".repeat(MAX_CIPHER_LEN + 1)).is_err());
    }

    #[test]
    fn password_verifies() {
        let h = hash_password("secret-pass", "static");
        assert!(verify_password(
            "secret-pass",
            &h.dynamic_salt,
            "static",
            &h.hash
        ));
        assert!(!verify_password(
            "secret-pasS",
            &h.dynamic_salt,
            "static",
            &h.hash
        ));
    }
}
