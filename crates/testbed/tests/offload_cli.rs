//! `ferry offload test` and `ferry offload status` on the testbed: every
//! machine good; then one machine each with a wrong host key, without
//! `ferry` in its PATH, with its daemon down, with an ACL lacking the
//! master's key, and stopped (hung), each reported with what to do while
//! the others pass; `status --json` agrees with reality.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;
use ferry_testbed::Testbed;

use common::{master_config, run};
use ferry_test_support::testbed as common;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ferry(tb: &Testbed) -> Command {
    tb.master_command(ferry_bin().to_str().unwrap())
}

/// The line of `ferry offload test`'s stderr about `machine`.
fn line_of<'a>(out: &'a str, machine: &str) -> &'a str {
    let start = out
        .find(&format!("{machine}: "))
        .unwrap_or_else(|| panic!("no line for {machine} in:\n{out}"));
    let rest = &out[start..];
    // A message may go on over an indented second line.
    let end = rest
        .match_indices('\n')
        .find(|(i, _)| !rest[i + 1..].starts_with("  "))
        .map_or(rest.len(), |(i, _)| i);
    &rest[..end]
}

#[test]
fn test_and_status_report_each_fault_while_the_others_pass() {
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(4, 1, "256M");
    let hosts = tb.hosts();
    let addr = |i: usize| hosts[i].address().to_string();

    // All good: exit 0, every machine ok, fast.
    let started = std::time::Instant::now();
    let out = run(ferry(&tb).args(["offload", "test"]));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for i in 0..4 {
        assert!(line_of(&all, &addr(i)).contains(": ok"), "{all}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Faults, one a machine.
    // h1: machines.scm has h2's host key for it.
    let file = master_config(&tb).join("machines.scm");
    let good = std::fs::read_to_string(&file).unwrap();
    common::swap_first_host_key(&tb);
    // h2: `ferry` not in the PATH of its SSH sessions (its sshd told to
    // re-read a config whose PATH lacks DIR/bin; SIGHUP makes it re-exec).
    let host2 = hosts[1].state_dir().parent().unwrap().to_path_buf();
    let sshd_config = host2.join("sshd_config");
    let cfg = std::fs::read_to_string(&sshd_config).unwrap();
    let bin = format!("PATH={}:", tb.dir().join("bin").display());
    assert!(cfg.contains(&bin), "{cfg}");
    let sshd_pid: i32 = std::fs::read_to_string(host2.join("sshd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hup = |config: &str| {
        std::fs::write(&sshd_config, config).unwrap();
        assert!(Command::new("kill")
            .args(["-HUP", &sshd_pid.to_string()])
            .status()
            .unwrap()
            .success());
        // Until it listens again.
        let addr: std::net::SocketAddr = format!("{}:22", addr(1)).parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        std::thread::sleep(Duration::from_millis(100));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not come back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    hup(&cfg.replace(&bin, "PATH="));
    // h3: its daemon down.
    hosts[2].kill_daemon().unwrap();
    // h4: its ACL lacks the master's key.
    common::set_master_trusted(&tb, &hosts[3], false);

    let out = run(ferry(&tb).args(["offload", "test"]));
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    let h2 = line_of(&report, &addr(1));
    assert!(h2.contains("not in the PATH"), "{h2}");
    let h1 = line_of(&report, &addr(0));
    assert!(h1.contains("host key") && h1.contains("SHA256:"), "{h1}");
    let h3 = line_of(&report, &addr(2));
    assert!(h3.contains("ferry daemon runs there"), "{h3}");
    let h4 = line_of(&report, &addr(3));
    assert!(
        h4.contains("ferry archive --authorize") && h4.contains("on "),
        "{h4}"
    );
    assert!(report.contains("4 machine(s) tested"), "{report}");

    // Heal all; h2 hung: reported after the timeout while the others pass.
    std::fs::write(&file, &good).unwrap();
    hup(&cfg);
    hosts[2].start_daemon().unwrap();
    common::set_master_trusted(&tb, &hosts[3], true);
    hosts[1].stop().unwrap();
    let out = run(ferry(&tb).args(["offload", "test"]));
    hosts[1].cont().unwrap();
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        line_of(&report, &addr(1)).contains("did not answer"),
        "{report}"
    );
    for i in [0, 2, 3] {
        assert!(line_of(&report, &addr(i)).contains(": ok"), "{report}");
    }

    // status --json agrees with reality: the load we set, reachability.
    hosts[2].set_load(0.9).unwrap();
    let out = run(ferry(&tb).args(["offload", "status", "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["state"], "up", "{r}");
    }
    let load = rows[2]["load"].as_f64().unwrap();
    assert!((load - 0.9).abs() < 0.01, "{load}");
    assert_eq!(
        rows[2]["storeDir"],
        tb.dir().join("store").to_str().unwrap()
    );
    // The table too.
    let out = run(ferry(&tb).args(["offload", "status"]));
    assert!(text(&out).contains("0.90"), "{}", text(&out));

    // With a master daemon running an offloaded build, status shows the
    // daemon's slots in use.
    std::fs::write(
        &file,
        good.replace("(speed ", "(features (list \"remote\")) (speed "),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let daemon = common::MasterDaemon::start(&tb);
    let build_file = tmp.path().join("slow.scm");
    std::fs::write(
        &build_file,
        r#"(derivation "slow" #:builder "/bin/sh"
             #:env '(("requiredSystemFeatures" . "remote"))
             #:args (quote ("-c" "/bin/sleep 3; echo done > $out")))"#,
    )
    .unwrap();
    let mut build = ferry(&tb)
        .arg("build")
        .arg(&build_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = false;
    while std::time::Instant::now() < deadline + Duration::from_secs(5) && !seen {
        let out = run(ferry(&tb).args(["offload", "status", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        seen = v.as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["source"] == "daemon" && r["inUse"] == 1)
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(build.wait().unwrap().success());
    drop(daemon);
    assert!(seen, "status never showed the daemon's slot in use");
}

/// OpenSSH's rule on private keys, everywhere the key is used: a key that
/// group or others may read is refused with the chmod to run, by `offload
/// test`, `offload status` and a build (the daemon's engine).
#[test]
fn a_private_key_others_may_read_is_refused_with_the_fix_named() {
    use std::os::unix::fs::PermissionsExt;
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(1, 1, "256M");
    let machines = std::fs::read_to_string(tb.machines_file()).unwrap();
    let key = machines
        .lines()
        .find_map(|l| l.trim().strip_prefix("(private-key \""))
        .map(|k| k.trim_end_matches("\")").to_string())
        .expect("a private-key field");
    // The testbed's own keys are private (ssh-keygen makes them so).
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{key}");
    let fix = format!("chmod 600 {key}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = run(ferry(&tb).args(["offload", "test"]));
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(&fix) && all.contains("(mode 0644)"), "{all}");

    let out = run(ferry(&tb).args(["offload", "status"]));
    let all = text(&out);
    assert!(all.contains("unusable, ") && all.contains(&fix), "{all}");

    let build_file = tmp.path().join("remote-only.scm");
    std::fs::write(
        &build_file,
        r#"(derivation "remote-only" #:builder "/bin/sh"
             #:env '(("requiredSystemFeatures" . "remote"))
             #:args (quote ("-c" "echo done > $out")))"#,
    )
    .unwrap();
    let mut m = machines.replace(
        "(parallel-builds",
        "(features (list \"remote\"))\n  (parallel-builds",
    );
    m.push('\n');
    std::fs::write(tb.machines_file(), m).unwrap();
    let out = run(ferry(&tb)
        .args(["build", "--offload-max-wait", "2"])
        .arg(&build_file));
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(&fix), "{all}");

    // Through a daemon: the machine is kept out until the key changes, and
    // `offload status` says so.
    let daemon = common::MasterDaemon::start_with(&tb, &["--offload-max-wait", "2"]);
    let out = run(ferry(&tb).arg("build").arg(&build_file));
    let all = text(&out);
    assert!(!out.status.success() && all.contains(&fix), "{all}");
    let out = run(ferry(&tb).args(["offload", "status"]));
    let all = text(&out);
    assert!(
        all.contains("until machines.scm, the ACL or its key changes"),
        "{all}"
    );

    // Fixed as told: the machine is used, by `offload test` and by the
    // daemon without a restart.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(ferry(&tb).args(["offload", "test"]));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(ferry(&tb).arg("build").arg(&build_file));
    assert!(out.status.success(), "{}", text(&out));
    drop(daemon);
}
