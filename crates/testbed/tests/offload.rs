//! Offload on the testbed: builds placed on build machines over real SSH,
//! inputs sent and outputs fetched as signed streams, results identical to
//! local builds, every store consistent; a machine whose host key does not
//! match is refused and the build goes elsewhere. (Each host reports the
//! load of its own FERRY_LOADAVG_FILE, idle unless a test says otherwise, so
//! overload-threshold keeps its default although the hosts share one
//! kernel.)

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;

use common::{master_config, ok};
use ferry_test_support::testbed as common;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn builds_are_offloaded_with_identical_results_and_consistent_stores() {
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(2, 1, "256M");

    // Embedded master (no master daemon): one local job (max-jobs 1), so most of
    // the 41 derivations go to the two machines.
    let out = ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["build", "-j", "1"])
        .arg(examples().join("dag.scm")));
    let log = String::from_utf8_lossy(&out.stderr);
    let remote = log.matches("' on '10.213.").count();
    assert!(remote > 0, "nothing was offloaded:\n{log}");
    assert!(log.contains("copying"), "{log}");
    let root = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let offloaded = std::fs::read_to_string(&root).unwrap();

    // The same build without offload, in a second store at the same store
    // path: byte-identical output.
    let local_root = tmp.path().join("local");
    let mut c = Command::new(ferry_bin());
    for (k, v) in tb.master_env() {
        c.env(k, v);
    }
    c.env("FERRY_STATE_DIR", local_root.join("state"))
        .env("FERRY_CONFIG_DIR", local_root.join("config"));
    // Fresh store directory at the same path: move the master's aside.
    let store = PathBuf::from(
        &tb.master_env()
            .iter()
            .find(|(k, _)| k == "FERRY_STORE_DIR")
            .unwrap()
            .1,
    );
    let aside = tmp.path().join("master-store");
    std::fs::rename(&store, &aside).unwrap();
    let out = ok(c
        .args(["build", "--no-offload", "-j", "2"])
        .arg(examples().join("dag.scm")));
    let local = std::fs::read_to_string(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(local, offloaded, "offloaded and local outputs differ");
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&store)
        .status();
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::rename(&aside, &store).unwrap();

    // Every store is consistent.
    ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["store", "verify"]));
    for h in tb.hosts() {
        ok(h.exec("ferry").unwrap().args(["store", "verify"]));
    }
    // The log of an offloaded build is kept on the master.
    let drv = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dag-root.drv"))
        .unwrap();
    ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .arg("log")
        .arg(&drv));
}

#[test]
fn a_host_key_mismatch_is_refused_and_the_build_goes_elsewhere() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, "64M");
    // Give h1 the host key of h2 in machines.scm.
    let file = master_config(&tb).join("machines.scm");
    let text = std::fs::read_to_string(&file).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(host-key \""))
        .map(|k| k.trim_end_matches("\")"))
        .collect();
    assert_eq!(keys.len(), 2, "{text}");
    let swapped = text.replacen(keys[0], keys[1], 1);
    std::fs::write(&file, swapped).unwrap();

    let out = ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["build", "-j", "1", "--offload-max-wait", "5"])
        .arg(examples().join("hello.scm")));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains(&format!("on '{}'", tb.hosts()[0].address())),
        "built on the impostor:\n{log}"
    );
}

/// A machine whose ACL does not hold the master's key refuses the inputs
/// sent to it (the import check); the master backs it off and the build is
/// done on a machine that trusts it, with the refusal in the log.
#[test]
fn a_machine_that_does_not_trust_the_master_is_passed_over() {
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(2, 1, "256M");
    let h1 = &tb.hosts()[0];
    common::set_master_trusted(&tb, h1, false);

    // A build with a local input (so something must be sent), required to
    // run remotely: only h2 can take it.
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("input.txt"), "trusted?\n").unwrap();
    std::fs::write(
        dir.join("build.scm"),
        r#"(derivation "untrusted"
             #:builder "/bin/sh"
             #:env '(("requiredSystemFeatures" . "remote"))
             #:args (list "-c" (string-append "/bin/cat " (local-file "input.txt") " > $out")))"#,
    )
    .unwrap();
    let file = master_config(&tb).join("machines.scm");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("(speed ", "(features (list \"remote\")) (speed "),
    )
    .unwrap();
    // h1 first: make h2 look busy so h1 is tried before it.
    tb.hosts()[1].set_load(0.5).unwrap();

    let out = ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["build", "-j", "1", "--offload-max-wait", "20"])
        .arg(dir.join("build.scm")));
    let log = String::from_utf8_lossy(&out.stderr);
    let built = String::from_utf8(out.stdout).unwrap();
    assert_eq!(std::fs::read_to_string(built.trim()).unwrap(), "trusted?\n");
    let on = |i: usize| format!("on '{}'", tb.hosts()[i].address());
    assert!(log.contains(&on(1)), "not built on h2:\n{log}");
    // h1 (preferred: h2 looks busy) was tried first and refused the inputs.
    assert!(log.contains(&on(0)), "h1 was not tried:\n{log}");
    assert!(
        log.contains("not authorized"),
        "h1's refusal not reported:\n{log}"
    );
    // The refused transfer left h1's store consistent.
    ok(h1.exec("ferry").unwrap().args(["store", "verify"]));
}

/// `max-jobs 0` on a master: every derivation goes to a build
/// machine, none is built here; with every machine stopped, the build fails
/// within --offload-max-wait, naming each machine and why.
#[test]
fn a_master_with_max_jobs_0_builds_nothing_itself() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 2, "256M");
    let master = common::MasterDaemon::start_with(&tb, &["-j", "0", "--offload-max-wait", "5"]);
    let out = ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .arg("build")
        .arg(examples().join("dag.scm")));
    let log = String::from_utf8_lossy(&out.stderr);
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("building '"))
        .collect();
    assert!(started.len() >= 30, "{} builds seen:\n{log}", started.len());
    let here: Vec<&&str> = started.iter().filter(|l| !l.contains("' on '")).collect();
    assert!(here.is_empty(), "built on the master: {here:?}");
    for h in tb.hosts() {
        assert!(
            started.iter().any(|l| l.contains(h.address())),
            "nothing built on {}:\n{log}",
            h.name()
        );
    }
    let daemon_log =
        std::fs::read_to_string(tb.dir().parent().unwrap().join("master-daemon.log")).unwrap();
    assert!(
        !daemon_log.contains("on=localhost"),
        "the master built something itself:\n{daemon_log}"
    );

    // Every machine stopped: the build fails in about --offload-max-wait,
    // with each machine and why.
    for h in tb.hosts() {
        h.stop().unwrap();
    }
    let file = tb.dir().parent().unwrap().join("alone.scm");
    std::fs::write(
        &file,
        format!(
            "(derivation \"alone\" #:builder \"/bin/sh\" #:args (list \"-c\" \"echo {} > $out\"))",
            std::process::id()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = common::run(
        tb.master_command(ferry_bin().to_str().unwrap())
            .arg("build")
            .arg(&file),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "built with every machine stopped:\n{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "took {:?}:\n{err}",
        started.elapsed()
    );
    for h in tb.hosts() {
        assert!(
            err.contains(h.name()) || err.contains(h.address()),
            "{} not named:\n{err}",
            h.name()
        );
    }
    for h in tb.hosts() {
        h.cont().unwrap();
    }
    drop(master);
}
