//! Build directories (`$TMPDIR/ferry-build-PID-NAME-XXXXXX`) and the
//! removal of those a dead process left behind.

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
