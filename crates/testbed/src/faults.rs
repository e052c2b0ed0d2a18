//! Faults on demand: a hung host (SIGSTOP/SIGCONT to every process of its
//! cgroup), a dead host (SIGKILL to every process of its cgroup: sshd,
//! daemon, builders; `revive` starts sshd and the daemon again), a dead
//! daemon (SIGKILL, and a restart on the same store and state), a cut cable
//! (nftables drops everything but loopback), a full store (a filler file
//! takes the rest of the host's store tmpfs).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::layout::{s, Layout};
use crate::state::{update, HostState};
use crate::{cgroup, daemon, net, procs, sshd, up};

/// Inside the host the filler is DIR/store/.ferry-testbed-fill.
pub const FILLER: &str = ".ferry-testbed-fill";

fn host_cgroup(h: &HostState) -> Result<&Path> {
    h.cgroup
        .as_deref()
        .context("this testbed has no per-host cgroups")
}

pub fn stop(dir: &Path, host: &str) -> Result<Vec<i32>> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        let pids = cgroup::signal_all(host_cgroup(h)?, libc::SIGSTOP);
        h.stopped = true;
        Ok(pids)
    })
}

pub fn cont(dir: &Path, host: &str) -> Result<Vec<i32>> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        let pids = cgroup::signal_all(host_cgroup(h)?, libc::SIGCONT);
        h.stopped = false;
        Ok(pids)
    })
}

/// A host that dies at once: every process of its cgroup gets SIGKILL
/// (a stopped host too: SIGKILL needs no SIGCONT). Returns the pids killed.
pub fn kill_host(dir: &Path, host: &str) -> Result<Vec<i32>> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        let cg = host_cgroup(h)?.to_path_buf();
        let pids = cgroup::signal_all(&cg, libc::SIGKILL);
        let left = procs::wait_gone(&pids, Duration::from_secs(5));
        if !left.is_empty() {
            bail!("processes {left:?} of {host} survived SIGKILL");
        }
        h.sshd = None;
        h.daemon = None;
        h.stopped = false;
        Ok(pids)
    })
}

/// Start what is not running of the host's sshd and daemon (after
/// `kill_host` or `kill_daemon`).
pub fn revive(dir: &Path, host: &str) -> Result<()> {
    let needs_daemon = update(dir, |st| {
        let marker = s(&st.dir);
        let lay = Layout::new(&st.dir);
        let h = st.host_mut(host)?;
        if !h.sshd.is_some_and(|p| p.is_ours(&marker)) {
            let hl = lay.host(&h.name);
            let p = sshd::start(
                &hl.sshd_config(),
                &hl.sshd_log(),
                up::enter_host(h, &lay)?.setsid(),
                &h.address,
            )?;
            h.sshd = Some(p);
        }
        Ok(!h.daemon.is_some_and(|p| p.is_ours(&marker)))
    })?;
    if needs_daemon {
        start_daemon(dir, host)?;
    }
    Ok(())
}

/// A daemon alive but silent: SIGSTOP (or SIGCONT) to the host's daemon
/// alone; sshd still answers (keep-alives, channels), builders run on.
pub fn signal_daemon(dir: &Path, host: &str, signal: i32) -> Result<()> {
    update(dir, |st| {
        let marker = s(&st.dir);
        let h = st.host_mut(host)?;
        match h.daemon {
            Some(p) if p.signal(signal, &marker) => Ok(()),
            _ => bail!("the daemon of {host} is not running"),
        }
    })
}

pub fn kill_daemon(dir: &Path, host: &str) -> Result<()> {
    update(dir, |st| {
        let marker = s(&st.dir);
        let h = st.host_mut(host)?;
        match h.daemon.take() {
            Some(p) if p.signal(libc::SIGKILL, &marker) => {
                if !procs::wait_gone(&[p.pid], Duration::from_secs(5)).is_empty() {
                    bail!("the daemon of {host} (pid {}) survived SIGKILL", p.pid);
                }
                Ok(())
            }
            _ => bail!("the daemon of {host} is not running (start it with `ferry-testbed start-daemon {host}`)"),
        }
    })
}

pub fn start_daemon(dir: &Path, host: &str) -> Result<i32> {
    update(dir, |st| {
        let marker = s(&st.dir);
        let lay = Layout::new(&st.dir);
        let slots = st.slots;
        let extra = st.daemon_args.clone();
        let h = st.host_mut(host)?;
        if let Some(p) = h.daemon.filter(|p| p.is_ours(&marker)) {
            bail!("the daemon of {host} is already running (pid {})", p.pid);
        }
        let hl = lay.host(&h.name);
        let p = daemon::start(
            &lay.bin().join("ferry"),
            &lay.host_env(&h.name),
            &hl.socket(),
            slots,
            &extra,
            &hl.daemon_log(),
            up::enter_host(h, &lay)?.setsid(),
        )?;
        h.daemon = Some(p);
        Ok(p.pid)
    })
}

/// Write a load-average file in /proc/loadavg's format with `load` as the
/// 1-, 5- and 15-minute averages (written aside and renamed: a daemon
/// reading it never sees half a file).
pub fn write_load(path: &Path, load: f64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{load:.2} {load:.2} {load:.2} 1/100 1\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Make the host report a normalized load (1-minute load average / cores)
/// of `normalized`: its load-average file gets `normalized × cores`.
pub fn set_load(dir: &Path, host: &str, normalized: f64) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let st = crate::state::State::load(dir)?;
    let h = st.host(host)?;
    write_load(
        &Layout::new(dir).host(&h.name).loadavg(),
        normalized * cores,
    )
}

pub fn cut(dir: &Path, host: &str) -> Result<()> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        if !h.cut {
            net::cut(&h.netns)?;
            h.cut = true;
        }
        Ok(())
    })
}

pub fn heal(dir: &Path, host: &str) -> Result<()> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        net::heal(&h.netns)?;
        h.cut = false;
        Ok(())
    })
}

/// The filler as the master sees it: in the host's store tmpfs.
fn filler(dir: &Path, host: &str) -> PathBuf {
    Layout::new(dir).host(host).store().join(FILLER)
}

/// Take every free byte of the host's store: fallocate what statvfs says is
/// free (fast: no data written), then write until ENOSPC for the rest.
/// Returns the filler's size.
pub fn fill(dir: &Path, host: &str) -> Result<u64> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        let path = filler(dir, &h.name);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let free = free_bytes(path.parent().unwrap())?;
        let start = f.metadata()?.len();
        if free > 0 {
            // SAFETY: fallocate on an open descriptor.
            let _ = unsafe { libc::fallocate(f.as_raw_fd(), 0, start as i64, free as i64) };
        }
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
            }
        }
        h.filled = true;
        Ok(f.metadata()?.len())
    })
}

pub fn unfill(dir: &Path, host: &str) -> Result<()> {
    update(dir, |st| {
        let h = st.host_mut(host)?;
        let path = filler(dir, &h.name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        h.filled = false;
        Ok(())
    })
}

fn free_bytes(p: &Path) -> Result<u64> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: statvfs fills the zeroed struct.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut sv) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", p.display()));
    }
    Ok(sv.f_bavail as u64 * sv.f_frsize as u64)
}
