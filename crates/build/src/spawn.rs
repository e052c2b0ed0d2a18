//! Starting a root daemon's builder without copying the daemon.
//!
//! `fork` copies the daemon's page tables, and every page the daemon then
//! writes is copied again (with a TLB shoot-down across its threads); the
//! classic start (std's fork with a `pre_exec` hook, then a second fork into
//! the PID namespace) pays that twice per build, about a third of the
//! daemon's CPU on small builds. Here, as `posix_spawn` does, the builder's
//! PID 1 is cloned with `CLONE_VM | CLONE_VFORK` straight into its new
//! namespaces: it borrows the daemon's memory (the cloning thread sleeps
//! until it execs), so nothing is copied, and there is no intermediate
//! process. What the child sets up before exec is a [`ChildSetup`]: the
//! sandbox (`sandbox.rs`) or an unsandboxed build's private overlay store
//! (`unsandboxed.rs`).
//!
//! The daemon waits for that PID 1 itself, through a pidfd: the kernel
//! reports its exit only after every process of its PID namespace is gone,
//! so any reaped status proves the whole build dead. What an intermediate
//! process did otherwise is done thus:
//! - daemon killed: the child arms `PR_SET_PDEATHSIG`, which fires when the
//!   *thread* that cloned it exits, so clones are made by long-lived spawner
//!   threads (not the runtime's, which may retire); a daemon killed before
//!   it was armed is seen on a pipe whose write end only the spawner holds;
//! - the build abandoned: [`ClonedChild`] kills it when dropped and reaps
//!   it later.
//!
//! The child runs in memory shared with the daemon's other threads, so it
//! obeys the rules of `sandbox/child.rs` (raw system calls on precomputed
//! data) and more: it writes nothing but its own stack and one result
//! word, and it starts with every signal blocked and then resets every
//! handler. A user namespace (an unprivileged daemon) cannot be set up
//! this way (its id maps must be written from outside while the cloning
//! thread sleeps); that case keeps the classic start.

use std::ffi::{c_int, c_void, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use std::os::unix::process::ExitStatusExt;
use tokio::io::unix::AsyncFd;

/// What a cloned builder sets up in its namespaces before exec.
pub(crate) trait ChildSetup: Send + Sync {
    /// The namespaces (`CLONE_NEW*`) to clone it into; at least a PID
    /// namespace, so that its exit takes every process of the build.
    fn namespaces(&self) -> c_int;

    /// Runs in the cloned child, in the daemon's memory: raw system calls on
    /// precomputed data only, no allocation, no locks, no panics. Ends by
    /// arming `PR_SET_PDEATHSIG` (after any change of identity, which
    /// clears it). Installs the builders' seccomp filter unless inherited.
    /// On failure either `_exit`s itself or returns the errno, which
    /// [`spawn`] returns as its error.
    fn set_up(&self, seccomp_inherited: bool) -> Result<(), c_int>;
}

/// Stack of the cloned child until it execs: the setup uses a few KiB
/// (message buffers of 512 bytes, no recursion).
const STACK_SIZE: usize = 256 * 1024;

/// Threads that clone builders. Each is busy for the setup of one build
/// (about a millisecond: mounts and pivot); two keep two jobs' starts from
/// queueing behind each other.
const SPAWNERS: usize = 2;

/// What to exec and with which stdio, all resolved before the clone.
pub struct Exec {
    /// Paths to try in order (the program itself when it has a `/`, else
    /// each `PATH` entry joined with it, as `execvp`).
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// The builder's stdout and stderr (stdin is `/dev/null`).
    pub output: OwnedFd,
}

impl Exec {
    /// `program` resolved as std and `execvp` do: with a `/` as is, else
    /// through the `PATH` in `env` (`/bin:/usr/bin` if it has none).
    pub fn new(
        program: &str,
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        output: impl Into<OwnedFd>,
    ) -> io::Result<Exec> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a NUL byte in the builder's command line or environment: {s:?}"),
                )
            })
        };
        let candidates = if program.contains('/') {
            vec![c(program)?]
        } else {
            let path = env.get("PATH").map_or("/bin:/usr/bin", String::as_str);
            path.split(':')
                .map(|dir| if dir.is_empty() { "." } else { dir })
                .map(|dir| c(&format!("{dir}/{program}")))
                .collect::<io::Result<_>>()?
        };
        let mut argv = vec![c(program)?];
        for a in args {
            argv.push(c(a)?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| c(&format!("{k}={v}")))
            .collect::<io::Result<_>>()?;
        Ok(Exec {
            candidates,
            argv,
            envp,
            output: output.into(),
        })
    }
}

/// One clone to make, handed to a spawner thread.
struct Job {
    setup: Arc<dyn ChildSetup>,
    exec: Exec,
    reply: tokio::sync::oneshot::Sender<io::Result<(libc::pid_t, OwnedFd)>>,
}

/// Everything the child reads, on the spawner thread's stack (shared memory).
struct ChildArgs<'a> {
    setup: &'a dyn ChildSetup,
    candidates: &'a [*const libc::c_char],
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdio: [RawFd; 3],
    /// A pipe whose write end only the spawner thread holds (besides the
    /// child's copy, which it closes): closed, the daemon died.
    alive: [RawFd; 2],
    /// The spawner thread's seccomp filter is the builder's.
    seccomp_inherited: bool,
    /// The errno of the failed setup or last failed `execve`, written by
    /// the child.
    exec_errno: AtomicI32,
}

/// Starts `exec` as PID 1 of new namespaces set up by `setup`. Returns the
/// child once it has exec'd (or `_exit`ed from a failed setup, reported by
/// its status); a setup errno or an `execve` failure is returned as the
/// error, as std's spawn does.
pub(crate) async fn spawn(setup: Arc<dyn ChildSetup>, exec: Exec) -> io::Result<ClonedChild> {
    reap_orphans();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job { setup, exec, reply };
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the builder spawner threads are gone"))?;
    let (pid, pidfd) = answer
        .await
        .map_err(|_| io::Error::other("the builder spawner thread dropped a build"))??;
    // SAFETY: the AsyncFd owns the pidfd; nothing else closes or replaces it.
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let pidfd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            // Not in a runtime with I/O: should not happen; do not leak it.
            // SAFETY: signalling and reaping our own, unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(io::Error::other(e.to_string()));
        }
    };
    Ok(ClonedChild {
        pid,
        pidfd: Some(pidfd),
        status: None,
    })
}

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (send, recv) = mpsc::channel::<Job>();
        let recv = Arc::new(Mutex::new(recv));
        for i in 0..SPAWNERS {
            let recv = Arc::clone(&recv);
            let started = std::thread::Builder::new()
                .name(format!("ferry-spawner-{i}"))
                .spawn(move || spawner_thread(&recv));
            if let Err(e) = started {
                tracing::warn!("cannot start a builder spawner thread: {e}");
            }
        }
        Mutex::new(send)
    })
}

/// Lives as long as the process: a child's `PR_SET_PDEATHSIG` is tied to
/// this thread. Every signal stays blocked here, so the child starts with
/// them blocked and can reset their handlers before any is delivered.
fn spawner_thread(recv: &Mutex<mpsc::Receiver<Job>>) {
    // SAFETY: a zeroed sigset is valid storage; sigfillset and
    // pthread_sigmask only touch it and this thread's mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // The builders' seccomp filter (and no-new-privs), installed once on
    // this thread and inherited by every child it clones, instead of
    // compiled by the kernel for each build. Only this thread: it never
    // execs, and the daemon's other threads are not filtered.
    // SAFETY: raw system calls on static data.
    let seccomp_inherited = unsafe { crate::seccomp::install() } == 0;
    let mut stack = Stack::new();
    loop {
        let job = match recv.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let result = match &mut stack {
            Ok(stack) => clone_child(stack, &job, seccomp_inherited),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        // The build was abandoned while it started (its client went away):
        // the child must not run unwatched.
        if let Err(Ok((pid, pidfd))) = job.reply.send(result) {
            let _ = pidfd_kill(pidfd.as_raw_fd());
            // SAFETY: reaping our own child, just killed.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// An anonymous mapping used as the child's stack, reused for every clone
/// of one spawner thread (the previous child has exec'd or exited).
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh private anonymous mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Stack { base })
    }

    fn top(&self) -> *mut c_void {
        // Stacks grow down on every architecture Linux namespaces run on
        // here; 16-byte alignment holds (the mapping is page-aligned).
        // SAFETY: one past the end of our own mapping.
        unsafe { self.base.cast::<u8>().add(STACK_SIZE).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, no child uses it any more.
        unsafe { libc::munmap(self.base, STACK_SIZE) };
    }
}

/// Clones the child and returns once it has exec'd or exited.
fn clone_child(
    stack: &mut Stack,
    job: &Job,
    seccomp_inherited: bool,
) -> io::Result<(libc::pid_t, OwnedFd)> {
    let null = open_dev_null()?;
    let (alive_read, alive_write) = pipe()?;
    let candidates: Vec<*const libc::c_char> =
        job.exec.candidates.iter().map(|c| c.as_ptr()).collect();
    let argv = null_terminated(&job.exec.argv);
    let envp = null_terminated(&job.exec.envp);
    let args = ChildArgs {
        setup: &*job.setup,
        candidates: &candidates,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: [
            null.as_raw_fd(),
            job.exec.output.as_raw_fd(),
            job.exec.output.as_raw_fd(),
        ],
        alive: [alive_read.as_raw_fd(), alive_write.as_raw_fd()],
        seccomp_inherited,
        exec_errno: AtomicI32::new(0),
    };
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | job.setup.namespaces();
    let mut pidfd: c_int = -1;
    // SAFETY: the child runs `child_main` on its own stack with `args`,
    // which outlive it: this thread sleeps (CLONE_VFORK) until the child
    // has exec'd or exited. CLONE_PIDFD stores the pidfd in `pidfd`.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags | libc::SIGCHLD,
            std::ptr::from_ref(&args).cast_mut().cast(),
            &mut pidfd as *mut c_int,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh pidfd for our child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let errno = args.exec_errno.load(Ordering::Acquire);
    if errno != 0 {
        // SAFETY: reaping our own child, which has exited.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok((pid, pidfd))
}

/// A close-on-exec pipe (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_dev_null() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The cloned child: PID 1 of the new namespaces, in the daemon's memory
/// until it execs. Never returns except by exec or `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent keeps alive while we run.
    let args = unsafe { &*(arg as *const ChildArgs) };
    reset_signals();
    for (target, &fd) in args.stdio.iter().enumerate() {
        // SAFETY: plain system calls on descriptors the parent keeps open.
        unsafe {
            if fd == target as c_int {
                libc::fcntl(fd, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, target as c_int);
            }
        }
    }
    // Only the spawner thread may hold the write end (see below).
    // SAFETY: closing our copy of a descriptor (the fd table is ours).
    unsafe { libc::close(args.alive[1]) };
    if let Err(errno) = args.setup.set_up(args.seccomp_inherited) {
        args.exec_errno.store(errno, Ordering::Release);
        // SAFETY: leaving the child without running any cleanup.
        unsafe { libc::_exit(127) }
    }
    // A daemon killed before PR_SET_PDEATHSIG was armed closed the pipe.
    crate::sandbox::exit_if_closed(args.alive[0]);
    // Nothing of the daemon's leaks into the builder, even a descriptor
    // opened without O_CLOEXEC.
    close_from_on_exec(3);
    let mut errno = libc::ENOENT;
    for &path in args.candidates {
        // SAFETY: NUL-terminated strings and null-terminated arrays that the
        // parent keeps alive.
        unsafe { libc::execve(path, args.argv, args.envp) };
        let e = crate::sandbox::errno();
        // As execvp: a missing or unreadable candidate moves to the next;
        // remember a permission error over a later "not found".
        if e != libc::ENOENT && e != libc::ENOTDIR || errno == libc::ENOENT {
            errno = e;
        }
        if !matches!(e, libc::ENOENT | libc::ENOTDIR | libc::EACCES) {
            break;
        }
    }
    args.exec_errno.store(errno, Ordering::Release);
    // SAFETY: leaving the child without running any cleanup.
    unsafe { libc::_exit(127) }
}

/// Default handlers for every signal (as after exec, but also SIGPIPE,
/// which Rust ignores), then an empty mask.
fn reset_signals() {
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags; raw calls on
    // this process only.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Marks every descriptor from `first` on close-on-exec (Linux 5.11+;
/// older kernels: they are CLOEXEC already, as every descriptor Ferry opens).
fn close_from_on_exec(first: c_int) {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: plain system call on this process's descriptor table.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// A builder started by [`spawn`]: PID 1 of its namespaces, a child of
/// this process. Dropped before it was reaped, it is killed and reaped
/// later.
pub struct ClonedChild {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for ClonedChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClonedChild")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

impl ClonedChild {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the build's PID 1 (and so for every process of the build).
    /// Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let Some(fd) = &self.pidfd else {
                return Err(io::Error::other("builder already reaped"));
            };
            let mut ready = fd.readable().await?;
            if let Some(status) = try_reap(self.pid)? {
                self.status = Some(status);
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Sends SIGKILL to the build's PID 1, which takes its whole PID
    /// namespace with it. A no-op once reaped.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match &self.pidfd {
            Some(fd) => pidfd_kill(fd.get_ref().as_raw_fd()),
            None => Ok(()),
        }
    }
}

impl Drop for ClonedChild {
    fn drop(&mut self) {
        let Some(fd) = self.pidfd.take() else {
            return;
        };
        let _ = pidfd_kill(fd.get_ref().as_raw_fd());
        if let Ok(Some(_)) = try_reap(self.pid) {
            return;
        }
        let fd = fd.into_inner();
        orphans()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.pid, fd));
    }
}

fn pidfd_kill(pidfd: RawFd) -> io::Result<()> {
    // SAFETY: plain system call on a pidfd we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ESRCH: it has exited (not yet reaped): nothing to kill.
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Reaps `pid` if it has exited.
fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is valid to write.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Killed builders not yet reaped when dropped: bounded by the builds that
/// were abandoned at the same moment, reaped at the next spawn.
fn orphans() -> &'static Mutex<Vec<(libc::pid_t, OwnedFd)>> {
    static ORPHANS: OnceLock<Mutex<Vec<(libc::pid_t, OwnedFd)>>> = OnceLock::new();
    ORPHANS.get_or_init(|| Mutex::new(Vec::new()))
}

fn reap_orphans() {
    let mut list = orphans().lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|(pid, _)| !matches!(try_reap(*pid), Ok(Some(_)) | Err(_)));
}

/// Whether this kernel has what [`spawn`] needs (pidfds: Linux 5.3+).
pub(crate) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: plain system call; the descriptor is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) };
        if fd < 0 {
            return false;
        }
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd as c_int) };
        true
    })
}
