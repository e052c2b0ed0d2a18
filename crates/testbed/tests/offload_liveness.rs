//! Liveness of offload on the testbed: a machine alive but silent (its
//! daemon stopped while sshd answers keep-alives, a machine that never
//! answers the machine-info probe, a transfer held halfway by the proxy)
//! is left within the liveness bound, the build completed elsewhere, and
//! nothing half-imported (`ferry store verify` clean everywhere). Each test
//! asserts the wall time. A silent builder on a healthy machine is not
//! mistaken for a silent machine (the remote daemon's keep-alives).

use std::time::{Duration, Instant};

use ferry_test_support::testbed::prerequisites;
use ferry_testbed::proxy::{Action, Direction};

use common::{
    build_cmd, count_marked, edit_machine, independent, machines_used, output_within, spawn,
    stderr, verify_stores, wait_for, REMOTE_ONLY,
};
use ferry_test_support::testbed as common;

const STORE: &str = "256M";
/// The liveness bound of these tests (`--offload-silence-timeout`).
const BOUND: u64 = 3;
const NEEDS_REMOTE: &str = "(\"requiredSystemFeatures\" . \"remote\")";

fn bound_args() -> [String; 2] {
    ["--offload-silence-timeout".into(), BOUND.to_string()]
}

/// A stopped remote daemon mid-build (sshd alive): the build is placed
/// again within the bound, and a builder silent for twice the bound on a
/// healthy machine is not (the keep-alives).
#[test]
fn a_stopped_remote_daemon_mid_build_is_left_within_the_bound() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    for h in tb.hosts() {
        edit_machine(&tb, h, |m| m.replace("(parallel-builds", REMOTE_ONLY));
    }
    let args = bound_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Silent for 2 x the bound on a healthy machine: built there.
    let quiet = independent(
        "quiet",
        1,
        &format!("sleep {};", 2 * BOUND),
        NEEDS_REMOTE,
        "",
    );
    let out = output_within(
        spawn(&mut build_cmd(&tb, "quiet", &quiet, &args)),
        Duration::from_secs(40),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("building elsewhere"), "{log}");
    assert_eq!(machines_used(&log).len(), 1, "{log}");

    // Its daemon stopped while it builds: elsewhere, within the bound.
    let marker = "stoppedmark";
    let scm = independent(
        "stopped",
        1,
        &format!("sleep 4; : {marker};"),
        NEEDS_REMOTE,
        "",
    );
    let child = spawn(&mut build_cmd(&tb, "stopped", &scm, &args));
    let mut on = None;
    wait_for(
        "the build to start on a host",
        Duration::from_secs(20),
        || {
            on = tb.hosts().iter().find(|h| count_marked(h, marker) > 0);
            on.is_some()
        },
    );
    let host = on.unwrap();
    let t0 = Instant::now();
    host.stop_daemon().unwrap();
    let out = output_within(child, Duration::from_secs(60));
    let took = t0.elapsed();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let used = machines_used(&log);
    assert_eq!(used.len(), 2, "{log}");
    assert_eq!(used[0], host.address(), "{log}");
    assert_ne!(used[1], host.address(), "{log}");
    assert!(
        log.contains(&format!("sent nothing for {BOUND} s")) && log.contains("building elsewhere"),
        "{log}"
    );
    // The bound, the 4 s build elsewhere, and the copies.
    assert!(
        took < Duration::from_secs(BOUND + 4 + 6),
        "{took:?} after the stop:\n{log}"
    );
    eprintln!(
        "stopped daemon: done {took:?} after the stop, on {}",
        used[1]
    );
    // Back: it sees its client gone and kills the builder.
    host.cont_daemon().unwrap();
    wait_for(
        "the orphaned builder killed",
        Duration::from_secs(20),
        || count_marked(host, marker) == 0,
    );
    verify_stores(&tb);
}

/// A machine whose daemon never answers (the probe's handshake and
/// machine-info request hang) does not delay placement on another beyond
/// the 2 s grace given to machines never measured (not its 30 s bound, nor
/// the 10 s connect timeout the probe waited for before).
#[test]
fn a_machine_that_never_answers_machine_info_does_not_delay_another() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    let (h1, h2) = (&tb.hosts()[0], &tb.hosts()[1]);
    // h1 the faster: the one the scheduler would pick.
    edit_machine(&tb, h1, |m| {
        m.replace("(speed 1.0)", "(speed 2.0)")
            .replace("(parallel-builds", REMOTE_ONLY)
    });
    edit_machine(&tb, h2, |m| m.replace("(parallel-builds", REMOTE_ONLY));
    h1.stop_daemon().unwrap();
    // The default bound (30 s): placement must not wait for the probe.
    let scm = independent("probe", 1, "true;", NEEDS_REMOTE, "");
    let t0 = Instant::now();
    let out = output_within(
        spawn(&mut build_cmd(&tb, "probe", &scm, &[])),
        Duration::from_secs(60),
    );
    let took = t0.elapsed();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(machines_used(&log), vec![h2.address().to_string()], "{log}");
    assert!(took < Duration::from_secs(5), "{took:?}:\n{log}");
    eprintln!("silent machine-info: built on h2 in {took:?}");

    // Through a daemon: the grace is paid once, from the probe's start;
    // builds placed while the probe is still out (its bound is 30 s) are
    // not delayed.
    let _daemon = common::MasterDaemon::start(&tb);
    for i in 0..3 {
        let tag = format!("probed{i}");
        let scm = independent(&tag, 1, "true;", NEEDS_REMOTE, "");
        let t0 = Instant::now();
        let out = output_within(
            spawn(&mut build_cmd(&tb, &tag, &scm, &[])),
            Duration::from_secs(60),
        );
        let took = t0.elapsed();
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        assert_eq!(machines_used(&log), vec![h2.address().to_string()], "{log}");
        let limit = if i == 0 { 5.0 } else { 1.5 };
        assert!(took.as_secs_f64() < limit, "{tag}: {took:?}:\n{log}");
        eprintln!("{tag}: built on h2 in {took:?}");
    }
    h1.cont_daemon().unwrap();
    verify_stores(&tb);
}

/// A transfer held halfway by the proxy (the upload, then the download):
/// left within the bound, built elsewhere, nothing half-imported.
#[test]
fn a_transfer_stalled_halfway_is_left_within_the_bound() {
    if !prerequisites() {
        return;
    }
    for direction in [Direction::Up, Direction::Down] {
        stalled(direction);
    }
}

fn stalled(direction: Direction) {
    const MIB: u64 = 1 << 20;
    let (tmp, tb, proxy) = common::proxied_pair(STORE);
    let h1 = &tb.hosts()[0];
    let tag = format!("stall{direction:?}").to_lowercase();
    let input = tmp.path().join(format!("{tag}.in"));
    common::random_file(&input, 16 * MIB);
    let marker = format!("{tag}mark");
    let scm = format!(
        "(derivation \"{tag}\" #:builder \"/bin/sh\"\n  #:env '((\"PATH\" . \"/bin:/usr/bin\") {NEEDS_REMOTE})\n  #:args (list \"-c\" (string-append \"sleep 1; : {marker}; cat \" (local-file \"{}\") \" > $out\")))\n",
        input.display()
    );
    let args = bound_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if direction == Direction::Up {
        proxy.arm(Direction::Up, 4 * MIB, Action::Pause);
    }
    let child = spawn(&mut build_cmd(&tb, &tag, &scm, &args));
    if direction == Direction::Down {
        wait_for("the build on h1", Duration::from_secs(30), || {
            count_marked(h1, &marker) > 0
        });
        proxy.arm(Direction::Down, 4 * MIB, Action::Pause);
    }
    assert!(proxy.wait_hit(Duration::from_secs(30)), "{tag}: no stall");
    let t0 = Instant::now();
    // Held for good: only the bound ends it.
    let out = output_within(child, Duration::from_secs(60));
    let took = t0.elapsed();
    let log = stderr(&out);
    assert!(out.status.success(), "{tag}: {log}");
    let used = machines_used(&log);
    assert_eq!(
        used.last().map(String::as_str),
        Some(tb.hosts()[1].address()),
        "{log}"
    );
    assert!(
        log.contains("sent nothing for") && log.contains("building elsewhere"),
        "{log}"
    );
    // The bound, then 16 MiB up, a 1 s build and 16 MiB down on h2 (the
    // copies take 3-5 s each on a busy 2-core machine with debug builds).
    assert!(
        took < Duration::from_secs(BOUND + 15),
        "{tag}: {took:?}:\n{log}"
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(&input).unwrap(),
        "{tag}"
    );
    eprintln!("{tag}: done {took:?} after the stall");
    drop(proxy);
    verify_stores(&tb);
}

/// The client's --max-silent-time and --timeout, measured on this side:
/// without a liveness bound (`--offload-silence-timeout 0`), a build whose
/// machine's daemon stopped still ends when the client's limit says, with
/// the limit named (it hung for ever before).
#[test]
fn the_clients_limits_apply_to_an_offloaded_build_measured_here() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(1, 1, STORE);
    let h1 = &tb.hosts()[0];
    edit_machine(&tb, h1, |m| m.replace("(parallel-builds", REMOTE_ONLY));
    for (tag, limit, named) in [
        (
            "silent",
            "--max-silent-time",
            "--max-silent-time, measured here",
        ),
        ("late", "--timeout", "--timeout, measured here"),
    ] {
        let marker = format!("{tag}mark");
        let scm = independent(tag, 1, &format!("sleep 30; : {marker};"), NEEDS_REMOTE, "");
        let child = spawn(&mut build_cmd(
            &tb,
            tag,
            &scm,
            &["--offload-silence-timeout", "0", limit, "4"],
        ));
        wait_for("the build on h1", Duration::from_secs(20), || {
            count_marked(h1, &marker) > 0
        });
        h1.stop_daemon().unwrap();
        let t0 = Instant::now();
        let out = output_within(child, Duration::from_secs(30));
        let took = t0.elapsed();
        let log = stderr(&out);
        assert!(!out.status.success(), "{tag}: {log}");
        assert!(log.contains(named), "{tag}: {log}");
        assert!(took < Duration::from_secs(4 + 3), "{tag}: {took:?}:\n{log}");
        eprintln!("{tag}: failed {took:?} after the stop, as {limit} says");
        h1.cont_daemon().unwrap();
        wait_for(
            "the orphaned builder killed",
            Duration::from_secs(20),
            || count_marked(h1, &marker) == 0,
        );
    }
    verify_stores(&tb);
}
