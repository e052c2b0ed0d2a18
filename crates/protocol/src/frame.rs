//! Frames: `kind: u8, length: u32 LE, payload`. Messages are JSON (small,
//! readable in a trace); stream data goes in `Data` frames of at most
//! [`MAX_DATA`] bytes, closed by `End` or `Abort(reason)`.
//!
//! Every length is checked before anything is allocated, so a malformed or
//! hostile peer costs one closed connection, never the daemon's memory.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use crate::{ProtocolError, Result};

const KIND_MESSAGE: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_END: u8 = 3;
const KIND_ABORT: u8 = 4;

/// Largest JSON message accepted.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest data chunk sent or accepted.
pub const MAX_DATA: usize = 1 << 20;
/// Size of the stream buffers on both sides.
const BUF: usize = 256 << 10;

/// One frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    Data(Vec<u8>),
    End,
    Abort(String),
}

impl Frame {
    fn describe(&self) -> String {
        match self {
            Frame::Message(m) => format!(
                "message {}",
                String::from_utf8_lossy(&m[..m.len().min(200)])
            ),
            Frame::Data(d) => format!("{} bytes of stream data", d.len()),
            Frame::End => "end of stream".into(),
            Frame::Abort(r) => format!("aborted stream ({r})"),
        }
    }
}

/// Messages larger than this, and data frames larger than
/// [`BUDGETED_DATA`], take their size from a [`FrameReader`]'s budget, if
/// it has one.
pub const BUDGETED_MESSAGE: usize = MAX_DATA;
/// See [`BUDGETED_MESSAGE`].
pub const BUDGETED_DATA: usize = 64 << 10;

/// Reads frames from any byte stream.
pub struct FrameReader<R> {
    r: BufReader<R>,
    /// Shared by every connection of a daemon: bytes of large messages
    /// and stream chunks held at once (a permit per KiB), so that many
    /// clients sending 16 MiB messages or streams together wait instead of
    /// growing the daemon.
    budget: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// The budget taken by the last large frame, kept until the next frame
    /// is read (a request is handled by then) unless taken with
    /// [`FrameReader::take_budget`] (a chunk queued for a consumer).
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r: BufReader::with_capacity(BUF, r),
            budget: None,
            held: None,
        }
    }

    /// Take the bytes of messages over [`BUDGETED_MESSAGE`] and of data
    /// frames over [`BUDGETED_DATA`] from `budget` (one permit per KiB; it
    /// must hold at least [`MAX_MESSAGE`] / 1024).
    pub fn with_budget(mut self, budget: std::sync::Arc<tokio::sync::Semaphore>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The next frame; [`ProtocolError::Closed`] on a clean EOF between frames.
    pub async fn frame(&mut self) -> Result<Frame> {
        self.held = None;
        let mut head = [0u8; 5];
        match self.r.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProtocolError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        self.r.read_exact(&mut head[1..]).await?;
        let len = u32::from_le_bytes(head[1..5].try_into().unwrap()) as usize;
        let max = match head[0] {
            KIND_MESSAGE => MAX_MESSAGE,
            KIND_DATA => MAX_DATA,
            KIND_END => 0,
            KIND_ABORT => 64 << 10,
            k => return Err(ProtocolError::BadFrame(format!("unknown frame kind {k}"))),
        };
        if len > max {
            return Err(ProtocolError::TooLarge { len, max });
        }
        if let Some(budget) = &self.budget {
            let over = match head[0] {
                KIND_MESSAGE => len > BUDGETED_MESSAGE,
                KIND_DATA => len > BUDGETED_DATA,
                _ => false,
            };
            if over {
                let kib = len.div_ceil(1024) as u32;
                self.held = Some(
                    budget
                        .clone()
                        .acquire_many_owned(kib)
                        .await
                        .map_err(|_| ProtocolError::Closed)?,
                );
            }
        }
        let mut payload = vec![0u8; len];
        self.r.read_exact(&mut payload).await?;
        Ok(match head[0] {
            KIND_MESSAGE => Frame::Message(payload),
            KIND_DATA => Frame::Data(payload),
            KIND_END => Frame::End,
            _ => Frame::Abort(String::from_utf8_lossy(&payload).into_owned()),
        })
    }

    /// The budget held by the last frame read, to keep with its data
    /// (released when dropped).
    pub fn take_budget(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.held.take()
    }

    /// The next frame, which must be a message of type `T`.
    pub async fn message<T: DeserializeOwned>(&mut self) -> Result<T> {
        match self.frame().await? {
            Frame::Message(m) => {
                let parse = || {
                    serde_json::from_slice(&m).map_err(|e| ProtocolError::BadMessage(e.to_string()))
                };
                // Parsing a message of megabytes takes milliseconds (a
                // second in a debug build): not on an async worker that
                // other connections' handshakes are waiting for.
                let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                if m.len() > BUDGETED_DATA && multi_thread {
                    tokio::task::block_in_place(parse)
                } else {
                    parse()
                }
            }
            other => Err(ProtocolError::Unexpected {
                expected: "a message",
                got: other.describe(),
            }),
        }
    }

    /// The next chunk of a stream, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        match self.frame().await? {
            Frame::Data(d) => Ok(Some(d)),
            Frame::End => Ok(None),
            Frame::Abort(reason) => Err(ProtocolError::Aborted(reason)),
            other => Err(ProtocolError::Unexpected {
                expected: "stream data",
                got: other.describe(),
            }),
        }
    }

    /// Copy a whole stream into `w`; returns the byte count.
    pub async fn stream_to(&mut self, w: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        let mut n = 0;
        while let Some(chunk) = self.chunk().await? {
            w.write_all(&chunk).await?;
            n += chunk.len() as u64;
        }
        w.flush().await?;
        Ok(n)
    }
}

/// Writes frames to any byte stream. Buffered: call [`FrameWriter::flush`]
/// when the peer must see what was written.
pub struct FrameWriter<W> {
    w: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            w: BufWriter::with_capacity(BUF, w),
        }
    }

    async fn frame(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.w.write_all(&head).await?;
        self.w.write_all(payload).await?;
        Ok(())
    }

    /// Send a message (not flushed).
    pub async fn message<T: Serialize>(&mut self, m: &T) -> Result<()> {
        let bytes = serde_json::to_vec(m).map_err(|e| ProtocolError::BadMessage(e.to_string()))?;
        if bytes.len() > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE,
            });
        }
        self.frame(KIND_MESSAGE, &bytes).await
    }

    /// Send a message and flush.
    pub async fn send<T: Serialize>(&mut self, m: &T) -> Result<()> {
        self.message(m).await?;
        self.flush().await
    }

    /// Send stream data, split into chunks of at most [`MAX_DATA`].
    pub async fn data(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(MAX_DATA);
            self.frame(KIND_DATA, &bytes[..n]).await?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    pub async fn end(&mut self) -> Result<()> {
        self.frame(KIND_END, &[]).await
    }

    pub async fn abort(&mut self, reason: &str) -> Result<()> {
        let r = &reason.as_bytes()[..reason.len().min(60 << 10)];
        self.frame(KIND_ABORT, r).await
    }

    /// Send everything `r` yields as one stream (ended, not flushed).
    pub async fn stream_from(&mut self, r: &mut (impl AsyncRead + Unpin)) -> Result<u64> {
        let mut buf = vec![0u8; 128 << 10];
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) => {
                    self.abort(&e.to_string()).await?;
                    return Err(e.into());
                }
            };
            self.data(&buf[..k]).await?;
            n += k as u64;
        }
        self.end().await?;
        Ok(n)
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.w.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let writer = tokio::spawn(async move {
            w.message(&serde_json::json!({"op": "hello"}))
                .await
                .unwrap();
            w.data(&vec![7u8; MAX_DATA + 10]).await.unwrap();
            w.end().await.unwrap();
            w.abort("disk full").await.unwrap();
            w.flush().await.unwrap();
        });
        let m: serde_json::Value = r.message().await.unwrap();
        assert_eq!(m["op"], "hello");
        let mut sink = Vec::new();
        assert_eq!(
            r.stream_to(&mut sink).await.unwrap(),
            (MAX_DATA + 10) as u64
        );
        assert!(matches!(r.chunk().await, Err(ProtocolError::Aborted(s)) if s == "disk full"));
        writer.await.unwrap();
        assert!(matches!(r.frame().await, Err(ProtocolError::Closed)));
    }

    #[tokio::test]
    async fn oversized_and_unknown_frames_are_refused_before_allocation() {
        let mut bytes = vec![KIND_MESSAGE];
        bytes.extend(u32::MAX.to_le_bytes());
        let mut r = FrameReader::new(&bytes[..]);
        assert!(matches!(
            r.frame().await,
            Err(ProtocolError::TooLarge { .. })
        ));
        let bytes = [9u8, 0, 0, 0, 0];
        let mut r = FrameReader::new(&bytes[..]);
        assert!(matches!(r.frame().await, Err(ProtocolError::BadFrame(_))));
        let bytes = [KIND_MESSAGE, 3, 0, 0, 0, b'{', b'x', b'}'];
        let mut r = FrameReader::new(&bytes[..]);
        assert!(matches!(
            r.message::<serde_json::Value>().await,
            Err(ProtocolError::BadMessage(_))
        ));
    }
}
