//! The store: a directory of immutable store paths plus a SQLite database
//! saying which of them are valid, with their NAR hash and size, references,
//! deriver, registration time and signatures.
//!
//! The one invariant everything else relies on: a path is valid only when
//! its row is committed, and a row is committed only after the path's
//! contents are complete, read-only (mode without write bits, mtime 1, as
//! Nix and Guix leave them), synced to disk, and all its references valid.
//! Contents are written under a temporary name in the store directory and
//! renamed into place; a crash at any point leaves at worst an unregistered
//! directory, which the next add of that path removes under its lock.
//!
//! And one rule for derivations: a path named `*.drv` becomes valid only as
//! the text path of a derivation whose recorded outputs are the ones its
//! contents imply, whatever request carries it (see `derivations.rs`).
//!
//! This crate knows nothing of builds, daemons or keys: signatures are opaque
//! strings here, checked by `ferry-trust` before an import commits.
#![forbid(unsafe_code)]

mod add;
mod bundle;
mod canonical;
mod db;
mod derivations;
mod fsops;
mod gc;
mod import_expected;
mod locations;
mod lock;
pub mod references;
mod remove;
mod signatures;
mod store;
mod verify;

pub use bundle::{AcceptAll, ImportCheck, ImportedItem};
pub use canonical::canonicalise_outputs;
pub use db::PathInfo;
pub use ferry_formats::export::Signer;
pub use gc::{GcAction, GcLock, GcOptions, GcResult, TempRoots};
pub use import_expected::ItemCheck;
pub use locations::Locations;
pub use lock::PathLock;
pub use remove::remove_tree;
pub use store::{Store, StoreError};
pub use verify::{StrayEntry, StrayKind, VerifyProblem, VerifyReport};
