//! Offload: building derivations on other machines, in one place.
//!
//! [`Offloader`] is what the engine sees: it owns the [`Farm`] (the
//! machines of `machines.scm`, their live state, the queue of derivations
//! waiting for one, and the persistent SSH connections), this store's
//! signing key, and the background refresh of the machines' measurements;
//! [`Offloader::build`] places one derivation and builds it there, or gives
//! it back to be built here.
//!
//! Below it: [`scheduler`] is the rule that picks a machine (and the one
//! system and feature match, [`scheduler::Needs::met_by`]); [`farm`] keeps
//! the machines' state and the queue; [`remote`] builds one derivation on a
//! machine (inputs sent, build run, outputs fetched); [`ssh`] connects to
//! a machine over SSH (russh), checks its host key against the one in
//! `machines.scm`, authenticates with the machine's private key, and
//! reaches the machine's `ferry daemon` through a
//! `direct-streamlocal@openssh.com` channel to its daemon socket, where the
//! daemon protocol runs unchanged ([`ferry_protocol::Client`] over the
//! channel); [`check`] is `ferry offload test` and `status`; [`error`]
//! names what can go wrong on a machine by kind, and the farm backs the
//! machine off by that kind.

pub mod accept;
pub mod check;
pub mod error;
pub mod farm;
mod offloader;
pub mod progress;
pub mod remote;
pub mod scheduler;
pub mod ssh;

pub use error::{Backoff, OffloadError};
pub use farm::{Farm, Placement, Request, Slot, Ticket};
pub use offloader::{Job, Offloader, Placed};
pub use ssh::{Connections, ExecOutput, SshConnection, SshError, SshStream, SshTarget};
