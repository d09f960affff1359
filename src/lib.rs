//! Pepeunit: a self-hosted, federated IoT platform.
//!
//! The crate is one binary (`src/main.rs`) over this library; see ARCHITECTURE.md for the map.

pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod firmware;
pub mod git;
pub mod grafana;
pub mod graphql;
pub mod http;
pub mod load;
pub mod mqtt;
pub mod net;
pub mod observe;
pub mod platform;
pub mod poller;
pub mod server;
pub mod service;
pub mod store;
pub mod telegram;
pub mod telemetry;
pub mod token;
