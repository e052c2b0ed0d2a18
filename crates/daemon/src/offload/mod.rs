//! Offload (step 6): building derivations on other machines.
//!
//! This module holds the transport so far: [`ssh`] connects to a build
//! machine over SSH (russh), checks its host key against the one in
//! `machines.scm`, authenticates with the machine's private key, and reaches
//! the machine's `ferry daemon` through a `direct-streamlocal@openssh.com`
//! channel to its daemon socket, where the daemon protocol of step 3 runs
//! unchanged ([`ferry_protocol::Client`] over the channel). [`Connections`]
//! keeps one persistent SSH connection per machine, shared by every build
//! and client (each operation gets its own channel, multiplexed over the
//! one TCP connection), and re-establishes it after a failure.
//!
//! The scheduler, and the copying of inputs and outputs with signed export
//! bundles, build on this.

pub mod accept;
pub mod check;
pub mod farm;
pub mod remote;
pub mod ssh;

pub use farm::{Farm, Placement, Request, Slot, Ticket};
pub use ssh::{Connections, ExecOutput, SshConnection, SshError, SshStream, SshTarget};
