//! Empty directories kept from one build for the next.
//!
//! Every build needs a few directories on disk (a sandbox's chroot with its
//! `root/`, `tmp/` and `store/`, the build directory and its `build/`).
//! Creating and removing them per build costs more than the rest of a small
//! build's setup on some file systems: ext4 without a journal, for one,
//! skips every inode freed in the last 30 seconds when it allocates one, so
//! a busy daemon's churn makes each new file slower. A finished build's
//! directories are emptied (only what it left is removed) and kept here
//! for the next build, up to [`MAX_SPARES`] of each kind; the rest are
//! removed as before. A spare is only kept once every process of its build
//! is gone, and its modes and owners are set again when it is reused.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Spares kept per kind: more than any machine runs builds at once.
pub const MAX_SPARES: usize = 64;

/// A pool of empty directory trees of one kind.
pub(crate) struct Spares {
    dirs: Mutex<Vec<PathBuf>>,
}

impl Spares {
    pub(crate) const fn new() -> Spares {
        Spares {
            dirs: Mutex::new(Vec::new()),
        }
    }

    /// A spare directly under `parent`, if one is kept.
    pub(crate) fn take(&self, parent: &Path) -> Option<PathBuf> {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let i = dirs.iter().position(|d| d.parent() == Some(parent))?;
        Some(dirs.swap_remove(i))
    }

    /// Keeps `dir` (already emptied) for a later build; gives it back when
    /// the pool is full, for the caller to remove.
    pub(crate) fn keep(&self, dir: PathBuf) -> Result<(), PathBuf> {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if dirs.len() >= MAX_SPARES {
            return Err(dir);
        }
        dirs.push(dir);
        Ok(())
    }
}

/// Makes `dir` an empty directory again: nothing to do when it is empty
/// (the common case: the build's outputs were moved out), else it is
/// removed, whatever it holds, and created anew (its mode is set by
/// whoever reuses it).
pub(crate) fn emptied(dir: &Path) -> io::Result<()> {
    let meta = dir.symlink_metadata()?;
    if meta.is_dir() && std::fs::read_dir(dir)?.next().is_none() {
        return Ok(());
    }
    ferry_store::remove_tree(dir)?;
    std::fs::create_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_taken_by_parent_and_bounded() {
        let pool = Spares::new();
        assert_eq!(pool.take(Path::new("/a")), None);
        pool.keep(PathBuf::from("/a/x")).unwrap();
        pool.keep(PathBuf::from("/b/y")).unwrap();
        assert_eq!(pool.take(Path::new("/b")), Some(PathBuf::from("/b/y")));
        assert_eq!(pool.take(Path::new("/b")), None);
        for i in 1..MAX_SPARES {
            pool.keep(PathBuf::from(format!("/a/{i}"))).unwrap();
        }
        assert_eq!(
            pool.keep(PathBuf::from("/a/full")),
            Err(PathBuf::from("/a/full"))
        );
    }

    #[test]
    fn emptied_keeps_an_empty_dir_and_clears_a_full_one() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        emptied(&d).unwrap();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(
            d.join("sub"),
            std::os::unix::fs::PermissionsExt::from_mode(0o500),
        )
        .unwrap();
        emptied(&d).unwrap();
        assert!(d.is_dir());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        // A symlink where the directory was is replaced by a directory.
        std::fs::remove_dir(&d).unwrap();
        std::os::unix::fs::symlink("/", &d).unwrap();
        emptied(&d).unwrap();
        assert!(d.symlink_metadata().unwrap().is_dir());
    }
}
