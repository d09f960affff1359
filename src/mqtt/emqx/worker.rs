//! The worker (SPEC §2: "broker configuration is applied by exactly one worker"): one apply
//! pass ([`EmqxAdmin::apply`]: access first, then alerts and bridges), what it did
//! ([`ApplyReport`]), the health it records ([`EmqxHealth`]), and [`run_worker`], the one task
//! that applies at start, on request and after failures with [`Backoff`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use super::client::{EmqxAdmin, EmqxError};

/// What one [`EmqxAdmin::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// What was created or changed, in order, e.g. `authorization source http: created`.
    pub changed: Vec<String>,
    /// What already matched, e.g. `listener tcp:default max_connections`.
    pub unchanged: Vec<String>,
}

impl ApplyReport {
    /// Nothing had to change.
    pub fn is_unchanged(&self) -> bool {
        self.changed.is_empty()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "nothing".to_string()
            } else {
                items.join("; ")
            }
        };
        write!(
            f,
            "changed: {}; already right: {}",
            list(&self.changed),
            list(&self.unchanged)
        )
    }
}

/// The worker's state, for metrics and health pages.
#[derive(Clone, Debug, Default)]
pub struct EmqxHealth {
    /// When EMQX last matched (after an apply that succeeded).
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure and when it happened; kept after a later success for diagnosis.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failed applies since the last success (0 when healthy).
    pub consecutive_failures: u32,
    pub last_report: Option<ApplyReport>,
}

impl EmqxHealth {
    /// The last apply succeeded.
    pub fn is_healthy(&self) -> bool {
        self.last_success.is_some() && self.consecutive_failures == 0
    }
}

/// Delays between failed applies: `first`, doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl EmqxAdmin {
    /// Makes EMQX match, changing only what differs. Safe to repeat.
    pub async fn apply(&self) -> Result<ApplyReport, EmqxError> {
        let mut report = ApplyReport::default();
        // topics are closed before devices are let in
        self.apply_authorization_sources(&mut report).await?;
        self.apply_authorization_settings(&mut report).await?;
        self.apply_authentication(&mut report).await?;
        if self.settings.max_connections.is_some() || self.settings.messages_rate.is_some() {
            self.apply_listener(
                self.settings.max_connections,
                self.settings.messages_rate,
                &mut report,
            )
            .await?;
        }
        if let Some(size) = self.settings.max_packet_size {
            self.apply_mqtt(size, &mut report).await?;
        }
        self.apply_alerts(&mut report).await?;
        let bridges = self.bridges.lock().expect("bridges lock").clone();
        // None: the bridge supervisor has not said yet; leave EMQX's bridges alone until then
        if let Some(bridges) = bridges {
            self.apply_bridges(&bridges, &mut report).await?;
        }
        Ok(report)
    }

    async fn apply_and_record(&self) -> Result<ApplyReport, EmqxError> {
        let result = self.apply().await;
        let now = Utc::now();
        self.health.send_modify(|h| match &result {
            Ok(report) => {
                h.last_success = Some(now);
                h.consecutive_failures = 0;
                h.last_report = Some(report.clone());
            }
            Err(e) => {
                h.last_error = Some(e.to_string());
                h.last_error_at = Some(now);
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            }
        });
        result
    }
}

/// The one task that applies broker configuration: at start, again whenever something arrives
/// on `reapply`, and after a failure with backoff (1 s doubling to 60 s by default) until EMQX
/// answers. Exits when `stop` changes (or its sender is gone).
pub async fn run_worker(
    admin: EmqxAdmin,
    mut stop: watch::Receiver<bool>,
    mut reapply: mpsc::Receiver<()>,
) {
    if *stop.borrow_and_update() {
        return;
    }
    let mut reapply_open = true;
    let mut due = true;
    let mut delay = admin.backoff.first;
    loop {
        if due {
            let result = tokio::select! {
                r = admin.apply_and_record() => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(report) => {
                    due = false;
                    delay = admin.backoff.first;
                    if report.is_unchanged() {
                        tracing::info!("EMQX configuration already right");
                    } else {
                        tracing::info!("EMQX configuration applied: {report}");
                    }
                }
                Err(e) => {
                    match &e {
                        EmqxError::Credentials { .. } | EmqxError::Settings(_) => {
                            tracing::error!(retry_in = ?delay, "EMQX configuration not applied: {e}")
                        }
                        _ => {
                            tracing::warn!(retry_in = ?delay, "EMQX configuration not applied: {e}")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                        msg = reapply.recv(), if reapply_open => {
                            reapply_open = msg.is_some();
                        }
                    }
                    delay = (delay * 2).min(admin.backoff.max);
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            msg = reapply.recv(), if reapply_open => match msg {
                Some(()) => {
                    // several requests while one apply runs need one more apply, not several
                    while reapply.try_recv().is_ok() {}
                    due = true;
                }
                None => reapply_open = false,
            },
        }
    }
}
