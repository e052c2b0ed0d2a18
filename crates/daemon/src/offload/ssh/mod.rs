//! The SSH transport of offload, on [russh](https://docs.rs/russh).
//!
//! [`SshConnection::connect`] opens one authenticated SSH connection to a
//! build machine:
//!
//! - **Connect timeout.** The TCP connect (name resolution included), the
//!   SSH handshake and the public-key authentication together must finish
//!   within [`SshTarget::connect_timeout`] (default 10 s), else
//!   [`SshError::Timeout`] says which phase hung. Opening a channel and the
//!   daemon handshake have the same bound.
//! - **Host key.** The server's key must be exactly `host-key` from
//!   `machines.scm` (same type and key blob; the comment is ignored). The
//!   client asks for the expected key's algorithm first, so a server with
//!   several host keys presents the right one. Any other key is refused
//!   before authentication with [`SshError::HostKeyMismatch`], which shows
//!   both SHA256 fingerprints as `ssh-keygen -lf` prints them. A placeholder
//!   key (the manual's `"ssh-ed25519 AAAAC3Nza…"`) or a malformed one is
//!   refused without connecting ([`SshError::BadHostKey`]).
//! - **Client key.** `private-key` is read as an OpenSSH private key
//!   (ed25519, ecdsa, rsa; PEM RSA and PKCS#8 files are also accepted). A
//!   passphrase-protected key is refused with a clear error: as the Guix
//!   manual says, offload logs in non-interactively, so the key must have
//!   no passphrase. RSA keys sign with rsa-sha2-512 (or rsa-sha2-256) as
//!   the server announces in `server-sig-algs`, and they sign with *ring*
//!   (constant-time), never with the `rsa` crate, whose private-key
//!   operations have a timing side channel (the Marvin attack,
//!   RUSTSEC-2023-0071): the key is handed to ring when it is loaded and
//!   never reaches russh's own signing. ring takes RSA keys of 2048 to 4096
//!   bits; a server that announces no SHA-2 RSA signature (it would want
//!   SHA-1 `ssh-rsa`) gets a clear error. RSA *host* keys are only verified
//!   (public-key operations), which the side channel does not touch.
//! - **Compression.** `compression` is a comma-separated list, most
//!   preferred first; it becomes the client's compression preference in
//!   that order. Known names: `zlib@openssh.com` (compression starts after
//!   authentication; what OpenSSH's sshd offers with its default
//!   `Compression yes`), `zlib` (from the first packet; OpenSSH's sshd no
//!   longer offers it) and `none`. Other names are refused
//!   ([`SshError::Compression`]). The list is used as written: a server that
//!   supports none of its algorithms fails the key exchange, and the error
//!   names what the server offers (add `none` to the list to allow an
//!   uncompressed connection). [`SshConnection::negotiated_compression`]
//!   reports what was agreed.
//! - **Compression level.** russh has no compression-level setting: both
//!   zlib variants compress with `flate2::Compression::fast()`, i.e. zlib
//!   level 1, whatever `compression-level` says (checked in russh 0.65.1,
//!   `src/compression.rs`, `Compression::init_compress`). The field is
//!   therefore kept in [`SshTarget`] for display but has no effect. (Guix
//!   passes it to libssh, which honours it; OpenSSH always uses level 6.)
//!   Level 1 is zlib's fastest level, which suits a LAN; the server
//!   compresses what it sends us at its own level.
//! - **Keep-alives.** When nothing has come from the server for
//!   [`SshTarget::keepalive_interval`] (default 3 s), a
//!   `keepalive@openssh.com` request is sent; after 3 unanswered ones the
//!   connection is closed (russh closes on the 4th elapsed interval, so a
//!   hung machine, a dead one or a cut link is noticed within about 12 s,
//!   even in the middle of a silent build), [`SshConnection::is_closed`]
//!   turns true, every operation on it fails (a remote build is then placed
//!   again elsewhere) and the pool reconnects on next use. SSH
//!   keep-alives see the machine and its sshd, not its daemon (see
//!   Liveness below). The interval was 15 s (OpenSSH's
//!   `ServerAliveCountMax` 3 style), which left a build on a SIGSTOPped
//!   machine hanging for about a minute; 3 s costs one small packet per 3 s
//!   on an idle connection and only when nothing else arrives.
//! - **Liveness.** Keep-alives cannot see a daemon that stopped while sshd
//!   answers for it (SIGSTOP, a deadlock): every stream to the daemon has
//!   a bound on time without progress ([`SshTarget::silence`], the
//!   daemon's `--offload-silence-timeout`, 30 s by default): a read or
//!   write pending that long fails with an error naming the bound
//!   ([`SILENCE_MARK`]). During a build, the remote daemon sends
//!   keep-alive events when its welcome offers them (the master asks for
//!   one per third of the bound), so a silent builder is not taken for a
//!   silent machine; with an older daemon the bound is lifted for the
//!   build (see [`Liveness`]).
//! - **Ciphers.** russh's defaults, except that AES-256-GCM comes first
//!   when the CPU has AES instructions (measured on loopback: about 550-700
//!   MiB/s through one channel against about 370 MiB/s with
//!   chacha20-poly1305, russh's and OpenSSH's first choice).
//!
//! On the build machine, sshd must allow the channel to the daemon socket:
//! `AllowStreamLocalForwarding` *and* `AllowTcpForwarding` set to `yes` (the
//! default) or `local`, and no `DisableForwarding` (OpenSSH refuses
//! streamlocal channels when TCP forwarding is off, logging "Received request
//! to connect to path ..., but the request was denied").
//!
//! One connection carries any number of operations at once: each
//! [`SshConnection::open_socket`] / [`SshConnection::connect_daemon`] /
//! [`SshConnection::exec`] opens its own channel on it, with its own flow
//! control. [`Connections`] keeps one connection per machine name.
//!
//! The module's files: `target.rs` is where and how to connect and what
//! can go wrong ([`SshTarget`], [`SshError`]); `keys.rs` reads the
//! client's private key and pins the machine's host key; `rsa_signer.rs`
//! signs with an RSA client key through ring; `algorithms.rs`
//! turns the compression field and the CPU into the client's preferences;
//! `connection.rs` is one authenticated connection and its channels
//! ([`SshConnection`]); `quick_ack.rs` is the byte stream over one channel,
//! with its liveness bound ([`QuickAckStream`], [`Liveness`]); `pool.rs`
//! keeps one connection per machine ([`Connections`]).

use std::sync::Mutex;
use std::time::Duration;

mod algorithms;
mod connection;
mod keys;
mod pool;
mod quick_ack;
mod rsa_signer;
mod target;

#[cfg(test)]
mod tests;

pub use connection::{ExecOutput, SshConnection};
pub use pool::Connections;
pub use quick_ack::{Liveness, QuickAckStream, SshStream};
pub use target::{SshError, SshTarget};

/// Default bound on TCP connect + SSH handshake + authentication.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time after which a keep-alive is sent.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// Unanswered keep-alives after which the connection is dropped.
pub const KEEPALIVE_MAX: usize = 3;
/// Default bound on a step without progress (see [`SshTarget::silence`]).
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(30);
/// The words of a stream's silence error, followed by the bound in
/// seconds (how [`super::error::OffloadError`] recognizes one that went
/// through a layer that keeps only the text).
pub const SILENCE_MARK: &str = "no progress from the machine for";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
