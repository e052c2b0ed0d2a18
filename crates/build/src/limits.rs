//! Limits a build must keep to, so that a fork bomb or a disk filler fails
//! its own build, not the machine: the defaults of the process cap
//! (RLIMIT_NPROC of the build user, set in the builder's child, see
//! `crate::users`) and the free-space reserve the builder's loop checks.

use std::path::PathBuf;
use std::time::Duration;

/// Default [`crate::BuildSettings::max_processes`].
pub const DEFAULT_MAX_PROCESSES: u64 = 4096;
/// Default [`crate::BuildSettings::min_free_space`]: 100 MiB.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 100 << 20;
/// How often free space is checked during a build, while it is well above
/// the reserve.
pub(crate) const FREE_SPACE_EVERY: Duration = Duration::from_millis(50);
/// How often once it is under twice the reserve: a writer filling a tmpfs
/// at gigabytes a second overshoots the reserve by what it writes between
/// two checks.
pub(crate) const FREE_SPACE_EVERY_NEAR: Duration = Duration::from_millis(5);

/// When to check free space again, or why the build must stop: free space
/// on the file system of one of `dirs` fell below the reserve (see
/// [`crate::BuildSettings::min_free_space`]).
pub(crate) fn check_space(dirs: &[PathBuf], reserve: Option<u64>) -> Result<Duration, String> {
    let mut next = FREE_SPACE_EVERY;
    for dir in dirs {
        let Ok(st) = rustix::fs::statvfs(dir) else {
            continue;
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let size = st.f_blocks.saturating_mul(st.f_frsize);
        let reserve = reserve.unwrap_or(DEFAULT_MIN_FREE_SPACE.min(size / 20));
        if free < reserve {
            return Err(format!(
                "free space on the file system of {} fell to {} MiB, below the reserve of {} MiB \
                 (--min-free-space)",
                dir.display(),
                free >> 20,
                reserve >> 20
            ));
        }
        if free < reserve.saturating_mul(2) {
            next = FREE_SPACE_EVERY_NEAR;
        }
    }
    Ok(next)
}
