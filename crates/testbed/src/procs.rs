//! Processes: the identity recorded for each one (pid and start time, so a
//! reused pid is never signalled), entering a host's namespaces and cgroup
//! before exec, and reaping the children this process spawned.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A process as recorded in `testbed.json`: the pid alone could name another
/// process after a crash, so its start time (in clock ticks since boot,
/// field 22 of /proc/PID/stat) is recorded too.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start_time: u64,
}

/// State letter and start time of a live process.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

impl Proc {
    pub fn of(pid: i32) -> Option<Proc> {
        stat(pid).map(|(_, start_time)| Proc { pid, start_time })
    }

    /// Still the same process, not yet exited (a zombie counts as gone), and
    /// its command line mentions `marker` (the testbed directory).
    pub fn is_ours(&self, marker: &str) -> bool {
        matches!(stat(self.pid), Some((st, t)) if t == self.start_time && st != 'Z')
            && cmdline(self.pid).is_some_and(|c| c.contains(marker))
    }

    /// Send `sig` if the process is still ours.
    pub fn signal(&self, sig: i32, marker: &str) -> bool {
        // SAFETY: kill has no memory-safety preconditions.
        self.is_ours(marker) && unsafe { libc::kill(self.pid, sig) } == 0
    }
}

/// Whether `pid` exists and is not a zombie. A multi-threaded process
/// whose main thread exited shows as a zombie while its other threads
/// still run (and hold its files, its listening socket included): that
/// is alive until only the main thread is left in /proc/PID/task.
pub fn alive(pid: i32) -> bool {
    match stat(pid) {
        None => false,
        Some(('Z', _)) => fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() > 1),
        Some(_) => true,
    }
}

/// Children spawned by this process (sshd, daemons): kept so that they can
/// be reaped after they are killed, or a test process would keep zombies
/// that look like leftovers. A CLI run exits instead, and init reaps them.
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

pub fn adopt(child: Child) {
    let mut v = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    v.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    v.push(child);
}

/// Wait until none of `pids` is alive (reaping our own children), up to
/// `timeout`. Returns the pids still alive.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    crate::util::wait_until(timeout, || {
        {
            let mut v = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
            v.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        }
        pids.iter().all(|&p| !alive(p))
    });
    pids.iter().copied().filter(|&p| alive(p)).collect()
}

/// What a spawned process enters before exec: a host's network and mount
/// namespaces and cgroup, its own session, a working directory. Files are
/// opened here, before fork; the child only calls async-signal-safe
/// functions (write, setns, chdir, setsid).
#[derive(Default)]
pub struct Enter {
    net: Option<File>,
    mnt: Option<File>,
    cgroup_procs: Option<File>,
    cwd: Option<CString>,
    setsid: bool,
}

impl Enter {
    pub fn new() -> Enter {
        Enter::default()
    }
    pub fn net(mut self, ns_file: &Path) -> Result<Enter> {
        self.net = Some(
            File::open(ns_file)
                .with_context(|| format!("opening network namespace {}", ns_file.display()))?,
        );
        Ok(self)
    }
    pub fn mnt(mut self, ns_file: &Path) -> Result<Enter> {
        self.mnt = Some(
            File::open(ns_file)
                .with_context(|| format!("opening mount namespace {}", ns_file.display()))?,
        );
        Ok(self)
    }
    pub fn cgroup(mut self, dir: &Path) -> Result<Enter> {
        let procs = dir.join("cgroup.procs");
        self.cgroup_procs = Some(
            fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .with_context(|| format!("opening {}", procs.display()))?,
        );
        Ok(self)
    }
    pub fn cwd(mut self, dir: &Path) -> Enter {
        self.cwd = CString::new(dir.as_os_str().as_bytes()).ok();
        self
    }
    pub fn setsid(mut self) -> Enter {
        self.setsid = true;
        self
    }

    pub fn apply(self, cmd: &mut Command) {
        let Enter {
            net,
            mnt,
            cgroup_procs,
            cwd,
            setsid,
        } = self;
        let hook = move || -> std::io::Result<()> {
            let check = |r: i32| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // SAFETY: plain system calls on descriptors and strings owned
            // by this closure; nothing allocates.
            unsafe {
                if setsid {
                    libc::setsid();
                }
                if let Some(f) = &cgroup_procs {
                    // "0" moves the writing process (v1 and v2 alike)
                    check(libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) as i32)?;
                }
                if let Some(f) = &net {
                    check(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET))?;
                }
                if let Some(f) = &mnt {
                    check(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS))?;
                }
                if let Some(d) = &cwd {
                    check(libc::chdir(d.as_ptr()))?;
                }
            }
            Ok(())
        };
        // SAFETY: the hook only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(hook);
        }
    }
}
