//! Framed data (`FramedSource`/`FramedSink` in serialise.hh): a stream of
//! chunks, each a u64 length and that many bytes (no padding), ended by a
//! zero length. AddToStore (1.25+), AddToStoreNar (1.23+),
//! AddMultipleToStore and AddBuildLog send their data so.
//!
//! [`FramedReader`] hands a chunk's bytes through as they arrive, never
//! holding a chunk whole, so a peer announcing a huge chunk costs nothing
//! but the bytes it really sends. [`FramedWriter`] writes chunks of at most
//! [`CHUNK`] bytes, the size of Nix's own `FramedSink` buffer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest chunk [`FramedWriter`] sends.
pub const CHUNK: usize = 32 << 10;

/// Reads the data of a framed stream; EOF at the terminating empty chunk.
pub struct FramedReader<'a, R> {
    r: &'a mut R,
    /// Bytes left in the current chunk.
    left: u64,
    /// The length word being read, and how much of it has arrived.
    head: [u8; 8],
    head_len: usize,
    eof: bool,
}

impl<'a, R: AsyncRead + Unpin> FramedReader<'a, R> {
    pub fn new(r: &'a mut R) -> Self {
        FramedReader {
            r,
            left: 0,
            head: [0; 8],
            head_len: 0,
            eof: false,
        }
    }

    /// Whether the terminating chunk was read.
    pub fn is_done(&self) -> bool {
        self.eof
    }

    /// Skip the rest of the stream, as `~FramedSource` does after an error,
    /// so that the connection stays in step. Returns the bytes skipped.
    pub async fn drain(&mut self) -> io::Result<u64> {
        tokio::io::copy(self, &mut tokio::io::sink()).await
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FramedReader<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.left > 0 {
                let want = (this.left.min(buf.remaining() as u64)) as usize;
                let mut sub = ReadBuf::new(buf.initialize_unfilled_to(want));
                ready!(Pin::new(&mut *this.r).poll_read(cx, &mut sub))?;
                let n = sub.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection inside framed data",
                    )));
                }
                buf.advance(n);
                this.left -= n as u64;
                return Poll::Ready(Ok(()));
            }
            // Read the next length word, possibly in pieces.
            while this.head_len < 8 {
                let mut sub = ReadBuf::new(&mut this.head[this.head_len..]);
                ready!(Pin::new(&mut *this.r).poll_read(cx, &mut sub))?;
                let n = sub.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection inside framed data",
                    )));
                }
                this.head_len += n;
            }
            this.head_len = 0;
            this.left = u64::from_le_bytes(this.head);
            if this.left == 0 {
                this.eof = true;
            }
        }
    }
}

/// Writes data as frames; [`FramedWriter::finish`] sends the terminator.
pub struct FramedWriter<'a, W> {
    w: &'a mut W,
    /// The encoded chunk being written, and how much of it is out.
    out: Vec<u8>,
    pos: usize,
}

impl<'a, W: AsyncWrite + Unpin> FramedWriter<'a, W> {
    pub fn new(w: &'a mut W) -> Self {
        FramedWriter {
            w,
            out: Vec::with_capacity(CHUNK + 8),
            pos: 0,
        }
    }

    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.out.len() {
            let n = ready!(Pin::new(&mut *self.w).poll_write(cx, &self.out[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.out.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Send the terminating empty chunk and flush.
    pub async fn finish(mut self) -> io::Result<()> {
        self.flush().await?;
        self.w.write_all(&0u64.to_le_bytes()).await?;
        self.w.flush().await
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FramedWriter<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(CHUNK);
        this.out.extend_from_slice(&(n as u64).to_le_bytes());
        this.out.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        Pin::new(&mut *this.w).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The stream under the frames stays open: only `finish` ends them.
        self.poll_flush(cx)
    }
}

/// Copy all of `src` into a framed stream on `w`, with the terminator.
pub async fn write_framed<W: AsyncWrite + Unpin>(
    w: &mut W,
    src: &mut (impl AsyncRead + Unpin + ?Sized),
) -> io::Result<u64> {
    let mut fw = FramedWriter::new(w);
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        fw.write_all(&buf[..n]).await?;
        total += n as u64;
    }
    fw.finish().await?;
    Ok(total)
}

#[cfg(test)]
mod tests;
