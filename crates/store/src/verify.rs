//! `ferry store verify`: recompute every valid path's NAR hash and size and
//! compare them with the database, and find entries in the store directory
//! that are not valid paths (what a crash or a failed registration left),
//! which `--repair` removes under the path's lock.

use std::ffi::OsString;
use std::io;

use ferry_formats::hash::HashingWriter;
use ferry_formats::{nar, StorePath};

use crate::lock::PathLock;
use crate::store::{Store, StoreError, TEMP_PREFIX};

/// Chroots of sandboxed builds, `.ferry-chroot-PID-N` (ferry-build's
/// `sandbox::CHROOT_PREFIX`; the store does not depend on that crate).
const CHROOT_PREFIX: &str = ".ferry-chroot-";

/// An entry of the store directory that is not a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayEntry {
    pub name: OsString,
    /// Why it is there, as far as the name tells.
    pub kind: StrayKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StrayKind {
    /// A store path name without a row: a leftover of a crashed or failed
    /// build or add.
    Unregistered,
    /// A temporary entry or chroot whose process is gone.
    StaleTemporary,
    /// Not a store path name at all.
    Foreign,
}

impl std::fmt::Display for StrayKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StrayKind::Unregistered => {
                "not a valid path (left by a crashed or failed build or add)"
            }
            StrayKind::StaleTemporary => "a temporary entry whose process is gone",
            StrayKind::Foreign => "not a store path name",
        })
    }
}

/// One disagreement between the database and the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    pub path: StorePath,
    pub problem: String,
}

impl Store {
    /// Check every valid path; returns the problems found (empty when clean).
    pub fn verify(&self) -> Result<Vec<VerifyProblem>, StoreError> {
        let mut problems = Vec::new();
        for p in self.all_valid()? {
            let info = self.valid_info(&p)?;
            let mut hw = HashingWriter::new(io::sink());
            let problem = match nar::dump(&self.real_path(&p), &mut hw) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Some("missing from the store directory".to_string())
                }
                Err(e) => Some(format!("unreadable: {e}")),
                Ok(_) => {
                    let (hash, size, _) = hw.finish();
                    (hash != info.nar_hash || size != info.nar_size).then(|| {
                        format!(
                            "NAR hash {hash} and size {size} differ from the database's {} and {}",
                            info.nar_hash, info.nar_size
                        )
                    })
                }
            };
            if let Some(problem) = problem {
                problems.push(VerifyProblem { path: p, problem });
            }
        }
        let seen: std::collections::BTreeSet<StorePath> =
            problems.iter().map(|p| p.path.clone()).collect();
        problems.extend(self.verify_derivations(&seen)?);
        Ok(problems)
    }
}

impl Store {
    /// Entries of the store directory that are not valid paths. Skipped:
    /// valid paths, paths being built or added now (their lock is held),
    /// temporaries and chroots of live processes, and other dot-entries
    /// (none is a store path name; tools such as the testbed keep files
    /// there).
    pub fn stray_entries(&self) -> Result<Vec<StrayEntry>, StoreError> {
        let dir = self.real_store_dir();
        let mut strays = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(StoreError::io(format!("reading {}", dir.display())))?;
        for e in entries {
            let name = e
                .map_err(StoreError::io(format!("reading {}", dir.display())))?
                .file_name();
            if let Some((kind, _lock)) = self.classify(&name)? {
                strays.push(StrayEntry { name, kind });
            }
        }
        strays.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(strays)
    }

    /// Remove `stray` (from [`Store::stray_entries`]) if it is still stray:
    /// a store path name under its lock, after checking again that it is
    /// not valid; one whose lock is held (a build is writing it) is left.
    /// Returns whether it was removed.
    pub fn remove_stray(&self, stray: &StrayEntry) -> Result<bool, StoreError> {
        let Some((_, _lock)) = self.classify(&stray.name)? else {
            return Ok(false);
        };
        let real = self.real_store_dir().join(&stray.name);
        crate::remove::remove_tree(&real)
            .map_err(StoreError::io(format!("removing {}", real.display())))?;
        Ok(true)
    }

    /// Whether `name` is stray, and how; for a store path name, with its
    /// lock, held (so that no build starts writing it) until dropped.
    fn classify(
        &self,
        name: &OsString,
    ) -> Result<Option<(StrayKind, Option<PathLock>)>, StoreError> {
        let Some(text) = name.to_str() else {
            return Ok(Some((StrayKind::Foreign, None)));
        };
        if let Some(rest) = text
            .strip_prefix(TEMP_PREFIX)
            .or_else(|| text.strip_prefix(CHROOT_PREFIX))
        {
            let alive = rest
                .split('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
                .is_none_or(|pid| rustix::process::test_kill_process(pid).is_ok());
            return Ok((!alive).then_some((StrayKind::StaleTemporary, None)));
        }
        if text.starts_with('.') {
            return Ok(None);
        }
        let Ok(path) = ferry_formats::StorePath::from_base_name(text) else {
            return Ok(Some((StrayKind::Foreign, None)));
        };
        if self.is_valid(&path)? {
            return Ok(None);
        }
        // Being built or added right now: not stray (yet).
        let Some(lock) = self.try_lock_path(&path)? else {
            return Ok(None);
        };
        if self.is_valid(&path)? {
            return Ok(None);
        }
        Ok(Some((StrayKind::Unregistered, Some(lock))))
    }
}

/// What `ferry store verify` prints: one line per problem or stray entry
/// (stdout), a summary (stderr), and whether all is well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub lines: Vec<String>,
    pub summary: Vec<String>,
    pub ok: bool,
}

impl Store {
    /// Checks every valid path and lists stray entries (removed when
    /// `repair`), as `ferry store verify [--repair]` reports it, here or
    /// through the daemon.
    pub fn verify_report(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let count = self.all_valid()?.len();
        let problems = self.verify()?;
        let mut lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", self.display(&p.path), p.problem))
            .collect();
        let mut strays_left = 0;
        for stray in self.stray_entries()? {
            let shown = self.real_store_dir().join(&stray.name);
            if repair && self.remove_stray(&stray)? {
                lines.push(format!("{}: {}: removed", shown.display(), stray.kind));
            } else {
                lines.push(format!("{}: {}", shown.display(), stray.kind));
                strays_left += 1;
            }
        }
        let mut summary = vec![if problems.is_empty() {
            format!("checked {count} valid paths: all match the database")
        } else {
            format!(
                "checked {count} valid paths: {} do not match the database",
                problems.len()
            )
        }];
        if strays_left > 0 {
            summary.push(format!(
                "{strays_left} entries of the store directory are not valid paths; `ferry store verify --repair` removes them"
            ));
        }
        Ok(VerifyReport {
            lines,
            summary,
            ok: problems.is_empty() && strays_left == 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_store;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn strays_are_reported_and_removed_but_live_work_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let valid = s.add_text("valid", b"v", &[]).unwrap();
        let root = s.real_store_dir().to_path_buf();
        // A failed build's output: unregistered, read-only inside.
        let left = s
            .store_dir()
            .text_path("left", &ferry_formats::Sha256Hash::digest(b"l"), &[])
            .unwrap();
        fs::create_dir_all(root.join(left.base_name()).join("sub")).unwrap();
        fs::set_permissions(
            root.join(left.base_name()).join("sub"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        // One being built now: its lock is held.
        let busy = s
            .store_dir()
            .text_path("busy", &ferry_formats::Sha256Hash::digest(b"b"), &[])
            .unwrap();
        fs::write(root.join(busy.base_name()), "half").unwrap();
        let busy_lock = s.lock_path(&busy).unwrap();
        // Temporaries of a dead and of a live process, a stale chroot,
        // another tool's dot-file, and a name no store path has.
        fs::create_dir(root.join(".tmp-ferry-999999999-0")).unwrap();
        fs::create_dir(root.join(format!(".tmp-ferry-{}-77", std::process::id()))).unwrap();
        fs::create_dir(root.join(".ferry-chroot-999999999-3")).unwrap();
        fs::write(root.join(".ferry-testbed-fill"), "").unwrap();
        fs::write(root.join("foo"), "").unwrap();

        let strays = s.stray_entries().unwrap();
        let shown: Vec<(String, StrayKind)> = strays
            .iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
            .collect();
        let mut want: Vec<(String, StrayKind)> = vec![
            (
                ".ferry-chroot-999999999-3".into(),
                StrayKind::StaleTemporary,
            ),
            (".tmp-ferry-999999999-0".into(), StrayKind::StaleTemporary),
            (left.base_name().to_string(), StrayKind::Unregistered),
            ("foo".into(), StrayKind::Foreign),
        ];
        want.sort();
        assert_eq!(shown, want);
        for e in &strays {
            assert!(s.remove_stray(e).unwrap());
        }
        assert!(s.stray_entries().unwrap().is_empty());
        assert!(s.real_path(&valid).exists() && s.real_path(&busy).exists());
        assert!(root.join(".ferry-testbed-fill").exists());
        // Once the build is over (lock released), its leftover is stray.
        drop(busy_lock);
        let strays = s.stray_entries().unwrap();
        assert_eq!(strays.len(), 1);
        assert!(s.remove_stray(&strays[0]).unwrap());
        assert!(!s.real_path(&busy).exists());
        // An entry that became valid meanwhile is not removed.
        let e = StrayEntry {
            name: valid.base_name().into(),
            kind: StrayKind::Unregistered,
        };
        assert!(!s.remove_stray(&e).unwrap());
        assert!(s.verify().unwrap().is_empty());
    }
}
