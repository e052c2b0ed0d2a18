//! Whether this machine can sandbox builds at all: a short-lived child is
//! cloned into the namespaces a build needs, so that the daemon can say at
//! start-up (not at the first build) why not and what to do.

use std::ffi::c_int;
use std::io;

/// Whether builds can be sandboxed here: as root, or with unprivileged user
/// namespaces. Probes by creating the namespaces in a short-lived child. The
/// error says why not and suggests `--no-sandbox`.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let err = match probe_namespaces(!root) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let why = if root {
        format!("cannot create namespaces as root ({err}); a container without CAP_SYS_ADMIN?")
    } else {
        format!(
            "not root and unprivileged user namespaces are unavailable ({err}); see \
             sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces and \
             AppArmor's kernel.apparmor_restrict_unprivileged_userns"
        )
    };
    Err(format!(
        "build sandbox unavailable: {why}; run the daemon as root or pass --no-sandbox"
    ))
}

/// Clones a child into fresh namespaces that only makes `/` private and
/// exits: the first step a real build takes.
fn probe_namespaces(user: bool) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    if user {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: clone without CLONE_VM behaves like fork; the child only makes
    // async-signal-safe system calls and `_exit`s.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        // SAFETY: valid C string, null optional arguments; then exit.
        unsafe {
            let r = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            );
            libc::_exit(if r == 0 {
                0
            } else {
                *libc::__errno_location() & 0x7f
            });
        }
    }
    let mut status: c_int = 0;
    // SAFETY: waiting for our own child; `status` is valid to write.
    while unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Err(io::Error::other("namespace probe was killed")),
    }
}
