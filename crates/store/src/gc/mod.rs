//! Garbage collection: which paths are alive (reachable from a root, a
//! temporary root, or an operation in progress) and the removal of the
//! others, as Nix's `collectGarbage` and `guix gc` do.
//!
//! The invariants: a valid path reachable from a root or in use is never
//! deleted; a path being deleted is never reported valid (its row goes, in a
//! committed transaction, before its files); a collection never races an
//! add, import or build (see [`roots::TempRoots`] and [`GcLock`]).
//!
//! - `roots.rs`: permanent roots under `STATE/gcroots` (direct, indirect,
//!   per-user), indirect roots made by `ferry build --root`, and temporary
//!   roots files under `STATE/temproots` (one per client connection or
//!   process, as Nix 2.3's).
//! - `collect.rs`: marking (closures over the database, with
//!   `keep-outputs`/`keep-derivations`) and the sweep (rows first, files
//!   after; leftovers of a collection killed halfway go in the next one).

mod collect;
mod roots;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use ferry_formats::StorePath;

use crate::store::{Store, StoreError};

pub use roots::TempRoots;

/// What a collection does (Nix's `GCOptions::GCAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// Delete dead paths, stopping once `max_freed` bytes (if any) are freed.
    DeleteDead { max_freed: Option<u64> },
    /// Delete these paths, refusing any that is alive ([`StoreError::Alive`]).
    DeleteSpecific(Vec<StorePath>),
    /// List the dead paths without deleting them.
    ReturnDead,
    /// List the live paths.
    ReturnLive,
}

/// Options of one collection.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub action: GcAction,
    /// Keep the outputs of every live derivation (Nix's `keep-outputs`,
    /// default false).
    pub keep_outputs: bool,
    /// Keep the deriver of every live path (Nix's `keep-derivations`,
    /// default true).
    pub keep_derivations: bool,
    /// Further roots held by the caller: the temporary roots of live
    /// connections and the inputs and outputs of builds and transfers in
    /// progress. A `.drv` here keeps the outputs of its closure's
    /// derivations too (what a build of it uses).
    pub extra_roots: BTreeSet<StorePath>,
}

impl GcOptions {
    /// Nix's defaults: keep-outputs off, keep-derivations on.
    pub fn new(action: GcAction) -> GcOptions {
        GcOptions {
            action,
            keep_outputs: false,
            keep_derivations: true,
            extra_roots: BTreeSet::new(),
        }
    }
}

/// What a collection did or found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcResult {
    /// Listed (ReturnDead, ReturnLive) paths, or the first
    /// [`MAX_REPORTED`] deleted ones (DeleteDead, DeleteSpecific: memory
    /// stays flat however many go; [`GcResult::deleted`] counts them all).
    pub paths: Vec<StorePath>,
    /// How many paths were deleted.
    pub deleted: u64,
    /// Bytes freed (NAR sizes of the deleted paths plus leftovers removed).
    pub bytes_freed: u64,
}

/// Deleted paths a [`GcResult`] names at most.
pub const MAX_REPORTED: usize = 1000;

/// The store-wide collector lock, `STATE/gc.lock` (an `flock`): a
/// collection holds it exclusively; adding a temporary root holds it
/// shared, so a root is either seen by the collection or added after it
/// ended (Nix 2.3's protocol). Released on drop.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl Store {
    fn gc_lock_file(&self) -> Result<File, StoreError> {
        let path: PathBuf = self.loc.state_dir.join("gc.lock");
        crate::lock::open_lock_at(&path)
            .map_err(StoreError::io(format!("opening {}", path.display())))
    }

    /// Hold the collector lock shared: no collection runs until the guard
    /// drops. Hold it across "add or find a path, then root it" so that
    /// the path cannot be collected in between. Blocks while a collection
    /// runs (call it off async threads).
    pub fn gc_shared(&self) -> Result<GcLock, StoreError> {
        let file = self.gc_lock_file()?;
        file.lock_shared()
            .map_err(StoreError::io("taking the collector lock (shared)"))?;
        Ok(GcLock { _file: file })
    }

    /// Hold the collector lock exclusively (what a collection does).
    pub(crate) fn gc_exclusive(&self) -> Result<GcLock, StoreError> {
        let file = self.gc_lock_file()?;
        file.lock()
            .map_err(StoreError::io("taking the collector lock"))?;
        Ok(GcLock { _file: file })
    }

    /// Nix's `collectGarbage`: find the roots (permanent, temporary files,
    /// `opts.extra_roots`), then list or delete. Blocking; holds the
    /// collector lock for its whole run, so adds that root a path wait.
    pub fn collect_garbage(&self, opts: &GcOptions) -> Result<GcResult, StoreError> {
        let _lock = self.gc_exclusive()?;
        collect::run(self, opts)
    }

    /// Remove what a collection or build killed halfway left in the store
    /// directory (unregistered trees, temporaries of dead processes), under
    /// the collector lock; returns how many entries went. For start-up.
    pub fn remove_gc_leftovers(&self) -> Result<usize, StoreError> {
        let _lock = self.gc_exclusive()?;
        let mut n = 0;
        for stray in self.stray_entries()? {
            if !matches!(stray.kind, crate::StrayKind::Foreign) && self.remove_stray(&stray)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Why `path` is alive, if it is: the root (a link, a temporary
    /// root file, or "in use") whose closure holds it. For `--delete`'s
    /// refusals and `ferry gc --list-roots`-style reports.
    pub fn why_alive(
        &self,
        path: &StorePath,
        opts: &GcOptions,
    ) -> Result<Option<String>, StoreError> {
        let _lock = self.gc_exclusive()?;
        collect::why_alive(self, path, opts)
    }
}

#[cfg(test)]
mod tests;
