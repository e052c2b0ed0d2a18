//! Offload problems reach the terminal of the client they affect (issue
//! 18, item 1): a machines.scm that does not evaluate (its FILE:LINE:COL
//! error, and that the build goes local), machines skipped (wrong host key,
//! daemon stopped: named, once per machine and build however many
//! derivations meet them), and every machine unusable with -j 0 (the
//! build fails, saying why per machine). One testbed for all of them, in
//! sequence (bringing one up costs seconds).

use std::process::Output;

use ferry_test_support::testbed::prerequisites;
use ferry_testbed::Testbed;

use common::{build_cmd, edit_machine, independent, machines_used, ok, run, stderr};
use ferry_test_support::testbed as common;

/// Each host's store (above the 100 MiB a machine must have free).
const STORE: &str = "256M";

/// How often `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// `ferry build` of `n` independent derivations (a unique `name`).
fn build(tb: &Testbed, name: &str, n: usize, args: &[&str]) -> Output {
    run(&mut build_cmd(
        tb,
        name,
        &independent(name, n, "true;", "", ""),
        args,
    ))
}

fn all_local(log: &str) -> bool {
    let used = machines_used(log);
    !used.is_empty() && used.iter().all(|m| m == "localhost")
}

/// The user's view of a broken machines.scm, embedded and through a fresh
/// daemon (which says it has none); fixed, the next build offloads again
/// and says nothing.
fn broken_machines_file(tb: &Testbed, good: &str) {
    let file = tb.machines_file();
    std::fs::write(
        &file,
        good.replacen("(parallel-builds", "(paralel-builds", 1),
    )
    .unwrap();
    let line = good[..good.find("(parallel-builds").unwrap()]
        .lines()
        .count();
    let located = format!("{}:{line}:", file.display());

    let out = build(tb, "scm-embedded", 1, &[]);
    let log = stderr(&out);
    eprintln!("--- broken machines.scm, embedded:\n{log}---");
    assert!(out.status.success(), "{log}");
    assert!(all_local(&log), "{log}");
    assert!(
        log.contains("ferry: warning: no build machines, building here: "),
        "{log}"
    );
    assert!(log.contains(&located), "{located} in {log}");
    assert!(log.contains("unknown field paralel-builds"), "{log}");

    let daemon = common::MasterDaemon::start_with(tb, &["--offload-max-wait", "2"]);
    let out = build(tb, "scm-daemon", 2, &[]);
    let log = stderr(&out);
    eprintln!("--- broken machines.scm, through a daemon:\n{log}---");
    assert!(out.status.success(), "{log}");
    assert!(all_local(&log), "{log}");
    assert_eq!(
        count(&log, "no build machines, building here: "),
        1,
        "{log}"
    );
    assert!(log.contains(&located), "{located} in {log}");
    let daemon_log =
        std::fs::read_to_string(tb.dir().parent().unwrap().join("master-daemon.log")).unwrap();
    assert!(daemon_log.contains("no build machines: "), "{daemon_log}");
    for l in daemon_log.lines().filter(|l| l.contains("machines")) {
        eprintln!("daemon log: {l}");
    }
    assert!(!daemon_log.contains("keeping the previous"), "{daemon_log}");

    // -j 0: the error says why there are no machines.
    let out = build(tb, "scm-j0", 1, &["-j", "0"]);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("there are no build machines: "), "{log}");
    assert!(log.contains(&located), "{located} in {log}");

    // Fixed: the next reload clears the error.
    std::fs::write(&file, good).unwrap();
    let out = ok(&mut build_cmd(
        tb,
        "scm-fixed",
        &independent("scm-fixed", 1, "true;", "", ""),
        &[],
    ));
    let log = stderr(&out);
    assert!(!log.contains("warning"), "{log}");
    assert!(
        machines_used(&log).iter().all(|m| m != "localhost"),
        "{log}"
    );
    // Broken again: the daemon keeps the machines it has, and says so.
    std::fs::write(
        &file,
        good.replacen("(parallel-builds", "(paralel-builds", 1),
    )
    .unwrap();
    let out = ok(&mut build_cmd(
        tb,
        "scm-kept",
        &independent("scm-kept", 1, "true;", "", ""),
        &[],
    ));
    let log = stderr(&out);
    eprintln!("--- broken again, through the same daemon:\n{log}---");
    assert!(log.contains(&format!("ferry: warning: {located}")), "{log}");
    assert!(
        log.contains("using its last good version meanwhile: 2 build machine(s)"),
        "{log}"
    );
    assert!(
        machines_used(&log).iter().all(|m| m != "localhost"),
        "{log}"
    );
    std::fs::write(&file, good).unwrap();
    drop(daemon);
}

#[test]
fn offload_problems_reach_the_clients_terminal() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    let (h1, h2) = (&tb.hosts()[0], &tb.hosts()[1]);
    let good = std::fs::read_to_string(tb.machines_file()).unwrap();

    // (a) machines.scm does not evaluate.
    broken_machines_file(&tb, &good);

    // A long --offload-max-wait: machines only a person can fix are not
    // waited for (d), whatever the bound.
    let _daemon = common::MasterDaemon::start_with(&tb, &["--offload-max-wait", "600"]);
    // (b) + (e): every host key wrong (each machine given the other's):
    // each machine named once, with "host key", over a build of several
    // derivations; then the fallback, said once; all built here.
    let (k1, k2) = (h1.host_key().to_string(), h2.host_key().to_string());
    let key_of = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let (k1, k2) = (key_of(&k1), key_of(&k2));
    edit_machine(&tb, h1, |m| m.replace(&k1, "KEY-OF-H2"));
    edit_machine(&tb, h2, |m| m.replace(&k2, &k1));
    edit_machine(&tb, h1, |m| m.replace("KEY-OF-H2", &k2));
    for round in ["hostkey-a", "hostkey-b"] {
        let out = build(&tb, round, 3, &[]);
        let log = stderr(&out);
        eprintln!("--- every host key wrong ({round}):\n{log}---");
        assert!(out.status.success(), "{log}");
        assert!(all_local(&log), "{log}");
        for h in [h1, h2] {
            let said = format!("ferry: warning: build machine {} skipped: ", h.address());
            // Once per machine and build (each build is told again).
            assert_eq!(count(&log, &said), 1, "{said} in {log}");
            assert!(
                log.lines()
                    .any(|l| l.starts_with(&said) && l.contains("host key")),
                "{log}"
            );
        }
        assert_eq!(
            count(
                &log,
                "ferry: warning: no build machine can take x86_64-linux builds now"
            ) + count(&log, "ferry: warning: no build machine could take"),
            1,
            "{log}"
        );
    }

    // (d): -j 0 with every machine unusable: fails, why per machine.
    let started = std::time::Instant::now();
    let out = build(&tb, "hostkey-j0", 2, &["-j", "0"]);
    let took = started.elapsed();
    let log = stderr(&out);
    assert!(
        took < std::time::Duration::from_secs(60),
        "-j 0 with every machine out until machines.scm changes waited {took:?}:\n{log}"
    );
    eprintln!("--- every host key wrong, -j 0:\n{log}---");
    assert!(!out.status.success(), "{log}");
    for h in [h1, h2] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{}: ", h.address())) && l.contains("host key")),
            "{log}"
        );
    }

    // (c) + (e): the keys right again, both daemons stopped: each machine
    // skipped once, named, over three derivations; built here.
    std::fs::write(tb.machines_file(), &good).unwrap();
    for h in [h1, h2] {
        h.kill_daemon().unwrap();
    }
    let out = build(&tb, "stopped", 3, &[]);
    let log = stderr(&out);
    eprintln!("--- both daemons stopped:\n{log}---");
    assert!(out.status.success(), "{log}");
    assert!(all_local(&log), "{log}");
    for h in [h1, h2] {
        let said = format!("ferry: warning: build machine {} skipped: ", h.address());
        assert_eq!(count(&log, &said), 1, "{said} in {log}");
    }
}
