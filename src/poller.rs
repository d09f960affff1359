//! The one task that runs periodic jobs (SPEC §2): at start, clone registries missing on disk
//! and sync again those whose sync the last stop interrupted;
//! re-sync every registry each `PU_REGISTRY_SYNC_INTERVAL` seconds (a sync that moves a repo's
//! target version sends `Update` to its auto-updating units); every hour, `Update` to
//! auto-updating units that still run another version; every few seconds, pending `Update`s
//! past `PU_FIRMWARE_UPDATE_TIMEOUT` become Error; every minute, expired unit logs are purged.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::service::Instance;

const AUTO_UPDATE_PERIOD: Duration = Duration::from_secs(3600);
const LOG_PURGE_PERIOD: Duration = Duration::from_secs(60);

fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// How often incoming ActivityPub activity ids older than a week are forgotten.
const SEEN_PURGE_PERIOD: Duration = Duration::from_secs(3600);

/// Runs until `stop` changes. `interrupted`: registries whose sync the last stop cut short
/// ([`Instance::end_interrupted_syncs`]), synced again at once with those missing on disk.
pub async fn run(
    instance: Instance,
    mut stop: watch::Receiver<bool>,
    interrupted: Vec<uuid::Uuid>,
) {
    instance.sync_at_start(&interrupted).await;
    let mut sync = every(Duration::from_secs(
        instance.config.registry_sync_interval_secs.max(10),
    ));
    let mut auto_update = every(AUTO_UPDATE_PERIOD);
    // often enough that a timeout is noticed within a tenth of its length (at least 1 s)
    let timeout = instance.config.firmware_update_timeout as u64;
    let mut update_timeouts = every(Duration::from_millis((timeout * 100).clamp(1000, 30_000)));
    let mut log_purge = every(LOG_PURGE_PERIOD);
    let mut pipe_purge = every(LOG_PURGE_PERIOD);
    let mut seen_purge = every(SEEN_PURGE_PERIOD);
    // a few seconds past each full hour: the hour just over goes into the load history
    let now = crate::service::load::unix_now();
    let mut load_hour = interval_at(
        Instant::now() + Duration::from_secs(3600 - now % 3600 + 5),
        Duration::from_secs(3600),
    );
    load_hour.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sync.tick() => {
                tracing::info!("periodic registry re-sync");
                instance.sync_all_registries(false).await;
            }
            _ = auto_update.tick() => match instance.auto_update_all(true).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(units = n, "hourly auto-update sent"),
                Err(e) => tracing::warn!(error = %e, "hourly auto-update failed"),
            },
            _ = update_timeouts.tick() => match instance.expire_update_requests().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(units = n, "firmware updates timed out"),
                Err(e) => tracing::warn!(error = %e, "cannot expire firmware updates"),
            },
            _ = log_purge.tick() => match instance.purge_expired_unit_logs().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(lines = n, "expired unit logs purged"),
                Err(e) => tracing::warn!(error = %e, "cannot purge unit logs"),
            },
            _ = pipe_purge.tick() => match instance.purge_expired_pipe_rows().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "expired data pipe window rows purged"),
                Err(e) => tracing::warn!(error = %e, "cannot purge data pipe window rows"),
            },
            _ = seen_purge.tick() => match instance.purge_seen_activities().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(ids = n, "old incoming activity ids forgotten"),
                Err(e) => tracing::warn!(error = %e, "cannot purge incoming activity ids"),
            },
            _ = load_hour.tick() => {
                let hour = crate::service::load::hour_of(
                    crate::service::load::unix_now().saturating_sub(1800),
                );
                match instance.record_load_hour(hour).await {
                    Ok(n) => tracing::debug!(units = n, "last hour's load recorded"),
                    Err(e) => tracing::warn!(error = %e, "last hour's load not recorded"),
                }
            }
            _ = stop.changed() => break,
        }
    }
}
