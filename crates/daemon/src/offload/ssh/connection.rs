//! One authenticated SSH connection to a build machine
//! ([`SshConnection`]): connecting (TCP, handshake with the pinned host
//! key, public-key authentication, all under the connect timeout), the
//! russh handler that learns what the server did, and the operations that
//! each open a channel (a socket stream, the remote daemon, a command).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_protocol::Client;
use russh::client::{self, AuthResult, DisconnectReason, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{AlgorithmKind, ChannelMsg, Preferred};
use tokio::time::Instant;

use super::algorithms::{cipher_preference, compression_name, compression_names};
use super::keys::{client_key, host_key_preference, key_type_hint, parse_host_key, ClientKey};
use super::quick_ack::{Liveness, QuickAckStream, SshStream};
use super::rsa_signer::RsaSignError;
use super::{lock, SshError, SshTarget, KEEPALIVE_MAX};

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
        let key = client_key(&t.private_key)?;
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

        let auth = async {
            match key {
                // RSA: ring signs, with the hash the server announces
                // (server-sig-algs); see rsa_signer.rs.
                ClientKey::Rsa { public, mut signer } => {
                    let hash = handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(|e| e.to_string())?
                        .flatten();
                    if hash.is_none() {
                        return Err(RsaSignError::NoSha2.to_string());
                    }
                    handle
                        .authenticate_publickey_with(t.user.clone(), public, hash, &mut signer)
                        .await
                        .map_err(|e| e.to_string())
                }
                ClientKey::Other(key) => handle
                    .authenticate_publickey(
                        t.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key.into_key()), None),
                    )
                    .await
                    .map_err(|e| e.to_string()),
            }
        };
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
