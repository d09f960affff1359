//! `pepeunit load transfer`: account export and import throughput. Self-contained: a
//! temporary instance (SQLite unless `--database-url`), one account seeded straight into the
//! store (units with a stored env, one node each, log lines), exported with a passphrase into
//! memory, then imported into a second account of the same instance (so every uuid and name
//! is taken and remapped: the slow path).

use std::time::Instant;

use clap::Args;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{self, LogLevel, UserRole, UserStatus};
use crate::service::transfer::{collect, ExportOptions, ExportScope};
use crate::service::Instance;
use crate::store;

#[derive(Args, Debug, Clone)]
pub struct TransferLoad {
    /// Units of the account (1..=2000), each with a stored env and one node.
    #[arg(long, default_value_t = 500)]
    pub units: usize,
    /// Log lines of the account (0..=5000000).
    #[arg(long, default_value_t = 200_000)]
    pub logs: usize,
    /// Database to use instead of a temporary SQLite file (an empty PostgreSQL database).
    #[arg(long)]
    pub database_url: Option<String>,
}

pub async fn run_transfer(args: TransferLoad) -> anyhow::Result<()> {
    if !(1..=2000).contains(&args.units) {
        anyhow::bail!("--units must be between 1 and 2000");
    }
    if args.logs > 5_000_000 {
        anyhow::bail!("--logs must be at most 5000000");
    }
    let data = std::env::temp_dir().join(format!("pepeunit-load-{}", Uuid::new_v4().simple()));
    let mut vars = vec![
        ("PU_DATA_DIR".to_string(), data.display().to_string()),
        ("PU_IMPORT_MAX_BYTES".into(), (16u64 << 30).to_string()),
    ];
    if let Some(url) = &args.database_url {
        vars.push(("PU_DATABASE_URL".into(), url.clone()));
    }
    let instance = Instance::open(Config::from_vars(vars)?).await?;
    let result = measure(&instance, &args).await;
    let hub = instance.federation.hub().clone();
    let _ = tokio::task::spawn_blocking(move || hub.close()).await;
    instance.db.pool.close().await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn measure(instance: &Instance, args: &TransferLoad) -> anyhow::Result<()> {
    let seeded = super::mqtt::seed(instance, args.units).await?;
    let owner = store::units::get(instance.pool(), seeded[0].0)
        .await?
        .map(|u| u.creator_uuid)
        .ok_or_else(|| anyhow::anyhow!("seed failed"))?;
    let env = r#"{"WIFI_SSID": "ssid", "WIFI_PASS": "a fairly long password", "PU_DOMAIN": "localhost:5291", "PU_SECRET_KEY": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", "PU_ENCRYPT_KEY": "ZW5jcnlwdGVuY3J5cHRlbmNyeXB0ZW5jcnlwdGVuYzE="}"#;
    for (unit, _) in &seeded {
        store::units::set_env(instance.pool(), *unit, Some(instance.cipher.encrypt(env)?)).await?;
    }
    let now = chrono::Utc::now().naive_utc();
    let mut written = 0;
    while written < args.logs {
        let n = (args.logs - written).min(5000);
        let batch = (0..n)
            .map(|i| store::unit_logs::NewUnitLog {
                uuid: Uuid::new_v4(),
                unit_uuid: seeded[(written + i) % seeded.len()].0,
                level: LogLevel::Info,
                text: format!("sensor reading {} within range", written + i),
                create_datetime: domain::format_time(now),
                expiration_datetime: domain::format_time(now + chrono::Duration::days(1)),
            })
            .collect();
        instance.store_unit_logs(batch).await?;
        written += n;
    }
    let records = 1 + 1 + 1 + args.units * 2 + args.logs;
    eprintln!("seeded {} units, {} log lines", args.units, args.logs);

    let opts = ExportOptions {
        passphrase: Some("load test passphrase".into()),
        include_credentials: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let collector = tokio::spawn(collect(rx));
    let start = Instant::now();
    instance
        .export_archive(ExportScope::Account(owner), &opts, tx, &|_| {})
        .await
        .map_err(|e| anyhow::anyhow!(e.detail()))?;
    let archive = collector.await?;
    let export_secs = start.elapsed().as_secs_f64();

    let second = store::users::User {
        uuid: Uuid::new_v4(),
        role: UserRole::User,
        status: UserStatus::Verified,
        login: "load_import".into(),
        grafana_org_name: Uuid::new_v4(),
        grafana_org_id: None,
        create_datetime: domain::now(),
        hashed_password: String::new(),
        cipher_dynamic_salt: String::new(),
        telegram_chat_id: None,
        telegram_language: None,
    };
    store::users::insert(instance.pool(), &second).await?;
    let bytes = archive.len();
    let start = Instant::now();
    let report = instance
        .import_archive(second.uuid, archive, opts.passphrase.clone(), &|_| {})
        .await
        .map_err(|e| anyhow::anyhow!(e.detail()))?;
    let import_secs = start.elapsed().as_secs_f64();
    let imported: usize = report.created.values().sum();
    println!(
        "export: {records} records, {:.1} MiB archive in {export_secs:.2} s ({:.0} records/s)",
        bytes as f64 / 1048576.0,
        records as f64 / export_secs
    );
    println!(
        "import: {imported} rows (all remapped: {}) in {import_secs:.2} s ({:.0} rows/s)",
        report.remapped.len(),
        imported as f64 / import_secs
    );
    Ok(())
}
