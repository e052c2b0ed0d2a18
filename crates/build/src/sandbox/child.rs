//! The child side of the sandbox: code that runs between `fork` and `exec`.
//!
//! Everything here runs in the forked child of a possibly multi-threaded
//! daemon, so it must be async-signal-safe: raw system calls on data that
//! [`Plan`] precomputed in the parent, no allocation, no locks, no panics,
//! no formatting machinery. Failures are reported by [`fail`], which writes a
//! message assembled in a stack buffer and `_exit`s.
//!
//! Process layout (see the module docs of `sandbox` for the why):
//!
//! ```text
//! daemon ──fork (std)──> intermediate ──clone──> init (PID 1 of the new PID
//!                        (pid seen by            namespace; sets up mounts,
//!                         the caller)            pivots, drops ids, execs
//!                                                the builder)
//! ```

use std::ffi::{c_int, c_ulong, CStr};
use std::io;
use std::ptr;

use super::plan::{Identity, MountOp, Op, Plan};

/// Exit status of the intermediate process when the sandbox could not be set
/// up (the detailed message is on the builder's stderr and available from
/// `Sandbox::setup_failure`).
pub const SETUP_FAILED_EXIT_CODE: i32 = 252;

/// Namespaces every sandboxed builder gets (the user namespace is added
/// separately, and only when the daemon is not root; a root daemon's network
/// namespace is entered from a pool instead of created, see `netns.rs`).
const NAMESPACES: c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Entry point, called from the `pre_exec` hook in the child forked by std.
///
/// Returns only in the sandbox's init process, ready for std to exec the
/// builder; the intermediate process never returns.
pub(super) fn enter(plan: &Plan) -> io::Result<()> {
    if let Identity::UserNamespace { uid_map, gid_map } = &plan.identity {
        check(plan, "unshare(CLONE_NEWUSER)", None, unsafe {
            // SAFETY: plain system call, no memory passed.
            libc::unshare(libc::CLONE_NEWUSER)
        });
        write_file(plan, c"/proc/self/setgroups", b"deny");
        write_file(plan, c"/proc/self/uid_map", uid_map.as_bytes());
        write_file(plan, c"/proc/self/gid_map", gid_map.as_bytes());
    }
    let namespaces = match plan.netns {
        Some(fd) => {
            check(plan, "setns(network namespace)", None, unsafe {
                // SAFETY: plain system call on a namespace fd the plan keeps open.
                libc::setns(fd, libc::CLONE_NEWNET)
            });
            NAMESPACES & !libc::CLONE_NEWNET
        }
        None => NAMESPACES,
    };
    check(plan, "unshare(namespaces)", None, unsafe {
        // SAFETY: plain system call, no memory passed.
        libc::unshare(namespaces)
    });
    let mut race = [-1 as c_int; 2];
    check(plan, "pipe2", None, unsafe {
        // SAFETY: `race` is a valid array of two ints for the kernel to fill.
        libc::pipe2(race.as_mut_ptr(), libc::O_CLOEXEC)
    });
    let pid = raw_fork();
    if pid < 0 {
        fail(plan, "fork into the PID namespace", None, errno());
    }
    if pid == 0 {
        init(plan, race[0], race[1]);
        return Ok(());
    }
    intermediate(plan, pid, race[1])
}

/// The intermediate process: waits for the sandbox's init and exits with its
/// status; kills it if the daemon's lifeline pipe breaks (daemon died or the
/// `Sandbox` was dropped).
fn intermediate(plan: &Plan, child: libc::pid_t, race_write: c_int) -> ! {
    // SAFETY: plain system call; a failure (old kernel) yields -1, handled below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as c_int;
    // Drop every inherited descriptor (stdio, std's exec-error pipe, other
    // builds' lifelines) so that they close when the builder closes them, not
    // when we exit. `race_write` stays open: init watches it for our death.
    close_all_except(&mut [plan.lifeline_read, pidfd, race_write]);
    if let Event::DaemonGone = wait_event(plan.lifeline_read, pidfd, child) {
        // SAFETY: plain system call on our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let status = reap(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // SAFETY: terminating the process without running any Rust/libc cleanup
    // is exactly what a forked child must do.
    unsafe { libc::_exit(code) }
}

enum Event {
    ChildExited,
    DaemonGone,
}

/// Blocks until init exits or the lifeline breaks. Uses a pidfd when the
/// kernel has one (5.3+), else polls `waitpid` every 50 ms.
fn wait_event(lifeline: c_int, pidfd: c_int, child: libc::pid_t) -> Event {
    let mut fds = [
        libc::pollfd {
            fd: lifeline,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let (count, timeout) = if pidfd >= 0 { (2, -1) } else { (1, 50) };
    loop {
        if pidfd < 0 && child_exited(child) {
            return Event::ChildExited;
        }
        // SAFETY: `fds` is a valid array of at least `count` pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
        if r < 0 {
            continue; // EINTR (no other error is possible with valid fds)
        }
        if count == 2 && fds[1].revents != 0 {
            return Event::ChildExited;
        }
        if fds[0].revents != 0 {
            return Event::DaemonGone;
        }
    }
}

/// Non-blocking check whether `child` has exited (without reaping it).
fn child_exited(child: libc::pid_t) -> bool {
    // SAFETY: `info` is a valid siginfo for the kernel to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: as above; P_PID with our own child.
    let r = unsafe { libc::waitid(libc::P_PID, child as libc::id_t, &mut info, flags) };
    // SAFETY: si_pid is valid to read for a zeroed/kernel-filled siginfo.
    r == 0 && unsafe { info.si_pid() } != 0
}

/// Waits for `child` (retrying on EINTR) and returns its wait status.
fn reap(child: libc::pid_t) -> c_int {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for the kernel to fill.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            return status;
        }
        if r < 0 && errno() != libc::EINTR {
            return 128 + libc::SIGKILL; // reported as "killed"
        }
    }
}

/// PID 1 of the new PID namespace: builds the mount tree, pivots into it,
/// drops privileges and ties its life to the intermediate.
fn init(plan: &Plan, race_read: c_int, race_write: c_int) {
    // SAFETY: closing our copy of a descriptor we own.
    unsafe { libc::close(race_write) };
    set_up(plan, true);
    // The intermediate may have died before PDEATHSIG was armed: then its end
    // of the race pipe is closed and we must not go on.
    exit_if_closed(race_read);
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(race_read) };
}

/// Enters the plan's pooled network namespace, if it has one (see
/// `netns.rs`). Used by the directly spawned init (`spawn.rs`), which was
/// cloned into every other namespace already.
pub(super) fn enter_netns(plan: &Plan) {
    if let Some(fd) = plan.netns {
        check(plan, "setns(network namespace)", None, unsafe {
            // SAFETY: plain system call on a namespace fd the plan keeps open.
            libc::setns(fd, libc::CLONE_NEWNET)
        });
    }
}

/// Exits with [`SETUP_FAILED_EXIT_CODE`] if every write end of the pipe
/// whose read end is `fd` is closed: whoever was to watch this build is gone.
pub(crate) fn exit_if_closed(fd: c_int) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    if unsafe { libc::poll(&mut p, 1, 0) } != 0 {
        // SAFETY: see `intermediate`.
        unsafe { libc::_exit(SETUP_FAILED_EXIT_CODE) };
    }
}

/// The work of the build's PID 1 before exec, however it was started: the
/// mount tree, hostname, loopback, pivot, identity, limits, seccomp (unless
/// inherited: `install_seccomp` false), and `PR_SET_PDEATHSIG` (armed last,
/// and only then checked by the caller).
pub(super) fn set_up(plan: &Plan, install_seccomp: bool) {
    // SAFETY: umask cannot fail. Exact modes while building the tree, the
    // conventional 022 for the builder (as Nix).
    unsafe { libc::umask(0) };
    build_tree(plan);
    set_hostname(plan);
    if plan.netns.is_none() {
        loopback_up(plan);
    }
    pivot(plan);
    // SAFETY: as above.
    unsafe { libc::umask(0o022) };
    if plan.linux32 {
        check(plan, "personality(PER_LINUX32)", None, unsafe {
            // SAFETY: a plain system call.
            crate::systems::raw_set_linux32()
        });
    }
    drop_identity(plan);
    if plan.max_processes > 0 {
        check(plan, "setrlimit(RLIMIT_NPROC)", None, unsafe {
            // SAFETY: plain system call on a valid rlimit.
            crate::users::raw_set_nproc(plan.max_processes)
        });
    }
    // No new privileges, and no setuid/setgid files made (see `seccomp`).
    if install_seccomp {
        check(plan, "seccomp filter", None, unsafe {
            // SAFETY: raw system calls on static data.
            crate::seccomp::install()
        });
    }
    // Armed last: changing the effective uid/gid (drop_identity) clears it.
    check(plan, "prctl(PR_SET_PDEATHSIG)", None, unsafe {
        // SAFETY: plain system call with integer arguments.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0)
    });
}

/// Makes every mount private (nothing propagates back to the host), then
/// performs the precomputed steps: tmpfs root, skeleton, mounts.
fn build_tree(plan: &Plan) {
    let flags = libc::MS_REC | libc::MS_PRIVATE;
    check(plan, "make / private", None, unsafe {
        // SAFETY: valid NUL-terminated path, null optional arguments.
        libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), flags, ptr::null())
    });
    for op in &plan.ops {
        match op {
            Op::Mkdir { path, mode } => check(plan, "mkdir", Some(path), unsafe {
                // SAFETY: NUL-terminated path from `plan`.
                libc::mkdir(path.as_ptr(), *mode)
            }),
            Op::Touch { path } => create(plan, path, b""),
            Op::Write { path, data } => create(plan, path, data),
            Op::Symlink { target, path } => check(plan, "symlink", Some(path), unsafe {
                // SAFETY: NUL-terminated paths from `plan`.
                libc::symlink(target.as_ptr(), path.as_ptr())
            }),
            Op::Mount(m) => mount_one(plan, m),
        }
    }
}

/// Creates a new file (mode 0644) holding `data`.
fn create(plan: &Plan, path: &CStr, data: &[u8]) {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path; mode passed as the variadic argument.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint) };
    check(plan, "create", Some(path), fd);
    write_all(plan, fd, path, data);
}

fn mount_one(plan: &Plan, op: &MountOp) {
    let fstype = op.fstype.map_or(ptr::null(), CStr::as_ptr);
    let data = op.data.as_ref().map_or(ptr::null(), |d| d.as_ptr().cast());
    check(plan, "mount", Some(&op.target), unsafe {
        // SAFETY: all strings are NUL-terminated and live in `plan`.
        libc::mount(
            op.source.as_ptr(),
            op.target.as_ptr(),
            fstype,
            op.flags,
            data,
        )
    });
    if let Some(flags) = op.remount {
        check(plan, "remount read-only", Some(&op.target), unsafe {
            // SAFETY: as above.
            libc::mount(
                ptr::null(),
                op.target.as_ptr(),
                ptr::null(),
                flags,
                ptr::null(),
            )
        });
    }
}

fn set_hostname(plan: &Plan) {
    let name = b"localhost";
    check(plan, "sethostname", None, unsafe {
        // SAFETY: pointer and length describe a valid buffer.
        libc::sethostname(name.as_ptr().cast(), name.len())
    });
}

/// Brings up `lo` in the new (otherwise empty) network namespace, so that
/// builds whose tests talk to themselves over 127.0.0.1 work.
fn loopback_up(plan: &Plan) {
    // SAFETY: plain system call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(plan, "socket for lo", None, sock);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    check(plan, "SIOCGIFFLAGS lo", None, unsafe {
        // SAFETY: `req` is a valid ifreq for this request.
        libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req)
    });
    // SAFETY: the kernel just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    check(plan, "SIOCSIFFLAGS lo", None, unsafe {
        // SAFETY: as above.
        libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
    });
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(sock) };
}

/// `pivot_root` into the tmpfs root, then
/// detaches the old root: unlike `chroot`, nothing of the host's mount tree
/// stays reachable or visible in `/proc/self/mountinfo`.
fn pivot(plan: &Plan) {
    check(plan, "chdir", Some(&plan.root), unsafe {
        // SAFETY: NUL-terminated path from `plan`.
        libc::chdir(plan.root.as_ptr())
    });
    check(plan, "pivot_root", Some(&plan.root), unsafe {
        // SAFETY: "." for both arguments stacks the old root on the new one.
        libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int
    });
    check(plan, "detach old root", None, unsafe {
        // SAFETY: NUL-terminated path.
        libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
    });
    check(plan, "chdir", Some(&plan.build_dir_inside), unsafe {
        // SAFETY: NUL-terminated path from `plan`.
        libc::chdir(plan.build_dir_inside.as_ptr())
    });
}

/// As root: become the dedicated build user (dropping all capabilities). In
/// a user namespace the ids were already mapped and capabilities vanish at
/// exec because the mapped uid is not 0.
fn drop_identity(plan: &Plan) {
    let Identity::Root { uid, gid } = plan.identity else {
        return;
    };
    check(plan, "setgroups", None, unsafe {
        // SAFETY: zero-length list, null pointer allowed. Raw syscalls here:
        // glibc's wrappers would try to signal the daemon's other threads,
        // which do not exist in this process.
        libc::syscall(libc::SYS_setgroups, 0usize, ptr::null::<libc::gid_t>()) as c_int
    });
    check(plan, "setgid", None, unsafe {
        // SAFETY: plain system call.
        libc::syscall(libc::SYS_setresgid, gid, gid, gid) as c_int
    });
    check(plan, "setuid", None, unsafe {
        // SAFETY: as above.
        libc::syscall(libc::SYS_setresuid, uid, uid, uid) as c_int
    });
}

/// Writes `data` to a (proc) file in one `write`.
fn write_file(plan: &Plan, path: &CStr, data: &[u8]) {
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(plan, "open", Some(path), fd);
    write_all(plan, fd, path, data);
}

/// Writes `data` to `fd` in one `write` (small buffers) and closes it.
fn write_all(plan: &Plan, fd: c_int, path: &CStr, data: &[u8]) {
    if !data.is_empty() {
        // SAFETY: pointer and length describe a valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n != data.len() as isize {
            fail(plan, "write", Some(path), errno());
        }
    }
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(fd) };
}

/// `fork` without glibc's atfork handlers and locks (which may be held by
/// another thread of the daemon at the time std forked us).
fn raw_fork() -> libc::pid_t {
    // SAFETY: clone with only SIGCHLD and a null stack behaves like fork
    // (argument order differs across architectures, but all others are 0).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    pid as libc::pid_t
}

/// Closes every descriptor not in `keep` (entries < 0 are ignored).
fn close_all_except(keep: &mut [c_int]) {
    keep.sort_unstable();
    let mut first: c_int = 0;
    for &fd in keep.iter().filter(|&&fd| fd >= 0) {
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, c_int::MAX);
}

pub(super) fn close_range(first: c_int, last: c_int) {
    // SAFETY: plain system call; closes only descriptors.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if r == 0 {
        return;
    }
    // Kernel older than 5.9: close one by one up to a sane bound.
    for fd in first..=last.min(4095) {
        // SAFETY: closing possibly unused descriptors is harmless.
        unsafe { libc::close(fd) };
    }
}

pub(crate) fn errno() -> c_int {
    // SAFETY: errno is thread-local and always valid to read.
    unsafe { *libc::__errno_location() }
}

/// Fails with `step` if the system call result `r` is negative.
fn check(plan: &Plan, step: &str, path: Option<&CStr>, r: c_int) {
    if r < 0 {
        fail(plan, step, path, errno());
    }
}

/// Reports a setup failure on stderr and on the status pipe, then exits with
/// [`SETUP_FAILED_EXIT_CODE`].
fn fail(plan: &Plan, step: &str, path: Option<&CStr>, err: c_int) -> ! {
    let mut msg = Message::new();
    msg.push(b"ferry sandbox: setup failed: ");
    msg.push(step.as_bytes());
    if let Some(path) = path {
        msg.push(b" ");
        msg.push(path.to_bytes());
    }
    msg.push(b": errno ");
    msg.push_number(err);
    msg.push(b"\n");
    for fd in [2, plan.status_write] {
        // SAFETY: pointer and length describe a valid buffer.
        unsafe { libc::write(fd, msg.buf.as_ptr().cast(), msg.len) };
    }
    // SAFETY: see `intermediate`.
    unsafe { libc::_exit(SETUP_FAILED_EXIT_CODE) }
}

/// A fixed-size message buffer on the stack (no allocation after fork).
struct Message {
    buf: [u8; 512],
    len: usize,
}

impl Message {
    fn new() -> Self {
        Message {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: c_int) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}
