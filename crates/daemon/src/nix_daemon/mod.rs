//! Nix clients on a Ferry daemon: one connection of the Nix worker protocol
//! (1.34, as nix-daemon 2.8 speaks it; the codec is `ferry-nix-protocol`)
//! answered from Ferry's store and engine, with the access rules of
//! Ferry's own socket ([`crate::access`]).
//!
//! This module holds the connection: the greeting (a refused peer gets
//! Nix's error), the request loop and the dispatch. Each group of
//! operations has its file: [`query`] (validity, path information,
//! referrers, derivation outputs), [`add`] (every way a path comes in, and
//! signatures; [`import`] the old `ImportPaths`), [`build`] (builds through [`crate::engine::Engine`], their
//! log lines as Nix's build activities, `QueryMissing`; [`sent`]
//! BuildDerivation of a derivation not in the store, as nix-daemon's build
//! hook sends it), [`roots`] (roots,
//! collection, verification), [`nar`] (NARs and exports going out);
//! [`stream`] moves data between the connection and the store's blocking
//! readers and writers, bounded. [`listener`] accepts on `--nix-socket`.
//!
//! An operation that fails is answered with `STDERR_ERROR` and the
//! connection goes on, as in nix-daemon; one that Ferry does not serve is
//! refused by name (its arguments were read, so the stream stays in step).

pub mod add;
pub mod build;
pub mod import;
pub mod listener;
pub mod nar;
pub mod query;
pub mod roots;
pub mod sent;
pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_nix_protocol::request::Request;
use ferry_nix_protocol::settings::ClientSettings;
use ferry_nix_protocol::{Error, Limits, NixError, Server};
use ferry_store::{Store, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::Peer;
use crate::session::Daemon;

/// The Nix version this daemon says it is (1.33+ clients print it).
pub const NIX_VERSION: &str = "2.8.0";

/// Connection ids of Nix clients, apart from the Ferry sessions' (they
/// share the daemon's table of per-connection temporary roots).
static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// What a request's handler has to hand.
pub struct Conn {
    pub daemon: Arc<Daemon>,
    pub peer: Peer,
    /// Key of this connection's temporary roots.
    pub id: u64,
    /// The client's last SetOptions.
    pub settings: ClientSettings,
    /// Next activity id (Nix uses pid << 32 plus a counter).
    next_activity: u64,
}

impl Conn {
    pub fn store(&self) -> &Arc<Store> {
        self.daemon.engine.store()
    }

    pub fn activity_id(&mut self) -> u64 {
        self.next_activity += 1;
        self.next_activity
    }

    /// This connection's temporary roots (made on first need).
    pub fn roots(&self) -> Result<Arc<ferry_store::TempRoots>, NixError> {
        self.daemon
            .session_roots
            .of(self.store(), self.id)
            .map_err(nix_err)
    }
}

/// A handler's outcome: `Err` ends the connection (it broke or is out of
/// step); `Ok(Err)` is the operation's failure, sent as `STDERR_ERROR`.
pub type Handled = Result<Result<(), NixError>, Error>;

/// Nix's error for a failure of Ferry's.
pub fn nix_err(e: impl std::fmt::Display) -> NixError {
    NixError::new(e.to_string())
}

/// Run blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, NixError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(nix_err(e)),
        Err(e) => Err(nix_err(format!("internal error: {e}"))),
    }
}

/// Serve one Nix client until it leaves. `peer` is the access check's
/// verdict on the socket's peer: a refusal is sent as Nix's error during
/// the greeting, as nix-daemon refuses a user not in `allowed-users`.
pub async fn serve<S>(stream: S, daemon: Arc<Daemon>, peer: Result<Peer, String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (r, w) = tokio::io::split(stream);
    serve_split(r, w, daemon, peer).await
}

/// [`serve`] over two halves (stdin and stdout for `ferry daemon --stdio`).
pub async fn serve_split<R, W>(r: R, w: W, daemon: Arc<Daemon>, peer: Result<Peer, String>)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let refusal = peer.as_ref().err().map(|why| NixError::new(why.clone()));
    let accept = Server::accept(r, w, Limits::default(), NIX_VERSION, |_| refusal);
    let mut server = match tokio::time::timeout(daemon.config.handshake_timeout, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!("Nix client: handshake: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("Nix client: no greeting in time: connection closed");
            return;
        }
    };
    let Ok(peer) = peer else { return };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn = id, user = %peer.user, trusted = peer.trusted, "Nix client accepted");
    let mut conn = Conn {
        daemon,
        peer,
        id,
        settings: ClientSettings::default(),
        next_activity: (std::process::id() as u64) << 32,
    };
    let result = request_loop(&mut server, &mut conn).await;
    conn.daemon.session_roots.end(id);
    match result {
        Ok(()) => tracing::debug!(conn = id, "Nix client left"),
        Err(e) => tracing::info!(conn = id, "Nix client: connection ended: {e}"),
    }
}

async fn request_loop<R, W>(server: &mut Server<R, W>, conn: &mut Conn) -> Result<(), Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    while let Some(req) = server.next_request().await? {
        let name = format!("{req:?}");
        let name = name.split([' ', '(', '{']).next().unwrap_or("").to_string();
        tracing::debug!(conn = conn.id, op = %name, "Nix request");
        if let Err(e) = dispatch(server, conn, req).await? {
            tracing::debug!(conn = conn.id, op = %name, "failed: {}", e.plain_msg());
            server.fail(&e).await?;
        }
    }
    Ok(())
}

async fn dispatch<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    use Request as Q;
    match req {
        Q::SetOptions(s) => {
            conn.settings = s;
            server.last();
            server.flush().await?;
            Ok(Ok(()))
        }
        r @ (Q::IsValidPath(_)
        | Q::QueryValidPaths { .. }
        | Q::QueryPathInfo(_)
        | Q::QueryReferrers(_)
        | Q::QueryValidDerivers(_)
        | Q::QueryDerivationOutputMap(_)
        | Q::QuerySubstitutablePathInfos(_)
        | Q::QuerySubstitutablePaths(_)
        | Q::QuerySubstitutablePathInfo(_)
        | Q::HasSubstitutes(_)
        | Q::QueryPathHash(_)
        | Q::QueryReferences(_)
        | Q::QueryDeriver(_)
        | Q::QueryDerivationOutputs(_)
        | Q::QueryDerivationOutputNames(_)
        | Q::QueryPathFromHashPart(_)
        | Q::QueryAllValidPaths) => query::handle(server, conn, r).await,
        r @ (Q::AddTextToStore { .. }
        | Q::AddToStore(_)
        | Q::AddToStoreNar(_)
        | Q::AddMultipleToStore { .. }
        | Q::ImportPaths
        | Q::AddSignatures { .. }) => add::handle(server, conn, r).await,
        r @ (Q::BuildPaths { .. }
        | Q::BuildPathsWithResults { .. }
        | Q::BuildDerivation { .. }
        | Q::QueryMissing(_)
        | Q::EnsurePath(_)) => build::handle(server, conn, r).await,
        r @ (Q::AddTempRoot(_)
        | Q::AddIndirectRoot(_)
        | Q::SyncWithGC
        | Q::FindRoots
        | Q::CollectGarbage { .. }
        | Q::VerifyStore { .. }) => roots::handle(server, conn, r).await,
        r @ (Q::NarFromPath(_) | Q::ExportPath(_)) => nar::handle(server, conn, r).await,
        other => {
            // Its data, if any, must be read to stay in step.
            if other.data_follows(server.client_version())
                == ferry_nix_protocol::request::DataFollows::Framed
            {
                server.framed().drain().await?;
            }
            Ok(Err(unsupported(&other)))
        }
    }
}

/// Nix's words for an operation this daemon does not serve, naming it.
fn unsupported(req: &Request) -> NixError {
    let dbg = format!("{req:?}");
    let name = dbg.split([' ', '(', '{']).next().unwrap_or("?");
    NixError::new(format!(
        "operation '{name}' is not supported by the Ferry daemon (a Ferry store has no realisations, build logs to add or optimiser)"
    ))
}

#[cfg(test)]
mod tests;
