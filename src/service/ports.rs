//! What the service layer needs from the parts around it, as small types it owns and they
//! implement, so that the service never names the MQTT side or the Telegram bot:
//!
//! - [`Outbox`]: publishing to devices (commands, node values). The MQTT link installs a
//!   [`Publisher`] (its client) and flags whether it is connected.
//! - [`BridgeSignal`]: telling the bridge carrier that bridges changed, and learning which
//!   bridges' credentials it is using.
//! - [`ChatBot`]: the chat bot (Telegram) for link codes and alert delivery.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::alerts::AlertMessage;
use crate::error::{AppError, AppResult};

/// Queues one QoS 1 message on the backend's MQTT connection without waiting.
pub trait Publisher: Send + Sync {
    fn try_publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String>;
}

/// The backend's way out to devices. Cheap to clone.
#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

#[derive(Default)]
struct OutboxInner {
    publisher: RwLock<Option<Arc<dyn Publisher>>>,
    connected: AtomicBool,
}

impl Outbox {
    pub fn install(&self, publisher: Option<Arc<dyn Publisher>>) {
        *self
            .inner
            .publisher
            .write()
            .unwrap_or_else(|e| e.into_inner()) = publisher;
    }

    pub fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Release);
    }

    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Queues one QoS 1 message on the backend connection. Fails with `422: 10: MQTT Error`
    /// when the backend is not connected to the broker or its send queue is full, so callers
    /// never report a command as sent when it was not.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> AppResult<()> {
        let fail = |why: &str| {
            AppError::mqtt(format!(
                "Error when publish message to topic {topic}: {why}"
            ))
        };
        if !self.is_connected() {
            return Err(fail("the backend is not connected to the MQTT broker"));
        }
        let guard = self
            .inner
            .publisher
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(publisher) = guard.as_ref() else {
            return Err(fail("the backend MQTT connection is not running"));
        };
        publisher
            .try_publish(topic, payload.into())
            .map_err(|e| fail(&e))
    }
}

/// How the service layer tells the bridge carrier that bridges changed, and learns which
/// bridges' credentials are in use. Cheap to clone.
#[derive(Clone)]
pub struct BridgeSignal(Arc<SignalInner>);

struct SignalInner {
    changed: Notify,
    running: watch::Sender<HashSet<Uuid>>,
}

impl Default for BridgeSignal {
    fn default() -> Self {
        BridgeSignal(Arc::new(SignalInner {
            changed: Notify::new(),
            running: watch::Sender::new(HashSet::new()),
        }))
    }
}

impl BridgeSignal {
    /// Bridges changed: the carrier re-reads them.
    pub fn changed(&self) {
        self.0.changed.notify_one();
    }

    /// The carrier's side: waits until told that bridges changed.
    pub async fn notified(&self) {
        self.0.changed.notified().await;
    }

    /// Waits (at most `wait`) until no carrier uses this bridge's credential.
    pub async fn wait_stopped(&self, bridge: Uuid, wait: Duration) {
        let mut rx = self.0.running.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|set| !set.contains(&bridge))).await;
    }

    /// The carrier's side: the bridges whose credentials it uses now.
    pub fn set_running(&self, set: HashSet<Uuid>) {
        self.0.running.send_replace(set);
    }
}

/// Who receives a chat message: a linked chat and the user's language code.
#[derive(Clone, Debug)]
pub struct ChatUser {
    pub user: Uuid,
    pub chat: i64,
    pub language: Option<String>,
}

/// The chat bot as the service layer sees it; `telegram::Telegram` implements it.
#[async_trait::async_trait]
pub trait ChatBot: Send + Sync {
    /// The bot's username once known; never waits for the network.
    fn cached_username(&self) -> Option<String>;
    /// The bot's username, asked from the Bot API when not known yet.
    async fn username(&self) -> Result<String, String>;
    /// A one-time code that links the chat which sends it to `user`.
    fn new_link_code(&self, user: Uuid) -> String;
    /// Sends one alert about `unit_name` to its owner, in their language.
    async fn send_alert(
        &self,
        to: &ChatUser,
        unit_name: &str,
        alert: &AlertMessage,
    ) -> Result<(), String>;
    /// One update that arrived over the webhook, with the secret token it came with: checked,
    /// then handled in the background (the answer goes out as a new message).
    async fn receive_webhook(
        &self,
        instance: &super::Instance,
        secret_token: &[u8],
        body: &[u8],
    ) -> AppResult<()>;
}
