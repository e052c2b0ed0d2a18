//! Running Ferry as a service: the systemd unit in
//! `etc/systemd/` verifies, and SIGTERM stops a daemon cleanly with a build
//! running: no new clients, the build cancelled within `--shutdown-grace`,
//! its processes gone, the socket removed and nothing left in the store
//! or TMPDIR.

use ferry_test_support as support;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::attacker::SharedDaemon;

#[test]
fn the_systemd_unit_verifies() {
    if !support::prerequisites(&["systemd-analyze"]) {
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/systemd/ferry-daemon.service");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/ferry daemon"),
        "{text}"
    );
    // `verify` wants the program to exist: point it at this build's.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ferry-daemon.service");
    let ferry = support::ferry_bin().to_str().unwrap();
    fs::write(&copy, text.replace("/usr/local/bin/ferry", ferry)).unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // Only what concerns our unit counts (the host's own units may warn).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("ferry-daemon.service"))
        .collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        o.status
    );
}

fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(token) && !cmd.contains("cargo") {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn sigterm_cancels_running_builds_and_leaves_nothing_behind() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    for (mode, extra) in [("sandbox", None), ("no-sandbox", Some("--no-sandbox"))] {
        let mut args = vec!["--shutdown-grace", "2"];
        args.extend(extra);
        let mut d = SharedDaemon::start(&args);
        let pid = d.pid();
        let token = format!("sleepy{}{}", std::process::id(), mode.len());
        // A quick build first, so that the daemon holds spare directories.
        let quick = d.add_drv(None, &format!("quick-{mode}"), "echo done > $out");
        assert!(d.build_as_root(&quick).status.success(), "{}", d.log());
        // One line when a build starts, one when it ends: what, where, how
        // long, how it ended.
        let log = d.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&quick)).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("build started") && l.contains("localhost"))
                && lines.iter().any(|l| l.contains("build finished")
                    && l.contains("secs=")
                    && l.contains("result=built")),
            "{mode}: no start and end lines for {quick}:\n{log}"
        );
        let slow = d.add_drv(
            None,
            &format!("slow-{mode}"),
            &format!("sh -c 'sleep 300; echo {token}' & wait; echo late > $out"),
        );
        let client = d
            .ferry(&["build", &slow])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes_with(&token).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the slow builder never ran{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let asked = Instant::now();
        let st = d
            .terminate(30)
            .unwrap_or_else(|| panic!("SIGTERM did not stop the daemon{}", d.log()));
        assert!(st.success(), "{mode}: exit status {st}{}", d.log());
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "{mode}: took {:?} to stop with --shutdown-grace 2",
            asked.elapsed()
        );
        let o = client.wait_with_output().unwrap();
        assert!(!o.status.success(), "{mode}: the cancelled build succeeded");
        let told = String::from_utf8_lossy(&o.stderr);
        assert!(
            told.contains("the daemon is stopping (SIGTERM)"),
            "{mode}: the client was not told: {told}"
        );
        assert!(!d.socket.exists(), "{mode}: the socket is left{}", d.log());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_with(&token).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{mode}: builder processes left: {:?}",
                processes_with(&token)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let in_store: Vec<String> = fs::read_dir(&d.store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.contains(&pid.to_string()))
            .collect();
        assert!(
            in_store.is_empty(),
            "{mode}: left in the store: {in_store:?}"
        );
        let in_tmp: Vec<String> = fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("ferry-build-{pid}-")))
            .collect();
        assert!(in_tmp.is_empty(), "{mode}: left in TMPDIR: {in_tmp:?}");
        // No daemon now: `ferry store verify` runs embedded.
        d.assert_verify_clean();
        assert!(
            d.log().contains("SIGTERM: stopping"),
            "{mode}: the log does not say why it stopped{}",
            d.log()
        );
    }
}

#[test]
fn the_daemons_limits_bound_every_client() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    let d = SharedDaemon::start(&["--max-silent-time", "1", "--timeout", "30"]);
    let silent = d.add_drv(None, "silent", "sleep 20; echo late > $out");
    // A client without a limit, and one asking for more: the daemon's holds.
    for args in [
        vec!["build", silent.as_str()],
        vec!["build", "--max-silent-time", "100", silent.as_str()],
    ] {
        let started = Instant::now();
        let o = support::run_timeout(&mut d.ferry(&args), 60);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: the silent build succeeded");
        assert!(err.contains("--max-silent-time"), "{args:?}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?}: took {:?}",
            started.elapsed()
        );
    }
    d.assert_verify_clean();
}

#[test]
fn max_jobs_0_builds_nothing_here_daemon_wide_or_per_request() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    // Per request (`ferry build -j 0`, Nix's --max-jobs 0), then daemon-wide.
    for (daemon_args, build_args) in [(vec![], vec!["-j", "0"]), (vec!["-j", "0"], vec![])] {
        let d = SharedDaemon::start(&daemon_args);
        let drv = d.add_drv(None, "nowhere", "echo built > $out");
        let mut args = vec!["build"];
        args.extend(&build_args);
        args.push(&drv);
        let o = support::run_timeout(&mut d.ferry(&args), 60);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{daemon_args:?} {build_args:?}: built here"
        );
        assert!(
            err.contains("max-jobs = 0") && err.contains("no build machine"),
            "{daemon_args:?} {build_args:?}: {err}"
        );
        assert!(!d.log().contains("build started"), "{}", d.log());
        if daemon_args.is_empty() {
            // Without -j 0 the same daemon builds it.
            assert!(d.build_as_root(&drv).status.success(), "{}", d.log());
        }
    }
}

#[test]
fn ferry_conf_settings_take_effect_and_bad_lines_are_named() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    let attacker = support::attacker::User::attacker();
    let conf = "# a farm's master\nmax-log-size = 2K\nallowed-users = root\n\
                system-features = kvm big-parallel\nmax-silent-time = 30\nmin-free = 1K\n";
    let d = SharedDaemon::start_with_conf(conf, &[]);
    // min-free: automatic collection is on (1 KiB: it never triggers here).
    assert!(d.log().contains("auto_gc_min_free_mib=0"), "{}", d.log());
    // max-log-size: a chatty build fails with Nix's message.
    let chatty = d.add_drv(
        None,
        "chatty",
        "i=0; while [ $i -lt 1000 ]; do echo line $i; i=$((i+1)); done; echo > $out",
    );
    let o = d.build_as_root(&chatty);
    assert!(
        !o.status.success(),
        "a 2K log limit let a bigger log through"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("log limit exceeded"));
    // system-features: a derivation requiring kvm builds here.
    let file = d.root.join("kvm.scm");
    fs::write(
        &file,
        "(derivation \"needs-kvm\" #:builder \"/bin/sh\" \
         #:env '((\"requiredSystemFeatures\" . \"kvm\")) #:args (list \"-c\" \"echo > $out\"))",
    )
    .unwrap();
    let o = support::run_timeout(&mut d.ferry(&["build", file.to_str().unwrap()]), 60);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    // allowed-users = root: another user is refused.
    let o = support::run_timeout(&mut d.ferry_as(&attacker, &["build", &chatty]), 60);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("allowed"), "{err}");
    // --print-config says where each value came from; a flag beats the file.
    let o = support::run_timeout(
        &mut d.ferry(&["daemon", "--print-config", "--max-log-size", "0"]),
        30,
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("max-log-size = 0") && shown.contains("# command line"),
        "{shown}"
    );
    assert!(
        shown.contains("# this machine builds for: ") && shown.contains("kvm big-parallel)"),
        "{shown}"
    );
    assert!(
        shown.contains("system-features = kvm big-parallel") && shown.contains("ferry.conf:4"),
        "{shown}"
    );
    drop(d);

    // max-jobs = 0 from the file: nothing built here.
    let d = SharedDaemon::start_with_conf("max-jobs = 0\n", &[]);
    let drv = d.add_drv(None, "nowhere", "echo > $out");
    let o = d.build_as_root(&drv);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("max-jobs = 0"));
    drop(d);

    // A bad line: file, line, setting, did-you-mean; the daemon does not start.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ferry.conf"), "\nmax-job = 4\n").unwrap();
    let o = std::process::Command::new(support::ferry_bin())
        .args(["daemon", "--print-config"])
        .env("FERRY_CONFIG_DIR", dir.path())
        .env("FERRY_STATE_DIR", dir.path().join("state"))
        .env("FERRY_STORE_DIR", dir.path().join("store"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("ferry.conf:2: unknown setting `max-job`; did you mean `max-jobs`?"),
        "{err}"
    );
}
