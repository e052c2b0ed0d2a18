//! Protocol: the versioned daemon protocol, independent of its transport.
//!
//! Owns: messages, framing, the handshake (version, store directory,
//! systems, features), streaming of bundles and build logs, and a client that
//! runs over any byte stream: a Unix socket locally, an SSH channel to a
//! remote daemon. Must never: know which transport it runs on.
//!
//! Status: arrives with step 3; reused over SSH in step 6.
