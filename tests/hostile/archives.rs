//! Account archives over `POST /users/import`: corrupt gzip, hand-made tar headers (absurd
//! sizes, `../` and absolute paths, links, devices, PAX and GNU extensions, many entries,
//! truncation), and real exports with hostile records, manifests and seals.

use std::io::Write;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{check, hostile_string, json_value, mutated, raw_json_text, Tally};
use crate::common::archive::{export, import, pack, sha256_hex, unpack};
use crate::common::fixtures::{registry_repo_unit, FirmwareRepo};
use crate::common::{Backend, TestInstance};

const PASS: &str = "correct horse battery";
/// The smallest cap the configuration allows, so that bombs hit it quickly.
const MAX_BYTES: &str = "1048576";

/// One tar header block as the format lays it out, fields given as raw bytes.
#[derive(Debug)]
struct RawEntry {
    name: Vec<u8>,
    size_field: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    good_checksum: bool,
    data: Vec<u8>,
}

impl RawEntry {
    fn write(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
            let n = v.len().min(len);
            h[at..at + n].copy_from_slice(&v[..n]);
        };
        put(&mut h, 0, 100, &self.name);
        put(&mut h, 100, 8, b"0000600\0");
        put(&mut h, 108, 8, b"0000000\0");
        put(&mut h, 116, 8, b"0000000\0");
        put(&mut h, 124, 12, &self.size_field);
        put(&mut h, 136, 12, b"00000000000\0");
        h[156] = self.kind;
        put(&mut h, 157, 100, &self.link);
        put(&mut h, 257, 8, b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        let sum = if self.good_checksum { sum } else { sum ^ 0o7 };
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.data);
        let pad = (512 - self.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
}

fn octal(n: u64) -> Vec<u8> {
    format!("{n:011o}\0").into_bytes()
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "manifest.json",
            "users.jsonl",
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "./manifest.json",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..100),
        Just(vec![b'a'; 100]),
    ];
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        Just(b"size=99999999999999999999\n".to_vec()),
        Just(b"30 path=../../../../etc/shadow\n".to_vec()),
        Just(b"25 size=1099511627776000\n".to_vec()),
        Just(b"{\"format\":\"pepeunit-account-export\",\"version\":1,\"files\":[]}".to_vec()),
    ];
    let kind = prop_oneof![
        prop::sample::select(b"0\x00123456789LKxgSVAM".to_vec()),
        any::<u8>(),
    ];
    (
        name,
        data,
        kind,
        hostile_string(),
        0u8..6,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(name, data, kind, link, size, good_checksum, big)| {
            let size_field = match size {
                0 | 1 => octal(data.len() as u64),
                // more than the data that follows: the archive ends inside the member
                2 => octal(data.len() as u64 + 1 + big % 100_000),
                3 => b"77777777777\0".to_vec(),
                // GNU base-256, up to 2^95
                4 => {
                    let mut f = vec![0x80u8; 12];
                    f[4..].copy_from_slice(&big.to_be_bytes());
                    f
                }
                _ => b"12x4\0garbage".to_vec(),
            };
            RawEntry {
                name,
                size_field,
                kind,
                link: link.into_bytes(),
                good_checksum,
                data,
            }
        })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A tar of hostile entries (or very many empty ones), ended properly or not, gzipped in one
/// or two members, maybe with bytes after the stream.
fn hostile_tar() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(raw_entry(), 0..6),
        prop_oneof![4 => Just(0usize), 1 => 1usize..5000],
        any::<bool>(),
        0u8..3,
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(entries, empties, trailer, split, tail)| {
            let mut tar = Vec::new();
            for e in &entries {
                e.write(&mut tar);
            }
            for i in 0..empties {
                RawEntry {
                    name: format!("e{i}").into_bytes(),
                    size_field: octal(0),
                    kind: b'0',
                    link: Vec::new(),
                    good_checksum: true,
                    data: Vec::new(),
                }
                .write(&mut tar);
            }
            if trailer {
                tar.extend(std::iter::repeat_n(0u8, 1024));
            }
            let mut out = match split {
                0 => gzip(&tar),
                // two gzip members, as `cat a.gz b.gz` makes
                1 => [gzip(&tar[..tar.len() / 2]), gzip(&tar[tar.len() / 2..])].concat(),
                _ => tar,
            };
            out.extend(tail);
            out
        })
}

/// What a real export is made of, for near-valid archives.
struct Exported {
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

/// One record, manifest entry or member of a real archive changed, checksums made right again
/// (so the change reaches the record checks and the write behind them).
#[derive(Debug, Clone)]
enum Edit {
    /// A field of a record set to a value (a new field when `field` names none).
    Field {
        member: usize,
        record: usize,
        field: usize,
        value: Value,
        fresh_key: Option<String>,
    },
    /// A record's line replaced by other JSON text.
    Line {
        member: usize,
        record: usize,
        text: String,
    },
    /// A manifest field set to a value.
    Manifest { field: usize, value: Value },
    /// A member dropped or added.
    Member {
        drop: Option<usize>,
        add: Option<(String, Vec<u8>)>,
    },
}

fn edit() -> impl Strategy<Value = Vec<Edit>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<usize>(), any::<usize>(), json_value(), prop::option::of(hostile_string()))
            .prop_map(|(member, record, field, value, fresh_key)| Edit::Field { member, record, field, value, fresh_key }),
        1 => (any::<usize>(), any::<usize>(), prop_oneof![raw_json_text(), json_value().prop_map(|v| v.to_string())])
            .prop_map(|(member, record, text)| Edit::Line { member, record, text }),
        2 => (any::<usize>(), json_value()).prop_map(|(field, value)| Edit::Manifest { field, value }),
        1 => (prop::option::of(any::<usize>()), prop::option::of(("[a-z0-9_]{1,12}(\\.jsonl)?", prop::collection::vec(any::<u8>(), 0..64))))
            .prop_map(|(drop, add)| Edit::Member { drop, add }),
    ];
    prop::collection::vec(one, 1..4)
}

fn apply(archive: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut members = unpack(archive);
    let jsonl: Vec<usize> = (0..members.len())
        .filter(|i| members[*i].0.ends_with(".jsonl"))
        .collect();
    for e in edits {
        match e {
            Edit::Field {
                member,
                record,
                field,
                value,
                fresh_key,
            } => {
                let m = jsonl[member % jsonl.len()];
                // a record an earlier edit made unreadable stays as it is
                let Ok(mut lines) = members[m]
                    .1
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(serde_json::from_slice)
                    .collect::<Result<Vec<Value>, _>>()
                else {
                    continue;
                };
                if lines.is_empty() {
                    continue;
                }
                let n = lines.len();
                let Some(rec) = lines[record % n].as_object_mut() else {
                    continue;
                };
                let key = match fresh_key {
                    Some(k) => k.clone(),
                    None => rec
                        .keys()
                        .nth(field % rec.len().max(1))
                        .cloned()
                        .unwrap_or_default(),
                };
                rec.insert(key, value.clone());
                members[m].1 = lines
                    .iter()
                    .flat_map(|l| (l.to_string() + "\n").into_bytes())
                    .collect();
            }
            Edit::Line {
                member,
                record,
                text,
            } => {
                let m = jsonl[member % jsonl.len()];
                let text = text.replace('\n', " ");
                let mut lines: Vec<Vec<u8>> = members[m]
                    .1
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                let n = lines.len();
                lines[record % n] = text.into_bytes();
                members[m].1 = lines
                    .iter()
                    .flat_map(|l| [&l[..], b"\n"].concat())
                    .collect();
            }
            Edit::Manifest { .. } | Edit::Member { .. } => {}
        }
    }
    // checksums and record counts made right again, then the manifest's own edits
    let mi = members
        .iter()
        .position(|(p, _)| p == "manifest.json")
        .unwrap();
    let mut manifest: Value = serde_json::from_slice(&members[mi].1).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if let Some((_, d)) = members
            .iter()
            .find(|(p, _)| Some(p.as_str()) == f["path"].as_str())
        {
            f["sha256"] = json!(sha256_hex(d));
            f["records"] = json!(d.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count());
        }
    }
    for e in edits {
        match e {
            Edit::Manifest { field, value } => {
                let m = manifest.as_object_mut().unwrap();
                let key = m.keys().nth(field % m.len()).cloned().unwrap();
                m.insert(key, value.clone());
            }
            Edit::Member { drop, add } => {
                if let Some(d) = drop {
                    let i = d % members.len();
                    if i != mi {
                        members[i].1.clear();
                        members[i].0 = format!("dropped{i}");
                    }
                }
                if let Some((p, d)) = add {
                    members.push((p.clone(), d.clone()));
                }
            }
            _ => {}
        }
    }
    members[mi].1 = serde_json::to_vec(&manifest).unwrap();
    members.retain(|(p, d)| !(p.starts_with("dropped") && d.is_empty()));
    pack(&members)
}

/// A refusal is a 4xx with a reason; anything else must have imported.
fn refused_or_imported(got: &(u16, Value)) -> Result<(), TestCaseError> {
    let (status, body) = got;
    prop_assert!(
        *status == 200 || (400..500).contains(status),
        "{status} {body}"
    );
    if *status != 200 {
        prop_assert!(
            !body["detail"].as_str().unwrap_or_default().is_empty(),
            "{body}"
        );
    }
    Ok(())
}

async fn setup(backend: Backend) -> (TestInstance, FirmwareRepo, String, Exported) {
    let inst = TestInstance::start_with(backend, &[("PU_IMPORT_MAX_BYTES", MAX_BYTES)]).await;
    let firmware = FirmwareRepo::create().await;
    let (_, owner) = inst.user("owner").await;
    registry_repo_unit(&inst, &owner, &firmware, "arch", "Public").await;
    let (s, plain) = export(&inst, &owner, json!({})).await;
    assert_eq!(s, 200);
    let (s, sealed) = export(&inst, &owner, json!({"passphrase": PASS})).await;
    assert_eq!(s, 200);
    (inst, firmware, owner, Exported { plain, sealed })
}

async fn archives(backend: Backend) {
    let rt = tokio::runtime::Handle::current();
    let (owned, _firmware, _, exported) = setup(backend).await;
    let (_, importer) = owned.user("importer").await;
    let (inst, plain) = (&owned, &exported.plain);
    tokio::task::block_in_place(|| {
        // corrupt gzip and random bytes
        let bytes = prop_oneof![
            3 => mutated(Just(plain.clone())),
            1 => prop::collection::vec(any::<u8>(), 1..512),
        ];
        check(128, bytes, |bytes| {
            refused_or_imported(&rt.block_on(import(inst, &importer, bytes, None)))
        });
        // hand-made tar headers: never an import
        check(256, hostile_tar(), |bytes| {
            let got = rt.block_on(import(inst, &importer, bytes, None));
            refused_or_imported(&got)?;
            prop_assert!(got.0 != 200, "{}", got.1);
            Ok(())
        });
        // real archives with hostile records and manifests
        let tally = Tally::default();
        check(256, edit(), |edits| {
            let archive = apply(plain, &edits);
            let got = rt.block_on(import(inst, &importer, archive, None));
            tally.saw(if got.0 == 200 { "imported" } else { "refused" });
            refused_or_imported(&got)
        });
        tally.expect(&["imported", "refused"]);
    });
    owned.stop().await;
}

type Keys = (pepeunit::crypto::Cipher, [u8; 32]);

/// A sealed archive's members, its manifest and the keys of its passphrase.
fn opened(sealed: &[u8]) -> (Vec<(String, Vec<u8>)>, Value, Keys) {
    let members = unpack(sealed);
    let manifest: Value = serde_json::from_slice(
        &members
            .iter()
            .find(|(p, _)| p == "manifest.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let keys = keys(manifest["sealed"]["salt"].as_str().unwrap());
    (members, manifest, keys)
}

/// The keys an export derives from its passphrase (what `seal.rs` does), to reseal edits.
fn keys(salt_b64: &str) -> Keys {
    use base64::Engine;
    let salt = base64::engine::general_purpose::STANDARD
        .decode(salt_b64)
        .unwrap();
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(PASS.as_bytes(), &salt, 200_000, &mut out);
    let enc: [u8; 32] = out[..32].try_into().unwrap();
    (
        pepeunit::crypto::Cipher::new(&enc),
        out[32..].try_into().unwrap(),
    )
}

fn mac(key: &[u8; 32], manifest: &Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(manifest.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// Sealed archives: a changed seal or MAC is refused; sealed fields that hold anything at all
/// (sealed again with the right passphrase and MAC, as the archive's owner could) import into
/// a unit whose env and state storage still answer. Each import derives the passphrase's keys
/// (PBKDF2), so fewer cases.
async fn sealed_archives(backend: Backend) {
    let rt = tokio::runtime::Handle::current();
    let (owned, _firmware, _, exported) = setup(backend).await;
    let (_, importer) = owned.user("importer").await;
    let (inst, sealed) = (&owned, &exported.sealed);
    let (members, manifest, sealer) = opened(sealed);
    let seal_edit = (
        prop::sample::select(vec!["sealed", "mac"]),
        prop_oneof![json_value(), object_with_salt()],
        prop::option::of(prop_oneof![Just(PASS.to_string()), "[ -~]{0,40}"]),
    );
    let plaintext = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        raw_json_text(),
        hostile_string(),
    ];
    tokio::task::block_in_place(|| {
        check(12, seal_edit, |(field, value, pass)| {
            let mut m = manifest.clone();
            // `"sealed": null` declares an unsealed archive: it imports when no record holds
            // a sealed value, and is refused otherwise
            let unsealed = field == "sealed" && value.is_null();
            m[field] = value;
            let archive = with_manifest(&members, &m);
            let got = rt.block_on(import(inst, &importer, archive, pass.as_deref()));
            refused_or_imported(&got)?;
            prop_assert!(
                unsealed || got.0 != 200,
                "a changed seal imported: {}",
                got.1
            );
            Ok(())
        });
        let tally = Tally::default();
        let env = prop_oneof![
            2 => super::object_with(&["WIFI_SSID", "PU_AUTH_TOKEN"]).prop_map(|m| Value::Object(m).to_string()),
            1 => plaintext.clone(),
        ];
        check(12, (env, plaintext), |(env, storage)| {
            let (unit, archive) = resealed(&members, &manifest, &sealer, &env, &storage);
            let got = rt.block_on(import(inst, &importer, archive, Some(PASS)));
            refused_or_imported(&got)?;
            tally.saw(if got.0 == 200 { "imported" } else { "refused" });
            if got.0 == 200 {
                let uuid = remapped(&got.1, "units", unit["uuid"].as_str().unwrap());
                for path in [
                    format!("/units/env/{uuid}"),
                    format!("/units/get_state_storage/{uuid}"),
                ] {
                    let (s, v) = rt.block_on(inst.get(&path, Some(&importer)));
                    prop_assert!(s.as_u16() < 500, "{path}: {s} {v}");
                }
            }
            Ok(())
        });
        tally.expect(&["imported"]);
    });
    owned.stop().await;
}

/// The sealed archive with its unit's env and state storage replaced, sealed and MACed with
/// the passphrase as the archive's owner could; also the unit's record.
fn resealed(
    members: &[(String, Vec<u8>)],
    manifest: &Value,
    (cipher, mac_key): &Keys,
    env: &str,
    storage: &str,
) -> (Value, Vec<u8>) {
    let mut members = members.to_vec();
    let (_, units) = members
        .iter_mut()
        .find(|(p, _)| p == "units.jsonl")
        .unwrap();
    let mut unit: Value = serde_json::from_slice(units.trim_ascii_end()).unwrap();
    unit["cipher_env"] = json!(cipher.encrypt(env).unwrap());
    unit["cipher_state_storage"] = json!(cipher.encrypt(storage).unwrap());
    *units = format!("{unit}\n").into_bytes();
    let mut m = manifest.clone();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == "units.jsonl" {
            f["sha256"] = json!(sha256_hex(units));
        }
    }
    m.as_object_mut().unwrap().remove("mac");
    m["mac"] = json!(mac(mac_key, &m));
    (unit, with_manifest(&members, &m))
}

/// The uuid a record got here (the report lists only the remapped ones).
fn remapped(report: &Value, table: &str, old: &str) -> String {
    report["remapped"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["table"] == table && r["from"] == old)
        .and_then(|r| r["to"].as_str())
        .unwrap_or(old)
        .to_string()
}

fn with_manifest(members: &[(String, Vec<u8>)], manifest: &Value) -> Vec<u8> {
    let mut members = members.to_vec();
    for (p, d) in members.iter_mut() {
        if p == "manifest.json" {
            *d = serde_json::to_vec(manifest).unwrap();
        }
    }
    pack(&members)
}

/// A `sealed` object of the right shape with hostile salt, iterations and check values.
fn object_with_salt() -> impl Strategy<Value = Value> {
    super::object_with(&["salt", "kdf", "iterations", "fields", "cipher"]).prop_map(Value::Object)
}

crate::both_backends!(archives);

/// Sealed fields are decrypted and encrypted again before any SQL sees them, so SQLite
/// covers the backends alike; each case costs a PBKDF2 derivation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_archives_on_sqlite() {
    sealed_archives(Backend::Sqlite).await;
}

/// A small upload that unpacks past `PU_IMPORT_MAX_BYTES` is refused once the cap is read,
/// not after unpacking everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_at_the_cap() {
    let inst =
        TestInstance::start_with(Backend::Sqlite, &[("PU_IMPORT_MAX_BYTES", MAX_BYTES)]).await;
    let (_, token) = inst.user("owner").await;
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let bomb = pack(&[("manifest.json".to_string(), zeros)]);
    assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
    let (status, body) = import(&inst, &token, bomb, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("larger than PU_IMPORT_MAX_BYTES"),
        "{body}"
    );
    inst.stop().await;
}

/// Regression: a sealed `cipher_env` that is JSON but not an object imported, and every later
/// read of the unit's env answered 500 ("stored env is not a JSON object").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_env_that_is_not_an_object_is_refused() {
    let (inst, _firmware, _, exported) = setup(Backend::Sqlite).await;
    let (_, importer) = inst.user("importer").await;
    let (members, manifest, sealer) = opened(&exported.sealed);
    let (_, archive) = resealed(&members, &manifest, &sealer, "[]", "null");
    let (status, body) = import(&inst, &importer, archive, Some(PASS)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cipher_env is not a JSON object"),
        "{body}"
    );
    // the same archive with an object env imports
    let (_, archive) = resealed(&members, &manifest, &sealer, "{\"WIFI_SSID\": \"x\"}", "[]");
    let (status, body) = import(&inst, &importer, archive, Some(PASS)).await;
    assert_eq!(status, 200, "{body}");
    inst.stop().await;
}

/// Regression: on SQLite an import failed with a 500 ("database is locked", SQLITE_BUSY_SNAPSHOT)
/// when another write committed between its first read and its first write (found by
/// `archives`: the previous import's registry sync wrote meanwhile). Imports at once all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_at_once_all_land_on_sqlite() {
    let (inst, _firmware, _, exported) = setup(Backend::Sqlite).await;
    let (_, importer) = inst.user("importer").await;
    let imports = (0..4).map(|_| import(&inst, &importer, exported.plain.clone(), None));
    for (status, body) in futures_util::future::join_all(imports).await {
        assert_eq!(status, 200, "{body}");
    }
    inst.stop().await;
}
