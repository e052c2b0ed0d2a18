//! `ferry daemon`: listen on a Unix socket and serve each client in its
//! own task, within bounds: at most `max_connections` served at once
//! (others wait in the socket's backlog), at most
//! `max_connections_per_user` for one user, and a hello within the
//! handshake timeout.
//!
//! Who connects is read from the socket (`SO_PEERCRED`) and judged by
//! [`crate::access`]. A personal daemon's socket is also 0600, in a
//! directory others cannot enter when the daemon creates it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::Peer;
use crate::session::{refuse_now, serve_peer, Daemon};

/// Bind the socket at `path`: its directory is created, and a stale socket
/// left by a daemon that died is replaced, but a live daemon is not.
///
/// A root daemon's socket is 0666 (every local user may connect, as with
/// nix-daemon; `--allowed-users` decides who is served). A personal
/// daemon's is 0600, and a directory it creates for it 0700.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    let personal = !rustix::process::geteuid().is_root();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            let mode = if personal { 0o700 } else { 0o755 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
    }
    if path.exists() {
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                    "a daemon is already listening on {}; stop it first or use --listen elsewhere",
                    path.display()
                ),
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = UnixListener::bind(path)?;
    let mode = if personal { 0o600 } else { 0o666 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Is this process root (a system daemon)?
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Set up the daemon process: files it creates (logs, the database) are
/// never writable by others whatever umask it was started with (022), and
/// the open-files limit is raised. Returns the open-files soft limit.
pub fn prepare_process() -> Option<u64> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    raise_fd_limit()
}

/// Raise the soft limit on open files to the hard limit (every client
/// and every build holds descriptors); returns the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if setrlimit(Resource::Nofile, lim).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    lim.current
}

/// Connections per uid, released when a session ends.
#[derive(Default)]
pub(crate) struct PerUser(Mutex<HashMap<u32, usize>>);

/// One connection of a uid, counted in [`PerUser`] while it lives.
pub(crate) struct UserConnection {
    counts: Arc<PerUser>,
    uid: u32,
}

impl PerUser {
    pub(crate) fn take(self: &Arc<Self>, uid: u32, max: usize) -> Option<UserConnection> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(uid).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserConnection {
            counts: self.clone(),
            uid,
        })
    }
}

impl Drop for UserConnection {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Connections being refused at once (over their user's limit).
const REFUSING: usize = 64;

/// Accept clients forever.
pub async fn run(listener: UnixListener, daemon: Arc<Daemon>) -> io::Result<()> {
    run_until(
        listener,
        daemon,
        std::future::pending::<String>(),
        Duration::ZERO,
    )
    .await
}

/// Accept clients until `stop` completes (SIGTERM, SIGINT), then stop
/// accepting and let running builds finish for at most `grace`; what still
/// runs then is cancelled when the caller drops the runtime (builders are
/// killed, their outputs and directories removed, as for a client that
/// went away).
pub async fn run_until(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    stop: impl std::future::Future<Output = String>,
    grace: Duration,
) -> io::Result<()> {
    tokio::select! {
        r = accept_loop(listener, daemon.clone()) => r,
        why = stop => {
            let running = daemon.engine.builds_running();
            daemon.stopping.send_replace(Some(format!(
                "the daemon is stopping ({why}): builds still running in {} s are cancelled",
                grace.as_secs()
            )));
            tracing::info!(
                running,
                grace_secs = grace.as_secs(),
                "stopping: no new clients; waiting for running builds"
            );
            let deadline = tokio::time::Instant::now() + grace;
            while daemon.engine.builds_running() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let left = daemon.engine.builds_running();
            if left > 0 {
                tracing::warn!(left, "stopping: cancelling the builds still running");
            }
            Ok(())
        }
    }
}

async fn accept_loop(listener: UnixListener, daemon: Arc<Daemon>) -> io::Result<()> {
    let refusing = Arc::new(Semaphore::new(REFUSING));
    loop {
        let (permit, stream) = next_client(&listener, &daemon, "a connection").await;
        let daemon = daemon.clone();
        let refusing = refusing.clone();
        tokio::spawn(async move {
            match admit(&stream, &daemon, "a client").await {
                None => {}
                Some(Admission::OverLimit(reason)) => {
                    tracing::debug!("refused a client: {reason}");
                    // Refusals do not take a connection permit; they are
                    // bounded on their own (past that, closed without a
                    // word).
                    drop(permit);
                    if let Ok(_refusing) = refusing.try_acquire_owned() {
                        refuse_now(stream, reason).await;
                    }
                }
                Some(Admission::Admitted(counted, peer)) => {
                    serve_peer(stream, daemon, peer).await;
                    drop(counted);
                    drop(permit);
                }
            }
        });
    }
}

/// The next client of `listener` (Ferry's socket or the Nix socket), once
/// one of the daemon's connection permits is free: over `max-connections`
/// in all, new clients wait in the backlog and those served go on
/// working. Accept errors (out of file descriptors and the like) are
/// logged and the loop goes on.
pub(crate) async fn next_client(
    listener: &UnixListener,
    daemon: &Daemon,
    what: &str,
) -> (OwnedSemaphorePermit, UnixStream) {
    loop {
        let permit = daemon
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        match listener.accept().await {
            Ok((stream, _)) => return (permit, stream),
            Err(e) => {
                tracing::warn!("accepting {what}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the daemon makes of a new client, on either socket.
pub(crate) enum Admission {
    /// Over `max-connections-per-user`: the reason to tell it.
    OverLimit(String),
    /// Counted against its uid (not root's or the daemon's own user's
    /// connections), and the access verdict: its [`Peer`] or why it is
    /// refused.
    Admitted(Option<UserConnection>, Result<Peer, String>),
}

/// Read `stream`'s peer (`SO_PEERCRED`), count it against its uid's
/// `max-connections-per-user` (one count for both sockets), and judge it
/// by the allowed and trusted users (giving it its gcroots directory).
/// `None` when its credentials cannot be read (logged).
pub(crate) async fn admit(
    stream: &UnixStream,
    daemon: &Arc<Daemon>,
    what: &str,
) -> Option<Admission> {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("reading {what}'s credentials: {e}");
            return None;
        }
    };
    let (uid, gid) = (cred.uid(), cred.gid());
    let own_uid = rustix::process::geteuid().as_raw();
    let counted = if uid == 0 || uid == own_uid {
        None
    } else {
        let max = daemon.config.max_connections_per_user;
        match daemon.per_user.take(uid, max.max(1)) {
            Some(c) => Some(c),
            None => {
                return Some(Admission::OverLimit(format!(
                    "too many connections from uid {uid} (at most {max}, --max-connections-per-user); close some and try again"
                )))
            }
        }
    };
    let d = daemon.clone();
    let peer: Result<Peer, String> = match tokio::task::spawn_blocking(move || {
        let peer = d.access.check(uid, gid)?;
        ensure_user_roots(&d, &peer);
        Ok(peer)
    })
    .await
    {
        Ok(p) => p,
        Err(e) => Err(format!("internal error: {e}")),
    };
    if let Err(why) = &peer {
        tracing::info!("refused {what} (uid {uid}): {why}");
    }
    Some(Admission::Admitted(counted, peer))
}

/// A root daemon gives each user that connects a directory of their own
/// for garbage-collector roots, `STATE/gcroots/per-user/USER` (theirs,
/// 0755), as nix-daemon does: where a user of a shared machine keeps
/// what they want kept. Made once; failures are logged, not fatal.
pub(crate) fn ensure_user_roots(daemon: &Daemon, peer: &Peer) {
    if !running_as_root() || peer.uid == 0 {
        return;
    }
    let name = &peer.user;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return;
    }
    let base = daemon.engine.store().gcroots_dir().join("per-user");
    let dir = base.join(name);
    if dir.symlink_metadata().is_ok() {
        return;
    }
    let made = std::fs::create_dir_all(&base)
        .and_then(|()| std::fs::create_dir(&dir))
        .and_then(|()| std::os::unix::fs::chown(&dir, Some(peer.uid), Some(peer.gid)))
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)));
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            tracing::warn!("creating {}: {e}", dir.display());
        }
        _ => {}
    }
}
