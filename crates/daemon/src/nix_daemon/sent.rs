//! BuildDerivation of a derivation that is not in Ferry's store: what
//! nix-daemon's build hook sends when a Ferry machine is one of its
//! `--builders` (`ssh-ng://HOST?remote-program=ferry daemon`): a
//! `BasicDerivation` whose inputs it copied just before. The trust rule is
//! nix-daemon 2.8's (`case wopBuildDerivation`): a client that is not
//! trusted may only build a content-addressed derivation (whose outputs
//! are checked against their content), and then under the path its own
//! text gives (written to the store), not the one it claims; a trusted
//! client's derivation is built as sent. Built here through
//! [`crate::engine::Engine::build_sent`]; the outputs are registered as any
//! build's and the result is BuildDerivation's.

use ferry_formats::derivation::Derivation;
use ferry_nix_protocol::NixError;
use ferry_nix_protocol::Server;
use tokio::io::{AsyncRead, AsyncWrite};

use super::build::{build_options, follow, to_nix};
use super::{blocking, nix_err, Conn, Handled};

/// Is `drv` content-addressed (Nix's `DerivationType::isCA`: every output
/// has a hash algorithm, fixed or floating)?
pub fn is_content_addressed(drv: &Derivation) -> bool {
    !drv.outputs.is_empty() && drv.outputs.values().all(|o| !o.hash_algo.is_empty())
}

pub async fn handle<R, W>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    drv_path: String,
    drv: Derivation,
) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let trusted = conn.peer.trusted;
    if !(is_content_addressed(&drv) || trusted) {
        return Ok(Err(NixError::new(
            "you are not privileged to build input-addressed derivations",
        )));
    }
    let store = conn.store().clone();
    let p = if trusted {
        match store.parse_path(&drv_path) {
            Ok(p) => p,
            Err(e) => return Ok(Err(nix_err(e))),
        }
    } else {
        // Its path recomputed from its text, as nix-daemon's
        // writeDerivation does for a client it does not trust.
        let name = drv_path
            .rsplit('/')
            .next()
            .and_then(|b| b.split_once('-'))
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        let text = drv.to_aterm();
        match blocking(move || store.add_derivation_text(&name, &text)).await {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        }
    };
    let mut options = build_options(&conn.settings);
    let sandbox = conn.daemon.engine.config().build.sandbox;
    for w in crate::access::restrict_build_options(&mut options, &conn.peer, sandbox) {
        server.log(&format!("warning: {w}")).await?;
    }
    let (etx, erx) = crate::events::channel();
    let engine = conn.daemon.engine.clone();
    let task = tokio::spawn(async move { engine.build_sent(p, drv, options, etx).await });
    let result = follow(server, conn, task, erx).await?;
    let v = server.client_version();
    to_nix(&result).write_for_build_derivation(server.last(), v);
    server.flush().await?;
    Ok(Ok(()))
}
