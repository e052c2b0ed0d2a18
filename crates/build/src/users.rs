//! Build users: what a root daemon does so that a builder never runs as
//! root and none of its processes outlives its build, sandbox or not.
//!
//! Each local job has its own builder number and uid (and gid),
//! `base + builder`, used by one build at a time (the engine hands builder
//! numbers out exclusively, one per job permit). When a build ends,
//! [`kill_user`] kills every process of that uid, as Nix's `killUser` does:
//! a child process takes the uid and calls `kill(-1, SIGKILL)` until no
//! process is left, which reaches double-forked, `setsid` daemons and
//! processes in other PID namespaces alike. [`raw_set_nproc`] caps the
//! processes of the uid (a fork bomb fails its own build).
//!
//! Everything here that runs in a forked child makes raw system calls only.

use std::ffi::c_int;
use std::io;

/// Sets RLIMIT_NPROC (soft and hard) of the calling process to `n`, or to
/// its current hard limit if that is lower. Async-signal-safe.
///
/// # Safety
///
/// A plain system call on stack memory; safe to call between fork and exec.
pub(crate) unsafe fn raw_set_nproc(n: u64) -> c_int {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: pid 0 is the caller; null new limit means "read only".
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NPROC,
            std::ptr::null::<libc::rlimit64>(),
            &mut old as *mut libc::rlimit64,
        )
    };
    if r < 0 {
        return r as c_int;
    }
    let n = n.min(old.rlim_max);
    let new = libc::rlimit64 {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: as above, with a valid new limit.
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NPROC,
            &new as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        ) as c_int
    }
}

/// Switches the calling process to `uid`/`gid` with no supplementary
/// groups. Async-signal-safe (raw system calls: glibc's wrappers would try
/// to signal the daemon's other threads, which a forked child does not
/// have).
///
/// # Safety
///
/// Plain system calls; safe to call between fork and exec.
pub(crate) unsafe fn raw_drop_to(uid: u32, gid: u32) -> c_int {
    // SAFETY: zero-length list with a null pointer; plain system calls.
    unsafe {
        for r in [
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
        ] {
            if r < 0 {
                return r as c_int;
            }
        }
    }
    0
}

/// Kills every process running as `uid`: a child takes the uid and sends
/// SIGKILL to every process it may signal until none is left. Only for a
/// root daemon and a build uid: refuses 0 and the daemon's own uid.
///
/// Killed processes still answer `kill` until their parent reaps them (a
/// zombie under a PID 1 that is slow to reap): when signals keep being
/// delivered, `/proc` says whether anything but zombies is left.
pub fn kill_user(uid: u32) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid == 0 || uid == me {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to kill every process of uid {uid} (root or the daemon itself)"),
        ));
    }
    for _ in 0..500 {
        match kill_round(uid)? {
            0 => return Ok(()),
            5 if !live_processes_of(uid) => return Ok(()),
            5 => std::thread::sleep(std::time::Duration::from_millis(10)),
            code => {
                return Err(io::Error::other(format!(
                    "killing the processes of build uid {uid} failed (step {code})"
                )))
            }
        }
    }
    Err(io::Error::other(format!(
        "processes of build uid {uid} are still alive after 5 s of SIGKILLs"
    )))
}

/// One killer child: 0 when no process of `uid` is left, 5 when signals
/// were still delivered after a burst of rounds.
fn kill_round(uid: u32) -> io::Result<c_int> {
    // SAFETY: clone without CLONE_VM behaves like fork; the child makes raw
    // system calls only and `_exit`s.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as libc::pid_t;
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw system calls, then `_exit` (no cleanup in a forked child).
        unsafe {
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                libc::_exit(2);
            }
            // Linux's kill(-1) skips the caller itself; each round kills
            // what exists, a process forked meanwhile is caught by the next.
            for _ in 0..100 {
                if libc::kill(-1, libc::SIGKILL) < 0 {
                    let e = *libc::__errno_location();
                    libc::_exit(if e == libc::ESRCH { 0 } else { 3 });
                }
            }
            libc::_exit(5);
        }
    }
    let mut status: c_int = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is valid to write.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(io::Error::other(format!(
            "killing the processes of build uid {uid}: the killer was killed"
        )))
    }
}

/// Whether a process other than a zombie runs with real uid `uid`.
fn live_processes_of(uid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let real_uid = field("Uid:").and_then(|u| u.split_whitespace().next()?.parse().ok());
        let zombie = field("State:").is_some_and(|s| s.starts_with('Z'));
        if real_uid == Some(uid) && !zombie {
            return true;
        }
    }
    false
}
