//! Where the store, state and configuration live.
//!
//! Root gets the system-wide defaults (`/ferry/store`, `/var/ferry`,
//! `/etc/ferry`). Another user gets them too when the system daemon's
//! socket (`/var/ferry/daemon-socket/socket`) is there for them to use, as
//! Nix's clients use nix-daemon's: the daemon does the writing. Otherwise
//! they get XDG defaults under their home, so that a first build needs no
//! set-up. Environment variables override both, and flags override the
//! environment.

use std::env;
use std::path::PathBuf;

use ferry_formats::StoreDir;

pub const DEFAULT_STORE_DIR: &str = "/ferry/store";
pub const DEFAULT_STATE_DIR: &str = "/var/ferry";
pub const DEFAULT_CONFIG_DIR: &str = "/etc/ferry";

/// The three directories a Ferry process works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    pub store_dir: StoreDir,
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
}

fn env_path(var: &str) -> Option<String> {
    env::var(var).ok().filter(|s| !s.is_empty())
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match env_path(var) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env::var("HOME").unwrap_or_else(|_| "/".into())).join(fallback),
    }
}

impl Locations {
    /// Resolve from flags (highest), `FERRY_STORE_DIR`, `FERRY_STATE_DIR`,
    /// `FERRY_CONFIG_DIR`, then the defaults for this user.
    pub fn resolve(
        store_flag: Option<String>,
        state_flag: Option<PathBuf>,
        config_flag: Option<PathBuf>,
    ) -> Result<Locations, ferry_formats::store_path::StorePathError> {
        let explicit = store_flag.is_some()
            || state_flag.is_some()
            || env_path("FERRY_STORE_DIR").is_some()
            || env_path("FERRY_STATE_DIR").is_some();
        let root =
            rustix::process::geteuid().is_root() || !explicit && usable_socket(&system_socket());
        let store = store_flag
            .or_else(|| env_path("FERRY_STORE_DIR"))
            .unwrap_or_else(|| {
                if root {
                    DEFAULT_STORE_DIR.into()
                } else {
                    xdg("XDG_DATA_HOME", ".local/share")
                        .join("ferry/store")
                        .to_string_lossy()
                        .into_owned()
                }
            });
        let state = state_flag
            .or_else(|| env_path("FERRY_STATE_DIR").map(PathBuf::from))
            .unwrap_or_else(|| {
                if root {
                    DEFAULT_STATE_DIR.into()
                } else {
                    xdg("XDG_STATE_HOME", ".local/state").join("ferry")
                }
            });
        let config = config_flag
            .or_else(|| env_path("FERRY_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| {
                if root {
                    DEFAULT_CONFIG_DIR.into()
                } else {
                    xdg("XDG_CONFIG_HOME", ".config").join("ferry")
                }
            });
        Ok(Locations {
            store_dir: StoreDir::new(store)?,
            state_dir: state,
            config_dir: config,
        })
    }
}

/// The system daemon's socket.
pub fn system_socket() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR).join("daemon-socket/socket")
}

/// A socket this user may connect to (Nix's test for its daemon: it is
/// there and writable).
fn usable_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod system_daemon_tests {
    use super::*;

    #[test]
    fn a_socket_is_usable_only_when_it_is_a_writable_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("socket");
        assert!(!usable_socket(&sock));
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(usable_socket(&sock));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(!usable_socket(&file));
    }
}
