//! The one bridge between the synchronous store and async streams: the
//! store reads and writes `std::io` streams on a blocking thread (tokio's
//! blocking pool, never the runtime's own threads) while the async side
//! moves frames or bytes; bounded channels of chunks keep memory flat
//! ([`DEPTH`] chunks of at most 256 KiB in flight) and give backpressure
//! both ways.
//!
//! Two shapes: the session feeds chunks to a [`ChannelReader`] and sends
//! what a [`ChannelWriter`] gives as frames; callers that hold an
//! `AsyncRead`/`AsyncWrite` API (offloading, `ferry build` through a
//! daemon) use [`blocking_producer`] and [`blocking_consumer`], which put
//! the same two ends behind an `AsyncRead` and an `AsyncWrite`.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

/// Chunks in flight between the two sides.
pub const DEPTH: usize = 8;

/// A chunk from the connection, with the share of the daemon's memory
/// budget it holds until it is read (see `FrameReader::with_budget`).
pub type Chunk = (Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>);

/// A `Read` fed by chunks from the connection; an `Err` chunk (the peer
/// aborted, the connection broke) becomes a read error.
pub struct ChannelReader {
    rx: mpsc::Receiver<Result<Chunk, String>>,
    current: Vec<u8>,
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Result<Chunk, String>>) -> Self {
        ChannelReader {
            rx,
            current: Vec::new(),
            _budget: None,
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            // A chunk read gives its budget back before the next one is
            // waited for (whose frame may need that budget).
            self._budget = None;
            match self.rx.blocking_recv() {
                Some(Ok((chunk, budget))) => {
                    // The last chunk's budget goes with it.
                    self.current = chunk;
                    self._budget = budget;
                    self.pos = 0;
                }
                Some(Err(reason)) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, reason))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A `Write` whose bytes go to the connection in chunks.
pub struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Run `produce` on a blocking thread; what it writes is read from the
/// returned [`ProducedStream`], at most [`DEPTH`] chunks ahead of the
/// reader. The stream ends when `produce` returns (what it wrote is sent
/// first); dropping the stream makes its writes fail (a broken pipe), so a
/// producer never stays blocked on a reader that went away.
pub fn blocking_producer<T: Send + 'static>(
    produce: impl FnOnce(&mut ChannelWriter) -> T + Send + 'static,
) -> (ProducedStream, JoinHandle<T>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(tx);
        produce(&mut out)
    });
    let stream = ProducedStream {
        rx,
        current: Vec::new(),
        pos: 0,
    };
    (stream, task)
}

/// The `AsyncRead` end of a [`blocking_producer`].
pub struct ProducedStream {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ProducedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.current.len() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => {
                    this.current = chunk;
                    this.pos = 0;
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.current.len() - this.pos);
        buf.put_slice(&this.current[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Run `consume` on a blocking thread; it reads what is written into the
/// returned [`ConsumerSink`], sent in chunks of up to 256 KiB, at most
/// [`DEPTH`] of them waiting. Its stream ends when the sink is shut down
/// or dropped (flush it first: a partial chunk is sent by a flush);
/// once `consume` returns, writes to the sink fail (a broken pipe).
pub fn blocking_consumer<T: Send + 'static>(
    consume: impl FnOnce(&mut ChannelReader) -> T + Send + 'static,
) -> (ConsumerSink, JoinHandle<T>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader::new(rx);
        consume(&mut reader)
    });
    let sink = ConsumerSink {
        tx: PollSender::new(tx),
        buf: Vec::with_capacity(CHUNK),
    };
    (sink, task)
}

/// The `AsyncWrite` end of a [`blocking_consumer`].
pub struct ConsumerSink {
    tx: PollSender<Result<Chunk, String>>,
    buf: Vec<u8>,
}

impl ConsumerSink {
    /// Send the bytes held, once the channel has room.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send_item(Ok((chunk, None))).map_err(|_| gone())?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConsumerSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() == CHUNK {
            ready!(this.poll_send(cx))?;
        }
        let n = data.len().min(CHUNK - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() {
            ready!(this.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_stream_carries_every_byte_in_order() {
        let data = pattern(3 * CHUNK + 12345);
        let sent = data.clone();
        let (mut stream, task) = blocking_producer(move |w| {
            // Small writes and one large one.
            for piece in sent[..1000].chunks(7) {
                w.write_all(piece)?;
            }
            w.write_all(&sent[1000..])?;
            w.flush()
        });
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_whose_reader_went_away_gets_a_broken_pipe() {
        let (stream, task) = blocking_producer(|w| -> io::Result<()> {
            loop {
                w.write_all(&[0u8; 4096])?;
            }
        });
        drop(stream);
        let err: io::Error = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_sink_carries_every_byte_in_order() {
        let data = pattern(3 * CHUNK + 777);
        let (mut sink, task) = blocking_consumer(|r| {
            let mut got = Vec::new();
            r.read_to_end(&mut got).map(|_| got)
        });
        for piece in data.chunks(100_000) {
            sink.write_all(piece).await.unwrap();
        }
        sink.flush().await.unwrap();
        drop(sink);
        assert_eq!(task.await.unwrap().unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writing_to_a_consumer_that_stopped_fails() {
        let (mut sink, task) = blocking_consumer(|r| {
            let mut first = [0u8; 1];
            r.read_exact(&mut first)
        });
        let big = vec![1u8; (DEPTH + 2) * CHUNK];
        let err = sink.write_all(&big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        task.await.unwrap().unwrap();
    }
}
