//! Testbed: build machines on one computer, for offload's tests,
//! benchmarks and newcomers. `ferry-testbed up --hosts N --dir DIR` (and
//! [`Testbed::up`]) makes N hosts, each with
//!
//! - its own network namespace `ferry-tb-TAG-hI`, joined to the initial
//!   namespace (the master) by a veth pair on a private /30:
//!   10.213.I.2 on the host's eth0, 10.213.I.1 on the master's end `ftbTAGhI`
//!   (a second testbed on the machine takes 10.213.I.6/.5, and so on; TAG
//!   is a hash of DIR, so testbeds coexist). No existing interface gets an
//!   address. `--rate MBIT` adds a tbf qdisc on both ends (no netem on these
//!   kernels: bandwidth can be limited, latency cannot be added);
//! - its own persistent mount namespace (DIR/ns/hI.mnt, no holder process)
//!   where its store, a tmpfs of `--store-size` (DIR/hosts/hI/store as the
//!   master sees it), is mounted over DIR/store: every host and the master
//!   use the same store path, as offload requires, each its own store.
//!   Nothing under /ferry, /var/ferry, /etc/ferry or /nix is touched;
//! - OpenSSH's sshd with its own ed25519 host key, accepting the master's
//!   client key DIR/master/ssh/id_ed25519 for root, and giving sessions the
//!   host's FERRY_* variables and PATH=DIR/bin:...;
//! - a `ferry daemon` with its own signing key, state (DIR/hosts/hI/state)
//!   and configuration (DIR/hosts/hI/config), whose ACL authorizes the
//!   master's key (and the master's ACL every host's);
//! - a cgroup holding sshd, the daemon and everything they start, so that
//!   faults reach every process of the host.
//!
//! The master is the machine itself, with DIR/master/{state,config}, store
//! DIR/store, machines.scm in DIR/master/config (and DIR/machines.scm), and
//! DIR/env to source. DIR/testbed.json records everything made; `down`
//! removes exactly that (even after a crash), and dropping a [`Testbed`]
//! made by [`Testbed::up`] brings it down, so tests never leak.
//!
//! Faults: [`Host::stop`]/[`Host::cont`] (a hung machine),
//! [`Host::kill`]/[`Host::revive`] (a dead machine),
//! [`Host::kill_daemon`]/[`Host::start_daemon`], [`Host::cut`]/[`Host::heal`]
//! (traffic dropped), [`Host::fill`]/[`Host::unfill`] (store full: ENOSPC),
//! and [`proxy::Proxy`] (a TCP proxy that pauses the stream at a chosen
//! byte, to inject a fault in a known phase, or corrupts that byte).
//! The store tmpfs uses memory only as it fills; `fill` takes all of it.
//!
//! Load (a test hook): the hosts share one kernel and so one load average.
//! Each host's daemon gets FERRY_LOADAVG_FILE=DIR/hosts/hI/loadavg, which
//! `up` writes as idle ("0.00 0.00 0.00 1/100 1") and [`Host::set_load`]
//! (`ferry-testbed set-load hI LOAD`) rewrites; the daemon reads its load
//! there instead of /proc/loadavg. So `overload-threshold` keeps its
//! default on the testbed and tests decide which host looks loaded.

mod cgroup;
mod config;
mod daemon;
mod down;
mod faults;
pub mod layout;
mod mounts;
mod net;
mod procs;
pub mod proxy;
mod sshd;
pub mod state;
pub mod support;
mod up;
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

pub use faults::FILLER;
pub use layout::Layout;
pub use procs::Proc;
pub use state::{HostState, State};

pub const NEEDS_ROOT: &str =
    "ferry-testbed needs root (it creates network namespaces, veth pairs and mounts); run it with sudo";

/// What `up` makes.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub hosts: usize,
    /// parallel-builds of each host, and its daemon's --max-jobs.
    pub slots: usize,
    /// One speed per host for machines.scm (empty: all 1.0).
    pub speeds: Vec<f64>,
    /// Size of each host's store tmpfs, as tmpfs reads it (1G, 64M...).
    pub store_size: String,
    /// Each host's daemon collects garbage when free space in its store
    /// drops under this (`ferry daemon --min-free`, as tmpfs sizes are
    /// written: 100M; "off": never; `None`: [`DEFAULT_MIN_FREE`] when the
    /// store is at least four times that, else off, so that a small test
    /// store does not lose at once what a test just added) ...
    pub min_free: Option<String>,
    /// ... until this much is free (`--max-free`; `None`: everything dead).
    pub max_free: Option<String>,
    /// Bandwidth limit of each host's link, Mbit/s.
    pub rate_mbit: Option<u32>,
    /// The ferry binary (else FERRY_BIN, else next to this executable).
    pub ferry: Option<PathBuf>,
    /// More arguments for each host's `ferry daemon` (e.g.
    /// `--extra-platforms aarch64-linux`).
    pub extra_daemon_args: Vec<String>,
}

/// Bytes of a size as tmpfs reads it (1G, 300M, 64k, 1048576).
fn tmpfs_bytes(s: &str) -> Option<u64> {
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Default [`Options::min_free`]: the scheduler's own threshold
/// (a machine with 100 MiB free or less is passed over), so a host collects
/// before the master would skip it.
pub const DEFAULT_MIN_FREE: &str = "100M";

impl Options {
    /// The hosts' extra daemon arguments.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let auto = || {
            (tmpfs_bytes(&self.store_size)? >= 4 * tmpfs_bytes(DEFAULT_MIN_FREE)?)
                .then(|| DEFAULT_MIN_FREE.to_string())
        };
        let min_free = match self.min_free.as_deref() {
            Some("off") => None,
            Some(m) => Some(m.to_string()),
            None => auto(),
        };
        if let Some(m) = &min_free {
            v.extend(["--min-free".to_string(), m.clone()]);
            if let Some(x) = &self.max_free {
                v.extend(["--max-free".to_string(), x.clone()]);
            }
        }
        v.extend(self.extra_daemon_args.iter().cloned());
        v
    }

    pub fn new(dir: impl Into<PathBuf>, hosts: usize) -> Options {
        Options {
            dir: dir.into(),
            hosts,
            slots: 1,
            speeds: Vec::new(),
            store_size: "1G".into(),
            min_free: None,
            max_free: None,
            rate_mbit: None,
            ferry: None,
            extra_daemon_args: Vec::new(),
        }
    }
}

/// A testbed that is up. Made by [`Testbed::up`], it is brought down when
/// dropped unless [`Testbed::keep`] was called; [`Testbed::open`] gives a
/// handle that leaves it up.
pub struct Testbed {
    state: State,
    hosts: Vec<Host>,
    down_on_drop: bool,
}

/// One host of a testbed. Faults re-read and update DIR/testbed.json, so
/// handles from the library and the CLI can be mixed.
#[derive(Clone, Debug)]
pub struct Host {
    dir: PathBuf,
    state: HostState,
}

impl Testbed {
    pub fn up(opts: Options) -> Result<Testbed> {
        let state = up::up(&opts)?;
        let mut tb = Testbed::from_state(state);
        tb.down_on_drop = true;
        Ok(tb)
    }

    pub fn open(dir: impl AsRef<Path>) -> Result<Testbed> {
        Ok(Testbed::from_state(State::load(dir.as_ref())?))
    }

    fn from_state(state: State) -> Testbed {
        let hosts = state
            .hosts
            .iter()
            .map(|h| Host {
                dir: state.dir.clone(),
                state: h.clone(),
            })
            .collect();
        Testbed {
            state,
            hosts,
            down_on_drop: false,
        }
    }

    /// Leave the testbed up when this handle is dropped.
    pub fn keep(mut self) -> Testbed {
        self.down_on_drop = false;
        self
    }

    /// Remove everything the testbed made.
    pub fn down(mut self) -> Result<()> {
        self.down_on_drop = false;
        down::down(&self.state.dir).map(|_| ())
    }

    /// Bring down the testbed in `dir`, if any (false: there was none).
    pub fn down_dir(dir: impl AsRef<Path>) -> Result<bool> {
        down::down(dir.as_ref())
    }

    pub fn dir(&self) -> &Path {
        &self.state.dir
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn layout(&self) -> Layout {
        Layout::new(&self.state.dir)
    }
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    /// A host by name ("h1") or address.
    pub fn host(&self, name: &str) -> Result<&Host> {
        let h = self.state.host(name)?;
        Ok(&self.hosts[h.index - 1])
    }
    pub fn machines_file(&self) -> PathBuf {
        self.layout().machines_file()
    }
    pub fn env_file(&self) -> PathBuf {
        self.layout().env_file()
    }
    /// The master's FERRY_* variables (as DIR/env exports them).
    pub fn master_env(&self) -> Vec<(String, String)> {
        self.layout().master_env()
    }
    /// `program` with the master's FERRY_* and DIR/bin first in PATH.
    pub fn master_command(&self, program: &str) -> Command {
        let lay = self.layout();
        let mut c = Command::new(program);
        c.envs(lay.master_env());
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", lay.bin().display()));
        c
    }
    /// Every pid recorded (sshd and daemons), for leak checks.
    pub fn recorded_pids(&self) -> Vec<i32> {
        State::load(self.dir())
            .map(|st| {
                st.hosts
                    .iter()
                    .flat_map(|h| [h.sshd, h.daemon])
                    .flatten()
                    .map(|p| p.pid)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.down_on_drop {
            if let Err(e) = down::down(&self.state.dir) {
                eprintln!(
                    "ferry-testbed: bringing down {}: {e:#}",
                    self.state.dir.display()
                );
            }
        }
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.state.name
    }
    pub fn address(&self) -> &str {
        &self.state.address
    }
    /// The master's address on this host's link.
    pub fn master_address(&self) -> &str {
        &self.state.master_address
    }
    pub fn netns(&self) -> &str {
        &self.state.netns
    }
    pub fn veth(&self) -> &str {
        &self.state.veth
    }
    /// The OpenSSH public host key line ("ssh-ed25519 AAAA... comment").
    pub fn host_key(&self) -> &str {
        &self.state.host_key
    }
    fn layout(&self) -> layout::HostLayout {
        Layout::new(&self.dir).host(&self.state.name)
    }
    /// The host's store as the master sees it (inside the host: DIR/store).
    pub fn store_view(&self) -> PathBuf {
        self.layout().store()
    }
    pub fn state_dir(&self) -> PathBuf {
        self.layout().state()
    }
    /// The host daemon's log (every start appends to it).
    pub fn daemon_log(&self) -> PathBuf {
        self.layout().daemon_log()
    }
    pub fn config_dir(&self) -> PathBuf {
        self.layout().config()
    }
    pub fn daemon_socket(&self) -> PathBuf {
        self.layout().socket()
    }
    /// The host's environment inside it (FERRY_*, PATH, HOME).
    pub fn env(&self) -> Vec<(String, String)> {
        Layout::new(&self.dir).host_env(&self.state.name)
    }
    /// The current record (pids after restarts, fault flags).
    pub fn current(&self) -> Result<HostState> {
        Ok(State::load(&self.dir)?.host(&self.state.name)?.clone())
    }

    /// `ssh` to the host as root with the testbed's key and its pinned host
    /// key, running `remote` (a shell command line).
    pub fn ssh_command(&self, remote: &str) -> Command {
        let lay = Layout::new(&self.dir);
        let mut c = Command::new("ssh");
        c.args(sshd::client_args(&lay.client_key(), &lay.known_hosts()))
            .arg(format!("root@{}", self.state.address))
            .arg("--")
            .arg(remote);
        c
    }

    /// `program` run inside the host: its namespaces and cgroup, its
    /// environment only, in its home directory.
    pub fn exec(&self, program: &str) -> Result<Command> {
        let lay = Layout::new(&self.dir);
        let mut c = Command::new(program);
        c.env_clear().envs(self.env());
        up::enter_host(&self.state, &lay)?.apply(&mut c);
        Ok(c)
    }

    pub fn stop(&self) -> Result<Vec<i32>> {
        faults::stop(&self.dir, self.name())
    }
    pub fn cont(&self) -> Result<Vec<i32>> {
        faults::cont(&self.dir, self.name())
    }
    pub fn kill_daemon(&self) -> Result<()> {
        faults::kill_daemon(&self.dir, self.name())
    }
    /// SIGSTOP the host's daemon alone (sshd answers on): alive but silent.
    pub fn stop_daemon(&self) -> Result<()> {
        faults::signal_daemon(&self.dir, self.name(), libc::SIGSTOP)
    }
    /// SIGCONT the host's daemon (after [`Host::stop_daemon`]).
    pub fn cont_daemon(&self) -> Result<()> {
        faults::signal_daemon(&self.dir, self.name(), libc::SIGCONT)
    }
    /// SIGKILL every process of the host (sshd, daemon, builders).
    pub fn kill(&self) -> Result<Vec<i32>> {
        faults::kill_host(&self.dir, self.name())
    }
    /// Start the host's sshd and daemon again where they are not running.
    pub fn revive(&self) -> Result<()> {
        faults::revive(&self.dir, self.name())
    }
    pub fn start_daemon(&self) -> Result<i32> {
        faults::start_daemon(&self.dir, self.name())
    }
    pub fn cut(&self) -> Result<()> {
        faults::cut(&self.dir, self.name())
    }
    pub fn heal(&self) -> Result<()> {
        faults::heal(&self.dir, self.name())
    }
    pub fn fill(&self) -> Result<u64> {
        faults::fill(&self.dir, self.name())
    }
    pub fn unfill(&self) -> Result<()> {
        faults::unfill(&self.dir, self.name())
    }
    /// Make the host's daemon report a normalized load (1-minute load
    /// average / cores, as `overload-threshold` compares) of `normalized`.
    /// A test hook: the hosts share this computer's kernel, so each host's
    /// daemon reads its load average from DIR/hosts/hI/loadavg (through
    /// FERRY_LOADAVG_FILE; "0.00 0.00 0.00 1/100 1" after `up`) rather than
    /// /proc/loadavg. The master measures a machine at most every 10 s.
    pub fn set_load(&self, normalized: f64) -> Result<()> {
        faults::set_load(&self.dir, self.name(), normalized)
    }
    /// Every pid of the host now (its cgroup's members).
    pub fn pids(&self) -> Vec<i32> {
        self.state
            .cgroup
            .as_deref()
            .map(cgroup::members)
            .unwrap_or_default()
    }
}
