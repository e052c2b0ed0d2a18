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
//!   (ed25519, ecdsa; PKCS#8 files are also accepted). A
//!   passphrase-protected key is refused with a clear error: as the Guix
//!   manual says, offload logs in non-interactively, so the key must have
//!   no passphrase. An RSA key is refused with the `ssh-keygen -t ed25519`
//!   to run: signing is a private-key operation, and the `rsa` crate's are
//!   not constant-time (RUSTSEC-2023-0071, the Marvin attack, no fixed
//!   version), so Ferry never makes one. RSA *host* keys stay supported:
//!   checking the server's signature uses only the public key.
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

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_protocol::{Client, ProtocolError};
use russh::client::{self, AuthResult, DisconnectReason, Handle, Msg};
use russh::compression::Compression;
use russh::keys::{
    Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{AlgorithmKind, ChannelMsg, Preferred};
use thiserror::Error;
use tokio::time::Instant;

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

/// Where and how to connect: the SSH part of a `build-machine`.
#[derive(Clone, Debug, PartialEq)]
pub struct SshTarget {
    /// Host name or address (`name` of the build-machine).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// OpenSSH private key file, without a passphrase.
    pub private_key: PathBuf,
    /// The server's public host key, as an OpenSSH public key line
    /// (`ssh-ed25519 AAAA... [comment]`).
    pub host_key: String,
    /// Compression algorithms, comma-separated, most preferred first.
    pub compression: String,
    /// Kept for display only: russh always compresses at zlib level 1 (see
    /// the module documentation).
    pub compression_level: i64,
    /// Bound on TCP connect + SSH handshake + authentication, and on
    /// opening a channel and the daemon handshake.
    pub connect_timeout: Duration,
    /// Send a keep-alive after this long without hearing from the server.
    pub keepalive_interval: Duration,
    /// Liveness bound of the streams to the machine's daemon: a read or
    /// write that makes no progress for this long fails (`None`: never).
    /// SSH keep-alives cannot see a daemon that stopped while sshd answers.
    pub silence: Option<Duration>,
}

impl SshTarget {
    /// The target of a build machine, with the default connect timeout
    /// ([`DEFAULT_CONNECT_TIMEOUT`], 10 s) and keep-alive interval
    /// ([`DEFAULT_KEEPALIVE_INTERVAL`], 15 s).
    pub fn from_machine(m: &ferry_scheme::BuildMachine) -> Self {
        SshTarget {
            host: m.name.clone(),
            port: m.port,
            user: m.user.clone(),
            private_key: m.private_key.clone(),
            host_key: m.host_key.clone(),
            compression: m.compression.clone(),
            compression_level: m.compression_level,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            silence: Some(DEFAULT_SILENCE),
        }
    }

    /// `host:port` (`[host]:port` for an IPv6 address), for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What can go wrong; every message says what to do about it.
#[derive(Debug, Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {source}; check the machine's name and port in machines.scm and that sshd runs there")]
    Connect { addr: String, source: io::Error },
    #[error("{addr} did not answer within {} during {during}; check that the machine is up and reachable and that sshd listens on that port", fmt_duration(*.after))]
    Timeout {
        addr: String,
        after: Duration,
        during: &'static str,
    },
    #[error("the host key of {host} is {received} but machines.scm says {expected}; if the machine was reinstalled, update its host-key field (ssh-keyscan -t {key_type} {host}), otherwise someone may be impersonating it")]
    HostKeyMismatch {
        host: String,
        /// `SHA256:...` fingerprint of the host-key field.
        expected: String,
        /// `SHA256:...` fingerprint of the key the server presented, or a
        /// description of what it offered instead.
        received: String,
        /// Type of the expected key (`ed25519`, `rsa`...), for the hint.
        key_type: String,
    },
    #[error("the host-key of {host} in machines.scm {why}; put the machine's real key there (the contents of /etc/ssh/ssh_host_ed25519_key.pub on it, or ssh-keyscan -t ed25519 {host})")]
    BadHostKey { host: String, why: String },
    #[error("{}", key_file_message(.path, .why))]
    KeyFile { path: PathBuf, why: String },
    #[error("{host} refused user {user} with the key {}: add {}.pub to ~{user}/.ssh/authorized_keys on {host}, or fix the user and private-key fields of machines.scm", .key.display(), .key.display())]
    AuthRejected {
        user: String,
        host: String,
        key: PathBuf,
    },
    #[error("compression of {host}: {why}")]
    Compression { host: String, why: String },
    #[error("cannot open {what}: {why}")]
    Channel { what: String, why: String },
    #[error("the SSH connection to {host} is closed ({why}); it is opened again on next use")]
    Closed { host: String, why: String },
    #[error("the ferry daemon on {host}: {source}")]
    Protocol {
        host: String,
        #[source]
        source: ProtocolError,
    },
    #[error("SSH connection to {host}: {why}")]
    Ssh { host: String, why: String },
}

impl SshError {
    /// A copy, for the callers of [`Connections::get`] that waited on a
    /// connection attempt that failed (errors of the underlying libraries
    /// are not `Clone`; their text is kept).
    fn duplicate(&self) -> SshError {
        match self {
            SshError::Connect { addr, source } => SshError::Connect {
                addr: addr.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            SshError::Timeout {
                addr,
                after,
                during,
            } => SshError::Timeout {
                addr: addr.clone(),
                after: *after,
                during,
            },
            SshError::HostKeyMismatch {
                host,
                expected,
                received,
                key_type,
            } => SshError::HostKeyMismatch {
                host: host.clone(),
                expected: expected.clone(),
                received: received.clone(),
                key_type: key_type.clone(),
            },
            SshError::BadHostKey { host, why } => SshError::BadHostKey {
                host: host.clone(),
                why: why.clone(),
            },
            SshError::KeyFile { path, why } => SshError::KeyFile {
                path: path.clone(),
                why: why.clone(),
            },
            SshError::AuthRejected { user, host, key } => SshError::AuthRejected {
                user: user.clone(),
                host: host.clone(),
                key: key.clone(),
            },
            SshError::Compression { host, why } => SshError::Compression {
                host: host.clone(),
                why: why.clone(),
            },
            SshError::Channel { what, why } => SshError::Channel {
                what: what.clone(),
                why: why.clone(),
            },
            SshError::Closed { host, why } => SshError::Closed {
                host: host.clone(),
                why: why.clone(),
            },
            SshError::Protocol { host, source } => SshError::Ssh {
                host: host.clone(),
                why: format!("the ferry daemon: {source}"),
            },
            SshError::Ssh { host, why } => SshError::Ssh {
                host: host.clone(),
                why: why.clone(),
            },
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A byte stream to a Unix socket on the remote machine (an SSH channel).
pub type SshStream = QuickAckStream;

/// A byte stream over an SSH channel (to a Unix socket on the machine).
///
/// Writes fail once the channel or the connection is gone. russh parks a
/// write that waits for the peer's window on a notification that only a
/// window adjustment sends: when the peer closes the channel (its daemon
/// died) or the connection dies (keep-alives unanswered, a reset), nothing
/// wakes it and an upload would hang forever. So the channel is split: a
/// task reads its messages, hands their data to [`AsyncRead`] as received
/// (no copy), and marks the channel over when the peer closes it; a
/// pending write also waits on that mark, and on the connection's end.
///
/// Reads keep the connection's TCP socket in quick-ACK mode. OpenSSH's sshd
/// only sets TCP_NODELAY for interactive sessions, not for stream-local
/// forwarding, so when the remote daemon writes two small messages in a row
/// (a log event, then the build result) Nagle holds the second until our
/// ACK of the first, which Linux delays by up to 40 ms: every
/// request/response exchange paid that stall. Re-arming TCP_QUICKACK after
/// each read makes our ACKs immediate, whatever the server's setting.
///
/// [`AsyncRead`]: tokio::io::AsyncRead
pub struct QuickAckStream {
    /// The channel's data, as the reading task receives it.
    incoming: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    /// What is left of the last piece received.
    current: bytes::Bytes,
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
    socket: Arc<std::os::fd::OwnedFd>,
    /// The channel closed by the peer, or the connection ended.
    over: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Tells the reading task to close the channel when this is dropped.
    _close: tokio_util::sync::DropGuard,
    /// The bound on time without progress, and when progress was last made.
    liveness: Liveness,
    last_progress: tokio::time::Instant,
    silence_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How long a stream may go without progress (bytes read or written, or
/// the peer's end) before its reads and writes fail; shared with its owner,
/// who may lift the bound (a step whose silence is legitimate) and set it
/// again (progress is then counted from that moment).
#[derive(Clone, Debug)]
pub struct Liveness(Arc<Mutex<(Option<Duration>, tokio::time::Instant)>>);

impl Liveness {
    pub fn new(bound: Option<Duration>) -> Liveness {
        Liveness(Arc::new(Mutex::new((bound, tokio::time::Instant::now()))))
    }

    /// A new bound, counted from now.
    pub fn set(&self, bound: Option<Duration>) {
        *lock(&self.0) = (bound, tokio::time::Instant::now());
    }

    pub fn bound(&self) -> Option<Duration> {
        lock(&self.0).0
    }
}

/// Pieces (SSH packets of up to 32 KiB) read ahead from a channel.
const READ_AHEAD: usize = 64;

impl QuickAckStream {
    fn new(
        channel: russh::Channel<Msg>,
        socket: Arc<std::os::fd::OwnedFd>,
        connection_gone: &tokio_util::sync::CancellationToken,
        liveness: Liveness,
    ) -> QuickAckStream {
        let (mut read_half, write_half) = channel.split();
        let writer = Box::pin(write_half.make_writer());
        let over = connection_gone.child_token();
        let close = tokio_util::sync::CancellationToken::new();
        let (tx, incoming) = tokio::sync::mpsc::channel(READ_AHEAD);
        let (over2, close2) = (over.clone(), close.clone());
        tokio::spawn(async move {
            // Dropped at the peer's EOF: reads end, writes may go on.
            let mut tx = Some(tx);
            loop {
                let msg = tokio::select! {
                    _ = close2.cancelled() => break,
                    msg = read_half.wait() => msg,
                };
                match msg {
                    Some(russh::ChannelMsg::Data { data }) => {
                        if let Some(t) = &tx {
                            if t.send(data).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(russh::ChannelMsg::Eof) => tx = None,
                    Some(russh::ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            over2.cancel();
            drop(tx);
            let _ = write_half.close().await;
        });
        QuickAckStream {
            incoming,
            current: bytes::Bytes::new(),
            writer,
            socket,
            over: Box::pin(over.cancelled_owned()),
            _close: close.drop_guard(),
            liveness,
            last_progress: tokio::time::Instant::now(),
            silence_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The stream's liveness bound (see [`Liveness`]).
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// Bytes moved (or the peer's end): the silence is counted from now.
    fn progressed(&mut self) {
        self.last_progress = tokio::time::Instant::now();
    }

    /// `Pending` from the channel, unless it has been so for longer than
    /// the liveness bound.
    fn unless_silent<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<io::Result<T>>,
    ) -> std::task::Poll<io::Result<T>> {
        if !res.is_pending() {
            return res;
        }
        let (bound, since) = *lock(&self.liveness.0);
        let Some(bound) = bound else { return res };
        let due = self.last_progress.max(since) + bound;
        if self.silence_timer.deadline() != due {
            self.silence_timer.as_mut().reset(due);
        }
        if std::future::Future::poll(self.silence_timer.as_mut(), cx).is_ready() {
            return std::task::Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{SILENCE_MARK} {} s", bound.as_secs_f64()),
            )));
        }
        res
    }

    /// `Pending` from the channel, unless the channel or connection is over.
    fn unless_over<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<io::Result<T>>,
    ) -> std::task::Poll<io::Result<T>> {
        if res.is_pending() && std::future::Future::poll(self.over.as_mut(), cx).is_ready() {
            return std::task::Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the SSH channel was closed (the remote daemon or the connection is gone)",
            )));
        }
        res
    }
}

impl tokio::io::AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.current.is_empty() {
            match self.incoming.poll_recv(cx) {
                std::task::Poll::Ready(Some(data)) => self.current = data,
                // The peer's EOF, or the channel is over.
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(Ok(())),
                std::task::Poll::Pending => {
                    return self.unless_silent(cx, std::task::Poll::Pending)
                }
            }
            self.progressed();
            let _ = rustix::net::sockopt::set_tcp_quickack(&*self.socket, true);
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let res = self.writer.as_mut().poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &res {
            if *n > 0 {
                self.progressed();
            }
        }
        let res = self.unless_over(cx, res);
        self.unless_silent(cx, res)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let res = self.writer.as_mut().poll_flush(cx);
        let res = self.unless_over(cx, res);
        self.unless_silent(cx, res)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let res = self.writer.as_mut().poll_shutdown(cx);
        self.unless_over(cx, res)
    }
}

/// The result of [`SshConnection::exec`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status, if the command exited (not killed by a signal).
    pub status: Option<u32>,
    /// The signal that killed it, if one did (e.g. `KILL`).
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What the russh handler learns, shared with the connection.
#[derive(Default)]
struct Shared {
    /// Fingerprint of a host key that was refused.
    refused_key: Mutex<Option<String>>,
    /// Compression agreed at the last key exchange.
    compression: Mutex<Option<String>>,
    /// Why the connection ended, when russh tells.
    closed: Mutex<Option<String>>,
    /// Cancelled when the session ends (its handler is dropped).
    gone: tokio_util::sync::CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Handler {
    expected: PublicKey,
    shared: Arc<Shared>,
}

/// The session task owns the handler: dropped, the connection is over,
/// however it ended.
impl Drop for Handler {
    fn drop(&mut self) {
        self.shared.gone.cancel();
    }
}

fn compression_name(c: &Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Zlib => "zlib",
        Compression::ZlibOpenSSH => "zlib@openssh.com",
    }
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let received = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key(),
        };
        if received == self.expected.key_data() {
            return Ok(true);
        }
        *lock(&self.shared.refused_key) = Some(received.fingerprint(HashAlg::Sha256).to_string());
        Ok(false)
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let (up, down) = (
            compression_name(&names.client_compression),
            compression_name(&names.server_compression),
        );
        *lock(&self.shared.compression) = Some(if up == down {
            up.to_string()
        } else {
            format!("{up} (to the server), {down} (from it)")
        });
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (why, result) = match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                (format!("the server disconnected: {}", info.message), Ok(()))
            }
            DisconnectReason::Error(e) => (e.to_string(), Err(e)),
        };
        *lock(&self.shared.closed) = Some(why);
        result
    }
}

/// Parse the `host-key` field; placeholders and malformed keys are refused.
fn parse_host_key(host: &str, key: &str) -> Result<PublicKey, SshError> {
    let bad = |why: String| SshError::BadHostKey {
        host: host.to_string(),
        why,
    };
    if ferry_scheme::is_placeholder_host_key(key) {
        return Err(bad(
            "is a placeholder cut short with an ellipsis (as in the manual's example)".into(),
        ));
    }
    if let Err(why) = ferry_scheme::check_host_key(key) {
        return Err(bad(why));
    }
    PublicKey::from_openssh(key.trim())
        .map_err(|e| bad(format!("is not a valid OpenSSH public key ({e})")))
}

/// "private key FILE: WHY", or WHY alone when there is no file.
fn key_file_message(path: &Path, why: &str) -> String {
    if path.as_os_str().is_empty() {
        why.to_string()
    } else {
        format!("private key {}: {why}", path.display())
    }
}

/// Read the private key file (no passphrase).
fn load_private_key(path: &Path) -> Result<PrivateKey, SshError> {
    let err = |why: String| SshError::KeyFile {
        path: path.to_path_buf(),
        why,
    };
    // No key: HOME was unset when machines.scm was evaluated and the
    // machine has no private-key field (Guix's default is then #f), or
    // (private-key #f). There is no SSH agent to fall back on.
    if path.as_os_str().is_empty() {
        return Err(err(
            "no private key: set (private-key \"/root/.ssh/id_ed25519\") in this machine's build-machine in machines.scm (there is no default key when HOME is unset)".into(),
        ));
    }
    let passphrase = || {
        err(format!(
            "is protected by a passphrase, but offload logs in without anyone to type it (the key must have no passphrase); remove it with ssh-keygen -p -N '' -f {} or make a new key with ssh-keygen -t ed25519 -N ''",
            path.display()
        ))
    };
    // OpenSSH's rule: a private key others may read is not used (it is no
    // longer private). Checked before reading it, on every connection.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "is readable by group or others (mode {mode:04o}), and a private key must be readable by its owner only (OpenSSH refuses it too); run: chmod 600 {}",
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot be read ({e}); create it with ssh-keygen -t ed25519 -N '' -f {} and authorize its .pub on the build machine, or set the private-key field",
            path.display()
        ))
    })?;
    // No RSA private-key operation, ever (see the module documentation).
    let rsa = || {
        err(format!(
            "is an RSA key, and offload does not sign with RSA keys (RSA private-key operations leak timing: RUSTSEC-2023-0071); make an ed25519 key with ssh-keygen -t ed25519 -N '' -f {}, add its .pub to the build machine's authorized_keys and set the private-key field to it (RSA host keys are fine)",
            path.with_file_name("id_ed25519").display()
        ))
    };
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let key = PrivateKey::from_openssh(text.trim())
            .map_err(|e| err(format!("is not a valid OpenSSH private key ({e})")))?;
        if key.algorithm().is_rsa() {
            return Err(rsa());
        }
        if key.is_encrypted() {
            return Err(passphrase());
        }
        return Ok(key);
    }
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return Err(rsa());
    }
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) if key.algorithm().is_rsa() => Err(rsa()),
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(passphrase()),
        Err(e) => Err(err(format!(
            "is not a private key in OpenSSH format ({e}); it should start with -----BEGIN OPENSSH PRIVATE KEY----- (the .pub file is the public half)"
        ))),
    }
}

/// The compression field as russh names, in order.
fn compression_names(t: &SshTarget) -> Result<Vec<russh::compression::Name>, SshError> {
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    for n in t
        .compression
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match n {
            "zlib@openssh.com" => names.push(russh::compression::ZLIB_LEGACY),
            "zlib" => names.push(russh::compression::ZLIB),
            "none" => names.push(russh::compression::NONE),
            other => unknown.push(other.to_string()),
        }
    }
    let err = |why: String| SshError::Compression {
        host: t.host.clone(),
        why,
    };
    if !unknown.is_empty() {
        return Err(err(format!(
            "unknown algorithm {} in {:?}; use zlib@openssh.com, zlib or none, most preferred first",
            unknown.join(", "),
            t.compression
        )));
    }
    if names.is_empty() {
        return Err(err(
            "the compression field is empty; use \"zlib@openssh.com,zlib\" (the default) or \"none\""
                .into(),
        ));
    }
    names.dedup();
    Ok(names)
}

/// Host-key algorithms with those of `expected`'s type first, so that a
/// server with several host keys presents the one machines.scm pins.
fn host_key_preference(expected: &PublicKey) -> Vec<Algorithm> {
    let want = expected.algorithm();
    let same = |a: &Algorithm| match (a, &want) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        (a, b) => a == b,
    };
    let default = Preferred::default().key.into_owned();
    let mut algos: Vec<Algorithm> = default.iter().filter(|a| same(a)).cloned().collect();
    if algos.is_empty() {
        algos.push(want.clone());
    }
    algos.extend(default.iter().filter(|a| !same(a)).cloned());
    algos
}

/// russh's ciphers, with AES-256-GCM first when this CPU has AES
/// instructions (ring then uses them: about twice the throughput of
/// chacha20-poly1305, russh's first choice, on loopback), else russh's order.
fn cipher_preference() -> Vec<russh::cipher::Name> {
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let mut ciphers = Preferred::default().cipher.into_owned();
    if aes {
        if let Some(i) = ciphers
            .iter()
            .position(|c| *c == russh::cipher::AES_256_GCM)
        {
            let gcm = ciphers.remove(i);
            ciphers.insert(0, gcm);
        }
    }
    ciphers
}

fn key_type_hint(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ed25519".into(),
        Algorithm::Rsa { .. } => "rsa".into(),
        Algorithm::Ecdsa { .. } => "ecdsa".into(),
        other => other.to_string(),
    }
}

/// One authenticated SSH connection to a build machine. Cheap to share
/// (`Arc`): all its methods take `&self`, and each opens its own channel.
pub struct SshConnection {
    handle: Handle<Handler>,
    /// A duplicate of the TCP socket's descriptor (for TCP_QUICKACK).
    socket: Arc<std::os::fd::OwnedFd>,
    host: String,
    addr: String,
    op_timeout: Duration,
    /// [`SshTarget::silence`]: the liveness bound of new streams.
    silence: Option<Duration>,
    shared: Arc<Shared>,
}

impl fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshConnection")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl SshConnection {
    /// Connect, check the host key, authenticate. See the module
    /// documentation for the rules.
    pub async fn connect(t: &SshTarget) -> Result<Self, SshError> {
        let expected = parse_host_key(&t.host, &t.host_key)?;
        let compression = compression_names(t)?;
        let key = load_private_key(&t.private_key)?;
        let addr = t.addr();
        let deadline = Instant::now() + t.connect_timeout;
        let timeout = |during| SshError::Timeout {
            addr: addr.clone(),
            after: t.connect_timeout,
            during,
        };

        let tcp = tokio::time::timeout_at(
            deadline,
            tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| timeout("the TCP connect"))?
        .map_err(|source| SshError::Connect {
            addr: addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let socket = Arc::new(
            std::os::fd::AsFd::as_fd(&tcp)
                .try_clone_to_owned()
                .map_err(|source| SshError::Connect {
                    addr: addr.clone(),
                    source,
                })?,
        );

        let config = client::Config {
            preferred: Preferred {
                key: host_key_preference(&expected).into(),
                compression: compression.into(),
                cipher: cipher_preference().into(),
                ..Preferred::default()
            },
            keepalive_interval: Some(t.keepalive_interval),
            keepalive_max: KEEPALIVE_MAX,
            inactivity_timeout: None,
            nodelay: true,
            ..client::Config::default()
        };
        let shared = Arc::new(Shared::default());
        let handler = Handler {
            expected: expected.clone(),
            shared: shared.clone(),
        };
        let handshake = tokio::time::timeout_at(
            deadline,
            client::connect_stream(Arc::new(config), tcp, handler),
        )
        .await
        .map_err(|_| timeout("the SSH handshake"))?;
        let mut handle = match handshake {
            Ok(h) => h,
            Err(e) => {
                if let Some(received) = lock(&shared.refused_key).take() {
                    return Err(SshError::HostKeyMismatch {
                        host: t.host.clone(),
                        expected: expected.fingerprint(HashAlg::Sha256).to_string(),
                        received,
                        key_type: key_type_hint(&expected),
                    });
                }
                return Err(handshake_error(t, &expected, e));
            }
        };

        // No hash algorithm to choose: that is for RSA keys, which
        // load_private_key refuses.
        let auth = handle.authenticate_publickey(
            t.user.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        );
        let result = tokio::time::timeout_at(deadline, auth)
            .await
            .map_err(|_| timeout("authentication"))?
            .map_err(|e| SshError::Ssh {
                host: t.host.clone(),
                why: format!("authentication failed: {e}"),
            })?;
        match result {
            AuthResult::Success => {}
            AuthResult::Failure { .. } => {
                return Err(SshError::AuthRejected {
                    user: t.user.clone(),
                    host: t.host.clone(),
                    key: t.private_key.clone(),
                })
            }
        }
        tracing::debug!(
            host = %t.host,
            compression = ?lock(&shared.compression),
            "SSH connection established"
        );
        Ok(SshConnection {
            handle,
            socket,
            host: t.host.clone(),
            addr,
            op_timeout: t.connect_timeout,
            silence: t.silence,
            shared,
        })
    }

    /// The machine's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the connection has ended (server gone, keep-alives
    /// unanswered, an error); a closed connection stays closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The compression algorithm agreed with the server at the last key
    /// exchange (`zlib@openssh.com`, `zlib` or `none`; both directions are
    /// named when they differ).
    pub fn negotiated_compression(&self) -> Option<String> {
        lock(&self.shared.compression).clone()
    }

    /// Map a russh error of an operation on this connection.
    fn op_error(&self, what: impl FnOnce() -> String, e: russh::Error) -> SshError {
        match e {
            russh::Error::ChannelOpenFailure(reason) => SshError::Channel {
                what: what(),
                why: format!("the server refused ({reason:?})"),
            },
            russh::Error::SendError
            | russh::Error::RecvError
            | russh::Error::Disconnect
            | russh::Error::HUP => SshError::Closed {
                host: self.host.clone(),
                why: lock(&self.shared.closed)
                    .clone()
                    .unwrap_or_else(|| "connection lost".into()),
            },
            other => SshError::Ssh {
                host: self.host.clone(),
                why: format!("{}: {other}", what()),
            },
        }
    }

    fn op_timeout(&self, during: &'static str) -> SshError {
        SshError::Timeout {
            addr: self.addr.clone(),
            after: self.op_timeout,
            during,
        }
    }

    /// A `direct-streamlocal@openssh.com` channel to the Unix socket `path`
    /// on the machine: a byte stream to whatever listens there.
    pub async fn open_socket(&self, path: &str) -> Result<SshStream, SshError> {
        let what = || format!("a channel to the socket {path} on {}", self.host);
        let channel = tokio::time::timeout(
            self.op_timeout,
            self.handle.channel_open_direct_streamlocal(path),
        )
        .await
        .map_err(|_| self.op_timeout("opening a channel"))?
        .map_err(|e| match e {
            russh::Error::ChannelOpenFailure(reason) => SshError::Channel {
                what: what(),
                why: format!(
                    "sshd refused ({reason:?}): check that ferry daemon runs there and listens on {path} (the daemon-socket field), and that its sshd_config allows it (AllowStreamLocalForwarding and AllowTcpForwarding yes or local, no DisableForwarding)"
                ),
            },
            e => self.op_error(what, e),
        })?;
        Ok(QuickAckStream::new(
            channel,
            self.socket.clone(),
            &self.shared.gone,
            Liveness::new(self.silence),
        ))
    }

    /// The remote daemon at `socket`, after the protocol handshake (which
    /// checks the protocol version and that the store directory is
    /// `store_dir`; a refusal gives the daemon's reason).
    pub async fn connect_daemon(
        &self,
        socket: &str,
        store_dir: &str,
    ) -> Result<Client<SshStream>, SshError> {
        Ok(self.connect_daemon_live(socket, store_dir).await?.0)
    }

    /// [`connect_daemon`](Self::connect_daemon), with the stream's
    /// [`Liveness`] (to lift the bound for a step whose silence is
    /// legitimate).
    pub async fn connect_daemon_live(
        &self,
        socket: &str,
        store_dir: &str,
    ) -> Result<(Client<SshStream>, Liveness), SshError> {
        let stream = self.open_socket(socket).await?;
        let liveness = stream.liveness();
        let client = tokio::time::timeout(self.op_timeout, Client::handshake(stream, store_dir))
            .await
            .map_err(|_| self.op_timeout("the daemon handshake"))?
            .map_err(|source| SshError::Protocol {
                host: self.host.clone(),
                source,
            })?;
        Ok((client, liveness))
    }

    /// The remote daemon's machine info (load, free space, cores...), over
    /// a new channel to `socket`: what the scheduler measures and `ferry
    /// offload status` shows.
    pub async fn machine_info(
        &self,
        socket: &str,
        store_dir: &str,
    ) -> Result<ferry_protocol::MachineInfo, SshError> {
        let mut client = self.connect_daemon(socket, store_dir).await?;
        client
            .machine_info()
            .await
            .map_err(|source| SshError::Protocol {
                host: self.host.clone(),
                source,
            })
    }

    /// Run `command` with the user's shell on the machine; its output is
    /// collected in memory (meant for short commands, as `ferry --version`
    /// for `ferry offload test`).
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        let what = || format!("a session on {} to run {command:?}", self.host);
        let mut channel = tokio::time::timeout(self.op_timeout, self.handle.channel_open_session())
            .await
            .map_err(|_| self.op_timeout("opening a session"))?
            .map_err(|e| self.op_error(what, e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.op_error(what, e))?;
        let mut out = ExecOutput::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Failure => {
                    return Err(SshError::Channel {
                        what: what(),
                        why: "the server refused to run the command".into(),
                    })
                }
                _ => {}
            }
        }
        if out.status.is_none() && out.signal.is_none() && self.is_closed() {
            return Err(self.op_error(what, russh::Error::Disconnect));
        }
        Ok(out)
    }

    /// Close the connection (politely: an SSH disconnect message).
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// The key exchange failed without a host key being refused.
fn handshake_error(t: &SshTarget, expected: &PublicKey, e: russh::Error) -> SshError {
    match e {
        russh::Error::NoCommonAlgo {
            kind: AlgorithmKind::Compression,
            ours,
            theirs,
        } => SshError::Compression {
            host: t.host.clone(),
            why: format!(
                "the server accepts none of {} (it offers {}); change the compression field, e.g. to \"{}\"",
                ours.join(","),
                theirs.join(","),
                theirs.join(","),
            ),
        },
        russh::Error::NoCommonAlgo {
            kind: AlgorithmKind::Key,
            theirs,
            ..
        } => SshError::HostKeyMismatch {
            host: t.host.clone(),
            expected: expected.fingerprint(HashAlg::Sha256).to_string(),
            received: format!("of another type (it offers {})", theirs.join(",")),
            key_type: key_type_hint(expected),
        },
        russh::Error::IO(source) => SshError::Connect {
            addr: t.addr(),
            source,
        },
        russh::Error::Disconnect | russh::Error::HUP => SshError::Ssh {
            host: t.host.clone(),
            why: "the server closed the connection during the SSH handshake; check its sshd log (MaxStartups, AllowUsers, a firewall)".into(),
        },
        other => SshError::Ssh {
            host: t.host.clone(),
            why: format!("SSH handshake failed: {other}"),
        },
    }
}

/// Per-machine state of the pool.
#[derive(Default)]
struct Slot {
    /// Connection attempts finished (read without the lock).
    finished: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    conn: Option<(SshTarget, Arc<SshConnection>)>,
    /// The last attempt's failure, with its number in `finished`.
    failure: Option<(u64, SshError)>,
}

/// One persistent connection per machine, shared by all builds and clients.
///
/// [`get`](Connections::get) returns the machine's open connection, or
/// connects: on first use, when the connection closed (keep-alives, the
/// server went away), after [`invalidate`](Connections::invalidate), or
/// when the machine's target changed (machines.scm edited). Connecting is
/// serialized per machine, so concurrent callers never open two
/// connections; callers that waited on an attempt that failed get its error
/// rather than each trying again (and waiting out the timeout again).
#[derive(Default)]
pub struct Connections {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The connection to machine `name`, connecting to `t` if needed.
    pub async fn get(&self, name: &str, t: &SshTarget) -> Result<Arc<SshConnection>, SshError> {
        let slot = self.slot(name);
        let seen = slot.finished.load(Ordering::Acquire);
        let mut s = slot.state.lock().await;
        if let Some((target, conn)) = &s.conn {
            if !conn.is_closed() && target == t {
                return Ok(conn.clone());
            }
        }
        if let Some((n, e)) = &s.failure {
            // An attempt that ended while we waited failed: share its error.
            if *n > seen {
                return Err(e.duplicate());
            }
        }
        s.conn = None;
        let result = SshConnection::connect(t).await;
        let n = slot.finished.fetch_add(1, Ordering::AcqRel) + 1;
        match result {
            Ok(c) => {
                let c = Arc::new(c);
                s.conn = Some((t.clone(), c.clone()));
                s.failure = None;
                Ok(c)
            }
            Err(e) => {
                s.failure = Some((n, e.duplicate()));
                Err(e)
            }
        }
    }

    /// Forget machine `name`'s connection (after an error on it): the next
    /// [`get`](Connections::get) connects anew. Operations running on the
    /// old connection go on; it closes when the last of them is done.
    pub async fn invalidate(&self, name: &str) {
        let slot = lock(&self.slots).get(name).cloned();
        if let Some(slot) = slot {
            let mut s = slot.state.lock().await;
            s.conn = None;
            s.failure = None;
        }
    }

    /// Like [`invalidate`](Connections::invalidate), but only if `conn` is
    /// still the machine's connection: a caller reporting an error on an old
    /// connection does not throw away a new one that another caller already
    /// opened.
    pub async fn invalidate_if(&self, name: &str, conn: &Arc<SshConnection>) {
        let slot = lock(&self.slots).get(name).cloned();
        if let Some(slot) = slot {
            let mut s = slot.state.lock().await;
            if s.conn.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, conn)) {
                s.conn = None;
            }
        }
    }

    /// The machine's current connection, if one is open (without
    /// connecting or waiting), e.g. for `ferry offload status`.
    pub fn current(&self, name: &str) -> Option<Arc<SshConnection>> {
        let slot = lock(&self.slots).get(name).cloned()?;
        let s = slot.state.try_lock().ok()?;
        s.conn
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .map(|(_, c)| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> ferry_scheme::BuildMachine {
        ferry_scheme::BuildMachine {
            name: "b1.example.org".into(),
            systems: vec!["x86_64-linux".into()],
            user: "bob".into(),
            host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqfp4mQyQRpxMHbsVt7JNRw+TtbJfzEyyj6Wv5Yj6t host".into(),
            port: 2222,
            private_key: "/root/.ssh/id_rsa".into(),
            compression: "zlib@openssh.com,zlib".into(),
            compression_level: 3,
            daemon_socket: "/var/ferry/daemon-socket/socket".into(),
            overload_threshold: Some(0.8),
            parallel_builds: 1,
            speed: 1.0,
            features: vec![],
            error: None,
        }
    }

    #[test]
    fn target_of_a_machine() {
        let t = SshTarget::from_machine(&machine());
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("b1.example.org", 2222, "bob")
        );
        assert_eq!(t.connect_timeout, Duration::from_secs(10));
        assert_eq!(t.keepalive_interval, Duration::from_secs(3));
        assert_eq!(t.addr(), "b1.example.org:2222");
        let key = parse_host_key(&t.host, &t.host_key).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn compression_field() {
        let mut t = SshTarget::from_machine(&machine());
        let names = compression_names(&t).unwrap();
        assert_eq!(
            names,
            vec![russh::compression::ZLIB_LEGACY, russh::compression::ZLIB]
        );
        t.compression = " none , zlib@openssh.com".into();
        let names = compression_names(&t).unwrap();
        assert_eq!(
            names,
            vec![russh::compression::NONE, russh::compression::ZLIB_LEGACY]
        );
        t.compression = "zstd,zlib,lz4".into();
        let e = compression_names(&t).unwrap_err().to_string();
        assert!(
            e.contains("zstd, lz4") && e.contains("zlib@openssh.com"),
            "{e}"
        );
        t.compression = ",".into();
        assert!(compression_names(&t).is_err());
    }

    #[test]
    fn host_key_algorithm_asked_first() {
        let rsa = PublicKey::from_openssh(
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDL9peL6wSVzO1UjzSe863Q1czl6fTAZcB1D3CzK8l9GCO+54LAFOtluD9ZNRVTMw3+GVT30/ohmlzmYFDEpz+oUPYcwo+pE9ghXKhKE8nS4lRcmah22obWQiT0sot6DBmIGLOhCZ9GrhuZdT8plSUPmFDs716YbUV5l3Dm7PRHPQ== x",
        )
        .unwrap();
        let prefs = host_key_preference(&rsa);
        assert!(matches!(prefs[0], Algorithm::Rsa { .. }));
        assert!(matches!(prefs[2], Algorithm::Rsa { .. }));
        assert_eq!(prefs.len(), Preferred::default().key.len());
        for bad in [
            "ssh-ed25519 AAAAC3Nza…",
            "",
            "AAAAC3NzaC1lZDI1NTE5",
            "ssh-ed25519 !!!",
        ] {
            assert!(
                matches!(parse_host_key("h", bad), Err(SshError::BadHostKey { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_private_key_others_may_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_private_key(&key).unwrap_err().to_string();
            assert!(
                e.contains(&format!("(mode {mode:04o})"))
                    && e.contains(&format!("chmod 600 {}", key.display())),
                "{e}"
            );
        }
        // Owner only: the permissions pass (the content is what is wrong).
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_private_key(&key).unwrap_err().to_string();
        assert!(!e.contains("chmod"), "{e}");
    }

    #[test]
    fn a_machine_without_a_private_key_gets_a_clear_error() {
        let mut m = machine();
        m.private_key = std::path::PathBuf::new();
        let t = SshTarget::from_machine(&m);
        let e = load_private_key(&t.private_key).unwrap_err().to_string();
        assert!(e.starts_with("no private key: set (private-key "), "{e}");
    }
}
