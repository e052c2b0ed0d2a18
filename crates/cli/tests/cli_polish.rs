//! The command line as a user meets it: broken pipes, exit statuses as
//! Nix's, `ferry log` and `path-info` on output paths and paths inside
//! them, `path-info -r/-s/-S`, `build --dry-run`, `--keep-failed`,
//! `--system`, error prefixes, completions and man pages; embedded and
//! through a daemon.

use ferry_test_support as support;

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{command, ferry_bin, make_writable, run};

/// A fresh store, state, configuration, home and TMPDIR (where build
/// directories, kept ones too, are made).
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-cli-polish-")
            .tempdir()
            .unwrap();
        for d in ["home", "tmp", "config"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Env { tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("daemon.sock")
    }

    fn ferry(&self, args: &[&str]) -> Command {
        let mut c = command(ferry_bin(), &self.path("home"));
        c.env_remove("FERRY_LOG")
            .env("FERRY_STORE_DIR", self.path("store"))
            .env("FERRY_STATE_DIR", self.path("state"))
            .env("FERRY_CONFIG_DIR", self.path("config"))
            .env("FERRY_DAEMON_SOCKET", self.socket())
            .env("TMPDIR", self.path("tmp"))
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&mut self.ferry(args), None)
    }

    /// Run and insist on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "ferry {args:?}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// `ferry daemon --no-sandbox`, killed when dropped.
    fn daemon(&self) -> Daemon {
        self.daemon_with(&["--no-sandbox"])
    }

    fn daemon_with(&self, args: &[&str]) -> Daemon {
        let log = self.path("daemon.log");
        let child = self
            .ferry(&["daemon", "--listen", self.socket().to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(self.socket()).is_err() {
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "the daemon exited: {}",
                d.log_text()
            );
            assert!(Instant::now() < deadline, "no daemon: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        make_writable(self.tmp.path());
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

/// Two derivations: `top` refers to `dep` from `bin/x`.
const TWO: &str = r#"
(define env '(("PATH" . "/bin:/usr/bin")))
(define dep (derivation "dep" #:builder "/bin/sh" #:env env
  #:args '("-c" "echo building dep; echo hi > $out")))
(derivation "top" #:builder "/bin/sh" #:env env
  #:args (list "-c" (string-append "echo building top; mkdir -p $out/bin; echo "
                                   (derivation-output dep) " > $out/bin/x")))
"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Broken pipes
// ---------------------------------------------------------------------------

/// `ferry ARGS` with stdout a pipe whose reader is gone before it starts:
/// every write fails with EPIPE.
fn with_closed_stdout(env: &Env, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = env
        .ferry(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let env = Env::new();
    let file = env.write("two.scm", TWO);
    let drv = env.ok(&["derivation", "add", &file]).trim().to_string();
    let out = env.ok(&["build", "--no-sandbox", &file]).trim().to_string();
    let big = env.path("big");
    fs::write(&big, vec![b'x'; 1 << 20]).unwrap();
    let big = big.to_str().unwrap();
    for args in [
        vec!["derivation", "show", &drv],
        vec!["store", "path-info", "--json", &out],
        vec!["store", "path-info", "-r", "-S", &out],
        vec!["store", "dump", big],
        vec!["store", "hash", big],
        vec!["log", &out],
        vec!["build", "--no-sandbox", &file],
        vec!["completions", "bash"],
        vec!["--help"],
        vec!["store", "ping"],
    ] {
        let o = with_closed_stdout(&env, &args);
        let err = stderr(&o);
        assert!(
            matches!(o.status.code(), Some(0) | Some(141)),
            "ferry {args:?}: {} {err}",
            o.status
        );
        assert!(
            !err.contains("panicked") && !err.to_lowercase().contains("broken pipe"),
            "ferry {args:?}: {err}"
        );
    }
}

/// `ferry build 2>&1 | head -1`: stderr closed too (build messages).
#[test]
fn a_closed_stderr_ends_quietly() {
    let env = Env::new();
    let file = env.write("two.scm", TWO);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = env
        .ferry(&["build", "--no-sandbox", &file])
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone().unwrap()))
        .stderr(Stdio::from(writer))
        .status()
        .unwrap();
    assert!(matches!(status.code(), Some(0) | Some(141)), "{status}");
}

// ---------------------------------------------------------------------------
// Exit statuses
// ---------------------------------------------------------------------------

#[test]
fn exit_statuses_are_nix_s() {
    let env = Env::new();
    let fail = env.write(
        "fail.scm",
        r#"(derivation "fail" #:builder "/bin/sh" #:args '("-c" "exit 3"))"#,
    );
    let spin = env.write(
        "spin.scm",
        r#"(derivation "spin" #:builder "/bin/sh" #:args '("-c" "echo start; while :; do :; done"))"#,
    );
    let quiet = env.write(
        "quiet.scm",
        r#"(derivation "quiet" #:builder "/bin/sh" #:args '("-c" "echo start; exec /bin/sleep 30"))"#,
    );
    let check = |args: &[&str], want: i32| {
        let o = env.run(args);
        assert_eq!(
            o.status.code(),
            Some(want),
            "ferry {args:?}: {}",
            stderr(&o)
        );
        stderr(&o)
    };
    let both = |env: &Env| {
        let _ = env;
        check(&["build", "--no-sandbox", &fail], 100);
        let e = check(&["build", "--no-sandbox", "--timeout", "1", &spin], 101);
        assert!(e.contains("--timeout"), "{e}");
        let e = check(
            &["build", "--no-sandbox", "--max-silent-time", "1", &quiet],
            101,
        );
        assert!(e.contains("--max-silent-time"), "{e}");
        // -k: one failed, one timed out: both bits.
        check(
            &[
                "build",
                "--no-sandbox",
                "-k",
                "--timeout",
                "1",
                &fail,
                &spin,
            ],
            101,
        );
    };
    both(&env);
    check(&["build", "--no-such-flag", &fail], 1);
    check(&["store", "path-info", "/nonexistent/x"], 1);
    let _d = env.daemon();
    both(&env);
}

// ---------------------------------------------------------------------------
// log and path-info
// ---------------------------------------------------------------------------

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn log_and_path_info_checks(env: &Env, out: &str) {
    let inner = format!("{out}/bin/x");
    // ferry log: a .drv's output, a path inside it, a link to it.
    let link = env.path("result");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(out, &link).unwrap();
    for p in [out, inner.as_str(), link.to_str().unwrap()] {
        let log = env.ok(&["log", p]);
        assert!(log.contains("building top"), "log {p}: {log}");
    }
    // path-info on the inner path is the output's.
    let v = json(&env.ok(&["store", "path-info", "--json", &inner]));
    assert_eq!(v[0]["path"], out);
    let dep = v[0]["references"][0].as_str().unwrap().to_string();
    assert!(dep.ends_with("-dep"), "{v}");
    // -r: the closure, one a line, sorted.
    let r = env.ok(&["store", "path-info", "-r", &inner]);
    let mut want = vec![out.to_string(), dep.clone()];
    want.sort();
    assert_eq!(r.lines().collect::<Vec<_>>(), want);
    // -S: the closure's size; -s the path's.
    let vr = json(&env.ok(&["store", "path-info", "-r", "--json", "-S", out]));
    let arr = vr.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let size = |p: &str| {
        arr.iter().find(|i| i["path"] == p).unwrap()["narSize"]
            .as_u64()
            .unwrap()
    };
    let total = size(out) + size(&dep);
    let top = arr.iter().find(|i| i["path"] == out).unwrap();
    assert_eq!(top["closureSize"].as_u64(), Some(total), "{vr}");
    let cols = env.ok(&["store", "path-info", "-s", "-S", out]);
    let fields: Vec<&str> = cols.split_whitespace().collect();
    assert_eq!(
        fields,
        [out, &size(out).to_string(), &total.to_string()],
        "{cols}"
    );
    // A path that is not in the store says so.
    let o = env.run(&["log", "/etc/passwd"]);
    assert!(
        !o.status.success() && stderr(&o).contains("is not in the store directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn log_and_path_info_take_outputs_and_paths_inside_them() {
    let env = Env::new();
    let file = env.write("two.scm", TWO);
    let out = env.ok(&["build", "--no-sandbox", &file]).trim().to_string();
    log_and_path_info_checks(&env, &out);
    let _d = env.daemon();
    log_and_path_info_checks(&env, &out);
}

// ---------------------------------------------------------------------------
// --dry-run, --system
// ---------------------------------------------------------------------------

const ARM: &str = r#"
(define env '(("PATH" . "/bin:/usr/bin")))
(define dep (derivation "dep" #:builder "/bin/sh" #:env env
  #:args '("-c" "echo hi > $out")))
(derivation "armtop" #:system "aarch64-linux" #:builder "/bin/sh" #:env env
  #:inputs (list (local-file "src.txt"))
  #:args (list "-c" (string-append "cat " (derivation-output dep) " > $out")))
"#;

const ARM_MACHINE: &str = r#"
(list (build-machine
       (name "arm1.example.org")
       (systems (list "aarch64-linux"))
       (user "offload")
       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
"#;

fn dry_run_checks(env: &Env, file: &str) {
    let _ = fs::remove_file(env.path("config/machines.scm"));
    let o = env.run(&["build", "--dry-run", file]);
    let e = stderr(&o);
    assert!(o.status.success() && o.stdout.is_empty(), "{e}");
    assert!(e.contains("2 derivations would be built:"), "{e}");
    assert!(
        e.contains("-dep.drv (x86_64-linux): here") || !cfg!(target_arch = "x86_64"),
        "{e}"
    );
    assert!(e.contains("-armtop.drv (aarch64-linux): nowhere"), "{e}");
    // Nothing was built.
    assert!(!fs::read_dir(env.path("store")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with("-dep")));

    // Build the dependency; now it is valid and would be sent with the
    // local input to the one machine that builds aarch64-linux.
    fs::write(env.path("config/machines.scm"), ARM_MACHINE).unwrap();
    let dep_drv = e
        .lines()
        .find(|l| l.contains("-dep.drv"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    env.ok(&["build", "--no-sandbox", "--no-offload", &dep_drv]);
    let o = env.run(&["build", "-n", file]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("1 derivation would be built:"), "{e}");
    assert!(
        e.contains("-armtop.drv (aarch64-linux): on build machine arm1.example.org"),
        "{e}"
    );
    assert!(e.contains("1 path is already valid:"), "{e}");
    let sent = e.split("would be sent").nth(1).unwrap_or_default();
    assert!(sent.contains("-src.txt") && sent.contains("-dep\n"), "{e}");
    // --no-offload: the machine is not considered.
    let e = stderr(&env.run(&["build", "-n", "--no-offload", file]));
    assert!(e.contains("(aarch64-linux): nowhere"), "{e}");
}

#[test]
fn dry_run_says_what_where_and_what_is_sent() {
    let env = Env::new();
    env.write("src.txt", "source\n");
    let file = env.write("arm.scm", ARM);
    dry_run_checks(&env, &file);
    // Through a daemon: a fresh store.
    let env = Env::new();
    env.write("src.txt", "source\n");
    let file = env.write("arm.scm", ARM);
    let _d = env.daemon();
    dry_run_checks(&env, &file);
}

#[test]
fn system_evaluates_build_files_for_another_system() {
    let env = Env::new();
    let file = env.write(
        "hello.scm",
        r#"(derivation "hello" #:builder "/bin/sh" #:args '("-c" "echo hi > $out"))"#,
    );
    for d in [None, Some(())] {
        let _d = d.map(|_| env.daemon());
        let e = stderr(&env.run(&["build", "-n", "--system", "riscv64-linux", &file]));
        assert!(e.contains("-hello.drv (riscv64-linux): nowhere"), "{e}");
        let o = env.run(&["build", "--system", "riscv64-linux", &file]);
        assert_eq!(o.status.code(), Some(100), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("needs a riscv64-linux machine"),
            "{}",
            stderr(&o)
        );
    }
}

// ---------------------------------------------------------------------------
// --keep-failed
// ---------------------------------------------------------------------------

fn kept_dir(e: &str) -> PathBuf {
    let at = e
        .split("its build directory is kept: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no kept directory in {e}"));
    PathBuf::from(at.split_whitespace().next().unwrap())
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

fn keep_failed_checks(env: &Env, n: usize) {
    keep_failed_checks_with(env, n, &["--no-sandbox"]);
}

fn keep_failed_checks_with(env: &Env, n: usize, flags: &[&str]) {
    let build = |more: &[&str]| env.run(&[&["build"], flags, more].concat());
    let fail = env.write(
        &format!("fail{n}.scm"),
        &format!(
            r#"(derivation "fail{n}" #:builder "/bin/sh" #:args '("-c" "echo partial > stuff; exit 3"))"#
        ),
    );
    // Without -K nothing is kept.
    let o = build(&[&fail]);
    assert_eq!(o.status.code(), Some(100));
    assert!(!stderr(&o).contains("kept"), "{}", stderr(&o));
    let o = build(&["-K", &fail]);
    assert_eq!(o.status.code(), Some(100), "{}", stderr(&o));
    let kept = kept_dir(&stderr(&o));
    assert!(kept.starts_with(env.path("tmp")), "{}", kept.display());
    let stuff = find_file(&kept, "stuff").expect("the builder's file is kept");
    assert_eq!(fs::read_to_string(&stuff).unwrap(), "partial\n");
    // Later builds neither reuse nor remove it.
    for i in 0..3 {
        let ok = env.write(
            &format!("ok{n}-{i}.scm"),
            &format!(
                r#"(derivation "ok{n}-{i}" #:builder "/bin/sh" #:args '("-c" "echo > $out"))"#
            ),
        );
        let o = build(&[&ok]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(fs::read_to_string(&stuff).unwrap(), "partial\n");
}

/// In the sandbox a daemon keeps finished builds' directories for the
/// next ones (`spares.rs`): a kept one is never among them.
#[test]
fn keep_failed_in_the_sandbox_is_never_reused() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    let _d = env.daemon_with(&[]);
    keep_failed_checks_with(&env, 2, &[]);
}

#[test]
fn keep_failed_keeps_the_build_directory_and_says_where() {
    let env = Env::new();
    keep_failed_checks(&env, 0);
    let _d = env.daemon();
    keep_failed_checks(&env, 1);
}

// ---------------------------------------------------------------------------
// Messages, completions, man pages
// ---------------------------------------------------------------------------

#[test]
fn a_scheme_error_has_one_prefix() {
    let env = Env::new();
    let bad = env.write(
        "bad.scm",
        "(derivation \"x\" #:builder \"/bin/sh\" #:colour \"red\")",
    );
    let o = env.run(&["build", "-n", &bad]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(e.starts_with(&format!("{bad}:1:1: error: ")), "{e}");
    assert_eq!(e.matches("error:").count(), 1, "{e}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let env = Env::new();
    for (shell, want) in [
        ("bash", "_ferry()"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let s = env.ok(&["completions", shell]);
        assert!(s.contains(want), "{shell}: {}", &s[..s.len().min(300)]);
        assert!(s.contains("path-info") && s.contains("dry-run"), "{shell}");
    }
    let dir = env.path("man");
    env.ok(&["man", dir.to_str().unwrap()]);
    for page in [
        "ferry.1",
        "ferry-build.1",
        "ferry-store-path-info.1",
        "ferry-log.1",
    ] {
        let text = fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let build = fs::read_to_string(dir.join("ferry-build.1")).unwrap();
    assert!(build.contains("keep\\-failed"), "{build}");
}
