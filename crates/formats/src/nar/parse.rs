//! Reading a NAR: the strict streaming parser that drives a [`NarSink`],
//! refusing every malformed case with the byte offset and the reason.

use std::io::{self, Read};

use super::{
    NarError, NarErrorKind, NarParseError, MAGIC, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN,
    MAX_TOKEN_LEN,
};
use crate::wire::{self, padding};

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
