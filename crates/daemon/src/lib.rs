//! Daemon: the server behind `ferry daemon`, and the build engine that
//! `ferry build` also runs in-process when no daemon listens.
//!
//! Owns: client sessions ([`session`]), the build queue, per-derivation
//! locks and local job permits ([`engine`]), and the
//! scheduler's choice of build machine and offload. Must never: parse
//! formats or touch store files directly (it goes through `ferry-store`
//! and `ferry-build`).
//!
//! Layers, outside in: [`server`] accepts connections on the Unix socket;
//! [`session`] speaks the protocol with one client; [`engine`] plans and
//! runs builds; [`bridge`] moves archive streams between the async
//! connection and the store's blocking readers and writers.

pub mod access;
pub mod auto_gc;
pub mod bridge;
pub mod drv_check;
pub mod engine;
pub mod events;
pub mod gc;
pub mod history;
pub mod machine_info;
pub mod memory;
pub mod nix_daemon;
pub mod offload;
pub mod server;
pub mod session;

pub use engine::{Engine, EngineConfig};
/// The scheduler's rule, at its old path (`ferry-schedsim` runs it).
pub use offload::scheduler;
pub use session::Daemon;
