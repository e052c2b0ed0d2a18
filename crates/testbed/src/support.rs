//! For tests of any crate that use the testbed: the prerequisite check
//! (panics in CI, where nothing may be skipped; elsewhere says why a test
//! is skipped) and the ferry binary to use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::util::find_program;

/// Programs the testbed runs.
pub const PROGRAMS: &[&str] = &[
    "ip",
    "tc",
    "nft",
    "unshare",
    "sshd",
    "ssh",
    "ssh-keygen",
    "awk",
];

/// True when a testbed can be brought up here. When not: panics if the
/// environment variable CI is set, else prints a skip notice and returns
/// false (the test should return early).
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("running as root".to_string());
    }
    for p in PROGRAMS {
        if find_program(p).is_none() {
            missing.push(format!("`{p}`"));
        }
    }
    if is_root() {
        if let Err(e) = crate::cgroup::find_root() {
            missing.push(format!("{e}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "the testbed needs {} (.ci/run installs openssh-server, iproute2, nftables and util-linux and runs tests as root)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "CI is set but a prerequisite is missing, and tests must not be skipped in CI: {msg}"
        );
    }
    eprintln!("SKIPPED (CI is not set): {msg}");
    false
}

/// The ferry binary for tests: built (or found up to date) once per test
/// process with `cargo build -p ferry-cli`, in the same profile and target
/// directory as the test itself, so a stale binary is never tested.
pub fn ferry_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FERRY_BIN").filter(|v| !v.is_empty()) {
            return PathBuf::from(p);
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
    .clone()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    crate::util::is_root()
}
