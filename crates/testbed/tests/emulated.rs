//! A build machine that builds another system through emulation: a testbed
//! host whose daemon runs with `--extra-platforms
//! aarch64-linux` (QEMU registered with binfmt_misc) and whose machines.scm
//! entry lists aarch64-linux takes the master's aarch64-linux derivation,
//! whose builder is a static arm64 busybox.

use std::path::PathBuf;

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;

use ferry_test_support::testbed as common;

#[test]
fn an_emulated_system_is_offloaded_to_a_host_that_lists_it() {
    if !prerequisites() {
        return;
    }
    let Some(busybox) = std::env::var_os("FERRY_TEST_AARCH64_BUSYBOX") else {
        eprintln!("skipped: FERRY_TEST_AARCH64_BUSYBOX (a static arm64 busybox) is not set; .ci/run sets it");
        return;
    };
    if !std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        // Registered by crates/cli/tests/systems.rs, or by the system.
        let conf = std::fs::read_to_string("/usr/lib/binfmt.d/qemu-aarch64.conf");
        let registered = conf.ok().and_then(|c| {
            let line = c.lines().find(|l| l.starts_with(':'))?.to_string();
            let dir = std::path::Path::new("/proc/sys/fs/binfmt_misc");
            if !dir.join("register").exists() {
                std::process::Command::new("mount")
                    .args(["-t", "binfmt_misc", "binfmt_misc"])
                    .arg(dir)
                    .status()
                    .ok()?;
            }
            std::fs::write(dir.join("register"), line).ok()
        });
        if registered.is_none() {
            eprintln!("cannot run here: qemu-aarch64 cannot be registered with binfmt_misc");
            return;
        }
    }
    let (tmp, tb) = common::testbed_with(1, |opts| {
        opts.store_size = "256M".into();
        opts.extra_daemon_args = vec!["--extra-platforms".into(), "aarch64-linux".into()];
    });
    let host = &tb.hosts()[0];
    common::edit_machine(&tb, host, |entry| {
        entry.replace(
            "(systems (list \"x86_64-linux\"))",
            "(systems (list \"x86_64-linux\" \"aarch64-linux\"))",
        )
    });
    let bb = tmp.path().join("bb");
    std::fs::create_dir(&bb).unwrap();
    std::fs::copy(&busybox, bb.join("busybox")).unwrap();
    let scm = "(derivation \"arm-remote\" #:system \"aarch64-linux\" \
               #:builder (string-append (local-file \"bb\") \"/busybox\") \
               #:args '(\"sh\" \"-c\" \"uname -m > $out\"))";
    let file = tmp.path().join("arm.scm");
    std::fs::write(&file, scm).unwrap();
    let out = common::ok(
        tb.master_command(ferry_bin().to_str().unwrap())
            .arg("build")
            .arg(&file),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(host.address()),
        "not built on {}:\n{log}",
        host.name()
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "aarch64\n");
}
