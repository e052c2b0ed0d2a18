//! Where and how to connect to a build machine ([`SshTarget`], the SSH
//! part of its `build-machine`) and what can go wrong on the way
//! ([`SshError`], each message saying what to do about it).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_protocol::ProtocolError;
use thiserror::Error;

use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_SILENCE};

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
    pub(super) fn duplicate(&self) -> SshError {
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

/// "private key FILE: WHY", or WHY alone when there is no file.
fn key_file_message(path: &Path, why: &str) -> String {
    if path.as_os_str().is_empty() {
        why.to_string()
    } else {
        format!("private key {}: {why}", path.display())
    }
}
