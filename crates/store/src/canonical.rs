//! Making a builder's outputs canonical before they enter the store, as
//! Nix's `canonicalisePathMetaData` does: the builder wrote them as a build
//! user, with any modes it liked (setuid, world-writable) and possibly hard
//! links to files that are not its own.
//!
//! Every entry ends owned by the daemon (root:root when it is root), without
//! write, setuid, setgid or sticky bits (0444, or 0555 for directories and
//! executables) and with mtime 1. An entry the builder does not own, or a
//! file with a hard link outside the outputs, is never changed in place:
//! chmod or chown on it would change the other file too (a valid store path,
//! or a file the builder linked in from elsewhere). Such a file is copied
//! (the link is broken); such a directory is refused. Call this only when no
//! process of the build user is left and the trees are in a place only the
//! daemon can reach.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Canonicalise the output trees `trees` (missing ones are skipped), all
/// written by the builder whose files are owned by `builder_uid` on the
/// host (the build user, or the daemon's own uid in a user namespace).
pub fn canonicalise_outputs(trees: &[PathBuf], builder_uid: u32) -> io::Result<()> {
    // Pass 1: how many links of each multiply-linked inode lie inside the
    // outputs; the others lead outside.
    let mut links: HashMap<(u64, u64), u64> = HashMap::new();
    for tree in trees {
        if fs::symlink_metadata(tree).is_ok() {
            count_links(tree, &mut links)?;
        }
    }
    let ctx = Ctx {
        links,
        builder_uid,
        root: rustix::process::geteuid().is_root(),
    };
    for tree in trees {
        match fs::symlink_metadata(tree) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
            Ok(_) => ctx.walk(tree)?,
        }
    }
    Ok(())
}

/// Walks are iterative: a tree thousands of levels deep costs heap, not
/// stack (the NAR dump refuses it afterwards, with a clear error).
fn count_links(path: &Path, links: &mut HashMap<(u64, u64), u64>) -> io::Result<()> {
    let mut todo = vec![path.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                todo.push(entry?.path());
            }
        } else if meta.nlink() > 1 {
            *links.entry((meta.dev(), meta.ino())).or_default() += 1;
        }
    }
    Ok(())
}

/// A step of the canonicalising walk: a directory is finished after all
/// its entries.
enum Step {
    Enter(PathBuf),
    Finish(PathBuf),
}

struct Ctx {
    links: HashMap<(u64, u64), u64>,
    builder_uid: u32,
    root: bool,
}

impl Ctx {
    fn walk(&self, tree: &Path) -> io::Result<()> {
        let mut steps = vec![Step::Enter(tree.to_path_buf())];
        while let Some(step) = steps.pop() {
            match step {
                // Metadata read again: `check_dir` may have changed its mode.
                Step::Finish(path) => self.finish(&path, &fs::symlink_metadata(&path)?)?,
                Step::Enter(path) => {
                    let meta = fs::symlink_metadata(&path)?;
                    if meta.is_dir() {
                        self.check_dir(&path, &meta)?;
                        let entries = fs::read_dir(&path)?;
                        steps.push(Step::Finish(path));
                        for entry in entries {
                            steps.push(Step::Enter(entry?.path()));
                        }
                    } else {
                        self.file(&path, meta)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A directory must be the builder's; it is made ours to work in.
    fn check_dir(&self, path: &Path, meta: &fs::Metadata) -> io::Result<()> {
        if meta.uid() != self.builder_uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "invalid ownership on directory {} (uid {}, the builder is {}): refusing it",
                    path.display(),
                    meta.uid(),
                    self.builder_uid
                ),
            ));
        }
        // Ours to change: readable and writable while we work inside.
        if meta.permissions().mode() & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// A file or symlink: canonical in place if the builder's own inode,
    /// else replaced by a copy.
    fn file(&self, path: &Path, meta: fs::Metadata) -> io::Result<()> {
        let shared = meta.nlink() > 1
            && self.links.get(&(meta.dev(), meta.ino())).copied() != Some(meta.nlink());
        if meta.uid() != self.builder_uid || shared {
            // Not the builder's own inode: leave it alone, put a copy here.
            let copied = break_link(path, &meta)?;
            return self.finish(path, &copied);
        }
        self.finish(path, &meta)
    }

    /// Owner, mode, extended attributes and mtime of one entry the builder
    /// owns (or we copied).
    fn finish(&self, path: &Path, meta: &fs::Metadata) -> io::Result<()> {
        remove_xattrs(path)?;
        crate::fsops::canonical_entry(path, meta, self.root)
    }
}

/// Extended attributes that stay, as in Nix's default `ignored-acls`.
const KEPT_XATTRS: &[&[u8]] = &[b"security.selinux", b"system.nfs4_acl", b"security.csm"];

/// Removes the extended attributes of `path` (ACLs among them: one could
/// grant a build user write access that the mode does not show), as Nix
/// does; a file system without them is fine.
fn remove_xattrs(path: &Path) -> io::Result<()> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut buf = vec![0u8; size];
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if KEPT_XATTRS.contains(&name) {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        match rustix::fs::lremovexattr(path, name) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "removing the extended attribute {} of {}: {e}",
                        name.to_string_lossy(),
                        path.display()
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Replaces `path` (a file or symlink shared with something outside the
/// outputs, or not owned by the builder) by a fresh copy of it, without
/// touching the original inode. Returns the copy's metadata.
fn break_link(path: &Path, meta: &fs::Metadata) -> io::Result<fs::Metadata> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("no file name: {}", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".ferry-copy-");
    tmp_name.push(name);
    let tmp = path.with_file_name(tmp_name);
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(path)?, &tmp)?;
    } else if ft.is_file() {
        let mut from = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nofollow())
            .open(path)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        io::copy(&mut from, &mut to)?;
        let exec = meta.permissions().mode() & 0o100 != 0;
        to.set_permissions(fs::Permissions::from_mode(if exec { 0o700 } else { 0o600 }))?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is neither a file, a directory nor a symlink",
                path.display()
            ),
        ));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::symlink_metadata(path)
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[test]
    fn modes_are_canonical_and_setuid_bits_gone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("suid"), "x").unwrap();
        fs::set_permissions(out.join("suid"), fs::Permissions::from_mode(0o6777)).unwrap();
        fs::write(out.join("plain"), "y").unwrap();
        fs::set_permissions(out.join("plain"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::create_dir(out.join("ro")).unwrap();
        fs::write(out.join("ro/f"), "z").unwrap();
        fs::set_permissions(out.join("ro"), fs::Permissions::from_mode(0o1555)).unwrap();
        symlink("plain", out.join("link")).unwrap();
        // A user xattr (where the file system has them) is removed.
        let with_xattr = rustix::fs::lsetxattr(
            out.join("plain"),
            "user.ferry",
            b"x",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        canonicalise_outputs(&[out.clone(), dir.path().join("missing")], uid()).unwrap();
        let mode = |p: &str| fs::symlink_metadata(out.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("suid"), 0o555);
        assert_eq!(mode("plain"), 0o444);
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(mode("ro/f"), 0o444);
        assert_eq!(fs::symlink_metadata(&out).unwrap().mode() & 0o7777, 0o555);
        if with_xattr {
            assert_eq!(rustix::fs::llistxattr_query(out.join("plain")).unwrap(), 0);
        }
        for p in ["suid", "plain", "ro", "ro/f", "link"] {
            assert_eq!(fs::symlink_metadata(out.join(p)).unwrap().mtime(), 1, "{p}");
        }
    }

    #[test]
    fn hard_links_outside_are_copied_and_the_original_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "secret").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o640)).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::hard_link(&outside, out.join("linked")).unwrap();
        // Two links both inside: kept as one inode.
        fs::write(out.join("a"), "a").unwrap();
        fs::hard_link(out.join("a"), out.join("b")).unwrap();
        canonicalise_outputs(std::slice::from_ref(&out), uid()).unwrap();
        let o = fs::metadata(&outside).unwrap();
        assert_eq!(o.mode() & 0o7777, 0o640, "the outside file kept its mode");
        assert_ne!(o.mtime(), 1);
        let l = fs::metadata(out.join("linked")).unwrap();
        assert_ne!(l.ino(), o.ino(), "the link was broken");
        assert_eq!(fs::read(out.join("linked")).unwrap(), b"secret");
        assert_eq!(l.mode() & 0o7777, 0o444);
        let (a, b) = (
            fs::metadata(out.join("a")).unwrap(),
            fs::metadata(out.join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o444);
    }

    #[test]
    fn a_very_deep_tree_costs_heap_not_stack() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // Created relative to each level (an absolute path would exceed PATH_MAX).
        let mut cur = std::fs::File::open(dir.path()).unwrap();
        for name in std::iter::once("out").chain(std::iter::repeat_n("d", 3000)) {
            rustix::fs::mkdirat(&cur, name, rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
            cur = fs::File::from(
                rustix::fs::openat(
                    &cur,
                    name,
                    rustix::fs::OFlags::DIRECTORY,
                    rustix::fs::Mode::empty(),
                )
                .unwrap(),
            );
        }
        // A small stack, as a blocking thread has at most.
        let t = std::thread::Builder::new().stack_size(256 << 10);
        let r = t
            .spawn(move || canonicalise_outputs(std::slice::from_ref(&out), uid()))
            .unwrap()
            .join()
            .unwrap();
        // Paths that long may fail to resolve; what matters is no overflow.
        let _ = r;
    }

    #[test]
    fn entries_of_another_owner_are_copied_and_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("f"), "f").unwrap();
        // We own everything here, so claim the builder is someone else.
        let other = uid() + 1;
        let err = canonicalise_outputs(std::slice::from_ref(&out), other).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        canonicalise_outputs(std::slice::from_ref(&file), other).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"x");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o444);
    }
}
