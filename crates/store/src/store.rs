//! [`Store`]: adding paths, querying them, and the rules that keep the
//! store consistent (see the crate documentation).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_formats::export::ExportError;
use ferry_formats::hash::{HashingReader, HashingWriter};
use ferry_formats::nar::{self, NarParseError};
use ferry_formats::store_path::StorePathError;
use ferry_formats::{Sha256Hash, StoreDir, StorePath};
use rusqlite::Connection;
use thiserror::Error;

use crate::db::{self, PathInfo};
use crate::fsops;
use crate::locations::Locations;
use crate::lock::PathLock;
use crate::references::RefScanner;

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
    loc: Locations,
    real_dir: PathBuf,
    lock_dir: PathBuf,
    conn: Mutex<Connection>,
    temp_counter: AtomicU64,
    /// hashDerivationModulo of valid `.drv`s, for checking new ones.
    pub(crate) drv_hashes: Mutex<ferry_formats::derivation::DrvHashCache>,
}

/// A temporary entry in the store directory, removed on drop unless it was
/// committed (renamed into place).
pub struct TempPath {
    path: PathBuf,
    armed: bool,
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

/// Whether `r` has anything left.
fn read_one_more_byte(r: &mut dyn io::Read) -> io::Result<bool> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn now() -> i64 {
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

    fn conn(&self) -> MutexGuard<'_, Connection> {
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

    // ------------------------------------------------------------ adding

    /// Make `temp` the contents of `info.path` and register it. The caller
    /// holds the path's lock and has checked it is not valid yet.
    /// A path named `*.drv` is checked first (see
    /// [`Store::check_new_derivation`]) and its outputs recorded with it.
    pub fn commit(
        &self,
        temp: TempPath,
        info: &PathInfo,
        lock: &PathLock,
    ) -> Result<(), StoreError> {
        self.commit_checked(temp, info, lock, None)
    }

    /// [`Store::commit`], with the derivation that `temp` holds when the
    /// caller parsed it already (so it is parsed once).
    pub(crate) fn commit_checked(
        &self,
        mut temp: TempPath,
        info: &PathInfo,
        _lock: &PathLock,
        parsed: Option<&ferry_formats::derivation::Derivation>,
    ) -> Result<(), StoreError> {
        let shown = self.display(&info.path);
        let drv = match info.path.is_derivation() {
            true => Some(self.check_new_derivation(info, &temp.path, parsed)?),
            false => None,
        };
        fsops::make_canonical(&temp.path)
            .map_err(StoreError::io(format!("making {shown} read-only")))?;
        let target = self.real_path(&info.path);
        // Left by a crash between rename and registration: never valid.
        fsops::remove_tree(&target).map_err(StoreError::io(format!(
            "removing the stale, unregistered {shown}"
        )))?;
        fs::rename(&temp.path, &target)
            .map_err(StoreError::io(format!("moving {shown} into place")))?;
        temp.armed = false;
        // Synced where it now lies, unregistered (see `register_staged`:
        // one journal commit instead of two); removed if that fails.
        fsops::sync_tree(&target, &self.real_dir)
            .and_then(|()| fsops::sync_dir(&self.real_dir))
            .map_err(|e| {
                let _ = fsops::remove_tree(&target);
                StoreError::io(format!("syncing {shown}"))(e)
            })?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        db::register(&tx, &self.loc.store_dir, info)?;
        if let Some(drv) = &drv {
            db::register_drv_outputs(&tx, &self.loc.store_dir, &info.path, &drv.outputs)?;
        }
        tx.commit()?;
        // The database first, then the cache: the check takes them in the
        // other order.
        drop(conn);
        if let Some(drv) = drv {
            self.remember_drv_hash(&info.path, drv.hash);
        }
        Ok(())
    }

    /// Add a file or tree as a `source` path without references, as
    /// `nix-store --add` does. The tree is read once: its NAR is streamed
    /// through a pipe into a temporary copy while being hashed.
    pub fn add_tree(&self, src: &Path, name: &str) -> Result<StorePath, StoreError> {
        self.check_source_name(name)?;
        let (reader, writer) = io::pipe().map_err(StoreError::io("creating a pipe"))?;
        let src_owned = src.to_path_buf();
        let dumper = std::thread::spawn(move || -> io::Result<()> {
            let mut w = BufWriter::with_capacity(1 << 16, writer);
            nar::dump(&src_owned, &mut w)?;
            w.flush()
        });
        let mut reader = reader;
        let added = self.add_nar(name, &mut reader);
        drop(reader);
        let dumped = dumper.join().expect("NAR dump thread panicked");
        dumped.map_err(StoreError::io(format!("reading {}", src.display())))?;
        added
    }

    /// Add the tree whose NAR is read from `r` as a `source` path without
    /// references (what a client sends to the daemon for `ferry store add`).
    /// `r` must end where the NAR does.
    pub fn add_nar(&self, name: &str, r: &mut dyn io::Read) -> Result<StorePath, StoreError> {
        self.check_source_name(name)?;
        let temp = self.temp_path();
        let mut hr = HashingReader::new(r);
        nar::restore(&mut hr, temp.path())?;
        let (nar_hash, nar_size, r) = hr.finish();
        // `temp` is removed on the way out.
        if read_one_more_byte(r).map_err(StoreError::io(format!("reading the NAR of {name}")))? {
            return Err(StoreError::TrailingData {
                name: name.to_string(),
                size: nar_size,
            });
        }
        let path = self
            .loc
            .store_dir
            .source_path(name, &nar_hash, &[], false)?;
        let ca = format!("fixed:r:{}", nar_hash.to_typed_nix32());
        self.commit_if_new(temp, path, (nar_hash, nar_size), Vec::new(), ca, None)
    }

    /// Add a text file whose references are given. A name ending in `.drv`
    /// must hold a derivation whose outputs check (see
    /// [`Store::check_new_derivation`]).
    pub fn add_text(
        &self,
        name: &str,
        contents: &[u8],
        refs: &[StorePath],
    ) -> Result<StorePath, StoreError> {
        self.add_text_checked(name, contents, refs, None)
    }

    /// [`Store::add_text`] of a derivation already parsed from `contents`.
    pub(crate) fn add_text_checked(
        &self,
        name: &str,
        contents: &[u8],
        refs: &[StorePath],
        parsed: Option<&ferry_formats::derivation::Derivation>,
    ) -> Result<StorePath, StoreError> {
        let contents_hash = Sha256Hash::digest(contents);
        let path = self.loc.store_dir.text_path(name, &contents_hash, refs)?;
        if self.is_valid(&path)? {
            return Ok(path);
        }
        let mut hw = HashingWriter::new(io::sink());
        nar::dump_bytes(contents, false, &mut hw).expect("writing to a sink");
        let (nar_hash, nar_size, _) = hw.finish();
        let temp = self.temp_path();
        fs::write(temp.path(), contents)
            .map_err(StoreError::io(format!("writing {}", temp.path.display())))?;
        let mut refs = refs.to_vec();
        refs.sort();
        refs.dedup();
        let ca = format!("text:{}", contents_hash.to_typed_nix32());
        self.commit_if_new(temp, path, (nar_hash, nar_size), refs, ca, parsed)
    }

    fn commit_if_new(
        &self,
        temp: TempPath,
        path: StorePath,
        (nar_hash, nar_size): (Sha256Hash, u64),
        references: Vec<StorePath>,
        ca: String,
        parsed: Option<&ferry_formats::derivation::Derivation>,
    ) -> Result<StorePath, StoreError> {
        let lock = self.lock_path(&path)?;
        if !self.is_valid(&path)? {
            let info = PathInfo {
                path: path.clone(),
                nar_hash,
                nar_size,
                references,
                deriver: None,
                registration_time: now(),
                signatures: Vec::new(),
                ca: Some(ca),
            };
            self.commit_checked(temp, &info, &lock, parsed)?;
        }
        Ok(path)
    }

    /// NAR hash, size and the references among `candidates` of any tree, in
    /// one read: what registering a build output needs.
    pub fn hash_and_scan(
        &self,
        tree: &Path,
        candidates: &[StorePath],
    ) -> Result<(Sha256Hash, u64, BTreeSet<StorePath>), StoreError> {
        let mut scanner = RefScanner::new(candidates);
        let mut hw = HashingWriter::new(&mut scanner);
        nar::dump(tree, &mut hw).map_err(StoreError::io(format!("reading {}", tree.display())))?;
        let (hash, size, _) = hw.finish();
        Ok((hash, size, scanner.into_found()))
    }

    /// Make paths that a builder wrote in place valid, together (they may
    /// refer to each other): canonical metadata, one sync, one transaction.
    /// `infos` carry hash, size and references from [`Store::hash_and_scan`]
    /// of the canonical trees. The caller holds the paths' locks.
    pub fn register_in_place(&self, infos: &[PathInfo]) -> Result<(), StoreError> {
        for info in infos.iter().filter(|i| i.path.is_derivation()) {
            // Never passes (an output is not a text path); the same rule
            // as every other registration, with its error.
            self.check_new_derivation(info, &self.real_path(&info.path), None)?;
        }
        for info in infos {
            let shown = self.display(&info.path);
            let real = self.real_path(&info.path);
            fsops::make_canonical(&real)
                .map_err(StoreError::io(format!("making {shown} read-only")))?;
            fsops::sync_tree(&real, &self.real_dir)
                .map_err(StoreError::io(format!("syncing {shown}")))?;
        }
        // The outputs' own directory entries (created by the builder).
        fsops::sync_dir(&self.real_dir).map_err(StoreError::io("syncing the store directory"))?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        db::register_all(&tx, &self.loc.store_dir, infos)?;
        tx.commit()?;
        Ok(())
    }

    /// Make outputs that a builder wrote in a staging directory (a place
    /// only the daemon can reach, on the store's file system) valid,
    /// together: each `(staged tree, info)` must already be canonical
    /// ([`crate::canonicalise_outputs`]) and `info` carry the hash, size and
    /// references of [`Store::hash_and_scan`] of that tree. Each tree is
    /// renamed to its store path (removing an unregistered leftover there
    /// first), then synced there, then all are registered in one
    /// transaction. The caller holds the paths' locks.
    ///
    /// Renaming before syncing changes no promise (a path is valid only
    /// once its row is committed, after every sync; a crash before leaves
    /// an unregistered entry that the next build of it removes) and saves a
    /// journal commit per build on ext4: the file's `fsync` commits the
    /// rename with it, so the directory's `fsync` finds nothing left to do.
    pub fn register_staged(&self, staged: &[(PathBuf, PathInfo)]) -> Result<(), StoreError> {
        for (tree, info) in staged {
            let shown = self.display(&info.path);
            let target = self.real_path(&info.path);
            if *tree != target {
                fsops::remove_tree(&target).map_err(StoreError::io(format!(
                    "removing the stale, unregistered {shown}"
                )))?;
                fsops::move_canonical(tree, &target)
                    .map_err(StoreError::io(format!("moving {shown} into the store")))?;
            }
            fsops::sync_tree(&target, &self.real_dir)
                .map_err(StoreError::io(format!("syncing {shown}")))?;
        }
        fsops::sync_dir(&self.real_dir).map_err(StoreError::io("syncing the store directory"))?;
        let infos: Vec<PathInfo> = staged.iter().map(|(_, i)| i.clone()).collect();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        db::register_all(&tx, &self.loc.store_dir, &infos)?;
        tx.commit()?;
        Ok(())
    }

    /// Canonicalize a tree written in place (before hashing it, so the hash
    /// is of what will be registered).
    pub fn make_canonical(&self, p: &StorePath) -> Result<(), StoreError> {
        fsops::make_canonical(&self.real_path(p)).map_err(StoreError::io(format!(
            "making {} read-only",
            self.display(p)
        )))
    }

    /// Remove whatever lies at a path that is not valid (a crashed or failed
    /// build's leftovers). Refuses to touch a valid path.
    pub fn remove_invalid(&self, p: &StorePath) -> Result<(), StoreError> {
        if self.is_valid(p)? {
            return Err(StoreError::Corrupt(format!(
                "refusing to remove the valid path {}",
                self.display(p)
            )));
        }
        fsops::remove_tree(&self.real_path(p))
            .map_err(StoreError::io(format!("removing {}", self.display(p))))
    }

    /// Register the output paths recorded in a .drv already in the store.
    pub fn register_derivation_outputs(
        &self,
        drv: &StorePath,
        outputs: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        db::register_drv_outputs(&tx, &self.loc.store_dir, drv, outputs)?;
        tx.commit()?;
        Ok(())
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
            .add_text("b", s.display(&a).as_bytes(), &[a.clone()])
            .unwrap();
        let c = s.add_text("c", b"C", &[b.clone(), a.clone()]).unwrap();
        assert_eq!(s.valid_info(&c).unwrap().references, {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });
        let closure = s.closure(&[c.clone()]).unwrap();
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
            s.add_text("d", b"D", &[missing]),
            Err(StoreError::MissingReference { .. })
        ));
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
