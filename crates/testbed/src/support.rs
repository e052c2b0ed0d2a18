//! What a testbed needs of this machine, for the tests that bring one up:
//! they ask [`missing`] and leave the decision (fail in CI, skip elsewhere)
//! to the dev-only crate `ferry-test-support`.

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

/// What this machine lacks to bring a testbed up (empty: nothing): root,
/// the [`PROGRAMS`], a cgroup v2 hierarchy the testbed can use.
pub fn missing() -> Vec<String> {
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
    missing
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    crate::util::is_root()
}
