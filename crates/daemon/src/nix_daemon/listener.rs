//! `ferry daemon --nix-socket PATH`: a second socket where Nix clients
//! (`NIX_REMOTE=unix://PATH`, or `ferry daemon --stdio` forwarding for
//! `ssh-ng://`) are served. Bound as Ferry's own socket is
//! ([`crate::server::bind`]: 0666 for a root daemon, 0600 for a personal
//! one); each peer's uid and gid read from the socket (`SO_PEERCRED`) and
//! judged by the same [`crate::access::Access`] as Ferry's clients;
//! connections bounded by the same `max_connections` (in a pool of their
//! own) and `max_connections_per_user` is not yet applied here.

use std::io;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::access::Peer;
use crate::session::Daemon;

/// Accept Nix clients forever.
pub async fn run(listener: UnixListener, daemon: Arc<Daemon>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(daemon.config.max_connections.max(1)));
    loop {
        let permit = slots
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
        tokio::spawn(async move {
            let cred = match stream.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("reading a Nix client's credentials: {e}");
                    return;
                }
            };
            let (uid, gid) = (cred.uid(), cred.gid());
            let d = daemon.clone();
            let peer: Result<Peer, String> =
                match tokio::task::spawn_blocking(move || d.access.check(uid, gid)).await {
                    Ok(p) => p,
                    Err(e) => Err(format!("internal error: {e}")),
                };
            if let Err(why) = &peer {
                tracing::info!("refused a Nix client (uid {uid}): {why}");
            }
            super::serve(stream, daemon, peer).await;
            drop(permit);
        });
    }
}
