//! Adding paths. Every addition (a source tree, a NAR from a client, a
//! text file, an imported item) goes through one door, [`Store::commit`]:
//! the `.drv` rule, canonical metadata, the rename, the sync, then the
//! row. Build outputs take the builder's door, [`Store::register_staged`]:
//! trees made canonical where the builder wrote them, moved in and
//! registered together. Split from `store.rs`, which keeps opening and
//! querying.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ferry_formats::hash::{HashingReader, HashingWriter};
use ferry_formats::nar;
use ferry_formats::{Sha256Hash, StorePath};

use crate::db::{self, PathInfo};
use crate::fsops;
use crate::lock::PathLock;
use crate::references::RefScanner;
use crate::store::{now, Store, StoreError, TempPath};

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

impl Store {
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
        let _rooted = self.root_in_scope(&[&path])?;
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
        let _rooted = self.root_in_scope(&[&path])?;
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
}
