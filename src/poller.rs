//! The one task that runs periodic jobs: at start, clone registries missing on disk; then
//! re-sync every registry each `PU_REGISTRY_SYNC_INTERVAL` seconds.

use std::time::Duration;

use tokio::sync::watch;

use crate::service::Instance;

/// Runs until `stop` changes.
pub async fn run(instance: Instance, mut stop: watch::Receiver<bool>) {
    instance.sync_all_registries(true).await;
    let period = Duration::from_secs(instance.config.registry_sync_interval_secs.max(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tracing::info!("periodic registry re-sync");
                instance.sync_all_registries(false).await;
            }
            _ = stop.changed() => break,
        }
    }
}
