//! NARs written by hand, token by token, to feed parsers exactly the bytes
//! a test wants (malformed ones included), and a NAR of one large file
//! generated as it is read (transfer tests that must not hold it in memory).
//! The encoding is written here again on purpose, independently of
//! ferry-formats: a test that used the code under test to make its input
//! would check nothing.

/// Append one NAR string: its length (u64 little-endian), the bytes, zero
/// padding to a multiple of 8.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

/// The NAR strings `ts`, one after the other.
pub fn tokens(ts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for t in ts {
        string(&mut v, t);
    }
    v
}

#[cfg(feature = "tokio")]
pub use generated::NarGen;

#[cfg(feature = "tokio")]
mod generated {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, ReadBuf};

    use super::string as nar_string;

    /// A NAR of one regular file of `size` bytes, generated as it is read.
    /// `compressible`: a repeating text pattern, else xorshift noise.
    pub struct NarGen {
        head: Vec<u8>,
        tail: Vec<u8>,
        size: u64,
        pos: u64,
        seed: u64,
        compressible: bool,
    }

    impl NarGen {
        pub fn new(size: u64, compressible: bool) -> Self {
            let mut head = Vec::new();
            for s in ["nix-archive-1", "(", "type", "regular", "contents"] {
                nar_string(&mut head, s.as_bytes());
            }
            head.extend_from_slice(&size.to_le_bytes());
            let mut tail = vec![0; ((8 - size % 8) % 8) as usize];
            nar_string(&mut tail, b")");
            NarGen {
                head,
                tail,
                size,
                pos: 0,
                seed: 0x9e37_79b9_7f4a_7c15,
                compressible,
            }
        }

        /// The NAR's length in bytes (never 0: there is no `is_empty`).
        #[allow(clippy::len_without_is_empty)]
        pub fn len(&self) -> u64 {
            self.head.len() as u64 + self.size + self.tail.len() as u64
        }
    }

    impl AsyncRead for NarGen {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let me = &mut *self;
            let head = me.head.len() as u64;
            let total = me.len();
            while buf.remaining() > 0 && me.pos < total {
                if me.pos < head {
                    let n = ((head - me.pos) as usize).min(buf.remaining());
                    buf.put_slice(&me.head[me.pos as usize..me.pos as usize + n]);
                    me.pos += n as u64;
                } else if me.pos < head + me.size {
                    let n = ((head + me.size - me.pos) as usize).min(buf.remaining()) / 8 * 8;
                    if n == 0 {
                        break; // size is a multiple of 8 in these tests
                    }
                    let mut chunk = vec![0u8; n];
                    for (i, w) in chunk.chunks_exact_mut(8).enumerate() {
                        let v = if me.compressible {
                            u64::from_le_bytes(*b"ferry 42")
                                ^ ((me.pos / 4096 + i as u64 / 512) % 7)
                        } else {
                            me.seed ^= me.seed << 13;
                            me.seed ^= me.seed >> 7;
                            me.seed ^= me.seed << 17;
                            me.seed
                        };
                        w.copy_from_slice(&v.to_le_bytes());
                    }
                    buf.put_slice(&chunk);
                    me.pos += n as u64;
                } else {
                    let off = (me.pos - head - me.size) as usize;
                    let n = (me.tail.len() - off).min(buf.remaining());
                    buf.put_slice(&me.tail[off..off + n]);
                    me.pos += n as u64;
                }
            }
            Poll::Ready(Ok(()))
        }
    }
}
