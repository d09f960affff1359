//! The embedded broker (rmqtt as a library), so `pepeunit serve` works on a bare machine.
//!
//! rmqtt was chosen over rumqttd because it has hooks at every point the platform needs:
//! CONNECT (authentication), SUBSCRIBE and PUBLISH (ACL, checked separately) and per-message
//! hooks (for throttling and bridges later); rumqttd only has a connect-time hook.
//!
//! Every decision comes from the service layer ([`crate::service::broker_access`]): the same
//! rules answer EMQX's HTTP authorization in external mode. Backend tokens connect as
//! superusers (no ACL cost on the core's own subscriptions). ACL answers are cached per
//! (username, topic, action) for [`ACL_TTL`], so a device publishing fast costs one lookup per
//! few seconds, not one database read per message.
//!
//! The broker hands what the core processes (a unit's `state` and `log`, a node's `/pepeunit`
//! topic) to the shards itself, in the publish path, and answers a device's QoS 1 PUBLISH only
//! once the batch holding it is committed: PUBACK means "stored", so `kill -9` loses nothing a
//! device was told was delivered. rmqtt awaits its hooks before it forwards a message and
//! writes the PUBACK (`Session::process_publish` -> `_publish`: the `MessagePublish` hook, the
//! `MessagePublishCheckAcl` hook, forwarding, then `send_publish_ack`), and a session handles
//! its publishes one at a time, so a waiting hook holds back only that device. The cost: one
//! device's QoS 1 messages go at most one per commit; many devices share each commit (the
//! shards batch). Devices' messages are taken in the ACL hook (after the ACL allowed them; a
//! batch that cannot be stored disconnects the device without a PUBACK, and it sends again
//! after reconnecting); superusers (bridge carriers, the backend) skip that hook in rmqtt, so
//! theirs and last wills are taken in the `MessagePublish` hook. Messages still go on to their
//! subscribers (other devices' input nodes, bridges). The core holds no subscription on the
//! embedded broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, Id, PublishAclResult, SubscribeAclResult};
use tokio::task::JoinHandle;

use super::acks::Ack;
use super::core::{self as shards, Dispatcher, Message};
use crate::config::Config;
use crate::observe::mqtt::MqttStats;
use crate::service::broker_access::{BrokerAction, BrokerDecision};
use crate::service::load::unix_now;
use crate::service::throttle::{Subject, Verdict};
use crate::service::Instance;

const ACL_TTL: Duration = Duration::from_secs(5);
const ACL_SLOTS: usize = 16;
/// Entries per slot before a slot is swept of expired answers (and cleared when the sweep
/// frees nothing): at most 16 x 20k short keys.
const ACL_SLOT_LIMIT: usize = 20_000;
/// Topics longer than this are not cached (a device could otherwise fill the cache with
/// distinct 64 KiB names within the TTL).
const ACL_MAX_CACHED_TOPIC: usize = 512;

type AclKey = (String, String, BrokerAction);

/// How long who a username publishes as (for throttling) is kept, and how many are kept.
const SUBJECT_TTL: Duration = Duration::from_secs(60);
const SUBJECT_LIMIT: usize = 100_000;

struct Hooks {
    instance: Instance,
    stats: Arc<MqttStats>,
    acl: Vec<Mutex<HashMap<AclKey, (Instant, bool)>>>,
    /// Where device messages go; taken when the core stops (the shards end once every
    /// dispatcher is gone), after which publishes on core topics are refused.
    ingest: std::sync::RwLock<Option<Dispatcher>>,
    domain: String,
    /// Who each username publishes as, for throttling (`None`: not throttled).
    subjects: Mutex<HashMap<String, (Instant, Option<Subject>)>>,
}

/// What became of a message handed to the shards.
#[derive(Debug, PartialEq, Eq)]
enum Ingested {
    /// Not a topic the core processes.
    NotOurs,
    /// QoS 0: queued at its shard (nobody waits).
    Queued,
    /// QoS 1 or 2: its batch is committed.
    Committed,
    /// Not stored (the store refused it past the retries, or the core is stopping).
    Failed,
}

impl Hooks {
    fn slot(&self, key: &AclKey) -> &Mutex<HashMap<AclKey, (Instant, bool)>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.acl[(h.finish() as usize) % ACL_SLOTS]
    }

    /// Forgets every cached answer (a unit's tokens were revoked).
    fn forget_answers(&self) {
        for slot in &self.acl {
            slot.lock().unwrap().clear();
        }
        self.subjects.lock().unwrap().clear();
    }

    /// Whether the client's last will (if any) names a topic `token` may publish to.
    async fn will_allowed(&self, token: &str, ci: &rmqtt::types::ConnectInfo) -> bool {
        let Some(will) = ci.last_will() else {
            return true;
        };
        let topic = match will {
            rmqtt::types::LastWill::V3(w) => &w.topic,
            rmqtt::types::LastWill::V5(w) => &w.topic,
        };
        self.allowed(token, topic, BrokerAction::Publish).await
    }

    /// Whether a device's message passes its topic's limit (SPEC §8); a dropped one is
    /// counted for its Unit's owner to see.
    async fn throttle_passes(&self, username: &str, topic: &str) -> bool {
        let throttle = &self.instance.throttle;
        if !throttle.active() {
            return true;
        }
        let verdict = match throttle.take(topic, None) {
            Verdict::NeedSubject => match self.subject(username).await {
                Some(subject) => throttle.take(topic, Some(subject)),
                None => Verdict::Pass,
            },
            v => v,
        };
        match verdict {
            Verdict::Drop(unit) => {
                self.stats.add(&self.stats.counters.throttled, 1);
                self.instance.load.record_dropped(topic, unit, unix_now());
                false
            }
            _ => true,
        }
    }

    /// Who a username publishes as (a Unit and its user), kept for [`SUBJECT_TTL`].
    async fn subject(&self, username: &str) -> Option<Subject> {
        if let Some((at, s)) = self.subjects.lock().unwrap().get(username) {
            if at.elapsed() < SUBJECT_TTL {
                return *s;
            }
        }
        let s = self.instance.throttle_subject(username).await;
        let mut subjects = self.subjects.lock().unwrap();
        if subjects.len() >= SUBJECT_LIMIT {
            subjects.retain(|_, (at, _)| at.elapsed() < SUBJECT_TTL);
            if subjects.len() >= SUBJECT_LIMIT {
                subjects.clear();
            }
        }
        subjects.insert(username.to_string(), (Instant::now(), s));
        s
    }

    /// Hands a publish on a core topic to its shard and, for QoS 1 and 2, waits until the
    /// batch holding it is committed.
    async fn ingest(&self, publish: &rmqtt::types::Publish) -> Ingested {
        if !shards::ingested(&self.domain, &publish.topic) {
            return Ingested::NotOurs;
        }
        let Some(dispatcher) = self
            .ingest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ingested::Failed;
        };
        let (ack, committed) = if publish.qos == rmqtt::types::QoS::AtMostOnce {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(Ack::Device(tx)), Some(rx))
        };
        dispatcher
            .dispatch(Message {
                topic: publish.topic.to_string(),
                payload: publish.payload.clone(),
                dup: publish.dup,
                ack,
            })
            .await;
        drop(dispatcher);
        let Some(committed) = committed else {
            return Ingested::Queued;
        };
        if committed.await == Ok(true) {
            self.stats.add(&self.stats.counters.acked, 1);
            Ingested::Committed
        } else {
            Ingested::Failed
        }
    }

    async fn allowed(&self, username: &str, topic: &str, action: BrokerAction) -> bool {
        let key = (username.to_string(), topic.to_string(), action);
        if let Some((at, ok)) = self.slot(&key).lock().unwrap().get(&key) {
            if at.elapsed() < ACL_TTL {
                return *ok;
            }
        }
        let ok = self
            .instance
            .broker_decision(username, topic, Some(action))
            .await
            == BrokerDecision::Allow;
        // long topic names are decided every time: the cache holds short keys only
        if topic.len() > ACL_MAX_CACHED_TOPIC {
            return ok;
        }
        let mut slot = self.slot(&key).lock().unwrap();
        if slot.len() >= ACL_SLOT_LIMIT {
            slot.retain(|_, (at, _)| at.elapsed() < ACL_TTL);
            if slot.len() >= ACL_SLOT_LIMIT {
                // a burst of distinct topics within the TTL: start the slot afresh
                slot.clear();
            }
        }
        slot.insert(key, (Instant::now(), ok));
        ok
    }
}

#[async_trait]
impl Handler for Hooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let c = &self.stats.counters;
        match param {
            Parameter::ClientAuthenticate(ci) => {
                let result = match ci.username() {
                    // rmqtt sends a last will without asking the publish ACL: a will on a
                    // topic the client may not publish to is refused with the connection
                    Some(token) if !self.will_allowed(token, ci).await => AuthResult::NotAuthorized,
                    Some(token) => match self.instance.mqtt_connect_role(token).await {
                        Some(true) => AuthResult::Allow(true, None),
                        // devices wait (their reconnect loop retries) until the core has
                        // subscribed: before that, their QoS 1 messages would be acknowledged
                        // and dropped for want of a subscriber (right after a restart)
                        Some(false)
                            if !self
                                .stats
                                .backend_subscribed
                                .load(std::sync::atomic::Ordering::Relaxed) =>
                        {
                            AuthResult::NotAuthorized
                        }
                        Some(false) => AuthResult::Allow(false, None),
                        None => AuthResult::NotAuthorized,
                    },
                    None => AuthResult::NotAuthorized,
                };
                if matches!(result, AuthResult::NotAuthorized) {
                    self.stats.add(&c.connects_refused, 1);
                }
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let user = session.id.username_ref();
                if self
                    .allowed(user, &sub.topic_filter, BrokerAction::Subscribe)
                    .await
                {
                    (
                        false,
                        Some(HookResult::SubscribeAclResult(
                            SubscribeAclResult::new_success(sub.opts.qos(), None),
                        )),
                    )
                } else {
                    self.stats.add(&c.subscribes_denied, 1);
                    (
                        false,
                        Some(HookResult::SubscribeAclResult(
                            SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                        )),
                    )
                }
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let user = session.id.username_ref();
                // the official device client dies on a payload that is not UTF-8 (it decodes
                // outside its error handling), so no device may send one to another
                if std::str::from_utf8(&publish.payload).is_ok()
                    && self
                        .allowed(user, &publish.topic, BrokerAction::Publish)
                        .await
                {
                    let result = if !self.throttle_passes(user, &publish.topic).await {
                        // dropped before anyone gets it; no disconnect, so the device goes on
                        // (MQTT 5: PUBACK 0x97 Quota exceeded; 3.1.1: a plain PUBACK)
                        PublishAclResult(rmqtt::types::PublishResult::reason_code(
                            rmqtt::codec::v5::PublishAckReason::QuotaExceeded,
                            Some("message rate of this topic exceeded".into()),
                            false,
                        ))
                    } else if self.ingest(publish).await == Ingested::Failed {
                        // no PUBACK: the device sends it again after reconnecting
                        PublishAclResult::rejected(true, None)
                    } else {
                        PublishAclResult::allow()
                    };
                    (false, Some(HookResult::PublishAclResult(result)))
                } else {
                    self.stats.add(&c.publishes_denied, 1);
                    (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            false, None,
                        ))),
                    )
                }
            }
            // superusers and last wills never reach the ACL hook: their messages are taken
            // here (devices' are taken after their ACL check)
            Parameter::MessagePublish(session, from, publish) => {
                let will = matches!(from.typ(), rmqtt::types::FromType::LastWill);
                let superuser = match session {
                    Some(s) => s.superuser().await.unwrap_or(false),
                    None => false,
                };
                if will || superuser {
                    let ingested = self.ingest(publish).await;
                    if ingested == Ingested::Failed {
                        tracing::warn!(topic = %publish.topic, will, "a superuser's or will's message was not stored");
                    }
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    scx: ServerContext,
    hooks: Arc<Hooks>,
    /// The accept loop; taken when it is stopped.
    task: Option<JoinHandle<()>>,
    /// Drops sessions of revoked unit tokens; stopped with the accept loop.
    revocations: Option<JoinHandle<()>>,
}

/// The embedded broker's listener, bound before the instance opens so that its configuration
/// names the port the broker actually took (see [`bind`]).
pub struct BrokerListener {
    listener: Listener,
    addr: SocketAddr,
}

impl BrokerListener {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `PU_MQTT_BIND` for the embedded broker. Fails (rather than exiting the process) when
/// the address is taken. With port 0 a free port is taken and written into `config`
/// ([`Config::set_mqtt_listener_port`]); rmqtt does not tell which port a listener bound to
/// port 0 got, so the port comes from a probe bind, retried if it was taken in between.
pub fn bind(config: &mut Config) -> anyhow::Result<BrokerListener> {
    let wanted = config.mqtt_bind;
    if wanted.port() != 0 {
        let listener = listen(config, wanted)?;
        return Ok(BrokerListener {
            listener,
            addr: wanted,
        });
    }
    let mut last = None;
    for _ in 0..10 {
        let addr = std::net::TcpListener::bind(wanted)
            .and_then(|probe| probe.local_addr())
            .map_err(|e| anyhow::anyhow!("MQTT: cannot listen on {wanted}: {e}"))?;
        match listen(config, addr) {
            Ok(listener) => {
                config.set_mqtt_listener_port(addr.port());
                return Ok(BrokerListener { listener, addr });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

fn listen(config: &Config, addr: SocketAddr) -> anyhow::Result<Listener> {
    let mut builder = Builder::new()
        .name("pepeunit/tcp")
        .laddr(addr)
        // without this a CONNECT with no username would skip the authentication hook
        .allow_anonymous(false)
        .reuseaddr(Some(true))
        // the backend acknowledges after commit: its window is the largest batch the core sees
        .max_inflight(NonZeroU16::new(1024).expect("non-zero"))
        .max_mqueue_len(100_000)
        .max_packet_size(
            config
                .mqtt_max_packet_size
                .map_or(1024 * 1024, |n| n.min(u32::MAX as u64) as u32),
        );
    if let Some(max) = config.mqtt_max_connections {
        builder = builder.max_connections(max as usize);
    }
    builder
        .bind()
        .map_err(|e| anyhow::anyhow!("MQTT: cannot listen on {addr}: {e}"))?
        .tcp()
        .map_err(|e| anyhow::anyhow!("MQTT: listener on {addr}: {e}"))
}

impl EmbeddedBroker {
    /// Starts accepting on `listener` (from [`bind`]); messages on core topics go to
    /// `dispatcher`.
    pub async fn start(
        instance: Instance,
        stats: Arc<MqttStats>,
        listener: BrokerListener,
        dispatcher: Dispatcher,
    ) -> anyhow::Result<Self> {
        let scx = ServerContext::new().busy_check_enable(false).build().await;
        let register = scx.extends.hook_mgr().register();
        let revoked = instance.revocations.subscribe();
        let hooks = Arc::new(Hooks {
            domain: instance.config.domain.clone(),
            instance,
            stats,
            acl: (0..ACL_SLOTS).map(|_| Mutex::default()).collect(),
            ingest: std::sync::RwLock::new(Some(dispatcher)),
            subjects: Mutex::default(),
        });
        for t in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
            Type::MessagePublish,
        ] {
            register.add(t, Box::new(SharedHooks(hooks.clone()))).await;
        }
        register.start().await;
        let BrokerListener { listener, addr } = listener;
        let server = MqttServer::new(scx.clone()).listener(listener).build();
        let task = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        });
        tracing::info!(%addr, "embedded MQTT broker listening");
        let revocations = tokio::spawn(drop_revoked(hooks.clone(), scx.clone(), revoked));
        Ok(EmbeddedBroker {
            addr,
            scx,
            hooks,
            task: Some(task),
            revocations: Some(revocations),
        })
    }

    /// First step of a shutdown: accept no new connections and disconnect every client except
    /// the backend's own connections (`keep` and `{keep}-out`: the core must still receive
    /// what was accepted).
    /// rmqtt has no stop API: the accept loop is aborted.
    pub async fn disconnect_devices(&mut self, keep: &str) {
        self.stop_accepting().await;
        self.kick(Some(keep)).await;
    }

    /// Hands no more messages to the shards (they end once every dispatcher is gone); a
    /// device still publishing on a core topic is disconnected without its PUBACK.
    pub fn close_ingest(&self) {
        self.hooks
            .ingest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Disconnects every remaining session.
    pub async fn stop(mut self) {
        self.stop_accepting().await;
        self.kick(None).await;
    }

    async fn stop_accepting(&mut self) {
        for task in [self.task.take(), self.revocations.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
    }

    async fn kick(&self, keep: Option<&str>) {
        let ids: Vec<_> = self
            .scx
            .extends
            .shared()
            .await
            .iter()
            .map(|e| e.id())
            // the core's ingest connection `{keep}` and its publishing one `{keep}-out`
            .filter(|id| {
                !keep.is_some_and(|k| {
                    id.client_id
                        .strip_prefix(k)
                        .is_some_and(|rest| rest.is_empty() || rest == "-out")
                })
            })
            .collect();
        kick(&self.scx, ids).await;
    }
}

async fn kick(scx: &ServerContext, ids: Vec<Id>) {
    for id in ids {
        let entry = scx.extends.shared().await.entry(id);
        if let Ok(mut locked) = entry.try_lock().await {
            let _ = locked.kick(true, true, true).await;
        }
    }
}

/// Follows [`crate::service::access::Revocations`]: forgets the cached ACL answers and
/// disconnects every session whose username is a Unit token that is no longer valid (the
/// unit deleted, its token rotated), so that neither a cached answer nor a subscription
/// granted earlier outlives the token. A reconnect with it is refused at CONNECT.
async fn drop_revoked(
    hooks: Arc<Hooks>,
    scx: ServerContext,
    mut revoked: tokio::sync::broadcast::Receiver<uuid::Uuid>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let unit = match revoked.recv().await {
            Ok(unit) => Some(unit),
            // some were missed: look at every unit session
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return,
        };
        hooks.forget_answers();
        let ids: Vec<Id> = scx.extends.shared().await.iter().map(|e| e.id()).collect();
        let mut dead = Vec::new();
        for id in ids {
            if hooks
                .instance
                .unit_token_revoked(id.username_ref(), unit)
                .await
            {
                dead.push(id);
            }
        }
        if !dead.is_empty() {
            tracing::info!(
                sessions = dead.len(),
                "disconnecting sessions of revoked unit tokens"
            );
            kick(&scx, dead).await;
        }
    }
}

struct SharedHooks(Arc<Hooks>);

#[async_trait]
impl Handler for SharedHooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        self.0.hook(param, acc).await
    }
}
