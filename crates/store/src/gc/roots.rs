//! Where roots come from.
//!
//! Permanent roots are symlinks under `STATE/gcroots` (searched
//! recursively, so `gcroots/per-user/USER/...` and `gcroots/auto/...` are
//! found too), as Nix's `findRoots`: a link into the store is a root; a
//! link to a link elsewhere that points into the store is an indirect root
//! (what `ferry build --root FILE` registers as `gcroots/auto/HASH ->
//! FILE`); an indirect link under `auto/` whose target is gone is removed.
//!
//! Temporary roots live in `STATE/temproots/PID-N`, one file per holder (a
//! daemon connection, an embedded build), NUL-separated paths, the file
//! `flock`ed by its holder for its lifetime. A collection reads every file
//! whose lock is held and removes those whose holder is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ferry_formats::{Sha256Hash, StorePath};

use crate::store::{Store, StoreError};

static NEXT_TEMP_ROOTS: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// `STATE/gcroots`.
    pub fn gcroots_dir(&self) -> PathBuf {
        self.loc.state_dir.join("gcroots")
    }

    fn temproots_dir(&self) -> PathBuf {
        self.loc.state_dir.join("temproots")
    }

    /// The store path a link target names (a path inside one counts).
    fn store_path_of(&self, target: &Path) -> Option<StorePath> {
        let s = target.to_str()?;
        self.loc.store_dir.parse_inside(s).ok().map(|(p, _)| p)
    }

    /// Every permanent root: link -> the store path it keeps. Dangling
    /// indirect roots under `gcroots/auto` are removed on the way. Links
    /// to paths that are not valid are listed too (they keep nothing).
    pub fn find_roots(&self) -> Result<BTreeMap<PathBuf, StorePath>, StoreError> {
        let mut roots = BTreeMap::new();
        let top = self.gcroots_dir();
        let auto = top.join("auto");
        let mut todo = vec![top];
        while let Some(dir) = todo.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()))(e)),
            };
            for e in entries {
                let e = e.map_err(StoreError::io(format!("reading {}", dir.display())))?;
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    todo.push(path);
                    continue;
                }
                if !ft.is_symlink() {
                    continue;
                }
                let Ok(target) = fs::read_link(&path) else {
                    continue;
                };
                if let Some(p) = self.store_path_of(&target) {
                    roots.insert(path, p);
                    continue;
                }
                // Indirect: a link to a link (e.g. a `result` symlink).
                let target = dir.join(&target);
                match fs::symlink_metadata(&target) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if path.starts_with(&auto) {
                            let _ = fs::remove_file(&path);
                        }
                    }
                    Err(_) => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        if let Some(p) = fs::read_link(&target)
                            .ok()
                            .and_then(|t| self.store_path_of(&t))
                        {
                            roots.insert(target, p);
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
        Ok(roots)
    }

    /// Register `link` (an absolute symlink into the store, made by the
    /// caller) as an indirect root: `gcroots/auto/HASH -> link`, as Nix's
    /// `addIndirectRoot`. Removing `link` later frees what it kept. Waits
    /// while a collection runs (the caller holds the path meanwhile, by a
    /// temporary root, and lets go after this returns).
    pub fn add_indirect_root(&self, link: &Path) -> Result<(), StoreError> {
        if !link.is_absolute() {
            return Err(StoreError::io(format!(
                "registering {} as a root",
                link.display()
            ))(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the link must be an absolute path",
            )));
        }
        // Not while a collection runs: it read the roots already.
        let _gc = self.gc_shared()?;
        let auto = self.gcroots_dir().join("auto");
        fs::create_dir_all(&auto)
            .map_err(StoreError::io(format!("creating {}", auto.display())))?;
        let hash = Sha256Hash::digest(link.as_os_str().as_encoded_bytes()).to_nix32();
        let name = auto.join(&hash[..32]);
        let tmp = auto.join(format!(".tmp-{}-{}", &hash[..32], std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(link, &tmp)
            .and_then(|()| fs::rename(&tmp, &name))
            .map_err(StoreError::io(format!(
                "creating the root {}",
                name.display()
            )))
    }

    /// A new temporary roots file for one holder (a connection, a build
    /// process); its roots last until it drops or the process dies.
    pub fn temp_roots(&self) -> Result<TempRoots, StoreError> {
        let dir = self.temproots_dir();
        crate::lock::secure_dir(&dir)
            .map_err(StoreError::io(format!("creating {}", dir.display())))?;
        // A collection reading the directory may take the new file for
        // one whose holder is gone (free lock) and remove it before we
        // lock it: check it is still there once locked, else start again.
        let (path, file) = loop {
            let n = NEXT_TEMP_ROOTS.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{}-{n}", std::process::id()));
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(StoreError::io(format!("creating {}", path.display())))?;
            file.lock()
                .map_err(StoreError::io(format!("locking {}", path.display())))?;
            let ours = file
                .metadata()
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => break (path, file),
                _ => continue,
            }
        };
        Ok(TempRoots {
            path,
            file: Mutex::new(file),
            held: Mutex::new(BTreeSet::new()),
            store_dir: self.loc.store_dir.clone(),
        })
    }

    /// Every temporary root of live holders: file -> paths. Files of gone
    /// holders (lock free) are removed. Called under the exclusive lock.
    pub(crate) fn read_temp_roots(&self) -> Result<Vec<(PathBuf, StorePath)>, StoreError> {
        let dir = self.temproots_dir();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(format!("reading {}", dir.display()))(e)),
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(mut f) = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
            else {
                continue;
            };
            match f.try_lock_shared() {
                Ok(()) => {
                    // Its holder is gone.
                    let _ = fs::remove_file(&path);
                    continue;
                }
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io(format!("locking {}", path.display()))(e))
                }
            }
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
            for s in text.split('\0').filter(|s| !s.is_empty()) {
                if let Ok(p) = self.loc.store_dir.parse(s) {
                    out.push((path.clone(), p));
                }
            }
        }
        Ok(out)
    }
}

/// One holder's temporary roots (see the module documentation). The file
/// is removed when this drops.
#[derive(Debug)]
pub struct TempRoots {
    path: PathBuf,
    file: Mutex<File>,
    held: Mutex<BTreeSet<StorePath>>,
    store_dir: ferry_formats::StoreDir,
}

impl TempRoots {
    /// Root `p` until this drops. Takes the collector lock shared for the
    /// write, so it blocks while a collection runs; the caller checks the
    /// path's validity after this returns (Nix's `addTempRoot` rule).
    pub fn add(&self, store: &Store, p: &StorePath) -> Result<(), StoreError> {
        let _shared = store.gc_shared()?;
        self.add_locked(p)
    }

    /// [`TempRoots::add`] for a caller already holding
    /// [`Store::gc_shared`].
    pub fn add_locked(&self, p: &StorePath) -> Result<(), StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(p) {
            return Ok(());
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = self.store_dir.display(p).into_bytes();
        line.push(0);
        f.write_all(&line)
            .map_err(StoreError::io(format!("writing {}", self.path.display())))?;
        held.insert(p.clone());
        Ok(())
    }

    /// The paths rooted so far.
    pub fn paths(&self) -> BTreeSet<StorePath> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

thread_local! {
    /// The temporary roots that adds on this thread go to (see
    /// [`TempRoots::scope`]).
    static SCOPE: std::cell::RefCell<Option<std::sync::Arc<TempRoots>>> =
        const { std::cell::RefCell::new(None) };
}

impl TempRoots {
    /// Run `f` with every path it adds, imports or finds already valid
    /// rooted here first (Nix's `addTempRoot` before `isValidPath`): what
    /// a daemon connection does around each store call.
    pub fn scope<T>(self: &std::sync::Arc<Self>, f: impl FnOnce() -> T) -> T {
        let old = SCOPE.with(|s| s.replace(Some(self.clone())));
        let out = f();
        SCOPE.with(|s| *s.borrow_mut() = old);
        out
    }
}

impl Store {
    /// Root every path this process adds from now on, on threads without
    /// a [`TempRoots::scope`], until it exits (an embedded `ferry build`).
    pub fn set_process_roots(&self, roots: std::sync::Arc<TempRoots>) {
        *self.process_roots.lock().unwrap_or_else(|e| e.into_inner()) = Some(roots);
    }

    /// Before an add checks whether `paths` are valid: root them in the
    /// current scope (or the process's roots) under the collector lock,
    /// returned held (so that no collection starts until the add is done).
    pub fn root_in_scope(&self, paths: &[&StorePath]) -> Result<Option<super::GcLock>, StoreError> {
        let roots = SCOPE.with(|s| s.borrow().clone()).or_else(|| {
            self.process_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
        let Some(roots) = roots else {
            return Ok(None);
        };
        let guard = self.gc_shared()?;
        for p in paths {
            roots.add_locked(p)?;
        }
        Ok(Some(guard))
    }
}
