//! Bridges between the async connection and the store's blocking streams:
//! the store reads and writes `std::io` streams on a blocking thread while
//! the session moves frames; bounded channels keep memory flat.

use std::io::{self, Read, Write};

use tokio::sync::mpsc;

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
