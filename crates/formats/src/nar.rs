//! NAR, the Nix ARchive: a canonical, deterministic serialization of a file
//! tree (regular files with an executable bit, symlinks, directories).
//!
//! Everything here streams: [`dump`] writes a tree without holding any file
//! whole, and [`parse`] drives a [`NarSink`] while reading, so a multi-GiB
//! archive is restored (or validated, or hashed) in constant memory.
//!
//! The reader is strict, because a NAR comes from the network as often as from
//! disk: it refuses every malformed case (unsorted or duplicate entries,
//! unsafe names, non-zero padding, oversized tokens, excessive depth) with a
//! [`NarError`] that names the byte offset and the reason. [`restore`] only
//! ever creates new entries under the directory it creates, and opens files
//! with `O_NOFOLLOW | O_EXCL`, so an archive cannot write outside its target
//! nor make restoring follow a symlink.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::wire::{self, padding};

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
/// Read/write chunk of [`dump`]: 64 KiB, the default pipe capacity on Linux
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

/// Errors from [`parse`]: the archive was malformed, or reading it or
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

// ---------------------------------------------------------------- writing

/// Write the NAR of the file tree at `path` (not following a symlink at
/// `path` itself). Returns the number of bytes written.
pub fn dump<W: Write + ?Sized>(path: &Path, w: &mut W) -> io::Result<u64> {
    let mut w = CountingWriter { inner: w, count: 0 };
    let mut buf = vec![0u8; DUMP_BUF];
    wire::write_bytes(&mut w, MAGIC)?;
    dump_node(path, &mut w, &mut buf)?;
    Ok(w.count)
}

/// Write the NAR of a single regular file holding `data` (how text files such
/// as .drv files are archived).
pub fn dump_bytes<W: Write + ?Sized>(data: &[u8], executable: bool, w: &mut W) -> io::Result<u64> {
    let mut w = CountingWriter { inner: w, count: 0 };
    wire::write_bytes(&mut w, MAGIC)?;
    write_tokens(&mut w, &[b"(", b"type", b"regular"])?;
    if executable {
        write_tokens(&mut w, &[b"executable", b""])?;
    }
    write_tokens(&mut w, &[b"contents"])?;
    wire::write_bytes(&mut w, data)?;
    write_tokens(&mut w, &[b")"])?;
    Ok(w.count)
}

fn write_tokens(w: &mut impl Write, tokens: &[&[u8]]) -> io::Result<()> {
    tokens.iter().try_for_each(|t| wire::write_bytes(w, t))
}

/// Write the node at `path`. Iterative (a stack of open directories with
/// their remaining entries, on the heap), so a deep tree cannot overflow the
/// thread's stack; a directory [`MAX_DEPTH`] levels down is refused, as the
/// parser refuses it, so that nothing enters a store that could not be
/// restored in another.
fn dump_node(path: &Path, w: &mut impl Write, buf: &mut [u8]) -> io::Result<()> {
    // Each open directory: its path and its entries still to write, reversed.
    let mut stack: Vec<(PathBuf, Vec<OsString>)> = Vec::new();
    let mut next: Option<PathBuf> = Some(path.to_path_buf());
    loop {
        if let Some(path) = next.take() {
            match dump_one(&path, stack.len(), w, buf)? {
                Some(names) => stack.push((path, names)),
                // A file or symlink inside a directory: close its entry.
                None if !stack.is_empty() => write_tokens(w, &[b")"])?,
                None => {}
            }
        }
        let Some((dir, names)) = stack.last_mut() else {
            return Ok(());
        };
        match names.pop() {
            Some(name) => {
                write_tokens(w, &[b"entry", b"(", b"name", name.as_bytes(), b"node"])?;
                next = Some(dir.join(&name));
            }
            None => {
                // The directory's own ")" and, unless it is the root, the
                // entry's ")".
                stack.pop();
                write_tokens(w, &[b")"])?;
                if !stack.is_empty() {
                    write_tokens(w, &[b")"])?;
                }
            }
        }
    }
}

/// Write a file or symlink whole, or a directory's header: then its
/// entries (sorted, reversed) are returned and the caller writes them and
/// the closing ")".
fn dump_one(
    path: &Path,
    depth: usize,
    w: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<Option<Vec<OsString>>> {
    let meta = fs::symlink_metadata(path).map_err(|e| with_path(e, path))?;
    let ft = meta.file_type();
    write_tokens(w, &[b"(", b"type"])?;
    if ft.is_file() {
        write_tokens(w, &[b"regular"])?;
        if meta.permissions().mode() & 0o100 != 0 {
            write_tokens(w, &[b"executable", b""])?;
        }
        write_tokens(w, &[b"contents"])?;
        dump_contents(path, meta.len(), w, buf)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| with_path(e, path))?;
        write_tokens(w, &[b"symlink", b"target", target.as_os_str().as_bytes()])?;
    } else if ft.is_dir() {
        if depth >= MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}...: directories nested deeper than {MAX_DEPTH} levels; no store accepts such a tree",
                    path.display().to_string().chars().take(120).collect::<String>()
                ),
            ));
        }
        write_tokens(w, &[b"directory"])?;
        let mut names: Vec<OsString> = fs::read_dir(path)
            .map_err(|e| with_path(e, path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| with_path(e, path))?;
        names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        return Ok(Some(names));
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: cannot archive a special file (device, socket or FIFO); only regular files, directories and symlinks can enter the store",
                path.display()
            ),
        ));
    }
    write_tokens(w, &[b")"])?;
    Ok(None)
}

fn dump_contents(path: &Path, size: u64, w: &mut impl Write, buf: &mut [u8]) -> io::Result<()> {
    let mut f = fs::File::open(path).map_err(|e| with_path(e, path))?;
    wire::write_u64(w, size)?;
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).map_err(|e| with_path(e, path))?;
        if n == 0 {
            return Err(changed_while_reading(path));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if f.read(&mut buf[..1])? != 0 {
        return Err(changed_while_reading(path));
    }
    w.write_all(&[0u8; 8][..padding(size)])
}

fn changed_while_reading(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{}: file changed size while being archived; retry when nothing is writing to it",
        path.display()
    ))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

struct CountingWriter<'a, W: ?Sized> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write + ?Sized> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------- reading

/// The position of an entry inside the archive: names from the root down.
/// The root node has no components.
pub type EntryPath<'a> = &'a [Vec<u8>];

/// Receives the nodes of a NAR as [`parse`] reads them, parents first.
pub trait NarSink {
    fn directory(&mut self, path: EntryPath) -> io::Result<()>;
    /// `contents` yields exactly `size` bytes; the sink may leave some unread.
    fn file(
        &mut self,
        path: EntryPath,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()>;
    fn symlink(&mut self, path: EntryPath, target: &[u8]) -> io::Result<()>;
}

/// A sink that only checks the archive.
pub struct ValidateSink;

impl NarSink for ValidateSink {
    fn directory(&mut self, _: EntryPath) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: EntryPath, _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        io::copy(contents, &mut io::sink()).map(|_| ())
    }
    fn symlink(&mut self, _: EntryPath, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Read one NAR from `r`, consuming exactly its bytes and no more, and feed
/// its nodes to `sink`. Returns the archive's size in bytes.
pub fn parse<R: Read + ?Sized>(r: &mut R, sink: &mut impl NarSink) -> Result<u64, NarParseError> {
    let mut p = Parser {
        r: CountingReader { inner: r, count: 0 },
        path: Vec::new(),
    };
    let start = p.r.count;
    let magic = p.token(MAX_TOKEN_LEN)?;
    if magic != MAGIC {
        return Err(NarError {
            offset: start,
            kind: NarErrorKind::BadMagic,
        }
        .into());
    }
    p.node(sink)?;
    Ok(p.r.count)
}

/// Check that `r` holds exactly one well-formed NAR and nothing after it.
pub fn validate<R: Read + ?Sized>(r: &mut R) -> Result<u64, NarParseError> {
    let size = parse(r, &mut ValidateSink)?;
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(size),
        Ok(_) => Err(NarError {
            offset: size,
            kind: NarErrorKind::TrailingData,
        }
        .into()),
        Err(source) => Err(NarParseError::Read {
            offset: size,
            source,
        }),
    }
}

struct CountingReader<'a, R: ?Sized> {
    inner: &'a mut R,
    count: u64,
}

impl<R: Read + ?Sized> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

struct Parser<'a, R: ?Sized> {
    r: CountingReader<'a, R>,
    path: Vec<Vec<u8>>,
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

impl<R: Read + ?Sized> Parser<'_, R> {
    fn invalid(&self, offset: u64, kind: NarErrorKind) -> NarParseError {
        NarError { offset, kind }.into()
    }

    fn io_error(&self, source: io::Error) -> NarParseError {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            self.invalid(self.r.count, NarErrorKind::Truncated)
        } else {
            NarParseError::Read {
                offset: self.r.count,
                source,
            }
        }
    }

    fn sink_error(&self, source: io::Error) -> NarParseError {
        let path: Vec<_> = self
            .path
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect();
        NarParseError::Sink {
            path: format!("/{}", path.join("/")),
            source,
        }
    }

    fn u64(&mut self) -> Result<u64, NarParseError> {
        wire::read_u64(&mut self.r).map_err(|e| self.io_error(e))
    }

    /// Read a string of at most `max` bytes.
    fn token(&mut self, max: u64) -> Result<Vec<u8>, NarParseError> {
        let start = self.r.count;
        match wire::read_bytes(&mut self.r, max) {
            Ok(v) => Ok(v),
            Err(wire::StringError::TooLong { len, max }) => {
                Err(self.invalid(start, NarErrorKind::TooLong { len, max }))
            }
            Err(wire::StringError::Padding { len }) => {
                Err(self.invalid(start + 8 + len, NarErrorKind::BadPadding))
            }
            Err(wire::StringError::Io(e)) => Err(self.io_error(e)),
        }
    }

    fn expect(&mut self, want: &'static str) -> Result<(), NarParseError> {
        let start = self.r.count;
        let got = self.token(MAX_TOKEN_LEN)?;
        if got == want.as_bytes() {
            Ok(())
        } else {
            Err(self.invalid(
                start,
                NarErrorKind::Unexpected {
                    expected: want,
                    found: show(&got),
                },
            ))
        }
    }

    /// Parse one node and everything below it. Iterative, with an explicit
    /// stack of open directories, so nesting depth costs heap, not stack.
    fn node(&mut self, sink: &mut impl NarSink) -> Result<(), NarParseError> {
        // For each open directory: the name of its last entry.
        let mut dirs: Vec<Option<Vec<u8>>> = Vec::new();
        loop {
            if self.node_start(sink)? {
                dirs.push(None);
            } else if dirs.is_empty() {
                return Ok(());
            } else {
                self.close_entry(&mut dirs)?;
            }
            // Read entries of the innermost directory until one opens a node.
            loop {
                let start = self.r.count;
                let tag = self.token(MAX_TOKEN_LEN)?;
                match tag.as_slice() {
                    b")" => {
                        dirs.pop();
                        if dirs.is_empty() {
                            return Ok(());
                        }
                        self.close_entry(&mut dirs)?;
                    }
                    b"entry" => {
                        let previous = dirs.last().and_then(|p| p.as_deref());
                        let name = self.entry_name(previous)?;
                        self.path.push(name);
                        break;
                    }
                    other => {
                        return Err(self.invalid(
                            start,
                            NarErrorKind::Unexpected {
                                expected: "\"entry\" or \")\"",
                                found: show(other),
                            },
                        ))
                    }
                }
            }
        }
    }

    /// Read `( type KIND`. A file or symlink is read whole, to its `)`; a
    /// directory is only opened. Returns whether a directory was opened.
    fn node_start(&mut self, sink: &mut impl NarSink) -> Result<bool, NarParseError> {
        self.expect("(")?;
        self.expect("type")?;
        let start = self.r.count;
        let kind = self.token(MAX_TOKEN_LEN)?;
        match kind.as_slice() {
            b"regular" => self.regular(sink)?,
            b"symlink" => self.symlink(sink)?,
            b"directory" => {
                if self.path.len() >= MAX_DEPTH {
                    return Err(self.invalid(self.r.count, NarErrorKind::TooDeep));
                }
                sink.directory(&self.path).map_err(|e| self.sink_error(e))?;
                return Ok(true);
            }
            other => {
                return Err(self.invalid(
                    start,
                    NarErrorKind::Unexpected {
                        expected: "\"regular\", \"symlink\" or \"directory\"",
                        found: show(other),
                    },
                ))
            }
        }
        Ok(false)
    }

    /// The `)` closing a directory entry; its name becomes the one the next
    /// entry must sort after.
    fn close_entry(&mut self, dirs: &mut [Option<Vec<u8>>]) -> Result<(), NarParseError> {
        self.expect(")")?;
        if let Some(last) = dirs.last_mut() {
            *last = self.path.pop();
        }
        Ok(())
    }

    /// `( name NAME node`, with NAME checked for safety and order.
    fn entry_name(&mut self, previous: Option<&[u8]>) -> Result<Vec<u8>, NarParseError> {
        self.expect("(")?;
        self.expect("name")?;
        let at = self.r.count;
        let name = match self.token(MAX_NAME_LEN) {
            Err(NarParseError::Invalid(NarError {
                kind: NarErrorKind::TooLong { len, .. },
                ..
            })) => {
                return Err(self.invalid(
                    at,
                    NarErrorKind::BadName(format!("of {len} bytes (the limit is {MAX_NAME_LEN})")),
                ));
            }
            other => other?,
        };
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(self.invalid(at, NarErrorKind::BadName(show(&name))));
        }
        if let Some(prev) = previous {
            if name.as_slice() <= prev {
                return Err(self.invalid(
                    at,
                    NarErrorKind::Unsorted {
                        previous: show(prev),
                        name: show(&name),
                    },
                ));
            }
        }
        self.expect("node")?;
        Ok(name)
    }

    fn regular(&mut self, sink: &mut impl NarSink) -> Result<(), NarParseError> {
        let start = self.r.count;
        let mut tag = self.token(MAX_TOKEN_LEN)?;
        let mut executable = false;
        if tag == b"executable" {
            let at = self.r.count;
            let flag = self.token(MAX_TOKEN_LEN)?;
            if !flag.is_empty() {
                return Err(self.invalid(at, NarErrorKind::BadExecutable(show(&flag))));
            }
            executable = true;
            let at = self.r.count;
            tag = self.token(MAX_TOKEN_LEN)?;
            if tag != b"contents" {
                return Err(self.invalid(
                    at,
                    NarErrorKind::Unexpected {
                        expected: "\"contents\"",
                        found: show(&tag),
                    },
                ));
            }
        } else if tag != b"contents" {
            return Err(self.invalid(
                start,
                NarErrorKind::Unexpected {
                    expected: "\"contents\" or \"executable\"",
                    found: show(&tag),
                },
            ));
        }
        let size = self.u64()?;
        let mut contents = (&mut self.r).take(size);
        let sink_result = sink.file(&self.path, executable, size, &mut contents);
        // Drain what the sink left, so truncation is detected either way.
        let drained = io::copy(&mut contents, &mut io::sink());
        let missing = contents.limit();
        if missing > 0 {
            return Err(self.invalid(self.r.count, NarErrorKind::Truncated));
        }
        drained.map_err(|e| self.io_error(e))?;
        sink_result.map_err(|e| self.sink_error(e))?;
        let pad_at = self.r.count;
        let mut pad = [0u8; 8];
        let p = padding(size);
        self.r
            .read_exact(&mut pad[..p])
            .map_err(|e| self.io_error(e))?;
        if pad[..p].iter().any(|&b| b != 0) {
            return Err(self.invalid(pad_at, NarErrorKind::BadPadding));
        }
        self.expect(")")
    }

    fn symlink(&mut self, sink: &mut impl NarSink) -> Result<(), NarParseError> {
        self.expect("target")?;
        let at = self.r.count;
        let target = self.token(MAX_TARGET_LEN)?;
        if target.is_empty() || target.contains(&0) {
            return Err(self.invalid(at, NarErrorKind::BadTarget(show(&target))));
        }
        sink.symlink(&self.path, &target)
            .map_err(|e| self.sink_error(e))?;
        self.expect(")")
    }
}

// ---------------------------------------------------------------- restoring

/// Restores a NAR as a new tree at `target`, which must not exist yet.
pub struct RestoreSink {
    target: PathBuf,
    buf: Vec<u8>,
}

impl RestoreSink {
    pub fn new(target: impl Into<PathBuf>) -> Self {
        RestoreSink {
            target: target.into(),
            buf: vec![0u8; COPY_BUF],
        }
    }

    fn path_of(&self, path: EntryPath) -> PathBuf {
        let mut p = self.target.clone();
        for c in path {
            p.push(OsStr::from_bytes(c));
        }
        p
    }
}

impl NarSink for RestoreSink {
    fn directory(&mut self, path: EntryPath) -> io::Result<()> {
        fs::create_dir(self.path_of(path))
    }

    fn file(
        &mut self,
        path: EntryPath,
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o777 } else { 0o666 })
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .open(self.path_of(path))?;
        loop {
            let n = contents.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&self.buf[..n])?;
        }
        Ok(())
    }

    fn symlink(&mut self, path: EntryPath, target: &[u8]) -> io::Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.path_of(path))
    }
}

/// Open flags not exposed by std (values for Linux, all architectures Ferry
/// supports).
mod libc_flags {
    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    pub const O_NOFOLLOW: i32 = 0o100000;
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    pub const O_NOFOLLOW: i32 = 0o400000;
    pub const O_CLOEXEC: i32 = 0o2000000;
}

/// Restore the NAR read from `r` as a new tree at `target` (which must not
/// exist). On error, whatever was partly restored is left for the caller to
/// remove. Returns the archive size.
pub fn restore<R: Read + ?Sized>(r: &mut R, target: &Path) -> Result<u64, NarParseError> {
    parse(r, &mut RestoreSink::new(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256Hash;

    fn nar_of_bytes(data: &[u8], exec: bool) -> Vec<u8> {
        let mut v = Vec::new();
        dump_bytes(data, exec, &mut v).unwrap();
        v
    }

    #[test]
    fn vector_x() {
        let v = nar_of_bytes(b"x", false);
        let want = hex::decode(
            concat!(
                "0d00000000000000 6e69782d61726368 6976652d31000000 0100000000000000",
                "2800000000000000 0400000000000000 7479706500000000 0700000000000000",
                "726567756c617200 0800000000000000 636f6e74656e7473 0100000000000000",
                "7800000000000000 0100000000000000 2900000000000000"
            )
            .replace(' ', ""),
        )
        .unwrap();
        assert_eq!(v.len(), 120);
        assert_eq!(v, want);
        assert_eq!(
            Sha256Hash::digest(&v).to_nix32(),
            "0rsv7kag23nvdpy4500mv2m0b4sm4c8fkgqrfsrmv1kgk77bi81c"
        );
    }

    #[test]
    fn vector_hello_world_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hello");
        fs::write(&f, "Hello World!").unwrap();
        let mut v = Vec::new();
        assert_eq!(dump(&f, &mut v).unwrap(), 128);
        assert_eq!(v.len(), 128);
        assert_eq!(
            Sha256Hash::digest(&v).to_nix32(),
            "0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3"
        );
        assert_eq!(validate(&mut v.as_slice()).unwrap(), 128);
    }

    fn sample_tree(root: &Path) {
        fs::create_dir(root).unwrap();
        fs::write(root.join("b"), "bee").unwrap();
        fs::write(root.join("a"), "").unwrap();
        fs::create_dir_all(root.join("d/empty")).unwrap();
        fs::write(root.join("d/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("d/run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../nowhere", root.join("d/dangling")).unwrap();
        std::os::unix::fs::symlink("b", root.join("link")).unwrap();
        fs::write(root.join("ünï cødé"), vec![7u8; 100_001]).unwrap();
    }

    #[test]
    fn dump_restore_dump_is_identity() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        sample_tree(&src);
        let mut a = Vec::new();
        dump(&src, &mut a).unwrap();
        let out = dir.path().join("out");
        assert_eq!(restore(&mut a.as_slice(), &out).unwrap(), a.len() as u64);
        let mut b = Vec::new();
        dump(&out, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(fs::symlink_metadata(out.join("d/dangling"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_ne!(
            fs::metadata(out.join("d/run"))
                .unwrap()
                .permissions()
                .mode()
                & 0o100,
            0
        );
    }

    #[test]
    fn restore_refuses_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let a = nar_of_bytes(b"x", false);
        let err = restore(&mut a.as_slice(), dir.path()).unwrap_err();
        assert!(matches!(err, NarParseError::Sink { .. }), "{err}");
    }

    /// Build a NAR by hand from a token list, for malformed cases.
    fn tokens(ts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for t in ts {
            wire::write_bytes(&mut v, t).unwrap();
        }
        v
    }

    fn dir_nar(names: &[&[u8]]) -> Vec<u8> {
        let mut v = tokens(&[MAGIC, b"(", b"type", b"directory"]);
        for n in names {
            v.extend(tokens(&[
                b"entry", b"(", b"name", n, b"node", b"(", b"type", b"symlink", b"target", b"t",
                b")", b")",
            ]));
        }
        v.extend(tokens(&[b")"]));
        v
    }

    fn kind_of(nar: &[u8]) -> NarErrorKind {
        match validate(&mut &nar[..]) {
            Err(NarParseError::Invalid(e)) => e.kind,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_archives_with_offsets() {
        assert!(validate(&mut dir_nar(&[b"a", b"b"]).as_slice()).is_ok());
        assert!(matches!(
            kind_of(&dir_nar(&[b"b", b"a"])),
            NarErrorKind::Unsorted { .. }
        ));
        assert!(matches!(
            kind_of(&dir_nar(&[b"a", b"a"])),
            NarErrorKind::Unsorted { .. }
        ));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(
                matches!(kind_of(&dir_nar(&[bad])), NarErrorKind::BadName(_)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            kind_of(&dir_nar(&[&[b'n'; 256]])),
            NarErrorKind::BadName(_)
        ));
        assert_eq!(kind_of(b"nix"), NarErrorKind::Truncated);
        assert_eq!(
            kind_of(&tokens(&[b"nix-archive-2"])),
            NarErrorKind::BadMagic
        );
        // executable after contents
        let v = tokens(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b"executable",
            b"",
            b")",
        ]);
        assert!(matches!(kind_of(&v), NarErrorKind::Unexpected { .. }));
        // executable with a value
        let v = tokens(&[MAGIC, b"(", b"type", b"regular", b"executable", b"1"]);
        assert!(matches!(kind_of(&v), NarErrorKind::BadExecutable(_)));
        // bad padding in contents
        let mut v = nar_of_bytes(b"x", false);
        v[97] = 1;
        let err = validate(&mut v.as_slice()).unwrap_err();
        assert_eq!(err.offset(), Some(97));
        assert!(err.to_string().contains("padding"), "{err}");
        // truncation at every length reports Truncated, never panics
        let full = nar_of_bytes(b"Hello World!", true);
        for cut in 0..full.len() {
            let err = validate(&mut &full[..cut]).unwrap_err();
            assert!(
                matches!(&err, NarParseError::Invalid(NarError { kind: NarErrorKind::Truncated, offset }) if *offset <= cut as u64),
                "cut {cut}: {err}"
            );
        }
        // trailing data
        let mut v = nar_of_bytes(b"x", false);
        v.extend([0u8; 8]);
        assert_eq!(kind_of(&v), NarErrorKind::TrailingData);
        // empty symlink target
        let v = tokens(&[MAGIC, b"(", b"type", b"symlink", b"target", b"", b")"]);
        assert!(matches!(kind_of(&v), NarErrorKind::BadTarget(_)));
        // an absurd token length is refused before allocating
        let mut v = tokens(&[MAGIC]);
        v.extend(u64::MAX.to_le_bytes());
        assert!(matches!(kind_of(&v), NarErrorKind::TooLong { .. }));
    }

    #[test]
    fn restore_never_escapes_the_target() {
        let dir = tempfile::tempdir().unwrap();
        // A symlink named "a" pointing outside, then an entry "a" again would
        // be a duplicate: refused before anything is written through it.
        let mut v = tokens(&[MAGIC, b"(", b"type", b"directory"]);
        v.extend(tokens(&[
            b"entry", b"(", b"name", b"a", b"node", b"(", b"type", b"symlink", b"target",
        ]));
        v.extend(tokens(&[
            dir.path().to_str().unwrap().as_bytes(),
            b")",
            b")",
        ]));
        v.extend(tokens(&[
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"pwned",
            b")",
            b")",
            b")",
        ]));
        let out = dir.path().join("out");
        assert!(restore(&mut v.as_slice(), &out).is_err());
        assert!(fs::read_dir(dir.path())
            .unwrap()
            .all(|e| e.unwrap().file_name() == "out"));
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = tokens(&[MAGIC]);
        for _ in 0..=MAX_DEPTH {
            v.extend(tokens(&[
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"d",
                b"node",
            ]));
        }
        assert_eq!(kind_of(&v), NarErrorKind::TooDeep);
    }

    #[test]
    fn dump_refuses_what_restore_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = dir.path().join("t");
        for _ in 1..MAX_DEPTH {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        // The deepest directory restore accepts dumps and restores.
        let mut nar = Vec::new();
        dump(&dir.path().join("t"), &mut nar).unwrap();
        restore(&mut nar.as_slice(), &dir.path().join("copy")).unwrap();
        // One more level is refused by both.
        fs::create_dir(p.join("d")).unwrap();
        let err = dump(&dir.path().join("t"), &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("deeper than"), "{err}");
    }
}
