//! One client connection: the handshake, then requests answered in turn.
//!
//! A malformed or oversized message closes this connection only; a client
//! that disconnects mid-operation ends its session (its in-flight builds
//! are cancelled, their locks released), and the daemon goes on serving.
//! A build request is served in `session/build.rs`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_formats::StorePath;
use ferry_protocol::client::accept_or_refuse;
use ferry_protocol::{
    FrameReader, FrameWriter, PathInfo, ProtocolError, Request, Response, Welcome,
};
use ferry_store::{Store, StoreError};
use tokio::io::{split, AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::access::{Access, DaemonConfig, Peer};
use crate::bridge::{ChannelReader, ChannelWriter, DEPTH};
use crate::engine::Engine;
use crate::machine_info;

mod build;

use build::run_build;

/// Bytes of messages over 1 MiB (a large `.drv` sent with `AddText`) and
/// of stream chunks over 64 KiB waiting for the store (NARs, bundles) the
/// daemon holds at once, whatever the number of clients: one message of
/// the largest size (16 MiB); others wait their turn.
pub const MESSAGE_BUDGET: usize = 16 << 20;

/// What every session shares.
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub welcome: Welcome,
    /// Signs what this daemon exports.
    signing_key: ferry_trust::SecretKey,
    /// Paths kept alive by open connections (for the garbage collector).
    pub temp_roots: Mutex<std::collections::HashMap<u64, BTreeSet<StorePath>>>,
    /// The same, as the store's temporary roots files that collections
    /// read (see [`crate::gc`]), created on a session's first need.
    pub(crate) session_roots: crate::gc::SessionRoots,
    next_session: AtomicU64,
    /// Set when the daemon stops (SIGTERM): why, for the clients of
    /// running builds (see `server::run_until`).
    pub stopping: tokio::sync::watch::Sender<Option<String>>,
    /// Who may connect and who is trusted.
    pub access: Access,
    /// Connections served at once, on every socket (Ferry's and Nix's):
    /// `max-connections` in all, not per socket.
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// Connections per uid, on every socket (`max-connections-per-user`).
    pub(crate) per_user: Arc<crate::server::PerUser>,
    /// Bytes of large messages (over 1 MiB) held by all sessions at once,
    /// a permit per KiB (see [`MESSAGE_BUDGET`]).
    message_budget: Arc<tokio::sync::Semaphore>,
    pub config: DaemonConfig,
}

impl Daemon {
    /// A daemon for `engine`'s store, signing with the key pair in the
    /// store's configuration directory (generated, with a log line, on first
    /// start). A secret key others can read is refused.
    pub fn new(engine: Arc<Engine>) -> Result<Arc<Daemon>, ferry_trust::TrustError> {
        Daemon::with_config(engine, DaemonConfig::default())
    }

    /// [`Daemon::new`] with who may connect and how many.
    pub fn with_config(
        engine: Arc<Engine>,
        config: DaemonConfig,
    ) -> Result<Arc<Daemon>, ferry_trust::TrustError> {
        let config_dir = engine.store().locations().config_dir.clone();
        let (signing_key, generated) = ferry_trust::keys::load_or_generate_secret_key(&config_dir)?;
        if generated {
            tracing::info!(
                "generated the signing key {} (fingerprint {}); build machines must authorize it: ferry archive --authorize < {}",
                ferry_trust::keys::key_files(&config_dir).1.display(),
                signing_key.public().fingerprint(),
                ferry_trust::keys::key_files(&config_dir).0.display(),
            );
        }
        let cfg = engine.config();
        let welcome = Welcome {
            protocol: ferry_protocol::PROTOCOL_VERSION,
            version: ferry_protocol::FERRY_VERSION.into(),
            store_dir: engine.store().store_dir().to_string(),
            systems: cfg.systems.clone(),
            features: cfg.features.clone(),
            keep_alive: true,
        };
        let base = cfg.build_uid_base;
        let access = Access::new(
            config.access.clone(),
            base..base.saturating_add(cfg.max_jobs as u32),
        );
        Ok(Arc::new(Daemon {
            engine,
            welcome,
            signing_key,
            temp_roots: Mutex::new(Default::default()),
            session_roots: Default::default(),
            next_session: AtomicU64::new(1),
            stopping: tokio::sync::watch::channel(None).0,
            access,
            connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
            per_user: Arc::default(),
            config,
            message_budget: Arc::new(tokio::sync::Semaphore::new(MESSAGE_BUDGET >> 10)),
        }))
    }

    /// The public half of the key this daemon signs with.
    pub fn public_key(&self) -> ferry_trust::PublicKey {
        self.signing_key.public()
    }

    fn store(&self) -> &Arc<Store> {
        self.engine.store()
    }
}

type Reader<S> = FrameReader<tokio::io::ReadHalf<S>>;
type Writer<S> = FrameWriter<tokio::io::WriteHalf<S>>;

/// Serve one in-process connection (the daemon's own user, trusted).
pub async fn serve<S>(stream: S, daemon: Arc<Daemon>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_peer(stream, daemon, Ok(Peer::owner())).await
}

/// Refuse a connection at once, without waiting for its hello (a user
/// over its connection limit must not hold a connection for the handshake
/// timeout): the refusal is written, then the connection is kept for at
/// most a second, until the client closes it, so that a client still
/// sending its hello is not cut off before it reads why.
pub async fn refuse_now<S: AsyncRead + AsyncWrite + Unpin>(stream: S, reason: String) {
    use tokio::io::AsyncReadExt;
    let (mut r, w) = split(stream);
    let mut w = FrameWriter::new(w);
    let reply = ferry_protocol::HandshakeReply::Refused { reason };
    let second = std::time::Duration::from_secs(1);
    if tokio::time::timeout(second, w.send(&reply)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(second, async {
        let mut buf = [0u8; 1024];
        while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serve one connection until the client leaves or breaks the protocol.
/// `peer` is the access check's verdict on the socket's peer: a refusal
/// is sent as the handshake's answer and the connection closed.
pub async fn serve_peer<S>(stream: S, daemon: Arc<Daemon>, peer: Result<Peer, String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = daemon.next_session.fetch_add(1, Ordering::Relaxed);
    let (r, w) = split(stream);
    let mut r = FrameReader::new(r).with_budget(daemon.message_budget.clone());
    let mut w = FrameWriter::new(w);
    let refusal = peer.as_ref().err().cloned();
    let handshake = accept_or_refuse(&mut r, &mut w, &daemon.welcome, refusal);
    match tokio::time::timeout(daemon.config.handshake_timeout, handshake).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::info!(session = id, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(
                session = id,
                "no hello within {} s: connection closed",
                daemon.config.handshake_timeout.as_secs()
            );
            return;
        }
    }
    let Ok(peer) = peer else { return };
    tracing::debug!(session = id, user = %peer.user, trusted = peer.trusted, "client accepted");
    let result = session_loop(&mut r, &mut w, &daemon, id, &peer).await;
    daemon
        .temp_roots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    daemon.session_roots.end(id);
    match result {
        Ok(()) | Err(ProtocolError::Closed) => tracing::debug!(session = id, "client left"),
        Err(e) => tracing::info!(session = id, "session ended: {e}"),
    }
}

async fn session_loop<S>(
    r: &mut Reader<S>,
    w: &mut Writer<S>,
    daemon: &Arc<Daemon>,
    id: u64,
    peer: &Peer,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let req: Request = match r.message().await {
            Ok(req) => req,
            Err(ProtocolError::Closed) => return Ok(()),
            Err(
                e @ (ProtocolError::BadMessage(_)
                | ProtocolError::TooLarge { .. }
                | ProtocolError::BadFrame(_)
                | ProtocolError::Unexpected { .. }),
            ) => {
                let _ = w
                    .send(&Response::Error {
                        message: format!("closing the connection: {e}"),
                    })
                    .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        handle(req, r, w, daemon, id, peer).await?;
    }
}

fn err(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// A valid path's information as the daemon sends it (also what `ferry
/// store path-info` prints without a daemon).
pub fn wire_info(store: &Store, i: ferry_store::PathInfo) -> PathInfo {
    PathInfo {
        path: store.display(&i.path),
        nar_hash: i.nar_hash.to_typed_nix32(),
        nar_size: i.nar_size,
        references: i.references.iter().map(|r| store.display(r)).collect(),
        deriver: i.deriver.as_ref().map(|d| store.display(d)),
        registration_time: i.registration_time,
        signatures: i.signatures,
        ca: i.ca,
    }
}

async fn handle<S>(
    req: Request,
    r: &mut Reader<S>,
    w: &mut Writer<S>,
    daemon: &Arc<Daemon>,
    id: u64,
    peer: &Peer,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let store = daemon.store().clone();
    let reply = match req {
        Request::QueryValid { paths } => {
            let roots = daemon.session_roots.of(&store, id);
            let res = blocking(move || {
                let parsed = paths
                    .iter()
                    .map(|p| store.parse_path(p))
                    .collect::<Result<Vec<_>, _>>()?;
                // What is valid now stays so while the client lasts.
                let _rooted =
                    roots?.scope(|| store.root_in_scope(&parsed.iter().collect::<Vec<_>>()))?;
                Ok(store
                    .query_valid(&parsed)?
                    .iter()
                    .map(|p| store.display(p))
                    .collect())
            })
            .await;
            res.map_or_else(err, |paths| Response::Valid { paths })
        }
        Request::PathInfo { path } => {
            let res = blocking(move || {
                let p = store.parse_path(&path)?;
                Ok(store.path_info(&p)?.map(|i| wire_info(&store, i)))
            })
            .await;
            res.map_or_else(err, |info| Response::PathInfo { info })
        }
        Request::AddText {
            name,
            text,
            references,
        } => {
            let roots = daemon.session_roots.of(&store, id);
            let res = blocking(move || {
                roots?.scope(|| {
                    if name.ends_with(".drv") {
                        return store.add_derivation_text(&name, &text);
                    }
                    let refs = references
                        .iter()
                        .map(|p| store.parse_path(p))
                        .collect::<Result<Vec<_>, _>>()?;
                    store.add_text(&name, text.as_bytes(), &refs)
                })
            })
            .await;
            let store = daemon.store();
            res.map_or_else(err, |p| Response::Added {
                path: store.display(&p),
            })
        }
        Request::AddToStore { name } => {
            let roots = daemon.session_roots.of(&store, id);
            let res =
                receive_stream(r, move |rd| roots?.scope(|| store.add_nar(&name, rd))).await?;
            let store = daemon.store();
            res.map_or_else(err, |p| Response::Added {
                path: store.display(&p),
            })
        }
        Request::Import {
            no_check_sigs,
            expected,
        } => {
            if no_check_sigs && !peer.trusted {
                // Read (and drop) the bundle so the connection stays usable.
                let why = format!(
                    "importing unsigned items is refused: user '{}' is not in the daemon's trusted users (--trusted-users); sign the bundle with a key in the ACL (ferry archive --export signs it)",
                    peer.user
                );
                let _ = receive_stream(r, |rd| {
                    std::io::copy(rd, &mut std::io::sink()).map_err(|e| StoreError::Io {
                        context: "reading the bundle".into(),
                        source: e,
                    })
                })
                .await?;
                return w.send(&err(why)).await;
            }
            // The ACL is read per import, so `ferry archive --authorize`
            // takes effect without a restart.
            crate::auto_gc::check(&daemon.engine);
            let roots = daemon.session_roots.of(&store, id);
            let res = receive_stream(r, move |rd| {
                roots?.scope(|| {
                    crate::offload::accept::import_request(&store, rd, no_check_sigs, expected)
                })
            })
            .await?;
            let store = daemon.store();
            res.map_or_else(err, |items| Response::Imported {
                paths: items.iter().map(|i| store.display(&i.path)).collect(),
            })
        }
        Request::Export { paths, recursive } => {
            return send_export(w, daemon.clone(), paths, recursive).await;
        }
        Request::Build { drvs, options } => {
            let parsed: Result<Vec<StorePath>, _> =
                drvs.iter().map(|d| store.parse_path(d)).collect();
            match parsed {
                Ok(parsed) => {
                    // Held by the connection after the build too, until
                    // the client has made its roots (`--root`).
                    if let Err(e) = daemon.session_roots.hold(&store, id, parsed.clone()).await {
                        return w.send(&err(e)).await;
                    }
                    return run_build(r, w, daemon, parsed, options, peer).await;
                }
                Err(e) => err(e),
            }
        }
        Request::FarmStatus => Response::FarmStatus {
            machines: daemon.engine.farm_status(),
        },
        Request::MachineInfo => {
            let e = &daemon.engine;
            Response::MachineInfo(machine_info::collect(
                e.store().store_dir().as_str(),
                &e.config().systems,
                &e.config().features,
                e.builds_running(),
                e.config().max_jobs as u32,
            ))
        }
        Request::AddTempRoot { path } => match store.parse_path(&path) {
            Ok(p) => {
                daemon
                    .temp_roots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(id)
                    .or_default()
                    .insert(p.clone());
                match daemon.session_roots.hold(&store, id, vec![p]).await {
                    Ok(()) => Response::Ok,
                    Err(e) => err(e),
                }
            }
            Err(e) => err(e),
        },
        Request::Log { drv } => return send_log(w, store, drv).await,
        Request::Verify { repair } => {
            if repair && !peer.trusted {
                Response::Error {
                    message: format!(
                        "`ferry store verify --repair` is for trusted users; user '{}' is not one (--trusted-users)",
                        peer.user
                    ),
                }
            } else {
                blocking(move || store.verify_report(repair))
                    .await
                    .map_or_else(err, |r| Response::Verified {
                        lines: r.lines,
                        summary: r.summary,
                        ok: r.ok,
                    })
            }
        }
        req @ (Request::CollectGarbage { .. }
        | Request::FindRoots
        | Request::AddIndirectRoot { .. }
        | Request::QueryReferrers { .. }) => crate::gc::handle(daemon, peer, req).await,
    };
    w.send(&reply).await
}

/// Feed the stream that follows a request to `consume` on a blocking
/// thread. The stream is read to its end even if `consume` fails early,
/// so the connection stays in step.
async fn receive_stream<S, T: Send + 'static>(
    r: &mut Reader<S>,
    consume: impl FnOnce(&mut dyn std::io::Read) -> Result<T, StoreError> + Send + 'static,
) -> Result<Result<T, String>, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader::new(rx);
        consume(&mut reader)
    });
    let mut broken = None;
    let mut consumer_alive = true;
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                let budget = r.take_budget();
                if consumer_alive && tx.send(Ok((chunk, budget))).await.is_err() {
                    consumer_alive = false;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx
                    .send(Err(format!("the client's stream broke: {e}")))
                    .await;
                broken = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let res = match task.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("internal error: {e}")),
    };
    match broken {
        // An aborted stream leaves the connection usable.
        Some(ProtocolError::Aborted(reason)) => {
            Ok(Err(format!("the client aborted the transfer: {reason}")))
        }
        Some(e) => Err(e),
        None => Ok(res),
    }
}

async fn send_export<S>(
    w: &mut Writer<S>,
    daemon: Arc<Daemon>,
    paths: Vec<String>,
    recursive: bool,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let task = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let store = daemon.store();
        let parsed = paths
            .iter()
            .map(|p| store.parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = ChannelWriter::new(tx);
        let sign = |d: &ferry_formats::Sha256Hash| {
            Ok(ferry_trust::signature::sign(&daemon.signing_key, d))
        };
        store.export(&parsed, recursive, &mut out, Some(&sign))?;
        Ok(())
    });
    send_stream(w, rx, task).await
}

/// Stream the stored log of `drv` (never whole in memory): data frames,
/// then `Ok`; or an aborted stream and the error.
async fn send_log<S>(w: &mut Writer<S>, store: Arc<Store>, drv: String) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let task = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let p = store.parse_path(&drv)?;
        let file = ferry_build::log::log_path(&store.locations().state_dir, p.base_name());
        let mut f = std::fs::File::open(&file).map_err(|e| StoreError::Io {
            context: format!("no log for {drv} ({})", file.display()),
            source: e,
        })?;
        let mut out = ChannelWriter::new(tx);
        std::io::copy(&mut f, &mut out).map_err(|e| StoreError::Io {
            context: format!("reading {}", file.display()),
            source: e,
        })?;
        std::io::Write::flush(&mut out).map_err(|e| StoreError::Io {
            context: format!("sending {}", file.display()),
            source: e,
        })?;
        Ok(())
    });
    send_stream(w, rx, task).await
}

/// Send what a blocking producer writes to `rx` as data frames, then `Ok`;
/// or, if it fails, an aborted stream and its error (the connection stays
/// in step either way).
async fn send_stream<S>(
    w: &mut Writer<S>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some(chunk) = rx.recv().await {
        w.data(&chunk).await?;
    }
    match task.await {
        Ok(Ok(())) => {
            w.end().await?;
            w.send(&Response::Ok).await
        }
        Ok(Err(e)) => {
            w.abort(&e.to_string()).await?;
            w.send(&err(e)).await
        }
        Err(e) => {
            w.abort("internal error").await?;
            w.send(&err(format!("internal error: {e}"))).await
        }
    }
}
