//! The Nix worker protocol, as nix-daemon 2.8.0 speaks it (protocol 1.34),
//! as a codec for both sides: what a Nix client sends to a daemon and what
//! a daemon answers, byte for byte as `src/libstore/daemon.cc` and
//! `remote-store.cc` of Nix 2.8.0 write and read them.
//!
//! Owns: the handshake ([`handshake`]), the operation numbers ([`op`]), the
//! stderr stream of logs, activities and errors ([`stderr`]), framed data
//! ([`framed`]), the bounded wire primitives ([`wire`]) and the values the
//! operations carry ([`path_info`], [`build`], [`derived_path`],
//! [`content_address`], [`settings`], the unframed NAR copy [`nar_copy`]);
//! the daemon's side: requests as `performOp` reads them ([`request`]),
//! replies ([`reply`]) and a connection ([`server::Server`]); the client's
//! side ([`client::Client`], as `RemoteStore` talks). Must never: touch a
//! store, know its transport, or decide what a request means (the daemon
//! does).
//!
//! IO style: async over tokio's `AsyncRead`/`AsyncWrite`, as `ferry-protocol`
//! is, because the daemon serves both protocols from the same tokio runtime
//! and offload drives remote daemons over async SSH channels. Values are
//! encoded into a buffer with `ferry-formats`' sync wire writers and sent in
//! one write; reading is async with the same bounds (`wire.rs`).
//!
//! Memory is bounded whatever the peer sends: every string, list and map is
//! checked against [`Limits`] before anything is allocated, and data (NARs,
//! framed streams) is copied through in chunks, never held whole.
#![forbid(unsafe_code)]

pub mod build;
pub mod client;
pub mod content_address;
pub mod derived_path;
pub mod framed;
pub mod handshake;
pub mod nar_copy;
pub mod op;
pub mod path_info;
pub mod reply;
pub mod request;
pub mod server;
pub mod settings;
pub mod stderr;
pub mod wire;

pub use client::Client;
pub use op::Op;
pub use server::Server;
pub use stderr::NixError;
pub use wire::{NixRead, NixWrite};

/// First word of a client: "cxin" little-endian.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer: "oixd" little-endian.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// Protocol 1.34, the version Nix 2.8 speaks.
pub const PROTOCOL_VERSION: u64 = (1 << 8) | 34;
/// Oldest client nix-daemon 2.8 accepts (1.10).
pub const MIN_CLIENT_VERSION: u64 = 0x10a;

/// The major part of a protocol version (`GET_PROTOCOL_MAJOR`).
pub const fn major(version: u64) -> u64 {
    version & 0xff00
}

/// The minor part of a protocol version (`GET_PROTOCOL_MINOR`): what every
/// version-dependent field is keyed on.
pub const fn minor(version: u64) -> u64 {
    version & 0x00ff
}

/// Bounds on what a peer may make us allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest single string (a path, a setting's value, a log line).
    pub string: u64,
    /// Longest text of `AddTextToStore`, which Nix sends as one string.
    pub text: u64,
    /// Most items in one list, set or map.
    pub items: u64,
    /// Bytes one message may make the reader allocate, counting every
    /// string plus [`ITEM_COST`] per item: bounds a request whatever its
    /// shape (a million empty strings as much as one long one).
    pub message: u64,
}

/// What one list item costs against [`Limits::message`] beyond its bytes
/// (the `String` and the set node holding it).
pub const ITEM_COST: u64 = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            string: 1 << 20,
            text: 64 << 20,
            items: 1 << 20,
            message: 128 << 20,
        }
    }
}

/// Why a conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something malformed or over a limit.
    #[error("Nix protocol: {0}")]
    Protocol(String),
    /// The daemon answered with an error (its message as Nix shows it).
    #[error("{}", .0.msg)]
    Remote(NixError),
    /// The two sides cannot talk (magic or version).
    #[error("Nix protocol handshake: {0}")]
    Handshake(String),
}

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
