//! The broker-config worker for EMQX 5 (SPEC §2: "broker configuration is applied by exactly
//! one worker"). With `PU_MQTT_MODE=external` and `PU_EMQX_API_URL` set, [`run_worker`] makes
//! EMQX match what Pepeunit needs, through the REST API v5, and keeps it so:
//!
//! 1. authentication: an HTTP authenticator (`password_based:http`) POSTing
//!    `{"username":"${username}","clientid":"${clientid}"}` to our `/units/mqtt_authn`;
//! 2. authorization: an `http` source POSTing
//!    `{"token":"${username}","topic":"${topic}","action":"${action}"}` to our `/units/auth`,
//!    first in the chain; every other source disabled; `no_match = deny`,
//!    `deny_action = ignore`, a short ACL cache;
//! 3. limits: `max_connections` of the `tcp:default` listener, `mqtt.max_packet_size`.
//! 4. bridges and alerts: the connectors, actions and rules that carry Output-side bridges to
//!    peers' brokers and forward device log messages for alerts.
//!
//! One file per concern:
//! - [`client`]: the REST client ([`EmqxAdmin`] and its settings, errors, the one request
//!   path with Basic auth and bounded answers, and the JSON compare/merge helpers);
//! - [`access`]: authentication, authorization sources and settings, listener and MQTT
//!   limits (items 1 to 3 above, with where each request shape comes from);
//! - [`rules`]: the bridge and alert objects (connectors, actions, rules) this worker owns;
//! - [`worker`]: one apply pass, its report and health, and the worker loop with backoff.

pub mod access;
pub mod client;
pub mod rules;
pub mod worker;

pub use access::{AUTHN_ID, AUTHZ_CACHE_MAX_SIZE, AUTHZ_CACHE_TTL, LISTENER_ID};
pub use client::{
    EmqxAdmin, EmqxError, EmqxSettings, CONNECT_TIMEOUT, MAX_MQTT_PACKET_SIZE, REQUEST_TIMEOUT,
};
pub use rules::{EmqxAlerts, EmqxBridge, ALERTS_NAME, BRIDGE_PREFIX};
pub use worker::{run_worker, ApplyReport, Backoff, EmqxHealth};
