//! The backend's way out to devices: publishes commands and node values on the backend's own
//! MQTT connection. Lives in [`crate::service::Instance`] so the service layer can publish; the
//! connection task ([`super::link`]) installs the client and flags whether it is connected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rumqttc::{AsyncClient, QoS};

use crate::error::{AppError, AppResult};

#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    client: RwLock<Option<AsyncClient>>,
    connected: AtomicBool,
}

impl Outbox {
    pub(crate) fn install(&self, client: Option<AsyncClient>) {
        *self.inner.client.write().unwrap_or_else(|e| e.into_inner()) = client;
    }

    pub(crate) fn set_connected(&self, connected: bool) {
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
        let guard = self.inner.client.read().unwrap_or_else(|e| e.into_inner());
        let Some(client) = guard.as_ref() else {
            return Err(fail("the backend MQTT connection is not running"));
        };
        client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.into())
            .map_err(|e| fail(&e.to_string()))
    }
}
