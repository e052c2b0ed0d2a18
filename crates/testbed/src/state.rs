//! `DIR/testbed.json`: everything a testbed made, written before each thing
//! is made, so that `down` removes exactly that even after a crash midway.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::procs::Proc;

pub const STATE_FILE: &str = "testbed.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The testbed directory (absolute).
    pub dir: PathBuf,
    /// Short hash of `dir`: in netns, veth and cgroup names, so that two
    /// testbeds can coexist.
    pub tag: String,
    /// `up` created `dir` itself (then `down` removes it).
    pub created_dir: bool,
    /// The address block: hosts use 10.213.I.(4B+1) (master side) and
    /// 10.213.I.(4B+2) (host side), a /30 each.
    pub block: u8,
    /// The `ferry` binary that DIR/bin/ferry points at.
    pub ferry: PathBuf,
    pub slots: usize,
    pub store_size: String,
    /// More arguments of every host's `ferry daemon` (automatic
    /// collection: --min-free, --max-free).
    #[serde(default)]
    pub daemon_args: Vec<String>,
    pub rate_mbit: Option<u32>,
    /// The testbed's cgroup (its hosts' cgroups are below it).
    pub cgroup: Option<PathBuf>,
    /// Mount points made in the initial mount namespace, in order.
    pub mounts: Vec<PathBuf>,
    /// Top-level entries of `dir` that `up` created.
    pub files: Vec<PathBuf>,
    pub hosts: Vec<HostState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostState {
    /// "h1", "h2", ...
    pub name: String,
    pub index: usize,
    pub address: String,
    pub master_address: String,
    pub netns: String,
    /// The veth end in the initial namespace (the other is eth0 in `netns`).
    pub veth: String,
    /// The bind-mounted mount namespace file (DIR/ns/hI.mnt).
    pub mnt_ns: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub speed: f64,
    pub host_key: String,
    pub sshd: Option<Proc>,
    pub daemon: Option<Proc>,
    pub stopped: bool,
    pub cut: bool,
    pub filled: bool,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    pub fn load(dir: &Path) -> Result<State> {
        let p = State::path(dir);
        let text = fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {} (is there a testbed in {}? `ferry-testbed up --dir {}` makes one)",
                p.display(),
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }

    /// Write atomically (a temporary file renamed over the old one).
    pub fn save(&self) -> Result<()> {
        let p = State::path(&self.dir);
        let tmp = self
            .dir
            .join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))
    }

    pub fn host(&self, name: &str) -> Result<&HostState> {
        self.hosts
            .iter()
            .find(|h| h.name == name || h.address == name)
            .with_context(|| self.no_such_host(name))
    }

    pub fn host_mut(&mut self, name: &str) -> Result<&mut HostState> {
        let msg = self.no_such_host(name);
        self.hosts
            .iter_mut()
            .find(|h| h.name == name || h.address == name)
            .context(msg)
    }

    fn no_such_host(&self, name: &str) -> String {
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        format!(
            "no host {name:?} in the testbed (hosts: {})",
            names.join(", ")
        )
    }
}

/// Load, change and save the state under an exclusive lock on the state
/// file, so that concurrent fault commands do not lose each other's updates.
pub fn update<T>(dir: &Path, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    let lock_path = dir.join(".testbed.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on an open descriptor; released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let mut st = State::load(dir)?;
    let r = f(&mut st)?;
    st.save()?;
    Ok(r)
}
