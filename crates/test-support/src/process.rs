//! Running programs from tests: the `ferry` binary, commands with an
//! environment scrubbed of Ferry's and Nix's variables, and runs that feed
//! stdin, insist on success or are bounded in time.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The `ferry` binary to test, the same for every test process:
/// - in the tests of ferry-cli, the one Cargo built for them
///   (`CARGO_BIN_EXE_ferry`, which Cargo also sets when it runs them);
/// - else `FERRY_BIN` when set;
/// - else built (or found up to date) once per test process with `cargo
///   build -p ferry-cli`, in the same profile and target directory as the
///   test itself, so a stale binary is never tested.
pub fn ferry_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        for var in ["CARGO_BIN_EXE_ferry", "FERRY_BIN"] {
            if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return PathBuf::from(p);
            }
        }
        let exe = std::env::current_exe().expect("current_exe");
        // target/PROFILE/deps/TEST -> target/PROFILE
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "-p", "ferry-cli", "--bin", "ferry"]);
        if release {
            c.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            c.arg("--target-dir").arg(target);
        }
        let st = c.status().expect("running cargo build -p ferry-cli");
        assert!(st.success(), "cargo build -p ferry-cli failed");
        profile_dir.join("ferry")
    })
}

/// Environment variables that would steer ferry or Nix elsewhere.
const SCRUB: &[&str] = &[
    "FERRY_STORE_DIR",
    "FERRY_STATE_DIR",
    "FERRY_CONFIG_DIR",
    "NIX_REMOTE",
    "NIX_STORE_DIR",
    "NIX_STORE",
    "NIX_STATE_DIR",
    "NIX_LOG_DIR",
    "NIX_CONF_DIR",
    "NIX_CONFIG",
    "NIX_PATH",
];

/// A command with a scrubbed environment; `home` (a temp dir) keeps Nix's
/// caches and ferry's per-user defaults away from the real home.
pub fn command(program: impl AsRef<OsStr>, home: &Path) -> Command {
    let mut c = Command::new(program);
    for v in SCRUB {
        c.env_remove(v);
    }
    c.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"));
    c
}

/// Run, feeding `stdin`, and return the output whatever the exit status.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

/// Run and insist on success; returns stdout.
pub fn run_ok(cmd: &mut Command, stdin: Option<&[u8]>, what: &str) -> Vec<u8> {
    let out = run(cmd, stdin);
    if !out.status.success() {
        panic!(
            "{what}: {cmd:?} failed with {}\nstderr:\n{}\nstdout (first 2000 bytes):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(2000)])
        );
    }
    out.stdout
}

pub fn stdout_line(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap().trim_end().to_string()
}

/// `local?root=DIR`: a chroot store whose files land in DIR/nix/store while
/// its paths still read /nix/store/...; the host's /nix is never touched.
pub fn nix_store_uri(root: &Path) -> String {
    format!("local?root={}", root.display())
}

/// Run with a deadline, feeding no stdin; the output whatever the exit
/// status. The process is killed (and the test fails, showing the output so
/// far) if it has not exited and closed its stdout and stderr within
/// `secs` (a process it left behind may hold them open).
pub fn run_timeout(cmd: &mut Command, secs: u64) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, reader)
    };
    let (so, t1) = collect(Box::new(child.stdout.take().unwrap()));
    let (se, t2) = collect(Box::new(child.stderr.take().unwrap()));
    let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut status = None;
    loop {
        if status.is_none() {
            status = child.try_wait().unwrap();
        }
        if status.is_some() && t1.is_finished() && t2.is_finished() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {secs} s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&take(&so)),
                String::from_utf8_lossy(&take(&se))
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = (t1.join(), t2.join());
    Output {
        // Reaped by try_wait already: the status it saw.
        status: child.wait().unwrap(),
        stdout: take(&so),
        stderr: take(&se),
    }
}

/// Pids of processes whose command line contains `token`.
pub fn processes_with(token: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(token))
                .unwrap_or(false)
        })
        .collect()
}

/// Wait (bounded) until no process mentions `token`.
pub fn wait_no_processes(token: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = processes_with(token);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let cmds: Vec<String> = left
                .iter()
                .map(|p| {
                    let c = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!("{p}: {}", String::from_utf8_lossy(&c).replace('\0', " "))
                })
                .collect();
            // Do not leave them behind.
            for p in &left {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            panic!(
                "{what}: processes still running after {secs} s:\n{}",
                cmds.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The command line of process `pid`, arguments separated by spaces (empty
/// once it has exited).
pub fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// Wait until `ready()`, polling; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A marker unique to this test run (for process and file names): the
/// pid and the clock's nanoseconds.
pub fn marker() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}{:09}", std::process::id(), t)
}

/// Kills and reaps a child when dropped (a test that fails leaves nothing).
pub struct Reap(pub Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's output, waited for at most `timeout` (killed after).
pub fn output_within(child: Child, timeout: Duration) -> Output {
    output_within_or(child, timeout, String::new)
}

/// [`output_within`], with `context()` added to the failure's message
/// (e.g. a daemon's log).
pub fn output_within_or(
    mut child: Child,
    timeout: Duration,
    context: impl FnOnce() -> String,
) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "not finished within {timeout:?}:\n{}{}",
                stderr(&out),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
