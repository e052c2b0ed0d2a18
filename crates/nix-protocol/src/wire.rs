//! Bounded wire primitives over async streams: u64s, booleans, padded
//! strings and string collections as Nix's `serialise.cc` writes them.
//!
//! Writing reuses `ferry_formats::wire` (the same encoders NAR and bundles
//! use) into a buffer that is sent with one write; reading is async, so it
//! mirrors `ferry_formats::wire::read_bytes` here (formats has no async
//! reader), with a per-message budget on top of the per-string limit.

use std::collections::{BTreeMap, BTreeSet};

use ferry_formats::wire as fw;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, Limits, Result, ITEM_COST};

/// Reads protocol values from a stream, within [`Limits`].
pub struct NixRead<R> {
    r: R,
    pub limits: Limits,
    /// Bytes the current message may still allocate.
    left: u64,
}

impl<R: AsyncRead + Unpin> NixRead<R> {
    pub fn new(r: R, limits: Limits) -> Self {
        NixRead {
            r,
            limits,
            left: limits.message,
        }
    }

    /// Start a new message: its allocations count from zero again.
    pub fn reset_budget(&mut self) {
        self.left = self.limits.message;
    }

    /// The stream itself, for data that follows a message (a NAR, frames).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    fn charge(&mut self, n: u64, what: &str) -> Result<()> {
        if n > self.left {
            return Err(Error::protocol(format!(
                "{what} exceeds the message limit of {} bytes",
                self.limits.message
            )));
        }
        self.left -= n;
        Ok(())
    }

    pub async fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b).await?;
        Ok(u64::from_le_bytes(b))
    }

    /// A boolean: Nix reads any non-zero u64 as true.
    pub async fn bool(&mut self) -> Result<bool> {
        Ok(self.u64().await? != 0)
    }

    /// A number that must fit in `max` (Nix's `readNum<T>` range check).
    pub async fn num(&mut self, max: u64, what: &str) -> Result<u64> {
        let n = self.u64().await?;
        if n > max {
            return Err(Error::protocol(format!("{what} {n} is too large")));
        }
        Ok(n)
    }

    /// A padded string of at most `max` bytes.
    pub async fn bytes_max(&mut self, max: u64) -> Result<Vec<u8>> {
        let len = self.u64().await?;
        if len > max {
            return Err(Error::protocol(format!(
                "string of {len} bytes exceeds the limit of {max}"
            )));
        }
        self.charge(len, "a string")?;
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf).await?;
        let p = fw::padding(len);
        let mut pad = [0u8; 8];
        self.r.read_exact(&mut pad[..p]).await?;
        if pad[..p].iter().any(|&b| b != 0) {
            return Err(Error::protocol(format!(
                "non-zero padding after a string of {len} bytes"
            )));
        }
        Ok(buf)
    }

    /// A padded string of any length of which at most `keep` bytes are
    /// kept (the rest is read and dropped in pieces): for text that is
    /// shown, not used (log lines, error messages), where a long line
    /// should not end the conversation. Returns the bytes and whether some
    /// were dropped.
    pub async fn bytes_truncated(&mut self, keep: u64) -> Result<(Vec<u8>, bool)> {
        let len = self.u64().await?;
        let kept = len.min(keep);
        self.charge(kept, "a string")?;
        let mut buf = vec![0u8; kept as usize];
        self.r.read_exact(&mut buf).await?;
        let mut skip = len - kept;
        let mut scratch = [0u8; 8192];
        while skip > 0 {
            let k = skip.min(scratch.len() as u64) as usize;
            self.r.read_exact(&mut scratch[..k]).await?;
            skip -= k as u64;
        }
        let p = fw::padding(len);
        let mut pad = [0u8; 8];
        self.r.read_exact(&mut pad[..p]).await?;
        if pad[..p].iter().any(|&b| b != 0) {
            return Err(Error::protocol(format!(
                "non-zero padding after a string of {len} bytes"
            )));
        }
        Ok((buf, kept < len))
    }

    /// A padded string within [`Limits::string`].
    pub async fn bytes(&mut self) -> Result<Vec<u8>> {
        self.bytes_max(self.limits.string).await
    }

    /// A string that must be UTF-8 (paths, names, settings).
    pub async fn string(&mut self) -> Result<String> {
        let b = self.bytes().await?;
        String::from_utf8(b).map_err(|e| {
            Error::protocol(format!(
                "string is not UTF-8: {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })
    }

    /// A count of items within [`Limits::items`], charged to the message.
    pub async fn count(&mut self, what: &str) -> Result<u64> {
        let n = self.u64().await?;
        if n > self.limits.items {
            return Err(Error::protocol(format!(
                "{what} of {n} items exceeds the limit of {}",
                self.limits.items
            )));
        }
        self.charge(n.saturating_mul(ITEM_COST), what)?;
        Ok(n)
    }

    /// A list of strings in order.
    pub async fn strings(&mut self) -> Result<Vec<String>> {
        let n = self.count("a string list").await?;
        let mut v = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            v.push(self.string().await?);
        }
        Ok(v)
    }

    /// A set of strings (Nix's `StringSet`, `StorePathSet`).
    pub async fn string_set(&mut self) -> Result<BTreeSet<String>> {
        Ok(self.strings().await?.into_iter().collect())
    }

    /// A map of strings to strings.
    pub async fn string_map(&mut self) -> Result<BTreeMap<String, String>> {
        let n = self.count("a string map").await?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.string().await?;
            let v = self.string().await?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

/// Encodes protocol values into a buffer sent by [`NixWrite::flush`].
pub struct NixWrite<W> {
    w: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> NixWrite<W> {
    pub fn new(w: W) -> Self {
        NixWrite { w, buf: Vec::new() }
    }

    /// The stream itself, for data written after a [`NixWrite::flush`].
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    pub fn into_inner(self) -> W {
        self.w
    }

    /// Send what was encoded and flush the stream.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.w.flush().await?;
        Ok(())
    }

    /// Bytes encoded and not yet sent.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// Encoders: also usable on a plain buffer (tests, sizes).
impl<W> NixWrite<W> {
    pub fn u64(&mut self, n: u64) -> &mut Self {
        fw::write_u64(&mut self.buf, n).expect("writing to a Vec");
        self
    }

    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.u64(b as u64)
    }

    pub fn bytes(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        fw::write_bytes(&mut self.buf, s.as_ref()).expect("writing to a Vec");
        self
    }

    pub fn strings<S: AsRef<[u8]>>(&mut self, items: impl IntoIterator<Item = S>) -> &mut Self {
        let items: Vec<S> = items.into_iter().collect();
        fw::write_strings(&mut self.buf, &items).expect("writing to a Vec");
        self
    }

    /// Bytes already encoded (a reply built with [`encode`]).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn string_map(&mut self, m: &BTreeMap<String, String>) -> &mut Self {
        self.u64(m.len() as u64);
        for (k, v) in m {
            self.bytes(k).bytes(v);
        }
        self
    }
}

/// Encode with `f` into bytes (tests and byte-vector comparisons).
pub fn encode(f: impl FnOnce(&mut NixWrite<()>)) -> Vec<u8> {
    let mut w = NixWrite {
        w: (),
        buf: Vec::new(),
    };
    f(&mut w);
    w.buf
}

#[cfg(test)]
mod tests;
