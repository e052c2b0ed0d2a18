//! Data between a Nix connection and the store's blocking readers and
//! writers, never whole in memory: the daemon's bridge (`crate::bridge`,
//! a few chunks in flight) with the store's side on a blocking thread.
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
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::nix_err;
use crate::bridge::{blocking_consumer, blocking_producer, ConsumerSink, ProducedStream};

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
    tx: Lenient<ConsumerSink>,
    task: JoinHandle<Result<T, StoreError>>,
}

/// Start `consume` on a blocking thread, reading what is written to
/// [`ToStore::writer`] (through the daemon's one bridge,
/// [`crate::bridge::blocking_consumer`]: a few chunks in flight).
pub fn to_store<T: Send + 'static>(
    consume: impl FnOnce(&mut dyn Read) -> Result<T, StoreError> + Send + 'static,
) -> ToStore<T> {
    let (sink, task) = blocking_consumer(move |r| consume(r));
    ToStore {
        tx: Lenient {
            w: sink,
            broken: false,
        },
        task,
    }
}

impl<T> ToStore<T> {
    pub fn writer(&mut self) -> &mut Lenient<ConsumerSink> {
        &mut self.tx
    }

    /// The end of the data (the store reads EOF), then the store's answer.
    pub async fn finish(mut self) -> Result<T, NixError> {
        // What is held is sent, then the stream closed (a refusal already
        // closed it: `Lenient` says nothing of that).
        let _ = self.tx.flush().await;
        let _ = self.tx.shutdown().await;
        drop(self.tx);
        match self.task.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(nix_err(e)),
            Err(e) => Err(nix_err(format!("internal error: {e}"))),
        }
    }
}

/// Run `produce` on a blocking thread ([`crate::bridge::blocking_producer`]);
/// copy the returned stream to the connection, then await the task for the
/// producer's verdict.
pub fn from_store<T: Send + 'static>(
    produce: impl FnOnce(&mut dyn std::io::Write) -> Result<T, StoreError> + Send + 'static,
) -> (ProducedStream, JoinHandle<Result<T, StoreError>>) {
    blocking_producer(move |w| {
        let v = produce(w)?;
        std::io::Write::flush(w).map_err(|e| StoreError::Io {
            context: "sending to the client".into(),
            source: e,
        })?;
        Ok(v)
    })
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
