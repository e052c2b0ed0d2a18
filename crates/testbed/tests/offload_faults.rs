//! Offload placement and faults on the testbed: required features and
//! systems, parallel-builds across clients, overloaded and full machines
//! passed over, a machine hung or its daemon killed mid-build, every machine
//! down, and only missing inputs sent. Each host reports its own load
//! through the testbed's FERRY_LOADAVG_FILE hook, so overload-threshold
//! keeps its default here.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use ferry_test_support::testbed::prerequisites;
use ferry_testbed::Host;

use common::{
    build_cmd, count_marked, edit_machine, independent, machines_used, ok, output_within, run,
    spawn, stderr, verify_stores, wait_for,
};
use ferry_test_support::testbed as common;

/// Each host's store: above the 100 MiB a machine must have free, so that
/// `fill` is what makes it low.
const STORE: &str = "256M";

/// (a) + (b): a derivation requiring "kvm" goes only to the machine listing
/// it; an aarch64-linux one only to the machine listing that system, and
/// fails with the machines and why when none does.
#[test]
fn features_and_systems_pick_the_machine() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    let (h1, h2) = (&tb.hosts()[0], &tb.hosts()[1]);
    edit_machine(&tb, h2, |m| {
        m.replace(
            "(parallel-builds",
            "(features (list \"kvm\"))\n  (parallel-builds",
        )
    });
    edit_machine(&tb, h1, |m| {
        m.replace(
            "(systems (list \"x86_64-linux\"",
            "(systems (list \"x86_64-linux\" \"aarch64-linux\"",
        )
    });

    let kvm = independent(
        "kvm",
        3,
        "true;",
        "(\"requiredSystemFeatures\" . \"kvm\")",
        "",
    );
    let arm = independent("arm", 2, "true;", "", "#:system \"aarch64-linux\"");
    let out = ok(&mut build_cmd(&tb, "kvm", &kvm, &["-j", "2"]));
    let log = stderr(&out);
    let used = machines_used(&log);
    assert_eq!(used.len(), 3, "{log}");
    assert!(used.iter().all(|m| m == h2.address()), "{log}");

    let out = ok(&mut build_cmd(&tb, "arm", &arm, &["-j", "2"]));
    let log = stderr(&out);
    let used = machines_used(&log);
    assert_eq!(used.len(), 2, "{log}");
    assert!(used.iter().all(|m| m == h1.address()), "{log}");

    // No machine builds for aarch64 any more, nor does this one: a clear
    // error naming each machine and why.
    edit_machine(&tb, h1, |m| m.replace(" \"aarch64-linux\"", ""));
    let arm2 = independent("arm2", 1, "true;", "", "#:system \"aarch64-linux\"");
    let out = run(&mut build_cmd(&tb, "arm2", &arm2, &["-j", "2"]));
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("needs an aarch64-linux machine"), "{log}");
    for h in [h1, h2] {
        assert!(
            log.contains(&format!("{}: builds for x86_64-linux only", h.address())),
            "{log}"
        );
    }
    verify_stores(&tb);
}

/// (c): never more builds at once on a machine than its parallel-builds,
/// across two clients of one master daemon, even though each host's
/// daemon would run two.
#[test]
fn parallel_builds_hold_across_clients() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 2, STORE);
    for h in tb.hosts() {
        edit_machine(&tb, h, |m| {
            m.replace("(parallel-builds 2)", "(parallel-builds 1)")
        });
    }
    let _daemon = common::MasterDaemon::start(&tb);

    let marker = "slotmark";
    let script = format!("sleep 1; : {marker};");
    let mut clients: Vec<Child> = ["a", "b"]
        .iter()
        .map(|n| {
            spawn(&mut build_cmd(
                &tb,
                n,
                &independent(n, 3, &script, "", ""),
                &[],
            ))
        })
        .collect();
    let mut most: HashMap<String, usize> = HashMap::new();
    let start = Instant::now();
    while clients.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if start.elapsed() > Duration::from_secs(40) {
            for c in &mut clients {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("the builds did not finish within 40 s");
        }
        for h in tb.hosts() {
            let n = count_marked(h, marker);
            let e = most.entry(h.name().to_string()).or_default();
            *e = (*e).max(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = String::new();
    for c in clients {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        logs.push_str(&stderr(&out));
    }
    let used = machines_used(&logs);
    assert_eq!(used.len(), 6, "{logs}");
    assert!(
        used.iter().any(|m| m != "localhost"),
        "nothing offloaded:\n{logs}"
    );
    // The scan sees the builders (else the bound below proves nothing).
    assert!(
        most.values().any(|&n| n >= 1),
        "no builder seen on any host:\n{logs}"
    );
    for h in tb.hosts() {
        let n = most.get(h.name()).copied().unwrap_or(0);
        assert!(
            n <= 1,
            "{} ran {n} builds at once with parallel-builds 1:\n{logs}",
            h.name()
        );
    }
}

/// (d): an overloaded machine and one whose store is full are passed over.
#[test]
fn overloaded_and_full_machines_are_passed_over() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(3, 2, STORE);
    let (h1, h2, h3) = (&tb.hosts()[0], &tb.hosts()[1], &tb.hosts()[2]);
    h1.set_load(0.99).unwrap();
    h2.fill().unwrap();
    let out = ok(&mut build_cmd(
        &tb,
        "d",
        &independent("d", 4, "true;", "", ""),
        &["-j", "1"],
    ));
    let log = stderr(&out);
    let used = machines_used(&log);
    assert_eq!(used.len(), 4, "{log}");
    assert!(used.iter().any(|m| m == h3.address()), "{log}");
    assert!(
        !used.iter().any(|m| m == h1.address() || m == h2.address()),
        "built on an overloaded or full machine:\n{log}"
    );
    // And the client is told, once per machine.
    for (h, why) in [(h1, "normalized load"), (h2, "MiB free in its store")] {
        let said = format!("ferry: warning: build machine {} skipped: ", h.address());
        assert_eq!(log.matches(&said).count(), 1, "{said} in {log}");
        assert!(
            log.lines().any(|l| l.starts_with(&said) && l.contains(why)),
            "{log}"
        );
    }
    // Back to normal: h1 takes builds again (h3 made busy).
    h3.set_load(0.99).unwrap();
    h1.set_load(0.0).unwrap();
    h2.unfill().unwrap();
    let out = ok(&mut build_cmd(
        &tb,
        "d2",
        &independent("d2", 2, "true;", "", ""),
        &["-j", "1"],
    ));
    let log = stderr(&out);
    assert!(
        !machines_used(&log).iter().any(|m| m == h3.address()),
        "{log}"
    );
    assert!(
        machines_used(&log)
            .iter()
            .any(|m| m == h1.address() || m == h2.address()),
        "{log}"
    );
}

/// Start a build of one `sleep 4` derivation, wait until it runs on a
/// host, apply `fault` to that host; the build must complete elsewhere
/// with the right output within `bound`.
fn fault_mid_build(tag: &str, fault: impl FnOnce(&Host), bound: Duration) {
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    let marker = format!("{tag}mark");
    let scm = independent(tag, 1, &format!("sleep 4; : {marker};"), "", "");
    let child = spawn(&mut build_cmd(&tb, tag, &scm, &["-j", "1"]));
    let mut on = None;
    wait_for(
        "the build to start on a host",
        Duration::from_secs(20),
        || {
            on = tb.hosts().iter().find(|h| count_marked(h, &marker) > 0);
            on.is_some()
        },
    );
    let host = on.unwrap();
    let t0 = Instant::now();
    fault(host);
    let out = output_within(child, bound);
    let took = t0.elapsed();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let used = machines_used(&log);
    assert_eq!(used.len(), 2, "{log}");
    assert_eq!(used[0], host.address(), "{log}");
    assert_ne!(used[1], host.address(), "{log}");
    assert!(log.contains("building elsewhere"), "{log}");
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{tag}-0\n")
    );
    eprintln!("{tag}: done {took:?} after the fault, on {}", used[1]);
    // Bring the host back before checking its store.
    let _ = host.cont();
    if host.current().unwrap().daemon.is_none() {
        host.start_daemon().unwrap();
    }
    verify_stores(&tb);
}

/// (e): a machine hung (SIGSTOP) mid-build: noticed by the SSH keep-alives
/// (3 s x 3), the derivation completes elsewhere.
#[test]
fn a_hung_machine_mid_build_is_left_for_another() {
    if !prerequisites() {
        return;
    }
    fault_mid_build("hung", |h| drop(h.stop().unwrap()), Duration::from_secs(30));
}

/// (e): a machine whose daemon is killed mid-build: the derivation
/// completes elsewhere at once.
#[test]
fn a_killed_daemon_mid_build_is_left_for_another() {
    if !prerequisites() {
        return;
    }
    fault_mid_build(
        "killed",
        |h| h.kill_daemon().unwrap(),
        Duration::from_secs(15),
    );
}

/// (f): every machine down (daemons killed, then links cut): the build
/// happens here, without waiting out --offload-max-wait, and succeeds.
#[test]
fn all_machines_down_builds_here() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, STORE);
    for h in tb.hosts() {
        h.kill_daemon().unwrap();
    }
    let t0 = Instant::now();
    let out = output_within(
        spawn(&mut build_cmd(
            &tb,
            "f",
            &independent("f", 2, "true;", "", ""),
            &["-j", "1", "--offload-max-wait", "60"],
        )),
        Duration::from_secs(20),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        machines_used(&log).iter().all(|m| m == "localhost"),
        "{log}"
    );
    let killed = t0.elapsed();

    for h in tb.hosts() {
        h.start_daemon().unwrap();
        h.cut().unwrap();
    }
    let t0 = Instant::now();
    let out = output_within(
        spawn(&mut build_cmd(
            &tb,
            "f2",
            &independent("f2", 2, "true;", "", ""),
            &["-j", "1", "--offload-max-wait", "60"],
        )),
        Duration::from_secs(25),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        machines_used(&log).iter().all(|m| m == "localhost"),
        "{log}"
    );
    eprintln!(
        "daemons killed: built here in {killed:?}; links cut: in {:?}",
        t0.elapsed()
    );
    // The connect timeout (10 s), once for both machines (measured at once).
    assert!(t0.elapsed() < Duration::from_secs(18), "{log}");
    for h in tb.hosts() {
        h.heal().unwrap();
    }
}

/// (g): only the inputs the machine lacks are sent.
#[test]
fn only_missing_inputs_are_sent() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(1, 1, STORE);
    let dir = tb.dir().parent().unwrap().join("inputs");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..4 {
        std::fs::write(dir.join(format!("in{i}.txt")), format!("input {i}\n")).unwrap();
    }
    let scm = |name: &str| {
        let files: Vec<String> = (0..4)
            .map(|i| {
                format!(
                    "(local-file \"{}\")",
                    dir.join(format!("in{i}.txt")).display()
                )
            })
            .collect();
        format!(
            "(derivation \"{name}\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\"))\n  #:args (list \"-c\" (string-append \"cat \" {} \" > $out\")))\n",
            files.join(" \" \" ")
        )
    };
    let copied = |log: &str| -> usize {
        log.lines()
            .filter_map(|l| l.split("ferry: copying ").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<usize>().ok())
            .sum()
    };
    let h1 = &tb.hosts()[0];
    let out = ok(&mut build_cmd(&tb, "g1", &scm("g-one"), &["-j", "1"]));
    let log1 = stderr(&out);
    assert_eq!(
        machines_used(&log1),
        vec![h1.address().to_string()],
        "{log1}"
    );
    let out = ok(&mut build_cmd(&tb, "g2", &scm("g-two"), &["-j", "1"]));
    let log2 = stderr(&out);
    assert_eq!(
        machines_used(&log2),
        vec![h1.address().to_string()],
        "{log2}"
    );
    // First: the .drv and the 4 sources; second: the .drv only.
    assert_eq!(copied(&log1), 5, "{log1}");
    assert_eq!(copied(&log2), 1, "{log2}");
    verify_stores(&tb);
}

/// --offload-max-wait bounds how long the machines are unusable, not how
/// long a busy machine takes to free a slot: three 2-second builds for one
/// slot, with a 1-second bound, all complete there.
#[test]
fn a_busy_machine_is_waited_for_beyond_offload_max_wait() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(1, 1, STORE);
    let h1 = &tb.hosts()[0];
    edit_machine(&tb, h1, |m| {
        m.replace(
            "(parallel-builds",
            "(features (list \"remote\"))\n  (parallel-builds",
        )
    });
    let scm = independent(
        "busy",
        3,
        "sleep 2;",
        "(\"requiredSystemFeatures\" . \"remote\")",
        "",
    );
    let t0 = Instant::now();
    let out = output_within(
        spawn(&mut build_cmd(
            &tb,
            "busy",
            &scm,
            &["-j", "3", "--offload-max-wait", "1"],
        )),
        Duration::from_secs(40),
    );
    let log = stderr(&out);
    eprintln!("{:?}\n{log}", t0.elapsed());
    assert!(out.status.success(), "{log}");
    let used = machines_used(&log);
    assert_eq!(used.len(), 3, "{log}");
    assert!(used.iter().all(|m| m == h1.address()), "{log}");
}
