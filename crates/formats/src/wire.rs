//! The wire primitives shared by NAR, export bundles and (later) the daemon
//! protocol: little-endian u64s and length-prefixed strings padded to 8 bytes.

use std::io::{self, Read, Write};

/// Zero bytes needed after `len` bytes to reach a multiple of 8.
pub const fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

pub fn write_u64(w: &mut impl Write, n: u64) -> io::Result<()> {
    w.write_all(&n.to_le_bytes())
}

/// `str(s)`: length, bytes, zero padding.
pub fn write_bytes(w: &mut impl Write, s: &[u8]) -> io::Result<()> {
    write_u64(w, s.len() as u64)?;
    w.write_all(s)?;
    w.write_all(&[0u8; 8][..padding(s.len() as u64)])
}

/// A string list: count, then each string.
pub fn write_strings<S: AsRef<[u8]>>(w: &mut impl Write, items: &[S]) -> io::Result<()> {
    write_u64(w, items.len() as u64)?;
    for s in items {
        write_bytes(w, s.as_ref())?;
    }
    Ok(())
}

pub fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Why a length-prefixed string could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StringError {
    #[error("string of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u64, max: u64 },
    #[error("non-zero padding after a string of {len} bytes")]
    Padding { len: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Read `str(s)` of at most `max` bytes, checking that the padding is zero.
pub fn read_bytes(r: &mut impl Read, max: u64) -> Result<Vec<u8>, StringError> {
    let len = read_u64(r)?;
    if len > max {
        return Err(StringError::TooLong { len, max });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    let mut pad = [0u8; 8];
    let p = padding(len);
    r.read_exact(&mut pad[..p])?;
    if pad[..p].iter().any(|&b| b != 0) {
        return Err(StringError::Padding { len });
    }
    Ok(buf)
}
