//! What a machine reports about itself: cores, load, free space, kernel.

use std::path::Path;

use ferry_protocol::MachineInfo;

/// Where the load average is read: `$FERRY_LOADAVG_FILE` when set and not
/// empty, else /proc/loadavg. The variable is a test hook: the testbed's
/// hosts share one kernel, hence one load average, so each host's daemon
/// reads a file of its own (same format as /proc/loadavg) that a test
/// writes to make that host look loaded or idle.
pub const LOADAVG_FILE_VAR: &str = "FERRY_LOADAVG_FILE";

fn loadavg_file() -> std::path::PathBuf {
    std::env::var_os(LOADAVG_FILE_VAR)
        .filter(|v| !v.is_empty())
        .map_or_else(|| "/proc/loadavg".into(), std::path::PathBuf::from)
}

/// 1-minute load average from /proc/loadavg (or `$FERRY_LOADAVG_FILE`).
pub fn load_1m() -> f64 {
    std::fs::read_to_string(loadavg_file())
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Bytes available to unprivileged users on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
pub fn collect(
    store_dir: &str,
    systems: &[String],
    features: &[String],
    builds_running: u32,
    max_jobs: u32,
) -> MachineInfo {
    let load = load_1m();
    let cores = cores();
    let uname = rustix::system::uname();
    MachineInfo {
        version: ferry_protocol::FERRY_VERSION.into(),
        store_dir: store_dir.into(),
        systems: systems.to_vec(),
        features: features.to_vec(),
        cores,
        load_1m: load,
        normalized_load: (load / cores as f64).min(1.0),
        free_bytes: free_bytes(Path::new(store_dir)),
        builds_running,
        max_jobs,
        kernel: uname.release().to_string_lossy().into_owned(),
        arch: uname.machine().to_string_lossy().into_owned(),
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    }
}
