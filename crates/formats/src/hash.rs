//! SHA-256 digests and the ways Nix spells them.
//!
//! Nix shows the same digest as base16 (`nix-hash --type sha256`), nix32
//! (`--base32`, store paths) and typed strings such as `sha256:<nix32>`
//! (path-info, the database). [`Sha256Hash::parse`] accepts each form a user
//! may paste, and [`HashingWriter`] hashes and counts a stream in one pass.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::nix32;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashParseError {
    #[error("unsupported hash algorithm {0:?}: only sha256 is supported")]
    Algorithm(String),
    #[error("hash {0:?} is neither 64 base16 digits nor 52 nix32 digits")]
    Form(String),
    #[error("hash {0:?}: {1}")]
    Nix32(String, nix32::DecodeError),
}

impl Sha256Hash {
    /// Digest of a byte string.
    pub fn digest(data: impl AsRef<[u8]>) -> Self {
        Sha256Hash(Sha256::digest(data.as_ref()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_base16(&self) -> String {
        hex::encode(self.0)
    }

    /// 52 nix32 digits.
    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.0)
    }

    /// `sha256:<nix32>`, the form of `narHash` in Nix's database and path-info.
    pub fn to_typed_nix32(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// `sha256:<hex>`.
    pub fn to_typed_base16(&self) -> String {
        format!("sha256:{}", self.to_base16())
    }

    /// Parse `[sha256:]HEX64` or `[sha256:]NIX32_52`.
    pub fn parse(s: &str) -> Result<Self, HashParseError> {
        let body = match s.split_once(':') {
            Some(("sha256", body)) => body,
            Some((algo, _)) => return Err(HashParseError::Algorithm(algo.to_string())),
            None => s,
        };
        let mut out = [0u8; 32];
        match body.len() {
            64 => {
                hex::decode_to_slice(body, &mut out)
                    .map_err(|_| HashParseError::Form(s.to_string()))?;
            }
            52 => {
                let v = nix32::decode_len(body, 32)
                    .map_err(|e| HashParseError::Nix32(s.to_string(), e))?;
                out.copy_from_slice(&v);
            }
            _ => return Err(HashParseError::Form(s.to_string())),
        }
        Ok(Sha256Hash(out))
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_base16())
    }
}

impl fmt::Display for Sha256Hash {
    /// Displays as `sha256:<nix32>`, the form Nix users see most.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_typed_nix32())
    }
}

/// A writer that hashes and counts what passes through it, forwarding to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and byte count of everything written, and the inner writer.
    pub fn finish(self) -> (Sha256Hash, u64, W) {
        (
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> (Sha256Hash, u64, R) {
        (
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_every_form() {
        let h = Sha256Hash::digest(b"abc");
        assert_eq!(
            h.to_base16(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            h.to_nix32(),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        assert_eq!(
            h.to_string(),
            "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        for form in [
            h.to_base16(),
            h.to_nix32(),
            h.to_typed_nix32(),
            h.to_typed_base16(),
        ] {
            assert_eq!(Sha256Hash::parse(&form).unwrap(), h, "{form}");
        }
        assert!(matches!(
            Sha256Hash::parse("md5:abc"),
            Err(HashParseError::Algorithm(_))
        ));
        assert!(matches!(
            Sha256Hash::parse("sha256:abc"),
            Err(HashParseError::Form(_))
        ));
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (h, n, inner) = w.finish();
        assert_eq!(h, Sha256Hash::digest(b"abc"));
        assert_eq!(n, 3);
        assert_eq!(inner, b"abc");
    }
}
