//! The fault matrix: each fault injected in each phase of an offloaded
//! build, 8 faults x 4 phases = 32 cells, each on a fresh testbed of two
//! hosts with a master `ferry daemon` (its liveness bound
//! `--offload-silence-timeout` set to [`SILENCE`]).
//!
//! The master reaches h1 (speed 2, so it is chosen first) through a TCP
//! proxy ([`ferry_testbed::proxy`]) that holds the stream at an exact
//! point, so each fault lands in the phase it names:
//! - connect: the proxy holds h1's first connection before dialling it;
//! - upload: the proxy holds the upload after 4 MiB of the 16 MiB input;
//! - remote build: the builder runs on h1 (seen in its process list);
//! - download: the proxy holds the download after 4 MiB of the output.
//!
//! Faults: h1 stopped (SIGSTOP), h1 killed (every process, sshd included),
//! h1's traffic cut, h1's store full, h1's daemon restarted, one byte
//! corrupted in transit by the proxy, the master daemon killed -9 (and
//! started again), h1's daemon alone stopped (alive but silent: sshd
//! answers keep-alives and opens channels, nothing comes from the daemon).
//!
//! Every cell must end with: the client given a result (the right output,
//! built on h1 or rescheduled to h2, or, when the master daemon itself was
//! killed, a clear error, and then the right output from the restarted
//! daemon); `ferry store verify` clean on every store; no slot in use and no
//! store lock held anywhere; no builder left running; and the master
//! daemon serving a new build.

use std::fmt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;
use ferry_testbed::proxy::{Action, Direction, Proxy};
use ferry_testbed::{Host, Testbed};

use common::{
    build_cmd, count_marked, machines_used, master_var, output_within, output_within_or, run,
    spawn, stderr, verify_stores, wait_for, MasterDaemon,
};
use ferry_test_support::testbed as common;

const MIB: u64 = 1 << 20;
/// Size of the build's input (and so of its output).
const INPUT: u64 = 16 * MIB;
/// Where the proxy holds an upload or a download.
const HOLD_AT: u64 = 4 * MIB;
/// Longest a client may take in any cell (the slowest faults are noticed
/// by SSH keep-alives, 3 s x 3, or the 10 s connect timeout).
const CLIENT_BOUND: Duration = Duration::from_secs(90);
/// The master's liveness bound, in seconds: a step on h1 without progress
/// for this long is given up.
const SILENCE: &str = "5";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    HostStopped,
    HostKilled,
    TrafficCut,
    DiskFull,
    RemoteDaemonRestarted,
    BytesCorrupted,
    MasterKilled,
    AliveButSilent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connect,
    Upload,
    RemoteBuild,
    Download,
}

const PHASES: [Phase; 4] = [
    Phase::Connect,
    Phase::Upload,
    Phase::RemoteBuild,
    Phase::Download,
];

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One cell's testbed: h1 behind the proxy, h2 direct, a master daemon.
struct Cell {
    _tmp: tempfile::TempDir,
    tb: Testbed,
    proxy: Proxy,
    daemon: Option<MasterDaemon>,
    input: PathBuf,
    tag: String,
}

impl Cell {
    fn new(fault: Fault, phase: Phase) -> Cell {
        let (tmp, tb, proxy) = common::proxied_pair("256M");
        let tag = format!("fm-{fault:?}-{phase:?}").to_lowercase();
        let input = tmp.path().join(format!("{tag}.in"));
        common::random_file(&input, INPUT);
        let daemon = Some(master(&tb));
        Cell {
            _tmp: tmp,
            tb,
            proxy,
            daemon,
            input,
            tag,
        }
    }

    /// The client's output, within [`CLIENT_BOUND`]; past it, the test
    /// fails with the master daemon's log.
    fn output_within(&self, child: std::process::Child) -> Output {
        output_within_or(child, CLIENT_BOUND, || {
            format!("{}: master daemon's log:\n{}", self.tag, self.master_log())
        })
    }

    fn master_log(&self) -> String {
        std::fs::read_to_string(self.tb.dir().parent().unwrap().join("master-daemon.log"))
            .unwrap_or_default()
    }

    fn h1(&self) -> &Host {
        &self.tb.hosts()[0]
    }

    /// The marker in the builder's command line.
    fn marker(&self) -> String {
        format!("{}-mark", self.tag)
    }

    /// A derivation that prints a line every 0.3 s for ~3 s (the remote
    /// build phase, with log traffic), then writes the input and a tag.
    fn build_file(&self) -> String {
        format!(
            "(derivation \"{tag}\" #:builder \"/bin/sh\"\n  #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"requiredSystemFeatures\" . \"remote\"))\n  #:args (list \"-c\" (string-append \"for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.3; done; : {mark}; cat \" (local-file \"{input}\") \" > $out; echo {tag} >> $out\")))\n",
            tag = self.tag,
            mark = self.marker(),
            input = self.input.display()
        )
    }

    fn expected_output(&self) -> Vec<u8> {
        let mut v = std::fs::read(&self.input).unwrap();
        v.extend_from_slice(format!("{}\n", self.tag).as_bytes());
        v
    }

    fn check_output(&self, out: &Output) {
        let log = stderr(out);
        assert!(
            out.status.success(),
            "{}: build failed:\n{log}\nmaster daemon's log:\n{}",
            self.tag,
            self.master_log()
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let got = std::fs::read(&path).unwrap_or_default();
        assert!(
            got == self.expected_output(),
            "{}: wrong output in {path} ({} bytes):\n{log}",
            self.tag,
            got.len()
        );
    }

    fn inject(&mut self, fault: Fault, phase: Phase) {
        let h1 = self.tb.hosts()[0].clone();
        match fault {
            Fault::HostStopped => drop(h1.stop().unwrap()),
            Fault::HostKilled => drop(h1.kill().unwrap()),
            Fault::TrafficCut => h1.cut().unwrap(),
            Fault::DiskFull => drop(h1.fill().unwrap()),
            Fault::RemoteDaemonRestarted => {
                h1.kill_daemon().unwrap();
                h1.start_daemon().unwrap();
            }
            Fault::BytesCorrupted => {
                let (direction, after) = match phase {
                    // In the server's first packets (its key exchange).
                    Phase::Connect => (Direction::Down, 100),
                    Phase::Upload => (Direction::Up, 0),
                    // The build's log lines flow down.
                    Phase::RemoteBuild | Phase::Download => (Direction::Down, 0),
                };
                self.proxy.arm(direction, after, Action::Corrupt);
            }
            Fault::MasterKilled => {
                // SIGKILL, reaped: the socket file stays, as after a crash.
                drop(self.daemon.take());
            }
            Fault::AliveButSilent => h1.stop_daemon().unwrap(),
        }
    }

    /// Undo the fault on h1 (whatever state it left).
    fn recover(&self) {
        let h1 = self.h1();
        let _ = h1.cont();
        let _ = h1.heal();
        let _ = h1.unfill();
        h1.revive().unwrap();
    }
}

/// Every lock file under `state/locks` can be taken now (no process holds
/// one).
fn assert_no_lock_held(state: &Path, who: &str) {
    let Ok(dir) = std::fs::read_dir(state.join("locks")) else {
        return;
    };
    for e in dir.flatten() {
        let Ok(f) = std::fs::File::open(e.path()) else {
            continue;
        };
        // SAFETY: flock on an open descriptor; released when `f` closes.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0, "{who}: lock {} is still held", e.path().display());
    }
}

/// The rows of `ferry offload status --json` (through the master daemon).
fn slots_in_use(tb: &Testbed) -> Vec<(String, u64)> {
    let out = run(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["offload", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "offload status --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["machine"].as_str().unwrap_or("?").to_string(),
                r["inUse"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Run one cell; returns how the client's first build ended.
fn run_cell(fault: Fault, phase: Phase) -> String {
    let mut cell = Cell::new(fault, phase);
    let t0 = Instant::now();
    match phase {
        Phase::Connect => cell.proxy.hold_next_connect(),
        Phase::Upload => cell.proxy.arm(Direction::Up, HOLD_AT, Action::Pause),
        Phase::RemoteBuild | Phase::Download => {}
    }
    let client = spawn(&mut build_cmd(&cell.tb, &cell.tag, &cell.build_file(), &[]));
    let what = format!("{}: the {phase:?} phase on h1", cell.tag);
    match phase {
        Phase::Connect | Phase::Upload => {
            assert!(cell.proxy.wait_hit(Duration::from_secs(30)), "{what}");
        }
        Phase::RemoteBuild | Phase::Download => {
            let h1 = cell.h1().clone();
            let marker = cell.marker();
            wait_for(&what, Duration::from_secs(30), || {
                count_marked(&h1, &marker) > 0
            });
            if phase == Phase::Download {
                cell.proxy.arm(Direction::Down, HOLD_AT, Action::Pause);
                assert!(cell.proxy.wait_hit(Duration::from_secs(30)), "{what}");
            }
        }
    }
    cell.inject(fault, phase);
    cell.proxy.resume();
    let out = cell.output_within(client);
    let took = t0.elapsed();
    let log = stderr(&out);

    let outcome = if fault == Fault::MasterKilled {
        assert!(
            !out.status.success(),
            "{}: the client did not notice:\n{log}",
            cell.tag
        );
        assert!(
            log.contains("daemon"),
            "{}: the error does not say what went wrong:\n{log}",
            cell.tag
        );
        let first_line = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        format!("clear error ({first_line})")
    } else {
        cell.check_output(&out);
        let on = match machines_used(&log).last().map(String::as_str) {
            Some("127.0.0.1") => "h1",
            Some(m) if m == cell.tb.hosts()[1].address() => "h2",
            _ => "here",
        };
        if log.contains("building elsewhere") {
            format!("right output, rescheduled to {on}")
        } else {
            format!("right output, built on {on}")
        }
    };

    // Back to normal, then the invariants.
    cell.recover();
    if cell.daemon.is_none() {
        cell.daemon = Some(master(&cell.tb));
        // The restarted daemon finishes the build.
        let again = output_within(
            spawn(&mut build_cmd(&cell.tb, &cell.tag, &cell.build_file(), &[])),
            CLIENT_BOUND,
        );
        cell.check_output(&again);
    }
    // No builder left running anywhere (a cancelled remote build is
    // killed; a dead master's session is noticed by the remote daemon).
    for h in cell.tb.hosts() {
        let marker = cell.marker();
        wait_for(
            &format!("{}: builders gone from {}", cell.tag, h.name()),
            Duration::from_secs(20),
            || count_marked(h, &marker) == 0,
        );
    }
    // The master still serves: a new build, offloaded or not.
    let after = format!("{}-after", cell.tag);
    let scm = format!(
        "(derivation \"{after}\" #:builder \"/bin/sh\" #:env '((\"requiredSystemFeatures\" . \"remote\"))\n  #:args '(\"-c\" \"echo {after} > $out\"))\n"
    );
    let out2 = output_within(
        spawn(&mut build_cmd(&cell.tb, &after, &scm, &[])),
        CLIENT_BOUND,
    );
    assert!(out2.status.success(), "{after}: {}", stderr(&out2));
    // No slot in use, no lock held, every store consistent.
    for (name, n) in slots_in_use(&cell.tb) {
        assert_eq!(n, 0, "{}: {n} slot(s) of {name} still in use", cell.tag);
    }
    assert_no_lock_held(
        Path::new(&master_var(&cell.tb, "FERRY_STATE_DIR")),
        "master",
    );
    for h in cell.tb.hosts() {
        assert_no_lock_held(&h.state_dir(), h.name());
    }
    verify_stores(&cell.tb);
    let line = format!(
        "{:<22} {:<12} {:>6.1} s  {outcome}",
        fault.to_string(),
        format!("{phase:?}"),
        took.as_secs_f64()
    );
    eprintln!("cell: {line}");
    if std::env::var_os("FERRY_MATRIX_VERBOSE").is_some() {
        eprintln!("{log}\nmaster daemon's log:\n{}", cell.master_log());
    }
    line
}

/// The master daemon of a cell.
fn master(tb: &Testbed) -> MasterDaemon {
    MasterDaemon::start_with(tb, &["--offload-silence-timeout", SILENCE])
}

/// The four phases of one fault.
fn row(fault: Fault) {
    if !prerequisites() {
        return;
    }
    let lines: Vec<String> = PHASES.iter().map(|&p| run_cell(fault, p)).collect();
    eprintln!("{}", lines.join("\n"));
}

#[test]
fn host_stopped() {
    row(Fault::HostStopped);
}

#[test]
fn host_killed() {
    row(Fault::HostKilled);
}

#[test]
fn traffic_cut() {
    row(Fault::TrafficCut);
}

#[test]
fn disk_full() {
    row(Fault::DiskFull);
}

#[test]
fn remote_daemon_restarted() {
    row(Fault::RemoteDaemonRestarted);
}

#[test]
fn bytes_corrupted_in_transit() {
    row(Fault::BytesCorrupted);
}

#[test]
fn master_daemon_killed() {
    row(Fault::MasterKilled);
}

#[test]
fn alive_but_silent() {
    row(Fault::AliveButSilent);
}
