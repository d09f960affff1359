//! The federated hub: a full-text index of public Repos and Units (local and remote).
