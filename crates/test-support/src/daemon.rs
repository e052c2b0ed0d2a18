//! The harness of the tests that run `ferry daemon` and `ferry build` as
//! real processes: a fresh store, state, configuration and home per test
//! ([`Env`]), a daemon on a temp socket killed by a guard that prints its
//! log when the test fails ([`Daemon`]), background clients whose stderr is
//! watched ([`Bg`]), and small builders of derivations.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{command, ferry_bin, run_timeout};
use crate::tree::make_writable;

/// A fresh store, state, configuration and home, and the daemon socket path.
pub struct Env {
    tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub store: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-daemon-test-")
            .tempdir()
            .unwrap();
        let home = tmp.path().join("home");
        fs::create_dir(&home).unwrap();
        Env {
            home,
            store: tmp.path().join("store"),
            state: tmp.path().join("state"),
            config: tmp.path().join("config"),
            socket: tmp.path().join("daemon.sock"),
            tmp,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A unique word for this test (to find its processes and files).
    pub fn token(&self) -> String {
        self.dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_")
    }

    /// `ferry ARGS` on this env's store, talking to this env's daemon
    /// socket (embedded mode when no daemon listens there).
    pub fn ferry(&self, args: &[&str]) -> Command {
        let mut c = command(ferry_bin(), &self.home);
        c.env_remove("FERRY_DAEMON_SOCKET")
            .env_remove("FERRY_LOG")
            .env("FERRY_STORE_DIR", &self.store)
            .env("FERRY_STATE_DIR", &self.state)
            .env("FERRY_CONFIG_DIR", &self.config)
            .env("FERRY_DAEMON_SOCKET", &self.socket)
            .args(args);
        c
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// Start `ferry daemon --listen SOCKET ARGS` and wait until it accepts.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        let n = fs::read_dir(self.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("daemon-")
            })
            .count();
        let log = self.path(&format!("daemon-{n}.log"));
        let mut cmd = self.ferry(&["daemon", "--listen", self.socket.to_str().unwrap()]);
        cmd.args(args)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let child = cmd.spawn().expect("spawning ferry daemon");
        let mut d = Daemon {
            child: Some(child),
            log,
        };
        d.wait_ready(&self.socket);
        d
    }

    /// `ferry store verify` must pass.
    pub fn verify_clean(&self, d: Option<&Daemon>) {
        let out = run_timeout(&mut self.ferry(&["store", "verify"]), 60);
        if !out.status.success() {
            panic!(
                "ferry store verify failed ({}):\n{}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                d.map(|d| d.log_text()).unwrap_or_default()
            );
        }
    }

    /// `ferry derivation add FILE`: the .drv paths, in order.
    pub fn add_drvs(&self, file: &Path) -> Vec<String> {
        let out = ok(
            run_timeout(
                &mut self.ferry(&["derivation", "add", file.to_str().unwrap()]),
                60,
            ),
            "derivation add",
        );
        lines(&out.stdout)
    }

    /// The `out` output path of a .drv in the store.
    pub fn out_of(&self, drv: &str) -> String {
        let out = ok(
            run_timeout(&mut self.ferry(&["derivation", "show", drv]), 60),
            "derivation show",
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[drv]["outputs"]["out"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no out in {v}"))
            .to_string()
    }

    pub fn is_valid(&self, path: &str) -> bool {
        run_timeout(&mut self.ferry(&["store", "path-info", path]), 60)
            .status
            .success()
    }

    /// Store entries whose name starts with `prefix` (e.g. leftovers).
    /// Sandbox chroots in the store that hold anything of a build: a live
    /// daemon keeps finished builds' chroots as empty skeletons (`root/`,
    /// `store/`, `tmp/`, all empty) for its next builds.
    pub fn chroots_with_contents(&self) -> Vec<String> {
        let empty = |p: &Path| fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_none());
        self.store_entries(".ferry-chroot-")
            .into_iter()
            .filter(|name| {
                let dir = self.store.join(name);
                let mut names: Vec<String> = fs::read_dir(&dir)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names != ["root", "store", "tmp"] || !names.iter().all(|n| empty(&dir.join(n)))
            })
            .collect()
    }

    pub fn store_entries(&self, prefix: &str) -> Vec<String> {
        fs::read_dir(&self.store)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        make_writable(self.tmp.path());
    }
}

/// A running `ferry daemon`, killed when dropped; its log is printed when
/// the test is failing.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        format!(
            "\n--- daemon log {} ---\n{}--- end of daemon log ---\n",
            self.log.display(),
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    pub fn wait_ready(&mut self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "ferry daemon exited with {st} at start-up{}",
                    self.log_text()
                );
            }
            if socket.exists() && UnixStream::connect(socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ferry daemon did not listen on {} within 20 s{}",
                    socket.display(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn assert_alive(&mut self) {
        if !self.alive() {
            panic!("the daemon died{}", self.log_text());
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

/// A client running in the background whose stderr is collected as it
/// comes (to wait for a line), killed when dropped.
pub struct Bg {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Bg {
    pub fn spawn(cmd: &mut Command) -> Bg {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning a client");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let s = stderr.clone();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                s.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Bg {
            child: Some(child),
            stderr,
            reader: Some(reader),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `what`.
    pub fn wait_for(&mut self, what: &str, secs: u64, d: &Daemon) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.stderr().contains(what) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the client exited ({st}) before printing {what:?}; stderr:\n{}{}",
                    self.stderr(),
                    d.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the client did not print {what:?} within {secs} s; stderr:\n{}{}",
                    self.stderr(),
                    d.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    /// Wait (bounded) for the exit status.
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "the client did not exit within {secs} s; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn ok(out: Output, what: &str) -> Output {
    if !out.status.success() {
        panic!(
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(|l| l.to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Scheme string literal.
pub fn q(s: &str) -> String {
    format!("{s:?}")
}

/// A derivation whose builder is `/bin/sh -c SCRIPT`, PATH set, with
/// extra environment variables.
pub fn sh_drv(name: &str, script: &str, env: &[(&str, &str)]) -> String {
    let mut alist = String::from("(\"PATH\" . \"/bin:/usr/bin\")");
    for (k, v) in env {
        alist.push_str(&format!(" ({} . {})", q(k), q(v)));
    }
    format!(
        "(derivation {} #:builder \"/bin/sh\" #:env '({alist}) #:args (list \"-c\" {}))",
        q(name),
        q(script)
    )
}

/// A file every builder can append to: a root daemon runs them as build
/// users, also without the sandbox.
pub fn counter_file(env: &Env) -> PathBuf {
    let p = env.path("builds.txt");
    fs::write(&p, "").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(env.dir(), fs::Permissions::from_mode(0o711)).unwrap();
    p
}

/// The lines of a counter file (one per builder run).
pub fn counts(file: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in fs::read_to_string(file).unwrap_or_default().lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}
