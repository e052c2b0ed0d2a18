//! Builders run without the sandbox (`--no-sandbox`, or no namespaces for
//! it): they see the host's file system and network, as promised, but a
//! root daemon still runs them as a build user, and their outputs still
//! enter the store only once canonical.
//!
//! As root, with namespaces at hand ([`Mode::Overlay`]), the builder runs
//! as PID 1 of its own PID namespace (whatever it leaves running dies with
//! it) and in a private mount namespace where the store directory is an
//! overlay: the real store below, and above it `upper/` in a per-build
//! directory `<store>/.ferry-chroot-PID-N` (0700, the daemon's only; the
//! same place and clean-up as the sandbox's chroots). The builder's writes
//! to the store, its outputs included, land in `upper/`, where the daemon
//! canonicalises, hashes and scans them before renaming them into the store.
//!
//! As root without a mount namespace ([`Mode::Direct`]), the builder writes
//! into the real store directory, as with Nix: the store must then be
//! `root:<build group> 1775` and builders run in that group. Outputs are
//! canonicalised in place after every process of the build user is killed;
//! during the build they are the build user's, in the store. Every process
//! of the build user is killed before and after the build (Nix's
//! `killUser`): the build uids must then be this daemon's alone.
//!
//! Unprivileged ([`Mode::Unprivileged`]), the builder runs as the daemon's
//! user, as before.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use crate::sandbox::{create_root, remove_tree};
use crate::spawn::{ChildSetup, ClonedChild, Exec};

/// How an unsandboxed builder runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Root with mount namespaces and overlayfs: a private overlay store.
    Overlay,
    /// Root without them: the build user writes into the store, which must
    /// be group-writable by `gid` (the store directory's group).
    Direct { gid: u32 },
    /// Root without namespaces and a store the build users cannot write:
    /// unsandboxed builds cannot run; the message says what to do.
    Unusable(String),
    /// Not root: builders run as the daemon's user.
    Unprivileged,
}

/// The mode for the store at `store_dir` (probed once per process).
pub fn mode(store_dir: &Path) -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    MODE.get_or_init(|| {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Mode::Unprivileged;
        }
        let overlay_err = match probe_overlay(store_dir) {
            Ok(()) => return Mode::Overlay,
            Err(e) => e,
        };
        let direct = std::fs::metadata(store_dir)
            .ok()
            .filter(|m| m.uid() == 0 && m.gid() != 0 && m.permissions().mode() & 0o7777 == 0o1775);
        let mode = match direct {
            Some(m) => Mode::Direct { gid: m.gid() },
            None => Mode::Unusable(format!(
                "builders without the sandbox run as build users in a private overlay of the \
                 store, but that is unavailable here ({overlay_err}); give the daemon \
                 CAP_SYS_ADMIN, or let build users write to the store as Nix does (chown \
                 root:<build group> {0} && chmod 1775 {0}; builders then run in that group)",
                store_dir.display()
            )),
        };
        tracing::warn!(
            "no private overlay store for unsandboxed builds ({overlay_err}): {}",
            match &mode {
                Mode::Direct { .. } =>
                    "build users write to the store directly; their outputs are in the store, \
                     theirs, until the build ends",
                _ => "unsandboxed builds will fail",
            }
        );
        mode
    })
    .clone()
}

/// What an unsandboxed root build has before its builder starts.
pub(crate) enum Setup {
    /// Its private overlay store (in [`Mode::Overlay`]) and the builder's gid.
    Ready {
        private: Option<PrivateStore>,
        gid: u32,
    },
    /// It cannot run here; why, and what to do.
    Refused(String),
}

/// Prepares an unsandboxed root build in `mode`: checks that build users
/// reach the store and the build directory (`build_parent`, or the path it
/// is bound on), makes the private store. `gid` is the build user's group.
pub(crate) fn setup(mode: &Mode, store: &Path, build_parent: &Path, gid: u32) -> io::Result<Setup> {
    if matches!(mode, Mode::Overlay | Mode::Direct { .. }) {
        let reachable = check_reachable(store, "the store")
            .and_then(|()| check_reachable(build_parent, "the build directory"));
        if let Err(why) = reachable {
            return Ok(Setup::Refused(why));
        }
    }
    Ok(match mode {
        Mode::Overlay => Setup::Ready {
            private: Some(PrivateStore::prepare(store, gid)?),
            gid,
        },
        Mode::Direct { gid } => Setup::Ready {
            private: None,
            gid: *gid,
        },
        Mode::Unusable(why) => Setup::Refused(why.clone()),
        Mode::Unprivileged => Setup::Ready { private: None, gid },
    })
}

/// Fails (saying what to do) unless build users can reach `path`: every
/// directory above it must be searchable by others, as `/nix/store`'s are.
/// The builder runs as a build user and sees the host's paths.
pub fn check_reachable(path: &Path, what: &str) -> Result<(), String> {
    for dir in path.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        if m.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "builders without the sandbox run as build users, who cannot reach {what} {}: \
                 {} is mode {:o}; make it searchable by others (chmod o+x) or use the sandbox",
                path.display(),
                dir.display(),
                m.permissions().mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// What the forked child does before exec.
struct ChildPlan {
    /// (store dir, overlay options) to mount in a private mount namespace.
    overlay: Option<(CString, CString)>,
    /// (build dir, its 0700 parent): bound on the parent in that namespace,
    /// which becomes the builder's cwd.
    build_bind: Option<(CString, CString)>,
    ids: Option<(u32, u32)>,
    max_processes: u64,
    /// `PER_LINUX32` (an i686 build on x86_64).
    linux32: bool,
}

/// One unsandboxed build's private overlay store (when [`Mode::Overlay`]);
/// dropping it removes the per-build directory.
pub struct PrivateStore {
    root: PathBuf,
    upper: PathBuf,
}

impl PrivateStore {
    /// Creates `<store_dir>/.ferry-chroot-PID-N/{upper,work}`; the upper dir
    /// becomes the store dir the builder sees, so it is `root:gid 1775`.
    pub fn prepare(store_dir: &Path, gid: u32) -> io::Result<PrivateStore> {
        let root = create_root(store_dir)?;
        let ps = PrivateStore {
            upper: root.join("upper"),
            root,
        };
        std::fs::create_dir(&ps.upper)?;
        std::os::unix::fs::chown(&ps.upper, Some(0), Some(gid))?;
        std::fs::set_permissions(&ps.upper, std::fs::Permissions::from_mode(0o1775))?;
        std::fs::create_dir(ps.root.join("work"))?;
        Ok(ps)
    }

    /// Where the builder's writes to `store_dir/NAME` land.
    pub fn staged(&self, name: &std::ffi::OsStr) -> PathBuf {
        self.upper.join(name)
    }

    fn options(&self, store_dir: &Path) -> io::Result<(CString, CString)> {
        overlay_options(store_dir, &self.upper, &self.root.join("work"))
    }
}

impl Drop for PrivateStore {
    fn drop(&mut self) {
        let _ = remove_tree(&self.root);
    }
}

fn overlay_options(store: &Path, upper: &Path, work: &Path) -> io::Result<(CString, CString)> {
    let s = |p: &Path| {
        let t = p.to_str().filter(|t| !t.contains([',', ':', '\\', '\0']));
        t.map(str::to_owned).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cannot be an overlay layer (comma, colon or backslash)",
                    p.display()
                ),
            )
        })
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(store)?,
        s(upper)?,
        s(work)?
    );
    let target = CString::new(s(store)?).map_err(io::Error::other)?;
    Ok((target, CString::new(data).map_err(io::Error::other)?))
}

/// Makes `cmd` drop to `ids` (when given) with at most `max_processes`
/// processes (0: unchanged), under the 32-bit personality if `linux32`. With `private` = (the overlay store, the build
/// dir, its parent), in a private mount namespace with that overlay on the
/// store dir and the build dir bound on its parent (the builder's path and
/// cwd: from outside, the parent is 0700 and the daemon's).
pub fn configure(
    cmd: &mut Command,
    store_dir: &Path,
    private: Option<(&PrivateStore, &Path, &Path)>,
    ids: Option<(u32, u32)>,
    max_processes: u64,
    linux32: bool,
) -> io::Result<()> {
    let plan = child_plan(store_dir, private, ids, max_processes, linux32)?;
    // SAFETY: the hook runs between fork and exec; it only makes raw
    // system calls on data computed here and returns errors built from an
    // errno (no allocation).
    unsafe {
        cmd.pre_exec(move || enter(&plan));
    }
    Ok(())
}

fn child_plan(
    store_dir: &Path,
    private: Option<(&PrivateStore, &Path, &Path)>,
    ids: Option<(u32, u32)>,
    max_processes: u64,
    linux32: bool,
) -> io::Result<ChildPlan> {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(io::Error::other);
    let build_bind = match private {
        Some((_, dir, parent)) => Some((c(dir)?, c(parent)?)),
        None => None,
    };
    Ok(ChildPlan {
        build_bind,
        overlay: private.map(|(p, _, _)| p.options(store_dir)).transpose()?,
        ids,
        max_processes,
        linux32,
    })
}

fn enter(plan: &ChildPlan) -> io::Result<()> {
    if plan.overlay.is_some() {
        // SAFETY: a plain system call.
        if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    set_up(plan, true)?;
    if plan.overlay.is_some() {
        // The builder becomes PID 1 of its own PID namespace: when it exits
        // the kernel kills whatever it left running, daemonized or not.
        // SAFETY: raw system calls; see `pid_namespace`.
        if unsafe { pid_namespace() } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The builder's setup in its mount namespace (if any): the overlay on the
/// store, the build dir bound on its parent, the build user, the seccomp
/// filter (unless inherited) and the process cap. Raw system calls only.
fn set_up(plan: &ChildPlan, install_seccomp: bool) -> io::Result<()> {
    let ok = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if let Some((target, data)) = &plan.overlay {
        // SAFETY: plain system calls on NUL-terminated strings from the plan.
        unsafe { ok(mount_overlay(target, data))? };
    }
    if let Some((dir, parent)) = &plan.build_bind {
        let null = std::ptr::null();
        // SAFETY: as above.
        unsafe {
            ok(libc::mount(
                dir.as_ptr(),
                parent.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            ok(libc::chdir(parent.as_ptr()))?;
        }
    }
    if plan.linux32 {
        // SAFETY: a raw system call.
        ok(unsafe { crate::systems::raw_set_linux32() })?;
    }
    if let Some((uid, gid)) = plan.ids {
        // SAFETY: raw system calls on static data.
        unsafe {
            ok(crate::users::raw_drop_to(uid, gid))?;
            // No new privileges, no setuid/setgid files (see `seccomp`).
            if install_seccomp {
                ok(crate::seccomp::install())?;
            }
        }
    }
    if plan.max_processes > 0 {
        // SAFETY: a raw system call.
        ok(unsafe { crate::users::raw_set_nproc(plan.max_processes) })?;
    }
    Ok(())
}

/// An overlay build as a cloned builder's setup (`spawn.rs`): cloned into
/// its mount and PID namespaces, the builder is PID 1 there itself.
struct Cloned(ChildPlan);

impl ChildSetup for Cloned {
    fn namespaces(&self) -> libc::c_int {
        libc::CLONE_NEWNS | libc::CLONE_NEWPID
    }

    fn set_up(&self, seccomp_inherited: bool) -> Result<(), libc::c_int> {
        let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        set_up(&self.0, !seccomp_inherited).map_err(errno)?;
        // Armed last: changing the uid (in `set_up`) clears it.
        // SAFETY: plain system call with integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(crate::sandbox::errno());
        }
        Ok(())
    }
}

/// Starts `exec` as PID 1 of its own mount and PID namespaces, over the
/// private overlay store `private` = (the overlay store, the build dir, its
/// parent), as the build user `ids` with at most `max_processes`
/// processes, without forking the daemon (`spawn.rs`). For a root daemon
/// in [`Mode::Overlay`], when [`crate::spawn::supported`].
pub async fn spawn(
    exec: Exec,
    store_dir: &Path,
    private: (&PrivateStore, &Path, &Path),
    ids: (u32, u32),
    max_processes: u64,
    linux32: bool,
) -> io::Result<ClonedChild> {
    let plan = child_plan(store_dir, Some(private), Some(ids), max_processes, linux32)?;
    crate::spawn::spawn(Arc::new(Cloned(plan)), exec).await
}

/// Forks into the PID namespace made by `unshare`: the child (PID 1 there)
/// returns to exec the builder; the parent (the pid the daemon sees) waits
/// for it, exits with its status, and when killed takes it along
/// (`PR_SET_PDEATHSIG`). Returns only in the child.
///
/// # Safety
///
/// Raw system calls only; call between fork and exec.
unsafe fn pid_namespace() -> libc::c_int {
    let mut race = [-1 as libc::c_int; 2];
    // SAFETY: plain system calls on stack memory; the forked parent never
    // returns (it `_exit`s).
    unsafe {
        if libc::pipe2(race.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return -1;
        }
        let pid = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        ) as libc::pid_t;
        if pid < 0 {
            return -1;
        }
        if pid > 0 {
            // Keep only the race pipe's write end: std's exec-error pipe and
            // the log pipe must close when the builder closes them.
            let w = race[1] as u32;
            if w > 0 {
                libc::syscall(libc::SYS_close_range, 0u32, w - 1, 0u32);
            }
            libc::syscall(libc::SYS_close_range, w + 1, u32::MAX, 0u32);
            let mut status: libc::c_int = 0;
            loop {
                let r = libc::waitpid(pid, &mut status, 0);
                if r == pid {
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(128 + libc::SIGKILL);
                }
            }
            libc::_exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        libc::close(race[1]);
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            return -1;
        }
        // The parent may have died before PDEATHSIG was armed: then the
        // pipe's write end is closed.
        let mut fd = libc::pollfd {
            fd: race[0],
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut fd, 1, 0) != 0 {
            libc::_exit(128 + libc::SIGKILL);
        }
        libc::close(race[0]);
        0
    }
}

/// Makes every mount private, then mounts the overlay on `target`.
///
/// # Safety
///
/// Raw system calls; call only in a child with its own mount namespace.
unsafe fn mount_overlay(target: &CString, data: &CString) -> libc::c_int {
    let null = std::ptr::null();
    // SAFETY: valid NUL-terminated strings, null optional arguments.
    unsafe {
        let r = libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        if r < 0 {
            return r;
        }
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    }
}

/// Whether an overlay can be mounted on `store_dir` in a private mount
/// namespace: tried in a short-lived child.
fn probe_overlay(store_dir: &Path) -> Result<(), String> {
    let ps = PrivateStore::prepare(store_dir, 0).map_err(|e| e.to_string())?;
    let (target, data) = ps.options(store_dir).map_err(|e| e.to_string())?;
    // SAFETY: clone without CLONE_VM behaves like fork; the child makes raw
    // system calls only and `_exit`s.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as libc::pid_t;
    if pid < 0 {
        return Err(format!(
            "cannot create a mount namespace: {}",
            io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: raw system calls, then `_exit`.
        unsafe {
            let r = mount_overlay(&target, &data);
            libc::_exit(if r == 0 {
                0
            } else {
                *libc::__errno_location() & 0x7f
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error().to_string());
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(format!(
            "cannot mount an overlay on {}: {}",
            store_dir.display(),
            io::Error::from_raw_os_error(errno)
        )),
        None => Err("the overlay probe was killed".into()),
    }
}
