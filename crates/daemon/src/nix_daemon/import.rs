//! `ImportPaths`: `nix-store --export`'s stream, which the daemon asks the
//! client for piece by piece (STDERR_READ, `TunnelSource`) as the store
//! reads it; so nothing is asked for beyond the stream's end mark, and a
//! refusal leaves the connection in step. Clients of Nix 2.0 and later
//! import with `AddToStoreNar` instead; this serves older ones.
//!
//! An export carries no content address and no Nix signature, so, as with
//! nix-daemon (`importPaths(source, trusted ? NoCheckSigs : CheckSigs)`),
//! only trusted users import.

use std::io::Read;

use ferry_formats::export::ExportReader;
use ferry_formats::nar;
use ferry_nix_protocol::{NixError, Server};
use ferry_store::{PathInfo, Store, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{nix_err, Conn, Handled};

/// Largest piece asked for at once.
const PIECE: usize = 64 << 10;

/// A blocking `Read` whose bytes the connection asks the client for.
struct Pull {
    want: mpsc::Sender<usize>,
    got: mpsc::Receiver<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Pull {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let gone =
                || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the client went away");
            self.want
                .blocking_send(out.len().min(PIECE))
                .map_err(|_| gone())?;
            match self.got.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Err(gone()),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    if !conn.peer.trusted {
        return Ok(Err(NixError::new(format!(
            "cannot import: the paths of an export carry no signature Ferry accepts, and user '{}' is not in the daemon's trusted users",
            conn.peer.user
        ))));
    }
    let roots = match conn.roots() {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let store = conn.store().clone();
    let (want_tx, mut want_rx) = mpsc::channel(1);
    let (got_tx, got_rx) = mpsc::channel(1);
    let task = tokio::task::spawn_blocking(move || {
        let mut r = Pull {
            want: want_tx,
            got: got_rx,
            buf: Vec::new(),
            pos: 0,
        };
        roots.scope(|| import(&store, &mut r))
    });
    while let Some(n) = want_rx.recv().await {
        let mut buf = vec![0u8; n];
        match server.tunnel_read(&mut buf).await {
            Ok(k) => {
                buf.truncate(k);
                let _ = got_tx.send(Ok(buf)).await;
            }
            Err(e) => {
                let _ = got_tx.send(Err(e.to_string())).await;
                let _ = task.await;
                return Err(e);
            }
        }
    }
    let paths = match task.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ok(Err(nix_err(e))),
        Err(e) => return Ok(Err(nix_err(format!("internal error: {e}")))),
    };
    server.last().strings(&paths);
    server.flush().await?;
    Ok(Ok(()))
}

/// Import every item of the stream in turn (each through the store's
/// door: references valid, a `.drv` checked); the paths, in order.
fn import(store: &Store, r: &mut dyn Read) -> Result<Vec<String>, StoreError> {
    let mut reader = ExportReader::new(r);
    let mut out = Vec::new();
    loop {
        let temp = store.temp_path();
        let Some(item) = reader.next_item(|n| nar::restore(n, temp.path()))? else {
            break;
        };
        let path = store.parse_path(&item.meta.path)?;
        let mut references = item
            .meta
            .references
            .iter()
            .map(|p| store.parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        references.sort();
        references.dedup();
        let deriver = item
            .meta
            .deriver
            .as_deref()
            .map(|d| store.parse_path(d))
            .transpose()?;
        let info = PathInfo {
            path: path.clone(),
            nar_hash: item.nar_hash,
            nar_size: item.nar_size,
            references,
            deriver,
            registration_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            signatures: Vec::new(),
            ca: None,
        };
        let _rooted = store.root_in_scope(&[&path])?;
        let lock = store.lock_path(&path)?;
        if !store.is_valid(&path)? {
            store.commit(temp, &info, &lock)?;
        }
        out.push(store.display(&path));
    }
    Ok(out)
}
