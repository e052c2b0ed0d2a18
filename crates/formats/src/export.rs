//! Export bundles: what `nix-store --export` and `guix archive --export`
//! write, a sequence of store items (NAR plus metadata) ending in a zero.
//!
//! ```text
//! repeat { u64 1, NAR, u64 0x4558494e ("NIXE"), str(path),
//!          str-list(references), str(deriver or ""),
//!          u64 1 + str(signature) | u64 0 }
//! u64 0
//! ```
//!
//! The signature slot is Guix's: a signature over sha256 of everything from
//! the NAR through the deriver. This module computes that digest while
//! streaming, in both directions, and leaves the keys to `ferry-trust`: the
//! writer takes a signing callback, the reader hands back the digest and the
//! signature bytes. Nothing is ever held whole in memory: the NAR is produced
//! by a callback on write and consumed by a callback on read (which restores
//! it, or validates it) before the item's path is even known.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::hash::Sha256Hash;
use crate::nar::{self, NarParseError};
use crate::wire;

/// Marker between an item's NAR and its metadata: "NIXE" little-endian.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;
/// Longest path, reference or deriver string accepted.
const MAX_PATH_LEN: u64 = 4096;
/// Most references accepted for one item.
const MAX_REFERENCES: u64 = 1 << 20;
/// Longest signature accepted.
const MAX_SIGNATURE_LEN: u64 = 64 * 1024;

/// The metadata that follows an item's NAR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemMeta {
    /// Absolute store path.
    pub path: String,
    /// Absolute store paths, sorted.
    pub references: Vec<String>,
    /// Absolute path of the deriving .drv, if any.
    pub deriver: Option<String>,
}

/// Turns the digest an item's signature covers into signature bytes.
pub type Signer<'a> = &'a dyn Fn(&Sha256Hash) -> io::Result<Vec<u8>>;

/// One item read from a bundle.
#[derive(Debug)]
pub struct ReadItem<T> {
    pub meta: ItemMeta,
    /// Raw signature bytes, if the item carried one.
    pub signature: Option<Vec<u8>>,
    /// sha256 of the NAR bytes alone.
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// sha256 of the NAR through the deriver: what a signature covers.
    pub signed_digest: Sha256Hash,
    /// What the NAR callback returned.
    pub nar_result: T,
}

/// Why a bundle could not be read.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("bundle truncated at byte {offset}: it ends inside item {item}; the sender stopped or the transfer was cut")]
    Truncated { offset: u64, item: usize },
    #[error("invalid bundle at byte {offset} (item {item}): {reason}")]
    Invalid {
        offset: u64,
        item: usize,
        reason: String,
    },
    #[error("item {item}: {source}")]
    Nar { item: usize, source: NarParseError },
    #[error("reading the bundle at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

// ---------------------------------------------------------------- writing

/// Writes a bundle item by item; [`ExportWriter::finish`] writes the end mark.
pub struct ExportWriter<W: Write> {
    w: W,
}

/// A writer that feeds a hash and counts as it forwards, so the signature
/// digest is computed without a second pass. The NAR hash comes from the
/// same pass: SHA-256 is sequential, so a copy of the running state taken
/// at the end of the NAR finalizes to the hash of the NAR alone.
struct SigningWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for SigningWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> ExportWriter<W> {
    pub fn new(w: W) -> Self {
        ExportWriter { w }
    }

    /// Write one item. `write_nar` must write exactly one NAR (e.g.
    /// [`nar::dump`] of the path); `sign`, if given, turns the digest of NAR
    /// through deriver into signature bytes. Returns that digest.
    pub fn write_item(
        &mut self,
        meta: &ItemMeta,
        write_nar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        sign: Option<Signer>,
    ) -> io::Result<Sha256Hash> {
        self.write_item_checked(meta, write_nar, |_, _| Ok(()), sign)
    }

    /// [`ExportWriter::write_item`], and before the item's metadata is
    /// written, `check_nar` gets the sha256 and size of the NAR just written
    /// (computed in the same pass as the signature digest); an error from
    /// it stops the item there, so nothing after the NAR is written and a
    /// reader sees the bundle end inside that item.
    pub fn write_item_checked(
        &mut self,
        meta: &ItemMeta,
        write_nar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        check_nar: impl FnOnce(&Sha256Hash, u64) -> io::Result<()>,
        sign: Option<Signer>,
    ) -> io::Result<Sha256Hash> {
        wire::write_u64(&mut self.w, 1)?;
        let mut sw = SigningWriter {
            inner: &mut self.w,
            hasher: Sha256::new(),
            count: 0,
        };
        write_nar(&mut sw)?;
        let nar_hash = Sha256Hash(sw.hasher.clone().finalize().into());
        check_nar(&nar_hash, sw.count)?;
        wire::write_u64(&mut sw, EXPORT_MAGIC)?;
        wire::write_bytes(&mut sw, meta.path.as_bytes())?;
        let mut refs: Vec<&str> = meta.references.iter().map(String::as_str).collect();
        refs.sort_unstable();
        refs.dedup();
        wire::write_strings(&mut sw, &refs)?;
        wire::write_bytes(&mut sw, meta.deriver.as_deref().unwrap_or("").as_bytes())?;
        let digest = Sha256Hash(sw.hasher.finalize().into());
        match sign {
            Some(sign) => {
                wire::write_u64(&mut self.w, 1)?;
                wire::write_bytes(&mut self.w, &sign(&digest)?)?;
            }
            None => wire::write_u64(&mut self.w, 0)?,
        }
        Ok(digest)
    }

    /// Write the end mark and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        wire::write_u64(&mut self.w, 0)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

// ---------------------------------------------------------------- reading

/// Reads a bundle item by item, with byte offsets for every error.
pub struct ExportReader<R: Read> {
    r: R,
    offset: u64,
    item: usize,
    done: bool,
}

/// Hashes what is read into the signature digest (everything from the NAR
/// through the deriver). The NAR hash is not a second pass over the same
/// bytes: SHA-256 is sequential, so a copy of this state taken at the end of
/// the NAR finalizes to the hash of the NAR alone.
struct TeeHasher<'a, R: Read> {
    inner: &'a mut R,
    offset: &'a mut u64,
    signed: Sha256,
}

impl<R: Read> Read for TeeHasher<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.signed.update(&buf[..n]);
        *self.offset += n as u64;
        Ok(n)
    }
}

struct Counting<'a, R: Read> {
    inner: &'a mut R,
    offset: &'a mut u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read> ExportReader<R> {
    pub fn new(r: R) -> Self {
        ExportReader {
            r,
            offset: 0,
            item: 0,
            done: false,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn io_err(&self, e: io::Error) -> ExportError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ExportError::Truncated {
                offset: self.offset,
                item: self.item,
            }
        } else {
            ExportError::Io {
                offset: self.offset,
                source: e,
            }
        }
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> ExportError {
        ExportError::Invalid {
            offset,
            item: self.item,
            reason: reason.into(),
        }
    }

    /// Read the next item, handing its NAR to `read_nar`, which must consume
    /// exactly one NAR (e.g. [`nar::restore`] into a temporary directory).
    /// Returns `None` at the end mark.
    pub fn next_item<T>(
        &mut self,
        read_nar: impl FnOnce(&mut dyn Read) -> Result<T, NarParseError>,
    ) -> Result<Option<ReadItem<T>>, ExportError> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mark = wire::read_u64(&mut Counting {
            inner: &mut self.r,
            offset: &mut self.offset,
        })
        .map_err(|e| self.io_err(e))?;
        match mark {
            0 => {
                self.done = true;
                return Ok(None);
            }
            1 => {}
            other => {
                return Err(self.invalid(
                    at,
                    format!("expected 1 (an item follows) or 0 (end), found {other}"),
                ))
            }
        }
        self.item += 1;
        let nar_start = self.offset;
        let mut tee = TeeHasher {
            inner: &mut self.r,
            offset: &mut self.offset,
            signed: Sha256::new(),
        };
        let nar_result = read_nar(&mut tee);
        let signed = tee.signed;
        let nar_result = nar_result.map_err(|source| match source {
            NarParseError::Invalid(nar::NarError {
                kind: nar::NarErrorKind::Truncated,
                offset,
            }) => ExportError::Truncated {
                offset: nar_start + offset,
                item: self.item,
            },
            source => ExportError::Nar {
                item: self.item,
                source,
            },
        })?;
        let nar_size = self.offset - nar_start;
        let nar_hash = Sha256Hash(signed.clone().finalize().into());

        let (meta, signed_hasher) = self.read_meta(signed)?;
        let signed_digest = Sha256Hash(signed_hasher.finalize().into());
        let mut c = Counting {
            inner: &mut self.r,
            offset: &mut self.offset,
        };
        let at = *c.offset;
        let has_sig = wire::read_u64(&mut c).map_err(|e| self.io_err(e))?;
        let signature = match has_sig {
            0 => None,
            1 => Some(self.string(MAX_SIGNATURE_LEN, "signature", None)?),
            other => {
                return Err(self.invalid(
                    at,
                    format!("expected 1 (signed) or 0 (unsigned), found {other}"),
                ))
            }
        };
        Ok(Some(ReadItem {
            meta,
            signature,
            nar_hash,
            nar_size,
            signed_digest,
            nar_result,
        }))
    }

    /// `NIXE path refs deriver`, hashed into the signature digest.
    fn read_meta(&mut self, mut signed: Sha256) -> Result<(ItemMeta, Sha256), ExportError> {
        let at = self.offset;
        let magic = self.u64(Some(&mut signed))?;
        if magic != EXPORT_MAGIC {
            return Err(self.invalid(
                at,
                format!(
                    "expected the marker 0x4558494e (\"NIXE\") after the NAR, found {magic:#x}"
                ),
            ));
        }
        let path = self.utf8(MAX_PATH_LEN, "store path", &mut signed)?;
        let at = self.offset;
        let count = self.u64(Some(&mut signed))?;
        if count > MAX_REFERENCES {
            return Err(self.invalid(
                at,
                format!("{count} references is more than the {MAX_REFERENCES} allowed"),
            ));
        }
        let mut references = Vec::new();
        for _ in 0..count {
            references.push(self.utf8(MAX_PATH_LEN, "reference", &mut signed)?);
        }
        let deriver = self.utf8(MAX_PATH_LEN, "deriver", &mut signed)?;
        Ok((
            ItemMeta {
                path,
                references,
                deriver: (!deriver.is_empty()).then_some(deriver),
            },
            signed,
        ))
    }

    fn u64(&mut self, hasher: Option<&mut Sha256>) -> Result<u64, ExportError> {
        let mut c = Counting {
            inner: &mut self.r,
            offset: &mut self.offset,
        };
        let n = wire::read_u64(&mut c).map_err(|e| self.io_err(e))?;
        if let Some(h) = hasher {
            h.update(n.to_le_bytes());
        }
        Ok(n)
    }

    fn string(
        &mut self,
        max: u64,
        what: &str,
        hasher: Option<&mut Sha256>,
    ) -> Result<Vec<u8>, ExportError> {
        let at = self.offset;
        let mut c = Counting {
            inner: &mut self.r,
            offset: &mut self.offset,
        };
        let s = match wire::read_bytes(&mut c, max) {
            Ok(s) => s,
            Err(wire::StringError::Io(e)) => return Err(self.io_err(e)),
            Err(e) => return Err(self.invalid(at, format!("{what}: {e}"))),
        };
        if let Some(h) = hasher {
            // Re-encode exactly what was read (padding is verified zero).
            let mut enc = Vec::with_capacity(s.len() + 16);
            wire::write_bytes(&mut enc, &s).expect("writing to a Vec");
            h.update(&enc);
        }
        Ok(s)
    }

    fn utf8(&mut self, max: u64, what: &str, hasher: &mut Sha256) -> Result<String, ExportError> {
        let at = self.offset;
        let s = self.string(max, what, Some(hasher))?;
        String::from_utf8(s).map_err(|_| self.invalid(at, format!("{what} is not valid UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, refs: &[&str]) -> ItemMeta {
        ItemMeta {
            path: path.into(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            deriver: None,
        }
    }

    fn bundle(items: &[(ItemMeta, &[u8])], sign: bool) -> Vec<u8> {
        let mut w = ExportWriter::new(Vec::new());
        let signer = |d: &Sha256Hash| Ok(d.as_bytes().to_vec());
        for (m, data) in items {
            w.write_item(
                m,
                |out| nar::dump_bytes(data, false, out).map(|_| ()),
                if sign { Some(&signer) } else { None },
            )
            .unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(b: &[u8]) -> Result<Vec<ReadItem<u64>>, ExportError> {
        let mut r = ExportReader::new(b);
        let mut out = Vec::new();
        while let Some(item) = r.next_item(|nar| nar::parse(nar, &mut nar::ValidateSink))? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn write_read_round_trip_with_signatures() {
        let a = meta("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", &[]);
        let mut b = meta(
            "/nix/store/5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz",
            &["/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"],
        );
        b.deriver = Some("/nix/store/4wvvbi4jwn0prsdxb7vs673qa5h9gr7x-foo.drv".into());
        let data = bundle(&[(a.clone(), b"bar"), (b.clone(), b"baz!")], true);
        let items = read_all(&data).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].meta, a);
        assert_eq!(items[1].meta, b);
        let mut nar_bar = Vec::new();
        nar::dump_bytes(b"bar", false, &mut nar_bar).unwrap();
        assert_eq!(items[0].nar_hash, Sha256Hash::digest(&nar_bar));
        assert_eq!(items[0].nar_size, nar_bar.len() as u64);
        for it in &items {
            assert_eq!(it.signature.as_deref(), Some(&it.signed_digest.0[..]));
        }
    }

    #[test]
    fn checked_items_see_the_nar_hash_and_can_stop_before_the_metadata() {
        let m = meta("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", &[]);
        let mut nar_bytes = Vec::new();
        nar::dump_bytes(b"some data", true, &mut nar_bytes).unwrap();
        let mut seen = None;
        let mut w = ExportWriter::new(Vec::new());
        let digest = w
            .write_item_checked(
                &m,
                |out| out.write_all(&nar_bytes),
                |h, n| {
                    seen = Some((*h, n));
                    Ok(())
                },
                None,
            )
            .unwrap();
        assert_eq!(
            seen,
            Some((Sha256Hash::digest(&nar_bytes), nar_bytes.len() as u64))
        );
        let data = w.finish().unwrap();
        let items = read_all(&data).unwrap();
        assert_eq!(items[0].signed_digest, digest);
        assert_eq!(items[0].nar_hash, Sha256Hash::digest(&nar_bytes));
        // Same bytes as the unchecked writer.
        let mut plain = ExportWriter::new(Vec::new());
        plain
            .write_item(&m, |out| out.write_all(&nar_bytes), None)
            .unwrap();
        assert_eq!(data, plain.finish().unwrap());

        let mut w = ExportWriter::new(Vec::new());
        let err = w
            .write_item_checked(
                &m,
                |out| out.write_all(&nar_bytes),
                |_, _| Err(io::Error::other("mismatch")),
                None,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "mismatch");
        let partial = w.w;
        assert_eq!(partial.len(), 8 + nar_bytes.len());
    }

    #[test]
    fn unsigned_layout_matches_nix() {
        let data = bundle(
            &[(
                meta("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", &[]),
                b"x",
            )],
            false,
        );
        // 8 (mark) + 120 (NAR of "x") + 8 (NIXE) + 8+48 (path) + 8 (no refs)
        // + 8 (empty deriver) + 8 (no signature) + 8 (end)
        assert_eq!(data.len(), 8 + 120 + 8 + 56 + 8 + 8 + 8 + 8);
        assert_eq!(&data[128..136], &EXPORT_MAGIC.to_le_bytes());
        assert!(read_all(&data).unwrap()[0].signature.is_none());
    }

    #[test]
    fn truncation_anywhere_is_reported_with_offset() {
        let data = bundle(
            &[(
                meta("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", &[]),
                b"hello",
            )],
            true,
        );
        for cut in 0..data.len() {
            match read_all(&data[..cut]) {
                Err(ExportError::Truncated { offset, .. }) => assert!(offset <= cut as u64),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_markers_are_refused() {
        let mut data = bundle(
            &[(
                meta("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", &[]),
                b"x",
            )],
            false,
        );
        data[128] ^= 1;
        let err = read_all(&data).unwrap_err();
        assert!(err.to_string().contains("NIXE"), "{err}");
        let mut data2 = data.clone();
        data2[128] ^= 1;
        data2[0] = 2;
        assert!(matches!(
            read_all(&data2),
            Err(ExportError::Invalid { offset: 0, .. })
        ));
    }
}
