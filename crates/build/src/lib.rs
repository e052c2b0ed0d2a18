//! Build: running one builder for one derivation on this machine.
//!
//! Owns: the builder environment (as Nix and Guix set it), the sandbox
//! (mount, PID, network, IPC and UTS namespaces; a chroot holding the input
//! closure), logs, timeouts, and registering outputs with scanned
//! references. Must never: choose machines or speak the daemon protocol
//! (the daemon's engine decides what to build where; this crate builds one
//! derivation it is handed).

pub mod build_dir;
pub mod builder;
mod cleanup;
pub mod env;
pub mod fixed_output;
pub mod limits;
pub mod log;
mod register;
mod running;
pub mod sandbox;
mod seccomp;
pub mod spares;
pub mod spawn;
pub mod systems;
pub mod unsandboxed;
pub mod users;

pub use builder::{build, BuildError, BuildJob, BuildSettings, FailureKind, Outcome};
pub use systems::current_system;
