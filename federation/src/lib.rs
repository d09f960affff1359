//! ActivityPub federation of Pepeunit instances (SPEC §11): the instance, users, Repos and
//! Units as actors, signed deliveries through a durable queue, the inbox, domain policy and
//! the federated hub index. Storage is reached only through [`backend::Backend`], which the
//! server crate implements over its database.

pub mod backend;
pub mod core;
pub mod delivery;
pub mod documents;
pub mod hub;
pub mod inbox;
pub mod peer;
pub mod policy;
pub mod routes;
pub mod signing;

pub use crate::core::{FedError, Federation, Settings};
