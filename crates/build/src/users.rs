//! Build users: what a root daemon does so that a builder never runs as
//! root and none of its processes outlives its build, sandbox or not.
//!
//! Each job slot has its own uid (and gid), `base + slot`, used by one build
//! at a time (the engine hands slots out exclusively). When a build ends,
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
pub fn kill_user(uid: u32) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid == 0 || uid == me {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to kill every process of uid {uid} (root or the daemon itself)"),
        ));
    }
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
            // Killed processes still count until their parent reaps them:
            // after a first burst, wait a millisecond between rounds (at
            // most about 5 s in all).
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            for round in 0..5_100 {
                if libc::kill(-1, libc::SIGKILL) < 0 {
                    let e = *libc::__errno_location();
                    libc::_exit(if e == libc::ESRCH { 0 } else { 3 });
                }
                if round >= 100 {
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
            }
            libc::_exit(4);
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
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(code) => Err(io::Error::other(format!(
            "killing the processes of build uid {uid} failed (step {code})"
        ))),
        None => Err(io::Error::other(format!(
            "killing the processes of build uid {uid}: the killer was killed"
        ))),
    }
}
