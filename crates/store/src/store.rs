//! [`Store`]: adding paths, querying them, and the rules that keep the
//! store consistent (see the crate documentation).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_formats::export::ExportError;
use ferry_formats::hash::HashingWriter;
use ferry_formats::nar::{self, NarParseError};
use ferry_formats::store_path::StorePathError;
use ferry_formats::{StoreDir, StorePath};
use rusqlite::Connection;
use thiserror::Error;

use crate::db::{self, PathInfo};
use crate::fsops;
use crate::locations::Locations;
use crate::lock::PathLock;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("store database {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store is inconsistent: {0}; run `ferry store verify`")]
    Corrupt(String),
    #[error("cannot register {path}: its reference {reference} is not valid in this store (add or import it first)")]
    MissingReference { path: String, reference: String },
    #[error(transparent)]
    BadPath(#[from] StorePathError),
    #[error(transparent)]
    Nar(#[from] NarParseError),
    #[error(transparent)]
    Bundle(#[from] ExportError),
    #[error("{path} is not valid in the store {store}")]
    NotValid { path: String, store: String },
    #[error("{path}: contents changed on disk (NAR hash {found}, database says {expected}); run `ferry store verify`")]
    HashMismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("refused to import {path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{0}")]
    Derivation(String),
    /// `ferry gc --delete` of paths still reachable from a root.
    #[error("cannot delete: {0} (remove the root first, or collect with `ferry gc` to free only what is dead)")]
    Alive(String),
    #[error("refusing {path} as a derivation: {reason}")]
    BadDerivation { path: String, reason: String },
    #[error("refusing to add {name}: trailing data after the NAR (the archive ends at byte {size}); send exactly one NAR")]
    TrailingData { name: String, size: u64 },
}

impl From<ferry_formats::derivation::DerivationError> for StoreError {
    fn from(e: ferry_formats::derivation::DerivationError) -> Self {
        StoreError::Derivation(e.to_string())
    }
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Prefix of the temporary entries the store writes before renaming them
/// into place. Store path names cannot start with '.', so these never clash.
pub(crate) const TEMP_PREFIX: &str = ".tmp-ferry-";

/// A store: its directory, database and locks.
pub struct Store {
    pub(crate) loc: Locations,
    pub(crate) real_dir: PathBuf,
    pub(crate) lock_dir: PathBuf,
    pub(crate) conn: Mutex<Connection>,
    temp_counter: AtomicU64,
    /// hashDerivationModulo of valid `.drv`s, for checking new ones.
    pub(crate) drv_hashes: Mutex<ferry_formats::derivation::DrvHashCache>,
    /// Where this process's adds are rooted (see `Store::set_process_roots`).
    pub(crate) process_roots: Mutex<Option<std::sync::Arc<crate::gc::TempRoots>>>,
}

/// A temporary entry in the store directory, removed on drop unless it was
/// committed (renamed into place).
pub struct TempPath {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl TempPath {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = fsops::remove_tree(&self.path);
        }
    }
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the store described by `loc`.
    pub fn open(loc: Locations) -> Result<Store, StoreError> {
        let real_dir = PathBuf::from(loc.store_dir.as_str());
        fs::create_dir_all(&real_dir).map_err(StoreError::io(format!(
            "creating the store directory {} (set FERRY_STORE_DIR or --store to use another)",
            real_dir.display()
        )))?;
        let db_dir = loc.state_dir.join("db");
        fs::create_dir_all(&db_dir).map_err(StoreError::io(format!(
            "creating the state directory {} (set FERRY_STATE_DIR or --state-dir to use another)",
            db_dir.display()
        )))?;
        crate::lock::harden_state_dir(&loc.state_dir)?;
        let conn = db::open(&db_dir.join("db.sqlite"))?;
        let store = Store {
            lock_dir: loc.state_dir.join("locks"),
            loc,
            real_dir,
            conn: Mutex::new(conn),
            temp_counter: AtomicU64::new(0),
            drv_hashes: Mutex::new(Default::default()),
            process_roots: Mutex::new(None),
        };
        store.remove_stale_temps();
        Ok(store)
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.loc.store_dir
    }

    pub fn locations(&self) -> &Locations {
        &self.loc
    }

    /// The store directory on disk (where builds' chroots go, so that
    /// outputs can be renamed into place).
    pub fn real_store_dir(&self) -> &Path {
        &self.real_dir
    }

    /// Where a store path lives on disk.
    pub fn real_path(&self, p: &StorePath) -> PathBuf {
        self.real_dir.join(p.base_name())
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parse an absolute path as a path of this store.
    pub fn parse_path(&self, abs: &str) -> Result<StorePath, StoreError> {
        Ok(self.loc.store_dir.parse(abs)?)
    }

    /// `STOREDIR/HASH-NAME` as a string.
    pub fn display(&self, p: &StorePath) -> String {
        self.loc.store_dir.display(p)
    }

    /// Remove temporary entries whose writing process is gone.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.real_dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            let alive = pid
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
            if !alive {
                let _ = fsops::remove_tree(&e.path());
            }
        }
    }

    /// A fresh temporary name in the store directory (nothing is created).
    pub fn temp_path(&self) -> TempPath {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        TempPath {
            path: self
                .real_dir
                .join(format!("{TEMP_PREFIX}{}-{n}", std::process::id())),
            armed: true,
        }
    }

    /// Lock a store path against concurrent adds or builds.
    pub fn lock_path(&self, p: &StorePath) -> Result<PathLock, StoreError> {
        PathLock::acquire(&self.lock_dir, p.base_name())
            .map_err(StoreError::io(format!("locking {}", self.display(p))))
    }

    /// Take the lock on a store path if it is free, else `None`. Never
    /// blocks, so async code can call it before falling back to
    /// [`Store::lock_path`] on a blocking thread.
    pub fn try_lock_path(&self, p: &StorePath) -> Result<Option<PathLock>, StoreError> {
        PathLock::try_acquire(&self.lock_dir, p.base_name())
            .map_err(StoreError::io(format!("locking {}", self.display(p))))
    }

    // ------------------------------------------------------------ queries

    pub fn is_valid(&self, p: &StorePath) -> Result<bool, StoreError> {
        Ok(db::path_id(&self.conn(), &self.loc.store_dir, p)?.is_some())
    }

    /// The subset of `paths` that is valid, in the given order.
    pub fn query_valid(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, StoreError> {
        let conn = self.conn();
        let mut out = Vec::new();
        for p in paths {
            if db::path_id(&conn, &self.loc.store_dir, p)?.is_some() {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    /// Whether every one of `paths` is valid (a derivation's outputs: is
    /// there anything to build?); stops at the first that is not.
    pub fn are_valid<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        for p in paths {
            if db::path_id(&conn, &self.loc.store_dir, p)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn path_info(&self, p: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        db::query_info(&self.conn(), &self.loc.store_dir, p)
    }

    /// Info of a path that must be valid.
    pub fn valid_info(&self, p: &StorePath) -> Result<PathInfo, StoreError> {
        self.path_info(p)?.ok_or_else(|| StoreError::NotValid {
            path: self.display(p),
            store: self.loc.store_dir.to_string(),
        })
    }

    pub fn referrers(&self, p: &StorePath) -> Result<Vec<StorePath>, StoreError> {
        db::referrers(&self.conn(), &self.loc.store_dir, p)
    }

    /// Every valid path, sorted.
    pub fn all_valid(&self) -> Result<Vec<StorePath>, StoreError> {
        db::all_valid(&self.conn(), &self.loc.store_dir)
    }

    /// The paths and everything they reference, transitively.
    pub fn closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StorePath> = paths.to_vec();
        while let Some(p) = todo.pop() {
            if seen.contains(&p) {
                continue;
            }
            let info = self.valid_info(&p)?;
            todo.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(p);
        }
        Ok(seen)
    }

    /// Order `paths` so that each comes after the paths (of the set) it
    /// references: what export bundles and registration need.
    pub fn topo_sort(&self, paths: &BTreeSet<StorePath>) -> Result<Vec<StorePath>, StoreError> {
        let mut out = Vec::with_capacity(paths.len());
        let mut done = BTreeSet::new();
        // Iterative post-order DFS: (path, references still to visit).
        for root in paths {
            if done.contains(root) {
                continue;
            }
            let mut stack = vec![(root.clone(), self.valid_info(root)?.references)];
            let mut on_stack = BTreeSet::from([root.clone()]);
            while let Some((p, refs)) = stack.last_mut() {
                match refs.pop() {
                    Some(r) => {
                        if r != *p
                            && paths.contains(&r)
                            && !done.contains(&r)
                            && !on_stack.contains(&r)
                        {
                            let rr = self.valid_info(&r)?.references;
                            on_stack.insert(r.clone());
                            stack.push((r, rr));
                        }
                    }
                    None => {
                        let p = p.clone();
                        stack.pop();
                        on_stack.remove(&p);
                        done.insert(p.clone());
                        out.push(p);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Write the NAR of a valid path, checking on the way that its contents
    /// still match the database.
    pub fn dump_path(&self, p: &StorePath, w: &mut dyn Write) -> Result<PathInfo, StoreError> {
        let info = self.valid_info(p)?;
        let mut hw = HashingWriter::new(w);
        nar::dump(&self.real_path(p), &mut hw)
            .map_err(StoreError::io(format!("reading {}", self.display(p))))?;
        let (hash, size, _) = hw.finish();
        if hash != info.nar_hash || size != info.nar_size {
            return Err(StoreError::HashMismatch {
                path: self.display(p),
                expected: format!("{} ({} bytes)", info.nar_hash, info.nar_size),
                found: format!("{hash} ({size} bytes)"),
            });
        }
        Ok(info)
    }

    pub(crate) fn now() -> i64 {
        now()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferry_formats::Sha256Hash;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn test_store(root: &Path, store: &str) -> Store {
        test_store_with_state(root, store, &format!("{store}-state"))
    }

    /// A store whose state (database, locks) lives in `root/state`.
    pub(crate) fn test_store_with_state(root: &Path, store: &str, state: &str) -> Store {
        Store::open(Locations {
            store_dir: StoreDir::new(root.join(store).to_str().unwrap()).unwrap(),
            state_dir: root.join(state),
            config_dir: root.join(format!("{state}-config")),
        })
        .unwrap()
    }

    #[test]
    fn add_tree_is_read_only_registered_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "hello").unwrap();
        let p = s.add_tree(&src, "src").unwrap();
        assert!(s.is_valid(&p).unwrap());
        let real = s.real_path(&p);
        let meta = fs::symlink_metadata(real.join("sub/f")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(
            meta.modified().unwrap(),
            UNIX_EPOCH + std::time::Duration::from_secs(1)
        );
        assert_eq!(
            fs::symlink_metadata(&real).unwrap().permissions().mode() & 0o777,
            0o555
        );
        let info = s.valid_info(&p).unwrap();
        let mut nar_bytes = Vec::new();
        nar::dump(&src, &mut nar_bytes).unwrap();
        assert_eq!(info.nar_hash, Sha256Hash::digest(&nar_bytes));
        assert_eq!(info.nar_size, nar_bytes.len() as u64);
        assert_eq!(s.add_tree(&src, "src").unwrap(), p);
        // No temporary entries left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("store"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(p.base_name())]);
    }

    #[test]
    fn a_crash_before_registration_does_not_block_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let src = dir.path().join("f");
        fs::write(&src, "data").unwrap();
        let p = s.add_tree(&src, "f").unwrap();
        // Simulate the crash: contents in place but no row; plus a stale temp.
        drop(s);
        let db = dir.path().join("store-state/db/db.sqlite");
        let c = Connection::open(&db).unwrap();
        c.execute("DELETE FROM ValidPaths", []).unwrap();
        drop(c);
        fs::create_dir(dir.path().join("store/.tmp-ferry-999999999-0")).unwrap();
        let s = test_store(dir.path(), "store");
        assert!(!dir.path().join("store/.tmp-ferry-999999999-0").exists());
        assert!(!s.is_valid(&p).unwrap());
        assert_eq!(s.add_tree(&src, "f").unwrap(), p);
        assert!(s.is_valid(&p).unwrap());
    }

    #[test]
    fn text_paths_closures_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let a = s.add_text("a", b"A", &[]).unwrap();
        let b = s
            .add_text("b", s.display(&a).as_bytes(), std::slice::from_ref(&a))
            .unwrap();
        let c = s.add_text("c", b"C", &[b.clone(), a.clone()]).unwrap();
        assert_eq!(s.valid_info(&c).unwrap().references, {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });
        let closure = s.closure(std::slice::from_ref(&c)).unwrap();
        assert_eq!(closure.len(), 3);
        let order = s.topo_sort(&closure).unwrap();
        let pos = |p: &StorePath| order.iter().position(|q| q == p).unwrap();
        assert!(pos(&a) < pos(&b) && pos(&b) < pos(&c));
        assert_eq!(s.referrers(&a).unwrap().len(), 2);
        let missing = s
            .store_dir()
            .text_path("zz", &Sha256Hash::digest(b"z"), &[])
            .unwrap();
        assert!(matches!(
            s.add_text("d", b"D", std::slice::from_ref(&missing)),
            Err(StoreError::MissingReference { .. })
        ));
        assert!(s.are_valid([&a, &b, &c]).unwrap());
        assert!(s.are_valid([]).unwrap());
        assert!(!s.are_valid([&a, &missing, &c]).unwrap());
    }

    #[test]
    fn hash_and_scan_finds_references_in_file_contents_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let a = s.add_text("a", b"A", &[]).unwrap();
        let b = s.add_text("b", b"B", &[]).unwrap();
        let c = s.add_text("c", b"C", &[]).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("script"), format!("exec {}/bin/x", s.display(&a))).unwrap();
        std::os::unix::fs::symlink(s.real_path(&b), out.join("link")).unwrap();
        let (hash, size, refs) = s.hash_and_scan(&out, &[a.clone(), b.clone(), c]).unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), {
            let mut v = vec![a, b];
            v.sort();
            v
        });
        let mut nar_bytes = Vec::new();
        nar::dump(&out, &mut nar_bytes).unwrap();
        assert_eq!(
            (hash, size),
            (Sha256Hash::digest(&nar_bytes), nar_bytes.len() as u64)
        );
    }

    #[test]
    fn concurrent_adds_of_the_same_path_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..20 {
            fs::write(src.join(format!("f{i}")), vec![i as u8; 10_000]).unwrap();
        }
        let s = std::sync::Arc::new(test_store(dir.path(), "store"));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                let src = src.clone();
                std::thread::spawn(move || s.add_tree(&src, "src").unwrap())
            })
            .collect();
        let paths: BTreeSet<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(paths.len(), 1);
        assert_eq!(s.all_valid().unwrap().len(), 1);
        assert!(s.verify().unwrap().is_empty());
    }
}
