//! Removing a tree that a builder left, whatever it did to it.
//!
//! A failed build's output must go, or every later build of that path
//! fails. A builder can leave read-only directories, trees thousands of
//! levels deep, or paths longer than `PATH_MAX`: removal walks the tree
//! with directory file descriptors (`openat`/`unlinkat`, one descriptor at
//! a time, going back up through `..` and checking it is the directory it
//! came from), on a heap stack, so neither the path length nor the depth
//! nor the descriptor limit stops it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

/// One directory on the way down: its name in its parent, its identity,
/// and its subdirectories still to remove.
struct Level {
    name: OsString,
    id: (u64, u64),
    subdirs: Vec<OsString>,
}

/// Remove `path` and everything under it, even if read-only, however deep.
/// Missing is not an error. Symlinks are removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let name = match path.file_name() {
        Some(n) => n.to_os_string(),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: refusing to remove a path without a name",
                    path.display()
                ),
            ))
        }
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let top = rustix::fs::openat(CWD, parent, dir_flags(), Mode::empty())?;
    let st = match rustix::fs::statat(&top, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return ignore_missing(rustix::fs::unlinkat(&top, &name, AtFlags::empty()));
    }
    let mut cur = rustix::fs::openat(&top, &name, dir_flags(), Mode::empty())?;
    let mut stack = vec![Level {
        name,
        id: id_of(&cur)?,
        subdirs: empty_files(&cur)?,
    }];
    loop {
        let level = stack
            .last_mut()
            .expect("the stack holds the current directory");
        if let Some(sub) = level.subdirs.pop() {
            let child = match rustix::fs::openat(&cur, &sub, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                // No longer a directory: remove whatever it is.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    ignore_missing(rustix::fs::unlinkat(&cur, &sub, AtFlags::empty()))?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let level = Level {
                name: sub,
                id: id_of(&child)?,
                subdirs: empty_files(&child)?,
            };
            stack.push(level);
            cur = child;
            continue;
        }
        let done = stack.pop().expect("checked above");
        let Some(parent) = stack.last() else {
            return ignore_missing(rustix::fs::unlinkat(&top, &done.name, AtFlags::REMOVEDIR));
        };
        let up = rustix::fs::openat(&cur, "..", dir_flags(), Mode::empty())?;
        if id_of(&up)? != parent.id {
            return Err(io::Error::other(format!(
                "{}: a directory inside was moved while it was being removed",
                path.display()
            )));
        }
        ignore_missing(rustix::fs::unlinkat(&up, &done.name, AtFlags::REMOVEDIR))?;
        cur = up;
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn id_of(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

fn ignore_missing(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Make the directory writable by us, remove everything in it that is not
/// a directory, and return the names of its subdirectories.
fn empty_files(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let st = rustix::fs::fstat(dir)?;
    if st.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(dir, Mode::from_raw_mode(0o700))?;
    }
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            _ => false,
        };
        if is_dir {
            subdirs.push(name.to_os_string());
        } else {
            files.push(name.to_os_string());
        }
    }
    for f in files {
        ignore_missing(rustix::fs::unlinkat(dir, &f, AtFlags::empty()))?;
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_read_only_deep_and_overlong_trees() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("t");
        fs::create_dir(&top).unwrap();
        // 1500 levels of 40-character names: 60,000 bytes of path, far
        // over PATH_MAX, made with openat as a builder's `cd` would.
        let name = "d".repeat(40);
        let mut fd = rustix::fs::openat(CWD, &top, dir_flags(), Mode::empty()).unwrap();
        for i in 0..1500 {
            rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            let f = rustix::fs::openat(
                &fd,
                "f",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o444),
            )
            .unwrap();
            drop(f);
            rustix::fs::symlinkat("/", &fd, "link").unwrap();
            let child = rustix::fs::openat(&fd, name.as_str(), dir_flags(), Mode::empty()).unwrap();
            if i % 2 == 0 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o555)).unwrap();
            }
            fd = child;
        }
        drop(fd);
        fs::set_permissions(&top, fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        // Missing, a file and a symlink.
        remove_tree(&top).unwrap();
        fs::write(&top, "x").unwrap();
        remove_tree(&top).unwrap();
        std::os::unix::fs::symlink(dir.path(), &top).unwrap();
        remove_tree(&top).unwrap();
        assert!(dir.path().exists() && fs::symlink_metadata(&top).is_err());
    }
}
