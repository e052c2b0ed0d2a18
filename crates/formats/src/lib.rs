//! The formats Ferry shares byte for byte with Nix and Guix.
//!
//! This crate owns the encodings: nix32, SHA-256 renderings, the NAR archive,
//! store path computation, derivations (ATerm and `hashDerivationModulo`) and
//! export bundles. It is pure: functions, and streaming readers and writers
//! over `std::io`. It must never touch the store database, take locks, spawn
//! processes or do async I/O; those belong to `ferry-store` and above.
//!
//! Facts and test vectors: `../shared/reference/formats.md` (mirrored in the
//! unit tests beside each module).
#![forbid(unsafe_code)]

pub mod content_hash;
pub mod derivation;
pub mod export;
pub mod hash;
pub mod nar;
pub mod nix32;
pub mod store_path;
pub mod wire;

pub use hash::Sha256Hash;
pub use store_path::{StoreDir, StorePath};
