//! The `pepeunit` command.

use clap::{Parser, Subcommand};
use pepeunit::config::Config;
use pepeunit::server::RunningInstance;
use pepeunit::store::Db;

#[derive(Parser)]
#[command(
    name = "pepeunit",
    version,
    about = "Self-hosted federated IoT platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an instance (HTTP API; configuration from PU_* variables and PU_CONFIG_FILE).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets hidden) and exit.
    Config,
    /// Rebuild the hub search index from the database (local public Repos and Units and the
    /// remote ones learned through federation). Run it while the instance is stopped.
    Reindex,
    /// Write one user's whole account to an archive (docs/EXPORT-FORMAT.md), with progress.
    /// Run it while the instance is stopped (it holds the hub index); a running instance
    /// exports over REST (`POST /users/export`).
    Export(ExportArgs),
    /// Read an account archive into a user's account (all or nothing); prints the report.
    /// Run it while the instance is stopped; new registries are cloned when it starts.
    Import(ImportArgs),
    /// Generate load against a running instance and print throughput and latency.
    #[command(subcommand)]
    Load(LoadScenario),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Login of the user whose account is exported.
    #[arg(long)]
    login: String,
    /// Archive to write (`-` for stdout).
    #[arg(long)]
    out: std::path::PathBuf,
    /// File holding the passphrase that seals env, state storage and credentials (first
    /// line). Without it those are left out.
    #[arg(long)]
    passphrase_file: Option<std::path::PathBuf>,
    /// Include private registry credentials (needs --passphrase-file).
    #[arg(long)]
    credentials: bool,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// Login of the user who receives the data.
    #[arg(long)]
    login: String,
    /// The archive.
    archive: std::path::PathBuf,
    /// File holding the export's passphrase (first line).
    #[arg(long)]
    passphrase_file: Option<std::path::PathBuf>,
}

fn read_passphrase(path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--passphrase-file {}: {e}", path.display()))?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}

async fn user_by_login(
    instance: &pepeunit::service::Instance,
    login: &str,
) -> anyhow::Result<uuid::Uuid> {
    pepeunit::store::users::get_by_login(instance.pool(), login)
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .map(|u| u.uuid)
        .ok_or_else(|| anyhow::anyhow!("no user with login {login:?}"))
}

#[derive(Subcommand)]
enum LoadScenario {
    /// The device REST endpoints: env, schema, state storage.
    Rest(pepeunit::load::RestLoad),
    /// GraphQL against REST for the same objects (getUnit, getUnits with nodes, a mutation) on
    /// a running instance on loopback: throughput ratio and latency at a fixed rate.
    Graphql(pepeunit::load::graphql::GraphqlLoad),
    /// The MQTT core against a bare subscriber on the same embedded broker (self-contained:
    /// starts its own instance on a temporary database).
    Mqtt(pepeunit::load::mqtt::MqttLoad),
    /// The federated hub index: indexing rate and search latency over a synthetic catalogue
    /// (self-contained: builds its own index in a temporary directory).
    Hub(pepeunit::load::hub::HubLoad),
    /// Account export and import throughput (self-contained: a temporary instance).
    Transfer(pepeunit::load::transfer::TransferLoad),
    /// Log ingest into the telemetry store: embedded, and ClickHouse with --clickhouse-url
    /// (self-contained: a temporary instance).
    Logs(pepeunit::load::logs::LogsLoad),
    /// Simulated devices (QoS 1 states, log lines, node values, reconnects) and REST and
    /// GraphQL readers against a running instance on loopback for a bounded time; reports
    /// sent against stored, memory over time and per device, read latency.
    Soak(Box<pepeunit::load::soak::SoakLoad>),
    /// The load meter's memory and speed for N topics (issue 18), in process.
    Meter(pepeunit::load::meter::MeterLoad),
    /// Drawing a `/chart` picture (issue 19): render time and PNG size for series of N
    /// points, in process.
    Chart(pepeunit::load::chart::ChartLoad),
    /// The capacity finder: steps the offered rate (open loop) on one channel of a running
    /// instance until p99 latency or the error share passes a bound; a table, --json, --html
    /// with charts, and --publish to the instance's public load_limit.
    Ramp(Box<pepeunit::load::ramp::RampLoad>),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // ERROR events and panics feed the served instance's error tracker and crash alerts
    let feed = pepeunit::observe::ProcessFeed::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // colours only for a person watching, not for log files and journald
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_env("PU_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                ),
        )
        .with(feed.layer())
        .init();
    feed.install_panic_hook();
    let cli = Cli::parse();
    match run(cli, feed).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pepeunit: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, feed: pepeunit::observe::ProcessFeed) -> anyhow::Result<()> {
    match cli.command {
        Command::Load(LoadScenario::Rest(args)) => return pepeunit::load::run_rest(args).await,
        Command::Load(LoadScenario::Graphql(args)) => {
            return pepeunit::load::graphql::run_graphql(args).await
        }
        Command::Load(LoadScenario::Mqtt(args)) => {
            return pepeunit::load::mqtt::run_mqtt(args).await
        }
        Command::Load(LoadScenario::Hub(args)) => return pepeunit::load::hub::run_hub(args).await,
        Command::Load(LoadScenario::Transfer(args)) => {
            return pepeunit::load::transfer::run_transfer(args).await
        }
        Command::Load(LoadScenario::Logs(args)) => {
            return pepeunit::load::logs::run_logs(args).await
        }
        Command::Load(LoadScenario::Chart(args)) => {
            return pepeunit::load::chart::run_chart(args).await
        }
        Command::Load(LoadScenario::Meter(args)) => {
            return pepeunit::load::meter::run_meter(args).await
        }
        Command::Load(LoadScenario::Soak(args)) => {
            return pepeunit::load::soak::run_soak(*args).await
        }
        Command::Load(LoadScenario::Ramp(args)) => {
            return pepeunit::load::ramp::run_ramp(*args).await
        }
        _ => {}
    }
    let config = Config::from_env()?;
    match cli.command {
        Command::Load(_) => unreachable!("handled above"),
        Command::Serve => {
            let mut running = RunningInstance::start(config).await?;
            feed.attach(running.instance.node.clone());
            let prefix = &running.instance.config.app_prefix;
            println!(
                "pepeunit serving http://{addr}{prefix}  (API docs: http://{addr}{prefix}/docs)",
                addr = running.addr,
            );
            tokio::select! {
                r = running.wait() => r?,
                _ = shutdown_signal() => {
                    tracing::info!("shutting down");
                    running.stop().await?;
                }
            }
        }
        Command::Migrate => {
            std::fs::create_dir_all(&config.data_dir)?;
            let db = Db::connect(&config.database_url, 1).await?;
            let n = db.migrate().await?;
            println!("applied {n} migration(s)");
        }
        Command::Reindex => {
            let instance = pepeunit::service::Instance::open(config).await?;
            let started = std::time::Instant::now();
            let n = instance
                .federation
                .reindex(|done| eprint!("\rindexed {done} documents"))
                .await?;
            eprintln!();
            println!(
                "hub index rebuilt: {n} documents in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Export(args) => {
            use std::io::Write;
            let instance = pepeunit::service::Instance::open(config).await?;
            let user = user_by_login(&instance, &args.login).await?;
            let opts = pepeunit::service::transfer::ExportOptions {
                passphrase: read_passphrase(&args.passphrase_file)?,
                include_credentials: args.credentials,
            };
            instance
                .check_export_options(&opts)
                .map_err(|e| anyhow::anyhow!(e.detail()))?;
            let mut out: Box<dyn Write + Send> = if args.out.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                // written next to the target and renamed, so a failed export leaves no
                // archive that looks complete
                Box::new(std::fs::File::create(args.out.with_extension("partial"))?)
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                while let Some(b) = rx.blocking_recv() {
                    out.write_all(&b)?;
                }
                out.flush()
            });
            let summary = instance
                .export_archive(
                    pepeunit::service::transfer::ExportScope::Account(user),
                    &opts,
                    tx,
                    &|p| eprint!("\r{:<22} {:>9} records", p.table, p.records),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.detail()))?;
            writer.await??;
            eprintln!();
            if args.out.as_os_str() != "-" {
                std::fs::rename(args.out.with_extension("partial"), &args.out)?;
            }
            eprintln!(
                "exported {} records, {} bytes",
                summary.records.values().sum::<usize>(),
                summary.bytes
            );
        }
        Command::Import(args) => {
            let instance = pepeunit::service::Instance::open(config).await?;
            let user = user_by_login(&instance, &args.login).await?;
            let archive = std::fs::read(&args.archive)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.archive.display()))?;
            let report = instance
                .import_archive(
                    user,
                    archive,
                    read_passphrase(&args.passphrase_file)?,
                    &|p| eprint!("\r{:<22} {:>9} records", p.table, p.records),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.detail()))?;
            eprintln!();
            // imported credentials are stored unchecked; the mirrors are cloned at next start
            instance
                .check_imported_credentials(report.user_uuid, &report.credentials_to_check)
                .await;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Config => {
            let c = &config;
            println!("PU_DATA_DIR={}", c.data_dir.display());
            println!("PU_HTTP_BIND={}", c.http_bind);
            println!("PU_DOMAIN={}", c.domain);
            println!("PU_HTTP_TYPE={}", c.http_type);
            println!("PU_DATABASE_URL={}", redact_url(&c.database_url));
            if c.mqtt_port == 0 {
                // PU_MQTT_BIND with port 0: the broker picks the port when it starts
                println!("PU_MQTT_HOST={}:<the embedded broker's port>", c.mqtt_host);
            } else {
                println!("PU_MQTT_HOST={}:{}", c.mqtt_host, c.mqtt_port);
            }
            println!("PU_SECRET_KEY=<{} chars>", c.secret_key.len());
            println!(
                "PU_MQTT_MODE={}",
                format!("{:?}", c.mqtt_mode).to_lowercase()
            );
            if let Some(url) = &c.emqx_api_url {
                println!("PU_EMQX_API_URL={url}");
            }
            println!(
                "PU_ALLOW_LOCAL_NETWORK={}",
                if c.allow_local_network {
                    "true (git, release APIs, bridges and peers may reach local addresses)"
                } else {
                    "false"
                }
            );
            println!("PU_MIN_LOG_LEVEL={}", c.min_log_level);
            println!("PU_UNIT_LOG_EXPIRATION={}", c.unit_log_expiration_secs);
            match &c.telegram_bot_token {
                None => println!("PU_TELEGRAM_BOT_TOKEN= (no bot, no Telegram alerts)"),
                Some(_) => {
                    println!("PU_TELEGRAM_BOT_TOKEN=<set>");
                    println!("PU_TELEGRAM_API_URL={}", c.telegram_api_url);
                    println!(
                        "PU_TELEGRAM_MODE={}",
                        format!("{:?}", c.telegram_mode).to_lowercase()
                    );
                }
            }
            println!(
                "PU_TELEGRAM_ALERT_INTERVAL={}",
                c.telegram_alert_interval_secs
            );
            println!("PU_CRASH_ALERT_INTERVAL={}", c.crash_alert_interval_secs);
            println!(
                "PU_METRICS_TOKEN={}",
                if c.metrics_token.is_some() {
                    "<set>"
                } else {
                    "(unset: admins only)"
                }
            );
            if c.ff_grafana {
                let o = &c.grafana_oidc;
                println!("PU_GRAFANA_OIDC_CLIENT_ID={}", o.client_id);
                println!(
                    "PU_GRAFANA_OIDC_CLIENT_SECRET=<{} chars>",
                    o.client_secret.len()
                );
                println!(
                    "PU_GRAFANA_OIDC_REDIRECT_URIS={}",
                    o.redirect_uris.join(",")
                );
            }
            match &c.clickhouse {
                None => println!("PU_CLICKHOUSE_URL= (unit logs in PU_DATABASE_URL)"),
                Some(ch) => {
                    println!("PU_CLICKHOUSE_URL={}", ch.url);
                    println!("PU_CLICKHOUSE_DATABASE={}", ch.database);
                }
            }
        }
    }
    Ok(())
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
