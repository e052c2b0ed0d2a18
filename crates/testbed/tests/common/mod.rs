//! Helpers shared by the offload tests on the testbed.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use ferry_testbed::support::ferry_bin;
use ferry_testbed::{Options, Testbed};

/// Run with no standard input; the output whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Run and insist on success.
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A testbed of `hosts` hosts with `slots` slots each and stores of
/// `store_size`, under a temporary directory (kept as long as the guard).
pub fn testbed(hosts: usize, slots: usize, store_size: &str) -> (tempfile::TempDir, Testbed) {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-offload-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut opts = Options::new(tmp.path().join("tb"), hosts);
    opts.ferry = Some(ferry_bin());
    opts.slots = slots;
    opts.store_size = store_size.into();
    let tb = Testbed::up(opts).unwrap();
    (tmp, tb)
}

/// The master's configuration directory (machines.scm, keys, ACL).
pub fn master_config(tb: &Testbed) -> PathBuf {
    let env = tb.master_env();
    PathBuf::from(&env.iter().find(|(k, _)| k == "FERRY_CONFIG_DIR").unwrap().1)
}
