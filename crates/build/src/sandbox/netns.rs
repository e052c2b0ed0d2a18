//! Network namespaces for sandboxed builds, made once and reused.
//!
//! Creating a network namespace, bringing its `lo` up and tearing it down
//! again (the kernel's `cleanup_net` worker) cost about a millisecond of CPU
//! per build, a good share of a trivial build's overhead. A root daemon
//! therefore keeps empty namespaces in a small pool: a build takes one for
//! itself alone (its intermediate process enters it with `setns` before
//! creating the other namespaces, which stay fresh per build: mount, PID,
//! IPC, UTS), and gives it back only when it is provably as it was made:
//!
//! - every process of the build is dead: the namespace is given back only
//!   when the intermediate exited by itself, which it does after reaping the
//!   PID namespace's init, and the kernel reaps every process of a PID
//!   namespace before its init's exit is reported (a killed or timed-out
//!   build's namespace is dropped, not reused);
//! - so every socket of the build is closed: no build can hand one to a
//!   process outside (the sandbox has no path to a socket outside it), and
//!   the check below refuses a namespace where any socket is left (TCP's
//!   TIME_WAIT, an abstract Unix socket kept alive in flight, an IPv6 flow
//!   label still lingering, a queued fragment);
//! - nothing else in it can be changed by a build: the namespace belongs to
//!   the initial user namespace and builders run without capabilities, so
//!   they cannot touch interfaces, addresses, routes, firewall rules or
//!   `net.*` sysctls.
//!
//! What a later build can still observe is traffic counters (`/proc/net/dev`,
//! `snmp`): numbers, not data. The check reads the namespace's own socket
//! counts (`sockstat`, `sockstat6`: sockets of any family in use, TIME_WAIT,
//! queued fragments) and its IPv6 flow labels; anything left and the
//! namespace is dropped (the next build gets a new one). Unprivileged daemons (builds in a user namespace) keep
//! creating one per build.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// At most this many idle namespaces are kept (more than any usual
/// `--max-jobs`; the rest are dropped).
const POOL_MAX: usize = 16;

/// Per-namespace socket counts, all zero in a namespace no socket is left
/// in (reading the socket tables themselves, `/proc/net/tcp` and the like,
/// walks the host-wide hash tables: milliseconds).
const COUNTS: &[&str] = &["sockstat", "sockstat6"];

/// Fields of `COUNTS` that count this namespace's sockets (the others,
/// `orphan`, `alloc` and `mem`, are host-wide).
const COUNTED: &[&str] = &["used", "inuse", "tw", "memory"];

/// Lists IPv6 flow labels, which linger after their socket is closed.
const FLOW_LABELS: &str = "ip6_flowlabel";

/// An empty network namespace with `lo` up, held by an fd.
pub(super) struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    pub(super) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

static POOL: Mutex<Vec<NetNs>> = Mutex::new(Vec::new());

/// An idle namespace from the pool, or a new one.
pub(super) fn take() -> io::Result<NetNs> {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    match pooled {
        Some(ns) => Ok(ns),
        None => create(),
    }
}

/// Gives `ns` back after a build whose processes are all dead (see the
/// module docs); it is dropped instead if anything in it differs from a new
/// one, or the pool is full.
pub(super) fn give_back(ns: NetNs) {
    if !matches!(is_clean(&ns), Ok(true)) {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(ns);
    }
}

/// Makes a namespace on a short-lived thread (the daemon's own threads
/// stay where they are).
fn create() -> io::Result<NetNs> {
    on_thread(None, || {
        // SAFETY: plain system call; affects this (short-lived) thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(context("unshare(CLONE_NEWNET)"));
        }
        loopback_up()?;
        let fd = open("/proc/thread-self/ns/net")?;
        Ok(NetNs { fd })
    })
}

/// Whether `ns` holds no socket (nor a lingering flow label or a queued
/// fragment).
fn is_clean(ns: &NetNs) -> io::Result<bool> {
    on_thread(Some(ns.fd.as_fd()), || {
        for file in COUNTS {
            let text = fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            if !counts_are_zero(&text) {
                return Ok(false);
            }
        }
        match fs::read_to_string(format!("/proc/thread-self/net/{FLOW_LABELS}")) {
            Ok(text) => Ok(text.lines().count() <= 1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true), // no IPv6
            Err(e) => Err(e),
        }
    })
}

/// Whether every per-namespace count in a `sockstat` text is 0, e.g.
/// `sockets: used 0` / `TCP: inuse 0 orphan 3 tw 0 alloc 9 mem 10`.
fn counts_are_zero(text: &str) -> bool {
    text.lines().all(|line| {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        words
            .chunks(2)
            .all(|kv| !COUNTED.contains(&kv[0]) || kv.get(1) == Some(&"0"))
    })
}

/// Runs `f` on a new thread, in the network namespace `ns` if given.
fn on_thread<T: Send>(
    ns: Option<BorrowedFd<'_>>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = ns {
                // SAFETY: plain system call on a valid namespace fd; affects
                // this thread only, which ends right after `f`.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    return Err(context("setns(CLONE_NEWNET)"));
                }
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// Brings up `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain system call; the fd is ours.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(context("socket for lo"));
    }
    // SAFETY: a fresh descriptor we own (closed on drop).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: `req` is a valid ifreq for these requests on a socket we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(context("SIOCGIFFLAGS lo"));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(context("SIOCSIFFLAGS lo"));
        }
    }
    Ok(())
}

fn open(path: &str) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(context(&format!("open {path}")));
    }
    // SAFETY: the kernel just returned this fresh descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn context(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("sandbox network namespace: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid cannot fail.
        (unsafe { libc::geteuid() }) == 0
    }

    #[test]
    fn a_new_namespace_is_clean_and_one_with_a_socket_left_is_not() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = create().unwrap();
        assert!(is_clean(&ns).unwrap());
        // A listening socket left in it (as a build's process would, were it
        // still alive): not clean.
        let listener = on_thread(Some(ns.fd.as_fd()), || {
            std::net::TcpListener::bind("127.0.0.1:0")
        })
        .unwrap();
        assert!(!is_clean(&ns).unwrap());
        drop(listener);
        assert!(is_clean(&ns).unwrap());
        // A TIME_WAIT connection outlives its processes: not clean.
        on_thread(Some(ns.fd.as_fd()), || {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            drop(c); // the active closer goes to TIME_WAIT
            drop(s);
            Ok(())
        })
        .unwrap();
        assert!(!is_clean(&ns).unwrap());
    }

    #[test]
    fn a_unix_socket_left_makes_a_namespace_unclean() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = create().unwrap();
        let (a, b) = on_thread(Some(ns.fd.as_fd()), std::os::unix::net::UnixStream::pair).unwrap();
        assert!(!is_clean(&ns).unwrap());
        drop((a, b));
        assert!(is_clean(&ns).unwrap());
    }

    #[test]
    fn counts() {
        assert!(counts_are_zero(
            "sockets: used 0\nTCP: inuse 0 orphan 4 tw 0 alloc 9 mem 10\nFRAG: inuse 0 memory 0\n"
        ));
        assert!(!counts_are_zero(
            "sockets: used 1\nTCP: inuse 0 orphan 0 tw 0\n"
        ));
        assert!(!counts_are_zero(
            "sockets: used 0\nTCP: inuse 0 orphan 0 tw 2\n"
        ));
        assert!(!counts_are_zero("TCP6: inuse 1\n"));
        assert!(!counts_are_zero("FRAG6: inuse 0 memory 512\n"));
    }
}
