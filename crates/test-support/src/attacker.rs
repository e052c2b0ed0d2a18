//! The attacker's side of the security tests: real unprivileged users
//! (created with `useradd`), connections made as them (the daemon sees
//! their uid and gid through `SO_PEERCRED`), and a root `ferry daemon` on a
//! store every local user can reach, as on a shared machine.
//!
//! Tests written with this run as root (CI runs them so); each starts with
//! `prerequisites(&["root"])`.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_protocol::{FrameReader, FrameWriter, HandshakeReply, Hello};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::process::{command, ferry_bin, run_timeout};

/// A local user account, as the daemon sees it.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// A home directory the user owns (under /tmp, made by the harness).
    pub home: PathBuf,
}

/// Serializes `useradd` across the tests of one binary.
static USERADD: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl User {
    /// The standard attacker, `ferry-attacker`.
    pub fn attacker() -> User {
        User::ensure("ferry-attacker")
    }

    /// The system user `name`, created (with its own group) if missing.
    pub fn ensure(name: &str) -> User {
        let _serial = USERADD.lock().unwrap_or_else(|e| e.into_inner());
        if lookup(name).is_none() {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .output()
                .expect("running useradd (the security tests create users: run as root)");
            // 9: the user exists (another test binary made it meanwhile).
            if !out.status.success() && out.status.code() != Some(9) {
                panic!(
                    "useradd {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let (uid, gid) =
            lookup(name).unwrap_or_else(|| panic!("user {name} missing after useradd"));
        let home = PathBuf::from(format!("/tmp/ferry-test-home-{name}"));
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        User {
            name: name.to_string(),
            uid,
            gid,
            home,
        }
    }

    /// `connect(2)` to `socket` as this user: the path is resolved with the
    /// user's rights and the daemon's `SO_PEERCRED` shows its uid and gid.
    /// The credentials are switched on a short-lived thread only (raw
    /// system calls change the calling thread's credentials, not the
    /// process's).
    pub fn connect(&self, socket: &Path) -> std::io::Result<UnixStream> {
        self.connect_many(socket, 1).pop().expect("one connection")
    }

    /// `n` connections made as this user (see [`User::connect`]).
    pub fn connect_many(&self, socket: &Path, n: usize) -> Vec<std::io::Result<UnixStream>> {
        let (uid, gid) = (self.uid, self.gid);
        let socket = socket.to_path_buf();
        std::thread::spawn(move || {
            // SAFETY: raw credential system calls on this thread only; it
            // exits right after connecting.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            (0..n).map(|_| UnixStream::connect(&socket)).collect()
        })
        .join()
        .expect("the connecting thread panicked")
    }

    /// A command run as this user: its uid and gid, no supplementary
    /// groups, `HOME` its own, an environment scrubbed of Ferry's and Nix's
    /// variables.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = command(program, &self.home);
        // std drops the supplementary groups when it sets the uid as root.
        c.uid(self.uid).gid(self.gid);
        c.env("USER", &self.name).env("LOGNAME", &self.name);
        c
    }
}

/// (uid, gid) of a user name, from the user database.
fn lookup(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; the
    // fields are read at once, under the useradd lock of this binary.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A root `ferry daemon` on a fresh store in a temp directory that every
/// user can traverse (0755), as `/ferry/store` is. Killed when dropped; its
/// log is printed when the test is failing.
pub struct SharedDaemon {
    tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub store: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    home: PathBuf,
    child: Option<Child>,
    log_file: PathBuf,
}

impl SharedDaemon {
    /// `ferry daemon --listen SOCKET ARGS` as root; returns once it accepts.
    pub fn start(args: &[&str]) -> SharedDaemon {
        Self::start_with_conf("", args)
    }

    /// [`SharedDaemon::start`] with `conf` as its `ferry.conf` (none if empty).
    pub fn start_with_conf(conf: &str, args: &[&str]) -> SharedDaemon {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-shared-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = tmp.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.join("root-home");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let mut d = SharedDaemon {
            store: root.join("store"),
            state: root.join("state"),
            config: root.join("config"),
            socket: root.join("state/daemon-socket/socket"),
            log_file: root.join("daemon.log"),
            home,
            root,
            tmp,
            child: None,
        };
        if !conf.is_empty() {
            fs::create_dir_all(&d.config).unwrap();
            fs::write(d.config.join("ferry.conf"), conf).unwrap();
        }
        let log = fs::File::create(&d.log_file).unwrap();
        let mut cmd = d.ferry(&["daemon", "--listen", d.socket.to_str().unwrap()]);
        cmd.args(args)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        d.child = Some(cmd.spawn().expect("spawning ferry daemon"));
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ferry daemon exited with {st} at start-up{}", self.log());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("ferry daemon did not listen within 30 s{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The environment that points `ferry` at this store and socket.
    fn point(&self, c: &mut Command) {
        c.env("FERRY_STORE_DIR", &self.store)
            .env("FERRY_STATE_DIR", &self.state)
            .env("FERRY_CONFIG_DIR", &self.config)
            .env("FERRY_DAEMON_SOCKET", &self.socket)
            .env_remove("FERRY_LOG");
    }

    /// `ferry ARGS` as root on this store, state, configuration and socket.
    pub fn ferry(&self, args: &[&str]) -> Command {
        let mut c = command(ferry_bin(), &self.home);
        self.point(&mut c);
        c.args(args);
        c
    }

    /// `ferry ARGS` as `user`, on this daemon's socket.
    pub fn ferry_as(&self, user: &User, args: &[&str]) -> Command {
        let mut c = user.command(ferry_bin());
        self.point(&mut c);
        c.args(args);
        c
    }

    /// A protocol connection made as `user`, handshake done.
    pub async fn client_as(
        &self,
        user: &User,
    ) -> ferry_protocol::Result<ferry_protocol::Client<tokio::net::UnixStream>> {
        let stream = tokio_stream(user.connect(&self.socket)?);
        ferry_protocol::Client::handshake(stream, self.store.to_str().unwrap()).await
    }

    /// Frames made as `user`, handshake done: send any request or data by
    /// hand. Panics if the daemon refuses the handshake.
    pub async fn raw_as(
        &self,
        user: &User,
    ) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
        let stream = tokio_stream(user.connect(&self.socket).expect("connecting"));
        let (r, w) = stream.into_split();
        let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
        w.send(&Hello {
            protocol: ferry_protocol::PROTOCOL_VERSION,
            version: ferry_protocol::FERRY_VERSION.into(),
            store_dir: self.store.to_str().unwrap().into(),
        })
        .await
        .expect("sending hello");
        match r.message::<HandshakeReply>().await.expect("handshake") {
            HandshakeReply::Welcome(_) => (r, w),
            HandshakeReply::Refused { reason } => panic!("handshake refused: {reason}"),
        }
    }

    /// Write `(derivation NAME)` with builder `/bin/sh -c SCRIPT` (PATH set)
    /// through the daemon, as `user` (root when `None`); the .drv path.
    pub fn add_drv(&self, user: Option<&User>, name: &str, script: &str) -> String {
        let text = format!(
            "(derivation {name:?} #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\")) #:args (list \"-c\" {script:?}))"
        );
        let n = fs::read_dir(&self.root).unwrap().count();
        let file = self.root.join(format!("build-{n}.scm"));
        fs::write(&file, text).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = match user {
            Some(u) => self.ferry_as(u, &["derivation", "add", file.to_str().unwrap()]),
            None => self.ferry(&["derivation", "add", file.to_str().unwrap()]),
        };
        let out = run_timeout(&mut cmd, 120);
        if !out.status.success() {
            panic!(
                "ferry derivation add failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a .drv path")
            .trim()
            .to_string()
    }

    /// `ferry build DRV` as root through the daemon.
    pub fn build_as_root(&self, drv: &str) -> Output {
        run_timeout(&mut self.ferry(&["build", drv]), 300)
    }

    /// `ferry store verify` (as root) reports nothing.
    pub fn assert_verify_clean(&self) {
        let out = run_timeout(&mut self.ferry(&["store", "verify"]), 300);
        if !out.status.success() {
            panic!(
                "ferry store verify is not clean ({}):\n{}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        format!(
            "\n--- daemon log {} ---\n{}--- end of daemon log ---\n",
            self.log_file.display(),
            fs::read_to_string(&self.log_file).unwrap_or_default()
        )
    }

    /// The daemon's pid (for /proc/PID/status and the like).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panics (with the log) if the daemon died.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the daemon died ({st}){}", self.log());
        }
    }

    /// Sends SIGTERM and waits at most `secs` for the daemon to exit.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().unwrap();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The temp directory (kept alive as long as the daemon).
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for SharedDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        crate::tree::make_writable(self.tmp.path());
    }
}

/// A multi-threaded tokio runtime for a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A std Unix stream for a tokio runtime.
pub fn tokio_stream(s: UnixStream) -> tokio::net::UnixStream {
    s.set_nonblocking(true).unwrap();
    tokio::net::UnixStream::from_std(s).expect("inside a tokio runtime")
}
