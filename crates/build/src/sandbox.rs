//! The builder sandbox: runs one builder in its own mount, PID, network, IPC
//! and UTS namespaces, inside a chroot that holds only the input closure.
//!
//! # Life of a sandboxed build
//!
//! 1. [`Sandbox::prepare`] creates the chroot directory
//!    `<chroot_parent>/.ferry-chroot-<pid>-<n>` (on the store's file system,
//!    so outputs can be renamed into the store) holding only `root/` (a mount
//!    point), `store/` (with the inputs' mount points) and `tmp/`, and
//!    precomputes every step of the child (see `plan.rs`).
//! 2. [`Sandbox::configure`] installs a `pre_exec` hook on a
//!    [`std::process::Command`]. In the forked child it creates the
//!    namespaces and forks again: the *intermediate* process (the pid the
//!    caller sees) only waits; the *init* process (PID 1 of the new PID
//!    namespace) mounts a tmpfs on `root/`, builds `/etc`, `/dev` and the
//!    mount points there, bind-mounts the store dir, inputs, host paths and
//!    build dir, makes the tmpfs read-only, `pivot_root`s into it, drops to
//!    the build user and lets std exec the builder.
//! 3. The caller waits. Killing the intermediate (timeout) kills init through
//!    `PR_SET_PDEATHSIG`, and the kernel kills every process of a PID
//!    namespace whose init dies: the whole build goes, background processes
//!    included. If the daemon dies (even `kill -9`) or drops the `Sandbox`,
//!    a "lifeline" pipe breaks and the intermediate kills the build too.
//! 4. [`Sandbox::staged_outputs`] says where the outputs lie in the chroot
//!    (0700, the daemon's only), where the builder canonicalises, hashes and
//!    scans them before renaming them into the store;
//!    [`Sandbox::destroy`] (or `Drop`) removes the tree. The mounts lived
//!    only in the build's mount namespace, so none are left behind; a tree
//!    left by a killed daemon is removed by [`remove_stale_chroots`].
//!
//! # Identity
//!
//! As root, no user namespace is used: the builder runs as `spec.uid` /
//! `spec.gid` (a dedicated unprivileged id; all capabilities are lost at the
//! `setuid`), and `prepare` hands it the build dir and the chroot's store
//! dir. Unprivileged, a user namespace maps `spec.uid`/`spec.gid` to the
//! daemon's own ids, which own the whole tree.
//!
//! # Network
//!
//! The new network namespace holds only `lo`, which is brought up so that
//! test suites can talk to themselves on 127.0.0.1; nothing leaves it.

mod child;
mod netns;
mod plan;
mod probe;

use std::ffi::c_int;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use child::SETUP_FAILED_EXIT_CODE;
pub(crate) use child::{errno, exit_if_closed};
use plan::{Identity, Plan};
pub use probe::available;

use crate::spawn::{ChildSetup, ClonedChild, Exec};

/// Prefix of chroot directory names in `chroot_parent`. A leading `.` never
/// clashes with a store path name.
pub const CHROOT_PREFIX: &str = ".ferry-chroot-";

/// What to run a builder in.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Logical store dir (e.g. `/ferry/store`), at the same path inside.
    pub store_dir: PathBuf,
    /// Input closure: absolute host paths of store paths, bound read-only at
    /// `store_dir/<base name>` inside (the same path unless the store is
    /// relocated on the host).
    pub inputs: Vec<PathBuf>,
    /// Host paths of the outputs; the builder creates them at
    /// `store_dir/<base name>` inside, [`Sandbox::staged_outputs`] pairs
    /// them with where they lie in the chroot.
    pub outputs: Vec<PathBuf>,
    /// Host build directory, mounted read-write at `sandbox_build_dir`.
    pub build_dir: PathBuf,
    /// The builder's `NIX_BUILD_TOP` inside (e.g. `/build`); its cwd.
    pub sandbox_build_dir: PathBuf,
    /// Extra host paths, bound read-only (see [`default_host_paths`]).
    pub host_paths: Vec<HostPath>,
    /// Where the chroot directory is created; must be on the same file
    /// system as the outputs' host paths (pass the store's real dir).
    pub chroot_parent: PathBuf,
    /// Identity of the builder inside the sandbox.
    pub uid: u32,
    pub gid: u32,
    /// RLIMIT_NPROC of the builder (processes of its uid); 0: unchanged.
    pub max_processes: u64,
    /// Run the builder under the 32-bit personality (an i686-linux build
    /// on x86_64-linux, see `systems.rs`).
    pub linux32: bool,
}

/// A host path made visible, read-only, inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// Absolute path inside the sandbox.
    pub inside: PathBuf,
    /// Path on the host. A symlink is recreated as the same symlink inside
    /// (its target is resolved inside), not bound.
    pub host: PathBuf,
    /// Skip it silently when the host path does not exist.
    pub optional: bool,
}

impl SandboxSpec {
    /// Where a store path (given by its host path) appears inside.
    fn inside_store(&self, host: &Path) -> PathBuf {
        match host.file_name() {
            Some(name) => self.store_dir.join(name),
            None => host.to_path_buf(),
        }
    }
}

impl HostPath {
    /// The host path `path` at the same place inside.
    pub fn same(path: impl Into<PathBuf>, optional: bool) -> HostPath {
        let path = path.into();
        HostPath {
            inside: path.clone(),
            host: path,
            optional,
        }
    }
}

/// The default host paths: enough for `/bin/sh` scripts, coreutils and the
/// host C compiler (`cc` is a symlink through `/etc/alternatives` on
/// Debian). `/bin` is required; everything else is skipped when missing.
/// On merged-/usr systems `/bin`, `/lib` and `/lib64` are symlinks into
/// `/usr` and are recreated as such.
pub fn default_host_paths() -> Vec<HostPath> {
    let mut paths = vec![HostPath::same("/bin", false)];
    for p in [
        "/usr/bin",
        "/lib",
        "/usr/lib",
        "/lib64",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/include",
        "/etc/alternatives",
    ] {
        paths.push(HostPath::same(p, true));
    }
    paths
}

/// A prepared chroot for one build. Dropping it kills a still-running build
/// and removes the tree (best effort; prefer [`Sandbox::destroy`]).
pub struct Sandbox {
    spec: SandboxSpec,
    root: PathBuf,
    plan: Arc<Plan>,
    /// Held only by the daemon: when it closes, the build is killed.
    lifeline: Option<OwnedFd>,
    _lifeline_read: OwnedFd,
    status_read: OwnedFd,
    _status_write: OwnedFd,
    /// The build's network namespace, when reused (a root daemon's; see
    /// `netns.rs`); given back by `destroy` only after [`Sandbox::exited`].
    netns: Option<netns::NetNs>,
    /// Set by [`Sandbox::exited`]: every process of the build is dead.
    all_dead: AtomicBool,
    /// Started by [`Sandbox::spawn`] (no intermediate process).
    spawned: AtomicBool,
    destroyed: bool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Sandbox {
    /// Creates the chroot tree and precomputes the child's work. On error,
    /// whatever was created is removed.
    pub fn prepare(spec: SandboxSpec) -> io::Result<Sandbox> {
        check_spec(&spec)?;
        let parent = with_path(
            fs::canonicalize(&spec.chroot_parent),
            "resolve",
            &spec.chroot_parent,
        )?;
        let (root, reused) = match CHROOTS.take(&parent) {
            Some(root) => (root, true),
            None => (create_root(&parent)?, false),
        };
        match Self::prepare_in(spec, root.clone(), reused) {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                let _ = remove_tree(&root);
                Err(e)
            }
        }
    }

    fn prepare_in(spec: SandboxSpec, root: PathBuf, reused: bool) -> io::Result<Sandbox> {
        // SAFETY: these id getters cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let as_root = euid == 0;
        let ops = plan::lay_out(&spec, &root, as_root, reused)?;
        let identity = if as_root {
            Identity::Root {
                uid: spec.uid,
                gid: spec.gid,
            }
        } else {
            Identity::UserNamespace {
                uid_map: format!("{} {euid} 1\n", spec.uid),
                gid_map: format!("{} {egid} 1\n", spec.gid),
            }
        };
        let (lifeline_read, lifeline) = pipe(0)?;
        let (status_read, status_write) = pipe(libc::O_NONBLOCK)?;
        // A pooled network namespace; if none can be made, the child makes
        // its own (as unprivileged daemons always do).
        let netns = if as_root { netns::take().ok() } else { None };
        let plan = Plan {
            root: plan::cstring(&plan::Disk::at(&root).root)?,
            build_dir_inside: plan::cstring(&spec.sandbox_build_dir)?,
            ops,
            identity,
            lifeline_read: lifeline_read.as_raw_fd(),
            status_write: status_write.as_raw_fd(),
            max_processes: spec.max_processes,
            linux32: spec.linux32,
            netns: netns.as_ref().map(netns::NetNs::raw_fd),
        };
        Ok(Sandbox {
            spec,
            root,
            plan: Arc::new(plan),
            lifeline: Some(lifeline),
            _lifeline_read: lifeline_read,
            status_read,
            _status_write: status_write,
            netns,
            all_dead: AtomicBool::new(false),
            spawned: AtomicBool::new(false),
            destroyed: false,
        })
    }

    /// The chroot directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `cmd` run its program inside this sandbox. Program, arguments,
    /// environment and stdio may be set before or after; the program path is
    /// resolved inside (absolute, or through the `PATH` given to `cmd`). The
    /// builder's cwd is always `sandbox_build_dir`: a `current_dir` set on
    /// `cmd` must exist on the host and is then overridden. Do not use
    /// `CommandExt::uid`/`gid`/`groups`: the sandbox sets the identity.
    /// Works unchanged after `tokio::process::Command::from(cmd)`. Configure
    /// one command per sandbox.
    ///
    /// The spawned pid is the intermediate process: it exits with the
    /// builder's status (128+signal if the builder was killed), or with
    /// [`SETUP_FAILED_EXIT_CODE`] if the sandbox could not be entered (see
    /// [`Sandbox::setup_failure`]). Killing it kills the whole build.
    pub fn configure(&self, cmd: &mut Command) {
        let plan = Arc::clone(&self.plan);
        // SAFETY: the hook runs between fork and exec in a copy of a possibly
        // multi-threaded process. `child::enter` only makes raw system calls
        // on data precomputed in `plan` (which the Arc keeps alive), never
        // allocates, locks or panics, and leaves by `_exit` or by returning
        // Ok in the process that execs.
        unsafe {
            cmd.pre_exec(move || child::enter(&plan));
        }
    }

    /// Whether [`Sandbox::spawn`] can start the builder (a root daemon on
    /// Linux 5.3+); otherwise use [`Sandbox::configure`].
    pub fn spawns_directly(&self) -> bool {
        matches!(self.plan.identity, Identity::Root { .. }) && crate::spawn::supported()
    }

    /// Starts the builder as PID 1 of this sandbox without forking the
    /// daemon (see `spawn.rs`); only when [`Sandbox::spawns_directly`].
    /// Its status is the builder's, or [`SETUP_FAILED_EXIT_CODE`] if the
    /// sandbox could not be entered; an `execve` failure is the error.
    /// Spawn one builder per sandbox.
    pub async fn spawn(&self, exec: Exec) -> io::Result<ClonedChild> {
        if self.lifeline.is_none() {
            return Err(io::Error::other("sandbox already destroyed"));
        }
        self.spawned.store(true, Ordering::Release);
        let setup = Arc::new(Cloned(Arc::clone(&self.plan)));
        crate::spawn::spawn(setup, exec).await
    }

    /// Tells the sandbox how the builder ended. A builder from
    /// [`Sandbox::spawn`] is the PID namespace's init: its reaped status
    /// proves the whole build dead. From [`Sandbox::configure`], only a
    /// normal exit does: the intermediate exits by itself only after
    /// reaping init, whose exit the kernel reports only once every other
    /// process of that namespace is reaped; killed by a signal (a timeout,
    /// `--max-silent-time`), it may have left init dying: then nothing of
    /// the build is reused.
    pub fn exited(&self, status: &std::process::ExitStatus) {
        if self.spawned.load(Ordering::Acquire) || status.code().is_some() {
            self.all_dead.store(true, Ordering::Release);
        }
    }

    /// After the build exited: the message explaining why the sandbox could
    /// not be set up, if that is why it exited.
    pub fn setup_failure(&self) -> Option<String> {
        let mut buf = [0u8; 1024];
        // SAFETY: reading into a valid buffer from a non-blocking fd we own.
        let n = unsafe {
            libc::read(
                self.status_read.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n <= 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]);
        let text = text.trim_end().trim_start_matches("ferry sandbox: ");
        let errno = text
            .rsplit("errno ")
            .next()
            .and_then(|n| n.parse::<i32>().ok());
        Some(match errno {
            Some(errno) => format!("{text} ({})", io::Error::from_raw_os_error(errno)),
            None => text.to_string(),
        })
    }

    /// The outputs the builder created, each as (where it lies now, in the
    /// chroot's store dir; its host path in the real store). Missing ones
    /// are skipped. The chroot is reachable by the daemon only (0700), so
    /// the caller canonicalises, hashes and scans them there, then moves
    /// them into the store (same file system: a rename).
    pub fn staged_outputs(&self) -> io::Result<Vec<(PathBuf, PathBuf)>> {
        let mut staged = Vec::new();
        for out in &self.spec.outputs {
            let Some(name) = out.file_name() else {
                continue;
            };
            let inside = plan::Disk::at(&self.root).store.join(name);
            match fs::symlink_metadata(&inside) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                other => with_path(other, "stat output", &inside)?,
            };
            staged.push((inside, out.clone()));
        }
        Ok(staged)
    }

    /// Kills the build if still running and removes the chroot tree. Refuses
    /// (with an error) if a mount under the tree is visible here, which would
    /// mean mounts leaked out of the build's namespace.
    pub fn destroy(mut self) -> io::Result<()> {
        self.destroy_inner()
    }

    /// Whether [`Sandbox::exited`] proved every process of the build gone.
    pub fn all_dead(&self) -> bool {
        self.all_dead.load(Ordering::Acquire)
    }

    /// As [`Sandbox::destroy`], but once the whole build is known dead
    /// ([`Sandbox::exited`]) the chroot is emptied and kept for the next
    /// build instead of removed (see `spares.rs`).
    pub fn recycle(mut self) -> io::Result<()> {
        let reusable = self.all_dead.load(Ordering::Acquire);
        self.finish(reusable)
    }

    fn destroy_inner(&mut self) -> io::Result<()> {
        self.finish(false)
    }

    fn finish(&mut self, reuse: bool) -> io::Result<()> {
        if self.destroyed {
            return Ok(());
        }
        self.destroyed = true;
        self.lifeline = None;
        let removed = check_no_mounts(&self.root).and_then(|()| {
            if reuse && empty_skeleton(&self.root).is_ok() {
                if let Err(root) = CHROOTS.keep(self.root.clone()) {
                    return remove_tree(&root);
                }
                return Ok(());
            }
            remove_tree(&self.root)
        });
        // After the tree: its removal is what a finished build waits for.
        if let Some(ns) = self.netns.take() {
            if self.all_dead.load(Ordering::Acquire) {
                netns::give_back(ns);
            }
        }
        removed
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.destroy_inner();
    }
}

/// Removes chroot trees left in `chroot_parent` by a daemon that died (its
/// pid is gone, or is ours: call this at start-up, before any build).
/// Returns how many were removed.
pub fn remove_stale_chroots(chroot_parent: &Path) -> io::Result<usize> {
    let parent = with_path(fs::canonicalize(chroot_parent), "resolve", chroot_parent)?;
    let mut removed = 0;
    for entry in with_path(fs::read_dir(&parent), "read dir", &parent)? {
        let entry = with_path(entry, "read dir", &parent)?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(CHROOT_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid
            .is_some_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let path = entry.path();
            check_no_mounts(&path)?;
            remove_tree(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn check_spec(spec: &SandboxSpec) -> io::Result<()> {
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    for (what, p) in [
        ("store dir", &spec.store_dir),
        ("chroot parent", &spec.chroot_parent),
    ] {
        if !p.is_absolute() {
            return invalid(format!("sandbox {what} must be absolute: {}", p.display()));
        }
    }
    for p in spec.inputs.iter().chain(&spec.outputs) {
        if !p.is_absolute() || p.file_name().is_none() {
            return invalid(format!(
                "sandbox input or output must be absolute: {}",
                p.display()
            ));
        }
    }
    Ok(())
}

/// The sandbox as a cloned builder's setup (`spawn.rs`): cloned into every
/// namespace but the network's, which is entered from the pool (or, with
/// none pooled, created by the clone).
struct Cloned(Arc<Plan>);

impl ChildSetup for Cloned {
    fn namespaces(&self) -> c_int {
        let ns = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        match self.0.netns {
            Some(_) => ns,
            None => ns | libc::CLONE_NEWNET,
        }
    }

    fn set_up(&self, seccomp_inherited: bool) -> Result<(), c_int> {
        child::enter_netns(&self.0);
        // Failures `_exit` with SETUP_FAILED_EXIT_CODE, the message on the
        // builder's stderr and the status pipe (see `setup_failure`).
        child::set_up(&self.0, !seccomp_inherited);
        Ok(())
    }
}

/// Chroots of finished builds, emptied, for the next ones.
static CHROOTS: crate::spares::Spares = crate::spares::Spares::new();

/// Empties a finished build's chroot for reuse: what the builder left in
/// its `store/` (input mount points, anything not an output) and `tmp/`;
/// `root/` only ever held mounts of the build's own namespace.
fn empty_skeleton(root: &Path) -> io::Result<()> {
    let disk = plan::Disk::at(root);
    for dir in [&disk.store, &disk.tmp, &disk.root] {
        crate::spares::emptied(dir)?;
    }
    Ok(())
}

/// Creates `<parent>/.ferry-chroot-<pid>-<n>`, skipping names left over by
/// an earlier daemon that had the same pid.
pub(crate) fn create_root(parent: &Path) -> io::Result<PathBuf> {
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = parent.join(format!("{CHROOT_PREFIX}{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&root) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => return with_path(other.map(|()| root.clone()), "create chroot", &root),
        }
    }
}

/// A close-on-exec pipe (read end, write end); `read_flags` is added to the
/// read end (e.g. `O_NONBLOCK`).
fn pipe(read_flags: c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(context(io::Error::last_os_error(), "sandbox pipe"));
    }
    // SAFETY: the kernel just returned these two fresh descriptors; we own them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if read_flags != 0 {
        // SAFETY: plain fcntl on a descriptor we own.
        let r = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, read_flags) };
        if r < 0 {
            return Err(context(io::Error::last_os_error(), "sandbox pipe flags"));
        }
    }
    Ok((read, write))
}

/// Fails if any mount point at or under `root` is visible in our namespace:
/// deleting the tree would then delete through a bind mount.
fn check_no_mounts(root: &Path) -> io::Result<()> {
    let text = with_path(
        fs::read_to_string("/proc/self/mountinfo"),
        "read",
        Path::new("/proc/self/mountinfo"),
    )?;
    let prefix = escape_mountinfo(root);
    let leaked = text.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| {
        mp.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if leaked {
        let msg = format!(
            "mounts under sandbox {} are visible on the host; not removing it",
            root.display()
        );
        return Err(io::Error::other(msg));
    }
    Ok(())
}

/// Mount points in mountinfo escape space, tab, newline and backslash.
fn escape_mountinfo(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Removes a tree the builder may have left with unwritable directories,
/// however deep (the store's descriptor-based removal).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    with_path(ferry_store::remove_tree(path), "remove sandbox", path)
}

/// Adds the step and path to an error.
pub(crate) fn with_path<T>(r: io::Result<T>, step: &str, path: &Path) -> io::Result<T> {
    r.map_err(|e| context(e, &format!("{step} {}", path.display())))
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("sandbox: {what}: {e}"))
}
