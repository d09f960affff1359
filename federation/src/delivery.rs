//! The delivery worker: sends queued activities, signed with the instance key under the
//! sending actor's key id. A 2xx removes the row; 408, 429, 5xx and network errors are retried
//! with doubling delays; any other 4xx, a denied domain or the last attempt dead-letters the row
//! with the reason. Rows live in the database, so a restart resumes where it stopped.

use std::time::Duration;

use url::Url;

use crate::backend::Delivery;
use crate::core::{error_chain, read_limited, FedError, Federation};
use crate::documents::CONTENT_TYPE;
use crate::signing::{main_key_id, sign};

/// Deliveries sent at once.
const CONCURRENCY: usize = 8;
/// Longest delay between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(6 * 3600);

enum Outcome {
    Delivered,
    Retry(String),
    Dead(String),
}

impl Federation {
    /// Runs the delivery worker until `stop` fires.
    pub async fn run_deliveries(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let sent = match self.deliver_due(&stop).await {
                Ok(n) => {
                    failures = 0;
                    n
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("federation: delivery queue: {e}");
                    0
                }
            };
            if *stop.borrow() {
                return;
            }
            if sent > 0 {
                continue;
            }
            // storage trouble: back off up to a minute instead of spinning
            let idle = Duration::from_secs(1) * 2u32.pow(failures.min(6));
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.queue_wakeup().notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// Sends what is due now, [`CONCURRENCY`] at a time (a slow inbox holds one slot, not a
    /// batch); returns how many rows were handled.
    pub async fn deliver_due(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<usize, FedError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let due = self.backend().due_deliveries(&now, 64).await?;
        let n = due.len();
        let mut tasks = tokio::task::JoinSet::new();
        let mut failed = None;
        for d in due {
            if *stop.borrow() {
                break;
            }
            while tasks.len() >= CONCURRENCY {
                if let Some(Ok(Err(e))) = tasks.join_next().await {
                    failed = Some(e);
                }
            }
            let fed = self.clone();
            tasks.spawn(async move {
                let outcome = fed.attempt(&d).await;
                fed.settle(&d, outcome).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    async fn attempt(&self, d: &Delivery) -> Outcome {
        let inbox = match Url::parse(&d.inbox) {
            Ok(u) => u,
            Err(e) => return Outcome::Dead(format!("inbox is not a URL: {e}")),
        };
        match self.check_remote_url(&inbox) {
            Ok(_) => {}
            Err(FedError::Denied(domain)) => {
                return Outcome::Dead(format!("domain {domain} denied by policy"))
            }
            Err(e) => return Outcome::Dead(e.to_string()),
        }
        let Ok(actor) = Url::parse(&d.actor) else {
            return Outcome::Dead("sending actor is not a URL".into());
        };
        let builder = self
            .client()
            .post(inbox.clone())
            .header("content-type", CONTENT_TYPE)
            .header("accept", CONTENT_TYPE);
        let request = match sign(
            builder,
            &inbox,
            main_key_id(&actor),
            d.body.clone().into_bytes(),
            self.key().clone(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Dead(format!("signing: {e}")),
        };
        let response = match self.client().execute(request).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{}: {}", d.domain, error_chain(&e))),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let text = read_limited(response, 4096)
            .await
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let reason = format!("HTTP {}: {}", status.as_u16(), text.trim());
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Outcome::Dead(reason)
        } else {
            Outcome::Retry(reason)
        }
    }

    async fn settle(&self, d: &Delivery, outcome: Outcome) -> Result<(), FedError> {
        let attempts = d.attempts + 1;
        let b = self.backend();
        match outcome {
            Outcome::Delivered => b.delivered(&d.id).await?,
            Outcome::Dead(reason) => {
                tracing::info!(
                    "federation: gave up {} to {}: {reason}",
                    d.activity_id,
                    d.inbox
                );
                b.dead_letter(&d.id, attempts, &reason).await?
            }
            Outcome::Retry(reason) if attempts >= self.settings().max_attempts => {
                let reason = format!("gave up after {attempts} attempts: {reason}");
                tracing::info!("federation: {} to {}: {reason}", d.activity_id, d.inbox);
                b.dead_letter(&d.id, attempts, &reason).await?
            }
            Outcome::Retry(reason) => {
                let delay = retry_delay(self.settings().retry_base, attempts);
                let next = chrono::Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(6));
                let next = next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                b.retry_later(&d.id, attempts, &next, &reason).await?
            }
        }
        Ok(())
    }
}

/// `base * 2^(attempts-1)`, at most six hours.
pub fn retry_delay(base: Duration, attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    base.checked_mul(1u32 << exp.min(20))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(30));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 5), Duration::from_secs(480));
        assert_eq!(retry_delay(base, 40), MAX_DELAY);
        assert_eq!(retry_delay(base, 0), base);
    }
}
