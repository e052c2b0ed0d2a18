//! What the tests of Nix clients on a Ferry daemon share: a root `ferry
//! daemon` on a private store in a temporary directory, listening for Nix
//! clients on its Nix socket (`--nix-socket`), and Nix's commands pointed at
//! it (`NIX_REMOTE=unix://SOCKET`, `NIX_STORE_DIR` the Ferry store, so that
//! the client computes the same paths); and the reference: the same Nix
//! commands on Nix's own local store at the same store directory, once the
//! Ferry daemon is gone (so paths and NAR hashes compare one to one).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{command, ferry_bin, run};

/// The Nix settings of every client here (and of the reference store):
/// no substituters, no build users, no sandbox (the Ferry daemon runs with
/// `--no-sandbox` too, so builders find /bin/sh).
pub const NIX_CONF: &str = "build-users-group =\nsandbox = false\nsubstituters =\n\
                            experimental-features = nix-command\n";

/// `ssh [OPTIONS] HOST [OPTIONS] -- COMMAND...`: run COMMAND here.
const FAKE_SSH: &str = "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != \"--\" ]; do shift; done\nshift\nexec sh -c \"$*\"\n";

pub struct FerryNix {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub store: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// Ferry's own socket.
    pub socket: PathBuf,
    /// Where Nix clients connect (also `--stdio`'s default).
    pub nix_socket: PathBuf,
    pub home: PathBuf,
    child: Option<Child>,
    log_file: PathBuf,
}

impl FerryNix {
    /// `ferry daemon --nix-socket ... --no-sandbox ARGS` as root; returns
    /// once Nix clients can connect.
    pub fn start(args: &[&str]) -> FerryNix {
        Self::start_with_conf("", args)
    }

    /// [`FerryNix::start`] with `conf` as its ferry.conf (none if empty).
    pub fn start_with_conf(conf: &str, args: &[&str]) -> FerryNix {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-nix-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = tmp.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["home", "etc", "bin"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/nix.conf"), NIX_CONF).unwrap();
        let mut f = FerryNix {
            store: root.join("store"),
            state: root.join("state"),
            config: root.join("config"),
            socket: root.join("state/daemon-socket/socket"),
            nix_socket: root.join("state/daemon-socket/nix-socket"),
            home: root.join("home"),
            log_file: root.join("daemon.log"),
            root,
            _tmp: tmp,
            child: None,
        };
        if !conf.is_empty() {
            fs::create_dir_all(&f.config).unwrap();
            fs::write(f.config.join("ferry.conf"), conf).unwrap();
        }
        let log = fs::File::create(&f.log_file).unwrap();
        let mut cmd = f.ferry(&[
            "daemon",
            "--listen",
            f.socket.to_str().unwrap(),
            "--nix-socket",
            f.nix_socket.to_str().unwrap(),
            "--nix-log-dir",
            f.root.join("nix-log").to_str().unwrap(),
            "--no-sandbox",
        ]);
        cmd.args(args)
            .env("FERRY_LOG", "info,ferry_daemon::nix_daemon=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        f.child = Some(cmd.spawn().expect("spawning ferry daemon"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&f.nix_socket).is_err() || UnixStream::connect(&f.socket).is_err()
        {
            if let Some(st) = f.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ferry daemon exited with {st}{}", f.log());
            }
            assert!(
                Instant::now() < deadline,
                "ferry daemon did not listen{}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    /// The environment that points ferry at this store.
    pub fn ferry_env(&self, c: &mut Command) {
        c.env("FERRY_STORE_DIR", &self.store)
            .env("FERRY_STATE_DIR", &self.state)
            .env("FERRY_CONFIG_DIR", &self.config)
            .env("FERRY_DAEMON_SOCKET", &self.socket);
    }

    pub fn ferry(&self, args: &[&str]) -> Command {
        let mut c = command(ferry_bin(), &self.home);
        self.ferry_env(&mut c);
        c.args(args);
        c
    }

    /// The Nix settings every client here has (its store directory, state,
    /// logs and nix.conf under the temporary directory).
    pub fn nix_env(&self, c: &mut Command) {
        c.env("NIX_STORE_DIR", &self.store)
            .env("NIX_STATE_DIR", self.root.join("nix-state"))
            .env("NIX_LOG_DIR", self.root.join("nix-log"))
            .env("NIX_CONF_DIR", self.root.join("etc"));
    }

    /// A Nix command talking to the Ferry daemon, as root.
    pub fn nix(&self, program: &str, args: &[&str]) -> Command {
        let mut c = command(program, &self.home);
        self.nix_env(&mut c);
        c.env(
            "NIX_REMOTE",
            format!("unix://{}", self.nix_socket.display()),
        );
        c.args(args);
        c
    }

    /// Run a Nix command against the daemon and insist on success; its
    /// stdout, trimmed.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        self.ok_with(&mut self.nix(program, args), None)
    }

    pub fn ok_with(&self, cmd: &mut Command, stdin: Option<&[u8]>) -> String {
        let o = run(cmd, stdin);
        assert!(
            o.status.success(),
            "{cmd:?} failed: {}\nstdout: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap().trim_end().to_string()
    }

    /// Nix's `ssh-ng://` store reaching this daemon through `ferry daemon
    /// --stdio`, with no sshd: a stand-in `ssh` (in `ROOT/bin`) that runs the
    /// command here, and the remote program, `ferry daemon` on this store.
    /// Returns the store URI and the PATH that finds that `ssh`.
    pub fn ssh_ng_remote(&self) -> (String, String) {
        let bin = self.root.join("bin");
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        script("ssh", FAKE_SSH);
        let remote = script(
            "ferry-remote",
            &format!(
                "#!/bin/sh\nexport FERRY_STORE_DIR={} FERRY_STATE_DIR={} FERRY_CONFIG_DIR={}\nexec {} daemon --no-sandbox \"$@\"\n",
                self.store.display(),
                self.state.display(),
                self.config.display(),
                ferry_bin().display()
            ),
        );
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        (
            format!("ssh-ng://localhost?remote-program={}", remote.display()),
            path,
        )
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "\n--- ferry daemon log (last lines) ---\n{}",
            tail.join("\n")
        )
    }

    /// Stop the daemon (SIGKILL) and move its store aside, so that Nix's
    /// own store can be made at the same directory ([`FerryNix::reference`]).
    pub fn stop_and_set_aside(&mut self) {
        self.stop();
        fs::rename(&self.store, self.root.join("ferry-store")).unwrap();
    }

    /// Stop the daemon (SIGKILL); its sockets stay, unanswered.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A Nix command on Nix's own local store at the same store directory
    /// (no daemon, its own state).
    pub fn reference(&self, program: &str, args: &[&str]) -> Command {
        let mut c = command(program, &self.home);
        self.nix_env(&mut c);
        c.env("NIX_STATE_DIR", self.root.join("reference-state"))
            .env("NIX_REMOTE", "local");
        c.args(args);
        c
    }

    /// A file of the test's own (a source to add).
    pub fn write(&self, name: &str, data: &str) -> PathBuf {
        let p = self.root.join("files").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(p.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for FerryNix {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

/// An output's text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path's file name.
pub fn base(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}
