//! Restoring a NAR as a new tree on disk, never writing outside its target
//! nor following a symlink (`O_NOFOLLOW | O_EXCL`).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::parse::{parse, EntryPath, NarSink};
use super::{NarParseError, COPY_BUF};

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
