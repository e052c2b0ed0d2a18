//! The `ferry store` commands as a user runs them: real processes, real
//! files, a real SQLite database; including `kill -9` in the middle of adds.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_test_support::ferry_bin;

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Env { _dir: dir, root }
    }

    fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    fn ferry(&self) -> Command {
        let mut c = Command::new(ferry_bin());
        c.env("FERRY_STORE_DIR", self.store_dir())
            .env("FERRY_STATE_DIR", self.root.join("state"))
            .env("FERRY_CONFIG_DIR", self.root.join("config"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ferry().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

fn tree(at: &Path, files: usize, size: usize) {
    fs::create_dir_all(at.join("sub")).unwrap();
    for i in 0..files {
        let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
        fs::write(at.join(format!("sub/f{i}")), data).unwrap();
    }
    fs::write(at.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(at.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/f0", at.join("link")).unwrap();
}

#[test]
fn add_path_info_and_verify() {
    let env = Env::new();
    let src = env.root.join("src");
    tree(&src, 5, 1000);
    let out = env.ok(&["store", "add", src.to_str().unwrap()]);
    let path = out.trim();
    assert!(
        path.starts_with(env.store_dir().to_str().unwrap()),
        "{path}"
    );
    assert!(path.ends_with("-src"));
    // Same contents, same path.
    assert_eq!(
        env.ok(&["store", "add", src.to_str().unwrap()]).trim(),
        path
    );

    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["store", "path-info", "--json", path])).unwrap();
    let hash = env.ok(&["store", "hash", "--base32", src.to_str().unwrap()]);
    assert_eq!(info[0]["narHash"], format!("sha256:{}", hash.trim()));
    let nar = env.run(&["store", "dump", path]).stdout;
    assert_eq!(info[0]["narSize"], nar.len());
    assert_eq!(info[0]["path"], path);
    let text = env.ok(&["store", "path-info", path]);
    assert!(text.contains("nar hash:    sha256:"), "{text}");

    assert!(env.run(&["store", "verify"]).status.success());
    // Corrupt one file behind the store's back: verify names the path.
    let victim = Path::new(path).join("sub/f1");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&victim, "tampered").unwrap();
    let o = env.run(&["store", "verify"]);
    assert!(!o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(path) && stdout.contains("differ"),
        "{stdout}"
    );
}

#[test]
fn hash_forms_and_restore() {
    let env = Env::new();
    let f = env.root.join("hello");
    fs::write(&f, "Hello World!").unwrap();
    let p = f.to_str().unwrap();
    assert_eq!(
        env.ok(&["store", "hash", "--base32", p]).trim(),
        "0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3"
    );
    let b16 = env.ok(&["store", "hash", p]);
    assert_eq!(b16.trim().len(), 64);
    assert_eq!(env.ok(&["store", "hash", "--base16", p]), b16);

    let src = env.root.join("src");
    tree(&src, 3, 5000);
    let nar = env.run(&["store", "dump", src.to_str().unwrap()]).stdout;
    let dest = env.root.join("restored");
    let mut child = env
        .ferry()
        .args(["store", "restore", dest.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&nar).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        env.run(&["store", "dump", dest.to_str().unwrap()]).stdout,
        nar
    );

    // Restoring over an existing path is refused; a truncated NAR leaves nothing.
    let o = env.run(&["store", "restore", dest.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let dest2 = env.root.join("restored2");
    let mut child = env
        .ferry()
        .args(["store", "restore", dest2.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&nar[..nar.len() / 2])
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("truncated") && err.contains("byte"), "{err}");
    assert!(!dest2.exists());
}

#[test]
fn errors_say_what_to_do() {
    let env = Env::new();
    let o = env.run(&["store", "path-info", "/elsewhere/abc"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in the store directory"));
    let missing = format!(
        "{}/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo",
        env.store_dir().display()
    );
    let o = env.run(&["store", "path-info", &missing]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not valid"));
    let o = env.run(&["store", "add", "/does/not/exist"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/does/not/exist"));
    let o = env
        .ferry()
        .env("FERRY_STORE_DIR", "relative/store")
        .args(["store", "verify"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("absolute"));
    let v = env.ok(&["--version"]);
    assert!(v.starts_with("ferry "), "{v}");
}

/// `kill -9` an add at many points: afterwards the store verifies clean,
/// holds no temporary entries once reopened, and the same add succeeds.
#[test]
fn killed_adds_leave_the_store_consistent_and_retryable() {
    let env = Env::new();
    let src = env.root.join("src");
    tree(&src, 200, 64 * 1024);
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160] {
        let mut child = env
            .ferry()
            .args(["store", "add", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Opening the store (verify does) removes what the dead add left.
        let o = env.run(&["store", "verify"]);
        assert!(
            o.status.success(),
            "after kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        if let Ok(entries) = fs::read_dir(env.store_dir()) {
            for e in entries {
                let name = e.unwrap().file_name();
                assert!(
                    !name.to_string_lossy().starts_with(".tmp-ferry-"),
                    "stale temporary entry {name:?} after kill at {delay_ms} ms"
                );
            }
        }
        let path = env.ok(&["store", "add", src.to_str().unwrap()]);
        assert!(env.run(&["store", "verify"]).status.success());
        let info = env.ok(&["store", "path-info", "--json", path.trim()]);
        assert!(info.contains("narHash"));
        // Start over for the next delay.
        let _ = Command::new("chmod")
            .args(["-R", "u+w", env.store_dir().to_str().unwrap()])
            .status();
        fs::remove_dir_all(env.store_dir()).unwrap();
        fs::remove_dir_all(env.root.join("state")).unwrap();
    }
}
