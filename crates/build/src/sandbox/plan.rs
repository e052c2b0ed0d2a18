//! Parent side of `Sandbox::prepare`: creates the little that must be on
//! disk and precomputes, as C strings, every step the child performs, so
//! that the child (see `child.rs`) allocates nothing.
//!
//! On disk, in the chroot directory `<chroot>` (on the store's file system):
//! `root/` (an empty mount point), `store/` (the store dir the builder sees,
//! holding the inputs' mount points; outputs are created here, so they can
//! be renamed into the real store) and `tmp/`. Everything else — `/etc`,
//! `/dev`, the host paths' mount points — is built by the child on a tmpfs
//! mounted on `root/` and made read-only before the builder runs: creating
//! directory entries on tmpfs costs microseconds, on a journaled disk up to
//! a hundred times more.

use std::collections::HashSet;
use std::ffi::{c_ulong, CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{with_path, HostPath, SandboxSpec};

/// Everything the child needs, computed before `fork`.
pub(super) struct Plan {
    /// The tmpfs root (`<chroot>/root`), which becomes `/`.
    pub root: CString,
    /// Where the child `chdir`s after pivoting (the builder's build dir).
    pub build_dir_inside: CString,
    /// Steps in order (parents before children, mounts after their points).
    pub ops: Vec<Op>,
    pub identity: Identity,
    /// Read end of the pipe whose write end only the daemon holds.
    pub lifeline_read: i32,
    /// Write end of the pipe carrying setup-failure messages to the daemon.
    pub status_write: i32,
    /// RLIMIT_NPROC set for the builder; 0: unchanged.
    pub max_processes: u64,
    /// `PER_LINUX32` for the builder (an i686 build on x86_64).
    pub linux32: bool,
    /// A network namespace to enter (`setns`, lo already up) instead of
    /// creating one; see `netns.rs`.
    pub netns: Option<i32>,
}

/// How the builder gets its uid/gid.
pub(super) enum Identity {
    /// Daemon is root: no user namespace; drop to this uid/gid at the end.
    Root { uid: u32, gid: u32 },
    /// Daemon is unprivileged: a user namespace mapping the build uid/gid to
    /// the daemon's own (one id each; everything else is unmapped).
    UserNamespace { uid_map: String, gid_map: String },
}

/// One step of the child's setup. Paths are host paths (before pivoting).
pub(super) enum Op {
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// An empty file: the mount point of a bound file.
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Write {
        path: CString,
        data: Vec<u8>,
    },
    Mount(MountOp),
}

/// One `mount(2)`, plus an optional read-only remount of the same target.
pub(super) struct MountOp {
    pub source: CString,
    pub target: CString,
    pub fstype: Option<&'static CStr>,
    pub flags: c_ulong,
    pub data: Option<CString>,
    pub remount: Option<c_ulong>,
}

/// Device nodes bound from the host: (name, required).
const DEVICES: &[(&str, bool)] = &[
    ("null", true),
    ("zero", true),
    ("full", true),
    ("random", true),
    ("urandom", true),
    ("tty", false),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

const BIND: c_ulong = libc::MS_BIND | libc::MS_REC;
const NOSUID: c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
const READ_ONLY: c_ulong = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID;

/// The on-disk part of the tree under `chroot` (an existing empty dir).
pub(super) struct Disk {
    pub root: PathBuf,
    pub store: PathBuf,
    pub tmp: PathBuf,
}

impl Disk {
    pub(super) fn at(chroot: &Path) -> Disk {
        Disk {
            root: chroot.join("root"),
            store: chroot.join("store"),
            tmp: chroot.join("tmp"),
        }
    }
}

/// Creates the on-disk part and returns the child's steps.
pub(super) fn lay_out(
    spec: &SandboxSpec,
    chroot: &Path,
    as_root: bool,
    reused: bool,
) -> io::Result<Vec<Op>> {
    let disk = Disk::at(chroot);
    on_disk(spec, chroot, &disk, as_root, reused)?;
    let linked = disk_inputs(spec, &disk.store)?;
    let mut s = Skeleton {
        root: &disk.root,
        ops: Vec::new(),
        dirs: HashSet::new(),
        links: Vec::new(),
    };
    s.mount(MountOp {
        source: c"none".into(),
        target: cstring(&disk.root)?,
        fstype: Some(c"tmpfs"),
        flags: NOSUID,
        data: Some(c"mode=0755,size=1m".into()),
        remount: None,
    });
    s.etc(spec)?;
    s.dev()?;
    s.bind_dir(&disk.tmp, Path::new("/tmp"), None)?;
    let mut host_paths: Vec<&HostPath> = spec.host_paths.iter().collect();
    host_paths.sort_by(|a, b| a.inside.cmp(&b.inside));
    for hp in host_paths {
        s.host_path(hp)?;
    }
    s.bind_dir(&disk.store, &spec.store_dir, None)?;
    s.inputs(spec, &linked)?;
    s.bind_dir(&spec.build_dir, &spec.sandbox_build_dir, None)?;
    s.special_mounts()?;
    // Last: the skeleton itself becomes read-only.
    s.mount(remount_only(&disk.root, READ_ONLY)?);
    Ok(s.ops)
}

/// The chroot is 0700, the daemon's only: no other user, the build user
/// included, reaches anything under it by path (the builder reaches its
/// store dir, `/tmp` and build dir through bind mounts set up before it
/// drops privileges), so its outputs can be made canonical here before they
/// enter the store. As root the store dir is `root:<build gid> 1775` (the
/// builder creates its outputs there but cannot remove the inputs' mount
/// points); the build dir goes to the build user.
/// A reused chroot (`spares.rs`) has its (empty) directories already: their
/// modes and owners are set again, as the last build may have changed them.
fn on_disk(
    spec: &SandboxSpec,
    chroot: &Path,
    disk: &Disk,
    as_root: bool,
    reused: bool,
) -> io::Result<()> {
    let dir = |path: &Path, mode: u32| {
        if reused {
            chown(
                path,
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )?;
            chmod(path, mode)
        } else {
            mkdir(path, mode)
        }
    };
    chmod(chroot, 0o700)?;
    dir(&disk.root, 0o755)?;
    dir(&disk.tmp, 0o1777)?;
    if as_root {
        dir(&disk.store, 0o1775)?;
        chown(&disk.store, 0, spec.gid)?;
        chown(&spec.build_dir, spec.uid, spec.gid)
    } else {
        dir(&disk.store, 0o755)
    }
}

struct Skeleton<'a> {
    root: &'a Path,
    ops: Vec<Op>,
    /// Directories (inside paths) already created on the tmpfs.
    dirs: HashSet<PathBuf>,
    /// Symlinks created inside: nothing may be placed beneath them.
    links: Vec<PathBuf>,
}

impl Skeleton<'_> {
    /// Host path of `inside` under the tmpfs root.
    fn at(&self, inside: &Path) -> io::Result<PathBuf> {
        check_inside(inside)?;
        if let Some(link) = self.links.iter().find(|l| inside.starts_with(l)) {
            let msg = format!(
                "{} lies beneath the symlink {}",
                inside.display(),
                link.display()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        Ok(self.root.join(inside.strip_prefix("/").unwrap_or(inside)))
    }

    fn mount(&mut self, op: MountOp) {
        self.ops.push(Op::Mount(op));
    }

    /// `mkdir -p` on the tmpfs (each directory once).
    fn dir(&mut self, inside: &Path) -> io::Result<PathBuf> {
        let path = self.at(inside)?;
        if inside != Path::new("/") && !self.dirs.contains(inside) {
            if let Some(parent) = inside.parent() {
                self.dir(parent)?;
            }
            self.ops.push(Op::Mkdir {
                path: cstring(&path)?,
                mode: 0o755,
            });
            self.dirs.insert(inside.to_path_buf());
        }
        Ok(path)
    }

    /// Creates the mount point of `inside` (file or directory) and its parents.
    fn point(&mut self, inside: &Path, is_dir: bool) -> io::Result<PathBuf> {
        if is_dir {
            return self.dir(inside);
        }
        if let Some(parent) = inside.parent() {
            self.dir(parent)?;
        }
        let path = self.at(inside)?;
        self.ops.push(Op::Touch {
            path: cstring(&path)?,
        });
        Ok(path)
    }

    fn symlink(&mut self, target: &Path, inside: &Path) -> io::Result<()> {
        if let Some(parent) = inside.parent() {
            self.dir(parent)?;
        }
        let path = self.at(inside)?;
        self.ops.push(Op::Symlink {
            target: cstring(target)?,
            path: cstring(&path)?,
        });
        self.links.push(inside.to_path_buf());
        Ok(())
    }

    fn bind_dir(&mut self, host: &Path, inside: &Path, remount: Option<c_ulong>) -> io::Result<()> {
        let target = self.dir(inside)?;
        self.mount(bind(host, &target, remount)?);
        Ok(())
    }

    /// Minimal /etc: the build user, nobody, localhost (as Nix does).
    fn etc(&mut self, spec: &SandboxSpec) -> io::Result<()> {
        self.dir(Path::new("/etc"))?;
        let (uid, gid, dir) = (spec.uid, spec.gid, spec.sandbox_build_dir.display());
        let mut passwd = String::from("root:x:0:0:Nix build user:/build:/noshell\n");
        let mut group = String::from("root:x:0:\n");
        if uid != 0 {
            passwd += &format!("nixbld:x:{uid}:{gid}:Nix build user:{dir}:/noshell\n");
        }
        if gid != 0 {
            group += &format!("nixbld:!:{gid}:\n");
        }
        passwd += "nobody:x:65534:65534:Nobody:/:/noshell\n";
        group += "nogroup:x:65534:\n";
        let hosts = "127.0.0.1 localhost\n::1 localhost\n".to_string();
        for (name, text) in [("passwd", passwd), ("group", group), ("hosts", hosts)] {
            let path = cstring(&self.at(&Path::new("/etc").join(name))?)?;
            self.ops.push(Op::Write {
                path,
                data: text.into_bytes(),
            });
        }
        Ok(())
    }

    /// Minimal /dev: a few bound device nodes, the fd symlinks, /dev/shm.
    fn dev(&mut self) -> io::Result<()> {
        for &(name, required) in DEVICES {
            let host = Path::new("/dev").join(name);
            if !required && fs::symlink_metadata(&host).is_err() {
                continue;
            }
            let target = self.point(&host, false)?;
            self.mount(bind(&host, &target, None)?);
        }
        for &(name, to) in DEV_LINKS {
            self.symlink(Path::new(to), &Path::new("/dev").join(name))?;
        }
        Ok(())
    }

    /// One extra host path, read-only; a host symlink is recreated as is.
    fn host_path(&mut self, hp: &HostPath) -> io::Result<()> {
        let meta = match fs::symlink_metadata(&hp.host) {
            Err(e) if hp.optional && e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => with_path(other, "stat host path", &hp.host)?,
        };
        if meta.file_type().is_symlink() {
            let to = with_path(fs::read_link(&hp.host), "readlink", &hp.host)?;
            return self.symlink(&to, &hp.inside);
        }
        let target = self.point(&hp.inside, meta.is_dir())?;
        let noexec = if fs_noexec(&hp.host)? {
            libc::MS_NOEXEC
        } else {
            0
        };
        self.mount(bind(&hp.host, &target, Some(READ_ONLY | noexec))?);
        Ok(())
    }

    /// Binds each input read-only onto its mount point in the on-disk store
    /// dir (created in `prepare`; a symlink input is copied there instead).
    fn inputs(&mut self, spec: &SandboxSpec, linked: &[bool]) -> io::Result<()> {
        let noexec = match spec.inputs.first() {
            Some(input) if fs_noexec(input)? => libc::MS_NOEXEC,
            _ => 0,
        };
        for (input, &linked) in spec.inputs.iter().zip(linked) {
            if !linked {
                let target = self.at(&spec.inside_store(input))?;
                self.mount(bind(input, &target, Some(READ_ONLY | noexec))?);
            }
        }
        Ok(())
    }

    /// A fresh /proc for the new PID namespace and a tmpfs /dev/shm.
    fn special_mounts(&mut self) -> io::Result<()> {
        let proc_dir = self.dir(Path::new("/proc"))?;
        let shm = self.dir(Path::new("/dev/shm"))?;
        self.mount(MountOp {
            source: c"proc".into(),
            target: cstring(&proc_dir)?,
            fstype: Some(c"proc"),
            flags: NOSUID | libc::MS_NOEXEC,
            data: None,
            remount: None,
        });
        self.mount(MountOp {
            source: c"shm".into(),
            target: cstring(&shm)?,
            fstype: Some(c"tmpfs"),
            flags: NOSUID,
            data: Some(c"mode=1777".into()),
            remount: None,
        });
        Ok(())
    }
}

/// Creates the inputs' mount points (or symlink copies) in the on-disk
/// store dir; returns which inputs are symlinks (copied, not bound).
fn disk_inputs(spec: &SandboxSpec, store: &Path) -> io::Result<Vec<bool>> {
    let mut linked = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        let name = input.file_name().unwrap_or(input.as_os_str());
        let point = store.join(name);
        let meta = with_path(fs::symlink_metadata(input), "stat input", input)?;
        let is_link = meta.file_type().is_symlink();
        if is_link {
            let to = with_path(fs::read_link(input), "readlink", input)?;
            with_path(std::os::unix::fs::symlink(&to, &point), "symlink", &point)?;
        } else if meta.is_dir() {
            with_path(fs::create_dir(&point), "mkdir", &point)?;
        } else {
            with_path(
                fs::File::create(&point).map(drop),
                "create mount point",
                &point,
            )?;
        }
        linked.push(is_link);
    }
    Ok(linked)
}

fn bind(source: &Path, target: &Path, remount: Option<c_ulong>) -> io::Result<MountOp> {
    Ok(MountOp {
        source: cstring(source)?,
        target: cstring(target)?,
        fstype: None,
        flags: BIND,
        data: None,
        remount,
    })
}

/// A mount step that only remounts `target` with `flags`.
fn remount_only(target: &Path, flags: c_ulong) -> io::Result<MountOp> {
    Ok(MountOp {
        source: c"none".into(),
        target: cstring(target)?,
        fstype: None,
        flags,
        data: None,
        remount: None,
    })
}

pub(super) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        let msg = format!("path contains a NUL byte: {}", path.display());
        io::Error::new(io::ErrorKind::InvalidInput, msg)
    })
}

/// Paths inside the sandbox must be absolute and free of `..`.
fn check_inside(path: &Path) -> io::Result<()> {
    let mut parts = path.components();
    let absolute = parts.next() == Some(Component::RootDir);
    if absolute && parts.all(|c| matches!(c, Component::Normal(_))) {
        return Ok(());
    }
    let msg = format!(
        "sandbox path must be absolute and normal: {}",
        path.display()
    );
    Err(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// Whether the mount holding `path` is `noexec`: in a user namespace that
/// flag is locked and a read-only remount must repeat it.
fn fs_noexec(path: &Path) -> io::Result<bool> {
    let c = cstring(path)?;
    // SAFETY: an all-zero statvfs is a valid value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and output buffer.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    with_path(
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        },
        "statvfs",
        path,
    )?;
    Ok(st.f_flag & libc::ST_NOEXEC != 0)
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    with_path(fs::DirBuilder::new().mode(mode).create(path), "mkdir", path)?;
    if mode != 0o755 {
        chmod(path, mode)?; // the umask may have cleared bits we want
    }
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    with_path(
        fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        "chmod",
        path,
    )
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    with_path(
        std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        "chown",
        path,
    )
}
