//! Sealing with the export passphrase: PBKDF2 derives an AES-256-GCM key for the sealed
//! fields (unit env and state storage, registry credentials) and an HMAC key for the
//! manifest's `mac`; import checks the MAC before it trusts anything the manifest says.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::archive::broken;
use crate::crypto::Cipher;
use crate::error::{AppError, AppResult};
use crate::store::transfer::Table;

pub(super) const KDF_ITERATIONS: u32 = 200_000;
pub(super) const MIN_PASSPHRASE: usize = 8;

/// Keys derived from the passphrase: AES-256-GCM for sealed fields, HMAC for the manifest.
pub(super) struct Sealer {
    pub(super) cipher: Cipher,
    mac_key: [u8; 32],
}

impl Sealer {
    pub(super) fn new(passphrase: &str, salt: &[u8]) -> Sealer {
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, KDF_ITERATIONS, &mut out);
        let mut enc = [0u8; 32];
        enc.copy_from_slice(&out[..32]);
        let mut mac_key = [0u8; 32];
        mac_key.copy_from_slice(&out[32..]);
        Sealer {
            cipher: Cipher::new(&enc),
            mac_key,
        }
    }

    pub(super) fn mac(&self, manifest: &Value) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(manifest.to_string().as_bytes());
        B64.encode(m.finalize().into_bytes())
    }

    fn verify(&self, manifest: &Value, mac: &str) -> bool {
        let Ok(raw) = B64.decode(mac) else {
            return false;
        };
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(manifest.to_string().as_bytes());
        m.verify_slice(&raw).is_ok()
    }
}

/// Fields sealed with the passphrase (left out without one).
pub(super) fn sealed_fields(table: &Table) -> &'static [&'static str] {
    match table.name {
        "units" => &["cipher_env", "cipher_state_storage"],
        "registry_credentials" => &["cipher_credentials"],
        _ => &[],
    }
}

/// The manifest's `sealed` entry: how the keys were derived and which fields are sealed.
pub(super) fn manifest_entry(salt: &[u8]) -> Value {
    json!({
        "kdf": "pbkdf2-hmac-sha256",
        "iterations": KDF_ITERATIONS,
        "salt": B64.encode(salt),
        "cipher": "aes-256-gcm",
        "fields": {"units": ["cipher_env", "cipher_state_storage"], "registry_credentials": ["cipher_credentials"]},
    })
}

impl Sealer {
    /// The sealer of an archive whose manifest has a `sealed` entry: the passphrase must give
    /// the keys whose MAC the manifest (without its `mac`) carries.
    pub(super) fn open(
        sealed: &Value,
        p: &str,
        manifest: &Value,
        mac: Option<String>,
    ) -> AppResult<Sealer> {
        let salt = sealed["salt"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| broken("sealed.salt is missing"))?;
        if sealed["iterations"].as_u64() != Some(KDF_ITERATIONS as u64) {
            return Err(broken("sealed.iterations is not the one this version uses"));
        }
        let sealer = Sealer::new(p, &salt);
        let mac = mac
            .as_deref()
            .ok_or_else(|| broken("a sealed archive without its mac"))?;
        if !sealer.verify(manifest, mac) {
            return Err(AppError::transfer(
                "Wrong passphrase, or the manifest was changed after export",
            ));
        }
        Ok(sealer)
    }
}
