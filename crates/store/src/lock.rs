//! Per-path locks, so that two processes (or threads) adding or building the
//! same path never both write it. They are `flock`s on files under
//! `STATE/locks/`, released when the guard drops or the holder dies, so a
//! crash never leaves a lock that blocks a retry.
//!
//! `flock` needs only a descriptor, even a read-only one: a lock file
//! another user can open is a lock that user can hold forever, hanging
//! every build of that path. So lock files are 0600 and owned by the
//! store's user, in a directory only that user can create files in
//! ([`secure_dir`]); a lock file found with another mode or owner (left by
//! an older version) is put right before it is used.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// An exclusive lock on one name; released on drop.
#[derive(Debug)]
pub struct PathLock {
    _file: File,
}

/// Create `dir` if missing (0755) and make sure only this user can create
/// or remove entries in it: owned by us, not writable by group or others.
/// A directory owned by another user is refused (we cannot trust it),
/// except that root takes it over.
pub fn secure_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
        }
        Err(e) => return Err(e),
    }
    let meta = fs::metadata(dir)?;
    let me = rustix::process::geteuid();
    if meta.uid() != me.as_raw() {
        if !me.is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is owned by uid {}, not by this user (uid {}): another user could take or remove its locks; remove it or run as its owner",
                    dir.display(),
                    meta.uid(),
                    me.as_raw()
                ),
            ));
        }
        rustix::fs::chown(dir, Some(me), Some(rustix::process::getegid()))?;
    }
    if meta.mode() & 0o022 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o755))?;
    }
    Ok(())
}

/// The directories of the state directory that hold locks, the database
/// and logs: only their owner may create or remove entries in them (a lock
/// file another user could create or open is a lock that user could
/// hold). Done when this process owns the state directory; another user's
/// state is left as it is (root opening it must not take it over). The
/// state directory itself is not changed (it may be shared, as /tmp is).
pub(crate) fn harden_state_dir(state: &Path) -> Result<(), crate::StoreError> {
    let me = rustix::process::geteuid();
    if !fs::metadata(state).is_ok_and(|m| m.uid() == me.as_raw()) {
        return Ok(());
    }
    for d in [state.join("locks"), state.join("db"), state.join("log")] {
        secure_dir(&d).map_err(crate::StoreError::io(format!(
            "securing {} (only the store's user may create files there)",
            d.display()
        )))?;
    }
    Ok(())
}

fn open_lock_file(dir: &Path, name: &str) -> io::Result<File> {
    let path = dir.join(format!("{name}.lock"));
    match open_lock_at(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            secure_dir(dir)?;
            open_lock_at(&path)
        }
        other => other,
    }
}

/// Opens (creating) the lock file `path`, never through a symlink, and
/// makes it the daemon's own and 0600 whatever it was: no other user may
/// take a lock the daemon relies on. Every lock file goes through here.
pub(crate) fn open_lock_at(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    let me = rustix::process::geteuid();
    if meta.uid() != me.as_raw() {
        rustix::fs::fchown(&file, Some(me), Some(rustix::process::getegid()))?;
    }
    if meta.mode() & 0o7777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

impl PathLock {
    /// Block until the lock on `name` inside `dir` is held.
    pub fn acquire(dir: &Path, name: &str) -> io::Result<PathLock> {
        let file = open_lock_file(dir, name)?;
        file.lock()?;
        Ok(PathLock { _file: file })
    }

    /// Take the lock if free, else `None`.
    pub fn try_acquire(dir: &Path, name: &str) -> io::Result<Option<PathLock>> {
        let file = open_lock_file(dir, name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(PathLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_are_private_and_old_ones_put_right() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        let l = PathLock::acquire(&dir, "a").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir.join("a.lock")), 0o600);
        assert_eq!(mode(&dir), 0o755);
        assert!(PathLock::try_acquire(&dir, "a").unwrap().is_none());
        drop(l);
        // A lock file of an older version, readable by all, in a
        // directory writable by all.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(dir.join("b.lock"), "").unwrap();
        fs::set_permissions(dir.join("b.lock"), fs::Permissions::from_mode(0o644)).unwrap();
        secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        let _b = PathLock::try_acquire(&dir, "b").unwrap().unwrap();
        assert_eq!(mode(&dir.join("b.lock")), 0o600);
    }
}
