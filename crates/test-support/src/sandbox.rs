//! The fixture of the sandbox tests (crates/build/tests/sandbox*.rs): a
//! temp dir holding a "real" store directory (shown at /ferry/store inside
//! the sandbox) with two inputs and a path that is not one, a build
//! directory and a host secret; the spec that sandboxes a builder there;
//! `/bin/sh` scripts run inside; and whether a sandbox can be made here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use ferry_build::sandbox::{
    self, available, default_host_paths, Sandbox, SandboxSpec, SETUP_FAILED_EXIT_CODE,
};

use crate::prereq::gate;

pub const STORE: &str = "/ferry/store";
pub const IN1: &str = "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-input-one";
pub const IN2: &str = "1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-input-two";
pub const OTHER: &str = "2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-not-an-input";
pub const OUT: &str = "3a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-output";

/// Whether to run: the sandbox is available here (root or unprivileged user
/// namespaces); in CI it must be.
pub fn can_sandbox() -> bool {
    let missing: Vec<String> = available()
        .err()
        .map(|e| e.to_string())
        .into_iter()
        .collect();
    gate(
        "the sandbox tests need a sandbox:",
        &missing,
        "CI runs them as root",
    )
}

/// A temp dir holding a "real" store dir (shown at /ferry/store inside), two
/// inputs, a path that is not an input, a build dir and a host secret.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let f = Fixture { tmp };
        for name in [IN1, IN2, OTHER] {
            std::fs::create_dir_all(f.store().join(name)).unwrap();
            std::fs::write(
                f.store().join(name).join("data"),
                format!("contents of {name}\n"),
            )
            .unwrap();
        }
        std::fs::create_dir(f.build_dir()).unwrap();
        std::fs::write(f.secret(), "secret\n").unwrap();
        f
    }

    pub fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    pub fn build_dir(&self) -> PathBuf {
        self.tmp.path().join("build")
    }

    pub fn secret(&self) -> PathBuf {
        self.tmp.path().join("secret")
    }

    pub fn spec(&self) -> SandboxSpec {
        spec_in(self.tmp.path())
    }

    pub fn chroots(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.store()).unwrap();
        let names = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names
            .filter(|n| n.starts_with(sandbox::CHROOT_PREFIX))
            .collect()
    }
}

/// The spec for a fixture laid out in `base`.
pub fn spec_in(base: &Path) -> SandboxSpec {
    let store = base.join("store");
    SandboxSpec {
        store_dir: PathBuf::from(STORE),
        inputs: vec![store.join(IN1), store.join(IN2)],
        outputs: vec![store.join(OUT)],
        build_dir: base.join("build"),
        sandbox_build_dir: PathBuf::from("/build"),
        host_paths: default_host_paths(),
        chroot_parent: store,
        uid: 30001,
        gid: 30001,
        max_processes: 0,
        linux32: false,
    }
}

pub fn sh(sb: &Sandbox, script: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/bin:/usr/bin");
    cmd.env("out", format!("{STORE}/{OUT}"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    sb.configure(&mut cmd);
    cmd
}

pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(sb: &Sandbox, script: &str, env: &[(&str, String)]) -> Run {
    let out = sh(sb, script, env)
        .output()
        .expect("spawn sandboxed builder");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if run.status.code() == Some(SETUP_FAILED_EXIT_CODE) {
        panic!(
            "sandbox setup failed: {:?} / {}",
            sb.setup_failure(),
            run.stderr
        );
    }
    run
}
