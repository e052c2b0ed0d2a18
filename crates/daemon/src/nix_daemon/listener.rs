//! `ferry daemon --nix-socket PATH`: a second socket where Nix clients
//! (`NIX_REMOTE=unix://PATH`, or `ferry daemon --stdio` forwarding for
//! `ssh-ng://`) are served. Bound as Ferry's own socket is
//! ([`crate::server::bind`]: 0666 for a root daemon, 0600 for a personal
//! one); each peer's uid and gid read from the socket (`SO_PEERCRED`) and
//! judged by the same [`crate::access::Access`] as Ferry's clients (and
//! given their `gcroots/per-user` directory as there); connections bounded
//! by the same `max_connections` and `max_connections_per_user`, counted
//! together with the Ferry socket's (one accept path,
//! [`crate::server::next_client`] and [`crate::server::admit`]). A user over its limit is refused with
//! Nix's error at the greeting.

use std::io;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::server::{admit, next_client, Admission};
use crate::session::Daemon;

/// Accept Nix clients forever.
pub async fn run(listener: UnixListener, daemon: Arc<Daemon>) -> io::Result<()> {
    loop {
        let (permit, stream) = next_client(&listener, &daemon, "a Nix client").await;
        let daemon = daemon.clone();
        tokio::spawn(async move {
            match admit(&stream, &daemon, "a Nix client").await {
                None => {}
                // Told in Nix's words, at the greeting.
                Some(Admission::OverLimit(why)) => super::serve(stream, daemon, Err(why)).await,
                Some(Admission::Admitted(counted, peer)) => {
                    super::serve(stream, daemon, peer).await;
                    drop(counted);
                }
            }
            drop(permit);
        });
    }
}
