//! NAR, the Nix ARchive: a canonical, deterministic serialization of a file
//! tree (regular files with an executable bit, symlinks, directories).
//!
//! Everything here streams: [`dump()`] writes a tree without holding any file
//! whole, and [`parse()`] drives a [`NarSink`] while reading, so a multi-GiB
//! archive is restored (or validated, or hashed) in constant memory.
//!
//! The reader is strict, because a NAR comes from the network as often as from
//! disk: it refuses every malformed case (unsorted or duplicate entries,
//! unsafe names, non-zero padding, oversized tokens, excessive depth) with a
//! [`NarError`] that names the byte offset and the reason. [`restore()`] only
//! ever creates new entries under the directory it creates, and opens files
//! with `O_NOFOLLOW | O_EXCL`, so an archive cannot write outside its target
//! nor make restoring follow a symlink.
//!
//! One file per concern: `dump.rs` writes archives, `parse.rs` reads and
//! checks them (driving a [`NarSink`]), `restore.rs` turns one into a tree
//! on disk; this file holds the format's limits and errors.

mod dump;
mod parse;
mod restore;
#[cfg(test)]
mod tests;

use std::io;

use thiserror::Error;

pub use dump::{dump, dump_bytes};
pub use parse::{parse, validate, EntryPath, NarSink, ValidateSink};
pub use restore::{restore, RestoreSink};

/// The magic string every NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";
/// Longest entry name accepted (a file name on Linux file systems).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target accepted (PATH_MAX - 1).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Deepest directory nesting accepted.
pub const MAX_DEPTH: usize = 1024;
/// Longest structural token ("(", "type", "directory", ...) read before
/// deciding the input is garbage.
const MAX_TOKEN_LEN: u64 = 64;
/// Copy buffer of restore: large enough that syscalls amortize.
const COPY_BUF: usize = 1 << 20;
/// Read/write chunk of [`dump()`]: 64 KiB, the default pipe capacity on Linux
/// and the chunk Nix uses. Larger chunks gain nothing for hashing (SHA-256 is
/// the bottleneck) and make writes into a pipe slower: a 1 MiB write into a
/// 64 KiB pipe blocks repeatedly mid-write and leaves the cache cold
/// (`ferry store dump | cat`: ~0.95 s for 1 GiB with 1 MiB, ~0.7 s with 64 KiB).
const DUMP_BUF: usize = 64 << 10;

/// Why a NAR was refused.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum NarErrorKind {
    #[error("not a NAR: the archive must start with \"nix-archive-1\"")]
    BadMagic,
    #[error("archive ends early (truncated)")]
    Truncated,
    #[error("expected {expected}, found {found}")]
    Unexpected {
        expected: &'static str,
        found: String,
    },
    #[error("string of {len} bytes is longer than the {max} allowed here")]
    TooLong { len: u64, max: u64 },
    #[error("non-zero padding bytes")]
    BadPadding,
    #[error(
        "invalid entry name {0}: names may not be empty, \".\", \"..\", or contain '/' or NUL"
    )]
    BadName(String),
    #[error("entry {name} is not after {previous}: directory entries must be sorted and unique")]
    Unsorted { previous: String, name: String },
    #[error("invalid symlink target {0}: it must be non-empty and contain no NUL")]
    BadTarget(String),
    #[error("the executable flag must be followed by an empty string, found {0}")]
    BadExecutable(String),
    #[error("directories nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("trailing data after the end of the archive")]
    TrailingData,
    #[error("{0}")]
    Sink(String),
}

/// A refused NAR: where, and why.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[error("invalid NAR at byte {offset}: {kind}")]
pub struct NarError {
    pub offset: u64,
    pub kind: NarErrorKind,
}

/// Errors from [`parse()`]: the archive was malformed, or reading it or
/// applying it to the sink failed.
#[derive(Debug, Error)]
pub enum NarParseError {
    #[error(transparent)]
    Invalid(#[from] NarError),
    #[error("reading the archive at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("restoring {path}: {source}")]
    Sink { path: String, source: io::Error },
}

impl NarParseError {
    /// The byte offset where parsing stopped, when known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            NarParseError::Invalid(e) => Some(e.offset),
            NarParseError::Read { offset, .. } => Some(*offset),
            NarParseError::Sink { .. } => None,
        }
    }
}

impl From<NarParseError> for io::Error {
    fn from(e: NarParseError) -> io::Error {
        match e {
            NarParseError::Read { source, .. } if source.kind() != io::ErrorKind::Other => {
                io::Error::new(source.kind(), source.to_string())
            }
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
