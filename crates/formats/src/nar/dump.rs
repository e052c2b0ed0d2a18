//! Writing a NAR: a file tree (or one file's bytes) streamed, never held
//! whole, iteratively so that depth cannot overflow a stack.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{DUMP_BUF, MAGIC, MAX_DEPTH};
use crate::wire::{self, padding};

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
