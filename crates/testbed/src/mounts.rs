//! Mounts. In the initial mount namespace the testbed makes DIR/ns and
//! DIR/hosts private bind mounts of themselves (so nothing mounted below
//! them propagates anywhere), a tmpfs per host at DIR/hosts/hI/store, and
//! a persistent mount namespace per host, bind-mounted at DIR/ns/hI.mnt
//! (no holder process needed). Inside that namespace the host's tmpfs is
//! bind-mounted over DIR/store: every host and the master use the same
//! store path, as offload requires, but each sees its own store.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::run;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths")
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    let src_c = CString::new(src).expect("no NUL");
    let fs_c = CString::new(fstype).expect("no NUL");
    let data_c = CString::new(data).expect("no NUL");
    let t = cstr(target);
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::mount(
            src_c.as_ptr(),
            t.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                fs_c.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data_c.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "mount {src} on {} (type {fstype:?}, {data:?})",
                target.display()
            )
        });
    }
    Ok(())
}

/// Bind-mount a directory on itself and make it private.
pub fn private_bind(dir: &Path) -> Result<()> {
    let s = dir.to_string_lossy();
    mount(&s, dir, "", libc::MS_BIND, "")?;
    mount("none", dir, "", libc::MS_PRIVATE, "")
}

/// A tmpfs of `size` (as tmpfs reads it: 1G, 512M...), private.
pub fn tmpfs(dir: &Path, size: &str) -> Result<()> {
    mount(
        "ferry-testbed-store",
        dir,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        &format!("size={size},mode=0755"),
    )?;
    mount("none", dir, "", libc::MS_PRIVATE, "")
}

/// Run once inside the new namespace: the host's store over DIR/store, then
/// drop this namespace's copies of mounts that would tie it to others (the
/// other hosts' stores, namespace files, /run/netns).
const NS_SETUP: &str = r#"set -e
mount --bind "$2" "$1/store"
umount -l "$1/hosts" "$1/ns" 2>/dev/null || true
umount -l /run/netns 2>/dev/null || true
awk '$0 ~ / - nsfs / || $0 ~ / - tmpfs ferry-testbed-store / { print $5 }' /proc/self/mountinfo \
  | grep -vxF "$1/store" | sort -r | xargs -r umount -l 2>/dev/null || true
"#;

/// Make the host's persistent mount namespace at `ns_file` (in DIR/ns, a
/// private mount, as unshare requires) with `store` over DIR/store.
pub fn make_mount_ns(dir: &Path, ns_file: &Path, store: &Path) -> Result<()> {
    fs::write(ns_file, b"").with_context(|| format!("creating {}", ns_file.display()))?;
    let mut cmd = Command::new("unshare");
    cmd.arg(format!("--mount={}", ns_file.display()))
        .args(["--propagation", "private", "--", "sh", "-c", NS_SETUP, "sh"])
        .arg(dir)
        .arg(store);
    run(&mut cmd, None).context("making the host's mount namespace")?;
    Ok(())
}

/// Detach a mount (lazily: busy mounts go when their last user does).
/// Not mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    let t = cstr(target);
    // SAFETY: a valid path string.
    let r = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Ok(());
        }
        return Err(e).with_context(|| format!("unmounting {}", target.display()));
    }
    Ok(())
}

/// Mount points at or below `dir` in this process's mount namespace,
/// deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape(r"/tmp/a\040b\134c"), "/tmp/a b\\c");
        assert_eq!(super::unescape(r"/x\04"), r"/x\04");
    }
}
