//! `ferry daemon` and `ferry build` as real processes, building: many
//! clients on overlapping derivations, a client or the daemon killed
//! mid-build, sandbox containment, failing, silent and long builders,
//! `--keep-going`. Hostile bytes on the socket, embedded mode and a full
//! disk are in daemon_edges.rs; the harness is ferry-test-support's
//! `daemon` module.
//!
//! Every wait is bounded; every daemon is killed by a guard (its log is
//! printed when the test fails); every store lives in a temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ferry_test_support::daemon::*;
use ferry_test_support::{prerequisites, processes_with, run_timeout, wait_no_processes, Rng};

// ---------------------------------------------------------------------------
// 1. Many clients, overlapping derivations: each built once
// ---------------------------------------------------------------------------

const LAYERS: usize = 4;
const WIDTH: usize = 5;

fn node_name(layer: usize, i: usize) -> String {
    format!("n{layer}x{i}")
}

/// A DAG of 20 derivations: layer l node i uses nodes i and i+1 (mod
/// width) of layer l-1. Each builder appends its name to `counter`, sleeps
/// a little (so that clients overlap), and writes its name and its inputs.
fn dag_defs(counter: &Path) -> String {
    let mut s = String::new();
    for l in 0..LAYERS {
        for i in 0..WIDTH {
            let name = node_name(l, i);
            let mut script = format!("echo {name} >> \"$COUNTER\"; sleep 0.2; {{ echo {name}; ");
            let mut inputs = String::new();
            if l > 0 {
                for j in [i, (i + 1) % WIDTH] {
                    let dep = node_name(l - 1, j);
                    inputs.push_str(&format!(" \"cat \" (derivation-output {dep}) \"; \""));
                }
            }
            script.push_str("CATS} > \"$out\"");
            // derivation-output must be evaluated: build the script with
            // string-append around the input paths.
            let (before, after) = script.split_once("CATS").unwrap();
            s.push_str(&format!(
                "(define {name} (derivation {} #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) #:args (list \"-c\" (string-append {}{inputs} {}))))\n",
                q(&name),
                q(counter.to_str().unwrap()),
                q(before),
                q(after)
            ));
        }
    }
    s
}

#[test]
fn fifty_clients_overlapping_dag_each_derivation_built_once() {
    let env = Env::new();
    let counter = counter_file(&env);
    let mut d = env.daemon(&["--no-sandbox", "--max-jobs", "6"]);
    let defs = dag_defs(&counter);
    let all: Vec<String> = (0..LAYERS)
        .flat_map(|l| (0..WIDTH).map(move |i| node_name(l, i)))
        .collect();
    let mut rng = Rng::new(7);
    let mut wants = Vec::new();
    for k in 0..50 {
        // Every derivation is asked for by someone; two more at random.
        let mut want = vec![all[k % all.len()].clone()];
        for _ in 0..2 {
            let n = rng.pick(&all).clone();
            if !want.contains(&n) {
                want.push(n);
            }
        }
        let file = env.write(
            &format!("client-{k}.scm"),
            &format!("{defs}(list {})\n", want.join(" ")),
        );
        wants.push((file, want));
    }
    let barrier = Arc::new(Barrier::new(wants.len()));
    let started = Instant::now();
    let handles: Vec<_> = wants
        .iter()
        .map(|(file, want)| {
            let mut cmd = env.ferry(&["build", file.to_str().unwrap()]);
            let barrier = barrier.clone();
            let want = want.clone();
            thread::spawn(move || {
                barrier.wait();
                (want, run_timeout(&mut cmd, 120))
            })
        })
        .collect();
    let results: Vec<(Vec<String>, Output)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    let mut path_of: BTreeMap<String, String> = BTreeMap::new();
    for (k, (want, out)) in results.iter().enumerate() {
        if !out.status.success() {
            failures.push(format!(
                "client {k} exited with {}:\n{}",
                out.status,
                text(&out.stderr)
            ));
            continue;
        }
        let printed = lines(&out.stdout);
        if printed.len() != want.len() {
            failures.push(format!(
                "client {k} asked for {want:?} and printed {printed:?}"
            ));
            continue;
        }
        for (name, path) in want.iter().zip(&printed) {
            if !path.ends_with(&format!("-{name}"))
                || !path.starts_with(env.store.to_str().unwrap())
            {
                failures.push(format!("client {k}: {path} is not an output of {name}"));
            }
            let content = fs::read_to_string(path).unwrap_or_default();
            if content.lines().next() != Some(name.as_str()) {
                failures.push(format!("client {k}: {path} holds {content:?}"));
            }
            if let Some(prev) = path_of.insert(name.clone(), path.clone()) {
                if prev != *path {
                    failures.push(format!("{name} printed as {prev} and as {path}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 clients went wrong:\n{}{}",
        failures.len(),
        failures.join("\n"),
        d.log_text()
    );
    let c = counts(&counter);
    let wrong: Vec<_> = all
        .iter()
        .filter(|n| c.get(*n) != Some(&1))
        .map(|n| format!("{n}: built {} times", c.get(n).unwrap_or(&0)))
        .collect();
    assert!(
        wrong.is_empty() && c.len() == all.len(),
        "each derivation must be built exactly once: {wrong:?} (counts {c:?})"
    );
    // The deepest output holds its whole input chain.
    let top = fs::read_to_string(&path_of[&node_name(LAYERS - 1, 0)]).unwrap();
    assert!(top.contains(&node_name(0, 0)), "{top}");
    d.assert_alive();
    env.verify_clean(Some(&d));
    eprintln!("50 clients, 20 derivations: {elapsed:?}");
}

// ---------------------------------------------------------------------------
// 2. A client killed mid-build
// ---------------------------------------------------------------------------

/// A builder that prints "started", writes a partial output, and when
/// NIX_BUILD_CORES is 7 (`ferry build --cores 7`, not part of the
/// derivation) sleeps 30 s in a child process whose command line holds
/// `token`; then writes "complete".
fn slow_drv(name: &str, token: &str) -> String {
    sh_drv(
        name,
        &format!(
            "echo started; echo partial > \"$out\"; \
             if [ \"$NIX_BUILD_CORES\" = 7 ]; then /bin/sh -c 'sleep 30; :' {token}; fi; \
             echo complete > \"$out\""
        ),
        &[],
    )
}

#[test]
fn client_killed_mid_build_cancels_it_and_the_daemon_keeps_serving() {
    let env = Env::new();
    let token = format!("{}-client-kill", env.token());
    let mut d = env.daemon(&["--no-sandbox"]);
    let file = env.write("slow.scm", &slow_drv("slow", &token));
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);

    let mut client = Bg::spawn(&mut env.ferry(&["build", "--cores", "7", &drv]));
    client.wait_for("started", 30, &d);
    // The builder is running (its child sleeps).
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&token).is_empty() {
        assert!(Instant::now() < deadline, "the builder's child never ran");
        thread::sleep(Duration::from_millis(20));
    }
    client.kill9();
    client.wait(10);
    // The daemon notices that the client left and stops its build, the
    // builder's children included.
    wait_no_processes(&token, 10, "after the client was killed");
    d.assert_alive();
    assert!(
        !env.is_valid(&out),
        "the killed build's output {out} is registered"
    );
    env.verify_clean(Some(&d));

    // The daemon goes on serving: the same derivation now builds in full.
    let o = ok(
        run_timeout(&mut env.ferry(&["build", "--cores", "1", &drv]), 60),
        "build after the killed client",
    );
    assert_eq!(lines(&o.stdout), vec![out.clone()]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "complete\n");
    let hello = env.write("hello.scm", &sh_drv("after", "echo after > $out", &[]));
    ok(
        run_timeout(&mut env.ferry(&["build", hello.to_str().unwrap()]), 60),
        "another build",
    );
    d.assert_alive();
    env.verify_clean(Some(&d));
}

// ---------------------------------------------------------------------------
// 3. kill -9 of the daemon mid-build, then a restart
// ---------------------------------------------------------------------------

#[test]
fn daemon_killed_mid_build_restarts_cleanly_and_the_retry_succeeds() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    let token = format!("{}-daemon-kill", env.token());
    let mut d = env.daemon(&[]); // sandboxed, as root
    let file = env.write("slow.scm", &slow_drv("slow", &token));
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);

    let mut client = Bg::spawn(&mut env.ferry(&["build", "--cores", "7", &drv]));
    client.wait_for("started", 30, &d);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&token).is_empty() {
        assert!(Instant::now() < deadline, "the builder's child never ran");
        thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    let st = client.wait(20);
    assert!(
        !st.success(),
        "the client of a killed daemon must fail; stderr:\n{}",
        client.stderr()
    );
    // The sandbox's lifeline takes the build down with the daemon.
    wait_no_processes(&token, 10, "after the daemon was killed");
    assert!(!env.is_valid(&out), "{out} registered by a killed build");

    // A new daemon on the same store, state and socket. (Until it starts,
    // `ferry store verify` reports the dead daemon's sandbox tree.)
    let mut d2 = env.daemon(&[]);
    let left = env.store_entries(".ferry-chroot-");
    assert!(
        left.is_empty(),
        "sandbox trees of the killed daemon left in the store after a restart: {left:?}"
    );
    env.verify_clean(Some(&d2));
    let started = Instant::now();
    let o = run_timeout(&mut env.ferry(&["build", "--cores", "1", &drv]), 60);
    if !o.status.success() {
        panic!(
            "retry after the restart failed ({}):\n{}{}",
            o.status,
            text(&o.stderr),
            d2.log_text()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the retry took {:?}: a stale lock?",
        started.elapsed()
    );
    assert_eq!(lines(&o.stdout), vec![out.clone()]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "complete\n");
    assert!(env.is_valid(&out));
    d2.assert_alive();
    env.verify_clean(Some(&d2));
    let left = env.chroots_with_contents();
    assert!(left.is_empty(), "sandbox trees left: {left:?}");
}

// ---------------------------------------------------------------------------
// 4. Sandbox containment
// ---------------------------------------------------------------------------

#[test]
fn sandboxed_builder_cannot_reach_the_network_or_write_on_the_host() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    let token = env.token();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = env.daemon(&[]);

    let host_tmp = PathBuf::from(format!("/tmp/ferry-escape-{token}"));
    let host_etc = PathBuf::from(format!("/etc/ferry-escape-{token}"));
    let in_store = env.store.join(format!("escape-{token}"));
    let in_test_dir = env.path("escape-from-sandbox");
    let script = format!(
        "exec 2>&1; \
         if /bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo net=connected; else echo net=refused; fi; \
         for i in /sys/class/net/*; do [ -e \"$i\" ] && echo sysnet=${{i##*/}}; done; \
         tail -n +3 /proc/net/dev | while IFS=: read n rest; do echo netdev=$(echo $n); done; \
         for f in {} {} {} {}; do echo x > \"$f\" 2>/dev/null && echo wrote=$f; done; \
         echo id=$(id -u); true",
        host_tmp.display(),
        host_etc.display(),
        in_store.display(),
        in_test_dir.display(),
    );
    // The builder's report goes to its log and to $out.
    let script = format!("{{ {script}; }} | tee \"$out\"");
    let file = env.write("escape.scm", &sh_drv("escape", &script, &[]));
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    let report = text(&o.stderr);
    eprintln!("builder report:\n{report}");

    // Nothing reached the host's listener.
    match listener.accept() {
        Ok((_, peer)) => panic!("the sandboxed builder connected to the host from {peer}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    // Nothing was written on the host.
    for p in [&host_tmp, &host_etc, &in_store, &in_test_dir] {
        let exists = p.symlink_metadata().is_ok();
        let _ = fs::remove_file(p);
        assert!(
            !exists,
            "the sandboxed builder wrote {} on the host",
            p.display()
        );
    }
    assert!(env.chroots_with_contents().is_empty(), "sandbox tree left");
    // When the build ran, it saw only lo and could not connect.
    if o.status.success() {
        let out = lines(&o.stdout).pop().unwrap();
        let seen = fs::read_to_string(&out).unwrap();
        assert!(seen.contains("net=refused"), "{seen}");
        let ifaces: BTreeSet<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("netdev=").or(l.strip_prefix("sysnet=")))
            .collect();
        assert!(
            ifaces.iter().all(|i| *i == "lo"),
            "interfaces inside the sandbox: {ifaces:?}\n{seen}"
        );
        assert!(!seen.contains("id=0"), "the builder ran as root:\n{seen}");
    } else {
        eprintln!("the contained build failed (allowed): {report}");
    }
    drop(d);
}

// ---------------------------------------------------------------------------
// 5. A failing builder
// ---------------------------------------------------------------------------

#[test]
fn failing_builder_reports_drv_exit_code_and_log_tail() {
    let env = Env::new();
    let d = env.daemon(&["--no-sandbox"]);
    let file = env.write(
        "fail.scm",
        &sh_drv(
            "failing",
            "i=1; while [ $i -le 40 ]; do echo log-line-$i; i=$((i+1)); done; echo touched > $out; exit 1",
            &[],
        ),
    );
    let drv = env.add_drvs(&file).pop().unwrap();
    let out = env.out_of(&drv);
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(100), "stderr:\n{err}{}", d.log_text());
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
    let error_line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert!(
        error_line.contains(&drv) && error_line.contains("exit code 1"),
        "{error_line}"
    );
    // The tail of the log, after the error.
    let after = &err[err.find(error_line).unwrap()..];
    assert!(
        after.contains("log-line-40") && after.contains("log-line-30"),
        "no log tail after the error:\n{err}"
    );
    // The full log.
    let log = ok(
        run_timeout(&mut env.ferry(&["log", &drv]), 30),
        "ferry log (daemon)",
    );
    let want: Vec<String> = (1..=40).map(|i| format!("log-line-{i}")).collect();
    assert_eq!(lines(&log.stdout), want);
    // No output left, nothing registered.
    assert!(
        Path::new(&out).symlink_metadata().is_err(),
        "{out} exists after the failed build"
    );
    assert!(!env.is_valid(&out));
    env.verify_clean(Some(&d));
    // Without the daemon, the log is read from the state directory.
    drop(d);
    let log = ok(
        run_timeout(&mut env.ferry(&["log", &drv]), 30),
        "ferry log (embedded)",
    );
    assert_eq!(lines(&log.stdout), want);
}

// ---------------------------------------------------------------------------
// 6. --max-silent-time, --timeout, --keep-going
// ---------------------------------------------------------------------------

#[test]
fn silent_and_long_builders_are_killed_with_their_children() {
    let env = Env::new();
    let d = env.daemon(&["--no-sandbox"]);
    let token = env.token();
    let silent = env.write(
        "silent.scm",
        &sh_drv(
            "silent",
            &format!("echo going-quiet; /bin/sh -c 'sleep 60; :' {token}-silent & sleep 60; echo late > $out"),
            &[],
        ),
    );
    let chatty = env.write(
        "chatty.scm",
        &sh_drv(
            "chatty",
            &format!(
                "/bin/sh -c 'sleep 60; :' {token}-timeout & while :; do echo tick; sleep 0.2; done"
            ),
            &[],
        ),
    );
    let t = Instant::now();
    let o = run_timeout(
        &mut env.ferry(&["build", "--max-silent-time", "1", silent.to_str().unwrap()]),
        40,
    );
    let took = t.elapsed();
    let err = text(&o.stderr);
    // A timed-out build exits 101, as Nix's (`Worker::exitStatus`).
    assert_eq!(o.status.code(), Some(101), "{err}{}", d.log_text());
    assert!(
        err.contains("max-silent-time") && err.contains("killed") && err.contains("silent.drv"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    wait_no_processes(&format!("{token}-silent"), 10, "--max-silent-time");

    let t = Instant::now();
    let o = run_timeout(
        &mut env.ferry(&["build", "--timeout", "2", chatty.to_str().unwrap()]),
        40,
    );
    let took = t.elapsed();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(101), "{err}{}", d.log_text());
    assert!(
        err.contains("--timeout") && err.contains("killed") && err.contains("chatty.drv"),
        "{err}"
    );
    assert!(err.contains("tick"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    wait_no_processes(&format!("{token}-timeout"), 10, "--timeout");
}

#[test]
fn keep_going_builds_what_does_not_depend_on_the_failure() {
    let env = Env::new();
    let counter = counter_file(&env);
    let c = counter.to_str().unwrap();
    let d = env.daemon(&["--no-sandbox", "--max-jobs", "4"]);
    let count = |name: &str| format!("echo {name} >> \"$COUNTER\"; ");
    let file = env.write(
        "kg.scm",
        &format!(
            "(define bad {})\n(define g1 {})\n\
             (define g2 (derivation \"g2\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) \
               #:args (list \"-c\" (string-append {} \"cat \" (derivation-output g1) \" > $out\"))))\n\
             (define after-bad (derivation \"after-bad\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"COUNTER\" . {})) \
               #:args (list \"-c\" (string-append {} \"cat \" (derivation-output bad) \" > $out\"))))\n\
             (list bad g2 after-bad)\n",
            sh_drv("bad", &format!("{}echo bad-fails; exit 1", count("bad")), &[("COUNTER", c)]),
            sh_drv("g1", &format!("{}sleep 1.5; echo g1 > $out", count("g1")), &[("COUNTER", c)]),
            q(c),
            q(&count("g2")),
            q(c),
            q(&count("after-bad")),
        ),
    );
    let o = run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60);
    assert_eq!(
        o.status.code(),
        Some(100),
        "{}{}",
        text(&o.stderr),
        d.log_text()
    );
    let built = counts(&counter);
    assert!(
        built.contains_key("bad") && !built.contains_key("g2") && !built.contains_key("after-bad"),
        "without --keep-going g2 must not start after bad failed: {built:?}"
    );
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));

    let o = run_timeout(&mut env.ferry(&["build", "-k", file.to_str().unwrap()]), 60);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(100), "{err}{}", d.log_text());
    let built = counts(&counter);
    assert_eq!(built.get("g2"), Some(&1), "{built:?}\n{err}");
    assert_eq!(built.get("g1"), Some(&1), "{built:?}");
    assert!(!built.contains_key("after-bad"), "{built:?}");
    let printed = lines(&o.stdout);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert!(printed[0].ends_with("-g2"), "{printed:?}");
    assert_eq!(fs::read_to_string(&printed[0]).unwrap(), "g1\n");
    assert!(
        err.contains("bad-fails") && err.contains("after-bad"),
        "{err}"
    );
    env.verify_clean(Some(&d));
}
