//! Empty directories kept from one build for the next.
//!
//! Every build needs a few directories on disk (a sandbox's chroot with its
//! `root/`, `tmp/` and `store/`, the build directory and its `build/`).
//! Creating and removing them per build costs more than the rest of a small
//! build's setup on some file systems: ext4 without a journal, for one,
//! skips every inode freed in the last 30 seconds when it allocates one, so
//! a busy daemon's churn makes each new file slower. A finished build's
//! directories are emptied (only what it left is removed) and kept here
//! for the next build, up to [`MAX_SPARES`] of each kind and for at most
//! [`LINGER`] (a thread removes older ones, so an idle daemon leaves
//! nothing behind); the rest are removed as before. A spare is only kept
//! once every process of its build is gone, and its modes and owners are
//! set again when it is reused.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Spares kept per kind: more than any machine runs builds at once.
pub const MAX_SPARES: usize = 64;

/// A spare unused this long is removed: an idle daemon leaves nothing in
/// the store directory or TMPDIR.
pub const LINGER: Duration = Duration::from_secs(5);

/// A pool of empty directory trees of one kind.
pub(crate) struct Spares {
    dirs: Mutex<Vec<(PathBuf, Instant)>>,
}

impl Spares {
    pub(crate) const fn new() -> Spares {
        Spares {
            dirs: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, Instant)>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare directly under `parent`, if one is kept.
    pub(crate) fn take(&self, parent: &Path) -> Option<PathBuf> {
        let mut dirs = self.lock();
        let i = dirs.iter().position(|(d, _)| d.parent() == Some(parent))?;
        Some(dirs.swap_remove(i).0)
    }

    /// Keeps `dir` (already emptied) for a later build, for [`LINGER`];
    /// gives it back when the pool is full, for the caller to remove.
    pub(crate) fn keep(&'static self, dir: PathBuf) -> Result<(), PathBuf> {
        {
            let mut dirs = self.lock();
            if dirs.len() >= MAX_SPARES {
                return Err(dir);
            }
            dirs.push((dir, Instant::now()));
        }
        janitor(self);
        Ok(())
    }

    /// Removes from the pool the spares unused for `linger`, returning them.
    fn expired(&self, linger: Duration) -> Vec<PathBuf> {
        let mut dirs = self.lock();
        let (old, keep): (Vec<_>, Vec<_>) =
            dirs.drain(..).partition(|(_, t)| t.elapsed() >= linger);
        *dirs = keep;
        old.into_iter().map(|(d, _)| d).collect()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

struct Janitor {
    pools: Mutex<Vec<&'static Spares>>,
    thread: std::thread::Thread,
}

static JANITOR: OnceLock<Option<Janitor>> = OnceLock::new();

/// Removes every spare now (a daemon stopping: nothing it kept stays
/// behind). Returns how many were removed.
pub fn remove_all() -> usize {
    let Some(Some(j)) = JANITOR.get() else {
        return 0;
    };
    let pools: Vec<&'static Spares> = j.pools.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut n = 0;
    for pool in pools {
        for dir in pool.expired(Duration::ZERO) {
            let _ = ferry_store::remove_tree(&dir);
            n += 1;
        }
    }
    n
}

/// The thread that removes lingering spares: started with the first spare,
/// parked while no pool holds any.
fn janitor(pool: &'static Spares) {
    let janitor = JANITOR.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("ferry-spares".into())
            .spawn(|| loop {
                let Some(Some(j)) = JANITOR.get() else {
                    std::thread::park();
                    continue;
                };
                let pools: Vec<&'static Spares> =
                    j.pools.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if pools.iter().all(|p| p.is_empty()) {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(Duration::from_secs(1));
                for pool in pools {
                    for dir in pool.expired(LINGER) {
                        let _ = ferry_store::remove_tree(&dir);
                    }
                }
            });
        started.ok().map(|handle| Janitor {
            pools: Mutex::new(Vec::new()),
            thread: handle.thread().clone(),
        })
    });
    match janitor {
        Some(j) => {
            let mut pools = j.pools.lock().unwrap_or_else(|e| e.into_inner());
            if !pools.iter().any(|p| std::ptr::eq(*p, pool)) {
                pools.push(pool);
            }
            drop(pools);
            j.thread.unpark();
        }
        // No thread: keep nothing that would linger for ever.
        None => {
            for dir in pool.expired(Duration::ZERO) {
                let _ = ferry_store::remove_tree(&dir);
            }
        }
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
        static POOL: Spares = Spares::new();
        let pool = &POOL;
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
        assert_eq!(
            pool.expired(Duration::from_secs(3600)),
            Vec::<PathBuf>::new()
        );
        assert_eq!(pool.expired(Duration::ZERO).len(), MAX_SPARES);
        assert!(pool.is_empty());
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
