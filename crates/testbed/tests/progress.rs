//! What a person sees while an offloaded build runs:
//! with stderr not a terminal, plain lines (a line per phase, a line per
//! few seconds of a long copy with its size and rate, build logs prefixed
//! `name> `) and no control characters; under a pseudo-terminal
//! (`script`), a display redrawn in place, and the right output at the end.
//!
//! The link to the host is rate-limited (tbf), so copying a few tens of MiB
//! takes seconds. `FERRY_PROGRESS_MIB` and `FERRY_PROGRESS_TYPESCRIPT`
//! (a file to keep the terminal's bytes in) let a person capture a bigger
//! build's screen with the terminal test.

use std::process::Command;
use std::time::Duration;

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;
use ferry_testbed::Testbed;

use common::{edit_machine, output_within, spawn, stderr, REMOTE_ONLY};
use ferry_test_support::testbed as common;

const NEEDS_REMOTE: &str = "(\"requiredSystemFeatures\" . \"remote\")";

/// One remote-only host with two slots behind a `mbit` link.
fn testbed(mbit: u32, store: &str) -> (tempfile::TempDir, Testbed) {
    let (tmp, tb) = common::testbed_with(1, |opts| {
        opts.slots = 2;
        opts.store_size = store.into();
        opts.rate_mbit = Some(mbit);
    });
    edit_machine(&tb, &tb.hosts()[0], |m| {
        m.replace("(parallel-builds", REMOTE_ONLY)
    });
    (tmp, tb)
}

/// `big` writes `mib` MiB of zeros (no SSH compression: they cost their
/// size on the link) and `small` a few lines meanwhile: two builds at once
/// on the host. `tag` makes the derivations new for each test.
fn build_file(tb: &Testbed, tag: &str, mib: u64) -> std::path::PathBuf {
    let drv = |name: &str, script: &str| {
        format!(
            " (derivation \"{name}\" #:builder \"/bin/sh\"\n   #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"tag\" . \"{tag}\") {NEEDS_REMOTE})\n   #:args '(\"-c\" \"{script}\"))\n"
        )
    };
    let scm = format!(
        "(list\n{}{})\n",
        drv(
            "big",
            &format!(
                "echo big says hello; head -c {} /dev/zero > $out; echo big wrote it",
                mib << 20
            )
        ),
        drv(
            "small",
            "echo small-line-1; sleep 1; echo small-line-2; echo small > $out"
        ),
    );
    let file = tb.dir().parent().unwrap().join(format!("{tag}.scm"));
    std::fs::write(&file, scm).unwrap();
    file
}

#[test]
fn plain_progress_shows_phases_copies_and_prefixed_logs() {
    if !prerequisites() {
        return;
    }
    // 24 MiB at 40 Mbit/s: about 5 s of fetching.
    let (_tmp, tb) = testbed(40, "256M");
    let file = build_file(&tb, "plain", 24);
    let mut c = tb.master_command(ferry_bin().to_str().unwrap());
    c.arg("build").arg(&file);
    let out = output_within(spawn(&mut c), Duration::from_secs(120));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let host = tb.hosts()[0].address().to_string();
    assert!(
        !log.chars().any(|c| c.is_control() && c != '\n'),
        "control characters in plain output:\n{log:?}"
    );
    for want in [
        format!("big: sending inputs to {host}"),
        format!("big: building on {host}"),
        format!("big: fetching outputs from {host}"),
        "big> big says hello".to_string(),
        "big> big wrote it".to_string(),
        "small> small-line-1".to_string(),
        "small> small-line-2".to_string(),
    ] {
        assert!(
            log.lines().any(|l| l == want),
            "no line {want:?} in:\n{log}"
        );
    }
    // A line per few seconds of the copy: "HOST: fetching big: 12.3/24.0
    // MiB, 4.5 MiB/s".
    let copies: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with(&format!("{host}: fetching big: ")))
        .collect();
    assert!(!copies.is_empty(), "no copy line in:\n{log}");
    for l in &copies {
        let rest = l.rsplit_once(": ").unwrap().1;
        let (sizes, rate) = rest.split_once(", ").unwrap();
        let (done, total) = sizes.trim_end_matches(" MiB").split_once('/').unwrap();
        let (done, total): (f64, f64) = (done.parse().unwrap(), total.parse().unwrap());
        assert!(done > 0.0 && done <= total, "{l}");
        assert_eq!(total, 24.0, "{l}");
        assert!(rate.ends_with(" MiB/s"), "{l}");
    }
    // Both outputs on stdout.
    let paths = String::from_utf8(out.stdout).unwrap();
    assert_eq!(paths.lines().count(), 2, "{paths}");
    let big = paths.lines().find(|p| p.ends_with("-big")).unwrap();
    assert_eq!(std::fs::metadata(big).unwrap().len(), 24 << 20);

    // Through a daemon: the same lines.
    let daemon = common::MasterDaemon::start(&tb);
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("plain", "daemon"),
    )
    .unwrap();
    let mut c = tb.master_command(ferry_bin().to_str().unwrap());
    c.arg("build").arg(&file);
    let out = output_within(spawn(&mut c), Duration::from_secs(120));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    for want in [
        format!("big: fetching outputs from {host}"),
        "big> big says hello".to_string(),
        "small> small-line-2".to_string(),
    ] {
        assert!(
            log.lines().any(|l| l == want),
            "no line {want:?} in:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("{host}: fetching big: "))),
        "{log}"
    );
    drop(daemon);

    // --quiet: the logs, no progress.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("daemon", "quiet"),
    )
    .unwrap();
    let mut c = tb.master_command(ferry_bin().to_str().unwrap());
    c.args(["build", "--quiet"]).arg(&file);
    let out = output_within(spawn(&mut c), Duration::from_secs(120));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.lines().any(|l| l == "small> small-line-2"), "{log}");
    assert!(!log.contains("fetching outputs from"), "{log}");
    assert!(!log.contains(&format!("{host}: fetching")), "{log}");
    assert!(!log.contains("building '"), "{log}");
}

#[test]
fn a_terminal_gets_a_display_redrawn_in_place() {
    if !prerequisites() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script (util-linux) is needed for this test");
    }
    let mib: u64 = std::env::var("FERRY_PROGRESS_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let store = format!("{}M", (mib * 2 + 128).max(256));
    let (_tmp, tb) = testbed(
        std::env::var("FERRY_PROGRESS_MBIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
        &store,
    );
    let file = build_file(&tb, "terminal", mib);
    let cmd = format!(
        "stty cols 100 rows 30; exec {} build {}",
        ferry_bin().display(),
        file.display()
    );
    // The terminal's bytes go to a file (script's typescript): a pipe
    // nobody reads while the build runs would stop it once full.
    let typescript = tb.dir().parent().unwrap().join("typescript");
    let mut c = tb.master_command("script");
    c.args(["-qfec", &cmd])
        .arg(&typescript)
        .env("TERM", "xterm-256color");
    let out = output_within(spawn(&mut c), Duration::from_secs(600));
    let bytes = std::fs::read(&typescript).unwrap();
    let screen = String::from_utf8_lossy(&bytes).into_owned();
    if let Ok(keep) = std::env::var("FERRY_PROGRESS_TYPESCRIPT") {
        std::fs::write(keep, &bytes).unwrap();
    }
    assert!(out.status.success(), "{screen}\n{}", stderr(&out));
    // Redrawn in place: cursor moves and line clears.
    assert!(screen.contains("\x1b[2K"), "no line clears:\n{screen:?}");
    assert!(screen.contains("\x1b[1A"), "no cursor moves:\n{screen:?}");
    // Bars and spinner lines were drawn: sizes with a rate and an ETA.
    assert!(screen.contains("MiB/s"), "{screen:?}");
    assert!(screen.contains("ETA"), "{screen:?}");
    // Build logs above the display, prefixed (the prefix faint).
    let text = without_colours(&screen);
    assert!(whole_row(&text, "big> big says hello", 100), "{text:?}");
    assert!(whole_row(&text, "small> small-line-2", 100), "{text:?}");
    // The output paths at the end, after the display is cleared (then
    // only script's own "Script done" line).
    let tail: Vec<&str> = screen
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with("Script "))
        .collect();
    let n = tail.len();
    let last_two = &tail[n.saturating_sub(2)..];
    assert!(
        last_two.iter().any(|l| l.ends_with("-big"))
            && last_two.iter().any(|l| l.ends_with("-small")),
        "the output paths are not the last lines:\n{screen:?}"
    );
    let big = last_two.iter().find(|l| l.ends_with("-big")).unwrap();
    let store = common::master_var(&tb, "FERRY_STORE_DIR");
    // The last store path of the row (indicatif 0.18 ends its rows with
    // spaces, not newlines: the whole display can be one line of bytes).
    let big = &big[big.rfind(&store).unwrap()..];
    assert_eq!(std::fs::metadata(big).unwrap().len(), mib << 20);
}

/// Whether `line` stands in `text` as a whole terminal row of a terminal
/// `cols` wide: ended by CR LF, or filled with spaces to the right edge (as
/// indicatif 0.18 ends the lines it prints above its display, leaving the
/// cursor at the edge so that the next write starts a new row).
fn whole_row(text: &str, line: &str, cols: usize) -> bool {
    text.match_indices(line).any(|(i, _)| {
        let rest = &text[i + line.len()..];
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        rest.starts_with("\r\n") || line.chars().count() + spaces == cols
    })
}

/// `s` without SGR sequences (`ESC [ digits ; ... m`).
fn without_colours(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let n = after
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(after.len());
        if after[n..].starts_with('m') {
            rest = &after[n + 1..];
        } else {
            out.push_str("\x1b[");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Every machine stopped: what the build waits for is said within about a
/// second, then it is built here.
#[test]
fn a_wait_for_stopped_machines_says_what_it_waits_for() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(2, 1, "64M");
    for h in tb.hosts() {
        h.stop().unwrap();
    }
    let scm = common::independent("alone", 1, "", "", "");
    let started = std::time::Instant::now();
    let out = output_within(
        spawn(&mut common::build_cmd(&tb, "alone", &scm, &[])),
        Duration::from_secs(120),
    );
    let log = stderr(&out);
    eprintln!("after {:?}:\n{log}", started.elapsed());
    for h in tb.hosts() {
        h.cont().unwrap();
    }
    assert!(out.status.success(), "{log}");
    let waits: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("alone-0: waiting for "))
        .collect();
    assert!(!waits.is_empty(), "no wait said:\n{log}");
    // Each names the machines and their state.
    assert!(
        waits
            .iter()
            .any(|l| tb.hosts().iter().all(|h| l.contains(h.address()))),
        "{log}"
    );
    assert!(
        common::placements(&log)
            .iter()
            .all(|(_, m)| m == "localhost"),
        "{log}"
    );
}
