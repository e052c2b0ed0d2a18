//! Parent side of `Sandbox::prepare`: lays out the chroot tree on disk and
//! precomputes, as C strings, every mount the child will perform, so that the
//! child (see `child.rs`) allocates nothing.

use std::ffi::{c_int, c_ulong, CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{with_path, HostPath, SandboxSpec};

/// Everything the child needs, computed before `fork`.
pub(super) struct Plan {
    /// The chroot directory (host path), which becomes `/`.
    pub root: CString,
    /// Where the child `chdir`s after pivoting (the builder's build dir).
    pub build_dir_inside: CString,
    /// Mounts in order: the root's self-bind first, parents before children.
    pub mounts: Vec<MountOp>,
    pub identity: Identity,
    /// Read end of the pipe whose write end only the daemon holds.
    pub lifeline_read: c_int,
    /// Write end of the pipe carrying setup-failure messages to the daemon.
    pub status_write: c_int,
}

/// How the builder gets its uid/gid.
pub(super) enum Identity {
    /// Daemon is root: no user namespace; drop to this uid/gid at the end.
    Root { uid: u32, gid: u32 },
    /// Daemon is unprivileged: a user namespace mapping the build uid/gid to
    /// the daemon's own (one id each; everything else is unmapped).
    UserNamespace { uid_map: String, gid_map: String },
}

/// One `mount(2)`, plus an optional remount that makes a bind read-only.
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
const READ_ONLY: c_ulong =
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;

/// Creates the tree under `root` (an existing, empty directory) and returns
/// the mounts that populate it.
pub(super) fn lay_out(spec: &SandboxSpec, root: &Path, as_root: bool) -> io::Result<Vec<MountOp>> {
    let mut tree = Tree {
        root,
        as_root,
        gid: spec.gid,
        mounts: Vec::new(),
        links: Vec::new(),
    };
    tree.root_dir()?;
    tree.mounts.push(bind(root, root, None)?);
    tree.etc(spec)?;
    tree.dev()?;
    tree.dir(Path::new("/tmp"), 0o1777)?;
    let mut host_paths: Vec<&HostPath> = spec.host_paths.iter().collect();
    host_paths.sort_by(|a, b| a.inside.cmp(&b.inside));
    for hp in host_paths {
        tree.host_path(hp)?;
    }
    tree.store(spec)?;
    tree.build_dir(spec)?;
    tree.special_mounts()?;
    Ok(tree.mounts)
}

struct Tree<'a> {
    root: &'a Path,
    as_root: bool,
    gid: u32,
    mounts: Vec<MountOp>,
    /// Symlinks created inside: nothing may be mounted beneath them.
    links: Vec<PathBuf>,
}

impl Tree<'_> {
    /// Host path of `inside` within the chroot.
    fn at(&self, inside: &Path) -> io::Result<PathBuf> {
        check_inside(inside)?;
        Ok(self.root.join(inside.strip_prefix("/").unwrap_or(inside)))
    }

    /// As root the tree is `root:<build gid> 0750` (like Nix), so other host
    /// users cannot reach the builder's world-writable /tmp.
    fn root_dir(&self) -> io::Result<()> {
        if self.as_root {
            chown(self.root, 0, self.gid)?;
            chmod(self.root, 0o750)
        } else {
            chmod(self.root, 0o755)
        }
    }

    fn dir(&self, inside: &Path, mode: u32) -> io::Result<PathBuf> {
        let path = self.at(inside)?;
        mkdir_all(&path, mode)?;
        Ok(path)
    }

    /// Minimal /etc: the build user, nobody, localhost (as Nix does).
    fn etc(&self, spec: &SandboxSpec) -> io::Result<()> {
        let etc = self.dir(Path::new("/etc"), 0o755)?;
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
        write(&etc.join("passwd"), &passwd)?;
        write(&etc.join("group"), &group)?;
        write(&etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n")
    }

    /// Minimal /dev: a few bound device nodes, the fd symlinks, and /dev/shm.
    fn dev(&mut self) -> io::Result<()> {
        let dev = self.dir(Path::new("/dev"), 0o755)?;
        for &(name, required) in DEVICES {
            let host = Path::new("/dev").join(name);
            if !required && fs::symlink_metadata(&host).is_err() {
                continue;
            }
            let target = dev.join(name);
            touch(&target)?;
            self.mounts.push(bind(&host, &target, None)?);
        }
        for &(name, to) in DEV_LINKS {
            symlink(Path::new(to), &dev.join(name))?;
        }
        self.dir(Path::new("/dev/shm"), 0o1777)?;
        Ok(())
    }

    /// One extra host path, read-only; a host symlink is recreated as is.
    fn host_path(&mut self, hp: &HostPath) -> io::Result<()> {
        let meta = match fs::symlink_metadata(&hp.host) {
            Err(e) if hp.optional && e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => with_path(other, "stat host path", &hp.host)?,
        };
        let noexec = fs_noexec(&hp.host)?;
        self.place(&hp.inside, &hp.host, &meta, noexec)
    }

    /// The store dir with only the inputs in it. As root it is
    /// `root:<build gid> 1775` (the builder creates its outputs there but
    /// cannot remove the inputs' mount points).
    fn store(&mut self, spec: &SandboxSpec) -> io::Result<()> {
        let store = self.at(&spec.store_dir)?;
        if let Some(parent) = store.parent() {
            mkdir_all(parent, 0o755)?;
        }
        if self.as_root {
            mkdir(&store, 0o1775)?;
            chown(&store, 0, self.gid)?;
        } else {
            mkdir(&store, 0o755)?;
        }
        let noexec = match spec.inputs.first() {
            Some(input) => fs_noexec(input)?,
            None => false,
        };
        for input in &spec.inputs {
            let meta = with_path(fs::symlink_metadata(input), "stat input", input)?;
            self.place(&spec.inside_store(input), input, &meta, noexec)?;
        }
        Ok(())
    }

    /// Creates the mount point (or symlink) for `host` at `inside` and
    /// records a read-only bind.
    fn place(
        &mut self,
        inside: &Path,
        host: &Path,
        meta: &fs::Metadata,
        noexec: bool,
    ) -> io::Result<()> {
        if let Some(link) = self.links.iter().find(|l| inside.starts_with(l)) {
            let msg = format!(
                "{} lies beneath the symlink {}",
                inside.display(),
                link.display()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let target = self.at(inside)?;
        if let Some(parent) = target.parent() {
            mkdir_all(parent, 0o755)?;
        }
        if meta.file_type().is_symlink() {
            let to = with_path(fs::read_link(host), "readlink", host)?;
            symlink(&to, &target)?;
            self.links.push(inside.to_path_buf());
            return Ok(());
        }
        if meta.is_dir() {
            mkdir_all(&target, 0o755)?;
        } else {
            touch(&target)?;
        }
        let extra = if noexec { libc::MS_NOEXEC } else { 0 };
        self.mounts
            .push(bind(host, &target, Some(READ_ONLY | extra))?);
        Ok(())
    }

    /// The build dir, read-write. As root it is handed to the build user.
    fn build_dir(&mut self, spec: &SandboxSpec) -> io::Result<()> {
        let target = self.dir(&spec.sandbox_build_dir, 0o755)?;
        if self.as_root {
            chown(&spec.build_dir, spec.uid, spec.gid)?;
        }
        self.mounts.push(bind(&spec.build_dir, &target, None)?);
        Ok(())
    }

    /// A fresh /proc for the new PID namespace and a tmpfs /dev/shm.
    fn special_mounts(&mut self) -> io::Result<()> {
        let proc_dir = self.dir(Path::new("/proc"), 0o555)?;
        let shm = self.at(Path::new("/dev/shm"))?;
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
        self.mounts.push(MountOp {
            source: c"proc".into(),
            target: cstring(&proc_dir)?,
            fstype: Some(c"proc"),
            flags: nosuid | libc::MS_NOEXEC,
            data: None,
            remount: None,
        });
        self.mounts.push(MountOp {
            source: c"shm".into(),
            target: cstring(&shm)?,
            fstype: Some(c"tmpfs"),
            flags: nosuid,
            data: Some(c"mode=1777".into()),
            remount: None,
        });
        Ok(())
    }
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
    chmod(path, mode) // the umask may have cleared bits
}

fn mkdir_all(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all(parent, mode)?;
    }
    mkdir(path, mode)
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

/// An empty file: the mount point of a bound file.
fn touch(path: &Path) -> io::Result<()> {
    with_path(fs::File::create(path).map(drop), "create mount point", path)
}

fn symlink(to: &Path, at: &Path) -> io::Result<()> {
    with_path(std::os::unix::fs::symlink(to, at), "symlink", at)
}

/// Writes a world-readable file (explicit chmod: the umask may be strict).
fn write(path: &Path, text: &str) -> io::Result<()> {
    with_path(fs::write(path, text), "write", path)?;
    chmod(path, 0o644)
}
