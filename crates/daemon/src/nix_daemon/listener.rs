//! `ferry daemon --nix-socket PATH`: a second socket where Nix clients
//! (`NIX_REMOTE=unix://PATH`, or `ferry daemon --stdio` forwarding for
//! `ssh-ng://`) are served. Bound as Ferry's own socket is
//! ([`crate::server::bind`]: 0666 for a root daemon, 0600 for a personal
//! one); each peer's uid and gid read from the socket (`SO_PEERCRED`) and
//! judged by the same [`crate::access::Access`] as Ferry's clients (and
//! given their `gcroots/per-user` directory as there); connections bounded
//! by the same `max_connections` and `max_connections_per_user` (counted
//! apart from the Ferry socket's). A user over its limit is refused with
//! Nix's error at the greeting.

use std::io;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::access::Peer;
use crate::server::ensure_user_roots;
use crate::session::Daemon;

/// Accept Nix clients forever.
pub async fn run(listener: UnixListener, daemon: Arc<Daemon>) -> io::Result<()> {
    // The same counts as Ferry's socket: the limits are the daemon's, not
    // a socket's.
    let connections = daemon.connections.clone();
    let per_user = daemon.per_user.clone();
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepting a Nix client: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        let per_user = per_user.clone();
        tokio::spawn(async move {
            let cred = match stream.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("reading a Nix client's credentials: {e}");
                    return;
                }
            };
            let (uid, gid) = (cred.uid(), cred.gid());
            let max = daemon.config.max_connections_per_user.max(1);
            let counted = (uid != 0 && uid != own_uid).then(|| per_user.take(uid, max));
            if let Some(None) = counted {
                let why = format!(
                    "too many connections from uid {uid} (at most {max}, --max-connections-per-user); close some and try again"
                );
                super::serve(stream, daemon, Err(why)).await;
                return;
            }
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
                tracing::info!("refused a Nix client (uid {uid}): {why}");
            }
            super::serve(stream, daemon, peer).await;
            drop(counted);
            drop(permit);
        });
    }
}
