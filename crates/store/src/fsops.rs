//! File-system steps of making a path valid: canonical metadata, durability,
//! and removing trees that were left read-only.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

/// Give a tree the metadata every store path has: no write bits (0444 or
/// 0555 for files, 0555 for directories), mtime 1, and (when running as
/// root) owned by root, whichever build user wrote it. Symlinks keep their
/// own mode (Linux ignores it) but get mtime 1 too. Children first, so that
/// a directory's mtime is set after its last entry was touched.
pub(crate) fn make_canonical(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        for entry in fs::read_dir(path)? {
            make_canonical(&entry?.path())?;
        }
    }
    canonical_entry(path, &meta, rustix::process::geteuid().is_root())
}

/// One entry's canonical metadata (see [`make_canonical`]): owned by root
/// when `root`, mode 0444 or 0555 (no write, setuid, setgid or sticky
/// bits), mtime 1. `meta` is the entry's metadata as it was.
pub(crate) fn canonical_entry(path: &Path, meta: &fs::Metadata, root: bool) -> io::Result<()> {
    let ft = meta.file_type();
    if root && (meta.uid() != 0 || meta.gid() != 0) {
        std::os::unix::fs::lchown(path, Some(0), Some(0))?;
    }
    if !ft.is_symlink() {
        let exec = ft.is_dir() || meta.permissions().mode() & 0o100 != 0;
        let mode = if exec { 0o555 } else { 0o444 };
        if meta.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
    }
    let one = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: one,
            last_modification: one,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Trees with at most this many entries are synced file by file; larger
/// ones with one `syncfs`.
const FSYNC_EACH_MAX: usize = 64;

/// Make a tree's contents durable. A small tree (most build outputs, every
/// `.drv`) gets an fsync per file and directory: a few cheap calls that
/// wait only for its own data. A large one gets one `syncfs` of the file
/// system holding `fs_of`, cheaper than thousands of fsyncs but it also
/// waits for everyone else's dirty data, which on a busy machine costs tens
/// of milliseconds.
pub(crate) fn sync_tree(path: &Path, fs_of: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    if collect_syncable(path, &mut entries)? {
        for p in entries {
            fs::File::open(p)?.sync_all()?;
        }
        Ok(())
    } else {
        let f = fs::File::open(fs_of)?;
        rustix::fs::syncfs(&f)?;
        Ok(())
    }
}

/// Gather the files and directories of a tree (not symlinks: their data is
/// in their directory); false as soon as there are too many.
fn collect_syncable(path: &Path, out: &mut Vec<std::path::PathBuf>) -> io::Result<bool> {
    let ft = fs::symlink_metadata(path)?.file_type();
    if ft.is_symlink() {
        return Ok(true);
    }
    if ft.is_dir() {
        for entry in fs::read_dir(path)? {
            if !collect_syncable(&entry?.path(), out)? {
                return Ok(false);
            }
        }
    }
    out.push(path.to_path_buf());
    Ok(out.len() <= FSYNC_EACH_MAX)
}

/// Make a rename or creation inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Remove a tree even if it was made read-only, however deep. Missing is
/// not an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    crate::remove::remove_tree(path)
}

/// Renames a canonical tree to `to` (same file system) without replacing
/// anything there, and gives it mtime 1 again (moving a directory rewrites
/// its `..`). Unprivileged, a read-only directory cannot be moved to another
/// parent: it is made writable by its owner (the daemon) for the rename.
pub(crate) fn move_canonical(from: &Path, to: &Path) -> io::Result<()> {
    let flags = rustix::fs::RenameFlags::NOREPLACE;
    match rustix::fs::renameat_with(CWD, from, CWD, to, flags) {
        Ok(()) => {}
        Err(rustix::io::Errno::ACCESS) if fs::symlink_metadata(from)?.is_dir() => {
            fs::set_permissions(from, fs::Permissions::from_mode(0o755))?;
            let moved = rustix::fs::renameat_with(CWD, from, CWD, to, flags);
            let back = if moved.is_ok() { to } else { from };
            fs::set_permissions(back, fs::Permissions::from_mode(0o555))?;
            moved?;
        }
        Err(e) => return Err(e.into()),
    }
    let one = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        to,
        &Timestamps {
            last_access: one,
            last_modification: one,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
