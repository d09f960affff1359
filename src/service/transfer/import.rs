//! Import: reads and checks a whole archive first (members, version, the passphrase MAC,
//! every member's sha256 and every record against its table), then writes everything in one
//! transaction (uuids remapped when taken, names made unique, registries shared by URL,
//! secrets resealed with this instance's key), the log lines after the commit, and the
//! follow-ups (credential checks, mirror clones).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::archive::{broken, new_log, read_members, sha256_hex, FORMAT, LOG_CHUNK, VERSION};
use super::seal::{sealed_fields, Sealer};
use super::Progress;
use crate::domain::CredentialStatus;
use crate::error::{AppError, AppResult};
use crate::service::{Agent, Instance};
use crate::store;
use crate::store::transfer as tables;
use crate::telemetry::sql::SqlLogs;

/// What an import did.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    /// Login and uuid of the account the data now belongs to.
    pub user_uuid: Uuid,
    /// Instance the archive came from.
    pub source: String,
    /// Rows created, per table.
    pub created: BTreeMap<String, usize>,
    /// Rows whose uuid was taken here and got a new one.
    pub remapped: Vec<Remapped>,
    /// Repos and Units whose name was taken here.
    pub renamed: Vec<Renamed>,
    /// Registries that already existed here (same URL) and were used instead.
    pub reused: Vec<Reused>,
    /// Rows not imported, with the reason.
    pub skipped: Vec<Skipped>,
    /// Every old uuid to its uuid here (unchanged ones included).
    #[serde(skip)]
    pub map: HashMap<String, String>,
    /// Registries created by the import (their mirrors still have to be cloned).
    #[serde(skip)]
    pub new_registries: Vec<Uuid>,
    /// Registries whose imported credentials wait for their check against the remote.
    #[serde(skip)]
    pub credentials_to_check: Vec<Uuid>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Remapped {
    pub table: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Renamed {
    pub table: String,
    pub uuid: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Reused {
    pub table: String,
    pub from: String,
    pub to: String,
    pub repository_url: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Skipped {
    pub table: String,
    pub uuid: String,
    pub reason: String,
}

impl Instance {
    /// Reads an archive into the account `target` (all or nothing).
    pub async fn import_archive(
        &self,
        target: Uuid,
        archive: Vec<u8>,
        passphrase: Option<String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let max = self.config.import_max_bytes;
        let checked = tokio::task::spawn_blocking(move || read_archive(&archive, max, passphrase))
            .await
            .map_err(AppError::internal)??;
        self.import_checked(target, checked, progress).await
    }

    async fn import_checked(
        &self,
        target: Uuid,
        a: CheckedArchive,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let source_user = a.source_user.clone();
        let mut report = ImportReport {
            user_uuid: target,
            source: a.source.clone(),
            ..Default::default()
        };
        // every uuid the archive defines, by table
        let mut defined: HashSet<String> = HashSet::new();
        for (table, recs) in &a.records {
            if *table == "users" {
                continue;
            }
            for r in recs {
                if let Some(u) = r.get("uuid").and_then(Value::as_str) {
                    defined.insert(u.to_string());
                }
            }
        }
        // an import reads (names, registries) before it writes: see `Db::begin_write`
        let mut tx = self.db.begin_write().await?;
        let map = &mut report.map;
        map.insert(source_user.clone(), target.to_string());
        let mut names_used: HashSet<(String, String)> = HashSet::new();
        let mut new_registries = Vec::new();
        // private registries that already exist here (uuid here -> URL): the archive cannot
        // grant access to them, only the importer's own valid credentials here can
        let mut reused_private: HashMap<String, String> = HashMap::new();
        let importer = Agent::User(Box::new(
            store::users::get(self.pool(), target)
                .await?
                .ok_or_else(|| AppError::transfer("the target account does not exist"))?,
        ));
        let mut new_repos = Vec::new();
        let mut new_units = Vec::new();
        // (index among the archive's log records, unit uuid here)
        let mut pending_logs: Vec<(usize, String)> = Vec::new();
        let mut credentials_to_check = Vec::new();
        let mut panel_links: HashMap<String, HashSet<String>> = HashMap::new();
        for table in tables::TABLES {
            if table.name == "users" {
                continue;
            }
            let Some(recs) = a.records.get(table.name) else {
                continue;
            };
            let mut created = 0usize;
            'rec: for (i, rec) in recs.iter().enumerate() {
                let mut rec = rec.clone();
                let old = rec["uuid"].as_str().unwrap_or_default().to_string();
                // references
                for col in table.references {
                    let Some(v) = rec.get(*col).and_then(Value::as_str).map(str::to_string) else {
                        continue;
                    };
                    let creatorish = matches!(*col, "creator_uuid" | "user_uuid");
                    let mapped = if v == source_user {
                        Some(target.to_string())
                    } else if let Some(m) = map.get(&v) {
                        Some(m.clone())
                    } else if creatorish {
                        // someone else's work on our objects: it is the importer's now
                        if table.name == "repository_registries" {
                            None
                        } else {
                            Some(target.to_string())
                        }
                    } else if defined.contains(&v) {
                        // defined but skipped (e.g. a permission to a skipped row)
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: format!("{col} {v} was not imported"),
                        });
                        continue 'rec;
                    } else if matches!(
                        table.name,
                        "unit_node_edges" | "permissions" | "dashboard_panel_nodes"
                    ) {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: format!(
                                "{col} {v} is not in the archive (another user's object)"
                            ),
                        });
                        continue 'rec;
                    } else {
                        return Err(AppError::transfer(format!(
                            "{} record {}: {col} {v} is not in the archive",
                            table.name,
                            i + 1
                        )));
                    };
                    rec.insert(
                        col.to_string(),
                        mapped.map(Value::String).unwrap_or(Value::Null),
                    );
                }
                // log lines go to the telemetry store after the commit (below)
                if table.name == "unit_logs" {
                    let unit = rec["unit_uuid"].as_str().unwrap_or_default().to_string();
                    pending_logs.push((i, unit));
                    continue;
                }
                // credentials are the archive's word: checked against the remote after the
                // commit (`sync_imported`); one the importer has here already stays
                if table.name == "registry_credentials" {
                    let registry_uuid: Uuid = rec["repository_registry_uuid"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .map_err(AppError::internal)?;
                    if store::registries::get_credentials(self.pool(), target, registry_uuid)
                        .await?
                        .is_some()
                    {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason: "credentials for this registry are already set here".into(),
                        });
                        continue 'rec;
                    }
                    rec.insert(
                        "status".into(),
                        Value::String(CredentialStatus::Error.as_str().into()),
                    );
                    credentials_to_check.push(registry_uuid);
                }
                // a Repo on a private registry that exists here needs the importer's access
                if table.name == "repos" {
                    let registry = rec["repository_registry_uuid"].as_str().unwrap_or_default();
                    if let Some(url) = reused_private.get(registry) {
                        let uuid = registry.parse().map_err(AppError::internal)?;
                        if self.registry_with_access(&importer, uuid).await.is_err() {
                            return Err(AppError::transfer(format!(
                                "repo {}: the registry {url} is private here and this account has no valid credentials for it; set them on this instance and import again",
                                rec["name"].as_str().unwrap_or_default()
                            )));
                        }
                    }
                }
                // registries are shared by URL
                if table.name == "repository_registries" {
                    let url = rec["repository_url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(existing) = tables::registry_by_url(&mut *tx, &url).await? {
                        let existing_uuid: Uuid = existing.parse().map_err(AppError::internal)?;
                        let is_public = store::registries::get(self.pool(), existing_uuid)
                            .await?
                            .is_some_and(|r| r.is_public_repository);
                        if !is_public {
                            reused_private.insert(existing.clone(), url.clone());
                        }
                        map.insert(old.clone(), existing.clone());
                        report.reused.push(Reused {
                            table: table.name.into(),
                            from: old,
                            to: existing,
                            repository_url: url,
                        });
                        continue;
                    }
                    self.check_git_host(&url).await.map_err(|e| {
                        AppError::transfer(format!("registry {url}: {}", e.message()))
                    })?;
                    self.check_registry_address(&url)
                        .await
                        .map_err(|e| AppError::transfer(format!("registry {url}: {e}")))?;
                }
                // secrets: from the passphrase to this instance's key
                for field in sealed_fields(table) {
                    if let Some(v) = rec.get(*field).and_then(Value::as_str).map(str::to_string) {
                        let sealer = a.sealer.as_ref().ok_or_else(|| {
                            AppError::transfer("The archive has sealed fields: give its passphrase")
                        })?;
                        let plain = sealer.cipher.decrypt(&v).map_err(|_| {
                            AppError::transfer(format!(
                                "{} record {}: {field} does not decrypt with the passphrase",
                                table.name,
                                i + 1
                            ))
                        })?;
                        // a unit's env is read back as an object (anything else fails every
                        // later read of it)
                        if *field == "cipher_env"
                            && !matches!(serde_json::from_str(&plain), Ok(Value::Object(_)))
                        {
                            return Err(AppError::transfer(format!(
                                "{} record {}: {field} is not a JSON object",
                                table.name,
                                i + 1
                            )));
                        }
                        rec.insert(
                            field.to_string(),
                            Value::String(self.cipher.encrypt(&plain)?),
                        );
                    }
                }
                if table.name == "registry_credentials" {
                    let q = tables::credentials_present(
                        rec["user_uuid"].as_str().unwrap_or_default(),
                        rec["repository_registry_uuid"].as_str().unwrap_or_default(),
                    );
                    if q.fetch_i64(&mut *tx).await? > 0 {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old,
                            reason: "you already have credentials for this registry here".into(),
                        });
                        continue;
                    }
                }
                // a dashboard gets a Grafana uid of its own here: it is synced anew
                if table.name == "dashboards" {
                    rec.insert(
                        "grafana_uuid".into(),
                        Value::String(Uuid::new_v4().to_string()),
                    );
                }
                // each node once per panel, at most this instance's limit per panel
                if table.name == "dashboard_panel_nodes" {
                    let panel = rec["dashboard_panel_uuid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let node = rec["unit_node_uuid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let linked = panel_links.entry(panel).or_default();
                    let limit = self.config.grafana_limit_unit_node_per_one_panel as usize;
                    let reason = if linked.contains(&node) {
                        Some("the node is linked to this panel twice".to_string())
                    } else if linked.len() >= limit {
                        Some(format!(
                            "the panel already has {limit} nodes, this instance's limit"
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        report.skipped.push(Skipped {
                            table: table.name.into(),
                            uuid: old.clone(),
                            reason,
                        });
                        continue;
                    }
                    linked.insert(node);
                }
                if table.name == "permissions" {
                    let q = tables::permission_present(
                        rec["agent_uuid"].as_str().unwrap_or_default(),
                        rec["resource_uuid"].as_str().unwrap_or_default(),
                    );
                    if q.fetch_i64(&mut *tx).await? > 0 {
                        continue;
                    }
                }
                // the row's own uuid
                let mut new = old.clone();
                if table.uuid_taken(&old).fetch_i64(&mut *tx).await? > 0 {
                    new = Uuid::new_v4().to_string();
                    report.remapped.push(Remapped {
                        table: table.name.into(),
                        from: old.clone(),
                        to: new.clone(),
                    });
                }
                rec.insert("uuid".into(), Value::String(new.clone()));
                map.insert(old.clone(), new.clone());
                // unique names
                if let Some(col) = table.unique_name {
                    let name = rec[col].as_str().unwrap_or_default().to_string();
                    let mut candidate = name.clone();
                    let mut n = 1;
                    loop {
                        let taken = names_used
                            .contains(&(table.name.to_string(), candidate.clone()))
                            || table
                                .name_taken(&candidate)
                                .expect("unique_name is set")
                                .fetch_i64(&mut *tx)
                                .await?
                                > 0;
                        if !taken {
                            break;
                        }
                        n += 1;
                        let suffix = format!("-{n}");
                        let keep = name.chars().count().min(20 - suffix.len());
                        let head: String = name.chars().take(keep).collect();
                        candidate = format!("{head}{suffix}");
                    }
                    if candidate != name {
                        report.renamed.push(Renamed {
                            table: table.name.into(),
                            uuid: new.clone(),
                            from: name,
                            to: candidate.clone(),
                        });
                        rec.insert(col.to_string(), Value::String(candidate.clone()));
                    }
                    names_used.insert((table.name.to_string(), candidate));
                }
                table.insert(&rec).execute(&mut *tx).await?;
                created += 1;
                if let Ok(u) = Uuid::parse_str(&new) {
                    match table.name {
                        "repository_registries" => new_registries.push(u),
                        "repos" => new_repos.push(u),
                        "units" => new_units.push(u),
                        _ => {}
                    }
                }
                if created.is_multiple_of(5000) {
                    progress(Progress {
                        table: table.name,
                        records: created,
                    });
                }
            }
            progress(Progress {
                table: table.name,
                records: created,
            });
            if table.name != "unit_logs" {
                report.created.insert(table.name.to_string(), created);
            }
        }
        // the stored env of each new unit still names the old instance and carries its token
        for u in &new_units {
            let unit = store::units::get(&mut *tx, *u)
                .await?
                .ok_or_else(|| AppError::internal("an imported unit vanished"))?;
            if let Some(cipher) = self.refreshed_env(&unit)? {
                store::units::set_env(&mut *tx, *u, Some(cipher)).await?;
            }
        }
        // log lines in the same transaction when they live in this database: a crash or an
        // error leaves the whole account or none of it; ClickHouse's follow the commit
        let created = if self.logs.in_database() {
            let created = self
                .import_logs(
                    &a,
                    &pending_logs,
                    Some(&mut tx),
                    &mut report.remapped,
                    progress,
                )
                .await?;
            tx.commit().await?;
            created
        } else {
            tx.commit().await?;
            self.import_logs(&a, &pending_logs, None, &mut report.remapped, progress)
                .await?
        };
        report
            .created
            .insert(tables::LOGS.name.to_string(), created);
        report.new_registries = new_registries;
        report.credentials_to_check = credentials_to_check;
        for r in new_repos {
            self.repos_cache.invalidate(r);
            self.federation_changed(pepeunit_federation::backend::LocalRef::Repo(r));
        }
        for u in new_units {
            self.units_cache.invalidate(u);
            self.federation_changed(pepeunit_federation::backend::LocalRef::Unit(u));
        }
        Ok(report)
    }
}

impl Instance {
    /// Writes the checked log lines of an archive into the telemetry store, `LOG_CHUNK` at a
    /// time, a line whose uuid is taken here getting a new one. With `tx` (the SQL log store)
    /// inside the import's transaction. Without (ClickHouse, outside any transaction of ours)
    /// after the relational data committed: if the store fails or the process dies then, the
    /// account is there with part of its logs.
    async fn import_logs(
        &self,
        a: &CheckedArchive,
        pending: &[(usize, String)],
        mut tx: Option<&mut sqlx::AnyConnection>,
        remapped: &mut Vec<Remapped>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<usize> {
        let Some(recs) = a.records.get(tables::LOGS.name) else {
            return Ok(0);
        };
        let mut created = 0;
        for chunk in pending.chunks(LOG_CHUNK as usize) {
            let mut lines = Vec::with_capacity(chunk.len());
            for (i, unit) in chunk {
                let mut line = new_log(&recs[*i])?;
                line.unit_uuid = unit
                    .parse()
                    .map_err(|_| AppError::transfer("unit_logs: invalid unit_uuid"))?;
                lines.push(line);
            }
            let uuids: Vec<Uuid> = lines.iter().map(|l| l.uuid).collect();
            let taken = match tx.as_deref_mut() {
                Some(conn) => SqlLogs::taken_uuids_in(conn, &uuids).await?,
                None => self.logs.taken_uuids(&uuids).await?,
            };
            for line in &mut lines {
                if taken.contains(&line.uuid) {
                    let new = Uuid::now_v7();
                    remapped.push(Remapped {
                        table: tables::LOGS.name.into(),
                        from: line.uuid.to_string(),
                        to: new.to_string(),
                    });
                    line.uuid = new;
                }
            }
            created += match tx.as_deref_mut() {
                Some(conn) => SqlLogs::insert_in(conn, &lines).await?,
                None => self.logs.insert(&lines).await?,
            } as usize;
            progress(Progress {
                table: tables::LOGS.name,
                records: created,
            });
        }
        Ok(created)
    }

    /// Clones the mirrors of the registries an import created, in the background (a stopped
    /// instance clones missing mirrors when it starts).
    /// Checks the credentials an import brought (stored as `Error` until then) against their
    /// remotes. `sync_imported` runs it in the background; the CLI awaits it.
    pub async fn check_imported_credentials(&self, user: Uuid, registries: &[Uuid]) {
        for r in registries {
            if let Err(e) = self.recheck_credentials(user, *r).await {
                tracing::warn!(registry = %r, "credentials check after import: {}", e.detail());
            }
        }
    }

    pub fn sync_imported(&self, report: &ImportReport) {
        let inst = self.clone();
        let user = report.user_uuid;
        let (check, sync) = (
            report.credentials_to_check.clone(),
            report.new_registries.clone(),
        );
        tokio::spawn(async move {
            // imported credentials first: a private mirror is cloned with them once valid
            inst.check_imported_credentials(user, &check).await;
            for r in sync {
                if let Err(e) = inst.sync_registry(r, Some(user)).await {
                    tracing::warn!(registry = %r, "sync after import: {}", e.detail());
                }
            }
        });
    }
}
/// An archive whose members, checksums, MAC and records all checked out.
struct CheckedArchive {
    source: String,
    source_user: String,
    sealer: Option<Sealer>,
    records: HashMap<&'static str, Vec<Map<String, Value>>>,
}
/// Reads and checks a whole archive (blocking; run it off the async threads).
fn read_archive(
    bytes: &[u8],
    max_bytes: u64,
    passphrase: Option<String>,
) -> AppResult<CheckedArchive> {
    let mut members = read_members(bytes, max_bytes)?;
    let manifest_raw = members
        .remove("manifest.json")
        .ok_or_else(|| broken("it has no manifest.json"))?;
    let mut manifest: Value = serde_json::from_slice(&manifest_raw)
        .map_err(|e| broken(format!("manifest.json is not JSON ({e})")))?;
    if manifest["format"] != FORMAT {
        return Err(AppError::transfer(format!(
            "Not a Pepeunit account export (format {})",
            manifest["format"]
        )));
    }
    let version = manifest["version"].as_u64().unwrap_or(0);
    if version == 0 || version > VERSION {
        return Err(AppError::transfer(format!(
            "The archive's format version {} is not supported (this instance reads up to {VERSION})",
            manifest["version"]
        )));
    }
    let mac = manifest
        .as_object_mut()
        .and_then(|m| m.remove("mac"))
        .and_then(|m| m.as_str().map(str::to_string));
    let sealer = match (&manifest["sealed"], passphrase) {
        (Value::Null, _) => None,
        (sealed, Some(p)) => Some(Sealer::open(sealed, &p, &manifest, mac)?),
        (_, None) => {
            return Err(AppError::transfer(
                "This archive holds sealed env and credentials: give its passphrase",
            ))
        }
    };
    let files = manifest["files"]
        .as_array()
        .ok_or_else(|| broken("manifest.files is missing"))?;
    let mut records: HashMap<&'static str, Vec<Map<String, Value>>> = HashMap::new();
    let mut listed = HashSet::new();
    for f in files {
        let path = f["path"]
            .as_str()
            .ok_or_else(|| broken("a file without path"))?;
        if !listed.insert(path.to_string()) {
            return Err(broken(format!("{path} is listed twice in the manifest")));
        }
        let data = members
            .get(path)
            .ok_or_else(|| broken(format!("{path} is listed but missing")))?;
        if f["sha256"].as_str() != Some(sha256_hex(data).as_str()) {
            return Err(broken(format!("{path} does not match its sha256")));
        }
        let table = tables::TABLES
            .iter()
            .find(|t| Some(t.name) == f["table"].as_str())
            .ok_or_else(|| broken(format!("{path}: unknown table {}", f["table"])))?;
        let list = records.entry(table.name).or_default();
        let mut n = 0u64;
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let rec: Map<String, Value> = serde_json::from_slice(line)
                .map_err(|e| broken(format!("{path} line {}: {e}", i + 1)))?;
            table
                .check(&rec)
                .map_err(|e| broken(format!("{path} line {}: {e}", i + 1)))?;
            list.push(rec);
            n += 1;
        }
        if f["records"].as_u64() != Some(n) {
            return Err(broken(format!(
                "{path} has {n} records, the manifest says {}",
                f["records"]
            )));
        }
    }
    if let Some(extra) = members.keys().find(|k| !listed.contains(*k)) {
        return Err(broken(format!("{extra} is not listed in the manifest")));
    }
    let users = records.get("users").map(Vec::len).unwrap_or(0);
    if users != 1 {
        return Err(broken(format!(
            "it must hold exactly one user, not {users}"
        )));
    }
    let source_user = records["users"][0]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if manifest["user"]["uuid"].as_str() != Some(source_user.as_str()) {
        return Err(broken("the manifest's user is not the archive's user"));
    }
    Ok(CheckedArchive {
        source: manifest["source"]["domain"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        source_user,
        sealer,
        records,
    })
}
