//! Where everything lives under the testbed directory DIR.

use std::path::{Path, PathBuf};

/// The socket's place under a state directory (ferry's own default).
pub const SOCKET: &str = "daemon-socket/socket";

#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    /// The store path of every host and of the master.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn ns(&self) -> PathBuf {
        self.dir.join("ns")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn master(&self) -> PathBuf {
        self.dir.join("master")
    }
    pub fn client_key(&self) -> PathBuf {
        self.master().join("ssh/id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.master().join("ssh/known_hosts")
    }
    pub fn ssh_config(&self) -> PathBuf {
        self.master().join("ssh/config")
    }
    pub fn machines_file(&self) -> PathBuf {
        self.master().join("config/machines.scm")
    }
    pub fn env_file(&self) -> PathBuf {
        self.dir.join("env")
    }
    pub fn host(&self, name: &str) -> HostLayout {
        HostLayout {
            dir: self.hosts().join(name),
        }
    }
    /// The master's FERRY_* variables.
    pub fn master_env(&self) -> Vec<(String, String)> {
        let m = self.master();
        vec![
            ("FERRY_STORE_DIR".into(), s(&self.store())),
            ("FERRY_STATE_DIR".into(), s(&m.join("state"))),
            ("FERRY_CONFIG_DIR".into(), s(&m.join("config"))),
            (
                "FERRY_DAEMON_SOCKET".into(),
                s(&m.join("state").join(SOCKET)),
            ),
        ]
    }
    /// A host's environment, for sshd sessions and `exec`: PATH with DIR/bin
    /// first, its FERRY_*, and a HOME of its own without dotfiles (root's
    /// real ~/.bashrc may be slow, and bash reads it for ssh commands).
    pub fn host_env(&self, name: &str) -> Vec<(String, String)> {
        let h = self.host(name);
        vec![
            (
                "PATH".into(),
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    s(&self.bin())
                ),
            ),
            ("HOME".into(), s(&h.home())),
            ("FERRY_STORE_DIR".into(), s(&self.store())),
            ("FERRY_STATE_DIR".into(), s(&h.state())),
            ("FERRY_CONFIG_DIR".into(), s(&h.config())),
            ("FERRY_DAEMON_SOCKET".into(), s(&h.socket())),
            ("FERRY_TESTBED_HOST".into(), name.into()),
            // Test hook: the daemon reads its load average from this file
            // (the hosts share one kernel); see `Host::set_load`.
            ("FERRY_LOADAVG_FILE".into(), s(&h.loadavg())),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct HostLayout {
    pub dir: PathBuf,
}

impl HostLayout {
    /// The host's store as the master sees it (its tmpfs); inside the host
    /// it is mounted at DIR/store.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    pub fn socket(&self) -> PathBuf {
        self.state().join(SOCKET)
    }
    pub fn host_key(&self) -> PathBuf {
        self.dir.join("ssh/ssh_host_ed25519_key")
    }
    pub fn sshd_config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }
    pub fn sshd_log(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }
    pub fn sshd_pid(&self) -> PathBuf {
        self.dir.join("sshd.pid")
    }
    /// The load average the host's daemon reports (FERRY_LOADAVG_FILE).
    pub fn loadavg(&self) -> PathBuf {
        self.dir.join("loadavg")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
