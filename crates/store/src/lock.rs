//! Per-path locks, so that two processes (or threads) adding or building the
//! same path never both write it. They are `flock`s on files under
//! `STATE/locks/`, released when the guard drops or the holder dies, so a
//! crash never leaves a lock that blocks a retry.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// An exclusive lock on one name; released on drop.
#[derive(Debug)]
pub struct PathLock {
    _file: File,
}

impl PathLock {
    /// Block until the lock on `name` inside `dir` is held.
    pub fn acquire(dir: &Path, name: &str) -> io::Result<PathLock> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{name}.lock")))?;
        file.lock()?;
        Ok(PathLock { _file: file })
    }

    /// Take the lock if free, else `None`.
    pub fn try_acquire(dir: &Path, name: &str) -> io::Result<Option<PathLock>> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{name}.lock")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(PathLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
