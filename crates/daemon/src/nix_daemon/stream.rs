//! Data between a Nix connection and the store's blocking readers and
//! writers, never whole in memory: a bounded pipe (`tokio::io::duplex`)
//! with the store's side on a blocking thread.
//!
//! Coming in ([`to_store`]), the connection's side must consume exactly the
//! client's data whatever the store does with it, so that the stream stays
//! in step: once the store stops reading (it refused the data), what
//! follows is read and dropped ([`Lenient`]). Going out ([`from_store`]),
//! the store writes while the connection sends.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferry_nix_protocol::NixError;
use ferry_store::StoreError;
use tokio::io::{AsyncWrite, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use super::nix_err;

/// Bytes in flight between the connection and the store.
pub const PIPE: usize = 256 << 10;

/// A writer that, once its reader is gone, accepts and drops everything.
pub struct Lenient<W> {
    w: W,
    broken: bool,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Lenient<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.broken {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.w).poll_write(cx, buf) {
            Poll::Ready(Err(_)) => {
                self.broken = true;
                Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.broken {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.w).poll_flush(cx) {
            Poll::Ready(Err(_)) => {
                self.broken = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.broken {
            return Poll::Ready(Ok(()));
        }
        let _ = Pin::new(&mut self.w).poll_shutdown(cx);
        Poll::Ready(Ok(()))
    }
}

/// The store's side of an incoming stream, running.
pub struct ToStore<T> {
    tx: Lenient<DuplexStream>,
    task: JoinHandle<Result<T, StoreError>>,
}

/// Start `consume` on a blocking thread, reading what is written to
/// [`ToStore::writer`].
pub fn to_store<T: Send + 'static>(
    consume: impl FnOnce(&mut dyn Read) -> Result<T, StoreError> + Send + 'static,
) -> ToStore<T> {
    let (tx, rx) = tokio::io::duplex(PIPE);
    let task = tokio::task::spawn_blocking(move || {
        let mut r = SyncIoBridge::new(rx);
        consume(&mut r)
    });
    ToStore {
        tx: Lenient {
            w: tx,
            broken: false,
        },
        task,
    }
}

impl<T> ToStore<T> {
    pub fn writer(&mut self) -> &mut Lenient<DuplexStream> {
        &mut self.tx
    }

    /// The end of the data (the store reads EOF), then the store's answer.
    pub async fn finish(self) -> Result<T, NixError> {
        drop(self.tx);
        match self.task.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(nix_err(e)),
            Err(e) => Err(nix_err(format!("internal error: {e}"))),
        }
    }
}

/// Run `produce` on a blocking thread, writing into a pipe whose other end
/// is returned with the task: copy it to the connection, then await the
/// task for the producer's verdict.
pub fn from_store<T: Send + 'static>(
    produce: impl FnOnce(&mut dyn std::io::Write) -> Result<T, StoreError> + Send + 'static,
) -> (DuplexStream, JoinHandle<Result<T, StoreError>>) {
    let (tx, rx) = tokio::io::duplex(PIPE);
    let task = tokio::task::spawn_blocking(move || {
        let mut w = SyncIoBridge::new(tx);
        let v = produce(&mut w)?;
        std::io::Write::flush(&mut w).map_err(|e| StoreError::Io {
            context: "sending to the client".into(),
            source: e,
        })?;
        Ok(v)
    });
    (rx, task)
}

/// Read what remains of a `Read` (a refused item's data).
pub fn drain(r: &mut dyn Read) -> Result<(), StoreError> {
    std::io::copy(r, &mut std::io::sink())
        .map(|_| ())
        .map_err(|e| StoreError::Io {
            context: "reading the client's data".into(),
            source: e,
        })
}
