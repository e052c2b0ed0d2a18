//! Protocol: the versioned daemon protocol, independent of its transport.
//!
//! Owns: framing ([`frame`]), the messages ([`messages`]), the handshake
//! (version, store directory, systems, features) and a [`Client`] that runs
//! over any byte stream: a Unix socket locally, an SSH channel to a remote
//! daemon when offloading. Must never: know which transport it runs on, or touch
//! the store (the daemon answers requests; this crate only carries them).
//!
//! A connection is a handshake followed by requests answered one at a time.
//! Archives (NARs, export bundles) and build logs travel as streams of
//! frames, so nothing is ever held whole in memory and a peer that stops
//! half-way is noticed as an error, not a hang with a partial item.
#![forbid(unsafe_code)]

pub mod client;
pub mod frame;
pub mod messages;

pub use client::Client;
pub use frame::{FrameReader, FrameWriter};
pub use messages::*;

use thiserror::Error;

/// Bumped on any incompatible change; peers with another version are
/// refused at the handshake with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// The version of the Ferry software, sent in the handshake.
pub const FERRY_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("malformed frame: {0}")]
    BadFrame(String),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    BadMessage(String),
    #[error("unexpected {got} (expected {expected})")]
    Unexpected { expected: &'static str, got: String },
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The peer aborted a stream it was sending.
    #[error("stream aborted by the peer: {0}")]
    Aborted(String),
}

pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
