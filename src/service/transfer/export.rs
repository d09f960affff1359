//! Export: the options (a passphrase seals secrets; credentials only sealed), and the
//! streaming writer of a scope's archive (relational tables through
//! [`crate::store::transfer`], logs unit by unit through the telemetry store), the manifest
//! last.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::archive::{
    io_err, log_record, MemberWriter, TarGz, FORMAT, LOG_CHUNK, UNIT_VERSION, VERSION,
};
use super::seal::{self, sealed_fields, Sealer, MIN_PASSPHRASE};
use super::{ExportScope, Progress};
use crate::domain;
use crate::error::{AppError, AppResult};
use crate::service::{Agent, Instance};
use crate::store::transfer::{self as tables, Table};
use crate::store::Sql;

/// `POST /users/export` body.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    /// Seals unit env, state storage and (when asked) registry credentials; at least 8
    /// characters. Without it those are left out.
    #[serde(default)]
    #[schema(min_length = 8)]
    pub passphrase: Option<String>,
    /// Include private registry credentials (requires `passphrase`).
    #[serde(default)]
    pub include_credentials: bool,
}

/// What one export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub records: BTreeMap<String, usize>,
    pub bytes: u64,
}

/// `WHERE` condition selecting the rows of `table` in `scope`; `None`: not exported.
fn condition(table: &Table, scope: ExportScope, owner: Uuid, credentials: bool) -> Option<Sql> {
    match scope {
        ExportScope::Account(u) => tables::account_condition(table, u, credentials),
        ExportScope::Unit(x) => tables::unit_condition(table, x, owner, credentials),
    }
}

impl Instance {
    /// Checks export options before anything streams (so errors are proper 422s).
    pub fn check_export_options(&self, opts: &ExportOptions) -> AppResult<()> {
        if let Some(p) = &opts.passphrase {
            if p.chars().count() < MIN_PASSPHRASE {
                return Err(AppError::transfer(format!(
                    "The passphrase must have at least {MIN_PASSPHRASE} characters"
                )));
            }
        }
        if opts.include_credentials && opts.passphrase.is_none() {
            return Err(AppError::transfer(
                "Registry credentials are only exported sealed: give a passphrase",
            ));
        }
        Ok(())
    }

    /// The account of the calling user, for `POST /users/export`.
    pub fn export_scope_of(&self, agent: &Agent) -> AppResult<ExportScope> {
        Ok(ExportScope::Account(agent.user()?.uuid))
    }

    /// Writes the archive of `scope` into `out`, chunk by chunk. Stops early (Ok) when the
    /// receiver is gone.
    pub async fn export_archive(
        &self,
        scope: ExportScope,
        opts: &ExportOptions,
        out: mpsc::Sender<Bytes>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> AppResult<ExportSummary> {
        self.check_export_options(opts)?;
        let owner = match scope {
            ExportScope::Account(u) => u,
            ExportScope::Unit(x) => self.unit(x).await?.creator_uuid,
        };
        let user = crate::store::users::get(self.pool(), owner)
            .await?
            .ok_or_else(AppError::not_found)?;
        let (sealer, salt) = match &opts.passphrase {
            Some(p) => {
                let mut salt = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let s = salt.to_vec();
                let p = p.clone();
                let sealer = tokio::task::spawn_blocking(move || Sealer::new(&p, &s))
                    .await
                    .map_err(AppError::internal)?;
                (Some(sealer), Some(salt))
            }
            None => (None, None),
        };
        let mut w = MemberWriter {
            tar: TarGz::new(),
            files: Vec::new(),
            out,
        };
        let mut counts = BTreeMap::new();
        let mut unit_uuids: Vec<String> = Vec::new();
        let seal = |table: &Table, rec: &mut Map<String, Value>| -> AppResult<()> {
            for field in sealed_fields(table) {
                let stored = rec.get(*field).and_then(Value::as_str).map(str::to_string);
                let sealed = match (&sealer, stored) {
                    (Some(s), Some(v)) => {
                        Value::String(s.cipher.encrypt(&self.cipher.decrypt(&v)?)?)
                    }
                    _ => Value::Null,
                };
                rec.insert(field.to_string(), sealed);
            }
            Ok(())
        };
        for table in tables::TABLES {
            let Some(cond) = condition(table, scope, owner, opts.include_credentials) else {
                continue;
            };
            if table.name == "unit_logs" {
                // unit by unit through the telemetry store (SQL table or ClickHouse),
                // keyset-paged along its (unit, create_datetime, uuid) order, written in
                // members of LOG_CHUNK lines: constant memory, no big sorts
                let mut buf = Vec::new();
                let mut chunk = 0usize;
                let mut total = 0usize;
                let now = chrono::Utc::now().naive_utc();
                for unit in &unit_uuids {
                    let Ok(unit) = Uuid::parse_str(unit) else {
                        continue;
                    };
                    let mut after: Option<crate::telemetry::LogCursor> = None;
                    loop {
                        let page = self
                            .logs
                            .page_after(unit, after.as_ref(), LOG_CHUNK, now)
                            .await?;
                        let n = page.len();
                        if let Some(last) = page.last() {
                            after = Some((last.create_datetime.clone(), last.uuid));
                        }
                        buf.extend(page.iter().map(log_record));
                        while buf.len() >= LOG_CHUNK as usize {
                            let rest = buf.split_off(LOG_CHUNK as usize);
                            chunk += 1;
                            total += buf.len();
                            let path = format!("{}/{chunk:06}.jsonl", table.file);
                            if !w
                                .write(table, &path, &std::mem::replace(&mut buf, rest))
                                .await?
                            {
                                return Ok(w.summary(counts));
                            }
                            progress(Progress {
                                table: table.name,
                                records: total,
                            });
                        }
                        if (n as i64) < LOG_CHUNK {
                            break;
                        }
                    }
                }
                if !buf.is_empty() {
                    chunk += 1;
                    total += buf.len();
                    let path = format!("{}/{chunk:06}.jsonl", table.file);
                    if !w.write(table, &path, &buf).await? {
                        return Ok(w.summary(counts));
                    }
                }
                progress(Progress {
                    table: table.name,
                    records: total,
                });
                counts.insert(table.name.to_string(), total);
                continue;
            }
            let rows = table.export_query(&cond).fetch_all(self.pool()).await?;
            let mut records = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut rec = table.record(row)?;
                seal(table, &mut rec)?;
                records.push(rec);
            }
            drop(rows);
            if table.name == "units" {
                unit_uuids = records
                    .iter()
                    .filter_map(|r| r["uuid"].as_str().map(str::to_string))
                    .collect();
            }
            let path = format!("{}.jsonl", table.file);
            if !w.write(table, &path, &records).await? {
                return Ok(w.summary(counts));
            }
            progress(Progress {
                table: table.name,
                records: records.len(),
            });
            counts.insert(table.name.to_string(), records.len());
        }
        let files = std::mem::take(&mut w.files);
        let MemberWriter { mut tar, out, .. } = w;
        let mut manifest = json!({
            "format": FORMAT,
            "version": match scope { ExportScope::Account(_) => VERSION, ExportScope::Unit(_) => UNIT_VERSION },
            "created": domain::now(),
            "source": {
                "domain": self.config.domain,
                "instance_actor": self.federation.actor_id(pepeunit_federation::backend::LocalRef::Instance).to_string(),
            },
            "scope": match scope { ExportScope::Account(_) => "account", ExportScope::Unit(_) => "unit" },
            "user": {"uuid": user.uuid, "login": user.login},
            "sealed": salt.map(|s| seal::manifest_entry(&s)),
            "includes": {
                "secrets": sealer.is_some(),
                "credentials": opts.include_credentials,
            },
            "files": files,
        });
        if let Some(s) = &sealer {
            let mac = s.mac(&manifest);
            manifest["mac"] = Value::String(mac);
        }
        let data = serde_json::to_vec_pretty(&manifest).expect("JSON of JSON");
        let bytes = tar.add("manifest.json", &data).map_err(io_err)?;
        let _ = out.send(bytes).await;
        let (rest, total) = tar.finish().map_err(io_err)?;
        let _ = out.send(rest).await;
        Ok(ExportSummary {
            records: counts,
            bytes: total,
        })
    }
}
