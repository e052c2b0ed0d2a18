//! NARs going out: `NarFromPath` (what `nix-store --export`, `--verify-path`,
//! `--dump` and `nix copy --from` read: the NAR, unframed, after
//! STDERR_LAST) and the old `ExportPath` (one record of `nix-store
//! --export`'s format, without the 1 the stream puts before it, tunnelled
//! in STDERR_WRITE messages). The store writes on a
//! blocking thread, checking the contents against its record as it goes;
//! the connection sends as it comes (a bounded pipe between).

use ferry_formats::wire::{write_bytes, write_u64};
use ferry_nix_protocol::request::Request;
use ferry_nix_protocol::{Error, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::stream::from_store;
use super::{blocking, Conn, Handled};

/// `nix-store --export`'s mark after each NAR ("NIXE").
const EXPORT_MAGIC: u64 = 0x4558_494e;

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let store = conn.store().clone();
    match req {
        Request::NarFromPath(p) => {
            // Known valid before the stream starts: an unknown path is an
            // error the client can read.
            let s = store.clone();
            let q = p.clone();
            let sp = match blocking(move || {
                let sp = s.parse_path(&q)?;
                s.valid_info(&sp)?;
                Ok(sp)
            })
            .await
            {
                Ok(sp) => sp,
                Err(e) => return Ok(Err(e)),
            };
            server.last();
            server.flush().await?;
            let (mut rx, task) = from_store(move |w| store.dump_path(&sp, w).map(|_| ()));
            tokio::io::copy(&mut rx, server.writer()).await?;
            match task.await {
                Ok(Ok(())) => {}
                // The NAR is cut short: the client sees a broken archive
                // and the connection must end.
                Ok(Err(e)) => return Err(Error::Protocol(format!("sending {p}: {e}"))),
                Err(e) => return Err(Error::Protocol(format!("sending {p}: {e}"))),
            }
            tokio::io::AsyncWriteExt::flush(server.writer()).await?;
            Ok(Ok(()))
        }
        Request::ExportPath(p) => {
            let (mut rx, task) = from_store(move |w| {
                let mut w = w;
                let sp = store.parse_path(&p)?;
                let io = |e| ferry_store::StoreError::Io {
                    context: "exporting".into(),
                    source: e,
                };
                let info = store.dump_path(&sp, &mut w)?;
                write_u64(&mut w, EXPORT_MAGIC).map_err(io)?;
                write_bytes(&mut w, store.display(&sp).as_bytes()).map_err(io)?;
                write_u64(&mut w, info.references.len() as u64).map_err(io)?;
                for r in &info.references {
                    write_bytes(&mut w, store.display(r).as_bytes()).map_err(io)?;
                }
                let deriver = info.deriver.map(|d| store.display(&d)).unwrap_or_default();
                write_bytes(&mut w, deriver.as_bytes()).map_err(io)?;
                write_u64(&mut w, 0).map_err(io)
            });
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = rx.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                server.tunnel_write(&buf[..n]).await?;
            }
            match task.await {
                Ok(Ok(())) => {
                    server.last().u64(1);
                    server.flush().await?;
                    Ok(Ok(()))
                }
                Ok(Err(e)) => Ok(Err(super::nix_err(e))),
                Err(e) => Ok(Err(super::nix_err(format!("internal error: {e}")))),
            }
        }
        _ => unreachable!("dispatched here by mod.rs"),
    }
}
