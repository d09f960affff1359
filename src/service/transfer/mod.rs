//! Account export and import (SPEC §11): one gzip-compressed tar archive of a user's data,
//! described by a versioned manifest (docs/EXPORT-FORMAT.md). Export streams: members are
//! written as they are read, logs in chunks, so memory stays bounded. Import checks the whole
//! archive (member list, sha256 of every member, the passphrase MAC, every field of every
//! record, every reference) before it writes anything, then writes everything in one
//! transaction: a broken or tampered archive changes nothing.
//!
//! The same code moves one Unit between instances (`ExportScope::Unit`, see `moves.rs`).
//!
//! One file per concern: `archive` (the tar.gz members, the manifest's constants, checksums,
//! the record form of log lines), `seal` (the passphrase: key derivation, the manifest MAC,
//! sealed fields), `export` (options and the streaming export), `import` (reading and checking
//! a whole archive, then the write in one transaction). The SQL lives in
//! [`crate::store::transfer`].

mod archive;
mod export;
mod import;
mod seal;

use uuid::Uuid;

pub use archive::{collect, FORMAT, VERSION};
pub use export::{ExportOptions, ExportSummary};
pub use import::{ImportReport, Remapped, Renamed, Reused, Skipped};

/// What to export.
#[derive(Clone, Copy, Debug)]
pub enum ExportScope {
    /// Everything a user owns.
    Account(Uuid),
    /// One Unit with its nodes, repo and registry (what a move carries).
    Unit(Uuid),
}

/// Progress of a long export or import, for the CLI.
#[derive(Clone, Debug)]
pub struct Progress {
    pub table: &'static str,
    pub records: usize,
}
