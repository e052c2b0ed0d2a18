//! `ferry daemon` and `ferry build` as real processes: a daemon on a temp
//! socket, real clients, kills, a full disk, hostile bytes on the socket.
//!
//! Every wait is bounded; every daemon is killed by a guard (its log is
//! printed when the test fails); every store lives in a temp dir.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{command, ferry_bin, make_writable, prerequisites};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A fresh store, state, configuration and home, and the daemon socket path.
struct Env {
    tmp: tempfile::TempDir,
    home: PathBuf,
    store: PathBuf,
    state: PathBuf,
    config: PathBuf,
    socket: PathBuf,
}

impl Env {
    fn new() -> Env {
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

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A unique word for this test (to find its processes and files).
    fn token(&self) -> String {
        self.dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_")
    }

    /// `ferry ARGS` on this env's store, talking to this env's daemon
    /// socket (embedded mode when no daemon listens there).
    fn ferry(&self, args: &[&str]) -> Command {
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

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// Start `ferry daemon --listen SOCKET ARGS` and wait until it accepts.
    fn daemon(&self, args: &[&str]) -> Daemon {
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
    fn verify_clean(&self, d: Option<&Daemon>) {
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
    fn add_drvs(&self, file: &Path) -> Vec<String> {
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
    fn out_of(&self, drv: &str) -> String {
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

    fn is_valid(&self, path: &str) -> bool {
        run_timeout(&mut self.ferry(&["store", "path-info", path]), 60)
            .status
            .success()
    }

    /// Store entries whose name starts with `prefix` (e.g. leftovers).
    /// Sandbox chroots in the store that hold anything of a build: a live
    /// daemon keeps finished builds' chroots as empty skeletons (`root/`,
    /// `store/`, `tmp/`, all empty) for its next builds.
    fn chroots_with_contents(&self) -> Vec<String> {
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

    fn store_entries(&self, prefix: &str) -> Vec<String> {
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
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn log_text(&self) -> String {
        format!(
            "\n--- daemon log {} ---\n{}--- end of daemon log ---\n",
            self.log.display(),
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn wait_ready(&mut self, socket: &Path) {
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
    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn assert_alive(&mut self) {
        if !self.alive() {
            panic!("the daemon died{}", self.log_text());
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
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
struct Bg {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Bg {
    fn spawn(cmd: &mut Command) -> Bg {
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

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `what`.
    fn wait_for(&mut self, what: &str, secs: u64, d: &Daemon) {
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

    fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    /// Wait (bounded) for the exit status.
    fn wait(&mut self, secs: u64) -> ExitStatus {
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

/// Run with a deadline: the process is killed (and the test fails) if it
/// takes longer than `secs`.
fn run_timeout(cmd: &mut Command, secs: u64) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (t1.join().unwrap(), t2.join().unwrap());
            panic!(
                "{cmd:?} did not finish within {secs} s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

fn ok(out: Output, what: &str) -> Output {
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

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(|l| l.to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Scheme string literal.
fn q(s: &str) -> String {
    format!("{s:?}")
}

/// A derivation whose builder is `/bin/sh -c SCRIPT`, PATH set, with
/// extra environment variables.
fn sh_drv(name: &str, script: &str, env: &[(&str, &str)]) -> String {
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
fn counter_file(env: &Env) -> PathBuf {
    let p = env.path("builds.txt");
    fs::write(&p, "").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(env.dir(), fs::Permissions::from_mode(0o711)).unwrap();
    p
}

/// The lines of a counter file (one per builder run).
fn counts(file: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in fs::read_to_string(file).unwrap_or_default().lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

/// Pids of processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<u32> {
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
fn wait_no_processes(token: &str, secs: u64, what: &str) {
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

// ---------------------------------------------------------------------------
// 1. Many clients, overlapping derivations: each built once
// ---------------------------------------------------------------------------

const LAYERS: usize = 4;
const WIDTH: usize = 5;

fn node_name(layer: usize, i: usize) -> String {
    format!("n{layer}x{i}")
}

/// A DAG of 20 derivations: layer l node i uses nodes i and i+1 (mod
/// width) of layer l-1. Each builder appends its name to `counter`, sleeps
/// a little (so that clients overlap), and writes its name and its inputs.
fn dag_defs(counter: &Path) -> String {
    let mut s = String::new();
    for l in 0..LAYERS {
        for i in 0..WIDTH {
            let name = node_name(l, i);
            let mut script = format!("echo {name} >> \"$COUNTER\"; sleep 0.2; {{ echo {name}; ");
            let mut inputs = String::new();
            if l > 0 {
                for j in [i, (i + 1) % WIDTH] {
                    let dep = node_name(l - 1, j);
                    inputs.push_str(&format!(" \"cat \" (derivation-output {dep}) \"; \""));
                }
            }
            script.push_str("CATS} > \"$out\"");
            // derivation-output must be evaluated: build the script with
            // string-append around the input paths.
            let (before, after) = script.split_once("CATS").unwrap();
            s.push_str(&format!(
                "(define {name} (derivation {} #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) #:args (list \"-c\" (string-append {}{inputs} {}))))\n",
                q(&name),
                q(counter.to_str().unwrap()),
                q(before),
                q(after)
            ));
        }
    }
    s
}

#[test]
fn fifty_clients_overlapping_dag_each_derivation_built_once() {
    let env = Env::new();
    let counter = counter_file(&env);
    let mut d = env.daemon(&["--no-sandbox", "--max-jobs", "6"]);
    let defs = dag_defs(&counter);
    let all: Vec<String> = (0..LAYERS)
        .flat_map(|l| (0..WIDTH).map(move |i| node_name(l, i)))
        .collect();
    let mut rng = support::Rng::new(7);
    let mut wants = Vec::new();
    for k in 0..50 {
        // Every derivation is asked for by someone; two more at random.
        let mut want = vec![all[k % all.len()].clone()];
        for _ in 0..2 {
            let n = rng.pick(&all).clone();
            if !want.contains(&n) {
                want.push(n);
            }
        }
        let file = env.write(
            &format!("client-{k}.scm"),
            &format!("{defs}(list {})\n", want.join(" ")),
        );
        wants.push((file, want));
    }
    let barrier = Arc::new(Barrier::new(wants.len()));
    let started = Instant::now();
    let handles: Vec<_> = wants
        .iter()
        .map(|(file, want)| {
            let mut cmd = env.ferry(&["build", file.to_str().unwrap()]);
            let barrier = barrier.clone();
            let want = want.clone();
            thread::spawn(move || {
                barrier.wait();
                (want, run_timeout(&mut cmd, 120))
            })
        })
        .collect();
    let results: Vec<(Vec<String>, Output)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    let mut path_of: BTreeMap<String, String> = BTreeMap::new();
    for (k, (want, out)) in results.iter().enumerate() {
        if !out.status.success() {
            failures.push(format!(
                "client {k} exited with {}:\n{}",
                out.status,
                text(&out.stderr)
            ));
            continue;
        }
        let printed = lines(&out.stdout);
        if printed.len() != want.len() {
            failures.push(format!(
                "client {k} asked for {want:?} and printed {printed:?}"
            ));
            continue;
        }
        for (name, path) in want.iter().zip(&printed) {
            if !path.ends_with(&format!("-{name}"))
                || !path.starts_with(env.store.to_str().unwrap())
            {
                failures.push(format!("client {k}: {path} is not an output of {name}"));
            }
            let content = fs::read_to_string(path).unwrap_or_default();
            if content.lines().next() != Some(name.as_str()) {
                failures.push(format!("client {k}: {path} holds {content:?}"));
            }
            if let Some(prev) = path_of.insert(name.clone(), path.clone()) {
                if prev != *path {
                    failures.push(format!("{name} printed as {prev} and as {path}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 clients went wrong:\n{}{}",
        failures.len(),
        failures.join("\n"),
        d.log_text()
    );
    let c = counts(&counter);
    let wrong: Vec<_> = all
        .iter()
        .filter(|n| c.get(*n) != Some(&1))
        .map(|n| format!("{n}: built {} times", c.get(n).unwrap_or(&0)))
        .collect();
    assert!(
        wrong.is_empty() && c.len() == all.len(),
        "each derivation must be built exactly once: {wrong:?} (counts {c:?})"
    );
    // The deepest output holds its whole input chain.
    let top = fs::read_to_string(&path_of[&node_name(LAYERS - 1, 0)]).unwrap();
    assert!(top.contains(&node_name(0, 0)), "{top}");
    d.assert_alive();
    env.verify_clean(Some(&d));
    eprintln!("50 clients, 20 derivations: {elapsed:?}");
}

// ---------------------------------------------------------------------------
// 2. A client killed mid-build
// ---------------------------------------------------------------------------

/// A builder that prints "started", writes a partial output, and when
/// NIX_BUILD_CORES is 7 (`ferry build --cores 7`, not part of the
/// derivation) sleeps 30 s in a child process whose command line holds
/// `token`; then writes "complete".
fn slow_drv(name: &str, token: &str) -> String {
    sh_drv(
        name,
        &format!(
            "echo started; echo partial > \"$out\"; \
             if [ \"$NIX_BUILD_CORES\" = 7 ]; then /bin/sh -c 'sleep 30; :' {token}; fi; \
             echo complete > \"$out\""
        ),
        &[],
    )
}

#[test]
fn client_killed_mid_build_cancels_it_and_the_daemon_keeps_serving() {
    let env = Env::new();
    let token = format!("{}-client-kill", env.token());
    let mut d = env.daemon(&["--no-sandbox"]);
    let file = env.write("slow.scm", &slow_drv("slow", &token));
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);

    let mut client = Bg::spawn(&mut env.ferry(&["build", "--cores", "7", &drv]));
    client.wait_for("started", 30, &d);
    // The builder is running (its child sleeps).
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&token).is_empty() {
        assert!(Instant::now() < deadline, "the builder's child never ran");
        thread::sleep(Duration::from_millis(20));
    }
    client.kill9();
    client.wait(10);
    // The daemon notices that the client left and stops its build, the
    // builder's children included.
    wait_no_processes(&token, 10, "after the client was killed");
    d.assert_alive();
    assert!(
        !env.is_valid(&out),
        "the killed build's output {out} is registered"
    );
    env.verify_clean(Some(&d));

    // The daemon goes on serving: the same derivation now builds in full.
    let o = ok(
        run_timeout(&mut env.ferry(&["build", "--cores", "1", &drv]), 60),
        "build after the killed client",
    );
    assert_eq!(lines(&o.stdout), vec![out.clone()]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "complete\n");
    let hello = env.write("hello.scm", &sh_drv("after", "echo after > $out", &[]));
    ok(
        run_timeout(&mut env.ferry(&["build", hello.to_str().unwrap()]), 60),
        "another build",
    );
    d.assert_alive();
    env.verify_clean(Some(&d));
}

// ---------------------------------------------------------------------------
// 3. kill -9 of the daemon mid-build, then a restart
// ---------------------------------------------------------------------------

#[test]
fn daemon_killed_mid_build_restarts_cleanly_and_the_retry_succeeds() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    let token = format!("{}-daemon-kill", env.token());
    let mut d = env.daemon(&[]); // sandboxed, as root
    let file = env.write("slow.scm", &slow_drv("slow", &token));
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);

    let mut client = Bg::spawn(&mut env.ferry(&["build", "--cores", "7", &drv]));
    client.wait_for("started", 30, &d);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&token).is_empty() {
        assert!(Instant::now() < deadline, "the builder's child never ran");
        thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    let st = client.wait(20);
    assert!(
        !st.success(),
        "the client of a killed daemon must fail; stderr:\n{}",
        client.stderr()
    );
    // The sandbox's lifeline takes the build down with the daemon.
    wait_no_processes(&token, 10, "after the daemon was killed");
    assert!(!env.is_valid(&out), "{out} registered by a killed build");

    // A new daemon on the same store, state and socket. (Until it starts,
    // `ferry store verify` reports the dead daemon's sandbox tree.)
    let mut d2 = env.daemon(&[]);
    let left = env.store_entries(".ferry-chroot-");
    assert!(
        left.is_empty(),
        "sandbox trees of the killed daemon left in the store after a restart: {left:?}"
    );
    env.verify_clean(Some(&d2));
    let started = Instant::now();
    let o = run_timeout(&mut env.ferry(&["build", "--cores", "1", &drv]), 60);
    if !o.status.success() {
        panic!(
            "retry after the restart failed ({}):\n{}{}",
            o.status,
            text(&o.stderr),
            d2.log_text()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the retry took {:?}: a stale lock?",
        started.elapsed()
    );
    assert_eq!(lines(&o.stdout), vec![out.clone()]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "complete\n");
    assert!(env.is_valid(&out));
    d2.assert_alive();
    env.verify_clean(Some(&d2));
    let left = env.chroots_with_contents();
    assert!(left.is_empty(), "sandbox trees left: {left:?}");
}

// ---------------------------------------------------------------------------
// 4. Sandbox containment
// ---------------------------------------------------------------------------

#[test]
fn sandboxed_builder_cannot_reach_the_network_or_write_on_the_host() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    let token = env.token();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = env.daemon(&[]);

    let host_tmp = PathBuf::from(format!("/tmp/ferry-escape-{token}"));
    let host_etc = PathBuf::from(format!("/etc/ferry-escape-{token}"));
    let in_store = env.store.join(format!("escape-{token}"));
    let in_test_dir = env.path("escape-from-sandbox");
    let script = format!(
        "exec 2>&1; \
         if /bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo net=connected; else echo net=refused; fi; \
         for i in /sys/class/net/*; do [ -e \"$i\" ] && echo sysnet=${{i##*/}}; done; \
         tail -n +3 /proc/net/dev | while IFS=: read n rest; do echo netdev=$(echo $n); done; \
         for f in {} {} {} {}; do echo x > \"$f\" 2>/dev/null && echo wrote=$f; done; \
         echo id=$(id -u); true",
        host_tmp.display(),
        host_etc.display(),
        in_store.display(),
        in_test_dir.display(),
    );
    // The builder's report goes to its log and to $out.
    let script = format!("{{ {script}; }} | tee \"$out\"");
    let file = env.write("escape.scm", &sh_drv("escape", &script, &[]));
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    let report = text(&o.stderr);
    eprintln!("builder report:\n{report}");

    // Nothing reached the host's listener.
    match listener.accept() {
        Ok((_, peer)) => panic!("the sandboxed builder connected to the host from {peer}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    // Nothing was written on the host.
    for p in [&host_tmp, &host_etc, &in_store, &in_test_dir] {
        let exists = p.symlink_metadata().is_ok();
        let _ = fs::remove_file(p);
        assert!(
            !exists,
            "the sandboxed builder wrote {} on the host",
            p.display()
        );
    }
    assert!(env.chroots_with_contents().is_empty(), "sandbox tree left");
    // When the build ran, it saw only lo and could not connect.
    if o.status.success() {
        let out = lines(&o.stdout).pop().unwrap();
        let seen = fs::read_to_string(&out).unwrap();
        assert!(seen.contains("net=refused"), "{seen}");
        let ifaces: BTreeSet<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("netdev=").or(l.strip_prefix("sysnet=")))
            .collect();
        assert!(
            ifaces.iter().all(|i| *i == "lo"),
            "interfaces inside the sandbox: {ifaces:?}\n{seen}"
        );
        assert!(!seen.contains("id=0"), "the builder ran as root:\n{seen}");
    } else {
        eprintln!("the contained build failed (allowed): {report}");
    }
    drop(d);
}

// ---------------------------------------------------------------------------
// 5. A failing builder
// ---------------------------------------------------------------------------

#[test]
fn failing_builder_reports_drv_exit_code_and_log_tail() {
    let env = Env::new();
    let d = env.daemon(&["--no-sandbox"]);
    let file = env.write(
        "fail.scm",
        &sh_drv(
            "failing",
            "i=1; while [ $i -le 40 ]; do echo log-line-$i; i=$((i+1)); done; echo touched > $out; exit 1",
            &[],
        ),
    );
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(100), "stderr:\n{err}{}", d.log_text());
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
    let error_line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert!(
        error_line.contains(&drv) && error_line.contains("exit code 1"),
        "{error_line}"
    );
    // The tail of the log, after the error.
    let after = &err[err.find(error_line).unwrap()..];
    assert!(
        after.contains("log-line-40") && after.contains("log-line-30"),
        "no log tail after the error:\n{err}"
    );
    // The full log.
    let log = ok(
        run_timeout(&mut env.ferry(&["log", &drv]), 30),
        "ferry log (daemon)",
    );
    let want: Vec<String> = (1..=40).map(|i| format!("log-line-{i}")).collect();
    assert_eq!(lines(&log.stdout), want);
    // No output left, nothing registered.
    assert!(
        Path::new(&out).symlink_metadata().is_err(),
        "{out} exists after the failed build"
    );
    assert!(!env.is_valid(&out));
    env.verify_clean(Some(&d));
    // Without the daemon, the log is read from the state directory.
    drop(d);
    let log = ok(
        run_timeout(&mut env.ferry(&["log", &drv]), 30),
        "ferry log (embedded)",
    );
    assert_eq!(lines(&log.stdout), want);
}

// ---------------------------------------------------------------------------
// 6. --max-silent-time, --timeout, --keep-going
// ---------------------------------------------------------------------------

#[test]
fn silent_and_long_builders_are_killed_with_their_children() {
    let env = Env::new();
    let d = env.daemon(&["--no-sandbox"]);
    let token = env.token();
    let silent = env.write(
        "silent.scm",
        &sh_drv(
            "silent",
            &format!("echo going-quiet; /bin/sh -c 'sleep 60; :' {token}-silent & sleep 60; echo late > $out"),
            &[],
        ),
    );
    let chatty = env.write(
        "chatty.scm",
        &sh_drv(
            "chatty",
            &format!(
                "/bin/sh -c 'sleep 60; :' {token}-timeout & while :; do echo tick; sleep 0.2; done"
            ),
            &[],
        ),
    );
    let t = Instant::now();
    let o = run_timeout(
        &mut env.ferry(&["build", "--max-silent-time", "1", silent.to_str().unwrap()]),
        40,
    );
    let took = t.elapsed();
    let err = text(&o.stderr);
    // A timed-out build exits 101, as Nix's (`Worker::exitStatus`).
    assert_eq!(o.status.code(), Some(101), "{err}{}", d.log_text());
    assert!(
        err.contains("max-silent-time") && err.contains("killed") && err.contains("silent.drv"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    wait_no_processes(&format!("{token}-silent"), 10, "--max-silent-time");

    let t = Instant::now();
    let o = run_timeout(
        &mut env.ferry(&["build", "--timeout", "2", chatty.to_str().unwrap()]),
        40,
    );
    let took = t.elapsed();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(101), "{err}{}", d.log_text());
    assert!(
        err.contains("--timeout") && err.contains("killed") && err.contains("chatty.drv"),
        "{err}"
    );
    assert!(err.contains("tick"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    wait_no_processes(&format!("{token}-timeout"), 10, "--timeout");
}

#[test]
fn keep_going_builds_what_does_not_depend_on_the_failure() {
    let env = Env::new();
    let counter = counter_file(&env);
    let c = counter.to_str().unwrap();
    let d = env.daemon(&["--no-sandbox", "--max-jobs", "4"]);
    let count = |name: &str| format!("echo {name} >> \"$COUNTER\"; ");
    let file = env.write(
        "kg.scm",
        &format!(
            "(define bad {})\n(define g1 {})\n\
             (define g2 (derivation \"g2\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) \
               #:args (list \"-c\" (string-append {} \"cat \" (derivation-output g1) \" > $out\"))))\n\
             (define after-bad (derivation \"after-bad\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) \
               #:args (list \"-c\" (string-append {} \"cat \" (derivation-output bad) \" > $out\"))))\n\
             (list bad g2 after-bad)\n",
            sh_drv("bad", &format!("{}echo bad-fails; exit 1", count("bad")), &[("COUNTER", c)]),
            sh_drv("g1", &format!("{}sleep 1.5; echo g1 > $out", count("g1")), &[("COUNTER", c)]),
            q(c),
            q(&count("g2")),
            q(c),
            q(&count("after-bad")),
        ),
    );
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    assert_eq!(
        o.status.code(),
        Some(100),
        "{}{}",
        text(&o.stderr),
        d.log_text()
    );
    let built = counts(&counter);
    assert!(
        built.contains_key("bad") && !built.contains_key("g2") && !built.contains_key("after-bad"),
        "without --keep-going g2 must not start after bad failed: {built:?}"
    );
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));

    let o = run_timeout(&mut env.ferry(&["build", "-k", file.to_str().unwrap()]), 60);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(100), "{err}{}", d.log_text());
    let built = counts(&counter);
    assert_eq!(built.get("g2"), Some(&1), "{built:?}\n{err}");
    assert_eq!(built.get("g1"), Some(&1), "{built:?}");
    assert!(!built.contains_key("after-bad"), "{built:?}");
    let printed = lines(&o.stdout);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert!(printed[0].ends_with("-g2"), "{printed:?}");
    assert_eq!(fs::read_to_string(&printed[0]).unwrap(), "g1\n");
    assert!(
        err.contains("bad-fails") && err.contains("after-bad"),
        "{err}"
    );
    env.verify_clean(Some(&d));
}

// ---------------------------------------------------------------------------
// 7. Protocol robustness
// ---------------------------------------------------------------------------

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend((payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn read_frame(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[1..].try_into().unwrap()) as usize;
    assert!(len < 1 << 20, "a {len}-byte frame from the daemon");
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some((head[0], p))
}

/// Read until EOF (bounded): the daemon closed the connection.
fn assert_closed(s: &mut UnixStream, what: &str, d: &Daemon) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!(
            "{what}: the daemon did not close the connection ({e}){}",
            d.log_text()
        ),
    }
}

fn hello(store: &str) -> Vec<u8> {
    frame(
        1,
        serde_json::json!({"protocol": 1, "version": "test", "store_dir": store})
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn malformed_frames_close_one_connection_and_the_daemon_keeps_serving() {
    let env = Env::new();
    let mut d = env.daemon(&["--no-sandbox"]);
    let store = env.store.to_str().unwrap();
    let connect = || {
        let s = UnixStream::connect(&env.socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // An idle connection must not hold anyone up.
    let _idle = connect();

    let mut big = vec![1u8];
    big.extend(u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("oversized frame header", big.clone()),
        (
            "malformed JSON hello",
            frame(1, b"{\"protocol\": 1, \"store_dir\": "),
        ),
        ("a data frame instead of a hello", frame(2, b"data")),
        ("truncated frame", vec![1, 100, 0, 0, 0, b'{']),
    ];
    for (what, bytes) in &cases {
        let mut s = connect();
        let _ = s.write_all(bytes);
        if *what == "truncated frame" {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed(&mut s, what, &d);
        d.assert_alive();
    }
    // After a good handshake: malformed requests close that session, with
    // an error message first.
    for (what, bytes) in [
        ("malformed JSON request", frame(1, b"{\"op\": \"build\", ")),
        ("unknown request", frame(1, b"{\"op\": \"format-disk\"}")),
        ("oversized request header", big.clone()),
    ] {
        let mut s = connect();
        s.write_all(&hello(store)).unwrap();
        let (kind, reply) = read_frame(&mut s).expect("handshake reply");
        assert_eq!(kind, 1);
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["handshake"], "welcome", "{v}");
        s.write_all(&bytes).unwrap();
        let rest = assert_closed(&mut s, what, &d);
        if !rest.is_empty() {
            let mut c = std::io::Cursor::new(rest);
            let mut head = [0u8; 5];
            c.read_exact(&mut head).unwrap();
            let mut p = Vec::new();
            c.read_to_end(&mut p).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["reply"], "error", "{what}: {v}");
        }
        d.assert_alive();
    }
    // Another store directory is refused, naming both.
    let mut s = connect();
    s.write_all(&hello("/other/store")).unwrap();
    let (_, reply) = read_frame(&mut s).expect("a refusal");
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["handshake"], "refused", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("/other/store") && reason.contains(store),
        "{reason}"
    );
    assert_closed(&mut s, "refused hello", &d);
    // The same through the command line.
    let other = env.path("other-store");
    let mut c = env.ferry(&["build", "/nonexistent.scm"]);
    c.env("FERRY_STORE_DIR", &other);
    let o = run_timeout(&mut c, 30);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(other.to_str().unwrap()) && err.contains(store),
        "the refusal must name both stores:\n{err}"
    );

    // And the daemon still builds.
    let file = env.write("ok.scm", &sh_drv("still-ok", "echo ok > $out", &[]));
    let o = ok(
        run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60),
        "build after the bad clients",
    );
    let out = lines(&o.stdout).pop().unwrap();
    assert_eq!(fs::read_to_string(out).unwrap(), "ok\n");
    d.assert_alive();
}

// ---------------------------------------------------------------------------
// 8. Embedded mode
// ---------------------------------------------------------------------------

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn embedded_build_works_for_a_fresh_user() {
    let env = Env::new();
    let hello = examples().join("hello.scm");
    let root = is_root();
    let mut c = env.ferry(&["build", hello.to_str().unwrap()]);
    for v in [
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "XDG_RUNTIME_DIR",
        "FERRY_DAEMON_SOCKET",
    ] {
        c.env_remove(v);
    }
    let o = ok(
        run_timeout(&mut c, 60),
        "embedded ferry build (FERRY_* set)",
    );
    let out = lines(&o.stdout);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].starts_with(env.store.to_str().unwrap()) && out[0].ends_with("-hello"));
    assert_eq!(fs::read_to_string(&out[0]).unwrap(), "Hello from Ferry!\n");
    assert!(
        !env.state.join("daemon-socket/socket").exists(),
        "no daemon socket expected"
    );
    env.verify_clean(None);

    if !root {
        // Nothing set at all but HOME: the per-user defaults.
        let mut c = command(ferry_bin(), &env.home);
        for v in [
            "XDG_DATA_HOME",
            "XDG_STATE_HOME",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
            "FERRY_DAEMON_SOCKET",
        ] {
            c.env_remove(v);
        }
        c.args(["build", hello.to_str().unwrap()]);
        let o = ok(run_timeout(&mut c, 60), "embedded ferry build (defaults)");
        let out = lines(&o.stdout);
        let store = env.home.join(".local/share/ferry/store");
        assert!(out[0].starts_with(store.to_str().unwrap()), "{out:?}");
        assert_eq!(fs::read_to_string(&out[0]).unwrap(), "Hello from Ferry!\n");
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn embedded_and_daemon_builds_on_one_store_build_each_derivation_once() {
    let env = Env::new();
    let counter = counter_file(&env);
    let c = counter.to_str().unwrap();
    let d = env.daemon(&["--no-sandbox", "--max-jobs", "3"]);
    let names: Vec<String> = (0..6).map(|i| format!("race{i}")).collect();
    let defs: String = names
        .iter()
        .map(|n| {
            format!(
                "(define {n} {})\n",
                sh_drv(
                    n,
                    &format!("echo {n} >> \"$COUNTER\"; sleep 0.5; echo {n} > $out"),
                    &[("COUNTER", c)]
                )
            )
        })
        .collect();
    let mut rev = names.clone();
    rev.reverse();
    let fwd = env.write("fwd.scm", &format!("{defs}(list {})\n", names.join(" ")));
    let bwd = env.write("bwd.scm", &format!("{defs}(list {})\n", rev.join(" ")));
    // Embedded clients: no daemon at their socket.
    let nowhere = env.path("no-daemon-here.sock");
    let mut clients = Vec::new();
    for (file, embedded) in [(&fwd, false), (&bwd, true), (&fwd, true), (&bwd, false)] {
        let mut cmd = env.ferry(&["build", "--no-sandbox", "-j", "3", file.to_str().unwrap()]);
        if embedded {
            cmd.env("FERRY_DAEMON_SOCKET", &nowhere);
        }
        clients.push(thread::spawn(move || {
            (embedded, run_timeout(&mut cmd, 120))
        }));
    }
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    // All finish before anything is checked (none outlives the test).
    let done: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (embedded, o)) in done.into_iter().enumerate() {
        if !o.status.success() {
            panic!(
                "client {i} (embedded: {embedded}) failed ({}):\n{}{}",
                o.status,
                text(&o.stderr),
                d.log_text()
            );
        }
        for p in lines(&o.stdout) {
            let name = fs::read_to_string(&p).unwrap().trim().to_string();
            assert!(p.ends_with(&format!("-{name}")), "{p} holds {name}");
            if let Some(prev) = outputs.insert(name.clone(), p.clone()) {
                assert_eq!(prev, p);
            }
        }
    }
    assert_eq!(outputs.len(), names.len(), "{outputs:?}");
    let built = counts(&counter);
    for n in &names {
        assert_eq!(
            built.get(n),
            Some(&1),
            "{n} must be built exactly once by the daemon and the embedded builds together: {built:?}"
        );
    }
    env.verify_clean(Some(&d));
}

// ---------------------------------------------------------------------------
// 9. A full disk
// ---------------------------------------------------------------------------

#[test]
fn build_filling_the_disk_fails_cleanly_and_the_store_stays_usable() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    fs::create_dir_all(&env.store).unwrap();
    let big = env.write(
        "big.scm",
        &sh_drv(
            "big",
            "echo writing; head -c 10485760 /dev/zero > $out",
            &[],
        ),
    );
    let small = env.write("small.scm", &sh_drv("small", "echo small > $out", &[]));
    let ferry = ferry_bin();
    // In a private mount namespace: the store is a 4 MiB tmpfs (the state
    // directory, with the database and logs, stays on the disk).
    let script = r#"
set -u
mount -t tmpfs -o size=4m ferry-test-full "$FERRY_STORE_DIR" || exit 90
"$FERRY" build "$BIG" > "$T/big.out" 2> "$T/big.err"; echo $? > "$T/big.rc"
"$FERRY" store verify > "$T/verify.out" 2>&1; echo $? > "$T/verify.rc"
"$FERRY" build "$SMALL" > "$T/small.out" 2> "$T/small.err"; echo $? > "$T/small.rc"
cat "$(cat "$T/small.out")" > "$T/small.content" 2>&1
ls -a "$FERRY_STORE_DIR" > "$T/store.ls"
df -k "$FERRY_STORE_DIR" > "$T/df.out"
"#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", &env.home)
    .env("FERRY_STORE_DIR", &env.store)
    .env("FERRY_STATE_DIR", &env.state)
    .env("FERRY_CONFIG_DIR", &env.config)
    .env("FERRY_DAEMON_SOCKET", env.path("no-daemon.sock"))
    .env("FERRY", ferry)
    .env("BIG", &big)
    .env("SMALL", &small)
    .env("T", env.dir());
    let o = run_timeout(&mut cmd, 120);
    let read = |n: &str| fs::read_to_string(env.path(n)).unwrap_or_default();
    let report = format!(
        "unshare: {} {}\nbig ({}): {}{}\nverify ({}): {}\nsmall ({}): {}{}\nstore: {}\ndf: {}",
        o.status,
        text(&o.stderr),
        read("big.rc").trim(),
        read("big.out"),
        read("big.err"),
        read("verify.rc").trim(),
        read("verify.out"),
        read("small.rc").trim(),
        read("small.out"),
        read("small.err"),
        read("store.ls"),
        read("df.out"),
    );
    eprintln!("{report}");
    assert!(o.status.success(), "{report}");
    let big_rc = read("big.rc").trim().to_string();
    assert!(
        big_rc != "0" && !big_rc.is_empty(),
        "the 10 MiB build on a 4 MiB store must fail\n{report}"
    );
    assert!(
        read("big.err").contains("error"),
        "no error message\n{report}"
    );
    assert_eq!(read("verify.rc").trim(), "0", "{report}");
    assert_eq!(read("small.rc").trim(), "0", "{report}");
    assert_eq!(read("small.content"), "small\n", "{report}");
    assert!(
        !read("store.ls").contains("-big\n"),
        "the big output is left in the store\n{report}"
    );
    // The tmpfs went with the namespace; the host's store dir is untouched.
    assert_eq!(fs::read_dir(&env.store).unwrap().count(), 0, "{report}");
}
