//! `ferry offload status` tells the truth: a
//! machine with a wrong host key is `unusable` with that kind, a full one
//! `full`, a host stopped seconds earlier `down` once the daemon's attempt
//! fails, every state with its age; a user who cannot read the SSH key
//! gets the root daemon's view; `--watch` on a terminal redraws in place,
//! fits 80 columns, survives a broken machines.scm and ends on `q` with
//! the terminal restored.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;
use ferry_testbed::Testbed;

use common::run;
use ferry_test_support::testbed as common;

fn ferry(tb: &Testbed) -> Command {
    tb.master_command(ferry_bin().to_str().unwrap())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `offload status --json` of `cmd`, by machine name.
fn json_rows(cmd: &mut Command) -> Vec<serde_json::Value> {
    let out = run(cmd.args(["offload", "status", "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v.as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [serde_json::Value], machine: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["machine"] == machine)
        .unwrap_or_else(|| panic!("no {machine} in {rows:?}"))
}

/// The table line of `machine`.
fn line<'a>(table: &'a str, machine: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{machine} ")))
        .unwrap_or_else(|| panic!("no line for {machine} in:\n{table}"))
}

/// The unprivileged user of the security tests, created if missing:
/// (uid, gid).
fn attacker() -> (u32, u32) {
    let user = ferry_test_support::attacker::User::attacker();
    (user.uid, user.gid)
}

#[test]
fn status_states_come_from_the_last_attempt_with_their_age() {
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(3, 1, "256M");
    // Others may reach the testbed (the attacker runs ferry on it).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hosts = tb.hosts();
    let (h1, h2, h3) = (
        hosts[0].address().to_string(),
        hosts[1].address().to_string(),
        hosts[2].address().to_string(),
    );
    common::swap_first_host_key(&tb);
    hosts[2].fill().unwrap();

    // No daemon: probed directly.
    let rows = json_rows(&mut ferry(&tb));
    let r1 = row(&rows, &h1);
    assert_eq!(r1["state"], "unusable", "{r1}");
    assert_eq!(r1["kind"], "host-key", "{r1}");
    assert_eq!(r1["source"], "probe", "{r1}");
    assert!(r1["reason"].as_str().unwrap().contains("SHA256:"), "{r1}");
    assert_eq!(row(&rows, &h2)["state"], "up");
    let r3 = row(&rows, &h3);
    assert_eq!(r3["state"], "full", "{r3}");
    assert!(r3["freeBytes"].as_u64().unwrap() < 100 << 20, "{r3}");
    let table = text(&run(ferry(&tb).args(["offload", "status"])));
    eprintln!("offload status, no daemon:\n{table}");
    let l1 = line(&table, &h1);
    assert!(
        l1.contains("unusable, 0 s ago") && l1.contains("host key mismatch"),
        "{l1}"
    );
    assert!(line(&table, &h3).contains("full, "), "{table}");

    // A daemon: its view. Asked before it has tried a machine, by a user
    // who cannot read the SSH key: "unknown", not a probe that fails with
    // "Permission denied".
    let daemon = common::MasterDaemon::start_with(&tb, &["--offload-silence-timeout", "2"]);
    let (uid, gid) = attacker();
    let as_attacker = || {
        let mut c = ferry(&tb);
        c.uid(uid).gid(gid).env("HOME", "/nonexistent");
        c
    };
    let out = run(as_attacker().args(["offload", "status"]));
    let table = text(&out);
    eprintln!("offload status, a user without the key, a fresh daemon:\n{table}");
    assert!(out.status.success(), "{table}");
    assert!(!table.contains("Permission denied"), "{table}");
    for r in json_rows(&mut as_attacker()) {
        assert_ne!(r["source"], "probe", "{r}");
        if r["source"] == "none" {
            assert_eq!(r["state"], "unknown", "{r}");
            assert_eq!(r["reason"], "the daemon has not tried it yet", "{r}");
        }
    }
    // Once it has tried every machine (asking it starts its probes).
    let mut rows = Vec::new();
    common::wait_for("the daemon's view", Duration::from_secs(30), || {
        rows = json_rows(&mut ferry(&tb));
        rows.iter().all(|r| r["source"] == "daemon")
    });
    let r1 = row(&rows, &h1);
    assert_eq!(
        (&r1["state"], &r1["kind"], r1["untilChanged"].as_bool()),
        (
            &serde_json::json!("unusable"),
            &serde_json::json!("host-key"),
            Some(true)
        ),
        "{r1}"
    );
    assert!(r1["checkedSecsAgo"].as_f64().is_some(), "{r1}");
    assert_eq!(row(&rows, &h2)["state"], "up", "{rows:?}");
    assert_eq!(row(&rows, &h3)["state"], "full", "{rows:?}");
    let out = run(ferry(&tb).args(["offload", "status"]));
    let table = text(&out);
    eprintln!("offload status, through the daemon:\n{table}");
    let json =
        String::from_utf8_lossy(&run(ferry(&tb).args(["offload", "status", "--json"])).stdout)
            .to_string();
    eprintln!("offload status --json, through the daemon:\n{json}");
    let l1 = line(&table, &h1);
    assert!(
        l1.contains("unusable, ")
            && l1.contains(" s ago")
            && l1.contains("host key mismatch")
            && l1.contains("kept out until machines.scm"),
        "{l1}"
    );
    assert!(line(&table, &h2).contains("up, "), "{table}");
    assert!(line(&table, &h3).contains("only 0 MiB free"), "{table}");

    // A user who cannot read the SSH key: the daemon's view, not
    // "Permission denied".
    let rows = json_rows(&mut as_attacker());
    for r in &rows {
        assert_eq!(r["source"], "daemon", "{r}");
    }
    assert_eq!(row(&rows, &h1)["kind"], "host-key");
    assert_eq!(row(&rows, &h2)["state"], "up");
    let out = run(as_attacker().args(["offload", "status"]));
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    assert!(!table.contains("Permission denied"), "{table}");
    assert!(line(&table, &h2).contains("up, "), "{table}");

    // h2 stopped: down as soon as the daemon's attempt fails (within
    // its refresh and the 2 s bound), with the age of that attempt.
    hosts[1].stop().unwrap();
    let stopped = Instant::now();
    let mut seen_up_after_failure = false;
    let mut last = serde_json::Value::Null;
    common::wait_for("h2 shown down", Duration::from_secs(40), || {
        let rows = json_rows(&mut ferry(&tb));
        last = row(&rows, &h2).clone();
        last["state"] == "down"
    });
    eprintln!("h2 down after {:?}: {last}", stopped.elapsed());
    assert!(
        matches!(last["kind"].as_str(), Some("silent" | "connect")),
        "{last}"
    );
    for _ in 0..3 {
        let rows = json_rows(&mut ferry(&tb));
        seen_up_after_failure |= row(&rows, &h2)["state"] == "up";
        std::thread::sleep(Duration::from_millis(300));
    }
    let table = text(&run(ferry(&tb).args(["offload", "status"])));
    hosts[1].cont().unwrap();
    assert!(!seen_up_after_failure, "h2 shown up again while stopped");
    let l2 = line(&table, &h2);
    assert!(l2.contains("down, ") && l2.contains(" s ago"), "{l2}");
    hosts[2].unfill().unwrap();
    drop(daemon);
}

/// Strip the control sequences of a frame: what a person reads.
fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn watch_redraws_in_place_fits_80_columns_and_quits_on_q() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, "256M");
    let h2 = tb.hosts()[1].address().to_string();
    tb.hosts()[1].kill().unwrap();
    // Through a daemon, as it would be used (its view, ages, back-off).
    let _daemon = common::MasterDaemon::start_with(&tb, &["--offload-silence-timeout", "2"]);
    // A pseudo-terminal (script), no size set on it: COLUMNS says 80.
    let cmd = format!(
        "{} offload status --watch 1; stty -a",
        ferry_bin().display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &cmd, "/dev/null"])
        .envs(tb.master_env())
        .env("COLUMNS", "80")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = script.spawn().unwrap();
    let mut stdin = p.stdin.take().unwrap();
    // A broken machines.scm for a moment: said, the last list kept.
    let file = tb.machines_file();
    let good = std::fs::read_to_string(&file).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&file, "(list (build-machine (name \"x\"\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&file, &good).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"q").unwrap();
    stdin.flush().unwrap();
    let out = common::output_within(p, Duration::from_secs(30));
    drop(stdin);
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{all}{}", common::stderr(&out));

    // Alternate screen on, frames each from the cursor home, then off.
    let on = all.find("\x1b[?1049h").expect("alternate screen");
    // Cursor shown again, alternate screen left.
    let off = all
        .rfind("\x1b[?25h\x1b[?1049l")
        .expect("the screen restored");
    let frames: Vec<&str> = all[on..off].split("\x1b[H").skip(2).collect();
    assert!(frames.len() >= 3, "{} frames:\n{all}", frames.len());
    let mut saw_error = false;
    for f in &frames {
        assert!(f.ends_with("\x1b[J"), "a frame clears the rest: {f:?}");
        let v = visible(f);
        let lines: Vec<&str> = v.lines().collect();
        assert!(lines.len() <= 24, "{v}");
        for l in &lines {
            assert!(
                l.chars().count() <= 80,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        assert!(
            lines[0].starts_with("ferry offload status — ")
                && lines[0].contains("every 1 s, q to quit"),
            "{v}"
        );
        // Every frame shows the machines, the down one as down.
        let l2 = lines
            .iter()
            .find(|l| l.starts_with(&h2))
            .unwrap_or_else(|| panic!("no {h2} in:\n{v}"));
        assert!(l2.contains("down"), "{l2}");
        saw_error |= v.contains("showing the last good list");
    }
    assert!(saw_error, "the broken machines.scm was not shown:\n{all}");
    eprintln!(
        "offload status --watch 1, last frame (80 columns):\n{}",
        visible(frames.last().unwrap())
    );
    // The terminal as it was: canonical mode and echo back on.
    let after = visible(&all[off..]);
    let flags: Vec<&str> = after.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(flags.contains(&flag), "{flag} not restored:\n{after}");
    }

    // Not a terminal: a table per interval, a broken machines.scm said
    // and survived.
    let mut plain = common::spawn(ferry(&tb).args(["offload", "status", "--watch", "1"]));
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&file, "(list (build-machine (name \"x\"\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&file, &good).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(plain.try_wait().unwrap().is_none(), "the watch ended");
    plain.kill().unwrap();
    let out = plain.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), common::stderr(&out));
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        stdout.matches("ferry offload status — ").count() >= 3,
        "{stdout}"
    );
    assert!(stderr.contains("showing the last good list"), "{stderr}");
    assert!(stdout.contains(&h2), "{stdout}");

    // Ctrl-C ends it the same way, at once, status 0.
    let mut p = script.spawn().unwrap();
    let mut stdin = p.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pressed = Instant::now();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let out = common::output_within(p, Duration::from_secs(30));
    drop(stdin);
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{all}{}", common::stderr(&out));
    assert!(
        pressed.elapsed() < Duration::from_secs(3),
        "{:?}",
        pressed.elapsed()
    );
    let off = all
        .rfind("\x1b[?25h\x1b[?1049l")
        .expect("the screen restored");
    let flags: Vec<String> = visible(&all[off..])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(flags.iter().any(|f| f == "icanon"), "{all}");
}
