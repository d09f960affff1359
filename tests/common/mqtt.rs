//! A minimal MQTT device for tests (rumqttc): connect with a token, subscribe, publish, and
//! receive with timeouts. Tests about the official client use tests/device/*.py instead.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;

pub struct MqttDevice {
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: mpsc::UnboundedReceiver<Vec<bool>>,
    /// One item each time the connection is lost (the event loop then reconnects).
    losses: mpsc::UnboundedReceiver<String>,
    /// PUBACKs received (each acknowledges one QoS 1 message: rumqttc starts every connection
    /// with a new session and never sends a message again).
    acks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttDevice {
    /// Connects and waits for the CONNACK; `Err` carries the refusal.
    pub async fn connect(port: u16, client_id: &str, token: &str) -> Result<MqttDevice, String> {
        Self::connect_with_will(port, client_id, token, None).await
    }

    /// [`MqttDevice::connect`] with a last will (sent by the broker when the connection is
    /// lost without a DISCONNECT, e.g. when this device is dropped).
    pub async fn connect_with_will(
        port: u16,
        client_id: &str,
        token: &str,
        will: Option<(&str, &str)>,
    ) -> Result<MqttDevice, String> {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_credentials(token, "");
        if let Some((topic, payload)) = will {
            o.set_last_will(rumqttc::LastWill::new(
                topic,
                payload.to_string(),
                QoS::AtLeastOnce,
                false,
            ));
        }
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a.code),
                    Ok(_) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK within 10 s".to_string())??;
        if first != ConnectReturnCode::Success {
            return Err(format!("{first:?}"));
        }
        let (mtx, messages) = mpsc::unbounded_channel();
        let (stx, subacks) = mpsc::unbounded_channel();
        let (ltx, losses) = mpsc::unbounded_channel();
        let acks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let acks_seen = acks.clone();
        let task = tokio::spawn(async move {
            let mut connected = true;
            loop {
                let event = eventloop.poll().await;
                match &event {
                    Err(e) if connected => {
                        connected = false;
                        let _ = ltx.send(e.to_string());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                    _ => {}
                }
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acks_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = mtx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let ok = a
                            .return_codes
                            .iter()
                            .map(|c| !matches!(c, SubscribeReasonCode::Failure))
                            .collect();
                        let _ = stx.send(ok);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Ok(MqttDevice {
            client,
            messages,
            subacks,
            losses,
            acks,
            task,
        })
    }

    /// QoS 1 messages the broker has acknowledged so far.
    #[allow(dead_code)]
    pub fn acked(&self) -> u64 {
        self.acks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits up to `wait` for the broker to drop the connection; its error, or None.
    pub async fn lost(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.losses.recv())
            .await
            .ok()
            .flatten()
    }

    /// Subscribes with QoS 1; true when the broker granted it.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let acks = tokio::time::timeout(Duration::from_secs(10), self.subacks.recv())
            .await
            .expect("SUBACK within 10 s")
            .expect("event loop alive");
        acks.iter().all(|ok| *ok)
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// The next message, or None after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(wait, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message on `topic`, skipping others; None after `wait`.
    pub async fn recv_on(&mut self, topic: &str, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (t, p) = self.recv(left).await?;
            if t == topic {
                return Some(p);
            }
        }
    }
}

/// A unit as tests hold it: its JSON (`UnitRead`) or its uuid string.
pub trait UnitId {
    fn unit_uuid(&self) -> &str;
}

impl UnitId for serde_json::Value {
    fn unit_uuid(&self) -> &str {
        self["uuid"].as_str().expect("a unit object with a uuid")
    }
}

impl UnitId for str {
    fn unit_uuid(&self) -> &str {
        self
    }
}

impl UnitId for String {
    fn unit_uuid(&self) -> &str {
        self
    }
}

/// The unit's MQTT username (its token, signed with the instance's key).
pub fn unit_token(inst: &super::TestInstance, unit: &(impl UnitId + ?Sized)) -> String {
    pepeunit::token::TokenKey::new(&inst.config.secret_key)
        .unit_token(unit.unit_uuid().parse().expect("a unit uuid"))
}

/// `{domain}/{dest}/{unit}/{name}/pepeunit`
pub fn base_topic(
    inst: &super::TestInstance,
    unit: &(impl UnitId + ?Sized),
    dest: &str,
    name: &str,
) -> String {
    format!(
        "{}/{dest}/{}/{name}/pepeunit",
        inst.domain,
        unit.unit_uuid()
    )
}
