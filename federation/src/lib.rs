//! ActivityPub federation of Pepeunit instances (SPEC §11): the instance, users, Repos and
//! Units as actors, signed deliveries through a durable queue, the inbox, domain policy and
//! the federated hub index. Storage is reached only through [`backend::Backend`], which the
//! server crate implements over its database.

pub mod hub;
