//! Build directories (`$TMPDIR/ferry-build-PID-NAME-N`), kept empty for the
//! next sandboxed build once one ends (`spares.rs`), and the removal of
//! those a dead process left behind.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Build directories of finished sandboxed builds, renamed
/// `ferry-build-PID-spare-N`, each with an empty `build/`.
static SPARES: crate::spares::Spares = crate::spares::Spares::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A build's directory (0700, the daemon's), removed when dropped unless
/// [`BuildParent::recycle`]d.
#[derive(Debug)]
pub(crate) struct BuildParent {
    path: PathBuf,
}

impl BuildParent {
    /// `TMP/ferry-build-PID-NAME-N`; with `build/` inside when `inner`
    /// (where the builder works, reached through a bind mount). A sandboxed
    /// build (`inner`) reuses a spare when one is kept.
    pub(crate) fn create(tmp: &Path, name: &str, inner: bool) -> io::Result<BuildParent> {
        let spare = if inner { SPARES.take(tmp) } else { None };
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp.join(format!(
                "{BUILD_DIR_PREFIX}{}-{name}-{n}",
                std::process::id()
            ));
            if path.symlink_metadata().is_ok() {
                continue;
            }
            let made = match &spare {
                Some(spare) => rename_noreplace(spare, &path),
                None => std::fs::DirBuilder::new().mode(0o700).create(&path),
            };
            match made {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let parent = BuildParent { path };
            if inner {
                if spare.is_none() {
                    std::fs::create_dir(parent.build_dir())?;
                }
                // Whatever the last builder made of it (its owner gets it
                // back later, see `sandbox/plan.rs`).
                std::fs::set_permissions(
                    parent.build_dir(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )?;
            }
            return Ok(parent);
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `build/` inside.
    pub(crate) fn build_dir(&self) -> PathBuf {
        self.path.join("build")
    }

    /// Once every process of the build is gone: empties `build/` and keeps
    /// the directory for the next build (or removes it).
    pub(crate) fn recycle(self) {
        let spare = self.path.with_file_name(format!(
            "{BUILD_DIR_PREFIX}{}-spare-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let only_build = std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
                    .is_ok_and(|names| names == [std::ffi::OsString::from("build")])
            })
            .unwrap_or(false);
        if !only_build || crate::spares::emptied(&self.build_dir()).is_err() {
            return; // dropped: removed
        }
        if rename_noreplace(&self.path, &spare).is_err() {
            return;
        }
        std::mem::forget(self);
        if let Err(spare) = SPARES.keep(spare) {
            let _ = crate::sandbox::remove_tree(&spare);
        }
    }
}

impl BuildParent {
    /// For `--keep-failed`: renames the directory `ferry-build-kept-NAME-N`
    /// (a name neither [`remove_stale_build_dirs`] nor the spares take:
    /// it stays until someone removes it) and returns where it is. Its
    /// owner and modes stay as the build left them (as Nix's: with a
    /// root daemon it is root's, 0700, its `build/` the build user's).
    pub(crate) fn keep(self) -> Result<PathBuf, (BuildParent, io::Error)> {
        let tmp = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(BUILD_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(_pid, rest)| rest.rsplit_once('-'))
            .map_or("build", |(name, _n)| name)
            .to_string();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let kept = tmp.join(format!("{BUILD_DIR_PREFIX}{KEPT}-{name}-{n}"));
            match rename_noreplace(&self.path, &kept) {
                Ok(()) => {
                    std::mem::forget(self);
                    return Ok(kept);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err((self, e)),
            }
        }
    }
}

/// The word after [`BUILD_DIR_PREFIX`] in the name of a directory kept by
/// `--keep-failed`.
pub const KEPT: &str = "kept";

/// `rename`, but never over an existing name (TMPDIR is everyone's).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(io::Error::from)
}

impl Drop for BuildParent {
    fn drop(&mut self) {
        let _ = crate::sandbox::remove_tree(&self.path);
    }
}

/// Build directories are `$TMPDIR/ferry-build-PID-NAME-XXXXXX`, PID the
/// process that made it (the daemon, or `ferry build` without one).
pub const BUILD_DIR_PREFIX: &str = "ferry-build-";

/// Removes build directories in `tmp` left by a process that died (a
/// daemon killed -9 cannot remove its builds' directories). Call at
/// start-up; directories of live processes (and ours) are kept. Returns
/// how many were removed.
pub fn remove_stale_build_dirs(tmp: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(BUILD_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive =
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            crate::sandbox::remove_tree(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_build_dirs_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has pid 999999999 (pid_max is at most 2^22).
        let stale = tmp.path().join("ferry-build-999999999-hello-abc123");
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        std::fs::write(stale.join("sub/f"), "x").unwrap();
        // A read-only directory inside, as builds leave them.
        std::fs::set_permissions(
            stale.join("sub"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        let ours = tmp
            .path()
            .join(format!("ferry-build-{}-mine-def456", std::process::id()));
        std::fs::create_dir(&ours).unwrap();
        let other = tmp.path().join("something-else");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(remove_stale_build_dirs(tmp.path()).unwrap(), 1);
        assert!(!stale.exists());
        assert!(ours.exists() && other.exists());
    }
}
